//! The AWS SDK's shared configuration: the region, and the deadlines every call to AWS has.
//!
//! The SDK sets only a connect timeout by default (3.1 s): a peer that accepts the connection and
//! never answers would hold a call, and the task waiting on it, for ever. Every client hotswap
//! makes is built here with an attempt deadline (an attempt that passes it is dropped with its
//! connection, and the SDK's retry makes a new one) and an operation deadline (all attempts).
//! Streaming bodies (an S3 download) are guarded by the SDK's stalled-stream protection instead
//! (no byte for 5 s ends it), so a large archive is not cut off by a fixed deadline.

use std::time::Duration;

/// The time limits of one kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    /// One attempt, from sending the request to the response's headers; None: no limit.
    pub attempt: Option<Duration>,
    /// Every attempt of a call, retries and backoff included; None: no limit (the caller's own).
    pub operation: Option<Duration>,
}

impl Deadlines {
    /// A call that answers at once (SendMessage, DescribeStackResource, GetParameter, ...).
    pub const CALL: Deadlines = Deadlines {
        connect: Duration::from_secs(3),
        attempt: Some(Duration::from_secs(10)),
        operation: Some(Duration::from_secs(30)),
    };
    /// SQS long polls (ReceiveMessage waits up to 20 s for a message before it answers).
    pub const LONG_POLL: Deadlines = Deadlines {
        connect: Duration::from_secs(3),
        attempt: Some(Duration::from_secs(30)),
        operation: Some(Duration::from_secs(60)),
    };
    /// A download whose body streams for as long as it takes (S3 GetObject): the headers
    /// within 30 s, then the stalled-stream protection; the caller bounds the whole.
    pub const DOWNLOAD: Deadlines = Deadlines {
        connect: Duration::from_secs(3),
        attempt: None,
        operation: None,
    };

    fn timeouts(self) -> aws_config::timeout::TimeoutConfig {
        let mut b = aws_config::timeout::TimeoutConfig::builder().connect_timeout(self.connect);
        b.set_operation_attempt_timeout(self.attempt);
        b.set_operation_timeout(self.operation);
        if self.attempt.is_none() {
            b = b.read_timeout(Duration::from_secs(30));
        }
        b.build()
    }
}

/// The SDK's configuration from the usual environment (credentials, AWS_ENDPOINT_URL, the
/// instance role), in `region` when given, with `deadlines` on every call.
pub async fn config(region: Option<&str>, deadlines: Deadlines) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(deadlines.timeouts());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_call_has_a_connect_deadline_and_a_bound_on_its_answer() {
        for d in [Deadlines::CALL, Deadlines::LONG_POLL, Deadlines::DOWNLOAD] {
            let t = d.timeouts();
            assert_eq!(t.connect_timeout(), Some(d.connect));
            assert!(
                t.operation_attempt_timeout().is_some() || t.read_timeout().is_some(),
                "{d:?}"
            );
        }
        assert!(Deadlines::LONG_POLL.attempt.unwrap() > Duration::from_secs(20));
    }
}
