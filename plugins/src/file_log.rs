//! `file-log` (Kong's `kong/plugins/file-log`): each request's log serializer output, one JSON
//! object per line, appended to a file. The log phase hands the line to a writer thread of
//! the file's own (a bounded queue: a stalled disk drops lines, counted, rather than holding
//! requests); with `reopen` the file is opened again for every line, for log rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use kong_pdk::prelude::*;
use serde_json::Value;

use crate::workers::Workers;

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

/// The node's file writers, by path: each line with whether to open the file again first.
pub type Files = Workers<String, (Vec<u8>, bool)>;

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o644).open(path)
}

/// The writer thread: appends lines, opening the file again when a line asks.
fn write_lines(path: String, mut file: Option<File>, lines: std::sync::mpsc::Receiver<(Vec<u8>, bool)>) {
    // Lines going to the same open file are written together.
    let mut pending = Vec::new();
    let flush = |file: &mut Option<File>, pending: &mut Vec<u8>| {
        if let Some(f) = file.as_mut()
            && !pending.is_empty()
            && let Err(e) = f.write_all(pending)
        {
            tracing::error!(target: "kong", "[file-log] failed to write to {path}: {e}");
            *file = None;
        }
        pending.clear();
    };
    crate::workers::batches(lines, |batch| {
        for (line, reopen) in batch.drain(..) {
            if reopen || file.is_none() {
                flush(&mut file, &mut pending);
                file = match open(&path) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::error!(target: "kong", "[file-log] failed to open the file: {e}");
                        None
                    }
                };
            }
            if file.is_some() {
                pending.extend_from_slice(&line);
            }
        }
        flush(&mut file, &mut pending);
    });
}

#[handler]
impl Handler for FileLog {
    type State = Files;

    async fn log(&self, kong: &mut Kong<Log, Files>) -> kong_pdk::Result {
        let mut line = kong.log().serialize_json();
        line.push(b'\n');
        let path = &self.path.0;
        // The first open happens at start, so that a failure shows in this request's log.
        let sent = kong.state().send(path, (line, self.reopen), |lines| {
            let file = open(path).map_err(|e| format!("failed to open the file: {e}"))?;
            let thread_path = path.clone();
            std::thread::Builder::new()
                .name("file-log".into())
                .spawn(move || write_lines(thread_path, Some(file), lines))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let problem = sent.problem(
            || format!("the writer of {path}"),
            "lines",
            || format!("too many log files open, not writing to {path}"),
        );
        if let Some(line) = problem {
            kong.log().err(line);
        }
        Ok(())
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
