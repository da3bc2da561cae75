//! Request and answer bodies of the control API that name no engine type, shared by the socket,
//! the inbox, the metadata watcher and the CLI. The views of services and deploys are
//! `control::api`'s.

use serde::{Deserialize, Serialize};

/// Bodies larger than this are refused.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a request body is not the documented JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("the body is empty: send a JSON object")]
    Empty,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The JSON kind given instead ("an array", "a string", ...).
    #[error("the body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// Unknown, missing, duplicated or mistyped fields, as serde names them.
    #[error("{0}")]
    Fields(String),
}

/// A request body: UTF-8, one JSON object, only the fields `T` documents (its
/// `deny_unknown_fields`), each of the right type. Shared by the control socket and the inbox.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let kind = match value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
    };
    if let Some(kind) = kind {
        return Err(BodyError::NotAnObject(kind));
    }
    // from the text again, not the value: serde_json then names duplicate fields and gives
    // line and column
    serde_json::from_str(text).map_err(|e| BodyError::Fields(e.to_string()))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub service: String,
    /// The image of a container release (empty for a code release).
    #[serde(default)]
    pub image: String,
    /// What the app reports for this release; defaults to the image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Given by the caller to make retries safe; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
    /// An image archive on this host (`docker save` output) holding `image`, loaded first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<std::path::PathBuf>,
    /// Hex sha256 of the archive, checked before loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// A code bundle on this host (directory or .tar.gz) for a service that reloads code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<std::path::PathBuf>,
    /// Skip the service's canary ramp: switch all traffic once the health gate passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ramp: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployAccepted {
    pub deploy_id: String,
    pub service: String,
    /// false when the deploy id was seen before and nothing new was started.
    pub accepted: bool,
    /// The deploy running now that this one waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    /// Queued deploys this one replaced (they will not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
    /// A kept release to go back to (its version, image or tag); the previous one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `POST /v1/services/{name}/maintenance`: on with a message and Retry-After, or off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MaintenanceOutcome {
    pub service: String,
    /// What HAProxy now answers with; None: maintenance is off.
    pub maintenance: Option<super::Maintenance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadOutcome {
    pub services: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// One line per service, for `hotswapctl services`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSummary {
    pub service: String,
    /// serving, swapping, repairing, recovering, degraded or down.
    pub state: String,
    /// Why, for every state but serving and swapping.
    #[serde(default)]
    pub reason: Option<String>,
    pub current: Option<String>,
    pub current_version: Option<String>,
    pub previous: Option<String>,
    /// The phase of the swap in flight.
    pub phase: Option<String>,
    pub queued: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub version: String,
    pub instance_id: String,
    pub host: String,
    pub uptime_secs: u64,
    /// Service name → state ("serving", "swapping", "repairing", "recovering", "degraded: why",
    /// "down: why").
    pub services: std::collections::BTreeMap<String, String>,
}

/// What `status` shows of the watcher.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchView {
    pub stack: String,
    pub resource: String,
    /// The last successful read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ms: Option<u64>,
    /// When the releases last changed (and were submitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_ms: Option<u64>,
    /// The deploy ids submitted at the last change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submitted: Vec<String>,
    /// Why the last read or submission failed, and when the next read is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(body: &[u8]) -> Result<DeployRequest, BodyError> {
        parse_body(body)
    }

    #[test]
    fn a_body_is_one_object_with_only_documented_fields() {
        let ok = deploy(br#"{"service": "web", "image": "web:2", "no_ramp": true}"#).unwrap();
        assert_eq!((ok.service.as_str(), ok.image.as_str()), ("web", "web:2"));
        assert!(ok.no_ramp);
        assert_eq!(
            parse_body::<RollbackRequest>(b" {} ").unwrap(),
            RollbackRequest::default()
        );

        for (body, kind) in [
            (&b"[]"[..], "an array"),
            (br#"[{"service": "web"}]"#, "an array"),
            (br#""web:2""#, "a string"),
            (b"42", "a number"),
            (b"true", "a boolean"),
            (b"null", "null"),
        ] {
            let e = deploy(body).unwrap_err();
            assert_eq!(e, BodyError::NotAnObject(kind));
            assert!(e.to_string().contains("must be a JSON object"), "{e}");
        }

        let e = deploy(br#"{"service": "web", "image": "web:2", "imgae": "x"}"#).unwrap_err();
        assert!(
            matches!(&e, BodyError::Fields(m) if m.contains("unknown field `imgae`")),
            "{e}"
        );
        let e = parse_body::<RollbackRequest>(br#"{"deploy_id": "a", "force": true}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `force`"), "{e}");
        let e = deploy(br#"{"service": "web", "service": "api"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `service`"), "{e}");
        let e = deploy(br#"{"image": "web:2"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `service`"), "{e}");
        let e = deploy(br#"{"service": 7}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    #[test]
    fn bytes_that_are_not_json_text_are_named() {
        assert_eq!(
            deploy(b"{\"service\": \"w\xffb\"}").unwrap_err(),
            BodyError::NotUtf8 { offset: 14 }
        );
        assert_eq!(deploy(b"").unwrap_err(), BodyError::Empty);
        assert_eq!(deploy(b" \n ").unwrap_err(), BodyError::Empty);
        assert!(matches!(deploy(b"{not json"), Err(BodyError::NotJson(_))));
        assert!(matches!(
            deploy(br#"{"service": "web"} {}"#),
            Err(BodyError::NotJson(m)) if m.contains("trailing characters")
        ));
    }
}
