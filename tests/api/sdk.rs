//! The official SDKs as clients: b24pysdk 1.3.2 (Python) and @bitrix24/b24jssdk 2.2.0 (Node) call a fresh demo
//! server through the demo webhook over HTTPS, trusting its self-signed certificate the standard way
//! (`REQUESTS_CA_BUNDLE` / `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`). The scenarios are in `tests/sdk/python/run.py`
//! and `tests/sdk/js/run.mjs`; `tests/sdk/setup.sh` installs the SDKs into `target/sdk` on first use, which needs
//! python3, node >= 20, npm and network access to PyPI and the npm registry. Because of that they are ignored by a
//! plain `cargo test`; `scripts/test` runs them (`cargo test --test api -- --ignored sdk::`) unless
//! `CRMCHAT_SKIP_SDK_TESTS=1`, and then says on a line of its own that they were skipped. Run explicitly, they
//! fail when the SDKs cannot be installed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::helpers::*;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where `tests/sdk/setup.sh` installs the SDKs (it reads the same variable).
pub(crate) fn sdk_dir() -> PathBuf {
    std::env::var_os("CRMCHAT_SDK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk"))
}

/// Runs `tests/sdk/setup.sh` once per test process; both tests wait for it and share its outcome.
pub(crate) fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = SETUP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/setup.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .env("CRMCHAT_SDK_DIR", sdk_dir())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{} failed ({}):\n{text}", script.display(), out.status))
        }
    });
    if let Err(message) = outcome {
        panic!("{message}\n(scripts/test skips the SDK tests with CRMCHAT_SKIP_SDK_TESTS=1 when offline)");
    }
}

/// Runs one SDK script against a fresh demo server and asserts it passed all its `scenarios`.
async fn run_sdk_script(program: PathBuf, script: &str, scenarios: usize) {
    setup();
    let app = spawn_app().await;
    let port = app.https_base.rsplit(':').next().expect("https base has a port");
    let cert = &app.cert_path;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .env("CRMCHAT_HTTPS_BASE", format!("https://localhost:{port}"))
        .env("CRMCHAT_WEBHOOK_USER", "1")
        .env("CRMCHAT_WEBHOOK_CODE", DEMO_CODE)
        .env("CRMCHAT_SDK_NODE_DIR", sdk_dir().join("node"))
        .env("REQUESTS_CA_BUNDLE", cert)
        .env("SSL_CERT_FILE", cert)
        .env("NODE_EXTRA_CA_CERTS", cert)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}; server log:\n{}", app.log()))
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n--- stderr ---\n{}\n--- server log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        app.log()
    );
    assert_eq!(stdout.matches("PASS ").count(), scenarios, "{scenarios} scenarios passed:\n{stdout}");
}

#[tokio::test]
#[ignore = "needs python3, PyPI and b24pysdk; scripts/test runs it"]
async fn python_sdk_b24pysdk() {
    run_sdk_script(sdk_dir().join("venv/bin/python"), "tests/sdk/python/run.py", 4).await;
}

#[tokio::test]
#[ignore = "needs node >= 20, npm and @bitrix24/b24jssdk; scripts/test runs it"]
async fn js_sdk_b24jssdk() {
    run_sdk_script(PathBuf::from("node"), "tests/sdk/js/run.mjs", 5).await;
}
