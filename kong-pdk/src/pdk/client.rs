//! `kong.client`: the connected client, and the consumer and credential an auth plugin
//! authenticated.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use crate::entities::{Consumer, Credential};
use crate::error::PdkError;
use crate::phase::{self, RequestPhase};
use crate::transaction::Transaction;

/// `kong.client`.
pub struct Client<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

impl<'a, P: RequestPhase> Client<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        Client {
            tx,
            _phase: PhantomData,
        }
    }

    /// `get_ip()`: the directly connected peer.
    pub fn get_ip(&self) -> IpAddr {
        self.tx.client.ip
    }

    /// `get_forwarded_ip()`: the client address after trusted forwarding headers.
    pub fn get_forwarded_ip(&self) -> IpAddr {
        self.tx.client.forwarded_ip
    }

    /// `get_port()`.
    pub fn get_port(&self) -> u16 {
        self.tx.client.port
    }

    /// `get_forwarded_port()`.
    pub fn get_forwarded_port(&self) -> u16 {
        self.tx.client.forwarded_port
    }

    /// `get_consumer()`: the authenticated consumer.
    pub fn get_consumer(&self) -> Option<&Consumer>
    where
        P: phase::AuthAndLater,
    {
        self.tx.consumer.as_deref()
    }

    /// `get_credential()`: the credential used.
    pub fn get_credential(&self) -> Option<&Credential>
    where
        P: phase::AuthAndLater,
    {
        self.tx.credential.as_deref()
    }

    /// `authenticate(consumer, credential)`: records who the client is; plugins of lower
    /// priority then see consumer-scoped configurations. Kong requires at least one of them.
    pub fn authenticate(&mut self, consumer: Option<Consumer>, credential: Option<Credential>) -> Result<(), PdkError>
    where
        P: phase::Authenticate,
    {
        if consumer.is_none() && credential.is_none() {
            return Err(PdkError::new("either credential or consumer must be provided"));
        }
        self.tx.consumer = consumer.map(Arc::new);
        self.tx.credential = credential.map(Arc::new);
        Ok(())
    }

    /// `load_consumer(consumer_id, search_by_username)`: the consumer with this id or, when
    /// `search_by_username`, this username; from the configuration the request runs with.
    pub fn load_consumer(&self, id_or_username: &str, search_by_username: bool) -> Option<Arc<Consumer>>
    where
        P: phase::AuthAndLater,
    {
        let data = &self.tx.data;
        uuid::Uuid::parse_str(id_or_username)
            .ok()
            .and_then(|id| data.consumer(id))
            .or_else(|| {
                search_by_username
                    .then(|| data.consumer_by_username(id_or_username))
                    .flatten()
            })
    }

    /// What Kong's auth plugins' `set_consumer` does: authenticates the client as `consumer`
    /// (with `credential`, or anonymously without one) and tells the upstream in
    /// `X-Consumer-ID`, `X-Consumer-Custom-ID`, `X-Consumer-Username`,
    /// `X-Credential-Identifier` and `X-Anonymous-Consumer`, replacing what the client sent.
    pub fn set_consumer(&mut self, consumer: Arc<Consumer>, credential: Option<Arc<Credential>>) -> Result<(), PdkError>
    where
        P: phase::Authenticate,
    {
        use http::{HeaderName, HeaderValue};
        const CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
        const CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
        const USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
        const CREDENTIAL: HeaderName = HeaderName::from_static("x-credential-identifier");
        const ANONYMOUS: HeaderName = HeaderName::from_static("x-anonymous-consumer");
        let h = &mut self.tx.upstream.headers;
        let text = |v: &str| {
            crate::text::shared_value(v.as_bytes())
                .ok_or_else(|| PdkError::new(format!("invalid header value \"{v}\"")))
        };
        // A uuid's text, written on the stack: always a valid header value.
        let id = |id: &uuid::Uuid| {
            let mut buf = uuid::Uuid::encode_buffer();
            crate::text::shared_value(id.hyphenated().encode_lower(&mut buf).as_bytes())
                .unwrap_or_else(|| HeaderValue::from_static(""))
        };
        h.insert(CONSUMER_ID, id(&consumer.id));
        match &consumer.custom_id {
            Some(c) => h.insert(CUSTOM_ID, text(c)?),
            None => h.remove(CUSTOM_ID),
        };
        match &consumer.username {
            Some(u) => h.insert(USERNAME, text(u)?),
            None => h.remove(USERNAME),
        };
        match &credential {
            Some(c) => {
                h.insert(CREDENTIAL, id(&c.id));
                h.remove(ANONYMOUS);
            }
            None => {
                h.remove(CREDENTIAL);
                h.insert(ANONYMOUS, HeaderValue::from_static("true"));
            }
        }
        self.tx.consumer = Some(consumer);
        self.tx.credential = credential;
        Ok(())
    }

    /// `kong.client.tls`: the TLS side of the client connection.
    pub fn tls(&mut self) -> ClientTls<'_, P> {
        ClientTls {
            tx: self.tx,
            _phase: PhantomData,
        }
    }

    /// `get_protocol()`: the route protocol used (`http`, `https`, `grpc`, ...).
    pub fn get_protocol(&self) -> Result<String, PdkError>
    where
        P: phase::AuthAndLater,
    {
        let route = self
            .tx
            .route
            .as_ref()
            .ok_or_else(|| PdkError::new("No active route found"))?;
        let scheme = self.tx.request.scheme;
        if route.protocols.len() == 1 {
            return Ok(route.protocols[0].clone());
        }
        // Streams report the service side: `tls` when the upstream is spoken to over TLS.
        if self.tx.subsystem == crate::transaction::Subsystem::Stream {
            let tls = self.tx.upstream.scheme == "https";
            return Ok(if tls { "tls" } else { "tcp" }.to_owned());
        }
        Ok(scheme.to_owned())
    }
}

