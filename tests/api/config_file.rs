//! `crmchat serve --config FILE` and `--print-config`, through the real binary: the file fills in what flags and
//! `CRMCHAT_*` variables leave unset, a bad file is refused before anything starts, secrets never show, and the
//! commented sample `crmchat.example.toml` names every setting.

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let out =
        crmchat_command().args(["serve"]).args(args).arg("--print-config").envs(env.iter().copied()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "--print-config failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test]
async fn the_file_fills_in_what_the_flags_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    // The harness's own flags (--http, --https, --data-dir) win over the file's.
    let config = write(
        dir.path(),
        "crmchat.toml",
        "demo = true\nplan = \"unlimited\"\nhttp = \"127.0.0.1:1\"\ndata-dir = \"/nonexistent/crmchat\"\n",
    );
    let app = spawn_app_flags(&["--config", &config]).await;
    assert_eq!(members(&app.export(), 8773), vec![12, 14, 20, 30], "demo = true loaded the demo");
    for _ in 0..120 {
        let resp = app.call("server.time", serde_json::json!({})).await;
        assert_eq!(resp.status, 200, "plan = \"unlimited\": {}", resp.text);
    }
}

#[test]
fn flags_and_variables_win_and_print_config_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "crmchat.toml",
        "plan = \"unlimited\"\nread_timeout = 9\nrequest_timeout = 5\ntrust_forwarded_for = true\n\
         control_token = \"file-secret-token-123\"\ndatabase = \"postgres://crmchat:pw-secret-42@db.example/crmchat\"\n",
    );
    let text = print_config(&["--config", &config, "--plan", "standard"], &[("CRMCHAT_READ_TIMEOUT", "7")]);
    for line in [
        "plan = \"standard\"  # --plan".to_string(),
        "read_timeout = 7  # CRMCHAT_READ_TIMEOUT".to_string(),
        format!("request_timeout = 5  # {config}"),
        format!("trust_forwarded_for = true  # {config}"),
        format!("control_token = \"<redacted>\"  # {config}"),
        "https = \"127.0.0.1:8443\"  # default".to_string(),
        "# fixture = (not set)".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
    }
    assert!(!text.contains("file-secret-token-123") && !text.contains("pw-secret-42"), "a secret shows:\n{text}");
    assert!(text.contains("db.example"), "the database is named, without its password:\n{text}");
    // A secret given as a flag or a variable is redacted just the same.
    let text = print_config(&["--control-token", "flag-secret-token-456"], &[]);
    assert!(text.contains("control_token = \"<redacted>\"  # --control-token") && !text.contains("456"), "{text}");
}

#[test]
fn a_bad_file_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    for (text, expected) in [
        ("htttp = \"127.0.0.1:9000\"\n", "unknown key `htttp`"),
        ("read_timeout = 0\n", "read-timeout"),
        ("demo = \"yes\"\n", "switch"),
        ("plan = [\n", "crmchat.toml"),
    ] {
        let config = write(dir.path(), "crmchat.toml", text);
        let started = std::time::Instant::now();
        let out = run_cli(&["serve", "--config", config.as_str(), "--data-dir", data, "--http", "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(expected), "{text:?}: the error should say {expected:?}:\n{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!data_dir.exists(), "{text:?}: the server started");
    }
}

#[test]
fn the_sample_file_names_every_setting_and_loads() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("crmchat.example.toml");
    let text = std::fs::read_to_string(&sample).expect("crmchat.example.toml is in the repository");
    // Every key commented out: the sample itself loads, and changes nothing.
    let printed = print_config(&["--config", sample.to_str().unwrap()], &[]);
    let settings: Vec<&str> = printed
        .lines()
        .filter(|l| !l.starts_with("# ") || l.ends_with("(not set)"))
        .filter_map(|l| l.trim_start_matches("# ").split(" = ").next())
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect();
    assert!(settings.len() >= 10, "settings found: {settings:?}\n{printed}");
    for key in settings {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {key} = ")) || l.starts_with(&format!("{key} = "))),
            "crmchat.example.toml does not show `{key}`"
        );
    }
    assert!(!printed.contains(&format!("# {}", sample.display())), "nothing came from the sample:\n{printed}");
}
