//! The connection table's rules, on its own (no socket): who gives way, who is refused, when
//! a connection counts as idle.

use super::*;
use tokio::net::UnixStream;

fn table(max: usize) -> Arc<Table> {
    Table::new(Bounds {
        max_connections: max,
        idle_timeout: Duration::from_millis(200),
        header_timeout: HEADER_READ_TIMEOUT,
    })
}

fn admitted(a: Admission) -> Ticket {
    match a {
        Admission::Admitted(t) => t,
        other => panic!("not admitted: {other:?}"),
    }
}

#[test]
fn the_bound_leaves_descriptors_to_the_engine() {
    assert_eq!(bound_for_nofile(1024), 256);
    assert_eq!(bound_for_nofile(1_048_576), MAX_CONNECTIONS);
    assert_eq!(bound_for_nofile(u64::MAX), MAX_CONNECTIONS);
    assert_eq!(bound_for_nofile(712), 100);
    assert_eq!(bound_for_nofile(256), 4);
}

#[tokio::test]
async fn a_full_table_closes_the_connection_idle_the_longest() {
    let t = table(8); // 2 more may be closing
    let now = Instant::now();
    let held: Vec<_> = (0..8u64)
        .map(|i| admitted(t.admit(now + Duration::from_millis(i))))
        .collect();
    // the oldest is busy (a long poll): the next oldest, idle since it opened, gives way
    let _busy = held[0].busy();
    let _ninth = admitted(t.admit(now + Duration::from_millis(8)));
    let closing = |held: &[Ticket]| held.iter().map(Ticket::is_closing).collect::<Vec<_>>();
    assert_eq!(
        closing(&held),
        [false, true, false, false, false, false, false, false]
    );
    // held[1] still holds its descriptor until it is gone: held[2] gives way next
    let _tenth = admitted(t.admit(now + Duration::from_millis(9)));
    assert_eq!(
        closing(&held),
        [false, true, true, false, false, false, false, false]
    );
    assert_eq!(t.open(), 10);
    // up to three times the bound may be closing: nothing more until one is gone
    let burst: Vec<_> = (0..22u64)
        .map(|i| admitted(t.admit(now + Duration::from_millis(10 + i))))
        .collect();
    assert_eq!(t.open(), 8 + 24);
    assert!(matches!(t.admit(now), Admission::Shed));
    let mut held = held;
    held.remove(1);
    assert_eq!(t.open(), 8 + 23);
    // one gone, room again
    let _next = admitted(t.admit(now + Duration::from_millis(40)));
    assert!(
        !held[0].is_closing(),
        "a connection busy with a request never gives way"
    );
    drop(burst);
}

#[tokio::test]
async fn a_connection_idle_again_after_a_request_counts_from_its_end() {
    let t = table(2);
    let a = admitted(t.admit(Instant::now()));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = admitted(t.admit(Instant::now()));
    drop(a.busy()); // a request came and went: a is now idle for less time than b
    let _c = admitted(t.admit(Instant::now()));
    assert!(b.is_closing() && !a.is_closing());
}

#[tokio::test]
async fn when_every_connection_is_busy_the_new_one_is_refused() {
    let t = table(2);
    let a = admitted(t.admit(Instant::now()));
    let b = admitted(t.admit(Instant::now()));
    let (_ga, _gb) = (a.busy(), b.busy());
    assert!(matches!(t.admit(Instant::now()), Admission::Busy));
    assert!(!a.is_closing() && !b.is_closing());
    assert_eq!(t.open(), 2);
}

/// A client that sends one request and reads the whole reply (the server closes after it).
async fn ask(stream: &mut UnixStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn eof_within(stream: &mut UnixStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buf)).await,
        Ok(Ok(0))
    )
}

fn slow(
    delay: Duration,
) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send>>
       + Clone
       + Send
       + 'static {
    move |_req| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Response::new(Full::new(Bytes::from_static(b"done")))
        })
    }
}

#[tokio::test]
async fn idle_connections_close_and_a_long_request_is_not_idle() {
    let t = table(8);
    // nothing sent at all
    let (mut client, server) = UnixStream::pair().unwrap();
    let ticket = admitted(t.admit(Instant::now()));
    let task = tokio::spawn(serve(ticket, server, slow(Duration::ZERO)));
    assert!(eof_within(&mut client, Duration::from_secs(2)).await);
    task.await.unwrap();
    assert_eq!(t.open(), 0);

    // a request handled for longer than the idle timeout, on a keep-alive connection
    let (mut client, server) = UnixStream::pair().unwrap();
    let ticket = admitted(t.admit(Instant::now()));
    let task = tokio::spawn(serve(ticket, server, slow(Duration::from_millis(600))));
    let reply = ask(&mut client, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("done"),
        "{reply}"
    );
    // then idle again: closed
    let idle_from = std::time::Instant::now();
    assert!(eof_within(&mut client, Duration::from_secs(2)).await);
    assert!(idle_from.elapsed() >= Duration::from_millis(150));
    task.await.unwrap();
}

#[tokio::test]
async fn a_connection_told_to_give_way_closes_and_a_refused_one_reads_503() {
    let t = table(1);
    let (mut first, server) = UnixStream::pair().unwrap();
    let task = tokio::spawn(serve(
        admitted(t.admit(Instant::now())),
        server,
        slow(Duration::ZERO),
    ));
    let second = admitted(t.admit(Instant::now()));
    assert!(eof_within(&mut first, Duration::from_millis(100)).await);
    task.await.unwrap();

    let _busy = second.busy();
    let (mut client, server) = UnixStream::pair().unwrap();
    assert!(matches!(t.admit(Instant::now()), Admission::Busy));
    let refusing = tokio::spawn({
        let t = t.clone();
        async move { refuse(&t, server).await }
    });
    let reply = ask(&mut client, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 503") && reply.contains("all 1 connections here"),
        "{reply}"
    );
    refusing.await.unwrap();
}