/// `kong.client.tls`: what the `certificate` phase asks of the TLS handshake, and the client
/// certificate chain afterwards. Mutual TLS plugins ask for a certificate in `certificate` and
/// check the chain in `access`:
///
/// ```
/// use kong_pdk::prelude::*;
///
/// #[plugin(priority = 1000, version = "0.1.0")]
/// struct RequireClientCert {}
///
/// #[handler]
/// impl Handler for RequireClientCert {
///     async fn certificate(&self, kong: &mut Kong<Certificate>) -> kong_pdk::Result {
///         kong.client().tls().request_client_certificate()?;
///         kong.client().tls().disable_session_reuse()?;
///         Ok(())
///     }
///
///     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
///         if kong.client().tls().get_full_client_certificate_chain().is_none() {
///             kong.client().tls().set_client_verify("FAILED:no certificate")?;
///             return kong.response().error(401, Some("No required TLS certificate was sent"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub struct ClientTls<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

impl<P: RequestPhase> ClientTls<'_, P> {
    /// `request_client_certificate()`: asks the client for a certificate during this handshake.
    /// It is not required, and not verified in the handshake: the plugin checks the chain
    /// later. Errors on a connection that is not TLS.
    pub fn request_client_certificate(&mut self) -> Result<(), PdkError>
    where
        P: phase::Handshake,
    {
        self.tls_only()?;
        self.tx.handshake.client_certificate = true;
        Ok(())
    }

    /// `disable_session_reuse()`: this session is neither resumable by session id nor by
    /// ticket, so the client's next connection runs the `certificate` phase again.
    pub fn disable_session_reuse(&mut self) -> Result<(), PdkError>
    where
        P: phase::Handshake,
    {
        self.tls_only()?;
        self.tx.handshake.no_session_reuse = true;
        Ok(())
    }

    /// `get_full_client_certificate_chain()`: the client's certificate chain as PEM, client
    /// certificate first; `None` when the client sent none (or was not asked).
    pub fn get_full_client_certificate_chain(&self) -> Option<&str>
    where
        P: phase::ClientCertificateRead,
    {
        self.tx.client.session.as_ref()?.client_chain.as_deref()
    }

    /// `set_client_verify(v)`: overrides `request.tls.client_verify` in `kong.log().serialize()`.
    /// `v` is `SUCCESS`, `NONE` or `FAILED:<reason>`.
    pub fn set_client_verify(&mut self, v: &str) -> Result<(), PdkError>
    where
        P: phase::ClientVerifyWrite,
    {
        if !(v == "SUCCESS" || v == "NONE" || v.starts_with("FAILED:")) {
            return Err(PdkError::new(format!(
                "unknown client verify value: {v} accepted values are: \"SUCCESS\", \"NONE\" or \"FAILED:<reason>\""
            )));
        }
        self.tx.client_verify = Some(v.to_owned());
        Ok(())
    }

    /// The server name the client asked for in its TLS handshake (SNI), lowercase; `None`
    /// without TLS or without a name (OpenResty's `ngx.ssl.server_name()`).
    pub fn server_name(&self) -> Option<&str> {
        self.tx.client.sni.as_deref()
    }

    fn tls_only(&self) -> Result<(), PdkError> {
        if self.tx.client.tls {
            Ok(())
        } else {
            Err(PdkError::new("connection is not TLS"))
        }
    }
}
