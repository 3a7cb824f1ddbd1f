//! `cors` (Kong's `kong/plugins/cors`): answers CORS preflight requests itself and adds the
//! `Access-Control-*` headers to every other response, Kong's own errors included. Origins are
//! exact values or regular expressions, compiled once when the configuration loads.

use kong_pdk::phase::{RequestPhase, RequestRead, ResponseWrite};
use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldSchema};
use regex::Regex;

/// The plugin's configuration (Kong's `cors/schema.lua`).
#[plugin(priority = 2000, version = "3.10.0", name = "cors", protocols = protocols_http, no_consumer)]
pub struct Cors {
    /// Allowed origins: `*`, exact origins, or regular expressions.
    pub origins: Option<Origins>,
    /// `Access-Control-Allow-Headers` of preflight answers (else the requested ones).
    pub headers: Option<Vec<String>>,
    /// `Access-Control-Expose-Headers`.
    pub exposed_headers: Option<Vec<String>>,
    /// `Access-Control-Allow-Methods` of preflight answers.
    #[field(
        default = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"],
        elements(one_of = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"])
    )]
    pub methods: Option<Vec<String>>,
    /// `Access-Control-Max-Age` of preflight answers, in seconds.
    pub max_age: Option<f64>,
    /// `Access-Control-Allow-Credentials: true`.
    #[field(required, default = false)]
    pub credentials: bool,
    /// Answer `Access-Control-Request-Private-Network: true` preflights.
    #[field(required, default = false)]
    pub private_network: bool,
    /// Proxy preflight requests instead of answering them.
    #[field(required, default = false)]
    pub preflight_continue: bool,
    /// Decorate responses to requests without an `Origin`.
    #[field(required, default = true)]
    pub allow_origin_absent: bool,
}

/// One configured origin.
#[derive(Debug, Clone)]
enum Origin {
    Any,
    /// A plain origin, normalised (`http://a.test:80` → `http://a.test`).
    Exact(String),
    /// A regular expression, matched against the request's host (`by_host`) or its origin.
    Pattern {
        regex: Regex,
        by_host: bool,
    },
}

/// `origins`: as written (for the single-plain-origin rule) and compiled.
#[derive(Debug, Clone)]
pub struct Origins {
    written: Vec<String>,
    compiled: Vec<Origin>,
}

/// Whether `s` is written as a plain origin rather than a regular expression.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
}

fn compile(entry: &str) -> Result<Origin, String> {
    if entry == "*" {
        return Ok(Origin::Any);
    }
    if plain(entry) {
        return Ok(Origin::Exact(normalize(entry).0));
    }
    let body = entry.strip_prefix('^').unwrap_or(entry);
    let anchored = if body.ends_with('$') {
        format!("^(?:{body})")
    } else {
        format!("^(?:{body})$")
    };
    Regex::new(&anchored)
        .map(|regex| Origin::Pattern {
            regex,
            by_host: !entry.contains(':'),
        })
        .map_err(|_| format!("'{entry}' is not a valid regex"))
}

impl<'de> serde::Deserialize<'de> for Origins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Vec::<String>::deserialize(d)?;
        let compiled = written
            .iter()
            .map(|e| compile(e))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Origins { written, compiled })
    }
}

impl ConfigType for Origins {
    fn field_schema() -> FieldSchema {
        FieldSchema::array_of(FieldSchema::checked_string(|v| {
            compile(v.as_str().unwrap_or_default()).map(drop)
        }))
    }
}

