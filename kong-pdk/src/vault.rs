//! Secret references (Kong's `kong.vault`, `kong/pdk/vault.lua`): a field its schema marks
//! `referenceable` may hold `{vault://env/NAME}` instead of the secret. The Admin API stores
//! the reference; the gateway resolves it when it loads the configuration, so the plugin sees
//! the secret and the database never does.
//!
//! The `env` vault (Kong's `kong/vaults/env`) reads the process environment: the resource
//! upper-cased with `-` as `_`, after the `prefix` the reference's query may give
//! (`?prefix=kong-`); version `#2` reads `<NAME>_PREVIOUS`; a last path segment picks a key of
//! a JSON secret (`{vault://env/creds/password}` reads `CREDS` as JSON and takes `password`).
//!
//! ```
//! use kong_pdk::vault::Vault;
//!
//! // SAFETY (doc test): nothing else in this process reads the environment concurrently.
//! unsafe { std::env::set_var("MY_SECRET", "s3cret") };
//! assert!(Vault.is_reference("{vault://env/my-secret}"));
//! assert_eq!(Vault.get("{vault://env/my-secret}").unwrap(), "s3cret");
//! assert_eq!(
//!     Vault.get("{vault://env/absent-secret}").unwrap_err(),
//!     "could not retrieve value for reference {vault://env/absent-secret} \
//!      (could not get value from external vault (no value found))"
//! );
//! ```

use std::collections::BTreeMap;

/// `kong.vault`: references, parsed and resolved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vault;

/// A parsed reference (`kong.vault.parse_reference`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The vault: `env`.
    pub name: String,
    /// What the vault looks up (an environment variable's name for `env`).
    pub resource: String,
    /// The key of a JSON secret, from a last path segment.
    pub key: Option<String>,
    /// The query's settings (`prefix` for `env`).
    pub config: BTreeMap<String, String>,
    /// The version (`#2`: the previous secret).
    pub version: Option<u32>,
}

impl Vault {
    /// `kong.vault.is_reference(s)`: `{vault://...}`.
    pub fn is_reference(&self, s: &str) -> bool {
        s.len() >= 10 && s.starts_with("{vault://") && s.ends_with('}')
    }

    /// `kong.vault.parse_reference(reference)`, with Kong's messages.
    pub fn parse_reference(&self, reference: &str) -> Result<Reference, String> {
        if !self.is_reference(reference) {
            return Err(format!("not a reference [{reference}]"));
        }
        let url = &reference[1..reference.len() - 1];
        let rest = url.strip_prefix("vault://").unwrap_or(url);
        let (rest, version) = match rest.split_once('#') {
            Some((r, v)) => (r, Some(v)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (name, path) = match rest.split_once('/') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(format!("reference url is missing host [{reference}]"));
        }
        let Some(path) = path else {
            return Err(format!("reference url is missing path [{reference}]"));
        };
        if path.is_empty() {
            return Err(format!("reference url has empty path [{reference}]"));
        }
        let version = match version {
            Some(v) => Some(
                v.parse::<u32>()
                    .map_err(|_| format!("reference url has invalid version [{reference}]"))?,
            ),
            None => None,
        };
        let directory = path.ends_with('/');
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (resource, key) = match parts.as_slice() {
            [] => return Err(format!("reference url has invalid path [{reference}]")),
            [one] => (unescape(one), None),
            _ if directory => (unescape(&parts.join("/")), None),
            [dirs @ .., last] => (unescape(&dirs.join("/")), Some(unescape(last))),
        };
        let config = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (unescape(k), unescape(v)),
                None => (unescape(p), String::new()),
            })
            .collect();
        Ok(Reference {
            name: name.to_owned(),
            resource,
            key,
            config,
            version,
        })
    }

    /// `kong.vault.get(reference)`: the secret, or Kong's error.
    pub fn get(&self, reference: &str) -> Result<String, String> {
        let parsed = self
            .parse_reference(reference)
            .map_err(|e| format!("could not parse reference {reference} ({e})"))?;
        fetch(&parsed).map_err(|e| format!("could not retrieve value for reference {reference} ({e})"))
    }
}

/// The secret `r` names.
fn fetch(r: &Reference) -> Result<String, String> {
    if r.name != "env" {
        return Err(format!("could not find vault ({})", r.name));
    }
    let mut name = format!("{}{}", r.config.get("prefix").map_or("", String::as_str), r.resource);
    name = name.replace('-', "_").to_uppercase();
    if r.version == Some(2) {
        name.push_str("_PREVIOUS");
    }
    let value =
        std::env::var(&name).map_err(|_| "could not get value from external vault (no value found)".to_owned())?;
    let Some(key) = &r.key else { return Ok(value) };
    let json: serde_json::Value =
        serde_json::from_str(&value).map_err(|e| format!("unable to json decode value ({value}): {e}"))?;
    match json.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(other) => Err(format!(
            "could not get subfield value: unexpected {} value in JSON secret for subfield {key}",
            json_type(other)
        )),
        None => Err(format!(
            "could not get subfield value: subfield {key} not found in JSON secret"
        )),
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nil",
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => "table",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
    }
}

/// `%XX` escapes decoded (Kong's `unescape_uri`); invalid ones stay as they are.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_kongs_do() {
        let r = Vault
            .parse_reference("{vault://env/creds/pass%20word?prefix=kong-#2}")
            .unwrap();
        assert_eq!(r.name, "env");
        assert_eq!(r.resource, "creds");
        assert_eq!(r.key.as_deref(), Some("pass word"));
        assert_eq!(r.config.get("prefix").map(String::as_str), Some("kong-"));
        assert_eq!(r.version, Some(2));
        let dir = Vault.parse_reference("{vault://env/a/b/}").unwrap();
        assert_eq!((dir.resource.as_str(), dir.key), ("a/b", None));
        for (bad, message) in [
            ("plain", "not a reference [plain]"),
            ("{vault://env}", "reference url is missing path [{vault://env}]"),
            ("{vault://env/}", "reference url has empty path [{vault://env/}]"),
            (
                "{vault://env/x#v2}",
                "reference url has invalid version [{vault://env/x#v2}]",
            ),
        ] {
            assert_eq!(Vault.parse_reference(bad).unwrap_err(), message, "{bad}");
        }
    }

    #[test]
    fn the_env_vault_reads_the_environment() {
        // PATH is set wherever tests run; the crate sets no variables (no `unsafe`). The
        // prefix, `#2` and JSON keys are exercised in `tests/tests/pdk.rs`.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(Vault.get("{vault://env/path}").unwrap(), path);
        assert_eq!(Vault.get("{vault://env/th?prefix=pa}").unwrap(), path);
        assert_eq!(
            Vault.get("{vault://aws/x}").unwrap_err(),
            "could not retrieve value for reference {vault://aws/x} (could not find vault (aws))"
        );
        assert!(
            Vault
                .get("{vault://env/path/key}")
                .unwrap_err()
                .contains("(unable to json decode value (")
        );
    }
}
