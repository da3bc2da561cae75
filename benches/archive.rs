//! `scripts/bench archive [--gib G]`: an image archive of G GiB (default 2: the test app plus a
//! G GiB layer) swapped in from a local file through hotswapd (release build); prints as its last
//! line `archive_mib=M load_secs=S daemon_peak_rss_mib=R`: R the daemon's peak resident memory
//! (VmHWM) over the whole run, which streaming keeps bounded whatever M.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::daemon::{add_daemon_lines, Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::{save_and_remove, ImageOpts};

fn peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn main() {
    let gib: u64 = support::cli_arg("--gib")
        .map(|v| v.parse().expect("--gib G"))
        .unwrap_or(2);
    let mut env = TestEnv::new("archive");
    let base = env.image("1", &ImageOpts::default());
    // a layer of G GiB on the test app (a sparse file: cheap to make, G GiB in the archive)
    let ctx = env.dir.path().join("fat");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY big.bin /big.bin\n"),
    )
    .unwrap();
    std::fs::File::create(ctx.join("big.bin"))
        .unwrap()
        .set_len(gib << 30)
        .unwrap();
    let fat = base.replace(":1", ":fat");
    env.own_image(&fat);
    eprintln!("building {fat} ({gib} GiB layer)");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &fat])
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(built.success(), "docker build of {fat}");
    std::fs::remove_file(ctx.join("big.bin")).unwrap();
    let archives = env.dir.path().join("archives");
    std::fs::create_dir(&archives).unwrap();
    let tar = archives.join("fat.tar");
    eprintln!("saving {fat} to {}", tar.display());
    let sha = save_and_remove(&fat, &tar);
    let mib = std::fs::metadata(&tar).unwrap().len() >> 20;

    let config = env.config(&ServiceOpts::default());
    add_daemon_lines(
        &config,
        &format!("archive_dirs = [{:?}]", archives.display().to_string()),
    );
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&base);
    let pid = daemon.pid().expect("hotswapd runs");
    eprintln!("peak RSS before: {:.1} MiB", peak_rss_mib(pid));
    let started = Instant::now();
    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &fat,
        "--version",
        "1",
        "--archive",
        tar.to_str().unwrap(),
        "--archive-sha256",
        &sha,
        "--wait",
        "--timeout-secs",
        "1800",
    ]);
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}\n{}",
        support::text(&out),
        daemon.log()
    );
    let peak = peak_rss_mib(pid);
    std::fs::remove_file(&tar).unwrap();
    drop(daemon);
    drop(env);
    std::thread::sleep(Duration::from_millis(100));
    println!("archive_mib={mib} load_secs={secs:.1} daemon_peak_rss_mib={peak:.1}");
}
