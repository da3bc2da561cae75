//! `deploy --from-metadata`: every release of a CloudFormation metadata file (as cfn-hup's
//! `cfn-get-metadata` prints it), with deploy ids that stay the same for the same metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// The release metadata a CloudFormation template carries (under a `hotswap` key, or bare).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    deploy_id: Option<String>,
    services: BTreeMap<String, MetadataRelease>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct MetadataRelease {
    #[serde(default)]
    image: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    archive: Option<PathBuf>,
    #[serde(default)]
    archive_sha256: Option<String>,
    #[serde(default)]
    code: Option<PathBuf>,
    /// Skip the service's canary ramp.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_ramp: bool,
}

fn parse_metadata(text: &str) -> Result<Metadata, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let inner = value.get("hotswap").cloned().unwrap_or(value);
    let m: Metadata = serde_json::from_value(inner).map_err(|e| e.to_string())?;
    if m.services.is_empty() {
        return Err("no services in the metadata".into());
    }
    Ok(m)
}

/// The same metadata always gives the same deploy id, so a hook that runs again swaps nothing twice.
fn metadata_deploy_id(base: Option<&str>, service: &str, r: &MetadataRelease) -> String {
    use sha2::Digest;
    match base {
        Some(b) => format!("{b}-{service}"),
        None => {
            let text = serde_json::to_string(&(service, r)).expect("serializes");
            let digest = sha2::Sha256::digest(text.as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("md-{service}-{hex}")
        }
    }
}

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
    let meta = match parse_metadata(&text) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hotswapctl: metadata {}: {e}", file.display());
            return Exit::Rejected;
        }
    };
    let mut followed = Vec::new();
    for (service, r) in &meta.services {
        let req = DeployRequest {
            service: service.clone(),
            image: r.image.clone(),
            version: r.version.clone(),
            deploy_id: Some(metadata_deploy_id(meta.deploy_id.as_deref(), service, r)),
            archive: r.archive.clone(),
            archive_sha256: r.archive_sha256.clone(),
            code: r.code.clone(),
            no_ramp: r.no_ramp,
        };
        match client.deploy(&req).await {
            Ok(a) => {
                if !json {
                    describe_accepted(&a, &r.image);
                }
                followed.push(a.deploy_id);
            }
            Err(e) => {
                eprintln!(
                    "hotswapctl: deploying {} to service {service:?}: {e}",
                    r.image
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_wrapped_or_bare_and_ids_are_stable() {
        let wrapped = r#"{"hotswap":{"services":{"web":{"image":"web:2"}}}}"#;
        let m = parse_metadata(wrapped).unwrap();
        let id1 = metadata_deploy_id(None, "web", &m.services["web"]);
        let m2 = parse_metadata(r#"{"services":{"web":{"image":"web:2"}}}"#).unwrap();
        assert_eq!(id1, metadata_deploy_id(None, "web", &m2.services["web"]));
        let m3 = parse_metadata(r#"{"services":{"web":{"image":"web:3"}}}"#).unwrap();
        assert_ne!(id1, metadata_deploy_id(None, "web", &m3.services["web"]));
        assert_eq!(
            metadata_deploy_id(Some("stack-7"), "web", &m3.services["web"]),
            "stack-7-web"
        );
        assert!(parse_metadata(r#"{"services":{"web":{"img":"web:3"}}}"#)
            .unwrap_err()
            .contains("img"));
        assert!(parse_metadata(r#"{"services":{}}"#).is_err());
    }
}
