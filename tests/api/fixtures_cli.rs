//! Portal state files through the command line (state-format.md): validation, YAML, upserts, export round trips.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

/// A data directory loaded with the demo portal through `state load`.
fn demo_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "demo.json", &demo_fixture().to_string());
    let out = load_file(dir.path(), &file);
    assert!(out.status.success(), "loading the demo: {}", stderr(&out));
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Loads `text` and expects a refusal mentioning every one of `needles`; nothing may change.
fn refused(dir: &Path, name: &str, text: &str, needles: &[&str]) {
    let before = export_dir(dir);
    let file = write(dir, name, text);
    let out = load_file(dir, &file);
    assert!(!out.status.success(), "{name} should be refused");
    let err = stderr(&out);
    for needle in needles {
        assert!(err.contains(needle), "stderr should mention {needle:?}:\n{err}");
    }
    assert_eq!(export_dir(dir), before, "a refused file changes nothing");
}

#[test]
fn invalid_reference_is_reported_with_its_path_and_changes_nothing() {
    let dir = demo_dir();
    let bad = json!({"chats": [{"id": 8773, "line": 1, "connector": "livechat", "author": 12, "members": [12, 99],
                                "sessions": []}]});
    refused(dir.path(), "bad.json", &bad.to_string(), &["chats[0].members[1]: user 99 does not exist"]);
    // Every problem is reported, not only the first.
    let bad = json!({
        "users": [{"id": 60, "kind": "robot"}],
        "crm": [{"type": "deal", "id": 500, "responsible": 98}],
        "chats": [{"id": 9100, "line": 7, "connector": "livechat", "members": [97]}]
    });
    refused(
        dir.path(),
        "many.json",
        &bad.to_string(),
        &["users[0].kind", "crm[0].responsible: user 98 does not exist", "chats[0].line", "chats[0].members[0]"],
    );
}

#[test]
fn a_valid_part_is_not_loaded_when_another_part_is_invalid() {
    let dir = demo_dir();
    let bad = json!({
        "users": [{"id": 14, "name": "Olga", "last_name": "Renamed"}, {"id": 61, "name": "New"}],
        "chats": [{"id": 8773, "line": 1, "connector": "livechat", "author": 12, "members": [12, 99]}]
    });
    refused(dir.path(), "partly.json", &bad.to_string(), &["chats[0].members[1]"]);
}

#[test]
fn unknown_keys_are_rejected() {
    let dir = demo_dir();
    refused(dir.path(), "typo.json", r#"{"users": [{"id": 14, "nmae": "Olga"}]}"#, &["users[0]", "nmae"]);
    refused(dir.path(), "top.json", r#"{"user": []}"#, &["user"]);
    refused(dir.path(), "portal.json", r#"{"portal": {"https": true}}"#, &["portal", "https"]);
    refused(dir.path(), "typo.yaml", "users:\n  - id: 14\n    nmae: Olga\n", &["users[0]", "nmae"]);
}

#[test]
fn syntax_errors_and_short_webhook_codes_are_refused() {
    let dir = demo_dir();
    refused(dir.path(), "broken.json", "{\"users\": [\n{\"id\": 1,}]}", &["line 2"]);
    refused(
        dir.path(),
        "hook.json",
        r#"{"webhooks": [{"user": 1, "code": "short", "scopes": ["im"]}]}"#,
        &["webhooks[0].code"],
    );
}

#[test]
fn yaml_files_are_accepted() {
    let dir = demo_dir();
    let yaml = "\
users:
  - {id: 14, name: Olga, last_name: Yaml}
  - id: 62
    name: Yuri
    kind: bot
chats:
  - id: 8775
    line: 1
    connector: livechat
    author: 14
    members: [14, 31, 62]
    sessions:
      - {id: 513, status: 20, modified: '2026-11-20T11:15:00Z', crm: [{type: lead, id: 101}]}
";
    let before = export_dir(dir.path());
    let out = load_file(dir.path(), &write(dir.path(), "more.yaml", yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = export_dir(dir.path());
    let user = |e: &Value, id: i64| e["users"].as_array().unwrap().iter().find(|u| u["id"] == id).cloned();
    assert_eq!(user(&after, 14).unwrap()["last_name"], "Yaml");
    assert_eq!(user(&after, 62).unwrap()["kind"], "bot");
    assert_eq!(members(&after, 8775), [14, 31, 62]);
    // The numeric status is exported by its name.
    assert_eq!(chat(&after, 8775)["sessions"][0]["status"], "client");
    assert_eq!(after["users"].as_array().unwrap().len(), before["users"].as_array().unwrap().len() + 1);
    // `.yml` too.
    let out = load_file(dir.path(), &write(dir.path(), "one.yml", "users: [{id: 63, name: Yml}]\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(user(&export_dir(dir.path()), 63).is_some());
}

#[test]
fn loads_are_upserts() {
    let dir = demo_dir();
    let before = export_dir(dir.path());
    let out = load_file(
        dir.path(),
        &write(dir.path(), "one.json", r#"{"users": [{"id": 14, "name": "Olga", "last_name": "Renamed"}]}"#),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = export_dir(dir.path());
    let mut expected = before.clone();
    for user in expected["users"].as_array_mut().unwrap() {
        if user["id"] == 14 {
            user["last_name"] = json!("Renamed");
        }
    }
    // Everything else, the portal settings included, stays.
    assert_eq!(after, expected);
}

#[test]
fn export_then_load_reproduces_the_state() {
    let dir = demo_dir();
    let first = export_dir(dir.path());
    // Through --output, into the same directory and into a fresh one.
    let file = dir.path().join("export.json");
    let mut args = vec!["state".to_string(), "export".into(), "--output".into(), file.display().to_string()];
    args.extend(storage_args(dir.path()));
    let out = run_cli(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "with --output nothing goes to standard output");
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written, first);
    let out = load_file(dir.path(), &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(export_dir(dir.path()), first);
    let fresh = tempfile::tempdir().unwrap();
    let out = load_file(fresh.path(), &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(export_dir(fresh.path()), first);
    // Credentials are hashes in the export and work after loading it.
    assert!(first["webhooks"][0].get("code").is_none());
    assert!(first["webhooks"][0]["code_sha256"].is_string());
}

#[tokio::test]
async fn export_of_a_changed_portal_loads_into_a_fresh_server() {
    let app = spawn_app().await;
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    assert_removed(&app.delete(params.clone()).await, 8773);
    let export = app.export();
    // The exported webhook (a hash only) still opens the portal it is loaded into.
    let copy = spawn_app_with(export.clone()).await;
    assert_eq!(copy.export(), export);
    assert_error(&copy.delete(params).await, 400, "USER_NOT_FOUND", "The specified user is not in chat.");
}

#[test]
fn serve_refuses_an_invalid_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let bad = json!({"users": [{"id": 1}], "chats": [{"id": 1, "line": 1, "connector": "livechat", "members": [1, 99]}],
                     "lines": [{"id": 1, "connectors": [{"id": "livechat"}]}]});
    let file = write(dir.path(), "bad.json", &bad.to_string());
    let mut cmd = crmchat_command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--fixture"]).arg(&file);
    cmd.args(storage_args(dir.path()));
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve kept running with an invalid fixture");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chats[0].members[1]: user 99 does not exist"), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}
