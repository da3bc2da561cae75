//! AWS clients for the build box, from the usual environment (AWS_REGION, credentials,
//! AWS_ENDPOINT_URL for a local endpoint).

pub struct Clients {
    pub cfn: aws_sdk_cloudformation::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl Clients {
    pub async fn from_env(region: Option<&str>) -> Clients {
        let conf = crate::sdk::config(region, crate::sdk::Deadlines::CALL).await;
        // the report wait long-polls SQS: its attempts may take the poll's 20 s
        let polls = crate::sdk::config(region, crate::sdk::Deadlines::LONG_POLL).await;
        Clients {
            cfn: aws_sdk_cloudformation::Client::new(&conf),
            asg: aws_sdk_autoscaling::Client::new(&conf),
            sqs: aws_sdk_sqs::Client::new(&polls),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
        }
    }
}

/// An AWS error with its whole cause chain, for messages.
pub fn describe<E: std::error::Error>(e: E) -> String {
    format!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))
}
