//! The EC2 instance id from the instance metadata service, version 2 (a session token first).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

async fn call(
    authority: &str,
    method: hyper::Method,
    path: &str,
    header: (&str, &str),
) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(header.0, header.1)
        .body(Empty::<Bytes>::new())
        .expect("request parts are valid");
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    // an instance id or a token: a few dozen bytes
    let body = http_body_util::Limited::new(res.into_body(), 4096)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{path}: status {status}"))
    }
}

/// `endpoint` like `http://169.254.169.254`.
pub async fn instance_id(endpoint: &str, timeout: Duration) -> Result<String, String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("IMDS endpoint {endpoint:?} must start with http://"))?
        .trim_end_matches('/')
        .to_string();
    let authority = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:80")
    };
    let work = async {
        let token = call(
            &authority,
            hyper::Method::PUT,
            "/latest/api/token",
            ("x-aws-ec2-metadata-token-ttl-seconds", "300"),
        )
        .await?;
        call(
            &authority,
            hyper::Method::GET,
            "/latest/meta-data/instance-id",
            ("x-aws-ec2-metadata-token", &token),
        )
        .await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(id)) if !id.is_empty() => Ok(id),
        Ok(Ok(_)) => Err("IMDS returned an empty instance id".into()),
        Ok(Err(e)) => Err(format!("IMDS at {endpoint}: {e}")),
        Err(_) => Err(format!(
            "IMDS at {endpoint}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}
