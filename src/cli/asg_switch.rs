//! `hotswapctl asg-switch --load-balancer TARGET_GROUP --new-group NAME`

use std::time::Duration;

use crate::fleet::asg_switch;
use crate::fleet::aws::Clients;

pub async fn run(
    target_group: &str,
    new_group: &str,
    timeout: Duration,
    region: Option<&str>,
    json: bool,
) -> u8 {
    let clients = Clients::from_env(region).await;
    match asg_switch::run(&clients, target_group, new_group, timeout).await {
        Ok(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
            } else {
                println!(
                    "{new_group} serves {target_group} ({} healthy instances); detached: {}",
                    s.healthy_instances.len(),
                    if s.detached.is_empty() {
                        "none".to_string()
                    } else {
                        s.detached.join(", ")
                    }
                );
            }
            super::exit::OK
        }
        Err(e) => {
            eprintln!("hotswapctl: asg-switch: {e}");
            crate::fleet::stack_update::exit::REFUSED
        }
    }
}
