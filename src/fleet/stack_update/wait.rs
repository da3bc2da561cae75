//! Waiting for the hosts' reports: SQS read by several readers at once, each report counted once
//! per instance (`tally`), a progress line on a terminal, success when every instance reported.

use super::*;

fn progress(t: &Tally, started: Instant) {
    let done = t.succeeded.len().min(t.expected);
    let width = 30;
    let filled = if t.expected == 0 {
        width
    } else {
        done * width / t.expected
    };
    let line = format!(
        "[{}{}] {done}/{} instances reported success ({:.0} s)",
        "#".repeat(filled),
        " ".repeat(width - filled),
        t.expected,
        started.elapsed().as_secs_f64()
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Concurrent long polls: SQS hands out at most 10 messages a call, so one reader alone falls
/// behind a fleet reporting at once.
const READERS: usize = 8;

/// Polls the queue until the tally decides or the time is up. Deletes what it reads (off the
/// critical path). Returns the outcome and, once decided, how long the deciding batch took to
/// count after it arrived.
pub async fn wait_for_reports(
    c: &Clients,
    queue_url: &str,
    tally: &mut Tally,
    timeout: Duration,
    quiet: bool,
) -> Result<(Outcome, Option<u64>), String> {
    let started = Instant::now();
    if !quiet {
        progress(tally, started);
    }
    if tally.outcome() != Outcome::Waiting {
        return Ok((tally.outcome(), Some(0)));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(64);
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (sqs, url, tx) = (c.sqs.clone(), queue_url.to_string(), tx.clone());
        readers.spawn(read_reports(sqs, url, tx, timeout, started));
    }
    drop(tx);
    let mut last_seen = tally.succeeded.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = loop {
        let batch = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => break Ok((Outcome::Waiting, None)),
        };
        let (bodies, arrived) = match batch {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        for body in &bodies {
            tally.absorb(body);
        }
        let outcome = tally.outcome();
        if !quiet && tally.succeeded.len() != last_seen {
            last_seen = tally.succeeded.len();
            progress(tally, started);
        }
        if outcome != Outcome::Waiting {
            break Ok((outcome, Some(arrived.elapsed().as_millis() as u64)));
        }
    };
    readers.abort_all();
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    result
}

/// What readers send: the bodies of one receive and when they arrived, or why reading failed.
type Batch = Result<(Vec<String>, Instant), String>;

/// One reader: long polls until the time is up, sends each batch's bodies, deletes what it
/// read off the critical path.
async fn read_reports(
    sqs: aws_sdk_sqs::Client,
    url: String,
    tx: tokio::sync::mpsc::Sender<Batch>,
    timeout: Duration,
    started: Instant,
) {
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return;
        }
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(left.as_secs().clamp(1, 20) as i32)
            .send()
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                let _ = tx
                    .send(Err(format!("reading reports from {url}: {}", describe(e))))
                    .await;
                return;
            }
        };
        let arrived = Instant::now();
        let bodies: Vec<String> = got
            .messages()
            .iter()
            .map(|m| m.body().unwrap_or("").to_string())
            .collect();
        let entries: Vec<_> = got
            .messages()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !bodies.is_empty() && tx.send(Ok((bodies, arrived))).await.is_err() {
            return;
        }
        if !entries.is_empty() {
            let (sqs, url) = (sqs.clone(), url.clone());
            tokio::spawn(async move {
                let deleted = sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
                if let Err(e) = deleted {
                    tracing::warn!(error = %describe(e), "deleting read reports failed; they may be read again (they are deduplicated)");
                }
            });
        }
    }
}
