//! The XML answer format (protocol.md, URLs): a final `.xml` gives `text/xml; charset=utf-8`, a `<response>`
//! document, list items as `<item>`; errors come as XML too.

use serde_json::{Value, json};

use crate::helpers::*;

const DECLARATION: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

/// The document without its (optional) XML declaration, with the optional escapes (`&apos;`, `&quot;`, `&gt;`)
/// of text content written out, so that documents compare as text.
fn doc(resp: &Resp) -> String {
    assert_xml_headers(resp);
    let text = resp.text.trim_start();
    let text = text.strip_prefix(DECLARATION).unwrap_or(text).trim();
    assert!(text.starts_with("<response>") && text.ends_with("</response>"), "a <response> document: {}", resp.text);
    text.replace("&apos;", "'").replace("&#39;", "'").replace("&quot;", "\"").replace("&gt;", ">")
}

/// The part of a success document before `<time>`, and checks the `time` element's fields.
fn before_time(resp: &Resp) -> String {
    assert_eq!(resp.status, 200, "{}", resp.text);
    let doc = doc(resp);
    let (head, time) = doc.split_once("<time>").unwrap_or_else(|| panic!("a <time> element: {doc}"));
    assert!(time.ends_with("</time></response>"), "{doc}");
    for field in
        ["start", "finish", "duration", "processing", "date_start", "date_finish", "operating", "operating_reset_at"]
    {
        assert!(time.contains(&format!("<{field}>")), "time.{field}: {doc}");
    }
    assert!(!doc.contains("<total>") && !doc.contains("<next>"), "no total/next: {doc}");
    head.to_string()
}

fn xml_path(method: &str) -> String {
    format!("{DEMO_HOOK}{method}.xml")
}

async fn post_xml(app: &TestApp, method: &str, params: Value) -> Resp {
    app.post_raw(&xml_path(method), Some("application/json"), params.to_string().into_bytes()).await
}

#[tokio::test]
async fn scalar_results() {
    let app = spawn_app().await;
    let resp =
        post_xml(&app, "imopenlines.crm.chat.getLastId", json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288})).await;
    assert_eq!(before_time(&resp), "<response><result>8773</result>");
    let resp =
        app.get(&format!("{DEMO_HOOK}IMOPENLINES.CRM.CHAT.GETLASTID.XML?CRM_ENTITY_TYPE=lead&CRM_ENTITY=101")).await;
    assert_eq!(before_time(&resp), "<response><result>8775</result>");
    let resp = app
        .post_form(&xml_path("imopenlines.crm.chat.user.add"), "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=14")
        .await;
    assert_eq!(before_time(&resp), "<response><result>8773</result>");
    let resp = app.get(&xml_path("server.time")).await;
    let head = before_time(&resp);
    let date = head.strip_prefix("<response><result>").and_then(|r| r.strip_suffix("</result>")).unwrap();
    assert!(is_php_date(date), "{head}");
}

#[tokio::test]
async fn lists_are_items() {
    let fixture = demo_with(|f| {
        f["lines"][0]["connectors"][0]["title"] = json!("Chat & <Co>");
    });
    let app = spawn_app_with(fixture).await;
    let resp = post_xml(&app, "im.chat.user.list", json!({"CHAT_ID": 8773})).await;
    assert_eq!(
        before_time(&resp),
        "<response><result><item>12</item><item>14</item><item>20</item><item>30</item></result>"
    );
    let resp = post_xml(
        &app,
        "imopenlines.crm.chat.get",
        json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "ACTIVE_ONLY": "N"}),
    )
    .await;
    assert_eq!(
        before_time(&resp),
        "<response><result>\
         <item><CHAT_ID>8773</CHAT_ID><CONNECTOR_ID>livechat</CONNECTOR_ID><CONNECTOR_TITLE>Chat &amp; &lt;Co></CONNECTOR_TITLE></item>\
         <item><CHAT_ID>8774</CHAT_ID><CONNECTOR_ID>livechat</CONNECTOR_ID><CONNECTOR_TITLE>Chat &amp; &lt;Co></CONNECTOR_TITLE></item>\
         </result>"
    );
    // An empty list.
    let resp = post_xml(&app, "imopenlines.crm.chat.get", json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3})).await;
    let head = before_time(&resp);
    assert!(head == "<response><result></result>" || head == "<response><result/>", "{head}");
}

#[tokio::test]
async fn batch_in_xml() {
    let app = spawn_app().await;
    let cmd = json!({"cmd": {"a": "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
                             "b": "im.chat.user.list?CHAT_ID=8775",
                             "c": "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=company&CRM_ENTITY=3"}});
    let resp = post_xml(&app, "batch", cmd).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let doc = doc(&resp);
    assert!(
        doc.starts_with("<response><result><result><a>8773</a><b><item>14</item><item>31</item></b></result>"),
        "{doc}"
    );
    assert!(
        doc.contains("<result_error><c><error>CRM_CHAT_EMPTY_CRM_DATA</error><error_description>Could not find CRM entity</error_description></c></result_error>"),
        "{doc}"
    );
    assert!(doc.contains("<result_time><a><start>"), "{doc}");
    assert!(doc.ends_with("</time></response>"), "{doc}");
}

#[tokio::test]
async fn errors_in_xml() {
    let fixture = demo_with(|f| {
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook_with_scopes(f, 1, "imonlywebhookcode1", &["im"]);
    });
    let app = spawn_app_with(fixture).await;
    let cases: Vec<(Resp, u16, &str)> = vec![
        (
            post_xml(&app, "imopenlines.crm.chat.user.add", json!({"CRM_ENTITY": 288})).await,
            400,
            "<response><error>ERROR_ARGUMENT</error><error_description>Argument 'CRM_ENTITY_TYPE' is null or empty\
             </error_description><argument>CRM_ENTITY_TYPE</argument></response>",
        ),
        (
            post_xml(&app, "imopenlines.crm.chat.getlastid", json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc"}))
                .await,
            400,
            "<response><error>ERROR_ARGUMENT</error><error_description>The value of an argument 'CRM_ENTITY' has an \
             invalid type</error_description><argument>CRM_ENTITY</argument></response>",
        ),
        (
            app.post_form(
                "/rest/15/ninawebhookcode15/imopenlines.crm.chat.user.add.xml",
                "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=14",
            )
            .await,
            403,
            "<response><error>ACCESS_DENIED</error><error_description>Access denied! You don't have access to join \
             user to chat</error_description></response>",
        ),
        (
            post_xml(&app, "im.chat.user.list", json!({"CHAT_ID": 999999})).await,
            400,
            "<response><error>CHAT_NOT_FOUND</error><error_description>Chat not found</error_description></response>",
        ),
        (
            app.get("/rest/1/imonlywebhookcode1/imopenlines.crm.chat.get.xml?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288")
                .await,
            401,
            "<response><error>insufficient_scope</error><error_description>The request requires higher privileges \
             than provided by the webhook token</error_description></response>",
        ),
        (
            app.get(&xml_path("no.such.method")).await,
            404,
            "<response><error>ERROR_METHOD_NOT_FOUND</error><error_description>Method not found!</error_description>\
             </response>",
        ),
    ];
    for (resp, status, expected) in cases {
        assert_eq!(resp.status, status, "{}", resp.text);
        assert_eq!(doc(&resp), expected);
    }
}
