//! `hotswapctl asg-switch`: the green/blue switcher of seed 003. The load balancer (an ELBv2
//! target group) lives long; a new Auto Scaling group is attached, and only when all its
//! instances are healthy in the target group are the other groups detached. If the new group is
//! empty or not healthy in time, it is detached again and the old groups keep serving.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::aws::{describe, Clients};

#[derive(Debug, Serialize)]
pub struct Switched {
    pub target_group_arn: String,
    pub new_group: String,
    pub healthy_instances: Vec<String>,
    pub detached: Vec<String>,
    pub elapsed_ms: u64,
}

async fn target_group_arn(c: &Clients, name: &str) -> Result<String, String> {
    if name.starts_with("arn:") {
        return Ok(name.to_string());
    }
    let out = c
        .elb
        .describe_target_groups()
        .names(name)
        .send()
        .await
        .map_err(|e| format!("finding target group {name}: {}", describe(e)))?;
    out.target_groups()
        .first()
        .and_then(|t| t.target_group_arn().map(String::from))
        .ok_or_else(|| format!("target group {name} not found"))
}

async fn in_service(c: &Clients, group: &str) -> Result<Vec<String>, String> {
    let out = c
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(|e| format!("describing Auto Scaling group {group}: {}", describe(e)))?;
    let g = out
        .auto_scaling_groups()
        .first()
        .ok_or_else(|| format!("Auto Scaling group {group} not found"))?;
    Ok(g.instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .filter_map(|i| i.instance_id().map(String::from))
        .collect())
}

async fn healthy_targets(c: &Clients, arn: &str) -> Result<Vec<String>, String> {
    let out = c
        .elb
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(|e| format!("reading target health of {arn}: {}", describe(e)))?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter(|d| {
            d.target_health()
                .and_then(|h| h.state())
                .map(|s| s.as_str())
                == Some("healthy")
        })
        .filter_map(|d| d.target().and_then(|t| t.id().map(String::from)))
        .collect())
}

async fn groups_attached_to(c: &Clients, arn: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut pages = c.asg.describe_auto_scaling_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("listing Auto Scaling groups: {}", describe(e)))?;
        for g in page.auto_scaling_groups() {
            if g.target_group_arns().iter().any(|a| a == arn) {
                if let Some(name) = g.auto_scaling_group_name() {
                    out.push(name.to_string());
                }
            }
        }
    }
    Ok(out)
}

async fn detach(c: &Clients, group: &str, arn: &str) -> Result<(), String> {
    c.asg
        .detach_load_balancer_target_groups()
        .auto_scaling_group_name(group)
        .target_group_arns(arn)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("detaching {group} from {arn}: {}", describe(e)))
}

pub async fn run(
    c: &Clients,
    target_group: &str,
    new_group: &str,
    timeout: Duration,
) -> Result<Switched, String> {
    let started = Instant::now();
    let arn = target_group_arn(c, target_group).await?;
    let instances = in_service(c, new_group).await?;
    if instances.is_empty() {
        return Err(format!(
            "Auto Scaling group {new_group} has no instance in service: refusing to switch to it"
        ));
    }
    c.asg
        .attach_load_balancer_target_groups()
        .auto_scaling_group_name(new_group)
        .target_group_arns(&arn)
        .send()
        .await
        .map_err(|e| format!("attaching {new_group} to {target_group}: {}", describe(e)))?;
    loop {
        let healthy = healthy_targets(c, &arn).await?;
        let missing: Vec<&String> = instances.iter().filter(|i| !healthy.contains(i)).collect();
        if missing.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            let undo = detach(c, new_group, &arn).await;
            return Err(format!(
                "instances {missing:?} of {new_group} not healthy in {target_group} within {} s; {} the old groups keep serving",
                timeout.as_secs(),
                if undo.is_ok() { "detached it again," } else { "could not detach it again," }
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut detached = Vec::new();
    for g in groups_attached_to(c, &arn).await? {
        if g != new_group {
            detach(c, &g, &arn).await?;
            detached.push(g);
        }
    }
    Ok(Switched {
        target_group_arn: arn,
        new_group: new_group.to_string(),
        healthy_instances: instances,
        detached,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
