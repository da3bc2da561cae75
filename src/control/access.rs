//! Who may use the control socket: root, the daemon's own user, the socket group's members, and
//! the configured uids and groups. Checked per connection from SO_PEERCRED; supplementary groups
//! come from /proc/<pid>/status.

use crate::config::AccessSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

fn gid_of(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The peer's supplementary groups, read from /proc; empty when the process is gone.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

pub fn check_peer(peer: &Peer, access: &AccessSettings) -> Result<(), String> {
    let own_uid = nix::unistd::geteuid().as_raw();
    if peer.uid == 0 || peer.uid == own_uid || access.allowed_uids.contains(&peer.uid) {
        return Ok(());
    }
    let allowed_gids: Vec<u32> = std::iter::once(access.socket_group.as_str())
        .chain(access.allowed_groups.iter().map(|s| s.as_str()))
        .filter_map(gid_of)
        .collect();
    let mut groups = vec![peer.gid];
    if let Some(pid) = peer.pid {
        groups.extend(supplementary_groups(pid));
    }
    if groups.iter().any(|g| allowed_gids.contains(g)) {
        return Ok(());
    }
    Err(format!(
        "uid {} (gid {}, pid {}) may not use hotswapd's control socket: allowed are root, uid {own_uid}, uids {:?} and members of groups {:?}",
        peer.uid,
        peer.gid,
        peer.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
        access.allowed_uids,
        std::iter::once(&access.socket_group).chain(access.allowed_groups.iter()).collect::<Vec<_>>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> AccessSettings {
        AccessSettings {
            socket_group: "hotswap-group-that-does-not-exist".into(),
            allowed_uids: vec![4242],
            allowed_groups: vec!["777".into()],
        }
    }

    #[test]
    fn root_listed_uids_and_groups_pass_others_are_named() {
        let a = access();
        assert!(check_peer(
            &Peer {
                uid: 0,
                gid: 0,
                pid: None
            },
            &a
        )
        .is_ok());
        assert!(check_peer(
            &Peer {
                uid: 4242,
                gid: 1,
                pid: None
            },
            &a
        )
        .is_ok());
        assert!(check_peer(
            &Peer {
                uid: 5000,
                gid: 777,
                pid: None
            },
            &a
        )
        .is_ok());
        let err = check_peer(
            &Peer {
                uid: 5000,
                gid: 5000,
                pid: Some(1),
            },
            &a,
        )
        .unwrap_err();
        assert!(err.contains("uid 5000") && err.contains("4242"), "{err}");
    }
}
