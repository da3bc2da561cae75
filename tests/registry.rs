//! Private registries through the real daemon: a release pulled (not preloaded) from a real
//! registry on loopback (Debian's docker-registry with htpasswd basic auth) under keep-alive
//! load; wrong and missing credentials fail the swap with the registry's answer while the old
//! release serves on; ECR's token (from moto) used against that registry. Secrets from SSM,
//! Secrets Manager (moto) and an env file reach the container's env; a missing one fails the swap
//! by name. No credential or secret is found in the journal, the reports, the log, `status` or the
//! container's labels.

mod support;

use std::path::Path;
use std::time::Duration;

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::{remove_image, ImageOpts};
use support::load::Load;
use support::moto::Moto;
use support::registry::LocalRegistry;
use support::{blocking, text};

/// Every file under `dir` (journal, reports, log, queue) as text.
fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&t));
            }
        }
    }
    out
}

/// `deploy web --image IMAGE --version VERSION --wait` on `daemon`.
fn deploy_version(daemon: &Daemon, image: &str, version: &str) -> std::process::Output {
    daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        image,
        "--version",
        version,
        "--wait",
    ])
}

fn add_registry_table(config: &Path, lines: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!("\n[registry]\n{lines}\n"));
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_pulled_from_a_private_registry_and_bad_credentials_change_nothing() {
    let registry = LocalRegistry::start("deployer", "pull-secret-4711");
    let mut env = TestEnv::new("privreg");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let remote = registry.push(&v2, "team/web:2");
    // only the registry has it now
    remove_image(&v2);
    assert!(!env.image_exists(&remote) && !env.image_exists(&v2));

    let auth_file = env.dir.path().join("docker-config.json");
    std::fs::write(
        &auth_file,
        registry.docker_config_json("deployer", "wrong-password"),
    )
    .unwrap();
    let config = env.config(&ServiceOpts::default());
    add_registry_table(
        &config,
        &format!("auth_file = {:?}", auth_file.display().to_string()),
    );
    let daemon = std::sync::Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deploy = |image: String| {
        let d = daemon.clone();
        blocking(move || deploy_version(&d, &image, "2"))
    };
    // a wrong password: the registry's answer, named, and the old release serves on
    let out = deploy(remote.clone()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&registry.host()) && said.contains("unauthorized"),
        "{said}"
    );
    // no credentials for this registry at all
    std::fs::write(&auth_file, r#"{"auths": {}}"#).unwrap();
    let out = deploy(remote.clone()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("no basic auth credentials"),
        "{}",
        text(&out)
    );
    let s = daemon.status_json().unwrap();
    assert_eq!(
        s["services"][0]["current"]["release"]["image"],
        v1.as_str(),
        "{s}"
    );
    assert_eq!(env.containers().len(), 1, "nothing was started");

    // the right ones: pulled under load, nothing dropped
    std::fs::write(
        &auth_file,
        registry.docker_config_json("deployer", "pull-secret-4711"),
    )
    .unwrap();
    let out = deploy(remote.clone()).await;
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        load.releases_since(&mark).keys().collect::<Vec<_>>(),
        ["2"],
        "the pulled release serves"
    );
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");

    let status = serde_json::to_string(&daemon.status_json().unwrap()).unwrap();
    let mut seen = all_text_under(env.dir.path().join("state").as_path());
    seen.push_str(&daemon.log());
    seen.push_str(&status);
    assert!(
        !seen.contains("pull-secret-4711"),
        "the registry password leaked"
    );
    drop(daemon);
    drop(env);
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecr_token_is_fetched_and_used_for_the_pull() {
    let moto = Moto::start(std::env::temp_dir().as_path());
    // what ECR (moto) hands out is what the registry is set to accept
    let ecr = aws_sdk_ecr::Client::new(&moto.sdk_config().await);
    let token = ecr.get_authorization_token().send().await.unwrap();
    let token = token.authorization_data()[0]
        .authorization_token()
        .unwrap()
        .to_string();
    let decoded = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &token).unwrap(),
    )
    .unwrap();
    let (user, password) = decoded.split_once(':').unwrap();
    let registry = LocalRegistry::start(user, password);
    let mut env = TestEnv::new("ecrpull");
    let v1 = env.image("1", &ImageOpts::default());
    let remote = registry.push(&v1, "team/web:1");
    remove_image(&v1);

    let config = env.config(&ServiceOpts::default());
    let table = format!(
        "ecr_registries = [{:?}]\necr_region = \"us-east-1\"",
        registry.host()
    );
    // first with more free disk asked for than any host has: refused with the figures
    add_registry_table(&config, &format!("{table}\nmin_free_disk_mb = 1000000000"));
    let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
    let out = deploy_version(&daemon, &remote, "1");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("MiB free, less than registry.min_free_disk_mb (1000000000 MiB)"),
        "{}",
        text(&out)
    );
    assert!(env.containers().is_empty() && !env.image_exists(&remote));
    drop(daemon);
    let cfg = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, cfg.replace("\nmin_free_disk_mb = 1000000000", "")).unwrap();
    let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
    let out = deploy_version(&daemon, &remote, "1");
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let mut seen = all_text_under(env.dir.path().join("state").as_path());
    seen.push_str(&daemon.log());
    assert!(!seen.contains(password), "the ECR token leaked");
    drop(daemon);
    drop(env);
    drop(registry);
}

