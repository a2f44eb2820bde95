//! Parallel removals of the same member: exactly one succeeds.

use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_identical_removals_succeed_once() {
    let app = spawn_app().await;
    let before = app.export();
    let url = app.url(&app.method_path(METHOD));
    let mut calls = JoinSet::new();
    for _ in 0..10 {
        // A client each, so that every call has its own connection.
        let client = reqwest::Client::new();
        let url = url.clone();
        calls.spawn(async move {
            let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
            let response = client.post(url).json(&params).send().await.expect("sending");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("a JSON answer");
            (status, body)
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = calls.join_next().await {
        answers.push(answer.unwrap());
    }
    let ok: Vec<_> = answers.iter().filter(|(status, _)| *status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one success: {answers:?}");
    assert_eq!(ok[0].1["result"], 8773);
    let not_member = json!({"error": "USER_NOT_FOUND", "error_description": "The specified user is not in chat."});
    let failed: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).collect();
    assert_eq!(failed.len(), 9);
    assert!(failed.iter().all(|(status, body)| *status == 400 && *body == not_member), "{answers:?}");
    // Removed once: the rest of the chat is as after a single removal.
    let after = app.export();
    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        if chat["id"] == 8773 {
            chat["members"] = json!([14, 20, 30]);
            chat["author"] = json!(14);
        }
    }
    assert_eq!(after, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_removals_of_different_members_all_succeed() {
    let app = spawn_app().await;
    let url = app.url(&app.method_path(METHOD));
    let mut calls = JoinSet::new();
    for user in [12, 14, 20, 30] {
        let client = reqwest::Client::new();
        let url = url.clone();
        calls.spawn(async move {
            let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user});
            let response = client.post(url).json(&params).send().await.expect("sending");
            (response.status().as_u16(), response.text().await.unwrap())
        });
    }
    while let Some(answer) = calls.join_next().await {
        let (status, text) = answer.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let export = app.export();
    assert_eq!(members(&export, 8773), Vec::<i64>::new());
    // Whoever left last, the author is one of the former members.
    assert!(matches!(author(&export, 8773), Some(12 | 14)), "{:?}", author(&export, 8773));
}
