//! Containers with code mounted from the host: a code-only release reloads the running container
//! (signal through the Docker API) under load; code that does not come up is rolled back; an image
//! change still swaps containers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::blocking;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::gunicorn::bundle;
use support::images::ImageOpts;
use support::load::Load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_only_releases_reload_the_container_and_an_image_change_swaps_it() {
    let mut env = TestEnv::new("codemount");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let root = env.dir.path().join("code");
    std::fs::create_dir_all(root.join("releases/initial")).unwrap();
    std::fs::write(root.join("releases/initial/VERSION"), "c0\n").unwrap();
    std::os::unix::fs::symlink("releases/initial", root.join("current")).unwrap();
    let opts = ServiceOpts {
        health_deadline_secs: 3,
        ..Default::default()
    };
    let config = env.config_with_code(&opts, &root);
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    let out = daemon.ctl(&["deploy", "web", "--image", &v1, "--version", "c0", "--wait"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let container = env.containers()[0].0.clone();

    let load = Load::start(env.haproxy.frontend, 4, "/");
    let run = |args: Vec<String>| {
        let d = daemon.clone();
        blocking(move || d.ctl(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>()))
    };
    let c1 = bundle(env.dir.path(), "c1", true);
    let out = run(vec![
        "deploy".into(),
        "web".into(),
        "--code".into(),
        c1.display().to_string(),
        "--wait".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        load.releases_since(&mark).keys().collect::<Vec<_>>(),
        ["c1"]
    );
    assert_eq!(env.containers().len(), 1);
    assert_eq!(
        env.containers()[0].0,
        container,
        "the same container reloaded its code"
    );

    // code the app cannot load (no VERSION): the gate never sees c2; current goes back, reloads
    let broken = env.dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("README"), "no VERSION here").unwrap();
    let out = run(vec![
        "deploy".into(),
        "web".into(),
        "--code".into(),
        broken.display().to_string(),
        "--version".into(),
        "c2".into(),
        "--wait".into(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("\"c2\""), "{err}");
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        load.releases_since(&mark).keys().collect::<Vec<_>>(),
        ["c1"]
    );
    assert!(std::fs::read_link(root.join("current"))
        .unwrap()
        .to_string_lossy()
        .contains(daemon.reports()[1]["deploy_id"].as_str().unwrap()));

    // an image change swaps the container; the new one runs the current code
    let out = run(vec![
        "deploy".into(),
        "web".into(),
        "--image".into(),
        v2.clone(),
        "--version".into(),
        "c1".into(),
        "--wait".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    let containers = env.containers();
    assert_eq!(containers.len(), 1);
    assert_ne!(containers[0].0, container);
    assert_eq!(containers[0].1, v2);
    let reports = daemon.reports();
    let results: Vec<&str> = reports
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["success", "success", "failure", "success"]);
}
