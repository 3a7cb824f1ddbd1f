//! The `kong-gateway` binary end to end: `start` with a declarative config and the in-process
//! mock upstream serves the quick start's route; `health`, `version` and `config parse` answer;
//! SIGTERM stops it cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{BIN, Spawned, exchange, spawn_ready, temp_dir, wait_until};

/// A raw HTTP/1.1 GET; returns the whole response text.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

struct Gateway {
    child: Spawned,
    proxy: u16,
    prefix: PathBuf,
}

fn start(dir: &Path, header: Option<&str>) -> Gateway {
    let plugin_config = header
        .map(|h| format!("\n    config:\n      response_header_name: {h}"))
        .unwrap_or_default();
    let prefix = dir.join("prefix");
    let conf = |[proxy, mock]: [u16; 2]| {
        std::fs::write(
            dir.join("kong.yml"),
            format!(
                "_format_version: \"3.0\"\nservices:\n- name: example_service\n  url: http://127.0.0.1:{mock}\n  routes:\n  - name: example_route\n    paths: [\"/mock\"]\n  plugins:\n  - name: my-plugin{plugin_config}\n"
            ),
        )
        .unwrap();
        format!(
            "proxy_listen = 127.0.0.1:{proxy}\nadmin_listen = off\ndatabase = off\ndeclarative_config = {}\nplugins = bundled,my-plugin\nmock_upstream = 127.0.0.1:{mock}\nprefix = {}\nnginx_worker_processes = 1\n",
            dir.join("kong.yml").display(),
            prefix.display()
        )
    };
    // Ready when the proxy answers as Kong does (a port another process owns would not).
    let ready =
        |[proxy, _]: [u16; 2]| http_get(proxy, "/").is_ok_and(|r| r.to_ascii_lowercase().contains("\r\nserver: kong/"));
    let (child, [proxy, _]) = spawn_ready(dir, conf, ready);
    Gateway { child, proxy, prefix }
}

#[test]
fn start_serves_the_quick_start_route_with_my_plugin() {
    let dir = temp_dir("quick-start");
    let mut gw = start(&dir, None);
    let res = http_get(gw.proxy, "/mock/anything").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let lower = res.to_ascii_lowercase();
    assert!(lower.contains("\r\nx-myplugin: response\r\n"), "{res}");
    assert!(lower.contains("\r\nvia: 1.1 kong/3.10.0\r\n"), "{res}");
    assert!(lower.contains("\r\nx-powered-by: mock_upstream\r\n"), "{res}");
    let res = http_get(gw.proxy, "/nothing-here").unwrap();
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
    assert!(res.contains("no Route matched with those values"));

    let health = Command::new(BIN)
        .args(["health", "-p"])
        .arg(&gw.prefix)
        .output()
        .unwrap();
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stdout).contains("Kong is healthy"));

    // SIGTERM: stop accepting, drain, exit 0, remove the pid file.
    let pid = gw.child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_until("the gateway to exit", || gw.child.0.try_wait().unwrap());
    assert!(status.success());
    let health = Command::new(BIN)
        .args(["health", "-p"])
        .arg(&gw.prefix)
        .output()
        .unwrap();
    assert!(!health.status.success());
}

#[test]
fn the_configured_header_name_is_used() {
    let dir = temp_dir("custom-header");
    let gw = start(&dir, Some("X-CustomHeaderName"));
    let res = http_get(gw.proxy, "/mock/anything").unwrap().to_ascii_lowercase();
    assert!(res.contains("\r\nx-customheadername: response\r\n"), "{res}");
    assert!(!res.contains("x-myplugin"));
}

/// `config parse <file> [-c <conf>]`, without `KONG_PLUGINS` from the environment.
fn config_parse(file: impl AsRef<Path>, conf: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "parse"])
        .arg(file.as_ref())
        .env_remove("KONG_PLUGINS");
    if let Some(conf) = conf {
        cmd.arg("-c").arg(conf);
    }
    cmd.output().unwrap()
}

