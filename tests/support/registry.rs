//! A real private image registry (Debian package `docker-registry`, distribution 2.8) on a
//! loopback port, with htpasswd basic auth (`htpasswd` from `apache2-utils`): what a release that
//! names `127.0.0.1:PORT/team/web:2` is pulled from. Docker talks plain HTTP to registries on
//! 127.0.0.0/8, so no certificate is needed. The registry is killed when dropped or when the test
//! process dies (`super::process::Guarded`); the local tags under its prefix are removed on drop,
//! and by a `Watchdog` if the test process dies without unwinding.
//!
//! The registry stats the htpasswd file on every request and reloads it when its mtime changed
//! (checked by hand on 2.8.2: a rewrite with the old mtime kept is not seen, a `touch` is), so
//! [`LocalRegistry::set_password`] takes effect at once, without a restart.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::process::{die_with_caller, listening, wait_until, Guarded, Watchdog};
use super::text;

pub struct LocalRegistry {
    /// 127.0.0.1 and a port that was free.
    pub addr: SocketAddr,
    /// The credentials it was started with (`set_password` changes what it accepts, not these).
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Guarded,
    /// What `push` logs in with: the credentials last set.
    current: Mutex<(String, String)>,
    /// Full references pushed, in order.
    pushed: Mutex<Vec<String>>,
    watchdog: Watchdog,
}

/// What `Drop for LocalRegistry` does, also run by the watchdog (which then removes the temp dir,
/// "$2"): removes every local image reference under the prefix "$1" (`127.0.0.1:PORT/`), by tag,
/// or by digest when untagged (an image pulled by digest). No force: a tag still used by a
/// container stays.
const CLEAN_UP: &str = r#"
docker images --digests --format '{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}' |
while read -r tag digest; do
    case "$tag" in "$1"*) ;; *) continue ;; esac
    case "$tag" in
        *':<none>') docker rmi "$digest" ;;
        *) docker rmi "$tag" ;;
    esac
done
"#;

const MISSING: &str = "these tests need a local image registry: run scripts/install-deps \
                       (Debian packages docker-registry and apache2-utils)";

fn registry_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("docker-registry");
        if p.exists() {
            return p;
        }
    }
    panic!("docker-registry not found in /usr/bin or /usr/local/bin: {MISSING}");
}

/// One htpasswd line for `user` (bcrypt: the registry takes nothing else).
fn htpasswd_line(user: &str, password: &str) -> String {
    let mut cmd = Command::new("htpasswd");
    cmd.args(["-Bbn", user, password]).stdin(Stdio::null());
    die_with_caller(&mut cmd);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("htpasswd not found in PATH: {MISSING}")
        }
        Err(e) => panic!("running htpasswd: {e}"),
    };
    assert!(out.status.success(), "htpasswd -Bbn {user}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string() + "\n"
}

/// Replaces `path` atomically (the registry may read it at any moment), with an mtime later than
/// the old file's: the registry reloads on an mtime change only, and two writes within one clock
/// tick would otherwise look alike.
fn replace_file(path: &Path, content: &str) {
    let old = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    if let Some(old) = old {
        if f.metadata().unwrap().modified().unwrap() <= old {
            f.set_modified(old + Duration::from_millis(1)).unwrap();
        }
    }
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs `cmd` to completion (killed if this thread dies), failing the test with what it said.
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_caller(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", text(&out));
    out
}

/// Standard base64 with padding (RFC 4648), for a docker `auth` field.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl LocalRegistry {
    /// Starts a registry accepting `user`/`password` only, with its storage in a temp dir, and
    /// waits (10 s at most) until it accepts connections.
    pub fn start(user: &str, password: &str) -> LocalRegistry {
        let bin = registry_binary();
        let dir = tempfile::Builder::new()
            .prefix("hotswap-registry-")
            .tempdir()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], super::haproxy::free_port()));
        let htpasswd = dir.path().join("htpasswd");
        replace_file(&htpasswd, &htpasswd_line(user, password));
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n\
                 auth:\n  htpasswd:\n    realm: hotswap-test\n    path: {htpasswd}\n",
                data = dir.path().join("data").display(),
                htpasswd = htpasswd.display(),
            ),
        )
        .unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = Guarded::spawn(cmd).expect("starting docker-registry");
        let up = wait_until(Duration::from_secs(10), || {
            listening(addr) || child.try_wait().is_some()
        });
        if !up || child.try_wait().is_some() {
            panic!(
                "docker-registry did not listen on {addr} in 10 s ({}): {}",
                match child.try_wait() {
                    Some(st) => format!("it exited: {st}"),
                    None => "still running".into(),
                },
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let watchdog = Watchdog::start(
            &format!("{CLEAN_UP}rm -rf \"$2\"\n"),
            &[&format!("{addr}/"), dir.path().to_str().unwrap()],
        );
        LocalRegistry {
            addr,
            user: user.into(),
            password: password.into(),
            dir,
            child,
            current: Mutex::new((user.into(), password.into())),
            pushed: Mutex::new(Vec::new()),
            watchdog,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference and the key in `auths`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// From the next request on, the registry accepts `user`/`password` only (the htpasswd file
    /// is rewritten with this one entry; no restart needed, see the module docs).
    pub fn set_password(&self, user: &str, password: &str) {
        replace_file(
            &self.dir.path().join("htpasswd"),
            &htpasswd_line(user, password),
        );
        *self.current.lock().unwrap() = (user.into(), password.into());
    }

    /// Pushes local image `local_image` as `127.0.0.1:PORT/<repo_tag>` (logged in with the
    /// credentials last set, from a docker client config of its own), then removes that local
    /// tag so that a later pull really goes to the registry. Returns the full reference.
    pub fn push(&self, local_image: &str, repo_tag: &str) -> String {
        let reference = format!("{}/{repo_tag}", self.host());
        let (user, password) = self.current.lock().unwrap().clone();
        let config = self.dir.path().join("docker-config");
        let mut tag = Command::new("docker");
        tag.args(["tag", local_image, &reference]);
        run(tag, None);
        // recorded as soon as the tag exists: Drop removes it even if the push fails
        self.pushed.lock().unwrap().push(reference.clone());
        let mut login = Command::new("docker");
        login.arg("--config").arg(&config).args([
            "login",
            "-u",
            &user,
            "--password-stdin",
            &self.host(),
        ]);
        run(login, Some(&password));
        let mut push = Command::new("docker");
        push.arg("--config").arg(&config).args(["push", &reference]);
        run(push, None);
        let mut rmi = Command::new("docker");
        rmi.args(["rmi", &reference]);
        run(rmi, None);
        reference
    }

    /// Full references pushed so far, in order.
    pub fn pushed(&self) -> Vec<String> {
        self.pushed.lock().unwrap().clone()
    }

    /// The text of a docker client `config.json` holding `user`/`password` for this registry
    /// (`{"auths": {"127.0.0.1:PORT": {"auth": base64("user:password")}}}`).
    pub fn docker_config_json(&self, user: &str, password: &str) -> String {
        let auth = base64(format!("{user}:{password}").as_bytes());
        serde_json::json!({ "auths": { self.host(): { "auth": auth } } }).to_string()
    }

    /// The registry's own log (stdout and stderr), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for LocalRegistry {
    /// Kills the registry and removes the local tags under its prefix. Declare the registry
    /// before a `TestEnv` so that it drops after the containers that use its images are gone.
    fn drop(&mut self) {
        self.child.kill();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(CLEAN_UP)
            .arg("hotswap-registry-clean-up")
            .arg(format!("{}/", self.host()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
