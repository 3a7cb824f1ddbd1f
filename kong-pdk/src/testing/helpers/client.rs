//! HTTP clients of a test gateway and the assertions on what they get back
//! (`spec/internal/client.lua`, `spec/internal/asserts.lua`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::pdk::ErrorLog;

/// How long one request may take, connection included (Kong's clients: 60 s).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How many error-log lines a failed assertion prints (Kong's: 60).
const LOG_LINES_SHOWN: usize = 60;

/// A client of one listener: every request opens its own connection (Kong's `proxy_client()`
/// used for one request, then `client:close()`).
#[derive(Clone)]
pub struct TestClient {
    addr: SocketAddr,
    /// `Some(sni)` for TLS.
    tls: Option<Option<String>>,
    error_log: Arc<ErrorLog>,
}

impl TestClient {
    pub(super) fn new(addr: SocketAddr, tls: Option<Option<String>>, error_log: Arc<ErrorLog>) -> TestClient {
        TestClient { addr, tls, error_log }
    }

    /// A request with `method` to `path` (which may carry a query string).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            query: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `client:get(path)`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `client:post(path)`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `client:put(path)`.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// `client:patch(path)`.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// `client:delete(path)`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// `client:head(path)`.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// `client:options(path)`.
    pub fn options(&self, path: &str) -> RequestBuilder {
        self.request(Method::OPTIONS, path)
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<http::Response<Bytes>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => send_on(tcp, req).await,
            Some(sni) => {
                let mut config = crate::gateway::upstream_tls::unverified_client_config();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                // Without an SNI to send, the handshake carries an IP address, which rustls
                // leaves out of the ClientHello.
                let name = match sni {
                    Some(host) => rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| format!("bad server name {host}: {e}"))?,
                    None => rustls::pki_types::ServerName::IpAddress(self.addr.ip().into()),
                };
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
                send_on(stream, req).await
            }
        }
    }
}

async fn send_on<I>(io: I, req: Request<Full<Bytes>>) -> Result<http::Response<Bytes>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

/// A request being built; [`RequestBuilder::send`] sends it.
pub struct RequestBuilder {
    client: TestClient,
    method: Method,
    path: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl RequestBuilder {
    /// Adds a header (`headers = {...}`). The default `Host` is the listener's address.
    ///
    /// # Panics
    /// On a name or value HTTP does not allow.
    pub fn header(mut self, name: &str, value: &str) -> RequestBuilder {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| panic!("bad header name {name:?}"));
        let value = HeaderValue::from_str(value).unwrap_or_else(|_| panic!("bad header value {value:?}"));
        self.headers.append(name, value);
        self
    }

    /// Adds a query argument (`query = {...}`), percent-encoded.
    pub fn query(mut self, name: &str, value: &str) -> RequestBuilder {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> RequestBuilder {
        self.body = body.into();
        self
    }

    /// A JSON body, with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> RequestBuilder {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.header("Content-Type", "application/json").body(bytes)
    }

    /// A form body (`application/x-www-form-urlencoded`) from a JSON object, encoded as Kong's
    /// clients do: arrays as `a[]=x&a[]=y`, nested objects as `a.b=x`.
    pub fn form(self, body: &Value) -> RequestBuilder {
        let mut pairs = Vec::new();
        flatten_form("", body, &mut pairs);
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(urlencoded(&pairs))
    }

    /// A `multipart/form-data` body from a JSON object, one part per field (flattened as
    /// [`RequestBuilder::form`] does), with Kong's clients' boundary.
    pub fn multipart(self, body: &Value) -> RequestBuilder {
        const BOUNDARY: &str = "8fd84e9444e3946c";
        let mut pairs = Vec::new();
        flatten_form("", body, &mut pairs);
        let mut out = String::new();
        for (k, v) in &pairs {
            let _ = write!(
                out,
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
            );
        }
        let _ = write!(out, "--{BOUNDARY}--\r\n");
        self.header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(out)
    }

    /// Sends the request and reads the whole response.
    ///
    /// # Panics
    /// When the connection fails or no response comes within 60 s.
    pub async fn send(self) -> TestResponse {
        let mut uri = self.path.clone();
        if !self.query.is_empty() {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&urlencoded(&self.query));
        }
        let mut req = Request::builder().method(self.method.clone()).uri(&uri);
        let headers = req.headers_mut().expect("a fresh builder");
        *headers = self.headers;
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(&self.client.addr.to_string()).expect("an address");
            headers.insert(HOST, host);
        }
        let req = req
            .body(Full::new(self.body))
            .unwrap_or_else(|e| panic!("bad request {} {uri}: {e}", self.method));
        let what = format!("{} {uri}", self.method);
        let res = match tokio::time::timeout(TIMEOUT, self.client.exchange(req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => panic!("{what} to {} failed: {e}", self.client.addr),
            Err(_) => panic!("{what} to {} got no response within {TIMEOUT:?}", self.client.addr),
        };
        let (parts, body) = res.into_parts();
        TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            error_log: self.client.error_log.clone(),
        }
    }
}

fn flatten_form(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_form(&key, v, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                flatten_form(&format!("{prefix}[]"), item, out);
            }
        }
        Value::Null => out.push((prefix.to_owned(), String::new())),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// `k=v&...`, each side percent-encoded.
fn urlencoded(pairs: &[(String, String)]) -> String {
    use crate::pdk::request::percent_encode_component as enc;
    let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    encoded.join("&")
}

