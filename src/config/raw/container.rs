//! `[services.NAME.container]` as written: what every container of the service is created with,
//! each option validated with its key named.

mod kernel;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{absolute, parse_signal, ConfigError, Ctx};
use crate::config::{ContainerOptions, ContainerSettings, SecretSource, Ulimit};
use kernel::{CAPABILITIES, ULIMITS};

/// Bounded json-file logs unless the config says otherwise: a chatty app cannot fill the disk.
const DEFAULT_LOG_MAX_SIZE: &str = "10m";
const DEFAULT_LOG_MAX_FILE: &str = "3";

/// Docker refuses a memory limit under 6 MiB.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Container {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    stop_grace_secs: Option<u64>,
    /// "512m", "1g", or bytes.
    memory: Option<String>,
    cpus: Option<f64>,
    user: Option<String>,
    log_driver: Option<String>,
    log_options: Option<BTreeMap<String, String>>,
    /// NAME = "SOFT:HARD" or "N".
    #[serde(default)]
    ulimits: BTreeMap<String, String>,
    /// "HOST:IP".
    #[serde(default)]
    extra_hosts: Vec<String>,
    #[serde(default)]
    read_only: bool,
    /// Paths inside the container mounted as tmpfs (what a read-only root still needs to write).
    #[serde(default)]
    tmpfs: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    cap_add: Vec<String>,
    network: Option<String>,
    reach: Option<String>,
    #[serde(default)]
    env_files: Vec<PathBuf>,
    /// NAME = "ssm:PARAMETER" or "secretsmanager:ID[#FIELD]".
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

impl Container {
    /// `key` is `services.NAME`.
    pub(super) fn validate(self, ctx: &Ctx, key: &str) -> Result<ContainerSettings, ConfigError> {
        let ck = format!("{key}.container");
        let stop_signal = self.stop_signal.unwrap_or_else(|| "SIGTERM".to_string());
        parse_signal(ctx, &format!("{ck}.stop_signal"), &stop_signal)?;
        check_volumes(ctx, &ck, &self.volumes)?;
        check_labels(ctx, &ck, &self.labels)?;
        let memory_bytes = memory(ctx, &ck, self.memory.as_deref())?;
        let nano_cpus = cpus(ctx, &ck, self.cpus)?;
        check_user(ctx, &ck, self.user.as_deref())?;
        let (log_driver, log_options) = logging(ctx, &ck, self.log_driver, self.log_options)?;
        let ulimits = ulimits(ctx, &ck, &self.ulimits)?;
        check_extra_hosts(ctx, &ck, &self.extra_hosts)?;
        check_tmpfs(ctx, &ck, &self.tmpfs)?;
        let cap_drop = capabilities(ctx, &ck, "cap_drop", self.cap_drop)?;
        let cap_add = capabilities(ctx, &ck, "cap_add", self.cap_add)?;
        check_network(ctx, &ck, self.network.as_deref())?;
        let publish = reach(ctx, &ck, self.reach.as_deref())?;
        for (i, f) in self.env_files.iter().enumerate() {
            absolute(ctx, format!("{ck}.env_files[{i}]"), f)?;
        }
        check_env(ctx, &ck, &self.env)?;
        let secrets = secrets(ctx, &ck, self.secrets)?;
        Ok(ContainerSettings {
            env_files: self.env_files,
            secrets,
            env: self.env,
            command: self.command,
            volumes: self.volumes,
            labels: self.labels,
            stop_signal,
            stop_grace: Duration::from_secs(self.stop_grace_secs.unwrap_or(10)),
            options: ContainerOptions {
                memory_bytes,
                nano_cpus,
                user: self.user,
                log_driver,
                log_options,
                ulimits,
                extra_hosts: self.extra_hosts,
                read_only: self.read_only,
                tmpfs: self.tmpfs,
                cap_drop,
                cap_add,
                network: self.network,
                publish,
            },
        })
    }
}

// Each validator below checks one key of `[services.NAME.container]` (`ck`), naming it.

fn check_volumes(ctx: &Ctx, ck: &str, volumes: &[String]) -> Result<(), ConfigError> {
    for (i, v) in volumes.iter().enumerate() {
        if v.split(':').count() < 2 {
            return Err(ctx.invalid(
                format!("{ck}.volumes[{i}]"),
                format!("{v:?}: expected \"HOST_PATH:CONTAINER_PATH[:ro]\""),
            ));
        }
    }
    Ok(())
}

fn check_labels(ctx: &Ctx, ck: &str, labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    match labels.keys().find(|l| l.starts_with("hotswap.")) {
        Some(l) => Err(ctx.invalid(
            format!("{ck}.labels.{l}"),
            "labels starting with \"hotswap.\" are set by hotswapd itself",
        )),
        None => Ok(()),
    }
}

