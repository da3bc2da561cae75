//! A real moto server (PyPI, in the venv scripts/install-deps makes) on a loopback port, as the
//! AWS endpoint for SQS, CloudFormation, Auto Scaling, S3 and ELBv2. Killed when dropped or when
//! the test process dies (`super::process::Guarded`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{listening, wait_until, Guarded};

pub struct Moto {
    child: Option<Guarded>,
    pub addr: SocketAddr,
    log: PathBuf,
}

fn moto_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/moto_server");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("moto_server not found at {}: these tests need moto (PyPI moto[server]); scripts/install-deps installs it", p.display()))
    }
}

impl Moto {
    pub fn start(dir: &std::path::Path) -> Moto {
        let port = super::haproxy::free_port();
        let mut m = Moto {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("moto.log"),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let bin = moto_binary().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(Guarded::spawn(cmd).expect("starting moto_server"));
        let addr = self.addr;
        assert!(
            wait_until(Duration::from_secs(20), || listening(addr)),
            "moto did not listen in 20 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SDK configuration for clients of this server (test credentials, us-east-1).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    /// Environment for an AWS SDK client pointed at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Stops the server (an outage); `resume` starts it again on the same port (state is lost,
    /// as with a real outage of a fresh endpoint).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn resume(&mut self) {
        self.spawn();
    }
}

/// CreateStack `name` from `body` with `params` (and CAPABILITY_IAM, which templates with roles
/// need), as the tests and benches make their stacks.
pub async fn create_stack(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
    body: String,
    params: &[(&str, &str)],
) {
    let mut create = cfn
        .create_stack()
        .stack_name(name)
        .template_body(body)
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityIam);
    for (k, v) in params {
        create = create.parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(*k)
                .parameter_value(*v)
                .build(),
        );
    }
    create.send().await.unwrap();
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An SQS client of this server, for a test to read what hosts sent.
pub async fn sqs(moto: &Moto) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(moto.url())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// Every message on the queue within `patience`, deleted as read.
pub async fn drain(
    client: &aws_sdk_sqs::Client,
    url: &str,
    patience: Duration,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let until = Instant::now() + patience;
    while Instant::now() < until {
        let got = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    out
}
