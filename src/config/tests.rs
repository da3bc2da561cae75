use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[services.web]
container_port = 8080
[services.web.haproxy]
runtime_socket = "/run/haproxy/admin.sock"
"#;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(text, Path::new("/etc/hotswap/config.toml"))
}

#[test]
fn the_shipped_example_parses_with_every_key() {
    let text = include_str!("../../config.example.toml");
    let s = parse(text).unwrap();
    let web = s.service("web").unwrap();
    assert_eq!(s.daemon.instance_id, "web-host-1");
    let watch = s.cloudformation.as_ref().unwrap();
    assert_eq!(
        (watch.stack.as_str(), watch.resource.as_str(), watch.poll),
        ("shop", "AppGroup", Duration::from_secs(15))
    );
    assert_eq!(web.container.stop_grace, Duration::from_secs(10));
    assert_eq!(
        web.container.volumes,
        vec!["/srv/web/shared:/shared:ro".to_string()]
    );
    assert_eq!(
        web.health.release_match,
        ReleaseMatch::JsonField {
            field: "release".into(),
            equals: "{version}".into()
        }
    );
    assert_eq!(
        web.haproxy.reload,
        Some(ReloadVia::Signal {
            pidfile: "/run/haproxy.pid".into(),
            signal: nix::sys::signal::Signal::SIGUSR2
        })
    );
    assert_eq!(web.host_budget, Duration::from_secs(180));
    let ramp = web.ramp.as_ref().unwrap();
    let shares: Vec<u8> = ramp.steps.iter().map(|s| s.share_pct).collect();
    assert_eq!(shares, [5, 25, 50, 100]);
    assert!(ramp.steps.iter().all(|s| s.hold_ms == 30_000));
    assert_eq!(ramp.watch, Duration::from_secs(60));
    assert_eq!(ramp.limits.max_latency_factor, 2.0);
    assert_eq!((web.replicas, web.batch), (1, 1));
    let app = &s.processes["app"];
    assert_eq!(
        (app.port, app.strategy, app.keep_releases),
        (8000, ReloadStrategy::Hup, 1)
    );
    assert_eq!(app.stop_old_signal, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.names(), ["web", "app"]);
}

