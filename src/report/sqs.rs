//! Delivery of outbox reports to SQS, with retry and backoff; FIFO queues get a group id and a
//! deduplication id (deploy id + instance), so SQS itself drops a repeat within its window.

use std::sync::Arc;
use std::time::Duration;

use super::outbox::Outbox;
use crate::clock::Backoff;

pub struct SqsSender {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub group_id: String,
    pub instance_id: String,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// A send that fails waits this long at most before the next: with the SDK's deadlines on each
/// call (`sdk::Deadlines::CALL`: 10 s an attempt), a queue that comes back is delivered to
/// within about 20 s.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl SqsSender {
    fn fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    async fn send(&self, key: &str, body: &str) -> Result<(), String> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body);
        if self.fifo() {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{key}\n{}", self.instance_id).as_bytes());
            let dedup: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            req = req
                .message_group_id(&self.group_id)
                .message_deduplication_id(dedup);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
    }

    /// Sends whatever the outbox holds, for ever; sleeps (no timer) while it is empty.
    pub async fn run(self, outbox: Arc<Outbox>) {
        let mut backoff = Backoff::doubling(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let pending = outbox.pending();
            if pending.is_empty() {
                outbox.wait().await;
                continue;
            }
            let mut failed = false;
            for p in &pending {
                match self.send(&p.key, &p.body).await {
                    Ok(()) => {
                        if let Err(e) = outbox.mark_sent(p) {
                            tracing::error!(key = %p.key, error = %e, "report sent but the outbox could not record it");
                        }
                        tracing::info!(key = %p.key, queue = %self.queue_url, "report delivered to SQS");
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::warn!(key = %p.key, queue = %self.queue_url, error = %e, retry_in_ms = backoff.peek().as_millis() as u64, "report not delivered; kept in the outbox");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}
