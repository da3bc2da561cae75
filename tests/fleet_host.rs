//! The host side of the fleet against moto: reports reach SQS through the durable outbox (once,
//! across an outage and a restart), and image archives come from S3 with their digest checked.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::{save_and_remove, ImageOpts};
use support::moto::{create_queue, drain, sqs, Moto};

async fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(moto.url())
        .force_path_style(true)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn report_section(queue_url: &str, moto: &Moto) -> String {
    format!("\n[report]\nsqs_queue_url = \"{queue_url}\"\nstack = \"shop\"\nimds_endpoint = \"{}\"\nregion = \"us-east-1\"\n", moto.url())
}

fn with_report(config: &std::path::Path, section: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    // [report] must come before the [services...] tables' subtables are closed: append is fine in TOML
    std::fs::write(config, format!("{text}{section}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_survives_an_sqs_outage_and_a_restart_and_arrives_once() {
    let mut env = TestEnv::new("sqs");
    let mut moto = Moto::start(env.dir.path());
    let client = sqs(&moto).await;
    let url = create_queue(&client, "hotswap-reports").await;
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    with_report(&config, &report_section(&url, &moto));
    let aws_env = moto.env();
    let mut daemon = Daemon::start_env(env.dir.path(), &config, &aws_env);
    daemon.deploy_ok(&v1);

    let got = drain(&client, &url, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["schema"], 1);
    assert_eq!(m["result"], "success");
    assert_eq!(
        m["instance_id"], "i-fake",
        "instance id from IMDSv2 (moto's)"
    );
    assert_eq!(m["stack"], "shop");
    assert_eq!(m["image"], v1.as_str());
    assert_eq!(m["failed_requests"], 0);
    assert!(m["phases"].as_array().unwrap().len() >= 5);

    // outage: the swap goes on, the report waits in the outbox, across a daemon restart
    moto.stop();
    let d2 = {
        let out = daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            &v2,
            "--deploy-id",
            "during-outage",
            "--wait",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        "during-outage"
    };
    let outbox = env.dir.path().join("state/outbox");
    assert!(
        outbox.join(format!("{d2}.json")).exists(),
        "report kept in the outbox"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.kill();
    moto.resume();
    let client = sqs(&moto).await;
    let url2 = create_queue(&client, "hotswap-reports").await;
    assert_eq!(url, url2);
    let daemon = Daemon::start_env(env.dir.path(), &config, &aws_env);
    let got = drain(&client, &url, Duration::from_secs(8)).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m["deploy_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [d2], "delivered once after the outage: {got:?}");
    assert!(!outbox.join(format!("{d2}.json")).exists());
    // and a restart after delivery sends nothing again
    drop(daemon);
    let _daemon = Daemon::start_env(env.dir.path(), &config, &aws_env);
    assert!(drain(&client, &url, Duration::from_secs(3))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_archive_in_s3_is_checked_then_swapped_in() {
    let mut env = TestEnv::new("s3arch");
    let moto = Moto::start(env.dir.path());
    let v1 = env.image("1", &ImageOpts::default());
    let arch = env.image("s3", &ImageOpts::default());
    let tar = env.dir.path().join("web-s3.tar");
    let sha = save_and_remove(&arch, &tar);
    let client = s3(&moto).await;
    client
        .create_bucket()
        .bucket("payloads")
        .send()
        .await
        .unwrap();
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&tar)
        .await
        .unwrap();
    client
        .put_object()
        .bucket("payloads")
        .key("web/s3.tar")
        .body(body)
        .send()
        .await
        .unwrap();

    let config = env.config(&ServiceOpts::default());
    with_report(&config, "\n[report]\nregion = \"us-east-1\"\n");
    let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
    daemon.deploy_ok(&v1);

    let wrong = "f".repeat(64);
    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        "s3://payloads/web/s3.tar",
        "--archive-sha256",
        &wrong,
        "--wait",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&sha) && err.contains("nothing started"),
        "{err}"
    );
    assert!(!env.image_exists(&arch));
    assert_eq!(env.containers().len(), 1);
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "failure");

    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        "s3://payloads/web/s3.tar",
        "--archive-sha256",
        &sha,
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let containers = env.containers();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].1, arch);
    let archives = env.dir.path().join("state/archives");
    assert!(
        std::fs::read_dir(&archives).map(|d| d.count()).unwrap_or(0) == 0,
        "downloads are removed after loading"
    );

    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        "s3://payloads/web/s3.tar",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs archive_sha256"));
}

/// The metadata watcher cannot reach its stack (it does not exist): the error is shown in
/// `status` with the next try, retried with backoff, and the daemon keeps taking releases by the
/// other ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_watcher_that_cannot_read_its_stack_says_so_and_the_daemon_carries_on() {
    let mut env = TestEnv::new("cfnwatch");
    let moto = Moto::start(env.dir.path());
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    with_report(
        &config,
        "\n[cloudformation]\nstack = \"no-such-stack\"\nresource = \"AppGroup\"\nregion = \"us-east-1\"\npoll_secs = 1\n",
    );
    let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
    let started = Instant::now();
    let error = loop {
        let s = daemon.status_json().unwrap();
        if let Some(e) = s["cloudformation"]["error"].as_str() {
            break e.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.contains("no-such-stack") && error.contains("next try in"),
        "{error}"
    );
    daemon.deploy_ok(&v1);
    let out = daemon.ctl(&["status"]);
    assert!(
        support::text(&out).contains("releases from stack no-such-stack resource AppGroup"),
        "{}",
        support::text(&out)
    );
}