fn memory(ctx: &Ctx, ck: &str, memory: Option<&str>) -> Result<Option<i64>, ConfigError> {
    let Some(m) = memory else { return Ok(None) };
    let bytes = parse_bytes(m).ok_or_else(|| {
        ctx.invalid(
            format!("{ck}.memory"),
            format!("{m:?}: expected a size such as \"512m\", \"2g\" or bytes"),
        )
    })?;
    if bytes < MIN_MEMORY {
        return Err(ctx.invalid(
            format!("{ck}.memory"),
            format!("{m:?}: Docker needs at least 6m"),
        ));
    }
    Ok(Some(bytes as i64))
}

fn cpus(ctx: &Ctx, ck: &str, cpus: Option<f64>) -> Result<Option<i64>, ConfigError> {
    match cpus {
        None => Ok(None),
        Some(c) if (0.01..=1024.0).contains(&c) => Ok(Some((c * 1e9) as i64)),
        Some(c) => Err(ctx.invalid(
            format!("{ck}.cpus"),
            format!("{c}: expected a number of CPUs from 0.01 up (e.g. 0.5, 2)"),
        )),
    }
}

fn check_user(ctx: &Ctx, ck: &str, user: Option<&str>) -> Result<(), ConfigError> {
    match user {
        Some(u) if u.is_empty() || u.contains(char::is_whitespace) || u.split(':').count() > 2 => {
            Err(ctx.invalid(
                format!("{ck}.user"),
                format!("{u:?}: expected USER, UID, USER:GROUP or UID:GID"),
            ))
        }
        _ => Ok(()),
    }
}

/// The log driver (json-file by default) and its options (bounded by default for the drivers
/// that write to the host's disk).
fn logging(
    ctx: &Ctx,
    ck: &str,
    driver: Option<String>,
    options: Option<BTreeMap<String, String>>,
) -> Result<(String, BTreeMap<String, String>), ConfigError> {
    let driver = driver.unwrap_or_else(|| "json-file".into());
    if driver.is_empty() || driver.contains(char::is_whitespace) {
        return Err(ctx.invalid(
            format!("{ck}.log_driver"),
            format!("{driver:?} is not a log driver name"),
        ));
    }
    let options = match options {
        Some(o) => o,
        None if driver == "json-file" || driver == "local" => BTreeMap::from([
            ("max-size".to_string(), DEFAULT_LOG_MAX_SIZE.to_string()),
            ("max-file".to_string(), DEFAULT_LOG_MAX_FILE.to_string()),
        ]),
        None => BTreeMap::new(),
    };
    if let Some(k) = options.keys().find(|k| k.is_empty()) {
        return Err(ctx.invalid(format!("{ck}.log_options.{k:?}"), "an empty option name"));
    }
    Ok((driver, options))
}

fn ulimits(
    ctx: &Ctx,
    ck: &str,
    given: &BTreeMap<String, String>,
) -> Result<Vec<Ulimit>, ConfigError> {
    let mut ulimits = Vec::new();
    for (name, value) in given {
        let uk = format!("{ck}.ulimits.{name}");
        if !ULIMITS.contains(&name.as_str()) {
            return Err(ctx.invalid(
                uk,
                format!(
                    "not a resource limit; expected one of {}",
                    ULIMITS.join(", ")
                ),
            ));
        }
        let (soft, hard) = value.split_once(':').unwrap_or((value, value));
        let (Ok(soft), Ok(hard)) = (soft.trim().parse::<i64>(), hard.trim().parse::<i64>()) else {
            return Err(ctx.invalid(uk, format!("{value:?}: expected \"SOFT:HARD\" or \"N\"")));
        };
        if soft > hard || soft < -1 {
            return Err(ctx.invalid(
                uk,
                format!("{value:?}: the soft limit must not exceed the hard one"),
            ));
        }
        ulimits.push(Ulimit {
            name: name.clone(),
            soft,
            hard,
        });
    }
    Ok(ulimits)
}

fn check_extra_hosts(ctx: &Ctx, ck: &str, hosts: &[String]) -> Result<(), ConfigError> {
    for (i, h) in hosts.iter().enumerate() {
        let ok = h.split_once(':').is_some_and(|(host, ip)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && (ip == "host-gateway" || ip.parse::<IpAddr>().is_ok())
        });
        if !ok {
            return Err(ctx.invalid(
                format!("{ck}.extra_hosts[{i}]"),
                format!("{h:?}: expected \"HOSTNAME:IP\" (or \"HOSTNAME:host-gateway\")"),
            ));
        }
    }
    Ok(())
}

