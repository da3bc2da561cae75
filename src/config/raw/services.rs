//! `[services.NAME]` and `[processes.NAME]` as written, validated into their settings.

use std::time::Duration;

use super::*;

fn health_settings(ctx: &Ctx, key: &str, h: Health) -> Result<HealthSettings, ConfigError> {
    let hk = format!("{key}.health");
    let path = h.path.unwrap_or_else(|| "/health".to_string());
    // it goes into the request line of every check
    if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(ctx.invalid(
            format!("{hk}.path"),
            format!("{path:?}: must start with '/' and hold no space or control character"),
        ));
    }
    let release_match = match (
        h.release_body_contains,
        h.release_json_field,
        h.release_json_equals,
    ) {
        (None, None, None) => ReleaseMatch::None,
        (Some(t), None, None) => ReleaseMatch::BodyContains(t),
        (None, Some(field), equals) => ReleaseMatch::JsonField {
            field,
            equals: equals.unwrap_or_else(|| "{version}".to_string()),
        },
        (None, None, Some(_)) => {
            return Err(ctx.invalid(
                format!("{hk}.release_json_equals"),
                "needs release_json_field to say which field to compare",
            ))
        }
        (Some(_), _, _) => {
            return Err(ctx.invalid(
                format!("{hk}.release_body_contains"),
                "use either release_body_contains or release_json_field, not both",
            ))
        }
    };
    let expect_status = h.expect_status.unwrap_or(200);
    if !(100..=599).contains(&expect_status) {
        return Err(ctx.invalid(
            format!("{hk}.expect_status"),
            "must be an HTTP status 100-599",
        ));
    }
    let consecutive_passes = h.consecutive_passes.unwrap_or(2);
    if consecutive_passes == 0 {
        return Err(ctx.invalid(format!("{hk}.consecutive_passes"), "must be at least 1"));
    }
    let min_interval_ms = positive(
        ctx,
        format!("{hk}.min_interval_ms"),
        h.min_interval_ms.unwrap_or(2),
    )?;
    let max_interval_ms = positive(
        ctx,
        format!("{hk}.max_interval_ms"),
        h.max_interval_ms.unwrap_or(50),
    )?;
    if max_interval_ms < min_interval_ms {
        return Err(ctx.invalid(
            format!("{hk}.max_interval_ms"),
            "must not be below min_interval_ms",
        ));
    }
    Ok(HealthSettings {
        path,
        expect_status,
        release_match,
        attempt_timeout: positive_ms(
            ctx,
            format!("{hk}.attempt_timeout_ms"),
            h.attempt_timeout_ms,
            1000,
        )?,
        consecutive_passes,
        deadline: positive_secs(ctx, format!("{hk}.deadline_secs"), h.deadline_secs, 60)?,
        min_interval: Duration::from_millis(min_interval_ms),
        max_interval: Duration::from_millis(max_interval_ms),
    })
}

impl Process {
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        key: &str,
        name: String,
    ) -> Result<ProcessSettings, ConfigError> {
        if self.port == 0 {
            return Err(ctx.invalid(format!("{key}.port"), "must be 1-65535"));
        }
        absolute(ctx, format!("{key}.app_root"), &self.app_root)?;
        absolute(ctx, format!("{key}.pidfile"), &self.pidfile)?;
        let strategy = match self.strategy.as_deref().unwrap_or("hup") {
            "hup" => ReloadStrategy::Hup,
            "usr2" => ReloadStrategy::Usr2,
            other => {
                return Err(ctx.invalid(
                    format!("{key}.strategy"),
                    format!("{other:?}: expected \"hup\" or \"usr2\""),
                ))
            }
        };
        let sig = |field: &str, v: Option<String>, default: &str| {
            parse_signal(
                ctx,
                &format!("{key}.{field}"),
                v.as_deref().unwrap_or(default),
            )
        };
        let drain_budget = Duration::from_secs(self.drain_budget_secs.unwrap_or(60));
        let host_budget = positive_secs(
            ctx,
            format!("{key}.host_budget_secs"),
            self.host_budget_secs,
            180,
        )?;
        if drain_budget >= host_budget {
            return Err(ctx.invalid(
                format!("{key}.drain_budget_secs"),
                "must be shorter than host_budget_secs",
            ));
        }
        Ok(ProcessSettings {
            health: health_settings(ctx, key, self.health)?,
            name,
            pidfile: self.pidfile,
            port: self.port,
            app_root: self.app_root,
            strategy,
            reload_signal: sig("reload_signal", self.reload_signal, "SIGHUP")?,
            upgrade_signal: sig("upgrade_signal", self.upgrade_signal, "SIGUSR2")?,
            stop_old_signal: sig("stop_old_signal", self.stop_old_signal, "SIGTERM")?,
            drain_budget,
            host_budget,
            keep_releases: self.keep_releases.unwrap_or(1),
            start_command: self.start_command,
            hooks: self.hooks.validate(ctx, &format!("{key}.hooks"))?,
        })
    }
}

