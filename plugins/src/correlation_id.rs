//! `correlation-id` (Kong's `kong/plugins/correlation-id`): every request carries an id in a
//! header (`Kong-Request-ID` by default) to the upstream, and with `echo_downstream` back to
//! the client; a client's own id is kept. The id is also in the log serializer as
//! `correlation_id`.

use std::sync::atomic::{AtomicU64, Ordering};

use kong_pdk::phase;
use kong_pdk::prelude::*;
use serde_json::Value;
use uuid::Uuid;

/// The plugin's configuration (Kong's `correlation-id/schema.lua`).
#[plugin(priority = 100001, version = "3.10.0", name = "correlation-id")]
pub struct CorrelationId {
    /// The header carrying the id.
    #[field(default = "Kong-Request-ID")]
    pub header_name: Option<String>,
    /// How ids are made: `uuid`, `uuid#counter` or `tracker`.
    #[field(required, default = "uuid#counter", one_of = ["uuid", "uuid#counter", "tracker"])]
    pub generator: String,
    /// Send the id back to the client too.
    #[field(required, default = false)]
    pub echo_downstream: bool,
}

/// The node's `uuid#counter` state: its uuid and the count of ids made (Kong's per worker).
#[derive(Debug)]
pub struct Ids {
    node: String,
    counter: AtomicU64,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            node: Uuid::new_v4().to_string(),
            counter: AtomicU64::new(0),
        }
    }
}

/// The id access found or made, for header_filter.
#[derive(Debug, Clone)]
struct Remembered(String);

impl CorrelationId {
    fn header(&self) -> &str {
        self.header_name.as_deref().unwrap_or("Kong-Request-ID")
    }

    fn generate<P: phase::RequestRead>(&self, kong: &mut Kong<'_, P, Ids>) -> String {
        match self.generator.as_str() {
            "uuid" => Uuid::new_v4().to_string(),
            "tracker" => {
                // nginx's server_addr-server_port-pid-connection-connection_requests-time.
                let request = kong.request();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                format!(
                    "{}-{}-{}-{}-{}-{now:.3}",
                    request.get_server_addr(),
                    request.get_port(),
                    std::process::id(),
                    request.get_connection_serial(),
                    request.get_connection_requests(),
                )
            }
            _ => {
                let ids = kong.state();
                let n = ids.counter.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}#{n}", ids.node)
            }
        }
    }
}

#[handler]
impl Handler for CorrelationId {
    type State = Ids;

    async fn access(&self, kong: &mut Kong<Access, Ids>) -> kong_pdk::Result {
        let header = self.header();
        let id = match kong.request().get_header(header).filter(|v| !v.is_empty()) {
            Some(v) => v.to_owned(),
            None => {
                let id = self.generate(kong);
                kong.service().request().set_header(header, &id)?;
                id
            }
        };
        kong.log()
            .set_serialize_value("correlation_id", Value::from(id.as_str()));
        if self.echo_downstream {
            kong.ctx().plugin().insert(Remembered(id));
        }
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter, Ids>) -> kong_pdk::Result {
        if !self.echo_downstream {
            return Ok(());
        }
        let header = self.header();
        // Echoed even when access never ran (an answer from rewrite): the client's id, else
        // a new one.
        let id = match kong.ctx().plugin().get::<Remembered>() {
            Some(r) => r.0.clone(),
            None => match kong.request().get_header(header).filter(|v| !v.is_empty()) {
                Some(v) => v.to_owned(),
                None => self.generate(kong),
            },
        };
        kong.response().set_header(header, id)?;
        Ok(())
    }
}
