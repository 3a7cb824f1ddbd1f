//! Helpers shared by the end-to-end tests of `kong-gateway`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kong-gateway");

/// A spawned `kong-gateway`, killed (and reaped) when dropped, so a failing test leaves no
/// process behind.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory of this test's own under the system temp dir, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory of this test's own under the system temp dir.
pub fn temp_dir(name: &str) -> TempDir {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kong-gateway-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Writes `conf` as `dir/kong.conf` and runs `kong-gateway start -c` on it, output discarded.
pub fn spawn_gateway(dir: &std::path::Path, conf: &str) -> Spawned {
    let path = dir.join("kong.conf");
    std::fs::write(&path, conf).unwrap();
    Spawned(
        std::process::Command::new(BIN)
            .args(["start", "-c"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A port free right now: another process may take it before the gateway binds it, which
/// [`spawn_ready`] survives by starting again on other ports.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `kong-gateway` with the configuration `conf` makes for `N` fresh ports and waits
/// until `ready` sees the gateway answer. A gateway that exits first (a port was taken in the
/// meantime) is started again on other ports, up to 5 times.
pub fn spawn_ready<const N: usize>(
    dir: &std::path::Path,
    conf: impl Fn([u16; N]) -> String,
    ready: impl Fn([u16; N]) -> bool,
) -> (Spawned, [u16; N]) {
    for _ in 0..5 {
        let ports = [(); N].map(|_| free_port());
        let mut child = spawn_gateway(dir, &conf(ports));
        let up = wait_until("the gateway to answer or exit", || {
            if ready(ports) {
                return Some(true);
            }
            child.0.try_wait().ok().flatten().map(|_| false)
        });
        if up {
            return (child, ports);
        }
    }
    panic!("the gateway exited before answering, five times over");
}

/// Polls `f` every 20 ms until it yields a value; fails after 20 s.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` (a whole HTTP/1.1 message, `Connection: close`) to 127.0.0.1:`port` and
/// returns the whole answer.
pub fn exchange(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Runs `sql` with psql as postgres on 127.0.0.1; the error text when it fails.
pub fn psql(sql: &str) -> Result<(), String> {
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