impl Service {
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        key: &str,
        name: String,
    ) -> Result<ServiceSettings, ConfigError> {
        if self.container_port == 0 {
            return Err(ctx.invalid(format!("{key}.container_port"), "must be 1-65535"));
        }
        let container = self.container.validate(ctx, key)?;
        let health = health_settings(ctx, key, self.health)?;
        let haproxy = haproxy_settings(ctx, &format!("{key}.haproxy"), self.haproxy, &name)?;
        let (drain_budget, host_budget) =
            budgets(ctx, key, self.drain_budget_secs, self.host_budget_secs)?;
        let code = match self.code {
            None => None,
            Some(c) => Some(mounted_code(ctx, key, c, &container.volumes)?),
        };
        let ramp = match self.ramp {
            Some(r) => Some(r.validate(ctx, &format!("{key}.ramp"))?),
            None => None,
        };
        let (replicas, batch) = replicas(ctx, key, self.replicas, self.batch)?;
        let kind = Kind {
            replicas,
            mounted_code: code.is_some(),
            ramp: ramp.is_some(),
            switch: haproxy.switch,
        };
        kind.check(ctx, key)?;
        let hooks = self.hooks.validate(ctx, &format!("{key}.hooks"))?;
        let streams = stream_settings(
            ctx,
            key,
            (self.stream_budget_secs, self.close_spread_secs),
            self.drain_notice.as_deref(),
            host_budget,
        )?;
        Ok(ServiceSettings {
            streams,
            hooks,
            ramp,
            replicas,
            batch,
            code,
            name,
            container,
            container_port: self.container_port,
            health,
            haproxy,
            drain_budget,
            host_budget,
            keep_images: self.keep_images.unwrap_or(1),
            repair_backoff_max: positive_secs(
                ctx,
                format!("{key}.repair_backoff_max_secs"),
                self.repair_backoff_max_secs,
                60,
            )?,
        })
    }
}

