//! The README's examples run exactly as printed. A fenced block right after `<!-- example: GROUP -->` is a shell
//! command, run with bash; after `<!-- example: GROUP file=NAME -->` it is a file the next commands use; after
//! `<!-- output: GROUP -->` it is what the command before it must print (`…` stands for anything, and line
//! breaks are not compared, since `curl -s` ends its output without one). Each group runs in order in a directory
//! of its own against a fresh `crmchat serve --demo` whose data directory is `./crmchat-data` there, as for a
//! user who started the server in that directory. The one change made to the text: the README's ports (8080,
//! 8443) become the test server's, since tests run side by side. `crmchat` is on the commands' `PATH` (the
//! README assumes the install) and works on the test server's database.
//!
//! The SDK groups need the SDKs that `tests/sdk/setup.sh` installs, so like `sdk.rs` they are ignored by a plain
//! `cargo test` and run by `scripts/test`.

use std::path::Path;

use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use crate::helpers::*;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Groups whose examples other suites run: the test helpers' README snippets (`clients/test`).
const RUN_ELSEWHERE: &[&str] = &["clients-python", "clients-node"];
/// Groups this file runs.
const RUN_HERE: &[&str] = &["curl", "python-sdk", "js-sdk", "events"];
/// The banner `serve --demo` prints: an output with no command, compared by its own test.
const BANNER: &str = "serve-demo";

#[derive(Debug, Clone, PartialEq)]
enum Role {
    Command,
    File(String),
    Output,
}

#[derive(Debug, Clone)]
struct Block {
    group: String,
    role: Role,
    code: String,
    /// 1-based line of the marker, for messages.
    line: usize,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("reading README.md")
}

/// The marked blocks of a Markdown text, in order. A marker must be followed directly by a fenced block.
fn marked_blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let marker = lines[i].trim();
        let parsed = marker.strip_prefix("<!-- ").and_then(|m| m.strip_suffix(" -->")).and_then(|m| {
            let (kind, rest) = m.split_once(": ")?;
            let mut words = rest.split_whitespace();
            let group = words.next()?.to_string();
            let file = words.next().and_then(|w| w.strip_prefix("file=")).map(str::to_string);
            match (kind, file) {
                ("example", Some(file)) => Some((group, Role::File(file))),
                ("example", None) => Some((group, Role::Command)),
                ("output", None) => Some((group, Role::Output)),
                _ => None,
            }
        });
        let Some((group, role)) = parsed else {
            assert!(
                !marker.starts_with("<!-- example") && !marker.starts_with("<!-- output"),
                "line {}: {marker}",
                i + 1
            );
            i += 1;
            continue;
        };
        assert!(
            lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
            "README.md line {}: `{marker}` must be followed directly by a fenced block",
            i + 1
        );
        let end = (i + 2..lines.len()).find(|&j| lines[j].starts_with("```")).expect("an unclosed fenced block");
        let code = lines[i + 2..end].iter().map(|l| format!("{l}\n")).collect();
        blocks.push(Block { group, role, code, line: i + 1 });
        i = end + 1;
    }
    blocks
}

fn group(name: &str) -> Vec<Block> {
    let blocks: Vec<Block> = marked_blocks(&readme()).into_iter().filter(|b| b.group == name).collect();
    assert!(blocks.iter().any(|b| b.role == Role::Command), "README.md has no `<!-- example: {name} -->` command");
    blocks
}

