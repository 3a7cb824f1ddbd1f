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
        Ok(scheme.to_owned())
    }
}
