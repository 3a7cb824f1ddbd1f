//! `file-log` (Kong's `kong/plugins/file-log`): each request's log serializer output, one JSON
//! object per line, appended to a file. The log phase hands the line to a writer thread of
//! the file's own (a bounded queue: a stalled disk drops lines, counted, rather than holding
//! requests); with `reopen` the file is opened again for every line, for log rotation.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use kong_pdk::prelude::*;
use serde_json::Value;

/// The plugin's configuration (Kong's `file-log/schema.lua`).
#[plugin(priority = 9, version = "3.10.0", name = "file-log")]
pub struct FileLog {
    /// The file lines are appended to.
    #[field(required)]
    pub path: LogPath,
    /// Open the file again for every line (after a rotation moved it).
    #[field(required, default = false)]
    pub reopen: bool,
    /// Kong's Lua expressions for extra fields: not supported (there is no Lua here).
    pub custom_fields_by_lua: Option<NoLua>,
}

/// A file name as Kong allows it: at least two characters, none of `*&%\` and the backtick,
/// no whitespace at either end.
#[derive(Debug, Clone)]
pub struct LogPath(pub String);

fn valid_path(p: &str) -> bool {
    let bad = |c: char| "*&%\\`".contains(c);
    p.chars().count() >= 2
        && !p.chars().any(bad)
        && !p.starts_with(char::is_whitespace)
        && !p.ends_with(char::is_whitespace)
}

impl<'de> serde::Deserialize<'de> for LogPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(LogPath)
    }
}

impl kong_pdk::schema::ConfigType for LogPath {
    fn field_schema() -> kong_pdk::schema::FieldSchema {
        kong_pdk::schema::FieldSchema::checked_string(|v| {
            if valid_path(v.as_str().unwrap_or_default()) {
                Ok(())
            } else {
                Err("not a valid filename".into())
            }
        })
    }
}

/// `custom_fields_by_lua`: refused unless empty.
#[derive(Debug, Clone)]
pub struct NoLua;

impl<'de> serde::Deserialize<'de> for NoLua {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|_| NoLua)
    }
}

/// The message refusing Lua.
pub(crate) const NO_LUA: &str = "custom_fields_by_lua is not supported: plugins here are compiled, there is no Lua to run; set fields from a plugin with kong.log().set_serialize_value";

impl kong_pdk::schema::ConfigType for NoLua {
    fn field_schema() -> kong_pdk::schema::FieldSchema {
        let mut f = kong_pdk::schema::FieldSchema::checked_string(|v| match v {
            Value::Object(m) if m.is_empty() => Ok(()),
            _ => Err(NO_LUA.into()),
        });
        f.kind = kong_pdk::schema::FieldKind::Map {
            keys: Box::new(kong_pdk::schema::FieldSchema::of(kong_pdk::schema::FieldKind::String)),
            values: Box::new(kong_pdk::schema::FieldSchema::of(kong_pdk::schema::FieldKind::String)),
        };
        f
    }
}

/// Lines waiting for a file's writer at most.
const QUEUE: usize = 10_000;
/// Files written at most by one node.
const MAX_FILES: usize = 256;

/// One file's writer thread.
struct Writer {
    lines: SyncSender<(Vec<u8>, bool)>,
    dropped: Arc<AtomicU64>,
}

/// The node's file writers, by path.
#[derive(Default)]
pub struct Files {
    writers: Mutex<HashMap<String, Writer>>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Files")
    }
}

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o644).open(path)
}

/// The writer thread: appends lines, opening the file again when a line asks.
fn write_lines(path: String, mut file: Option<File>, lines: std::sync::mpsc::Receiver<(Vec<u8>, bool)>) {
    while let Ok((line, reopen)) = lines.recv() {
        if reopen || file.is_none() {
            file = match open(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(target: "kong", "[file-log] failed to open the file: {e}");
                    None
                }
            };
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::error!(target: "kong", "[file-log] failed to write to {path}: {e}");
            file = None;
        }
    }
}

#[handler]
impl Handler for FileLog {
    type State = Files;

    async fn log(&self, kong: &mut Kong<Log, Files>) -> kong_pdk::Result {
        let mut line = serde_json::to_vec(&kong.log().serialize()).map_err(kong_pdk::Error::from)?;
        line.push(b'\n');
        let path = &self.path.0;
        let mut writers = kong.state().writers.lock().unwrap_or_else(|e| e.into_inner());
        if !writers.contains_key(path) {
            if writers.len() >= MAX_FILES {
                drop(writers);
                kong.log()
                    .err(format!("too many log files open, not writing to {path}"));
                return Ok(());
            }
            // The first open happens here, so that a failure shows in this request's log.
            let file = match open(path) {
                Ok(f) => f,
                Err(e) => {
                    drop(writers);
                    kong.log().err(format!("failed to open the file: {e}"));
                    return Ok(());
                }
            };
            let (tx, rx) = sync_channel(QUEUE);
            let thread_path = path.clone();
            std::thread::Builder::new()
                .name("file-log".into())
                .spawn(move || write_lines(thread_path, Some(file), rx))
                .map_err(kong_pdk::Error::from)?;
            writers.insert(
                path.clone(),
                Writer {
                    lines: tx,
                    dropped: Arc::default(),
                },
            );
            // The line just opened for needs no reopening.
            let writer = &writers[path];
            let _ = writer.lines.try_send((line, false));
            return Ok(());
        }
        let writer = &writers[path];
        match writer.lines.try_send((line, self.reopen)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let n = writer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                drop(writers);
                if n == 1 || n % 1000 == 0 {
                    kong.log()
                        .err(format!("the writer of {path} is behind: {n} lines dropped"));
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => {
                writers.remove(path);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_as_kongs_pattern() {
        assert!(valid_path("/tmp/file.log"));
        assert!(valid_path("ab"));
        assert!(!valid_path("a"));
        assert!(!valid_path(" /tmp/x"));
        assert!(!valid_path("/tmp/x "));
        assert!(!valid_path("/tmp/a*b"));
        assert!(!valid_path("/tmp/a%b"));
        assert!(!valid_path("/tmp/`x`"));
    }
}
