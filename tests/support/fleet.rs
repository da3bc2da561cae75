//! A fleet on this machine, against moto: a stack whose Auto Scaling group has N instances, and
//! N simulated hosts, each its own HAProxy and its own hotswapd whose instance id is one of the
//! group's, sharing the Docker engine and a private registry on loopback (Debian's
//! docker-registry with htpasswd) the releases are pulled from. Hosts take releases from the
//! stack's metadata through their own watcher (`[cloudformation]`), or one of them through the
//! cfn-hup hook (packaging/cfn-hup/cfn-hook), with cfn-hup played here. For tests/fleet_e2e.rs,
//! `scripts/bench fleet-e2e` and `scripts/demo fleet`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{Daemon, ServiceOpts, HOTSWAPCTL};
use super::env::TestEnv;
use super::images::ImageOpts;
use super::moto::Moto;
use super::process::Guarded;
use super::registry::LocalRegistry;
use super::text;

/// The daemon drops before its env: a live supervisor would repair what the env removes.
pub struct Host {
    pub daemon: Daemon,
    pub env: TestEnv,
    pub config: PathBuf,
    pub instance_id: String,
    /// Takes releases through the cfn-hup hook, not its own watcher.
    pub hooked: bool,
}

impl Host {
    /// The image its service serves now, as `status` says.
    pub fn current(&self) -> Option<String> {
        let s = self.daemon.status_json().ok()?;
        s["services"][0]["current"]["release"]["image"]
            .as_str()
            .map(String::from)
    }

