//! Logs straight to journald's native socket, so an event's structured fields become journal
//! fields (`journalctl SERVICE=web DEPLOY_ID=…`), next to a readable MESSAGE with them in the text.
//! The protocol is systemd's "native journal protocol": one datagram per entry, `KEY=value` lines,
//! or `KEY\n<u64 LE length><value>\n` for a value with a newline.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

pub struct Journald {
    socket: UnixDatagram,
    identifier: String,
}

impl Journald {
    /// Connects to the journal's socket at `path`; an error when nothing listens there.
    pub fn connect(path: &Path, identifier: &str) -> std::io::Result<Journald> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Journald {
            socket,
            identifier: identifier.to_string(),
        })
    }
}

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A tracing field name as a journal field name: upper case letters, digits and `_`, not
/// starting with `_` or a digit (those are the journal's own trusted fields).
pub fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) {
        out.remove(0);
    }
    if out.is_empty() {
        out.push_str("FIELD");
    }
    out
}

/// Appends one field in the native protocol's encoding.
pub fn put(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

/// The entry for one event: MESSAGE (the text, then `key=value` pairs as on stderr), PRIORITY,
/// SYSLOG_IDENTIFIER, TARGET, and each field under its own name.
pub fn entry(identifier: &str, level: &Level, target: &str, event: &Event<'_>) -> Vec<u8> {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut message = fields.message.clone();
    for (k, v) in &fields.pairs {
        let _ = write!(message, " {k}={v}");
    }
    let mut buf = Vec::with_capacity(256);
    put(&mut buf, "MESSAGE", message.trim_start());
    put(&mut buf, "PRIORITY", &priority(level).to_string());
    put(&mut buf, "SYSLOG_IDENTIFIER", identifier);
    put(&mut buf, "TARGET", target);
    for (k, v) in &fields.pairs {
        let key = field_name(k);
        if !matches!(
            key.as_str(),
            "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET"
        ) {
            put(&mut buf, &key, v);
        }
    }
    buf
}

impl<S: Subscriber> Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let buf = entry(&self.identifier, meta.level(), meta.target(), event);
        if let Err(e) = self.socket.send(&buf) {
            // the journal went away or the entry is too big: stderr still reaches it
            eprintln!(
                "<{}>{} (journal socket: {e}) {}",
                priority(meta.level()),
                meta.level(),
                String::from_utf8_lossy(&buf).replace('\n', " ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_follow_the_journal_rules() {
        assert_eq!(field_name("deploy_id"), "DEPLOY_ID");
        assert_eq!(field_name("service"), "SERVICE");
        assert_eq!(field_name("_hidden"), "HIDDEN");
        assert_eq!(field_name("9lives"), "LIVES");
        assert_eq!(field_name("a.b-c"), "A_B_C");
    }

    #[test]
    fn values_with_newlines_use_the_length_prefixed_form() {
        let mut buf = Vec::new();
        put(&mut buf, "SERVICE", "web");
        put(&mut buf, "REASON", "a\nb");
        let mut want = b"SERVICE=web\nREASON\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(buf, want);
    }
}
