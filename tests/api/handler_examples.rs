//! The event handlers of `examples/handlers/` receive real deliveries: each is started the way its comment and
//! `docs/events.md` say, bound with `event.bind` and an OAuth token of the demo application, and a removal must
//! make it print the event's line. A forged request (another application token) is refused, and the 200 it
//! answers is taken as a delivery (no retry follows).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{OAuthClient, TestApp, assert_success, spawn_app};

/// What the handler prints for the removal of user 12 from chat 8773 (deal 288), three members left.
const REMOVAL_LINE: &str = r#"ONCRMCHATUSERDELETE {"CHAT_ID":"8773","USER_ID":"12","CRM_ENTITY_TYPE":"DEAL","CRM_ENTITY":"288","USER_COUNT":"3"}"#;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/handlers")
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running example handler: its standard output, line by line.
struct Handler {
    url: String,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Handler {
    /// Starts `cmd` in `examples/handlers/` with the demo application's token, and waits until `port` accepts
    /// connections.
    async fn start(mut cmd: Command, port: u16) -> Handler {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        cmd.current_dir(examples_dir())
            .env("APPLICATION_TOKEN", "demo-app-token")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "the handler {cmd:?} does not listen on {port} ({exited:?}):\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Handler { url: format!("http://127.0.0.1:{port}/"), lines, stderr, _child: child, _dir: dir }
    }

    /// The next line it prints, if one comes within `wait`.
    async fn next_line(&mut self, wait: Duration) -> Option<String> {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(line) => line.unwrap(),
            Err(_) => None,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The walk of `docs/events.md` against `handler`: a forged request is refused, the handler is bound to
/// removals with a token of the demo application, a removal arrives as one printed line, and only once.
async fn receives_a_removal(mut handler: Handler) {
    let app = spawn_app().await;
    let forged = app
        .client
        .post(&handler.url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("event=ONCRMCHATUSERDELETE&data%5BCHAT_ID%5D=1&auth%5Bapplication_token%5D=someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403, "a request without the application's token is refused");

    let client = OAuthClient {
        client_id: "local.demo.app".into(),
        secret: "demo-secret".into(),
        application_token: "demo-app-token".into(),
    };
    let token = app.issue_tokens(&client, 1).await["access_token"].as_str().unwrap().to_string();
    let bound =
        app.call_bearer(&token, "event.bind", json!({"event": "ONCRMCHATUSERDELETE", "handler": handler.url})).await;
    assert_success(&bound, json!(true));
    remove_operator(&app).await;

    let line = handler.next_line(Duration::from_secs(20)).await;
    assert_eq!(line.as_deref(), Some(REMOVAL_LINE), "stderr:\n{}\nserver log:\n{}", handler.stderr(), app.log());
    // A retry would come about a second later: the handler's 200 was a delivery.
    let again = handler.next_line(Duration::from_millis(2500)).await;
    assert_eq!(again, None, "delivered once");
}

async fn remove_operator(app: &TestApp) {
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_success(&resp, json!(8773));
}

#[tokio::test]
#[ignore = "needs python3; scripts/test runs it"]
async fn handler_examples_python_prints_a_removal() {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.arg("handler.py").arg(port.to_string());
    receives_a_removal(Handler::start(cmd, port).await).await;
}

#[tokio::test]
#[ignore = "needs php-cli (apt-get install php-cli); scripts/test runs it"]
async fn handler_examples_php_prints_a_removal() {
    let port = free_port();
    let mut cmd = Command::new("php");
    cmd.arg("-S").arg(format!("127.0.0.1:{port}")).arg("handler.php");
    receives_a_removal(Handler::start(cmd, port).await).await;
}
