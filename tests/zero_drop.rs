//! Ten consecutive swaps under a keep-alive load through HAProxy: not one failed request, and after
//! each swap only the new release answers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::blocking;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_consecutive_swaps_under_load_fail_no_request() {
    let mut env = TestEnv::new("zerodrop");
    let releases = ["1", "2"];
    let images: Vec<String> = releases
        .iter()
        .map(|r| env.image(r, &ImageOpts::default()))
        .collect();
    let config = env.config(&ServiceOpts::default());
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&images[0]);

    let load = Load::start(env.haproxy.frontend, 8, "/");
    for i in 1..=10 {
        let (image, release) = (images[i % 2].clone(), releases[i % 2]);
        let d = daemon.clone();
        blocking(move || d.deploy_ok(&image)).await;
        let mark = load.mark();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let since = load.releases_since(&mark);
        assert_eq!(
            since.keys().collect::<Vec<_>>(),
            [release],
            "swap {i}: only release {release} may answer after it"
        );
        assert!(
            since[release] > 10,
            "swap {i}: load kept flowing: {since:?}"
        );
    }
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    assert!(stats.requests > 1000, "{stats}");
    let reports = daemon.reports();
    assert_eq!(reports.len(), 11);
    assert!(
        reports.iter().all(|r| r["result"] == "success"),
        "{reports:?}"
    );
    assert_eq!(env.containers().len(), 1);
    assert_eq!(env.haproxy.servers("web").len(), 1);
}