/// Does `text` match `pattern`, where `…` matches any run of characters? Line breaks count in neither.
fn matches(pattern: &str, text: &str) -> bool {
    let flat = |s: &str| s.lines().map(str::trim_end).collect::<String>();
    let (pattern, text) = (flat(pattern), flat(text));
    let pieces: Vec<&str> = pattern.split('…').collect();
    if pieces.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Where a group's commands run: a directory holding the server's data directory as `crmchat-data`, plus
/// whatever `prepare` links into it (an SDK's installation).
struct Workspace {
    app: TestApp,
    dir: tempfile::TempDir,
    /// Holds `crmchat`, the binary under test, for the commands' `PATH`.
    bin: tempfile::TempDir,
}

impl Workspace {
    async fn new() -> Self {
        let app = spawn_app_flags(&["--demo"]).await;
        let dir = tempfile::Builder::new().prefix("crmchat-readme-").tempdir().unwrap();
        std::os::unix::fs::symlink(&app.data_dir, dir.path().join("crmchat-data")).unwrap();
        let bin = tempfile::Builder::new().prefix("crmchat-readme-bin-").tempdir().unwrap();
        std::os::unix::fs::symlink(crmchat_command().get_program(), bin.path().join("crmchat")).unwrap();
        Workspace { app, dir, bin }
    }

    fn link(&self, name: &str, target: &Path) {
        std::os::unix::fs::symlink(target, self.dir.path().join(name)).unwrap();
    }

    /// The README's text with its ports replaced by the test server's.
    fn localize(&self, text: &str) -> String {
        let port = |base: &str| base.rsplit(':').next().unwrap().to_string();
        let (http, https) = (port(&self.app.http_base), port(&self.app.https_base));
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
            .replace("localhost:8080", &format!("localhost:{http}"))
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{https}"))
            .replace("localhost:8443", &format!("localhost:{https}"))
    }

    async fn run(&self, blocks: &[Block]) {
        let mut last: Option<(usize, String)> = None;
        for block in blocks {
            let code = self.localize(&block.code);
            match &block.role {
                Role::File(name) => std::fs::write(self.dir.path().join(name), code).unwrap(),
                Role::Command => last = Some((block.line, self.command(block.line, &code).await)),
                Role::Output => {
                    let (line, printed) = last.take().unwrap_or_else(|| {
                        panic!("README.md line {}: an output block without a command before it", block.line)
                    });
                    assert!(
                        matches(&block.code, &printed),
                        "README.md line {line}: the command printed\n{printed}\nbut the README (line {}) shows\n{}",
                        block.line,
                        block.code
                    );
                }
            }
        }
    }

    async fn command(&self, line: usize, code: &str) -> String {
        let mut cmd = tokio::process::Command::new("bash");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin.path().to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        cmd.args(["-euo", "pipefail", "-c", code])
            .current_dir(self.dir.path())
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env("NO_PROXY", "localhost,127.0.0.1")
            .env("no_proxy", "localhost,127.0.0.1")
            .kill_on_drop(true);
        // `./crmchat-data` is the server's data directory; its database may be elsewhere (PostgreSQL).
        let storage = storage_args(&self.app.data_dir);
        if let Some(at) = storage.iter().position(|a| a == "--database") {
            cmd.env("CRMCHAT_DATABASE", &storage[at + 1]);
        }
        let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("README.md line {line}: no answer in {COMMAND_TIMEOUT:?}:\n{code}"))
            .expect("running bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README.md line {line} failed ({}):\n{code}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.app.log()
        );
        stdout
    }
}

#[test]
fn every_marked_example_has_a_runner() {
    let blocks = marked_blocks(&readme());
    for b in &blocks {
        assert!(
            RUN_HERE.contains(&b.group.as_str()) || RUN_ELSEWHERE.contains(&b.group.as_str()) || b.group == BANNER,
            "README.md line {}: group {:?} is run by nobody; add it to tests/api/readme.rs",
            b.line,
            b.group
        );
    }
    for name in RUN_HERE {
        assert!(blocks.iter().any(|b| b.group == *name && b.role == Role::Command), "no example of group {name}");
    }
}

#[test]
fn the_matcher_and_the_parser_do_what_they_say() {
    assert!(matches("{\"result\":8773,\"time\":{…}}", "{\"result\":8773,\"time\":{\"start\":1.5}}"));
    assert!(!matches("{\"result\":8773,\"time\":{…}}", "{\"result\":8774,\"time\":{\"start\":1.5}}"));
    assert!(matches("a\nb…\nc", "ab1c"));
    assert!(!matches("8773", "8773 and more"));
    let md = "x\n<!-- example: g file=a.py -->\n```python\nprint(1)\n```\n<!-- example: g -->\n```sh\npython3 a.py\n```\n\
              <!-- output: g -->\n```\n1\n```\n";
    let blocks = marked_blocks(md);
    let roles: Vec<Role> = blocks.iter().map(|b| b.role.clone()).collect();
    assert_eq!(roles, vec![Role::File("a.py".into()), Role::Command, Role::Output]);
    assert_eq!(blocks[1].code, "python3 a.py\n");
}

#[tokio::test]
async fn curl_examples_run_as_printed() {
    let work = Workspace::new().await;
    work.run(&group("curl")).await;
    // The examples' removal happened: 12 left chat 8773.
    assert_eq!(members(&work.app.export(), 8773), vec![14, 20, 30]);
}

