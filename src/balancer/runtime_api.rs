//! HAProxy's runtime API, spoken directly over its Unix socket: one command per connection,
//! the reply read until HAProxy closes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{AdminState, BalancerError, ServerFigures, ServerStatus};

#[derive(Debug, Clone)]
pub struct RuntimeApi {
    socket: PathBuf,
    timeout: Duration,
}

/// Server admin-state bits from `show servers state` (srv_admin_state).
const ADMIN_FMAINT: u32 = 0x01;
const ADMIN_IMAINT: u32 = 0x02;
const ADMIN_CMAINT: u32 = 0x04;
const ADMIN_FDRAIN: u32 = 0x08;
const ADMIN_IDRAIN: u32 = 0x10;
const ADMIN_RMAINT: u32 = 0x20;
const ADMIN_HMAINT: u32 = 0x40;

impl RuntimeApi {
    pub fn new(socket: &Path, timeout: Duration) -> RuntimeApi {
        RuntimeApi {
            socket: socket.to_owned(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn api_error(&self, message: String) -> BalancerError {
        BalancerError::Api {
            socket: self.socket.display().to_string(),
            message,
        }
    }

    /// Connects to the socket, asking again while HAProxy is busy or between processes: a full
    /// accept backlog (many services at once) answers EAGAIN (asked again until the command's
    /// timeout), a reload's moment without a listener ECONNREFUSED (asked again for 500 ms: a
    /// stopped HAProxy is told at once). Waits double from 5 ms to 100 ms.
    async fn connect(&self) -> std::io::Result<UnixStream> {
        let mut wait =
            crate::clock::Backoff::doubling(Duration::from_millis(5), Duration::from_millis(100));
        let refused_until = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match UnixStream::connect(&self.socket).await {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || (e.kind() == std::io::ErrorKind::ConnectionRefused
                            && tokio::time::Instant::now() < refused_until) =>
                {
                    tokio::time::sleep(wait.next()).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one command and returns HAProxy's reply text.
    pub async fn command(&self, command: &str) -> Result<String, BalancerError> {
        let io = async {
            let mut stream = self.connect().await?;
            stream.write_all(command.as_bytes()).await?;
            stream.write_all(b"\n").await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.api_error(format!("{command:?}: {e}"))),
            Err(_) => Err(self.api_error(format!(
                "{command:?}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Runs a command whose success HAProxy confirms with a known phrase.
    pub async fn expect(&self, command: &str, ok_phrase: &str) -> Result<(), BalancerError> {
        let reply = self.command(command).await?;
        if reply.contains(ok_phrase) {
            Ok(())
        } else {
            Err(BalancerError::Command {
                socket: self.socket.display().to_string(),
                command: command.to_string(),
                reply: reply.trim().to_string(),
            })
        }
    }

    /// Runs a command that answers with an empty reply on success.
    pub async fn quiet(&self, command: &str) -> Result<(), BalancerError> {
        let reply = self.command(command).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(BalancerError::Command {
                socket: self.socket.display().to_string(),
                command: command.to_string(),
                reply: reply.trim().to_string(),
            })
        }
    }

    pub async fn servers_state(&self, backend: &str) -> Result<Vec<ServerStatus>, BalancerError> {
        let reply = self
            .command(&format!("show servers state {backend}"))
            .await?;
        parse_servers_state(&reply, backend).map_err(|m| self.api_error(m))
    }

    pub async fn backend_failures(&self, backend: &str) -> Result<u64, BalancerError> {
        let reply = self.command(&format!("show stat {backend} 2 -1")).await?;
        parse_backend_failures(&reply, backend).map_err(|m| self.api_error(m))
    }

    /// Each server's cumulative figures, from `show stat`.
    pub async fn server_figures(&self, backend: &str) -> Result<Vec<ServerFigures>, BalancerError> {
        let reply = self.command(&format!("show stat {backend} 4 -1")).await?;
        parse_server_figures(&reply, backend).map_err(|m| self.api_error(m))
    }

    /// Current sessions plus queued requests per server, from `show stat`.
    pub async fn in_flight(&self, backend: &str) -> Result<Vec<(String, u64)>, BalancerError> {
        let reply = self.command(&format!("show stat {backend} 4 -1")).await?;
        parse_stat_in_flight(&reply, backend).map_err(|m| self.api_error(m))
    }
}

pub(super) fn parse_servers_state(reply: &str, backend: &str) -> Result<Vec<ServerStatus>, String> {
    let mut lines = reply.lines();
    let mut header: Option<Vec<&str>> = None;
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if line.is_empty() || line == "1" {
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            header = Some(h.split_whitespace().collect());
            continue;
        }
        let Some(h) = &header else {
            return Err(format!(
                "unexpected reply to show servers state: {}",
                reply.trim()
            ));
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let get = |name: &str| {
            h.iter()
                .position(|c| *c == name)
                .and_then(|i| fields.get(i).copied())
                .ok_or_else(|| format!("show servers state: no field {name} in {line:?}"))
        };
        if get("be_name")? != backend {
            continue;
        }
        let admin_bits: u32 = get("srv_admin_state")?
            .parse()
            .map_err(|_| format!("bad srv_admin_state in {line:?}"))?;
        let admin = if admin_bits
            & (ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT | ADMIN_HMAINT)
            != 0
        {
            AdminState::Maint
        } else if admin_bits & (ADMIN_FDRAIN | ADMIN_IDRAIN) != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        };
        out.push(ServerStatus {
            name: get("srv_name")?.to_string(),
            addr: get("srv_addr")?
                .parse()
                .map_err(|_| format!("bad srv_addr in {line:?}"))?,
            port: get("srv_port")?
                .parse()
                .map_err(|_| format!("bad srv_port in {line:?}"))?,
            admin,
            up: get("srv_op_state")? == "2",
        });
    }
    if header.is_none() && !reply.trim().is_empty() && !reply.trim().starts_with('1') {
        return Err(reply.trim().to_string());
    }
    Ok(out)
}

/// `show stat` CSV: the header names the columns; rows of one backend, by server name.
struct StatTable<'a> {
    cols: Vec<&'a str>,
    rows: Vec<Vec<&'a str>>,
}

impl<'a> StatTable<'a> {
    fn parse(reply: &'a str) -> Result<StatTable<'a>, String> {
        let mut lines = reply.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or_else(|| format!("unexpected reply to show stat: {}", reply.trim()))?;
        Ok(StatTable {
            cols: header.split(',').collect(),
            rows: lines
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split(',').collect())
                .collect(),
        })
    }

    fn col(&self, name: &str) -> Result<usize, String> {
        self.cols
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("show stat: no column {name}"))
    }

    /// (server name, row) of `backend`, the BACKEND and FRONTEND summary rows included.
    fn rows_of(&self, backend: &str) -> Result<Vec<(&'a str, &Vec<&'a str>)>, String> {
        let (px, sv) = (self.col("pxname")?, self.col("svname")?);
        Ok(self
            .rows
            .iter()
            .filter(|r| r.get(px) == Some(&backend))
            .filter_map(|r| r.get(sv).map(|name| (*name, r)))
            .collect())
    }

    fn sum(&self, row: &[&str], cols: &[usize]) -> u64 {
        cols.iter()
            .map(|i| row.get(*i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum()
    }
}

/// econ + eresp + hrsp_5xx of the backend row of `show stat`.
pub(super) fn parse_backend_failures(reply: &str, backend: &str) -> Result<u64, String> {
    let t = StatTable::parse(reply)?;
    let counters = [t.col("econ")?, t.col("eresp")?, t.col("hrsp_5xx")?];
    t.rows_of(backend)?
        .into_iter()
        .find(|(name, _)| *name == "BACKEND")
        .map(|(_, row)| t.sum(row, &counters))
        .ok_or_else(|| format!("show stat: no BACKEND row for {backend}"))
}

/// Each server's counters: responses by class, connection and response errors, the average
/// response time over its last 1024 requests, and its effective weight.
pub(super) fn parse_server_figures(
    reply: &str,
    backend: &str,
) -> Result<Vec<ServerFigures>, String> {
    let t = StatTable::parse(reply)?;
    let responses = [
        t.col("hrsp_1xx")?,
        t.col("hrsp_2xx")?,
        t.col("hrsp_3xx")?,
        t.col("hrsp_4xx")?,
        t.col("hrsp_5xx")?,
        t.col("hrsp_other")?,
    ];
    let (econ, eresp, h5) = (t.col("econ")?, t.col("eresp")?, t.col("hrsp_5xx")?);
    let (rtime, weight) = (t.col("rtime")?, t.col("weight")?);
    Ok(t.rows_of(backend)?
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "BACKEND" | "FRONTEND"))
        .map(|(name, row)| ServerFigures {
            name: name.to_string(),
            responses: t.sum(row, &responses),
            errors: t.sum(row, &[econ, eresp, h5]),
            failed_connections: t.sum(row, &[econ, eresp]),
            rtime_ms: t.sum(row, &[rtime]),
            weight: t.sum(row, &[weight]),
        })
        .collect())
}

/// Current sessions plus queued requests of each server of `backend`.
pub(super) fn parse_stat_in_flight(
    reply: &str,
    backend: &str,
) -> Result<Vec<(String, u64)>, String> {
    let t = StatTable::parse(reply)?;
    let counters = [t.col("qcur")?, t.col("scur")?];
    Ok(t.rows_of(backend)?
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "BACKEND" | "FRONTEND"))
        .map(|(name, row)| (name.to_string(), t.sum(row, &counters)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_state_of_haproxy_2_6() {
        let reply = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 web 1 web-a 127.0.0.1 2 0 1 1 10 6 3 4 6 0 0 0 - 32768 - 0 0 - - 0\n3 web 2 web-b 127.0.0.1 2 8 1 1 10 6 3 4 6 0 0 0 - 32769 - 0 0 - - 0\n3 web 3 web-c 127.0.0.1 0 1 1 1 10 6 3 4 6 0 0 0 - 32770 - 0 0 - - 0\n\n";
        let s = parse_servers_state(reply, "web").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].name.as_str(), s[0].port, s[0].admin, s[0].up),
            ("web-a", 32768, AdminState::Ready, true)
        );
        assert_eq!(s[1].admin, AdminState::Drain);
        assert_eq!((s[2].admin, s[2].up), (AdminState::Maint, false));
    }

    #[test]
    fn unknown_backend_reply_is_an_error() {
        assert!(parse_servers_state("Can't find backend.\n\n", "nope").is_err());
    }

    #[test]
    fn backend_failures_sum_connection_response_and_5xx_errors() {
        let reply = "# pxname,svname,econ,eresp,hrsp_5xx\nweb,BACKEND,1,2,3\n\n";
        assert_eq!(parse_backend_failures(reply, "web").unwrap(), 6);
        assert!(parse_backend_failures(reply, "api").is_err());
    }

    #[test]
    fn server_figures_count_responses_errors_and_response_time() {
        let reply = "# pxname,svname,econ,eresp,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,rtime\n\
            web,hs-a,0,0,90,0,100,0,3,0,0,2\n\
            web,hs-b,1,2,10,0,16,0,0,4,0,7\n\
            web,BACKEND,3,2,100,0,116,0,3,4,0,3\n\n";
        let f = parse_server_figures(reply, "web").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (
                f[0].name.as_str(),
                f[0].responses,
                f[0].errors,
                f[0].rtime_ms,
                f[0].weight
            ),
            ("hs-a", 103, 0, 2, 90)
        );
        // errors: 5xx answers plus connection and response errors
        assert_eq!(
            (f[1].responses, f[1].errors, f[1].failed_connections),
            (20, 7, 3)
        );
    }

    #[test]
    fn parses_in_flight_from_show_stat() {
        let reply =
            "# pxname,svname,qcur,qmax,scur,smax\nweb,web-a,1,0,2,5\nweb,BACKEND,0,0,2,5\n\n";
        assert_eq!(
            parse_stat_in_flight(reply, "web").unwrap(),
            vec![("web-a".to_string(), 3)]
        );
    }
}