/// A whole response, with Kong's assertions. Failed assertions print the body and the
/// gateway's recent error log.
pub struct TestResponse {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    error_log: Arc<ErrorLog>,
}

impl TestResponse {
    /// The status code (`res.status`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers (`res.headers`).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's first value, if any and if text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body (`res:read_body()`).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `assert.response(res).has.status(code)`: returns the body.
    ///
    /// # Panics
    /// When the status differs; prints the body and the gateway's recent error log.
    #[track_caller]
    pub fn assert_status(&self, code: u16) -> String {
        if self.status != code {
            panic!(
                "Expected response status {code}, but it was {}.\nbody: {}\n{}",
                self.status,
                self.text(),
                self.recent_log()
            );
        }
        self.text()
    }

    /// `assert.response(res).has.header(name)`: returns its value (case-insensitive name).
    ///
    /// # Panics
    /// When the header is missing; prints the headers there are.
    #[track_caller]
    pub fn assert_header(&self, name: &str) -> String {
        match self.headers.get(name) {
            Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            None => panic!(
                "Expected header: {name}\nBut it was not found in:\n{}\nbody: {}\n{}",
                self.headers_text(),
                self.text(),
                self.recent_log()
            ),
        }
    }

    /// `assert.response(res).has_no.header(name)`.
    ///
    /// # Panics
    /// When the header is there.
    #[track_caller]
    pub fn assert_no_header(&self, name: &str) {
        if let Some(v) = self.headers.get(name) {
            panic!("Expected no header {name}, but it was {v:?}.\n{}", self.headers_text());
        }
    }

    /// `assert.response(res).has.jsonbody()`: the decoded body.
    ///
    /// # Panics
    /// When the body is not JSON.
    #[track_caller]
    pub fn assert_json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "Expected a JSON body ({e}), but it was:\n{}\n{}",
                self.text(),
                self.recent_log()
            ),
        }
    }

    /// `assert.request(res)`: what the mock upstream saw, from its echo (`/anything`,
    /// `/request`, ...).
    ///
    /// # Panics
    /// When the response is not the mock upstream's echo (no `X-Powered-By: mock_upstream`).
    #[track_caller]
    pub fn request(&self) -> EchoedRequest {
        if self.header("X-Powered-By") != Some("mock_upstream") {
            panic!(
                "Expected a response from the mock upstream (X-Powered-By: mock_upstream), got {}:\n{}\nbody: {}",
                self.status,
                self.headers_text(),
                self.text()
            );
        }
        EchoedRequest(self.assert_json())
    }

    fn headers_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.headers {
            let _ = writeln!(out, "  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        out
    }

    fn recent_log(&self) -> String {
        let lines: Vec<String> = self
            .error_log
            .lines()
            .into_iter()
            .filter(|l| !l.starts_with("[debug]"))
            .collect();
        if lines.is_empty() {
            return "error log: (empty)".to_owned();
        }
        let shown = &lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..];
        format!("error log (last {} lines):\n{}", shown.len(), shown.join("\n"))
    }
}

/// The request as the mock upstream echoed it (`assert.request(res)`).
pub struct EchoedRequest(Value);

impl EchoedRequest {
    /// The whole echo: `headers`, `uri_args`, `post_data`, `url`, `vars`.
    pub fn echo(&self) -> &Value {
        &self.0
    }

    /// A request header's value (lower-cased name), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.0["headers"][name.to_ascii_lowercase()] {
            Value::String(s) => Some(s.clone()),
            Value::Array(all) => Some(all.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")),
            _ => None,
        }
    }

    /// `.has.header(name)`: the value the upstream got.
    ///
    /// # Panics
    /// When the upstream got no such header.
    #[track_caller]
    pub fn assert_header(&self, name: &str) -> String {
        self.header(name).unwrap_or_else(|| {
            panic!(
                "Expected request header {name}, but the upstream got:\n{:#}",
                self.0["headers"]
            )
        })
    }

    /// `.has_no.header(name)`.
    ///
    /// # Panics
    /// When the upstream got it.
    #[track_caller]
    pub fn assert_no_header(&self, name: &str) {
        if let Some(v) = self.header(name) {
            panic!("Expected no request header {name}, but the upstream got {v:?}");
        }
    }

    /// `.has.queryparam(name)`: the value the upstream got.
    ///
    /// # Panics
    /// When the upstream got no such argument.
    #[track_caller]
    pub fn assert_query_param(&self, name: &str) -> Value {
        match self.0["uri_args"].get(name) {
            Some(v) => v.clone(),
            None => panic!(
                "Expected query argument {name}, but the upstream got:\n{:#}",
                self.0["uri_args"]
            ),
        }
    }

    /// `.has.formparam(name)`: the value of a form field the upstream got.
    ///
    /// # Panics
    /// When the body was no form or lacked the field.
    #[track_caller]
    pub fn assert_form_param(&self, name: &str) -> Value {
        let post = &self.0["post_data"];
        match (post["kind"].as_str(), post["params"].get(name)) {
            (Some("form"), Some(v)) => v.clone(),
            _ => panic!("Expected form field {name}, but the upstream got:\n{post:#}"),
        }
    }

    /// `.has.jsonbody()`: the JSON body the upstream got.
    ///
    /// # Panics
    /// When the body was not JSON.
    #[track_caller]
    pub fn assert_json_body(&self) -> Value {
        let post = &self.0["post_data"];
        match post["kind"].as_str() {
            Some("json") => post["params"].clone(),
            _ => panic!("Expected a JSON request body, but the upstream got:\n{post:#}"),
        }
    }
}