    /// What cfn-hup does on a metadata change: its hook with `cfn-get-metadata` played by a
    /// stand-in printing `metadata`, as root with no TTY and a bare environment.
    pub fn run_hook(&self, metadata: &str) -> Output {
        let bin = self.env.dir.path().join("bin");
        let file = self.env.dir.path().join("metadata.json");
        if !bin.exists() {
            std::fs::create_dir(&bin).unwrap();
            std::os::unix::fs::symlink(HOTSWAPCTL, bin.join("hotswapctl")).unwrap();
            let stand_in = bin.join("cfn-get-metadata");
            std::fs::write(&stand_in, format!("#!/bin/sh\ncat {}\n", file.display())).unwrap();
            std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(&file, metadata).unwrap();
        run_cfn_hook(&bin, &self.daemon.socket)
    }
}

/// hotswap's cfn-hup hook for stack `shop`, resource `AppGroup`, as cfn-hup runs an action:
/// root, no TTY (own session, stdin from /dev/null), a bare environment whose PATH is `bin`
/// (where the test put `cfn-get-metadata` and `hotswapctl`) and the system's.
pub fn run_cfn_hook(bin: &Path, socket: &Path) -> Output {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cfn-hup/cfn-hook");
    Command::new("setsid")
        .args(["env", "-i"])
        .arg(format!("PATH={}:/usr/bin:/bin", bin.display()))
        .arg(&hook)
        .args([
            "--stack",
            "shop",
            "--resource",
            "AppGroup",
            "--region",
            "us-east-1",
        ])
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Fields drop in this order: the hosts (daemons, containers) before the images they run (the
/// registry's pulled tags, then the built ones), and moto last.
pub struct Fleet {
    pub hosts: Vec<Host>,
    registry: LocalRegistry,
    images: TestEnv,
    pub repo: String,
    pub template: PathBuf,
    pub cfn: aws_sdk_cloudformation::Client,
    pub moto: Moto,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// A stack of `n` instances and their hosts, with `releases` built and pushed to a private
    /// registry on loopback (the stack starts on the first; hosts pull with credentials from
    /// their `[registry] auth_file`); host `hooked` (if any) uses the cfn-hup hook. Returns once
    /// every host serves the first release.
    pub async fn start(n: usize, hooked: Option<usize>, releases: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start(dir.path());
        let conf = moto.sdk_config().await;
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        let asg = aws_sdk_autoscaling::Client::new(&conf);
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet-e2e.yaml");
        let mut images = TestEnv::new("fleetimg");
        let mut built = Vec::new();
        for r in releases {
            built.push(images.image(r, &ImageOpts::default()));
        }
        // only the registry has them: the first host to swap pulls, the others find the image
        // on the shared engine
        let registry = LocalRegistry::start("fleet", "fleet-pull-secret");
        for (image, r) in built.iter().zip(releases) {
            registry.push(image, &format!("shop/web:{r}"));
            super::images::remove_image(image);
        }
        let repo = format!("{}/shop/web", registry.host());
        let auth_file = dir.path().join("docker-config.json");
        std::fs::write(
            &auth_file,
            registry.docker_config_json("fleet", "fleet-pull-secret"),
        )
        .unwrap();
        let n_text = n.to_string();
        let params = [
            ("DesiredCapacity", n_text.as_str()),
            ("MinInstancesInService", "1"),
            ("ImageRepo", repo.as_str()),
            ("AppVersion", releases[0]),
        ];
        super::moto::create_stack(
            &cfn,
            "shop",
            std::fs::read_to_string(&template).unwrap(),
            &params,
        )
        .await;
        let groups = asg.describe_auto_scaling_groups().send().await.unwrap();
        let mut ids: Vec<String> = groups.auto_scaling_groups()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(String::from))
            .collect();
        ids.sort();
        assert_eq!(ids.len(), n, "moto's group: {ids:?}");
        let queue = stack_output(&cfn, "HotswapQueueUrl").await;
        let mut hosts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let env = TestEnv::for_instance(&format!("host{i}"), id);
            let opts = ServiceOpts {
                health_deadline_secs: 5,
                ..Default::default()
            };
            let config = env.config(&opts);
            let mut text_cfg = std::fs::read_to_string(&config).unwrap();
            text_cfg.push_str(&format!(
                "\n[report]\nsqs_queue_url = \"{queue}\"\nstack = \"shop\"\nimds_endpoint = \"\"\nregion = \"us-east-1\"\n\n[registry]\nauth_file = {:?}\n",
                auth_file.display().to_string()
            ));
            let is_hooked = hooked == Some(i);
            if !is_hooked {
                text_cfg.push_str(
                    "\n[cloudformation]\nstack = \"shop\"\nresource = \"AppGroup\"\nregion = \"us-east-1\"\npoll_secs = 1\n",
                );
            }
            std::fs::write(&config, text_cfg).unwrap();
            let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
            hosts.push(Host {
                env,
                config,
                daemon,
                instance_id: id.clone(),
                hooked: is_hooked,
            });
        }
        let fleet = Fleet {
            hosts,
            registry,
            images,
            repo,
            template,
            cfn,
            moto,
            _dir: dir,
        };
        // the first release, as the stack was created: the watchers take it by themselves, the
        // hooked host when cfn-hup runs its hook at start
        let first = fleet.releases_now().await;
        for h in fleet.hosts.iter().filter(|h| h.hooked) {
            let out = h.run_hook(&first);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        }
        let want = fleet.image(releases[0]);
        let started = Instant::now();
        while !fleet
            .hosts
            .iter()
            .all(|h| h.current().as_deref() == Some(want.as_str()))
        {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the first release is not on every host"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        fleet
    }

    pub fn image(&self, release: &str) -> String {
        format!("{}:{release}", self.repo)
    }

    /// The `hotswap` entry of the group's metadata, as cfn-get-metadata prints it (read as the
    /// daemon's watcher reads it: moto's DescribeStackResource carries no Metadata).
    pub async fn releases_now(&self) -> String {
        let settings = hotswap::config::MetadataWatchSettings {
            stack: "shop".into(),
            resource: "AppGroup".into(),
            key: "hotswap".into(),
            region: None,
            poll: Duration::from_secs(1),
        };
        let text = hotswap::intake::metadata_watch::read(&self.cfn, &settings)
            .await
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["hotswap"].to_string()
    }

    /// `hotswapctl stack-update` to `release`, with the hooked host's cfn-hup played meanwhile
    /// (its hook run once the stack's metadata changed). `inherit`: its progress goes to this
    /// process's stderr (the demo) rather than into the returned output. Returns what it
    /// printed and exited with, and how long it ran from start.
    pub async fn stack_update(&self, release: &str, inherit: bool) -> (Output, Duration) {
        let before = self.releases_now().await;
        let mut cmd = Command::new(HOTSWAPCTL);
        cmd.args(["stack-update", "--stack", "shop", "--template"])
            .arg(&self.template)
            .args(["--parameter", &format!("AppVersion={release}")])
            .args(["--parameter", &format!("ImageRepo={}", self.repo)])
            .args(["--timeout-secs", "120"])
            .envs(self.moto.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if inherit {
                Stdio::inherit()
            } else {
                Stdio::piped()
            });
        let started = Instant::now();
        let child = Guarded::spawn(cmd).unwrap();
        if self.hosts.iter().any(|h| h.hooked) {
            let now = loop {
                let now = self.releases_now().await;
                if now != before {
                    break now;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the stack's metadata never changed"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            for h in self.hosts.iter().filter(|h| h.hooked) {
                let out = h.run_hook(&now);
                eprintln!("cfn-hup hook on {}: {}", h.instance_id, text(&out).trim());
            }
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        (out, started.elapsed())
    }
}

async fn stack_output(cfn: &aws_sdk_cloudformation::Client, key: &str) -> String {
    cfn.describe_stacks()
        .stack_name("shop")
        .send()
        .await
        .unwrap()
        .stacks()[0]
        .outputs()
        .iter()
        .find(|o| o.output_key() == Some(key))
        .and_then(|o| o.output_value().map(String::from))
        .unwrap()
}
