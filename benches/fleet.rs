//! `scripts/bench fleet [--instances N] [--spread-secs S]`: a stack of N instances in moto,
//! `hotswapctl stack-update` waiting, and N simulated hosts reporting success on SQS, spread evenly
//! over S seconds (default 20; 0 = all at once) as hosts finishing their swaps do. Prints as its
//! last line `instances=N detect_ms=D peak_rss_mb=R`: D from the last report sent to the CLI's exit
//! with success, R the CLI's peak resident memory.
//!
//! moto's SQS slows down per call as its queue deepens (about 200 ms a call at 1000 messages), so
//! with `--spread-secs 0` D measures moto more than the CLI.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::daemon::HOTSWAPCTL;
use support::moto::Moto;
use support::process::Guarded;
use support::reports::host_report;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = support::cli_arg;
    let n: usize = arg("--instances")
        .map(|v| v.parse().expect("--instances N"))
        .unwrap_or(1000);
    let spread = Duration::from_secs_f64(
        arg("--spread-secs")
            .map(|v| v.parse().expect("--spread-secs S"))
            .unwrap_or(20.0),
    );
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let conf = moto.sdk_config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    let asg = aws_sdk_autoscaling::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);

    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fleet-stack.yaml"
    ))
    .unwrap()
    .replace("MaxSize: 4", &format!("MaxSize: {n}"))
    .replace("MaxBatchSize: 4", &format!("MaxBatchSize: {n}"));
    let tpl = dir.path().join("fleet.yaml");
    std::fs::write(&tpl, &template).unwrap();
    let t0 = Instant::now();
    let desired = n.to_string();
    support::moto::create_stack(
        &cfn,
        "bench",
        template,
        &[
            ("DesiredCapacity", desired.as_str()),
            ("MinInstancesInService", "1"),
            ("DeployId", "initial"),
            ("AppVersion", "1"),
        ],
    )
    .await;
    eprintln!(
        "stack with {n} instances created in moto in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let mut cmd = Command::new(HOTSWAPCTL);
    cmd.args([
        "stack-update",
        "--stack",
        "bench",
        "--template",
        tpl.to_str().unwrap(),
        "--deploy-id",
        "sd-bench",
        "--timeout-secs",
        "900",
        "--json",
    ])
    .envs(moto.env())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // killed if the bench fails before it finishes
    let child = Guarded::spawn(cmd).unwrap();
    // the hosts see the update
    loop {
        let s = cfn
            .describe_stacks()
            .stack_name("bench")
            .send()
            .await
            .unwrap();
        let id = s.stacks()[0]
            .parameters()
            .iter()
            .find(|p| p.parameter_key() == Some("DeployId"))
            .and_then(|p| p.parameter_value().map(String::from));
        if id.as_deref() == Some("sd-bench") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue = cfn
        .describe_stacks()
        .stack_name("bench")
        .send()
        .await
        .unwrap()
        .stacks()[0]
        .outputs()[0]
        .output_value()
        .unwrap()
        .to_string();
    // the update may replace the group (moto does): look until it has all its instances
    let mut instances = Vec::new();
    let looking = Instant::now();
    while instances.len() != n {
        assert!(
            looking.elapsed() < Duration::from_secs(120),
            "moto's group has {} of {n} instances",
            instances.len()
        );
        let group = cfn
            .describe_stack_resource()
            .stack_name("bench")
            .logical_resource_id("AppGroup")
            .send()
            .await
            .unwrap()
            .stack_resource_detail()
            .unwrap()
            .physical_resource_id()
            .unwrap()
            .to_string();
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
            .unwrap();
        instances = out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| {
                g.instances()
                    .iter()
                    .map(|i| i.instance_id().unwrap().to_string())
            })
            .collect();
        if instances.len() != n {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // the hosts report in batches of 10, evenly spread over `spread`
    let sent_start = Instant::now();
    let chunks: Vec<Vec<String>> = instances.chunks(10).map(|c| c.to_vec()).collect();
    let step = spread / chunks.len().max(1) as u32;
    let mut senders = tokio::task::JoinSet::new();
    for (k, batch) in chunks.into_iter().enumerate() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(sent_start + step * k as u32))
            .await;
        let (sqs, queue) = (sqs.clone(), queue.clone());
        senders.spawn(async move {
            let mut req = sqs.send_message_batch().queue_url(&queue);
            for (i, inst) in batch.iter().enumerate() {
                req = req.entries(
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(host_report("sd-bench-web", inst, true))
                        .build()
                        .unwrap(),
                );
            }
            req.send().await.unwrap();
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let last_sent = Instant::now();
    eprintln!(
        "{n} reports sent in {} ms (spread over {} s)",
        sent_start.elapsed().as_millis(),
        spread.as_secs_f64()
    );
    // exit code and peak RSS (KiB) from the CLI's own rusage
    let (status, usage) = support::blocking(move || child.wait_rusage()).await;
    let (code, maxrss_kib) = (status.code().unwrap_or(-1), usage.ru_maxrss);
    let detect_ms = last_sent.elapsed().as_millis();
    assert_eq!(code, 0, "stack-update did not succeed");
    println!(
        "instances={n} detect_ms={detect_ms} peak_rss_mb={:.1}",
        maxrss_kib as f64 / 1024.0
    );
}
