//! `kong.router`: the route and service the request matched.

use crate::entities::{Route, Service};
use crate::transaction::Transaction;

/// `kong.router`.
pub struct Router<'a> {
    tx: &'a Transaction,
}

impl<'a> Router<'a> {
    pub(crate) fn new(tx: &'a Transaction) -> Self {
        Router { tx }
    }

    /// `kong.router.get_route()`.
    pub fn get_route(&self) -> Option<&'a Route> {
        self.tx.route.as_deref()
    }

    /// `kong.router.get_service()`.
    pub fn get_service(&self) -> Option<&'a Service> {
        self.tx.service.as_deref()
    }
}
