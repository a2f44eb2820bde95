//! Moving a portal between backends: `state export` from SQLite and `state load` into a fresh PostgreSQL
//! database reproduce the same portal, and both go on numbering new rows alike.

use crmchat::domain::{ChatId, CrmEntityType, RecordRef, UserId};
use crmchat::store::{self, Change, ChangeOutcome};
use serde_json::Value;

use crate::helpers::{PgDatabase, demo_fixture, run_cli};

fn export(url: &str) -> Value {
    let out = run_cli(&["state", "export", "--database", url]);
    assert!(out.status.success(), "state export from {url}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("state export prints JSON")
}

fn load(url: &str, file: &std::path::Path) {
    let out = run_cli(&["state", "load", &file.display().to_string(), "--database", url]);
    assert!(out.status.success(), "state load into {url}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The same new rows, on either backend: a webhook and a message; their ids.
async fn add_rows(url: &str) -> (i64, i64) {
    let store = store::open(url).await.unwrap();
    let webhook = store.add_webhook(14, &"b".repeat(64), &["im".to_string()], 1_795_000_000_000).await.unwrap();
    let message = Change::AddMessage {
        chat_id: ChatId(8773),
        author: UserId(14),
        text: "after the move".into(),
        record: RecordRef { entity_type: CrmEntityType::Deal, id: 288 },
        line_id: 1,
        connector_id: "livechat".into(),
        at_ms: 1_795_000_000_000,
        cause: Default::default(),
    };
    let ChangeOutcome::MessageAdded { id } = store.apply(message).await.unwrap() else { panic!("message refused") };
    (webhook, id)
}

#[tokio::test]
async fn a_portal_exported_from_sqlite_loads_into_postgres_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/crmchat.db", dir.path().display());
    let demo = dir.path().join("demo.json");
    std::fs::write(&demo, serde_json::to_vec(&demo_fixture()).unwrap()).unwrap();
    load(&sqlite, &demo);

    // Changes that leave traces the state file must carry: a member left (the author: 14 inherits), a message
    // and webhooks were added, one webhook revoked (the ids now have a gap).
    let source = store::open(&sqlite).await.unwrap();
    let removal = Change::RemoveMember {
        chat_id: ChatId(8773),
        user_id: UserId(12),
        record: RecordRef { entity_type: CrmEntityType::Deal, id: 288 },
        at_ms: 1_795_000_000_000,
        cause: Default::default(),
    };
    assert_eq!(
        source.apply(removal).await.unwrap(),
        ChangeOutcome::MemberRemoved { member_count: 3, author: Some(14) }
    );
    let message = Change::AddMessage {
        chat_id: ChatId(8773),
        author: UserId(30),
        text: "Still there?".into(),
        record: RecordRef { entity_type: CrmEntityType::Deal, id: 288 },
        line_id: 1,
        connector_id: "livechat".into(),
        at_ms: 1_795_000_000_000,
        cause: Default::default(),
    };
    assert_eq!(source.apply(message).await.unwrap(), ChangeOutcome::MessageAdded { id: 1003 });
    let first = source.add_webhook(12, &"a".repeat(64), &["im".to_string()], 1_795_000_000_000).await.unwrap();
    let second =
        source.add_webhook(15, &"c".repeat(64), &["imopenlines".to_string()], 1_795_000_000_000).await.unwrap();
    assert_eq!((first, second), (3, 4));
    assert!(source.revoke_webhook(first).await.unwrap());
    drop(source);

    let exported = export(&sqlite);
    let file = dir.path().join("export.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&exported).unwrap()).unwrap();
    let pg = PgDatabase::create("crmchat_test");
    load(&pg.url, &file);
    let moved = export(&pg.url);
    assert_eq!(moved, exported, "the portal after the move (left) is the one exported (right)");
    assert_eq!(crate::helpers::members(&moved, 8773), [14, 20, 30]);
    assert_eq!(crate::helpers::author(&moved, 8773), Some(14));

    // Explicit ids from the file moved PostgreSQL's numbering past them, as SQLite's is.
    assert_eq!(add_rows(&sqlite).await, (5, 1004));
    assert_eq!(add_rows(&pg.url).await, (5, 1004));
    assert_eq!(export(&pg.url), export(&sqlite));
}
