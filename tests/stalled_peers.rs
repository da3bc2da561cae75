//! Peers that accept a connection and never answer (`support::stall`): every call hotswapd makes
//! to AWS has an attempt and an operation deadline, so a stuck connection is dropped, a new one
//! made, and what waited goes through once the peer answers again, without a restart.
//! The bound stated (ARCHITECTURE.md, deadlines): reports are in SQS within 25 s of the heal
//! (an attempt's 10 s, the sender's backoff of at most 10 s, the send), the watcher's read within
//! its backoff after the operation's 30 s.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::moto::{create_queue, drain, sqs, Moto};
use support::stall::Stall;

/// The environment of a daemon whose AWS endpoint is `stall` (moto behind it).
fn aws_env(stall: &Stall) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", stall.url()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

fn append(config: &std::path::Path, text: &str) {
    let before = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{before}{text}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_endpoint_that_stops_answering_then_heals_gets_every_report_once_without_a_restart()
{
    let mut env = TestEnv::new("sqsstall");
    let moto = Moto::start(env.dir.path());
    let client = sqs(&moto).await;
    let url = create_queue(&client, "reports").await;
    let stall = Stall::start(moto.addr);
    let images: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|r| env.image(r, &ImageOpts::default()))
        .collect();
    let config = env.config(&ServiceOpts::default());
    append(
        &config,
        &format!(
            "\n[report]\nsqs_queue_url = \"{url}\"\nimds_endpoint = \"\"\nregion = \"us-east-1\"\n"
        ),
    );
    let daemon = Daemon::start_env(env.dir.path(), &config, &aws_env(&stall));
    daemon.deploy_ok(&images[0]);
    let first = drain(&client, &url, Duration::from_secs(3)).await;
    assert_eq!(first.len(), 1, "delivered through the stand-in: {first:?}");

    stall.stall();
    for (image, id) in images[1..].iter().zip(["during-1", "during-2"]) {
        let out = daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            image,
            "--deploy-id",
            id,
            "--wait",
        ]);
        assert!(out.status.success(), "{}", support::text(&out));
    }
    // long enough for the first send to be stuck past its attempt deadline
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        drain(&client, &url, Duration::from_secs(1))
            .await
            .is_empty(),
        "nothing gets through a peer that does not answer"
    );
    let outbox = env.dir.path().join("state/outbox");
    assert!(outbox.join("during-1.json").exists() && outbox.join("during-2.json").exists());

    stall.heal();
    let healed = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 && healed.elapsed() < Duration::from_secs(40) {
        got.extend(drain(&client, &url, Duration::from_secs(1)).await);
    }
    let took = healed.elapsed();
    // anything sent twice would show up now
    got.extend(drain(&client, &url, Duration::from_secs(3)).await);
    let mut ids: Vec<&str> = got
        .iter()
        .map(|m| m["deploy_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["during-1", "during-2"],
        "each once; log:\n{}",
        daemon.log()
    );
    assert!(
        took < Duration::from_secs(25),
        "delivered {took:?} after the heal (bound 25 s)"
    );
    eprintln!("reports delivered {} ms after the heal", took.as_millis());
    assert!(!outbox.join("during-1.json").exists() && !outbox.join("during-2.json").exists());
}

const STACK: &str = r#"{
  "Parameters": {"Image": {"Type": "String"}, "DeployId": {"Type": "String"}},
  "Resources": {
    "App": {
      "Type": "AWS::SQS::Queue",
      "Metadata": {"hotswap": {"deploy_id": {"Ref": "DeployId"},
                               "services": {"web": {"image": {"Ref": "Image"}}}}}
    }
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudformation_endpoint_that_stops_answering_then_heals_is_read_again_by_the_watcher() {
    let mut env = TestEnv::new("cfnstall");
    let moto = Moto::start(env.dir.path());
    let conf = moto.sdk_config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    let a = env.image("a", &ImageOpts::default());
    let b = env.image("b", &ImageOpts::default());
    support::moto::create_stack(
        &cfn,
        "shop",
        STACK.to_string(),
        &[("Image", a.as_str()), ("DeployId", "s1")],
    )
    .await;
    let stall = Stall::start(moto.addr);
    let config = env.config(&ServiceOpts::default());
    append(
        &config,
        "\n[cloudformation]\nstack = \"shop\"\nresource = \"App\"\nregion = \"us-east-1\"\npoll_secs = 1\n",
    );
    let daemon = Daemon::start_env(env.dir.path(), &config, &aws_env(&stall));
    let current = |d: &Daemon| {
        d.status_json().ok().and_then(|s| {
            s["services"][0]["current"]["release"]["image"]
                .as_str()
                .map(String::from)
        })
    };
    let started = Instant::now();
    while current(&daemon).as_deref() != Some(a.as_str()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    stall.stall();
    // the stack changes while the host cannot read it
    cfn.update_stack()
        .stack_name("shop")
        .template_body(STACK)
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("Image")
                .parameter_value(&b)
                .build(),
        )
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("DeployId")
                .parameter_value("s2")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // the read in flight ends at its operation deadline (30 s), and the watcher says so
    let stalled = Instant::now();
    loop {
        let s = daemon.status_json().unwrap();
        if s["cloudformation"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("next try in"))
        {
            break;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(45),
            "the watcher never says it cannot read: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(current(&daemon).as_deref(), Some(a.as_str()));

    stall.heal();
    let healed = Instant::now();
    while current(&daemon).as_deref() != Some(b.as_str()) {
        assert!(
            healed.elapsed() < Duration::from_secs(90),
            "not read again after the heal; status {:?}\n{}",
            daemon.status_json(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "the new release swapped in {} ms after the heal",
        healed.elapsed().as_millis()
    );
    assert!(stall.accepted() < 100, "connections: {}", stall.accepted());
}
