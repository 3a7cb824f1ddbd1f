//! `http-log` (Kong's `kong/plugins/http-log`): each request's log serializer output, sent to
//! an HTTP endpoint through Kong's queue (batches, retries, a bound on what waits): a single
//! JSON object per request with the default batch size of 1, else a JSON array per batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kong_pdk::outbound::OutboundRequest;
use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldKind, FieldSchema};
use serde_json::Value;

use crate::file_log::NoLua;
use crate::queue::{Queue, QueueConfig};

/// The plugin's configuration (Kong's `http-log/schema.lua`).
#[plugin(priority = 12, version = "3.10.0", name = "http-log", custom_validator = check)]
pub struct HttpLog {
    /// Where entries are sent (`http://` or `https://`, user info for Basic auth).
    #[field(required, typedef = url, referenceable, encrypted)]
    pub http_endpoint: String,
    /// The method: `POST`, `PUT` or `PATCH`.
    #[field(default = "POST", one_of = ["POST", "PUT", "PATCH"])]
    pub method: Option<String>,
    /// The body's content type.
    #[field(default = "application/json", one_of = ["application/json", "application/json; charset=utf-8"])]
    pub content_type: Option<String>,
    /// Connect, send and read timeout, in milliseconds.
    #[field(default = 10000)]
    pub timeout: Option<f64>,
    /// How long an idle connection to the endpoint is kept, in milliseconds.
    #[field(default = 60000)]
    pub keepalive: Option<f64>,
    /// Deprecated (Kong 3.x): retries are the queue's `max_retry_time`.
    pub retry_count: Option<i64>,
    /// Deprecated: the queue's `max_batch_size`.
    pub queue_size: Option<i64>,
    /// Deprecated: the queue's `max_coalescing_delay`.
    pub flush_timeout: Option<f64>,
    /// Headers added to each request.
    pub headers: Option<Headers>,
    /// The queue's settings.
    pub queue: QueueConfig,
    /// Kong's Lua expressions for extra fields: not supported (there is no Lua here).
    pub custom_fields_by_lua: Option<NoLua>,
}

/// Extra headers: any but `Host`, `Content-Length` and `Content-Type`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Headers(pub BTreeMap<String, String>);

impl ConfigType for Headers {
    fn field_schema() -> FieldSchema {
        let key = FieldSchema::checked_string(|v| {
            let name = v.as_str().unwrap_or_default();
            kong_pdk::schema::typedefs::validate_header_name(name)?;
            for reserved in ["Host", "Content-Length", "Content-Type"] {
                if name.eq_ignore_ascii_case(reserved) {
                    return Err(format!("cannot contain '{reserved}' header"));
                }
            }
            Ok(())
        });
        let mut value = FieldSchema::of(FieldKind::String);
        value.len_min = Some(1);
        // Kong's http-log header values are referenceable.
        value.referenceable = true;
        FieldSchema::of(FieldKind::Map {
            keys: Box::new(key),
            values: Box::new(value),
        })
    }
}

/// Kong's validator: user info in the URL and an `Authorization` header do not mix.
fn check(config: &Value) -> Result<(), String> {
    let endpoint = Endpoint::parse(config["http_endpoint"].as_str().unwrap_or_default());
    let has_auth = config["headers"]
        .as_object()
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("authorization")));
    if endpoint.is_some_and(|e| e.userinfo.is_some()) && has_auth {
        return Err("specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed".into());
    }
    Ok(())
}

/// The parts of `http_endpoint` a request needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    pub(crate) scheme: String,
    pub(crate) userinfo: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Option<Endpoint> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // The query is not sent (Kong builds the request from scheme, host, port and path).
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h, p.parse().ok()?),
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Some(Endpoint {
            scheme,
            userinfo,
            host,
            port,
            path: if path.is_empty() { "/".into() } else { path.to_owned() },
        })
    }
}

pub use crate::queue::Queues;

impl HttpLog {
    /// Kong's queue name: instances with the same parameters share a queue.
    fn queue_name(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.http_endpoint,
            self.method.as_deref().unwrap_or("POST"),
            self.content_type.as_deref().unwrap_or("application/json"),
            self.timeout.unwrap_or(10000.0),
            self.keepalive.unwrap_or(60000.0),
            self.retry_count.map_or("nil".to_owned(), |r| r.to_string())
        )
    }

    /// The queue settings, with the deprecated fields applied when they differ from their old
    /// defaults.
    fn queue_config(&self) -> QueueConfig {
        let mut q = self.queue.clone();
        if let Some(size) = self.queue_size.filter(|s| *s != 1) {
            q.max_batch_size = Some(size);
        }
        if let Some(delay) = self.flush_timeout.filter(|d| *d != 2.0) {
            q.max_coalescing_delay = Some(delay);
        }
        q
    }
}

