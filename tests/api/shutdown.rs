//! SIGINT/SIGTERM: the server stops accepting, finishes the requests in flight, and exits 0.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn sigterm_finishes_the_call_in_flight_and_exits_zero() {
    let mut app = spawn_app().await;
    let body = r#"{"CRM_ENTITY_TYPE":"deal","CRM_ENTITY":288,"USER_ID":20}"#;
    let path = format!("{DEMO_HOOK}imopenlines.crm.chat.user.delete.json");
    // A call whose body is only half sent when the signal arrives.
    let mut stream = tokio::net::TcpStream::connect(app.http_addr()).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = tokio::task::spawn_blocking(move || {
        let status = app.signal_and_wait("TERM", Duration::from_secs(20));
        (app, status)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "the call in flight is answered: {answer}");
    assert!(answer.contains(r#""result":8773"#), "{answer}");

    let (app, status) = signalled.await.unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    // The answered removal is on disk; new connections are refused.
    assert!(!members(&app.export(), 8773).contains(&20));
    assert!(tokio::net::TcpStream::connect(app.http_addr()).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut app = spawn_app().await;
    let status =
        tokio::task::spawn_blocking(move || app.signal_and_wait("INT", Duration::from_secs(20))).await.unwrap();
    assert_eq!(status.code(), Some(0));
}
