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
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        let conf = loader.load().await;
        Clients {
            cfn: aws_sdk_cloudformation::Client::new(&conf),
            asg: aws_sdk_autoscaling::Client::new(&conf),
            sqs: aws_sdk_sqs::Client::new(&conf),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
        }
    }
}

/// An AWS error with its whole cause chain, for messages.
pub fn describe<E: std::error::Error>(e: E) -> String {
    format!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))
}