#[handler]
impl Handler for HttpLog {
    type State = Queues;

    async fn log(&self, kong: &mut Kong<Log, Queues>) -> kong_pdk::Result {
        if self.retry_count.is_some_and(|r| r != 10) {
            kong.log()
                .warn("http-log: config.retry_count no longer works, please use config.queue.max_retry_time instead");
        }
        let entry = kong.log().serialize_json();
        let (Some(client), Some(timers)) = (kong.http_client(), kong.timers()) else {
            kong.log().err("this gateway has no HTTP client to send logs with");
            return Ok(());
        };
        let name = self.queue_name();
        // The endpoint is parsed once, when the queue that sends to it is made.
        let queue = match kong.state().get(&name) {
            Some(queue) => queue,
            None => {
                let Some(endpoint) = Endpoint::parse(&self.http_endpoint) else {
                    kong.log().err(format!("could not parse url {}", self.http_endpoint));
                    return Ok(());
                };
                kong.state().get_or_insert_with(name, || {
                    let config = self.queue_config();
                    let single = config.max_batch_size.unwrap_or(1) == 1;
                    let method = self.method.clone().unwrap_or_else(|| "POST".into());
                    let content_type = self.content_type.clone().unwrap_or_else(|| "application/json".into());
                    let timeout = Duration::from_millis(self.timeout.unwrap_or(10000.0).max(1.0) as u64);
                    let keepalive = Duration::from_millis(self.keepalive.unwrap_or(60000.0).max(0.0) as u64);
                    let mut headers = vec![("Content-Type".to_owned(), content_type)];
                    if let Some(user) = &endpoint.userinfo {
                        let decoded = kong_pdk::pdk::percent_decode(user, false);
                        let token = base64::engine::general_purpose::STANDARD.encode(decoded);
                        headers.push(("Authorization".into(), format!("Basic {token}")));
                    }
                    for (k, v) in self.headers.iter().flat_map(|h| h.0.iter()) {
                        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)) {
                            headers.push((k.clone(), v.clone()));
                        }
                    }
                    let endpoint = endpoint.clone();
                    let send: crate::queue::Send = Arc::new(move |entries: &[Vec<u8>]| {
                        let client = client.clone();
                        let body = match entries {
                            [one] if single => one.clone(),
                            _ => {
                                let size = entries.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
                                let mut body = Vec::with_capacity(size);
                                body.push(b'[');
                                for (i, entry) in entries.iter().enumerate() {
                                    if i > 0 {
                                        body.push(b',');
                                    }
                                    body.extend_from_slice(entry);
                                }
                                body.push(b']');
                                body
                            }
                        };
                        let request = OutboundRequest {
                            method: method.clone(),
                            scheme: endpoint.scheme.clone(),
                            host: endpoint.host.clone(),
                            port: endpoint.port,
                            path: endpoint.path.clone(),
                            headers: headers.clone(),
                            body,
                            timeout,
                            keepalive,
                        };
                        let (host, port) = (endpoint.host.clone(), endpoint.port);
                        Box::pin(async move {
                            let answer = client.send(request).await?;
                            if answer.status < 300 {
                                Ok(())
                            } else {
                                Err(format!(
                                    "request to {host}:{port} returned status code {} and body {}",
                                    answer.status,
                                    String::from_utf8_lossy(&answer.body)
                                ))
                            }
                        })
                    });
                    Queue::new(format!("http-log plugin {}", kong.plugin_id()), config, send, timers)
                })
            }
        };
        if let Some(warning) = queue.enqueue(entry) {
            kong.log().warn(warning);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_kong_sends_them() {
        let e = Endpoint::parse("https://user:pa%20ss@logs.example:8443/in?x=1").unwrap();
        assert_eq!(
            (
                e.scheme.as_str(),
                e.userinfo.as_deref(),
                e.host.as_str(),
                e.port,
                e.path.as_str()
            ),
            ("https", Some("user:pa%20ss"), "logs.example", 8443, "/in")
        );
        let e = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/"));
    }
}
