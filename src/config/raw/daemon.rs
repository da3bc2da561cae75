//! `[daemon]` and `[report]` as written, validated into their settings.

use super::*;

/// `[daemon]`: paths absolute, the instance id a plain name, each bound in its range.
pub(super) fn daemon_settings(ctx: &Ctx, d: Daemon) -> Result<DaemonSettings, ConfigError> {
    check_daemon_paths(ctx, &d)?;
    let state_dir = d
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/hotswap"));
    let instance_id = d.instance_id.unwrap_or_else(hostname);
    if !is_plain_name(&instance_id) {
        return Err(ctx.invalid(
            "daemon.instance_id",
            format!("{instance_id:?}: use 1-48 letters, digits, '-' or '_'"),
        ));
    }
    let sweep_secs = d.sweep_secs.unwrap_or(60);
    if sweep_secs < 30 {
        return Err(ctx.invalid(
            "daemon.sweep_secs",
            format!("{sweep_secs}: the safety sweep is a backstop (events wake the daemon); use 30 or more"),
        ));
    }
    let archive_dirs = d
        .archive_dirs
        .unwrap_or_else(|| vec![state_dir.join("archives")]);
    for (i, dir) in archive_dirs.iter().enumerate() {
        absolute(ctx, format!("daemon.archive_dirs[{i}]"), dir)?;
    }
    let metrics_listen = match d.metrics_listen {
        None => None,
        Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
            ctx.invalid(
                "daemon.metrics_listen",
                format!("{a:?}: {e}; give an address and port, e.g. \"127.0.0.1:9187\""),
            )
        })?),
    };
    let concurrent_starts = positive(
        ctx,
        "daemon.concurrent_starts".into(),
        d.concurrent_starts.unwrap_or(4) as u64,
    )? as usize;
    Ok(DaemonSettings {
        concurrent_starts,
        reports_rotation: rotation(ctx, d.reports_max_mb, d.reports_keep)?,
        metrics_listen,
        sweep: std::time::Duration::from_secs(sweep_secs),
        archive_dirs,
        socket: d
            .socket
            .unwrap_or_else(|| PathBuf::from("/run/hotswap/hotswapd.sock")),
        reports_file: d
            .reports_file
            .unwrap_or_else(|| state_dir.join("reports.jsonl")),
        inbox_dir: match d.inbox_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p),
            None => Some(state_dir.join("inbox")),
        },
        state_dir,
        instance_id,
        docker_socket: d.docker_socket,
        access: AccessSettings {
            socket_group: d.socket_group.unwrap_or_else(|| "hotswap".to_string()),
            allowed_uids: d.allowed_uids,
            allowed_groups: d.allowed_groups,
        },
    })
}

/// `daemon.reports_max_mb` (1-10240, default 10) and `daemon.reports_keep` (1-100, default 5).
fn rotation(
    ctx: &Ctx,
    max_mb: Option<u64>,
    keep: Option<usize>,
) -> Result<crate::config::Rotation, ConfigError> {
    let max_mb = max_mb.unwrap_or(10);
    if !(1..=10_240).contains(&max_mb) {
        return Err(ctx.invalid(
            "daemon.reports_max_mb",
            format!("{max_mb}: give 1 to 10240 (MiB before the reports file is rotated)"),
        ));
    }
    let keep = keep.unwrap_or(5);
    if !(1..=100).contains(&keep) {
        return Err(ctx.invalid(
            "daemon.reports_keep",
            format!("{keep}: give 1 to 100 (rotated reports files kept)"),
        ));
    }
    Ok(crate::config::Rotation {
        max_bytes: max_mb << 20,
        keep,
    })
}

/// `[report]`: a queue URL that is one, and IMDS (on when a queue is set) over plain HTTP.
pub(super) fn report_settings(ctx: &Ctx, r: Report) -> Result<ReportSettings, ConfigError> {
    if let Some(url) = &r.sqs_queue_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ctx.invalid("report.sqs_queue_url", format!("{url:?}: expected the queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")));
        }
    }
    let imds_endpoint = match r.imds_endpoint {
        Some(e) if e.is_empty() => None,
        Some(e) if !e.starts_with("http://") => {
            return Err(ctx.invalid(
                "report.imds_endpoint",
                format!("{e:?}: expected http://HOST[:PORT]"),
            ))
        }
        Some(e) => Some(e),
        None => r
            .sqs_queue_url
            .as_ref()
            .map(|_| "http://169.254.169.254".to_string()),
    };
    Ok(ReportSettings {
        sqs_queue_url: r.sqs_queue_url,
        message_group_id: r.message_group_id.unwrap_or_else(|| "hotswap".into()),
        stack: r.stack,
        imds_endpoint,
        region: r.region,
    })
}
