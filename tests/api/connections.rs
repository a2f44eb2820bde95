//! Running out of file descriptors (issue 18): under `ulimit -n 256`, idle connections far past the limit
//! must not stop the server from answering a REST call, and reaching the connection limit is logged, not
//! silent. Before `--max-connections`, the server took descriptors until `accept` failed with EMFILE, which
//! was retried without a word, and a new client waited in the listen queue until idle ones timed out.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{ULIMIT_NOFILE, demo_fixture, spawn_app_with_env};

/// Keep-alive connections left idle after a request, as a pool of HTTP clients leaves them: each sends a
/// request (its answer is left unread) and then nothing. Opened together, each given 3 s to connect.
async fn open_idle(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = addr.to_string();
        opening.spawn(async move {
            let mut stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await.ok()?.ok()?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: crmchat\r\n\r\n").await.ok()?;
            Some(stream)
        });
    }
    opening.join_all().await.into_iter().flatten().collect()
}

#[tokio::test]
async fn idle_connections_past_the_descriptor_limit_do_not_stop_rest_calls() {
    let app = spawn_app_with_env(demo_fixture(), &[(ULIMIT_NOFILE, "256")]).await;
    let addr = app.http_base.trim_start_matches("http://").to_string();
    let idle = open_idle(&addr, 1500).await;
    assert!(idle.len() > 300, "the test opened its idle connections ({})", idle.len());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", app.pid())).map(|d| d.count()).unwrap_or(0);
    assert!(fds < 256, "the server keeps descriptors free ({fds} of 256 in use)");
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let resp = client
        .post(app.url(&app.method_path("imopenlines.crm.chat.getLastId")))
        .json(&serde_json::json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288}))
        .send()
        .await
        .expect("a REST call is answered while over a thousand idle connections were opened");
    assert_eq!(resp.status().as_u16(), 200, "answer: {:?}", resp.text().await);
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    let log = app.log();
    assert!(log.contains("connection limit reached"), "reaching the connection limit is logged:\n{log}");
    let lines = log.lines().filter(|l| l.contains("connection limit reached")).count();
    assert!(lines <= 4, "the line is rate-limited ({lines} lines):\n{log}");
    drop(idle);
}