/// `[services.NAME.haproxy]` (`xk`): the sockets and files (absolute), the backend's name (it goes
/// into runtime API commands and config lines), how to reload, how to switch.
fn haproxy_settings(
    ctx: &Ctx,
    xk: &str,
    x: Haproxy,
    service: &str,
) -> Result<HaproxySettings, ConfigError> {
    absolute(ctx, format!("{xk}.runtime_socket"), &x.runtime_socket)?;
    for (k, p) in [
        ("config_file", &x.config_file),
        ("master_socket", &x.master_socket),
        ("pidfile", &x.pidfile),
    ] {
        if let Some(p) = p {
            absolute(ctx, format!("{xk}.{k}"), p)?;
        }
    }
    let backend = x.backend.clone().unwrap_or_else(|| service.to_string());
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if backend.is_empty() || !backend.chars().all(plain) {
        return Err(ctx.invalid(
            format!("{xk}.backend"),
            format!("{backend:?} is not a backend name (letters, digits, '-', '_', '.', ':')"),
        ));
    }
    let reload = reload_via(ctx, xk, &x)?;
    let switch = match x.switch.as_deref().unwrap_or("runtime") {
        "runtime" => SwitchMode::Runtime,
        "reload" => SwitchMode::Reload,
        other => {
            return Err(ctx.invalid(
                format!("{xk}.switch"),
                format!("{other:?}: expected \"runtime\" or \"reload\""),
            ))
        }
    };
    if switch == SwitchMode::Reload && (x.config_file.is_none() || reload.is_none()) {
        return Err(ctx.invalid(
            format!("{xk}.switch"),
            "switch = \"reload\" needs config_file and a way to reload (master_socket or pidfile)",
        ));
    }
    let server_options = x
        .server_options
        .unwrap_or_else(|| "check inter 2s".to_string());
    if server_options.contains(|c: char| c.is_control() || c == ';' || c == '#') {
        return Err(ctx.invalid(
            format!("{xk}.server_options"),
            "must be one line without ';' or '#' (it goes into runtime API commands and config lines)",
        ));
    }
    Ok(HaproxySettings {
        runtime_socket: x.runtime_socket,
        backend,
        config_file: x.config_file,
        reload,
        server_options,
        switch,
        command_timeout: positive_ms(
            ctx,
            format!("{xk}.command_timeout_ms"),
            x.command_timeout_ms,
            2000,
        )?,
    })
}

/// How HAProxy is reloaded: through its master socket, by a signal to the pid in its pidfile, or
/// not at all (neither given).
fn reload_via(ctx: &Ctx, xk: &str, x: &Haproxy) -> Result<Option<ReloadVia>, ConfigError> {
    match (x.reload.as_deref(), &x.master_socket, &x.pidfile) {
        (None, None, None) => Ok(None),
        (None | Some("master-socket"), Some(socket), _) => {
            Ok(Some(ReloadVia::MasterSocket(socket.clone())))
        }
        (None | Some("signal"), _, Some(pidfile)) => {
            let sig = x.reload_signal.as_deref().unwrap_or("SIGUSR2");
            Ok(Some(ReloadVia::Signal {
                pidfile: pidfile.clone(),
                signal: parse_signal(ctx, &format!("{xk}.reload_signal"), sig)?,
            }))
        }
        (Some("master-socket"), None, _) => Err(ctx.invalid(
            format!("{xk}.master_socket"),
            "reload = \"master-socket\" needs master_socket",
        )),
        (Some("signal"), _, None) => Err(ctx.invalid(
            format!("{xk}.pidfile"),
            "reload = \"signal\" needs pidfile (HAProxy master's pid)",
        )),
        (Some(other), _, _) => Err(ctx.invalid(
            format!("{xk}.reload"),
            format!("{other:?}: expected \"master-socket\" or \"signal\""),
        )),
    }
}

/// The drain budget (default 60 s) and the budget of the whole swap (ELB keep-alive 60 s + 120 s),
/// the first shorter than the second.
fn budgets(
    ctx: &Ctx,
    key: &str,
    drain_secs: Option<u64>,
    host_secs: Option<u64>,
) -> Result<(Duration, Duration), ConfigError> {
    let drain_budget = Duration::from_secs(drain_secs.unwrap_or(60));
    let host_budget = positive_secs(ctx, format!("{key}.host_budget_secs"), host_secs, 60 + 120)?;
    if drain_budget >= host_budget {
        return Err(ctx.invalid(
            format!("{key}.drain_budget_secs"),
            "must be shorter than host_budget_secs (the budget of the whole swap)",
        ));
    }
    Ok((drain_budget, host_budget))
}

