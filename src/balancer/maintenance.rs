//! Maintenance mode through the runtime API, with no reload: hotswapd's managed block in each
//! backend holds one `http-request return` rule that answers 503, with a message and
//! Retry-After, while a process-wide variable holds the backend's token. Setting the variables
//! (`set var`, which HAProxy 2.6 allows in experimental mode on an admin socket) turns it on and
//! off; HAProxy loses them on a reload or restart, so hotswapd sets them again (the registry,
//! woken by HAProxy's files changing and by the sweep).
//!
//! The rule works once HAProxy has loaded a config holding it: hotswapd writes it with the
//! servers of the block at every swap; `rule_loaded` asks HAProxy whether the running process
//! has it (its inline ACL carries the backend's token), so turning maintenance on never says
//! yes when clients would not see it.

use super::{BalancerError, RuntimeApi};

/// The backend's name as a variable name part (HAProxy's variable names: letters, digits, `_`).
fn part(backend: &str) -> String {
    backend
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What the on-switch variable holds while maintenance is on.
fn token(backend: &str) -> String {
    format!("hotswap-maintenance-{}", part(backend))
}

/// The rule written into the backend's managed block.
pub fn rule(backend: &str) -> String {
    let p = part(backend);
    format!(
        "http-request return status 503 content-type \"text/plain; charset=utf-8\" lf-string \"%[var(proc.hotswap_maint_msg_{p})]\" hdr Retry-After \"%[var(proc.hotswap_maint_retry_{p})]\" if {{ var(proc.hotswap_maint_{p}) -m str {} }}",
        token(backend)
    )
}

/// Whether a maintenance message can be set through the runtime API as it is: printable ASCII
/// without the characters its command line or log-format give a meaning (`;`, `%`, `\`, `"`,
/// `#`, `[`, `]`, `{`, `}`), 1 to 200 characters.
pub fn check_message(message: &str) -> Result<(), String> {
    if message.is_empty() || message.chars().count() > 200 {
        return Err(format!(
            "maintenance message of {} characters: give 1 to 200",
            message.chars().count()
        ));
    }
    match message
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || "; %\\\"#[]{}".contains(*c) && *c != ' ')
    {
        Some(c) => Err(format!(
            "maintenance message {message:?}: {c:?} cannot be passed to HAProxy's runtime API; use letters, digits, spaces and . , : ! ? ' ( ) / - _ @ + ="
        )),
        None => Ok(()),
    }
}

/// Turns the backend's maintenance on (message, Retry-After seconds) or off.
pub async fn apply(
    api: &RuntimeApi,
    backend: &str,
    on: Option<(&str, u64)>,
) -> Result<(), BalancerError> {
    let p = part(backend);
    let command = match on {
        Some((message, retry_after_secs)) => {
            check_message(message).map_err(|e| BalancerError::Command {
                socket: api.socket().display().to_string(),
                command: "set var".into(),
                reply: e,
            })?;
            format!(
                "experimental-mode on; set var proc.hotswap_maint_msg_{p} fmt {}; set var proc.hotswap_maint_retry_{p} int({retry_after_secs}); set var proc.hotswap_maint_{p} str({})",
                message.replace(' ', "\\ "),
                token(backend)
            )
        }
        None => format!("experimental-mode on; set var proc.hotswap_maint_{p} str(off)"),
    };
    api.quiet(&command).await
}

/// Whether the backend's maintenance is on in the running HAProxy.
pub async fn is_on(api: &RuntimeApi, backend: &str) -> Result<bool, BalancerError> {
    let reply = api
        .command(&format!("get var proc.hotswap_maint_{}", part(backend)))
        .await?;
    Ok(reply.contains(&format!("<{}>", token(backend))))
}

/// Whether the running HAProxy has loaded the backend's maintenance rule: among its ACLs on a
/// variable, one whose pattern is the backend's token.
pub async fn rule_loaded(api: &RuntimeApi, backend: &str) -> Result<bool, BalancerError> {
    let list = api.command("show acl").await?;
    let want = token(backend);
    for id in list
        .lines()
        .filter(|l| l.contains("acl 'var'"))
        .filter_map(|l| l.split_whitespace().next())
    {
        let patterns = api.command(&format!("show acl #{id}")).await?;
        if patterns.split_whitespace().any(|w| w == want) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_and_names_are_per_backend() {
        let r = rule("web-eu");
        assert!(
            r.contains("var(proc.hotswap_maint_web_eu) -m str hotswap-maintenance-web_eu"),
            "{r}"
        );
        assert!(
            r.contains("hdr Retry-After \"%[var(proc.hotswap_maint_retry_web_eu)]\""),
            "{r}"
        );
    }

    #[test]
    fn messages_the_runtime_api_cannot_carry_are_refused() {
        assert!(check_message("Down for an upgrade, back at 14:00 (UTC).").is_ok());
        for bad in ["", "a;b", "100%", "x\\y", "say \"hi\"", "tab\there", "é"] {
            assert!(check_message(bad).is_err(), "{bad:?}");
        }
        assert!(check_message(&"x".repeat(201)).is_err());
    }
}