/// A request `Origin` as (origin without default port, host): `http://a.test:80` →
/// (`http://a.test`, `a.test`); without a scheme the whole text is both.
fn normalize(origin: &str) -> (String, String) {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return (origin.to_owned(), origin.to_owned());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(v6) => match v6.split_once("]:") {
            Some((h, p)) => (&authority[..h.len() + 2], Some(p)),
            None => (authority, None),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let default_port = matches!((scheme, port), ("http", Some("80")) | ("https", Some("443")));
    let domain = match port {
        Some(p) if !default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    };
    (domain, host.to_owned())
}

/// Changes to the response's headers.
enum Change {
    Set(&'static str, String),
    Append(&'static str, String),
    Clear(&'static str),
}

impl Cors {
    /// Kong's `configure_origin` and `configure_credentials`. `append_vary`: header_filter
    /// appends `Vary`, access sets it.
    fn origin_headers(&self, origin: Option<&str>, append_vary: bool, out: &mut Vec<Change>) {
        let vary = |out: &mut Vec<Change>| {
            out.push(if append_vary {
                Change::Append("Vary", "Origin".into())
            } else {
                Change::Set("Vary", "Origin".into())
            })
        };
        let origin = origin.filter(|o| !o.is_empty());
        let written = self.origins.as_ref().map_or(&[][..], |o| &o.written[..]);
        let compiled = self.origins.as_ref().map_or(&[][..], |o| &o.compiled[..]);
        let allow_all = if written.is_empty() || written == ["*"] {
            out.push(Change::Set("Access-Control-Allow-Origin", "*".into()));
            true
        } else {
            vary(out);
            if written.len() == 1 && plain(&written[0]) {
                out.push(Change::Set("Access-Control-Allow-Origin", written[0].clone()));
                false
            } else {
                let found = origin.and_then(|o| {
                    let (domain, host) = normalize(o);
                    compiled.iter().find_map(|entry| match entry {
                        Origin::Any => Some(None),
                        Origin::Exact(e) if *e == domain => Some(Some(domain.clone())),
                        Origin::Pattern { regex, by_host } => {
                            let subject = if *by_host { &host } else { &domain };
                            regex.is_match(subject).then(|| Some(domain.clone()))
                        }
                        Origin::Exact(_) => None,
                    })
                });
                match found {
                    Some(None) => {
                        out.push(Change::Set("Access-Control-Allow-Origin", "*".into()));
                        true
                    }
                    Some(Some(domain)) => {
                        out.push(Change::Set("Access-Control-Allow-Origin", domain));
                        false
                    }
                    None => {
                        out.push(Change::Clear("Access-Control-Allow-Origin"));
                        false
                    }
                }
            }
        };
        if self.credentials {
            match (allow_all, origin) {
                (false, _) => out.push(Change::Set("Access-Control-Allow-Credentials", "true".into())),
                (true, Some(o)) => {
                    vary(out);
                    out.push(Change::Set("Access-Control-Allow-Origin", o.to_owned()));
                    out.push(Change::Set("Access-Control-Allow-Credentials", "true".into()));
                }
                (true, None) => {}
            }
        }
    }
}

/// Applies `changes` to the response.
fn apply<P: RequestPhase + ResponseWrite>(kong: &mut Kong<'_, P>, changes: Vec<Change>) -> kong_pdk::Result {
    let mut response = kong.response();
    for change in changes {
        match change {
            Change::Set(name, value) => response.set_header(name, value)?,
            Change::Append(name, value) => response.add_header(name, value)?,
            Change::Clear(name) => response.clear_header(name)?,
        }
    }
    Ok(())
}

fn origin_of<P: RequestPhase + RequestRead>(kong: &mut Kong<'_, P>) -> Option<String> {
    kong.request().get_header("origin").map(str::to_owned)
}

/// A preflight this instance answered (header_filter leaves it alone).
struct Preflight;

#[handler]
impl Handler for Cors {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let origin = origin_of(kong);
        let request = kong.request();
        let preflight = request.get_method() == "OPTIONS"
            && origin.as_deref().is_some_and(|o| !o.is_empty())
            && request.get_header("access-control-request-method").is_some();
        if !preflight {
            return Ok(());
        }
        kong.ctx().plugin().insert(Preflight);
        if self.preflight_continue {
            return Ok(());
        }
        let mut changes = Vec::new();
        self.origin_headers(origin.as_deref(), false, &mut changes);
        let requested = kong
            .request()
            .get_header("access-control-request-headers")
            .map(str::to_owned);
        let allow_headers = match &self.headers {
            Some(h) if !h.is_empty() => Some(h.join(",")),
            _ => requested,
        };
        if let Some(h) = allow_headers {
            changes.push(Change::Set("Access-Control-Allow-Headers", h));
        }
        let methods = self.methods.as_ref().map(|m| m.join(","));
        if let Some(m) = methods.filter(|m| !m.is_empty()) {
            changes.push(Change::Set("Access-Control-Allow-Methods", m));
        }
        if let Some(age) = self.max_age {
            let text = if age.fract() == 0.0 {
                format!("{}", age as i64)
            } else {
                age.to_string()
            };
            changes.push(Change::Set("Access-Control-Max-Age", text));
        }
        let private = kong.request().get_header("access-control-request-private-network") == Some("true");
        if self.private_network && private {
            changes.push(Change::Set("Access-Control-Allow-Private-Network", "true".into()));
        }
        apply(kong, changes)?;
        Err(Exit::new(200, ()).into())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        if kong.ctx().plugin().get::<Preflight>().is_some() {
            return Ok(());
        }
        let origin = origin_of(kong);
        if origin.as_deref().is_none_or(str::is_empty) && !self.allow_origin_absent {
            return Ok(());
        }
        let mut changes = Vec::new();
        self.origin_headers(origin.as_deref(), true, &mut changes);
        if let Some(exposed) = self.exposed_headers.as_ref().filter(|e| !e.is_empty()) {
            changes.push(Change::Set("Access-Control-Expose-Headers", exposed.join(",")));
        }
        apply(kong, changes)
    }
}
