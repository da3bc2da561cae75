//! Who asked for a release, as the journal, the reports and history keep it.

use serde::{Deserialize, Serialize};

/// Who asked for a release: a client of the control socket (its credentials and command line),
/// an inbox file, or the CloudFormation metadata watcher. A restart's repair or recovery asks
/// nothing: its report carries the release's original requester.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// "socket", "inbox" or "metadata_watch".
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The client's command line (socket), at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The inbox file's name, or the stack resource the metadata came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.via)?;
        if let Some(uid) = self.uid {
            write!(f, " uid={uid}")?;
        }
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " {source}")?;
        }
        if let Some(command) = &self.command {
            write!(f, " ({command})")?;
        }
        Ok(())
    }
}
