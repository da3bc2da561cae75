//! The releases a CloudFormation resource's metadata carries (under a `hotswap` key, or bare), as
//! deploy requests with deploy ids that stay the same for the same metadata: `deploy
//! --from-metadata` (cfn-hup's hook) and the daemon's own metadata watcher read it alike, so a
//! change seen twice, or by both, swaps nothing twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::api::DeployRequest;

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

fn parse_metadata(text: &str, key: &str) -> Result<Metadata, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let inner = value.get(key).cloned().unwrap_or(value);
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

/// Every release in the metadata `text` (its `key` entry, or the whole of it), one request per
/// service.
pub fn requests(text: &str, key: &str) -> Result<Vec<DeployRequest>, String> {
    let meta = parse_metadata(text, key)?;
    Ok(meta
        .services
        .iter()
        .map(|(service, r)| DeployRequest {
            service: service.clone(),
            image: r.image.clone(),
            version: r.version.clone(),
            deploy_id: Some(metadata_deploy_id(meta.deploy_id.as_deref(), service, r)),
            archive: r.archive.clone(),
            archive_sha256: r.archive_sha256.clone(),
            code: r.code.clone(),
            no_ramp: r.no_ramp,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_wrapped_or_bare_and_ids_are_stable() {
        let wrapped = r#"{"hotswap":{"services":{"web":{"image":"web:2"}}}}"#;
        let m = parse_metadata(wrapped, "hotswap").unwrap();
        let id1 = metadata_deploy_id(None, "web", &m.services["web"]);
        let m2 = parse_metadata(r#"{"services":{"web":{"image":"web:2"}}}"#, "hotswap").unwrap();
        assert_eq!(id1, metadata_deploy_id(None, "web", &m2.services["web"]));
        let m3 = parse_metadata(r#"{"services":{"web":{"image":"web:3"}}}"#, "hotswap").unwrap();
        assert_ne!(id1, metadata_deploy_id(None, "web", &m3.services["web"]));
        assert_eq!(
            metadata_deploy_id(Some("stack-7"), "web", &m3.services["web"]),
            "stack-7-web"
        );
        assert!(
            parse_metadata(r#"{"services":{"web":{"img":"web:3"}}}"#, "hotswap")
                .unwrap_err()
                .contains("img")
        );
        assert!(parse_metadata(r#"{"services":{}}"#, "hotswap").is_err());
    }
}