fn check_tmpfs(ctx: &Ctx, ck: &str, tmpfs: &[String]) -> Result<(), ConfigError> {
    match tmpfs.iter().position(|t| !t.starts_with('/')) {
        Some(i) => Err(ctx.invalid(
            format!("{ck}.tmpfs[{i}]"),
            format!(
                "{:?}: expected an absolute path inside the container",
                tmpfs[i]
            ),
        )),
        None => Ok(()),
    }
}

/// Capability names as Docker takes them: upper case, without `CAP_`.
fn capabilities(
    ctx: &Ctx,
    ck: &str,
    name: &str,
    list: Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(i, c)| {
            let bare = c.to_ascii_uppercase();
            let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_string();
            if CAPABILITIES.contains(&bare.as_str()) {
                Ok(bare)
            } else {
                Err(ctx.invalid(
                    format!("{ck}.{name}[{i}]"),
                    format!("{c:?} is not a Linux capability (e.g. \"NET_RAW\", \"ALL\")"),
                ))
            }
        })
        .collect()
}

fn check_network(ctx: &Ctx, ck: &str, network: Option<&str>) -> Result<(), ConfigError> {
    let Some(n) = network else { return Ok(()) };
    let refused = match n {
        "host" => Some("containers of two releases would contend for one port during a swap"),
        "none" => Some("HAProxy could not reach the container"),
        n if n.is_empty() || n.contains(char::is_whitespace) => Some("not a network name"),
        _ => None,
    };
    match refused {
        Some(why) => Err(ctx.invalid(format!("{ck}.network"), format!("{n:?}: {why}"))),
        None => Ok(()),
    }
}

/// Whether the container's port is published (`reach = "published"`). Direct by default: no
/// docker-proxy on the request path. A dead container's address answers nothing, so its server
/// goes out of HAProxy on Docker's `die` event, and HAProxy's `timeout connect` bounds the wait
/// of what was sent to it meanwhile (see config.example.toml); a published port refuses at once.
fn reach(ctx: &Ctx, ck: &str, reach: Option<&str>) -> Result<bool, ConfigError> {
    match reach {
        None | Some("direct") => Ok(false),
        Some("published") => Ok(true),
        Some(other) => Err(ctx.invalid(
            format!("{ck}.reach"),
            format!("{other:?}: expected \"direct\" (the container's address on its network) or \"published\" (a port published on 127.0.0.1)"),
        )),
    }
}

fn check_env(ctx: &Ctx, ck: &str, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (k, v) in env {
        // Docker takes `KEY=VALUE`: a key with '=' would set another variable
        if k.is_empty() || k.contains(['=', '\0']) || k.contains(char::is_whitespace) {
            return Err(ctx.invalid(
                format!("{ck}.env"),
                format!("{k:?} is not an env var name (no '=', space or NUL, not empty)"),
            ));
        }
        if v.contains('\0') {
            return Err(ctx.invalid(format!("{ck}.env.{k}"), "holds a NUL byte"));
        }
    }
    Ok(())
}

fn secrets(
    ctx: &Ctx,
    ck: &str,
    given: BTreeMap<String, String>,
) -> Result<BTreeMap<String, SecretSource>, ConfigError> {
    let mut secrets = BTreeMap::new();
    for (name, source) in given {
        let sk = format!("{ck}.secrets.{name}");
        if name.is_empty() || name.contains(['=', ' ']) {
            return Err(ctx.invalid(sk, "not an env var name"));
        }
        let parsed = secret_source(&source).ok_or_else(|| {
            ctx.invalid(
                sk,
                format!("{source:?}: expected \"ssm:PARAMETER\" or \"secretsmanager:ID[#FIELD]\""),
            )
        })?;
        secrets.insert(name, parsed);
    }
    Ok(secrets)
}

/// `ssm:PARAMETER`, `secretsmanager:ID` or `secretsmanager:ID#FIELD`.
fn secret_source(source: &str) -> Option<SecretSource> {
    match source.split_once(':')? {
        ("ssm", p) if !p.is_empty() => Some(SecretSource::Ssm {
            name: p.to_string(),
        }),
        ("secretsmanager", rest) if !rest.is_empty() => {
            let (id, field) = match rest.split_once('#') {
                Some((id, f)) => (id, Some(f.to_string())),
                None => (rest, None),
            };
            if id.is_empty() || field.as_deref() == Some("") {
                return None;
            }
            Some(SecretSource::SecretsManager {
                id: id.to_string(),
                field,
            })
        }
        _ => None,
    }
}

/// "512m", "1g", "1.5g", "64k", "1048576" (bytes); units are powers of 1024, as Docker's.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, unit) = match s.char_indices().last()? {
        (i, 'k') => (&s[..i], 1u64 << 10),
        (i, 'm') => (&s[..i], 1 << 20),
        (i, 'g') => (&s[..i], 1 << 30),
        (i, 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some((n * unit as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("64kb"), Some(64 << 10));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1m"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
