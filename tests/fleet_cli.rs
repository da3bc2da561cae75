//! The build box against moto: `stack-update` under porter's safety rules, waiting for host
//! reports on SQS; `lint-template`; `asg-switch`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::daemon::HOTSWAPCTL;
use support::moto::Moto;
use support::process::{die_with_caller, Guarded};
use support::reports::host_report as report;
use support::text;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Aws {
    cfn: aws_sdk_cloudformation::Client,
    asg: aws_sdk_autoscaling::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn aws(moto: &Moto) -> Aws {
    let conf = moto.sdk_config().await;
    Aws {
        cfn: aws_sdk_cloudformation::Client::new(&conf),
        asg: aws_sdk_autoscaling::Client::new(&conf),
        sqs: aws_sdk_sqs::Client::new(&conf),
    }
}

fn ctl(moto: &Moto, args: &[&str]) -> Output {
    die_with_caller(
        Command::new(HOTSWAPCTL)
            .args(args)
            .envs(moto.env())
            .stdin(Stdio::null()),
    )
    .output()
    .unwrap()
}

/// A CLI left running while the test plays the hosts; killed if the test fails first.
fn ctl_spawn(moto: &Moto, args: &[&str]) -> Guarded {
    let mut cmd = Command::new(HOTSWAPCTL);
    cmd.args(args)
        .envs(moto.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Guarded::spawn(cmd).unwrap()
}

async fn param(a: &Aws, stack: &str, key: &str) -> Option<String> {
    let out = a
        .cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .unwrap();
    out.stacks()[0]
        .parameters()
        .iter()
        .find(|p| p.parameter_key() == Some(key))
        .and_then(|p| p.parameter_value().map(String::from))
}

async fn output(a: &Aws, stack: &str, key: &str) -> String {
    let out = a
        .cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .unwrap();
    out.stacks()[0]
        .outputs()
        .iter()
        .find(|o| o.output_key() == Some(key))
        .unwrap()
        .output_value()
        .unwrap()
        .to_string()
}

async fn group(a: &Aws, stack: &str) -> (String, i32, Vec<String>) {
    let r = a
        .cfn
        .describe_stack_resource()
        .stack_name(stack)
        .logical_resource_id("AppGroup")
        .send()
        .await
        .unwrap();
    let name = r
        .stack_resource_detail()
        .unwrap()
        .physical_resource_id()
        .unwrap()
        .to_string();
    let g = a
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .unwrap();
    let g = &g.auto_scaling_groups()[0];
    let ids = g
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    (name, g.desired_capacity().unwrap(), ids)
}

async fn send(a: &Aws, url: &str, body: String) {
    a.sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

async fn wait_deploy_id(a: &Aws, stack: &str, id: &str) {
    let started = Instant::now();
    while param(a, stack, "DeployId").await.as_deref() != Some(id) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "UpdateStack with {id} never landed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finish(child: Guarded) -> Output {
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_update_keeps_scaling_refuses_what_is_unsafe_and_waits_for_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let a = aws(&moto).await;
    let template = fixture("fleet-stack.yaml");
    let body = std::fs::read_to_string(&template).unwrap();
    let params = [
        ("DesiredCapacity", "2"),
        ("MinInstancesInService", "1"),
        ("DeployId", "initial"),
        ("AppVersion", "1"),
    ];
    support::moto::create_stack(&a.cfn, "shop", body, &params).await;
    // operators scaled the group out since: 3 live
    let (name, _, _) = group(&a, "shop").await;
    a.asg
        .set_desired_capacity()
        .auto_scaling_group_name(&name)
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    let queue = output(&a, "shop", "HotswapQueueUrl").await;
    let t = template.to_str().unwrap();

    let out = ctl(&moto, &["lint-template", t]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = ctl(
        &moto,
        &[
            "stack-update",
            "--stack",
            "shop",
            "--template",
            t,
            "--parameter",
            "AppVersion=2",
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("parameter DesiredCapacity = 3")
            && text(&out).contains("MinInstancesInService = 3"),
        "{}",
        text(&out)
    );
    assert_eq!(
        param(&a, "shop", "DeployId").await.as_deref(),
        Some("initial"),
        "a dry run changes nothing"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = ctl(
        &moto,
        &[
            "stack-update",
            "--stack",
            "shop",
            "--template",
            t,
            "--parameter",
            "AppVersion=2",
            "--max-age-secs",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(text(&out).contains("re-provision"), "{}", text(&out));

    let small = dir.path().join("small.yaml");
    std::fs::write(
        &small,
        std::fs::read_to_string(&template)
            .unwrap()
            .replace("MaxSize: 4", "MaxSize: 2"),
    )
    .unwrap();
    let out = ctl(
        &moto,
        &[
            "stack-update",
            "--stack",
            "shop",
            "--template",
            small.to_str().unwrap(),
            "--parameter",
            "AppVersion=2",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(
        text(&out)
            .contains("live DesiredCapacity 3 is outside the template's MinSize 1 .. MaxSize 2"),
        "{}",
        text(&out)
    );
    assert_eq!(
        param(&a, "shop", "DeployId").await.as_deref(),
        Some("initial")
    );

    // a failure report ends the wait at once, naming the instance; other deploys are ignored
    let hooks = dir.path().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let pre = format!("echo \"$HOTSWAP_DEPLOY_ID\" > {}/pre", hooks.display());
    let post = format!("echo \"$HOTSWAP_OUTCOME\" > {}/post", hooks.display());
    let child = ctl_spawn(
        &moto,
        &[
            "stack-update",
            "--stack",
            "shop",
            "--template",
            t,
            "--parameter",
            "AppVersion=2",
            "--deploy-id",
            "sd-fail",
            "--timeout-secs",
            "60",
            "--pre-hook",
            &pre,
            "--post-hook",
            &post,
        ],
    );
    wait_deploy_id(&a, "shop", "sd-fail").await;
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre")).unwrap().trim(),
        "sd-fail"
    );
    let (_, desired, instances) = group(&a, "shop").await;
    assert_eq!(desired, 3, "live DesiredCapacity kept through the update");
    assert_eq!(
        param(&a, "shop", "DesiredCapacity").await.as_deref(),
        Some("3")
    );
    assert_eq!(
        param(&a, "shop", "MinInstancesInService").await.as_deref(),
        Some("3")
    );
    send(&a, &queue, report("sd-other-web", &instances[0], false)).await;
    send(&a, &queue, report("sd-fail-web", &instances[0], true)).await;
    send(&a, &queue, report("sd-fail-web", &instances[1], false)).await;
    let started = Instant::now();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "exited at the failure, not at the timeout"
    );
    assert!(
        text(&out).contains(&instances[1]) && text(&out).contains("did not pass"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(hooks.join("post")).unwrap().trim(),
        "failure"
    );

    // every instance reports success: done
    let child = ctl_spawn(
        &moto,
        &[
            "stack-update",
            "--stack",
            "shop",
            "--template",
            t,
            "--parameter",
            "AppVersion=3",
            "--deploy-id",
            "sd-ok",
            "--timeout-secs",
            "60",
            "--json",
            "--post-hook",
            &post,
        ],
    );
    wait_deploy_id(&a, "shop", "sd-ok").await;
    let (_, _, instances) = group(&a, "shop").await;
    assert_eq!(instances.len(), 3);
    send(&a, &queue, report("sd-fail-web", &instances[2], false)).await;
    for i in &instances {
        send(&a, &queue, report("sd-ok-web", i, true)).await;
    }
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "success");
    assert_eq!(summary["instances_expected"], 3);
    assert_eq!(summary["instances_succeeded"].as_array().unwrap().len(), 3);
    assert_eq!(
        std::fs::read_to_string(hooks.join("post")).unwrap().trim(),
        "success"
    );
    assert_eq!(param(&a, "shop", "AppVersion").await.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asg_switch_moves_the_target_group_to_the_new_group_and_refuses_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let a = aws(&moto).await;
    let body = std::fs::read_to_string(fixture("switch-stack.yaml")).unwrap();
    a.cfn
        .create_stack()
        .stack_name("switch")
        .template_body(body)
        .send()
        .await
        .unwrap();

    let out = ctl(
        &moto,
        &[
            "asg-switch",
            "--load-balancer",
            "web-tg",
            "--new-group",
            "web-empty",
            "--timeout-secs",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(
        text(&out).contains("no instance in service"),
        "{}",
        text(&out)
    );

    let out = ctl(
        &moto,
        &[
            "asg-switch",
            "--load-balancer",
            "web-tg",
            "--new-group",
            "web-green",
            "--timeout-secs",
            "30",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["detached"], serde_json::json!(["web-blue"]));
    let groups = a
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("web-blue")
        .auto_scaling_group_names("web-green")
        .send()
        .await
        .unwrap();
    for g in groups.auto_scaling_groups() {
        let attached = !g.target_group_arns().is_empty();
        assert_eq!(
            attached,
            g.auto_scaling_group_name() == Some("web-green"),
            "{g:?}"
        );
    }
}

/// The EC2 reference as shipped: `lint-template` finds nothing, moto creates the whole stack
/// (queue, role and instance profile, launch template, group), its instance role allows only
/// hotswapd's actions, and the example haproxy.cfg passes `haproxy -c`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_reference_stack_lints_clean_moto_creates_it_and_its_haproxy_cfg_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let a = aws(&moto).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = root.join("packaging/cloudformation/hotswap-fleet.yaml");
    let out = ctl(&moto, &["lint-template", template.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    support::moto::create_stack(
        &a.cfn,
        "shop",
        std::fs::read_to_string(&template).unwrap(),
        &[
            ("ImageId", "ami-12c6146b"),
            ("PackageBucket", "shop-artifacts"),
            ("EcrRepository", "shop/web"),
        ],
    )
    .await;
    let stack = a
        .cfn
        .describe_stacks()
        .stack_name("shop")
        .send()
        .await
        .unwrap();
    let stack = &stack.stacks()[0];
    assert_eq!(
        stack.stack_status().map(|s| s.as_str()),
        Some("CREATE_COMPLETE"),
        "{:?}",
        stack.stack_status_reason()
    );
    let (_, desired, instances) = group(&a, "shop").await;
    assert_eq!((desired, instances.len()), (2, 2));
    assert!(output(&a, "shop", "HotswapQueueUrl")
        .await
        .contains("shop-hotswap-reports"));
    // least privilege: the role's actions are exactly hotswapd's
    let body: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&template).unwrap()).unwrap();
    let statements =
        &body["Resources"]["HostRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let mut actions = Vec::new();
    for st in statements.as_sequence().unwrap() {
        assert_eq!(st["Effect"].as_str(), Some("Allow"));
        match &st["Action"] {
            serde_yaml::Value::String(a) => actions.push(a.clone()),
            serde_yaml::Value::Sequence(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("unexpected Action {other:?}"),
        }
    }
    assert_eq!(
        actions,
        [
            "sqs:SendMessage",
            "cloudformation:DescribeStackResource",
            "cloudformation:DescribeStackResources",
            "s3:GetObject",
            "ecr:GetAuthorizationToken",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability",
        ]
    );

    let haproxy = ["/usr/sbin/haproxy", "haproxy"]
        .into_iter()
        .find(|h| Command::new(h).arg("-v").output().is_ok())
        .expect("haproxy (scripts/install-deps installs it)");
    let cfg = root.join("packaging/haproxy/haproxy.cfg");
    let out = Command::new(haproxy)
        .args(["-c", "-f"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "haproxy -c: {}", text(&out));
}
