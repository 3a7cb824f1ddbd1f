//! `request-termination` (Kong's `kong/plugins/request-termination`): answers requests itself
//! with a fixed status and message or body, or echoes the request back, without proxying;
//! with `trigger`, only requests that carry that header or query argument.

use kong_pdk::pdk::QueryValue;
use kong_pdk::prelude::*;
use serde_json::{Map, Value, json};

/// The plugin's configuration (Kong's `request-termination/schema.lua`).
#[plugin(
    priority = 2,
    version = "3.10.0",
    name = "request-termination",
    protocols = protocols_http,
    custom_validator = check
)]
pub struct RequestTermination {
    /// The status of the answer.
    #[field(required, default = 503, between = (100, 599))]
    pub status_code: u16,
    /// A message, sent as `{"message": ...}`.
    pub message: Option<String>,
    /// The content type of `body`.
    pub content_type: Option<String>,
    /// A raw body.
    pub body: Option<String>,
    /// Answer with the request as the gateway received it (a debugging aid).
    #[field(required, default = false)]
    pub echo: bool,
    /// Terminate only requests with this header or query argument.
    #[field(typedef = header_name)]
    pub trigger: Option<String>,
}

/// Kong's config validator: `message`, `body`/`content_type` and `echo` do not mix.
fn check(config: &Value) -> Result<(), String> {
    let set = |f: &str| !config[f].is_null();
    if set("message") && (set("content_type") || set("body")) {
        return Err("message cannot be used with content_type or body".into());
    }
    if set("content_type") && !set("body") {
        return Err("content_type requires a body".into());
    }
    if config["echo"] == true && set("content_type") && set("body") {
        return Err("echo cannot be used with content_type and body".into());
    }
    Ok(())
}

/// Kong's message for a status, where it has one.
fn default_message(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

#[handler]
impl Handler for RequestTermination {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        if let Some(trigger) = &self.trigger {
            let request = kong.request();
            if request.get_header(trigger).is_none() && request.get_query_arg(trigger).is_none() {
                return Ok(());
            }
        }
        let status = self.status_code;
        let message = self.message.as_deref().or(default_message(status));
        if self.echo {
            let echo = echo(kong, message).await;
            return Err(Exit::new(status, echo).into());
        }
        if let Some(body) = &self.body {
            let exit = Exit::new(status, body.clone());
            return Err(match &self.content_type {
                Some(ct) => exit.header("Content-Type", ct.clone()),
                None => exit,
            }
            .into());
        }
        Err(match message {
            Some(m) => Exit::new(status, json!({ "message": m })),
            None => Exit::new(status, ()),
        }
        .into())
    }
}

fn query_json(v: &QueryValue) -> Value {
    match v {
        QueryValue::Flag => Value::Bool(true),
        QueryValue::Value(s) => Value::from(s.as_str()),
        QueryValue::List(all) => Value::Array(all.iter().map(query_json).collect()),
    }
}

/// The request as Kong's `echo` shows it.
async fn echo(kong: &mut Kong<'_, Access>, message: Option<&str>) -> Value {
    let mut headers = Map::new();
    for (name, value) in kong.request().get_headers() {
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(all)) => all.push(value),
            Some(one) => *one = Value::Array(vec![one.take(), value]),
            None => {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
    }
    let query: Map<String, Value> = kong
        .request()
        .get_query(100)
        .iter()
        .map(|(k, v)| (k.clone(), query_json(v)))
        .collect();
    let raw_body = kong.request().get_raw_body().await.unwrap_or_default();
    let body = kong.request().get_body().await.ok();
    let request = kong.request();
    let captures = request.get_uri_captures();
    let mut echoed = json!({
        "scheme": request.get_scheme(),
        "host": request.get_host(),
        "port": request.get_port(),
        "headers": headers,
        "query": query,
        "raw_body": String::from_utf8_lossy(&raw_body),
        "method": request.get_method(),
        "path": request.get_path(),
        "uri_captures": { "named": captures.named, "unnamed": captures.unnamed },
    });
    if let Some(body) = body {
        echoed["body"] = body;
    }
    let router = kong.router();
    json!({
        "message": message,
        "kong": {
            "node_id": kong.node().get_id(),
            "worker_pid": std::process::id(),
            "hostname": kong.node().get_hostname(),
        },
        "request": echoed,
        "matched_route": router.get_route(),
        "matched_service": router.get_service(),
    })
}
