//! `deploy --from-metadata`: every release of a CloudFormation metadata file (as cfn-hup's
//! `cfn-get-metadata` prints it; read by `intake::metadata`), followed to the end.

use std::time::Duration;

use super::*;

/// Submits every release of the metadata, waits for all, and fails (non-zero, reasons on stderr)
/// if any failed: what a cfn-hup hook needs.
pub(super) async fn from_metadata(
    client: &Client,
    file: &std::path::Path,
    timeout: Duration,
    json: bool,
) -> Exit {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            eprintln!("hotswapctl: reading metadata from stdin: {e}");
            return Exit::Usage;
        }
        s
    } else {
        match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hotswapctl: reading metadata {}: {e}", file.display());
                return Exit::Usage;
            }
        }
    };
    let requests = match crate::intake::metadata::requests(&text, "hotswap") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hotswapctl: metadata {}: {e}", file.display());
            return Exit::Rejected;
        }
    };
    let mut followed = Vec::new();
    for req in &requests {
        match client.deploy(req).await {
            Ok(a) => {
                if !json {
                    describe_accepted(&a, &req.image);
                }
                followed.push(a.deploy_id);
            }
            Err(e) => {
                eprintln!(
                    "hotswapctl: deploying {} to service {:?}: {e}",
                    req.image, req.service
                );
                return client_exit(&e);
            }
        }
    }
    let waits = followed.iter().map(|id| client.wait(id, timeout));
    let results = futures_util::future::join_all(waits).await;
    let mut worst = Exit::Ok;
    let mut statuses = Vec::new();
    for (id, r) in followed.iter().zip(results) {
        let code = match r {
            Ok(s) => {
                let c = outcome(&s, json);
                statuses.push(s);
                c
            }
            Err(e) => {
                eprintln!("hotswapctl: following deploy {id}: {e}");
                client_exit(&e)
            }
        };
        if worst == Exit::Ok {
            worst = code;
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&statuses).expect("serializes")
        );
    }
    worst
}
