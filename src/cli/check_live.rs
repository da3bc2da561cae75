//! `check-config --live` (both binaries): beyond the file, whether this host can run it now. The
//! Docker engine answers; each service's HAProxy runtime socket answers and has its backend,
//! with a balance algorithm that takes servers at runtime when the switch is `runtime`; the
//! directories hotswapd writes are writable. Each finding names what was checked and what it
//! found.

use std::path::Path;

use serde::Serialize;

use crate::balancer::{Balancer, Haproxy};
use crate::config::{Settings, SwitchMode};
use crate::runtime::{Docker, Runtime, LABEL_INSTANCE};

/// One thing checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

fn finding(what: impl Into<String>, result: Result<String, String>) -> Finding {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Finding {
        what: what.into(),
        ok,
        detail,
    }
}

/// Balance algorithms that take servers added at runtime (`add server`).
const DYNAMIC: [&str; 4] = ["roundrobin", "leastconn", "first", "random"];

/// The `balance` of `backend` in an HAProxy config text (None: not set, HAProxy's default,
/// roundrobin).
pub fn balance_of(config: &str, backend: &str) -> Option<String> {
    let mut inside = false;
    for line in config.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if !line.starts_with(char::is_whitespace) && !first.is_empty() {
            inside = first == "backend" && words.next() == Some(backend);
            continue;
        }
        if inside && first == "balance" {
            return words.next().map(String::from);
        }
    }
    None
}

/// Whether hotswapd can write in `dir`, or make it (it creates missing directories at start).
fn writable(dir: &Path) -> Result<String, String> {
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        return Err("no part of the path exists".into());
    };
    let probe = existing.join(format!(".hotswap-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in {}: {e}", existing.display()))?;
    Ok(if existing == dir {
        "writable".into()
    } else {
        format!(
            "not there yet; hotswapd makes it ({} is writable)",
            existing.display()
        )
    })
}

/// Runs every check; none stops the others.
pub async fn check(settings: &Settings) -> Vec<Finding> {
    let d = &settings.daemon;
    let mut found = Vec::new();
    let docker = match Docker::connect(d.docker_socket.as_deref()).await {
        Ok(docker) => docker
            .list(&[(LABEL_INSTANCE, d.instance_id.as_str())])
            .await
            .map(|c| format!("answers; {} container(s) of this host", c.len()))
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    found.push(finding("Docker engine", docker));
    for s in settings.services.values() {
        let h = &s.haproxy;
        let what = format!(
            "service {}: HAProxy backend {:?} at {}",
            s.name,
            h.backend,
            h.runtime_socket.display()
        );
        let servers = Haproxy::new(h)
            .servers()
            .await
            .map(|v| format!("answers; {} server(s)", v.len()))
            .map_err(|e| e.to_string());
        found.push(finding(what, servers));
        if let (Some(file), SwitchMode::Runtime) = (&h.config_file, h.switch) {
            let what = format!("service {}: balance of backend {:?}", s.name, h.backend);
            let result = match crate::fsutil::read_bounded_string(file, crate::fsutil::CONFIG_MAX_BYTES) {
                Err(e) => Err(format!("reading {}: {e}", file.display())),
                Ok(text) => match balance_of(&text, &h.backend) {
                    None => Ok("not set (roundrobin)".into()),
                    Some(b) if DYNAMIC.contains(&b.as_str()) => Ok(b),
                    Some(b) => Err(format!(
                        "balance {b} takes no servers at runtime: use one of {} or switch = \"reload\"",
                        DYNAMIC.join(", ")
                    )),
                },
            };
            found.push(finding(what, result));
        }
    }
    let mut dirs = vec![d.state_dir.clone()];
    dirs.extend(d.reports_file.parent().map(Path::to_path_buf));
    dirs.extend(d.inbox_dir.clone());
    dirs.dedup();
    for dir in dirs {
        found.push(finding(
            format!("directory {}", dir.display()),
            writable(&dir),
        ));
    }
    found
}

/// Prints the findings (one line each) and whether all passed.
pub fn print(findings: &[Finding]) -> bool {
    for f in findings {
        let mark = if f.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", f.what, f.detail);
    }
    findings.iter().all(|f| f.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balance_of_a_backend_is_read_from_its_own_section() {
        let cfg = "global\n    maxconn 10\n\nbackend web\n    balance uri\n    # hotswap:begin web\n\nbackend api\n    mode http\n\nbackend old\n    balance leastconn\n";
        assert_eq!(balance_of(cfg, "web").as_deref(), Some("uri"));
        assert_eq!(balance_of(cfg, "api"), None);
        assert_eq!(balance_of(cfg, "old").as_deref(), Some("leastconn"));
        assert_eq!(balance_of(cfg, "missing"), None);
    }
}
