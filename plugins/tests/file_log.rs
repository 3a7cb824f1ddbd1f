//! file-log (Kong's `spec/03-plugins/04-file-log`): lines of the log serializer, reopening for
//! rotation, open failures in the log, and the config's rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers;
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::file_log::FileLog;
use serde_json::{Value, json};

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

/// A directory of this test's own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!("file-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn gateway(config: Value) -> TestGateway {
    Harness::new().route_plugin::<FileLog>(config).start().await.unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    helpers::wait_until("the log lines", Duration::from_secs(10), || async {
        lines(path).len() >= n
    })
    .await;
    lines(path)
}

#[tokio::test]
async fn each_request_is_a_json_line() {
    assert_eq!((FileLog::NAME, FileLog::PRIORITY), ("file-log", 9));
    let dir = Dir::new();
    let path = dir.0.join("access.log");
    let gw = gateway(json!({ "path": path })).await;
    gw.send(TestRequest::get("/first").header("X-Id", "1"), ok).await;
    gw.send(TestRequest::get("/second").header("X-Id", "2"), ok).await;
    let logged = wait_lines(&path, 2).await;
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0]["request"]["headers"]["x-id"], "1");
    assert_eq!(logged[1]["request"]["uri"], "/second");
    assert_eq!(logged[1]["response"]["status"], 200);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
}

#[tokio::test]
async fn reopen_follows_a_rotation_and_without_it_the_moved_file_grows() {
    for reopen in [true, false] {
        let dir = Dir::new();
        let path = dir.0.join("access.log");
        let moved = dir.0.join("access.log.1");
        let gw = gateway(json!({ "path": path, "reopen": reopen })).await;
        gw.send(TestRequest::get("/"), ok).await;
        wait_lines(&path, 1).await;
        std::fs::rename(&path, &moved).unwrap();
        gw.send(TestRequest::get("/after"), ok).await;
        if reopen {
            let logged = wait_lines(&path, 1).await;
            assert_eq!(logged[0]["request"]["uri"], "/after");
            assert_eq!(lines(&moved).len(), 1);
        } else {
            let logged = wait_lines(&moved, 2).await;
            assert_eq!(logged[1]["request"]["uri"], "/after");
            assert!(!path.exists(), "not recreated without reopen");
        }
    }
}

#[tokio::test]
async fn stream_sessions_are_logged_once_with_kongs_stream_shape() {
    use kong_pdk::executor::PluginEntity;
    use kong_pdk::testing::TestSession;
    let dir = Dir::new();
    let path = dir.0.join("stream.log");
    // Kong's default protocols are the HTTP ones: an instance logs streams when it says so.
    let entity = PluginEntity::new("file-log", json!({ "path": path })).protocols(&["tcp", "tls"]);
    let gw = Harness::new().plugin_entity::<FileLog>(entity).start().await.unwrap();
    let done = gw
        .stream(TestSession::new("ping"), |got| [b"pong:", got].concat())
        .await;
    assert_eq!((done.status, done.to_client.as_ref()), (200, &b"pong:ping"[..]));
    let logged = wait_lines(&path, 1).await;
    assert_eq!(logged.len(), 1, "one line per session");
    let line = &logged[0];
    assert_eq!(line["session"]["received"], 4);
    assert_eq!(line["session"]["sent"], 9);
    assert_eq!(line["session"]["status"], 200);
    assert_eq!(line["upstream"]["sent"], 4);
    assert_eq!(line["upstream"]["received"], 9);
    assert!(
        line.get("request").is_none() && line.get("response").is_none(),
        "{line}"
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_logged_and_the_request_is_served() {
    let dir = Dir::new();
    let path = dir.0.join("missing-dir").join("access.log");
    let gw = gateway(json!({ "path": path })).await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.logged("failed to open the file: No such file or directory"),
        "{:?}",
        res.logs()
    );
    assert!(!path.exists());
}

#[tokio::test]
async fn config_rules() {
    let schema = FileLog::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    assert_eq!(
        fields(json!({ "path": "/tmp/a*b" }))["config"]["path"],
        "not a valid filename"
    );
    assert_eq!(fields(json!({}))["config"]["path"], "required field missing");
    let f = fields(json!({ "path": "/tmp/x.log", "custom_fields_by_lua": { "a": "return 1" } }));
    assert!(
        f["config"]["custom_fields_by_lua"]
            .as_str()
            .unwrap()
            .starts_with("custom_fields_by_lua is not supported"),
        "{f:?}"
    );
    let ok = schema.validate_config(json!({ "path": "/tmp/x.log" })).unwrap();
    assert_eq!(ok["reopen"], false);
}
