//! One test's world: a temp dir, a real HAProxy, test images, and a guard that removes every
//! container and image the test made, even when it fails (and a `Watchdog` that does the same
//! if the test process dies without unwinding).
#![allow(dead_code)]

use std::process::{Command, Stdio};

use super::haproxy::Haproxy;
use super::images::{build_image, remove_image, ImageOpts};
use super::process::Watchdog;

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub instance: String,
    pub haproxy: Haproxy,
    images: Vec<String>,
    watchdog: Watchdog,
}

/// What `Drop for TestEnv` does, for the watchdog: "$1" the instance, then the image tags.
const CLEAN_UP: &str = r#"
instance=$1
shift
ids=$(docker ps -aq --filter "label=hotswap.instance=$instance")
[ -z "$ids" ] || docker rm -f $ids
for tag in "$@"; do docker rmi "$tag"; done
"#;

/// `defaults` lines for `with_redispatch`: a request a dead container refused, dropped or never
/// answered the connect of is sent to another server; a connect on the host's bridge takes well
/// under a millisecond, so 250 ms is long enough to say the address is dead.
pub const REDISPATCH: &str = "    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n    timeout connect 250ms\n";

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        TestEnv::with_balance(name, "roundrobin")
    }

    /// As `new`, with another balance algorithm for the backend.
    pub fn with_balance(name: &str, balance: &str) -> TestEnv {
        TestEnv::with_backends(name, &[("web", balance)])
    }

    /// One HAProxy frontend and backend per entry (backend name, balance algorithm).
    pub fn with_backends(name: &str, backends: &[(&str, &str)]) -> TestEnv {
        TestEnv::with_haproxy(name, backends, "")
    }

    /// As `new`, with HAProxy retrying a request a dead server refused or dropped on another
    /// one: what a service with replicas needs for a container's death to cost no request
    /// (docs/supervision.md).
    pub fn with_redispatch(name: &str) -> TestEnv {
        TestEnv::with_haproxy(name, &[("web", "roundrobin")], REDISPATCH)
    }

    /// As `new`, for a simulated host whose instance id is `instance` (an Auto Scaling group's
    /// instance in moto): labels, reports and image tags carry it.
    pub fn for_instance(name: &str, instance: &str) -> TestEnv {
        let mut env = TestEnv::with_haproxy(name, &[("web", "roundrobin")], "");
        env.watchdog = Watchdog::start(CLEAN_UP, &[instance]);
        env.instance = instance.to_string();
        env
    }

    fn with_haproxy(name: &str, backends: &[(&str, &str)], defaults: &str) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hotswap-{name}-"))
            .tempdir()
            .unwrap();
        let haproxy = Haproxy::start_backends_with(dir.path(), backends, defaults)
            .unwrap_or_else(|e| panic!("{e}"));
        let instance = format!("t-{name}-{}", std::process::id());
        TestEnv {
            watchdog: Watchdog::start(CLEAN_UP, &[&instance]),
            instance,
            dir,
            haproxy,
            images: Vec::new(),
        }
    }

    /// Writes hotswapd's config for one service `web` on this test's HAProxy; returns its path.
    pub fn config(&self, opts: &super::daemon::ServiceOpts) -> std::path::PathBuf {
        super::daemon::write_config(self.dir.path(), &self.instance, &self.haproxy, opts)
    }

    /// As `config`, with the service's code mounted from `root` on the host (at `/code` in the
    /// container, named by the app's `CODE_DIR`): it takes code-only releases.
    pub fn config_with_code(
        &self,
        opts: &super::daemon::ServiceOpts,
        root: &std::path::Path,
    ) -> std::path::PathBuf {
        let mut opts = opts.clone();
        opts.env.push(("CODE_DIR", "/code".into()));
        let config = self.config(&opts);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "CODE_DIR = \"/code\" }",
            &format!(
                "CODE_DIR = \"/code\" }}\nvolumes = [\"{}:/code:ro\"]",
                root.display()
            ),
        );
        std::fs::write(
            &config,
            format!(
                "{text}\n[services.web.code]\napp_root = \"{}\"\n",
                root.display()
            ),
        )
        .unwrap();
        config
    }

    /// Builds `<instance>-web:<release>` and returns the reference.
    pub fn image(&mut self, release: &str, opts: &ImageOpts) -> String {
        self.image_for("web", release, opts)
    }

    /// Builds `<instance>-<service>:<release>` and returns the reference.
    pub fn image_for(&mut self, service: &str, release: &str, opts: &ImageOpts) -> String {
        let tag = format!("{}-{service}:{release}", self.instance.to_lowercase());
        self.watchdog.note(&tag);
        build_image(&tag, release, opts).unwrap_or_else(|e| panic!("{e}"));
        self.images.push(tag.clone());
        tag
    }

    /// Takes an image the test built itself into the clean-up (removed when dropped).
    pub fn own_image(&mut self, tag: &str) {
        self.watchdog.note(tag);
        self.images.push(tag.to_string());
    }

    /// Containers this test's daemon labeled, as (name, image, running).
    pub fn containers(&self) -> Vec<(String, String, bool)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=hotswap.instance={}", self.instance),
            ])
            .args(["--format", "{{.Names}}\t{{.Image}}\t{{.State}}"])
            .stdin(Stdio::null())
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()? == "running",
                ))
            })
            .collect()
    }

    pub fn image_exists(&self, tag: &str) -> bool {
        Command::new("docker")
            .args(["image", "inspect", tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=hotswap.instance={}", self.instance),
            ])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for tag in &self.images {
            remove_image(tag);
        }
    }
}
