//! A host hook: one command run around a swap (`[services.NAME.hooks]`), with the swap described
//! in its environment, its stdout and stderr interleaved in one pipe and the tail kept for the
//! report, killed with its whole process group when its timeout passes.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Lines of a hook's output kept for the report.
const TAIL_LINES: usize = 20;
/// Bytes of output held while it runs (a chatty hook cannot fill the daemon's memory).
const TAIL_BYTES: usize = 16 * 1024;

pub use crate::model::HookRun;

/// Runs `argv` with `env` added to hotswapd's environment, for at most `timeout`.
pub async fn run(
    hook: &str,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> HookRun {
    let started = Instant::now();
    let mut run = HookRun {
        hook: hook.to_string(),
        command: argv.to_vec(),
        exit_code: None,
        took_ms: 0,
        failure: None,
        output_tail: Vec::new(),
    };
    match spawn_and_wait(argv, env, timeout).await {
        Ok((code, failure, output)) => {
            run.exit_code = code;
            run.failure = failure;
            run.output_tail = tail(&output);
        }
        Err(e) => run.failure = Some(format!("cannot start it: {e}")),
    }
    run.took_ms = started.elapsed().as_millis() as u64;
    run
}

async fn spawn_and_wait(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<(Option<i32>, Option<String>, Vec<u8>)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("an empty command"))?;
    // one pipe for stdout and stderr: the tail shows them in the order they came
    let (read, write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write.try_clone()?))
        .stderr(Stdio::from(write))
        // its own process group: a timeout kills what it started too
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    drop(cmd); // our copies of the pipe's write end: the read ends when the hook's do
    let pgid = child.id().map(|p| p as i32);
    let reading = tokio::spawn(read_bounded(read));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            None
        }
    };
    // what it left running in the background may hold the pipe: read what came, briefly
    let output = match tokio::time::timeout(Duration::from_secs(1), reading).await {
        Ok(Ok(bytes)) => bytes,
        _ => Vec::new(),
    };
    let (code, failure) = match status {
        None => (
            None,
            Some(format!(
                "killed after its timeout of {} s",
                timeout.as_secs()
            )),
        ),
        Some(s) if s.success() => (Some(0), None),
        Some(s) => match s.code() {
            Some(c) => (Some(c), Some(format!("exited with code {c}"))),
            None => (None, Some(format!("ended by {s}"))),
        },
    };
    Ok((code, failure, output))
}

/// Reads the pipe to its end, keeping the last `TAIL_BYTES`.
async fn read_bounded(read: OwnedFd) -> Vec<u8> {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * TAIL_BYTES {
                    kept.drain(..kept.len() - TAIL_BYTES);
                }
            }
        }
    }
}

/// The last `TAIL_LINES` lines, each at most 300 characters.
fn tail(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.chars().take(300).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_hook_sees_the_swap_and_its_output_tail_is_kept() {
        let env = vec![("HOTSWAP_VERSION".to_string(), "42".to_string())];
        let script =
            "for i in $(seq 1 30); do echo line $i; done; echo \"to $HOTSWAP_VERSION\" >&2";
        let run = run("before_switch", &sh(script), &env, Duration::from_secs(5)).await;
        assert_eq!(run.exit_code, Some(0), "{run:?}");
        assert_eq!(run.failure, None);
        assert_eq!(run.output_tail.len(), TAIL_LINES);
        assert_eq!(
            run.output_tail.last().unwrap(),
            "to 42",
            "stderr in order: {run:?}"
        );
        assert_eq!(run.output_tail[0], "line 12");
    }

    #[tokio::test]
    async fn a_failing_hook_says_how() {
        let run = run(
            "before_start",
            &sh("echo nope; exit 3"),
            &[],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(run.exit_code, Some(3));
        assert_eq!(run.failure.as_deref(), Some("exited with code 3"));
        assert_eq!(run.output_tail, ["nope"]);
        let gone = super::run(
            "before_start",
            &["/nonexistent/hook".to_string()],
            &[],
            Duration::from_secs(5),
        )
        .await;
        assert!(gone.failure.unwrap().starts_with("cannot start it"));
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!(
            "sleep 30 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let t = Instant::now();
        let run = run("before_switch", &sh(&script), &[], Duration::from_secs(1)).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(run.exit_code, None);
        assert_eq!(
            run.failure.as_deref(),
            Some("killed after its timeout of 1 s")
        );
        assert_eq!(run.output_tail, ["started"]);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // the background sleep was in the hook's group: gone (or a zombie of init's)
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z "),
            "the hook's child still runs: {state}"
        );
    }
}