#[test]
fn a_ramp_is_validated_with_the_key_at_fault() {
    let with = |ramp: &str| parse(&format!("{MINIMAL}[services.web.ramp]\n{ramp}\n"));
    let s = with("steps = [10, 100]\nhold_secs = 1.5").unwrap();
    let ramp = s.service("web").unwrap().ramp.clone().unwrap();
    assert_eq!(ramp.steps[0].hold_ms, 1_500);
    assert_eq!(ramp.watch, Duration::ZERO);
    assert_eq!(ramp.limits, CanaryLimits::default());
    for (ramp, key) in [
        (
            "steps = [50, 25, 100]\nhold_secs = 1",
            "services.web.ramp.steps[1]",
        ),
        (
            "steps = [0, 100]\nhold_secs = 1",
            "services.web.ramp.steps[0]",
        ),
        ("steps = [10, 50]\nhold_secs = 1", "services.web.ramp.steps"),
        ("steps = []\nhold_secs = 1", "services.web.ramp.steps"),
        (
            "steps = [100]\nhold_secs = -1",
            "services.web.ramp.hold_secs",
        ),
        (
            "steps = [100]\nhold_secs = 1\nmax_error_pct = 101",
            "services.web.ramp.max_error_pct",
        ),
        (
            "steps = [100]\nhold_secs = 1\nmax_latency_factor = 0.5",
            "services.web.ramp.max_latency_factor",
        ),
        ("steps = [100]\nhold_secs = 1\nwobble = 1", "wobble"),
    ] {
        let err = with(ramp).unwrap_err().to_string();
        assert!(err.contains(key), "{ramp:?}: {err}");
    }
    // a ramp needs weights through the runtime API
    let err = parse(&format!(
        "{MINIMAL}switch = \"reload\"\nconfig_file = \"/etc/haproxy/haproxy.cfg\"\nmaster_socket = \"/run/m.sock\"\n[services.web.ramp]\nsteps = [100]\nhold_secs = 1\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("services.web.ramp"), "{err}");
}

#[test]
fn container_options_are_validated_with_the_key_at_fault() {
    let with = |lines: &str| parse(&format!("{MINIMAL}[services.web.container]\n{lines}\n"));
    let s = with("memory = \"1.5g\"\ncpus = 0.25\ncap_drop = [\"cap_net_raw\"]").unwrap();
    let o = &s.service("web").unwrap().container.options;
    assert_eq!(o.memory_bytes, Some(3 << 29));
    assert_eq!(o.nano_cpus, Some(250_000_000));
    assert_eq!(o.cap_drop, ["NET_RAW"]);
    assert_eq!(o.log_options["max-size"], "10m", "bounded logs by default");
    let s = with("log_driver = \"journald\"").unwrap();
    assert!(s
        .service("web")
        .unwrap()
        .container
        .options
        .log_options
        .is_empty());
    for (lines, key) in [
        ("memory = \"lots\"", "services.web.container.memory"),
        ("memory = \"1m\"", "services.web.container.memory"),
        ("cpus = 0", "services.web.container.cpus"),
        ("user = \"a b\"", "services.web.container.user"),
        (
            "ulimits = { files = \"1\" }",
            "services.web.container.ulimits.files",
        ),
        (
            "ulimits = { nofile = \"9:1\" }",
            "services.web.container.ulimits.nofile",
        ),
        (
            "ulimits = { nofile = \"many\" }",
            "services.web.container.ulimits.nofile",
        ),
        (
            "extra_hosts = [\"db\"]",
            "services.web.container.extra_hosts[0]",
        ),
        (
            "extra_hosts = [\"db:300.1.1.1\"]",
            "services.web.container.extra_hosts[0]",
        ),
        ("tmpfs = [\"tmp\"]", "services.web.container.tmpfs[0]"),
        ("cap_add = [\"FLY\"]", "services.web.container.cap_add[0]"),
        ("network = \"host\"", "services.web.container.network"),
        ("log_driver = \"\"", "services.web.container.log_driver"),
    ] {
        let err = with(lines).unwrap_err().to_string();
        assert!(err.contains(key), "{lines:?}: {err}");
    }
    let secrets = |t: &str| {
        with(&format!(
            "env_files = [\"/etc/hotswap/web.env\"]\n[services.web.container.secrets]\n{t}"
        ))
    };
    let s = secrets("A = \"ssm:/shop/a\"\nB = \"secretsmanager:shop/b#key\"").unwrap();
    let c = &s.service("web").unwrap().container;
    assert_eq!(
        c.secrets["A"],
        SecretSource::Ssm {
            name: "/shop/a".into()
        }
    );
    assert_eq!(c.secrets["B"].to_string(), "secretsmanager:shop/b#key");
    for bad in [
        "A = \"vault:x\"",
        "A = \"ssm:\"",
        "A = \"secretsmanager:x#\"",
    ] {
        let err = secrets(bad).unwrap_err().to_string();
        assert!(
            err.contains("services.web.container.secrets.A"),
            "{bad}: {err}"
        );
    }
    let err = with("env_files = [\"web.env\"]").unwrap_err().to_string();
    assert!(err.contains("services.web.container.env_files[0]"), "{err}");
}

#[test]
fn replicas_and_batches_are_checked() {
    let with = |top: &str| {
        parse(&MINIMAL.replace(
            "container_port = 8080",
            &format!("container_port = 8080\n{top}"),
        ))
    };
    let s = with("replicas = 4\nbatch = 2").unwrap();
    assert_eq!(
        (
            s.service("web").unwrap().replicas,
            s.service("web").unwrap().batch
        ),
        (4, 2)
    );
    let err = with("replicas = 2\nbatch = 3").unwrap_err().to_string();
    assert!(
        err.contains("services.web.batch") && err.contains("more than replicas"),
        "{err}"
    );
    let err = with("replicas = 0").unwrap_err().to_string();
    assert!(err.contains("services.web.replicas"), "{err}");
}

#[test]
fn process_services_are_validated_and_names_are_unique() {
    let process =
        "[processes.app]\npidfile = \"/run/app.pid\"\nport = 8000\napp_root = \"/srv/app\"\n";
    assert!(parse(process).is_ok());
    let err = parse(&process.replace("/srv/app", "srv/app"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("processes.app.app_root"), "{err}");
    let err = parse(&format!("{process}strategy = \"usr1\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("processes.app.strategy"), "{err}");
    let err = parse(&format!(
        "{MINIMAL}{}",
        process.replace("processes.app", "processes.web")
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("names must be unique"), "{err}");
}

#[test]
fn defaults_fill_a_minimal_service() {
    let s = parse(MINIMAL).unwrap();
    let web = s.service("web").unwrap();
    assert_eq!(s.daemon.socket, Path::new("/run/hotswap/hotswapd.sock"));
    assert_eq!(
        s.daemon.reports_file,
        Path::new("/var/lib/hotswap/reports.jsonl")
    );
    assert_eq!(web.haproxy.backend, "web");
    assert_eq!(web.drain_budget, Duration::from_secs(60));
    assert_eq!(web.host_budget, Duration::from_secs(180));
    assert_eq!(web.keep_images, 1);
    assert_eq!(web.health.consecutive_passes, 2);
    assert_eq!(web.haproxy.switch, SwitchMode::Runtime);
    assert_eq!(web.haproxy.reload, None);
}

#[test]
fn sighup_reload_is_accepted_as_configured() {
    let text = format!("{MINIMAL}pidfile = \"/run/haproxy.pid\"\nreload_signal = \"HUP\"\n");
    let s = parse(&text).unwrap();
    assert_eq!(
        s.service("web").unwrap().haproxy.reload,
        Some(ReloadVia::Signal {
            pidfile: "/run/haproxy.pid".into(),
            signal: nix::sys::signal::Signal::SIGHUP
        })
    );
}

#[test]
fn unknown_key_names_file_and_key() {
    let text = MINIMAL.replace(
        "container_port = 8080",
        "container_port = 8080\ncontainer_prot = 1",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("/etc/hotswap/config.toml"), "{err}");
    assert!(err.contains("container_prot"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn wrong_type_names_the_key_and_what_was_expected() {
    let text = MINIMAL.replace("8080", "\"eighty\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("container_port") && err.contains("expected u16"),
        "{err}"
    );
}

#[test]
fn semantic_errors_name_the_key() {
    let cases = [
        (
            "[services.web.health]\nconsecutive_passes = 0\n",
            "services.web.health.consecutive_passes",
        ),
        (
            "[services.web.container]\nstop_signal = \"SIGNOPE\"\n",
            "services.web.container.stop_signal",
        ),
        (
            "[services.web.health]\npath = \"health\"\n",
            "services.web.health.path",
        ),
    ];
    for (extra, key) in cases {
        let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let err = parse(&MINIMAL.replace("8080", "8080\ndrain_budget_secs = 200"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("drain_budget_secs") && err.contains("host_budget_secs"),
        "{err}"
    );
    let err = parse(&format!("{MINIMAL}switch = \"reload\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("services.web.haproxy.switch"), "{err}");
}

#[test]
fn two_services_cannot_share_a_backend() {
    let text = format!("{MINIMAL}backend = \"shared\"\n[services.api]\ncontainer_port = 1\n[services.api.haproxy]\nruntime_socket = \"/run/haproxy/admin.sock\"\nbackend = \"shared\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("already managed by service"), "{err}");
}

#[test]
fn stream_settings_are_read_and_bad_ones_named() {
    let ok = parse(&MINIMAL.replace(
        "8080",
        "8080\nstream_budget_secs = 30\nclose_spread_secs = 5\ndrain_notice = \"POST /drain\"",
    ))
    .unwrap();
    let web = ok.service("web").unwrap();
    assert_eq!(web.streams.budget, Duration::from_secs(30));
    assert_eq!(web.streams.close_spread, Duration::from_secs(5));
    assert_eq!(
        web.streams.notice,
        Some(crate::config::DrainNotice::Http {
            method: "POST".into(),
            path: "/drain".into()
        })
    );
    let defaults = parse(MINIMAL).unwrap();
    assert_eq!(defaults.service("web").unwrap().streams, Default::default());
    for (line, says) in [
        ("drain_notice = \"SIGNOPE\"", "not a signal name"),
        ("drain_notice = \"DELETE /drain\"", "GET, POST or PUT"),
        ("drain_notice = \"POST drain\"", "must start with '/'"),
        ("stream_budget_secs = 175", "host_budget_secs"),
    ] {
        let err = parse(&MINIMAL.replace("8080", &format!("8080\n{line}")))
            .unwrap_err()
            .to_string();
        let key = line.split(' ').next().unwrap();
        assert!(
            err.contains(&format!("services.web.{key}")) && err.contains(says),
            "{line}: {err}"
        );
    }
}

#[test]
fn concurrent_starts_defaults_to_four_and_zero_is_refused() {
    assert_eq!(parse(MINIMAL).unwrap().daemon.concurrent_starts, 4);
    let two = parse(&format!("[daemon]\nconcurrent_starts = 2\n{MINIMAL}")).unwrap();
    assert_eq!(two.daemon.concurrent_starts, 2);
    let err = parse(&format!("[daemon]\nconcurrent_starts = 0\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("daemon.concurrent_starts") && err.contains("greater than 0"),
        "{err}"
    );
}
