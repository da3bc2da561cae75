//! Building the test workload image (testapp/) for integration tests.
//!
//! No registry is reachable in the test environment, so images are built
//! locally: `scripts/build-testapp` compiles the static binary and lays out a
//! docker build context (once per test process), then each tag is a
//! `docker build` of that `FROM scratch` context with build args.
//!
//! Missing docker (CLI or daemon) is an error with a clear message, never a
//! silent skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Options baked into the image as ENV (see testapp/Dockerfile).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOpts {
    /// `HEALTHY=never`: /health always answers 503.
    pub healthy_never: bool,
    /// `/health` answers 503 until this many ms after start.
    pub warmup_ms: u64,
    /// Percentage of non-health requests answered 500.
    pub fail_pct: u32,
}

/// Repository root (the parent crate's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn describe(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = if stderr.trim().is_empty() {
        stdout.trim().to_string()
    } else {
        stderr.trim().to_string()
    };
    format!("{} ({})", text, out.status)
}

/// Checks that the docker CLI exists and the daemon answers.
pub fn check_docker() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "docker CLI not found in PATH: these tests need the `docker` command and a \
                 running Docker daemon"
                    .to_string()
            } else {
                format!("could not run `docker version`: {e}")
            }
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        return Err(format!(
            "Docker daemon is not answering (`docker version` failed): {}; these tests need \
             a running Docker daemon reachable by the docker CLI",
            describe(&out)
        ));
    }
    Ok(())
}

/// Runs scripts/build-testapp once per process; returns the build context dir.
fn build_context() -> Result<PathBuf, String> {
    static CTX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        let root = repo_root();
        let script = root.join("scripts/build-testapp");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout.lines().last().unwrap_or("").trim();
        let dir = PathBuf::from(dir);
        if !dir.join("Dockerfile").is_file() || !dir.join("hotswap-testapp").is_file() {
            return Err(format!(
                "{} did not produce a build context (got {:?})",
                script.display(),
                dir
            ));
        }
        Ok(dir)
    })
    .clone()
}

/// Path of the docker build context (builds the binary on first use).
pub fn context_dir() -> Result<PathBuf, String> {
    build_context()
}

fn docker_build(ctx: &Path, tag: &str, release: &str, opts: &ImageOpts) -> Result<(), String> {
    let healthy = if opts.healthy_never { "never" } else { "" };
    let out = Command::new("docker")
        .arg("build")
        .arg("-q")
        // no layer cache: another test removing its image prunes the untagged layers it was
        // built from, and a build reusing them as cache then fails with "No such image"
        .arg("--no-cache")
        .args(["-t", tag])
        .args(["--build-arg", &format!("RELEASE={release}")])
        .args(["--build-arg", &format!("HEALTHY={healthy}")])
        .args(["--build-arg", &format!("WARMUP_MS={}", opts.warmup_ms)])
        .args(["--build-arg", &format!("FAIL_PCT={}", opts.fail_pct)])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `docker build`: {e}"))?;
    if !out.status.success() {
        return Err(format!("docker build -t {tag} failed: {}", describe(&out)));
    }
    Ok(())
}

/// Builds image `tag` of the test workload reporting `release`.
///
/// The static binary is built once per process (scripts/build-testapp); each
/// call then runs `docker build -t tag --build-arg ...` on the context.
pub fn build_image(tag: &str, release: &str, opts: &ImageOpts) -> Result<(), String> {
    check_docker()?;
    let ctx = build_context()?;
    docker_build(&ctx, tag, release, opts)
}

/// Best-effort `docker rmi TAG` (no force: an image still used by a container
/// stays). Errors are ignored.
pub fn remove_image(tag: &str) {
    let _ = Command::new("docker")
        .args(["rmi", tag])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `docker save`s image `tag` to `tar`, then removes the image (`docker rmi`): a release archive
/// to load. Returns the archive's sha256 (hex).
pub fn save_and_remove(tag: &str, tar: &Path) -> String {
    assert!(Command::new("docker")
        .arg("save")
        .arg("-o")
        .arg(tar)
        .arg(tag)
        .status()
        .unwrap()
        .success());
    let sum = Command::new("sha256sum").arg(tar).output().unwrap();
    let sha = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(Command::new("docker")
        .args(["rmi", tag])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    sha
}
