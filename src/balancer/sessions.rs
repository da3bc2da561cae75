//! The sessions HAProxy holds on a backend's servers (`show sess`), told apart as requests
//! waiting on their answer and long-lived streams (WebSocket tunnels, server-sent events, any
//! answer still being sent), and closed one by one (`shutdown session`).

use super::{BalancerError, RuntimeApi};

/// One HAProxy stream (a client connection's current request, or its tunnel) on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// HAProxy's id for it, as `shutdown session` takes it (`0x55d0c8a3e400`).
    pub id: String,
    pub server: String,
    /// The answer has begun (its response analysers are done): a WebSocket after its 101, an
    /// event stream, a long download. False: the request still waits on its answer.
    pub streaming: bool,
}

/// The sessions of `backend` that have a server, from `show sess`'s one line per stream:
/// `0x55..: proto=tcpv4 src=.. fe=web be=web srv=hs-3 ts=00 .. rp[f=..,i=0,an=00h,..] ..`.
/// Lines of other backends, of the CLI itself and without a server are skipped; a line this
/// does not understand is skipped too (a newer HAProxy may add fields, never drop these).
pub fn parse_show_sess(reply: &str, backend: &str) -> Vec<Session> {
    reply
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next()?.strip_suffix(':')?;
            if !id.starts_with("0x") {
                return None;
            }
            let (mut be, mut srv, mut rp_an) = (None, None, None);
            for w in words {
                if let Some(v) = w.strip_prefix("be=") {
                    be = Some(v);
                } else if let Some(v) = w.strip_prefix("srv=") {
                    srv = Some(v);
                } else if let Some(v) = w.strip_prefix("rp[") {
                    rp_an = v
                        .trim_end_matches(']')
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("an="));
                }
            }
            let srv = srv.filter(|s| !s.starts_with('<'))?;
            (be? == backend).then(|| Session {
                id: id.to_string(),
                server: srv.to_string(),
                streaming: rp_an
                    .is_some_and(|an| an.trim_end_matches('h').trim_start_matches('0').is_empty()),
            })
        })
        .collect()
}

impl RuntimeApi {
    pub async fn sessions(&self, backend: &str) -> Result<Vec<Session>, BalancerError> {
        Ok(parse_show_sess(&self.command("show sess").await?, backend))
    }

    /// Closes the sessions named (one call, commands separated by `;`); how many were still
    /// there to close.
    pub async fn shutdown_sessions(&self, ids: &[String]) -> Result<usize, BalancerError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let command: Vec<String> = ids
            .iter()
            .map(|id| format!("shutdown session {id}"))
            .collect();
        let reply = self.command(&command.join("; ")).await?;
        Ok(ids
            .len()
            .saturating_sub(reply.matches("No such session").count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read off HAProxy 2.6 (Debian 12): a WebSocket after its 101, an event stream, a request
    /// waiting on a slow answer, and the CLI's own session.
    const SHOW_SESS: &str = "\
0x558cd47b33e0: proto=tcpv4 src=127.0.0.1:59684 fe=f be=b srv=s1 ts=00 epoch=0 age=2s calls=4 rate=1 cpu=0 lat=0 rq[f=8c48000h,i=0,an=00h,rx=59m58s,wx=59m58s,ax=] rp[f=88048000h,i=0,an=00h,rx=59m58s,wx=59m58s,ax=] scf=[8,0h,fd=12] scb=[8,11h,fd=13] exp=59m58s rc=0 c_exp=
0x558cd48cf300: proto=tcpv4 src=127.0.0.1:59706 fe=f be=b srv=s1 ts=00 epoch=0 age=2s calls=3 rate=1 cpu=0 lat=0 rq[f=49c40000h,i=0,an=8000h,rx=,wx=,ax=] rp[f=80400000h,i=0,an=1400000h,rx=57s,wx=,ax=] scf=[8,80h,fd=16] scb=[8,11h,fd=17] exp=57s rc=0 c_exp=
0x558cd48d00c0: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0 age=0s calls=1 rate=1 cpu=0 lat=0 rq[f=c08002h,i=0,an=00h,rx=10s,wx=,ax=] rp[f=80008002h,i=0,an=00h,rx=,wx=,ax=] scf=[8,0h,fd=19] scb=[8,1h,fd=-1] exp=10s rc=0 c_exp=
0x7fa554041fd0: proto=tcpv4 src=127.0.0.1:59700 fe=f be=b srv=s2 ts=00 epoch=0 age=2s calls=4 rate=0 cpu=0 lat=0 rq[f=48c48000h,i=0,an=00h,rx=,wx=,ax=] rp[f=88048202h,i=0,an=00h,rx=59m59s,wx=,ax=] scf=[8,0h,fd=14] scb=[8,11h,fd=15] exp=59m58s rc=0 c_exp=
0x7fa554042000: proto=tcpv4 src=127.0.0.1:59710 fe=f be=other srv=s1 ts=00 epoch=0 age=2s calls=4 rate=0 cpu=0 lat=0 rq[f=48c48000h,i=0,an=00h,rx=,wx=,ax=] rp[f=88048202h,i=0,an=00h,rx=59m59s,wx=,ax=] scf=[8,0h,fd=14] scb=[8,11h,fd=15] exp=59m58s rc=0 c_exp=
";

    #[test]
    fn streams_are_told_from_requests_waiting_on_their_answer() {
        let got = parse_show_sess(SHOW_SESS, "b");
        let seen: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|s| (s.id.as_str(), s.server.as_str(), s.streaming))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("0x558cd47b33e0", "s1", true),
                ("0x558cd48cf300", "s1", false),
                ("0x7fa554041fd0", "s2", true),
            ]
        );
    }

    #[test]
    fn lines_it_does_not_understand_are_skipped() {
        assert!(parse_show_sess("Unknown command\n\n", "b").is_empty());
        assert!(parse_show_sess("0x1: be=b srv=s1\n", "b")
            .iter()
            .all(|s| !s.streaming));
    }
}