/// The events example binds a handler with a token of the demo application, as `event.get` and the export
/// show.
#[tokio::test]
async fn events_examples_run_as_printed() {
    let work = Workspace::new().await;
    work.run(&group("events")).await;
    let export = work.app.export();
    let app = export["apps"].as_array().unwrap().iter().find(|a| a["client_id"] == "local.demo.app").unwrap();
    let bound: Vec<(&str, &str)> = app["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["event"].as_str().unwrap(), b["handler"].as_str().unwrap()))
        .collect();
    assert_eq!(bound, [("ONCRMCHATUSERDELETE", "http://127.0.0.1:8000/")]);
}

/// The README's install line pins the version the test suite installs.
fn assert_pinned(readme_line: &str) {
    assert!(readme().contains(readme_line), "README.md should say `{readme_line}`");
}

fn pinned(file: &str, prefix: &str, end: char) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let at = text.find(prefix).unwrap_or_else(|| panic!("{file} pins {prefix}")) + prefix.len();
    text[at..].split(end).next().unwrap().trim().to_string()
}

/// Both SDK groups need the SDKs `tests/sdk/setup.sh` installs; the README pins their versions.
fn sdk_workspace_links(work: &Workspace) {
    let version = pinned("tests/sdk/python/requirements.txt", "b24pysdk==", '\n');
    assert_pinned(&format!("pip install b24pysdk=={version}"));
    let version = pinned("tests/sdk/js/package.json", "\"@bitrix24/b24jssdk\": \"", '"');
    assert_pinned(&format!("npm install @bitrix24/b24jssdk@{version}"));
    crate::sdk::setup();
    work.link(".venv", &crate::sdk::sdk_dir().join("venv"));
    work.link("node_modules", &crate::sdk::sdk_dir().join("node/node_modules"));
}

/// A newcomer's walk through the README on one server, in the README's order: the curl examples, then the
/// Python SDK's removal, then the JavaScript SDK's. Each removes a different member, so every step answers as
/// printed on the server the steps before it changed.
#[tokio::test]
#[ignore = "needs python3, node >= 20, PyPI, npm and both SDKs; scripts/test runs it"]
async fn curl_then_sdk_examples_run_as_printed_on_one_server() {
    let work = Workspace::new().await;
    sdk_workspace_links(&work);
    work.run(&group("curl")).await;
    work.run(&group("python-sdk")).await;
    work.run(&group("js-sdk")).await;
    assert_eq!(members(&work.app.export(), 8773), vec![14]);
}

/// The banner block: what `serve --demo` prints, started as the README says (in an empty directory, so its
/// data directory is `./crmchat-data`), with its ports in place of 8080 and 8443. Then both `try:` lines run
/// as printed and answer the chat id.
#[tokio::test]
async fn the_demo_banner_is_printed_as_shown_and_its_curl_lines_work() {
    let banner = marked_blocks(&readme()).into_iter().find(|b| b.group == BANNER).expect("the README's banner");
    let dir = tempfile::Builder::new().prefix("crmchat-banner-").tempdir().unwrap();
    let mut cmd = tokio::process::Command::from(crmchat_command());
    cmd.args(["serve", "--demo", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut server = cmd.spawn().expect("starting crmchat serve --demo");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line == "ready";
            printed.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(COMMAND_TIMEOUT, read).await.expect("serve --demo prints `ready`");
    let printed = printed.join("\n");
    let port = |prefix: &str| {
        let line = printed.lines().find_map(|l| l.strip_prefix(prefix)).expect("the banner names its ports");
        line.rsplit(':').next().unwrap().to_string()
    };
    let (http, https) = (port("http: "), port("https: "));
    let expected = banner.code.replace(":8080", &format!(":{http}")).replace(":8443", &format!(":{https}"));
    assert!(matches(&expected, &printed), "serve --demo printed\n{printed}\nbut the README shows\n{}", banner.code);
    let tries: Vec<&str> =
        printed.lines().filter_map(|l| l.strip_prefix("try: ").or_else(|| l.strip_prefix("     "))).collect();
    assert_eq!(tries.len(), 2, "two curl lines to try:\n{printed}");
    for line in tries {
        let out = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", line])
            .current_dir(dir.path())
            .env("NO_PROXY", "localhost,127.0.0.1")
            .env("no_proxy", "localhost,127.0.0.1")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(matches("{\"result\":8773,…}", &stdout), "`{line}` printed {stdout}");
    }
    server.kill().await.unwrap();
}