#[test]
fn config_parse_and_version() {
    let dir = temp_dir("parse");
    std::fs::write(
        dir.join("good.yml"),
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n",
    )
    .unwrap();
    let out = config_parse(dir.join("good.yml"), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "parse successful\n");

    std::fs::write(
        dir.join("bad.yml"),
        "_format_version: \"3.0\"\nplugins:\n- name: my-plugin\n  config:\n    response_header_name: \"bad name\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("kong.conf"), "plugins = bundled,my-plugin\n").unwrap();
    let out = config_parse(dir.join("bad.yml"), Some(&dir.join("kong.conf")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad header name 'bad name'"), "{err}");

    // Checked as the Admin API checks entities: every problem at once, in Kong's words.
    std::fs::write(
        dir.join("invalid.yml"),
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n  - name: r\n    paths: [mock]\n    methodz: [GET]\n  - name: r2\n    paths: [/ok]\n    regex_priority: many\n  - name: r3\n    protocols: [http]\n  plugins:\n  - name: my-plugin\n    config:\n      response_header_name: \"bad name\"\nplugins:\n- name: nope\n",
    )
    .unwrap();
    let out = config_parse(dir.join("invalid.yml"), None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for problem in [
        r#""methodz":"unknown field""#,
        r#""paths":["should start with: / (fixed path) or ~/ (regex path)"]"#,
        r#""regex_priority":"expected an integer""#,
        // The Admin API's route entity checks too.
        r#""3":{"@entity":["must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"]}"#,
        // Plugins' problems with them, at their paths.
        r#""plugins":{"1":{"config":{"response_header_name":"bad header name 'bad name'"#,
        r#""plugins":{"1":{"name":"plugin 'nope' not enabled; add it to the 'plugins' configuration property"}}"#,
    ] {
        assert!(err.contains(problem), "{problem} missing from: {err}");
    }

    // Without a kong.conf every plugin the binary links is known: the shipped example, which
    // uses my-plugin, parses as the README shows it.
    let out = config_parse(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kong.yml"), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // With one, its `plugins` decide.
    std::fs::write(dir.join("bundled.conf"), "plugins = bundled\n").unwrap();
    let out = config_parse(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kong.yml"),
        Some(&dir.join("bundled.conf")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("my-plugin"), "{err}");

    std::fs::write(dir.join("noformat.yml"), "services: []\n").unwrap();
    let out = config_parse(dir.join("noformat.yml"), None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("_format_version"));

    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Kong 3.10.0 (kong-pdk 0.1.0)\n");
}

/// Kong's docs' `curl -F config=@kong.yml http://localhost:8001/config` against a DB-less
/// gateway: the multipart upload is the new configuration, served at once.
#[test]
fn post_config_takes_the_multipart_upload_kongs_docs_show() {
    let dir = temp_dir("post-config");
    let conf = |[proxy, mock, admin]: [u16; 3]| {
        std::fs::write(dir.join("kong.yml"), "_format_version: \"3.0\"\n").unwrap();
        format!(
            "proxy_listen = 127.0.0.1:{proxy}\nadmin_listen = 127.0.0.1:{admin}\ndatabase = off\ndeclarative_config = {}\nmock_upstream = 127.0.0.1:{mock}\nprefix = {}\nnginx_worker_processes = 1\n",
            dir.join("kong.yml").display(),
            dir.join("prefix").display()
        )
    };
    let ready = |[_, _, admin]: [u16; 3]| http_get(admin, "/status").is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
    let (_gateway, [proxy, mock, admin]) = spawn_ready(&dir, conf, ready);
    let yml = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:{mock}\n  routes:\n  - paths: [/uploaded]\n"
    );
    let body = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\nContent-Type: application/octet-stream\r\n\r\n{yml}\r\n--b0undary--\r\n"
    );
    let request = format!(
        "POST /config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let res = exchange(admin, &request).unwrap();
    assert!(res.starts_with("HTTP/1.1 201"), "{res}");
    let res = http_get(proxy, "/uploaded/anything").unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
}

#[test]
fn migrations_bootstrap_list_and_reset_the_embedded_store() {
    let dir = temp_dir("migrations");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("migrations")
            .args(args)
            .arg("-p")
            .arg(dir.join("prefix"))
            .env("KONG_DATABASE", "sqlite")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(
        run(&["list"]),
        (
            true,
            "pending  000_base\npending  001_cluster_version\npending  002_ratelimiting_metrics\npending  003_parameters\npending  004_unique_keys_by_id\n".to_owned()
        )
    );
    let (ok, out) = run(&["bootstrap"]);
    assert!(ok && out.contains("5 migrations processed"), "{out}");
    assert_eq!(run(&["up"]), (true, "Database is already up-to-date\n".to_owned()));
    assert_eq!(
        run(&["list"]),
        (
            true,
            "executed 000_base\nexecuted 001_cluster_version\nexecuted 002_ratelimiting_metrics\nexecuted 003_parameters\nexecuted 004_unique_keys_by_id\n".to_owned()
        )
    );
    assert!(!run(&["reset"]).0, "reset asks for --yes");
    assert_eq!(run(&["reset", "--yes"]), (true, "Database schema reset\n".to_owned()));
    assert_eq!(
        run(&["list"]).1,
        "pending  000_base\npending  001_cluster_version\npending  002_ratelimiting_metrics\npending  003_parameters\npending  004_unique_keys_by_id\n"
    );
}

/// CPU time (user + system) of process `pid` in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn out_of_descriptors_the_gateway_pauses_accepting_instead_of_spinning() {
    if cpu_ticks(std::process::id()).is_none() {
        eprintln!("skipping: /proc/<pid>/stat is not readable here, so CPU time cannot be measured");
        return;
    }
    let dir = temp_dir("emfile");
    let conf = |[proxy, mock]: [u16; 2]| {
        format!(
            "proxy_listen = 127.0.0.1:{proxy}\nadmin_listen = off\ndatabase = off\nmock_upstream = 127.0.0.1:{mock}\nprefix = {}\nnginx_worker_processes = 1\n",
            dir.join("prefix").display()
        )
    };
    // The gateway under a descriptor limit of 64 (a shell sets it, then becomes the gateway).
    let (proxy, mock) = (common::free_port(), common::free_port());
    std::fs::write(dir.join("kong.conf"), conf([proxy, mock])).unwrap();
    let child = Spawned(
        Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" start -c \"$1\""])
            .arg(BIN)
            .arg(dir.join("kong.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the proxy to answer", || {
        http_get(proxy, "/")
            .ok()
            .filter(|r| r.to_ascii_lowercase().contains("\r\nserver: kong/"))
    });
    // More silent connections than descriptors: the kernel completes them, accept() fails.
    let idle: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", proxy)).ok())
        .collect();
    assert!(idle.len() > 64, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.0.id();
    // The binary runs with mimalloc's lean arena setting (it sets it for itself).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "the gateway runs without MIMALLOC_ARENA_EAGER_COMMIT=0"
    );
    let before = cpu_ticks(pid).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid).unwrap() - before;
    // A spinning accept loop burns the whole 2 s (about 200 ticks); pausing costs a few.
    assert!(
        spent < 60,
        "the gateway used {spent} ticks of CPU in 2 s with no descriptor left"
    );
    drop(idle);
    let res = wait_until("the gateway to serve again", || http_get(proxy, "/nothing").ok());
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
}

#[test]
fn mock_upstream_serves_http_and_the_tcp_echo() {
    use std::io::{Read as _, Write as _};
    for _ in 0..5 {
        let (http, echo) = (common::free_port(), common::free_port());
        let mut child = Spawned(
            Command::new(BIN)
                .args(["mock-upstream", "--listen"])
                .arg(format!("127.0.0.1:{http}"))
                .arg("--stream-listen")
                .arg(format!("127.0.0.1:{echo}"))
                .args(["--stream-ssl-listen", "off"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let up = wait_until("the mock upstream to answer or exit", || {
            if http_get(http, "/get").is_ok() {
                return Some(true);
            }
            child.0.try_wait().ok().flatten().map(|_| false)
        });
        if !up {
            continue; // a port was taken meanwhile
        }
        let res = http_get(http, "/get").unwrap();
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", echo)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        tcp.write_all(b"ping over tcp").unwrap();
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        tcp.read_to_string(&mut back).unwrap();
        assert_eq!(back, "ping over tcp");
        return;
    }
    panic!("the mock upstream exited before answering, five times over");
}