/// `[services.NAME.code]`: an absolute `app_root` that one of the container's volumes mounts.
fn mounted_code(
    ctx: &Ctx,
    key: &str,
    c: Code,
    volumes: &[String],
) -> Result<MountedCode, ConfigError> {
    let ck = format!("{key}.code");
    absolute(ctx, format!("{ck}.app_root"), &c.app_root)?;
    let mounted = volumes
        .iter()
        .any(|v| Path::new(v.split(':').next().unwrap_or("")) == c.app_root);
    if !mounted {
        return Err(ctx.invalid(
            format!("{ck}.app_root"),
            format!("{} is not mounted into the container: add \"{}:/code\" (or another path) to {key}.container.volumes", c.app_root.display(), c.app_root.display()),
        ));
    }
    let reload_signal = c.reload_signal.unwrap_or_else(|| "SIGHUP".into());
    parse_signal(ctx, &format!("{ck}.reload_signal"), &reload_signal)?;
    Ok(MountedCode {
        app_root: c.app_root,
        reload_signal,
        keep_releases: c.keep_releases.unwrap_or(1),
    })
}

/// `replicas` (default 1) and `batch` (default 1, at most `replicas`).
fn replicas(
    ctx: &Ctx,
    key: &str,
    replicas: Option<usize>,
    batch: Option<usize>,
) -> Result<(usize, usize), ConfigError> {
    let replicas = positive(ctx, format!("{key}.replicas"), replicas.unwrap_or(1) as u64)? as usize;
    let batch = positive(ctx, format!("{key}.batch"), batch.unwrap_or(1) as u64)? as usize;
    if batch > replicas {
        return Err(ctx.invalid(
            format!("{key}.batch"),
            format!("{batch} is more than replicas ({replicas})"),
        ));
    }
    Ok((replicas, batch))
}

/// What kind of service the tables make together, and the combinations that cannot work.
struct Kind {
    replicas: usize,
    mounted_code: bool,
    ramp: bool,
    switch: SwitchMode,
}

impl Kind {
    fn check(&self, ctx: &Ctx, key: &str) -> Result<(), ConfigError> {
        let refused = if self.ramp && self.mounted_code {
            Some(("ramp", "a service with mounted code reloads its container in place: there is no second release to ramp traffic to"))
        } else if self.replicas > 1 && self.mounted_code {
            Some(("replicas", "a service with mounted code runs one container"))
        } else if self.replicas > 1 && self.switch == SwitchMode::Reload {
            Some(("replicas", "replicas need switch = \"runtime\""))
        } else if self.ramp && self.switch == SwitchMode::Reload {
            Some((
                "ramp",
                "a ramp sets server weights through the runtime API: it needs switch = \"runtime\"",
            ))
        } else {
            None
        };
        match refused {
            Some((k, why)) => Err(ctx.invalid(format!("{key}.{k}"), why)),
            None => Ok(()),
        }
    }
}

/// `stream_budget_secs`, `close_spread_secs` and `drain_notice` of a container service.
fn stream_settings(
    ctx: &Ctx,
    key: &str,
    (budget_secs, spread_secs): (Option<u64>, Option<u64>),
    notice: Option<&str>,
    host_budget: Duration,
) -> Result<StreamSettings, ConfigError> {
    let d = StreamSettings::default();
    let budget = budget_secs.map(Duration::from_secs).unwrap_or(d.budget);
    let close_spread = spread_secs
        .map(Duration::from_secs)
        .unwrap_or(d.close_spread);
    if budget + close_spread >= host_budget {
        return Err(ctx.invalid(
            format!("{key}.stream_budget_secs"),
            format!(
                "with close_spread_secs ({} s) it must be shorter than host_budget_secs ({} s), the budget of the whole swap",
                close_spread.as_secs(),
                host_budget.as_secs()
            ),
        ));
    }
    let notice = match notice {
        None => None,
        Some(n) if n.contains(' ') => {
            Some(parse_notice(n).map_err(|e| ctx.invalid(format!("{key}.drain_notice"), e))?)
        }
        Some(n) => {
            parse_signal(ctx, &format!("{key}.drain_notice"), n)?;
            Some(DrainNotice::Signal(n.to_string()))
        }
    };
    Ok(StreamSettings {
        budget,
        close_spread,
        notice,
    })
}