/// The body of one GET through `addr` (HTTP/1.0: the server closes when done).
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_ssm_secrets_manager_and_env_files_reach_the_container_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let sdk = moto.sdk_config().await;
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name("/shop/web/db")
        .value("postgres://u:db-secret-1234@db/shop")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name("shop/web")
        .secret_string(r#"{"stripe": "sk-secret-5678", "other": "x"}"#)
        .send()
        .await
        .unwrap();
    let mut env = TestEnv::new("secrets");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    // a failed release's image is removed with it: one image per failing attempt
    let v3 = env.image("3", &ImageOpts::default());
    let env_file = env.dir.path().join("web.env");
    std::fs::write(&env_file, "# from a file\nFROM_FILE=file-secret-9012\n").unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let opts = ServiceOpts {
        container: format!("env_files = [{:?}]", env_file.display().to_string()),
        extra: r#"
[services.web.container.secrets]
DB_URL = "ssm:/shop/web/db"
STRIPE_KEY = "secretsmanager:shop/web#stripe"
"#
        .into(),
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start_env(env.dir.path(), &config, &moto.env());
    daemon.deploy_ok(&v1);
    let front = env.haproxy.frontend;
    for (name, value) in [
        ("DB_URL", "postgres://u:db-secret-1234@db/shop"),
        ("STRIPE_KEY", "sk-secret-5678"),
        ("FROM_FILE", "file-secret-9012"),
    ] {
        let body = get(front, &format!("/env/{name}"));
        assert!(body.contains(value), "{name}: {body}");
    }

    // an env file others may read is refused, naming it; the release serves on
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = daemon.ctl(&["deploy", "web", "--image", &v2, "--wait"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("readable by others") && text(&out).contains("web.env"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // a parameter that does not exist: named, and the release serves on
    let cfg = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, cfg.replace("/shop/web/db", "/shop/web/missing")).unwrap();
    let out = daemon.ctl(&["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = daemon.ctl(&["deploy", "web", "--image", &v3, "--wait"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("ssm:/shop/web/missing") && text(&out).contains("DB_URL"),
        "{}",
        text(&out)
    );
    assert!(get(front, "/env/STRIPE_KEY").contains("\"release\":\"1\""));

    // no value anywhere but in the container's env
    let (id, _, _) = env.containers()[0].clone();
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}", &id])
        .output()
        .unwrap();
    let mut seen = all_text_under(env.dir.path().join("state").as_path());
    seen.push_str(&daemon.log());
    seen.push_str(&String::from_utf8_lossy(&inspect.stdout));
    seen.push_str(&serde_json::to_string(&daemon.status_json().unwrap()).unwrap());
    for secret in ["db-secret-1234", "sk-secret-5678", "file-secret-9012"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    drop(daemon);
    drop(env);
}
