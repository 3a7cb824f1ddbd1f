//! The HTTP side of the Admin API (Kong's `kong/api/init.lua`): the listener, one request's
//! answer with Kong's headers (CORS, `Server`, `X-Kong-Admin-Latency`), OPTIONS, and request
//! bodies in JSON, form or multipart encoding.

use super::*;

impl Admin {
    /// Restricts CORS to `origins` (Kong's `admin_gui_origin`): a request from a listed origin
    /// gets it back in `Access-Control-Allow-Origin`, any other the first listed. Call it once,
    /// before serving.
    pub fn set_gui_origin(&self, origins: &[String]) -> Result<(), String> {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| format!("admin_gui_origin: invalid origin '{o}'")))
            .collect::<Result<Vec<_>, _>>()?;
        self.gui_origins
            .set(values)
            .map_err(|_| "admin_gui_origin is already set".to_owned())
    }

    /// Sets how long a client may take to send a request head, or stay idle between requests,
    /// before its connection is closed (60 s by default, as nginx's `client_header_timeout`).
    pub fn set_client_header_timeout(&self, timeout: std::time::Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.header_timeout_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves the Admin API on `listener` until `shutdown` completes. Request heads are checked
    /// as the proxy's are (nginx's limits, smuggling shapes, the head timeout).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_on(listener, shutdown, Surface::Admin).await
    }

    /// Serves the Status API (Kong's `status_listen`) on `listener` until `shutdown`
    /// completes: `GET /status`, `GET`/`POST /status/ready` and the plugins' status endpoints
    /// (prometheus' `/metrics`).
    pub async fn serve_status(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_on(listener, shutdown, Surface::Status).await
    }

    async fn serve_on(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>, surface: Surface) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                (stream, _) = crate::gateway::accept::accept(&listener) => {
                    let admin = self.clone();
                    let timeout = std::time::Duration::from_millis(
                        self.header_timeout_ms.load(std::sync::atomic::Ordering::Relaxed),
                    );
                    let io = crate::gateway::h1guard::Guarded::new(stream, crate::gateway::HeaderSettings::default())
                        .header_timeout(timeout);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let admin = admin.clone();
                            async move { Ok::<_, Infallible>(admin.answer(req, surface).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(io), service)
                            .await;
                    });
                }
            }
        }
    }

    /// Answers one Admin API request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(req, Surface::Admin).await
    }

    /// Answers one Status API request.
    pub async fn handle_status<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(req, Surface::Status).await
    }

    async fn answer<B>(&self, req: Request<B>, surface: Surface) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let mut text = None;
        let (status, body, allow) = if req.method() == Method::OPTIONS {
            let segs: Vec<&str> = req.uri().path().split('/').filter(|s| !s.is_empty()).collect();
            let known = match surface {
                Surface::Admin => self.known(&segs),
                Surface::Status => matches!(segs.as_slice(), ["status"] | ["status", "ready"]),
            };
            if known {
                (StatusCode::NO_CONTENT, Value::Null, Some(allowed(&segs)))
            } else {
                (StatusCode::NOT_FOUND, json!({ "message": "Not found" }), None)
            }
        } else {
            let routed = match surface {
                Surface::Admin => self.route(req, &mut text).await,
                Surface::Status => self.route_status(req, &mut text).await,
            };
            match routed {
                Ok((status, body)) | Err(ApiError(status, body)) => (status, body, None),
            }
        };
        let has_body = !body.is_null();
        let mut resp = Response::new(Full::new(match (body, text) {
            (Value::Null, _) => Bytes::new(),
            (Value::String(s), Some(_)) => Bytes::from(s),
            (body, _) => Bytes::from(body.to_string()),
        }));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if has_body {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(text.unwrap_or("application/json; charset=utf-8")),
            );
        }
        // Kong's Admin API runs the cors plugin with `admin_gui_origin` (or `*`) and
        // credentials: a listed origin is echoed, any origin when none is configured.
        let allowed = match self.gui_origins.get().filter(|o| !o.is_empty()) {
            None => origin.unwrap_or_else(|| HeaderValue::from_static("*")),
            Some(list) => {
                h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
                origin.filter(|o| list.contains(o)).unwrap_or_else(|| list[0].clone())
            }
        };
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            h.insert(http::header::ALLOW, allow.clone());
            h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, allow);
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            );
        }
        h.insert(
            http::header::SERVER,
            HeaderValue::from_static(crate::gateway::SERVER_TOKEN),
        );
        h.insert(
            "x-kong-admin-latency",
            HeaderValue::from(started.elapsed().as_millis() as u64),
        );
        resp
    }
}

pub(super) fn allowed(segs: &[&str]) -> String {
    let methods: &[&str] = match segs {
        [] | ["status"] | ["endpoints"] => &["GET", "HEAD", "OPTIONS"],
        ["status", "ready"] => &["GET", "HEAD", "OPTIONS", "POST"],
        [_] => &["GET", "HEAD", "OPTIONS", "POST"],
        [_, _] => &["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"],
        [_, _, _] => &["GET", "HEAD", "OPTIONS", "POST"],
        _ => &["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"],
    };
    methods.join(", ")
}

/// The whole request body, up to 10 MiB (413 beyond).
pub(super) async fn collect_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const MAX_BODY: usize = 10 * 1024 * 1024;
    Ok(http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| message(413, "Payload too large"))?
        .to_bytes())
}

/// Reads a request body as Kong does: JSON or form-encoded (`true` when form-encoded, whose
/// values still need typing); an empty body is `{}`.
pub(super) async fn read<B>(body: B, headers: &http::HeaderMap) -> Result<(Value, bool), ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let types: Vec<&HeaderValue> = headers.get_all(http::header::CONTENT_TYPE).iter().collect();
    if types.len() > 1 {
        return Err(message(400, "Multiple Content-Type headers not allowed"));
    }
    let bytes = collect_body(body).await?;
    let ctype = types
        .first()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // A JSON body must be JSON, even an empty one (Kong's parse_params).
    if bytes.is_empty() && ctype != "application/json" {
        return Ok((Value::Object(Map::new()), false));
    }
    match ctype.as_str() {
        "application/json" => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok((v, false)),
            _ => Err(message(400, "Cannot parse JSON body")),
        },
        "application/x-www-form-urlencoded" => {
            let text = String::from_utf8_lossy(&bytes);
            Ok((Value::Object(args::form(&text)), true))
        }
        "multipart/form-data" => {
            let full = types.first().and_then(|v| v.to_str().ok()).unwrap_or_default();
            let boundary = full
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"'))
                .ok_or_else(|| message(400, "Cannot parse multipart body"))?;
            let form = args::multipart(&bytes, boundary).ok_or_else(|| message(400, "Cannot parse multipart body"))?;
            Ok((Value::Object(form), true))
        }
        _ => Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, Value::Null)),
    }
}
