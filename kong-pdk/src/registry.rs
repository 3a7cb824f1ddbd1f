//! The process-wide registry of compiled-in plugins, and their type-erased form.
//!
//! `#[plugin]` submits a [`Registration`] for its struct; a gateway finds every plugin linked
//! into the binary with [`registered`] and loads the enabled ones into [`Plugins`].
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 7, version = "2.1.0", name = "hello-world")]
//! pub struct Hello {}
//! #[handler]
//! impl Handler for Hello {}
//!
//! let reg = kong_pdk::registry::find("hello-world").expect("registered");
//! assert_eq!((reg.name(), reg.priority(), reg.version()), ("hello-world", 7, "2.1.0"));
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;
use uuid::Uuid;

use crate::pdk::{Kong, NodeInfo, Worker};
use crate::phase::{self, Phase, Phases};
use crate::plugin::{Handler, Instance};
use crate::schema::{PluginSchema, SchemaViolation};
use crate::transaction::{BoxFuture, ErasedInstance, Transaction};

/// A plugin compiled into this binary: its static facts and how to build it.
pub struct Registration {
    describe: fn() -> Arc<dyn PluginType>,
    name: fn() -> &'static str,
    priority: fn() -> i32,
    version: fn() -> &'static str,
    schema: fn() -> &'static PluginSchema,
    phases: fn() -> Phases,
}

impl Registration {
    /// The registration of `T` (what `#[plugin]` submits).
    pub const fn of<T: Handler>() -> Registration {
        Registration {
            describe: || Arc::new(TypeImpl::<T>::new(Arc::new(T::State::default()))),
            name: || T::NAME,
            priority: || T::PRIORITY,
            version: || T::VERSION,
            schema: T::schema,
            phases: || T::PHASES,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        (self.name)()
    }

    /// Its PRIORITY.
    pub fn priority(&self) -> i32 {
        (self.priority)()
    }

    /// Its VERSION.
    pub fn version(&self) -> &'static str {
        (self.version)()
    }

    /// Its schema.
    pub fn schema(&self) -> &'static PluginSchema {
        (self.schema)()
    }

    /// The phases it implements.
    pub fn phases(&self) -> Phases {
        (self.phases)()
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name())
            .field("priority", &self.priority())
            .field("version", &self.version())
            .field("phases", &self.phases())
            .finish()
    }
}

inventory::collect!(Registration);

/// Every plugin registered in this binary, sorted by name.
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<&'static Registration> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.name());
    all
}

/// The registered plugin named `name`.
pub fn find(name: &str) -> Option<&'static Registration> {
    inventory::iter::<Registration>.into_iter().find(|r| r.name() == name)
}

pub use crate::model::{PluginMeta, Scope};

/// Runs a future, turning a panic into an error: a panicking plugin fails its request, not
/// the gateway.
pub(crate) async fn catch<F: Future<Output = crate::Result>>(fut: F) -> crate::Result {
    CatchUnwind { fut }.await
}

pin_project_lite::pin_project! {
    struct CatchUnwind<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = crate::Result>> Future for CatchUnwind<F> {
    type Output = crate::Result;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<crate::Result> {
        let fut = self.project().fut;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Poll::Ready(Err(crate::Error::msg(format!("handler panicked: {msg}"))))
            }
        }
    }
}

/// A loaded plugin type, erased.
pub(crate) trait PluginType: Send + Sync {
    fn meta(&self) -> &PluginMeta;
    fn set_index(&mut self, index: usize);
    fn schema(&self) -> &'static PluginSchema;
    fn instantiate(&self, id: Uuid, scope: Scope, config: Value) -> Result<Arc<dyn ErasedInstance>, SchemaViolation>;
    fn init_worker<'a>(&'a self, node: &'a NodeInfo) -> BoxFuture<'a, crate::Result>;
    fn configure<'a>(
        &'a self,
        node: &'a NodeInfo,
        instances: &'a [Arc<dyn ErasedInstance>],
    ) -> BoxFuture<'a, crate::Result>;
    fn admin_api(
        &self,
        surface: Surface,
        request: (&str, &[&str], &Value),
        instances: &[(Uuid, &Value)],
        node: &NodeInfo,
    ) -> Option<crate::api::AdminAnswer>;
}

/// Which API a plugin endpoint request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The Admin API (`api.lua`).
    Admin,
    /// The Status API on `status_listen` (`status_api.lua`).
    Status,
}

struct TypeImpl<T: Handler> {
    meta: Arc<PluginMeta>,
    state: Arc<T::State>,
}

impl<T: Handler> TypeImpl<T> {
    fn new(state: Arc<T::State>) -> Self {
        let schema = T::schema();
        TypeImpl {
            meta: Arc::new(PluginMeta {
                name: T::NAME,
                priority: T::PRIORITY,
                version: T::VERSION,
                phases: T::PHASES,
                index: 0,
                no_consumer: schema.no_consumer,
                no_route: schema.no_route,
                no_service: schema.no_service,
            }),
            state,
        }
    }
}

/// Replaces the vault references of `record`'s referenceable fields in `value` by their
/// secrets (Kong resolves them when the configuration loads). A reference that does not
/// resolve is logged and left as it is, so one missing secret does not keep the rest of the
/// configuration from loading.
fn resolve_references(record: &crate::schema::RecordSchema, value: &mut Value) {
    let Value::Object(obj) = value else { return };
    for field in &record.fields {
        if let Some(v) = obj.get_mut(&field.name) {
            resolve_field(&field.schema, v);
        }
    }
}

fn resolve_field(schema: &crate::schema::FieldSchema, value: &mut Value) {
    use crate::schema::FieldKind;
    match (&schema.kind, value) {
        (FieldKind::Record(record), v) => resolve_references(record, v),
        (FieldKind::Array(element) | FieldKind::Set(element), Value::Array(items)) => {
            for item in items {
                resolve_field(element, item);
            }
        }
        (FieldKind::Map { values, .. }, Value::Object(map)) => {
            for v in map.values_mut() {
                resolve_field(values, v);
            }
        }
        (FieldKind::String, Value::String(s)) if schema.referenceable && crate::vault::Vault.is_reference(s) => {
            match crate::vault::Vault.get(s) {
                Ok(secret) => *s = secret,
                Err(e) => tracing::warn!(target: "kong", "unable to resolve reference {s} ({e})"),
            }
        }
        _ => {}
    }
}

struct InstanceImpl<T: Handler> {
    meta: Arc<PluginMeta>,
    state: Arc<T::State>,
    instance: Instance<T>,
}

impl<T: Handler> PluginType for TypeImpl<T> {
    fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    fn set_index(&mut self, index: usize) {
        Arc::make_mut(&mut self.meta).index = index;
    }

    fn schema(&self) -> &'static PluginSchema {
        T::schema()
    }

    fn instantiate(&self, id: Uuid, scope: Scope, config: Value) -> Result<Arc<dyn ErasedInstance>, SchemaViolation> {
        let mut config = T::schema().validate_config(config)?;
        resolve_references(&T::schema().config, &mut config);
        let config: T = serde_json::from_value(config).map_err(|e| {
            let mut fields = serde_json::Map::new();
            fields.insert("config".into(), Value::String(e.to_string()));
            SchemaViolation::new(fields)
        })?;
        Ok(Arc::new(InstanceImpl::<T> {
            meta: self.meta.clone(),
            state: self.state.clone(),
            instance: Instance {
                id,
                route_id: scope.route,
                service_id: scope.service,
                consumer_id: scope.consumer,
                config: Arc::new(config),
            },
        }))
    }

    fn init_worker<'a>(&'a self, node: &'a NodeInfo) -> BoxFuture<'a, crate::Result> {
        Box::pin(async move {
            let worker = Worker::new(self.meta.clone(), self.state.clone(), Arc::new(node.clone()));
            T::init_worker(&worker).await
        })
    }

    fn configure<'a>(
        &'a self,
        node: &'a NodeInfo,
        instances: &'a [Arc<dyn ErasedInstance>],
    ) -> BoxFuture<'a, crate::Result> {
        Box::pin(async move {
            let configs: Vec<Instance<T>> = instances
                .iter()
                .filter_map(|i| i.as_any().downcast_ref::<InstanceImpl<T>>())
                .map(|i| i.instance.clone())
                .collect();
            let worker = Worker::new(self.meta.clone(), self.state.clone(), Arc::new(node.clone()));
            let configs = (!configs.is_empty()).then_some(configs.as_slice());
            T::configure(&worker, configs).await
        })
    }

    fn admin_api(
        &self,
        surface: Surface,
        (method, segments, body): (&str, &[&str], &Value),
        instances: &[(Uuid, &Value)],
        node: &NodeInfo,
    ) -> Option<crate::api::AdminAnswer> {
        let request = crate::api::AdminRequest::new(method, segments, body, &*self.state, instances, node);
        match surface {
            Surface::Admin => T::admin_api(&request),
            Surface::Status => T::status_api(&request),
        }
    }
}

impl<T: Handler> InstanceImpl<T> {
    fn kong<'t, P: phase::RequestPhase>(&'t self, tx: &'t mut Transaction) -> Kong<'t, P, T::State> {
        let scope = Scope {
            route: self.instance.route_id,
            service: self.instance.service_id,
            consumer: self.instance.consumer_id,
        };
        Kong::new(tx, &self.meta, &self.state, self.instance.id, scope)
    }
}

/// The erased call of a phase: the handler method the phase table names, on a context that
/// borrows the request for the call.
macro_rules! dispatch {
    ($($(#[$doc:meta])* $variant:ident $method:ident,)*) => {
        fn call<'a>(&'a self, phase: Phase, tx: &'a mut Transaction) -> BoxFuture<'a, crate::Result> {
            let conf = &*self.instance.config;
            match phase {
                $(Phase::$variant => Box::pin(async move { conf.$method(&mut self.kong(tx)).await }),)*
                Phase::InitWorker | Phase::Configure => Box::pin(async { Ok(()) }),
            }
        }
    };
}

impl<T: Handler> ErasedInstance for InstanceImpl<T> {
    fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    fn scope(&self) -> Scope {
        Scope {
            route: self.instance.route_id,
            service: self.instance.service_id,
            consumer: self.instance.consumer_id,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    crate::phase::request_phases!(dispatch);
}

/// Why plugins could not be loaded or configured.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    /// A name in the `plugins` setting that no compiled-in plugin has.
    NotInstalled(String),
    /// A plugin entity names a plugin that is not enabled.
    NotEnabled(String),
    /// A plugin entity's config or scope is invalid.
    Invalid {
        /// The plugin's name.
        name: String,
        /// Kong's schema violation.
        violation: SchemaViolation,
    },
    /// A route the router cannot load (a bad regex path, ...).
    Route(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotInstalled(n) => write!(f, "{n} plugin is enabled but not installed"),
            LoadError::NotEnabled(n) => write!(f, "{n} plugin is in use but not enabled"),
            LoadError::Invalid { name, violation } => write!(f, "invalid configuration for plugin {name}: {violation}"),
            LoadError::Route(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for LoadError {}

/// The plugin types loaded in a gateway (Kong's `plugins` setting), each with its state.
/// Built once at start; [`PluginSet`](crate::executor::PluginSet)s are built against it.
pub struct Plugins {
    pub(crate) types: Vec<Arc<dyn PluginType>>,
    by_name: HashMap<&'static str, usize>,
    pub(crate) node: Arc<NodeInfo>,
}

impl fmt::Debug for Plugins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.types.iter().map(|t| t.meta().name))
            .finish()
    }
}

impl Plugins {
    /// Loads the named registered plugins (sorted by priority, Kong's order).
    pub fn load<'a>(names: impl IntoIterator<Item = &'a str>, node: NodeInfo) -> Result<Plugins, LoadError> {
        let mut regs = Vec::new();
        for name in names {
            let reg = find(name).ok_or_else(|| LoadError::NotInstalled(name.to_owned()))?;
            if !regs.iter().any(|r: &&Registration| r.name() == reg.name()) {
                regs.push(reg);
            }
        }
        Ok(Plugins::from_types(
            regs.into_iter().map(|r| (r.describe)()).collect(),
            node,
        ))
    }

    /// Loads every registered plugin.
    pub fn load_all(node: NodeInfo) -> Plugins {
        Plugins::from_types(registered().into_iter().map(|r| (r.describe)()).collect(), node)
    }

    /// Loads exactly the given plugin types, each with fresh state (for tests and embedding).
    pub fn builder(node: NodeInfo) -> PluginsBuilder {
        PluginsBuilder {
            types: Vec::new(),
            node,
        }
    }

    fn from_types(mut types: Vec<Arc<dyn PluginType>>, node: NodeInfo) -> Plugins {
        // Kong's order: PRIORITY descending, ties by name descending.
        types.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            b.priority.cmp(&a.priority).then_with(|| b.name.cmp(a.name))
        });
        for (i, t) in types.iter_mut().enumerate() {
            if let Some(t) = Arc::get_mut(t) {
                t.set_index(i);
            }
        }
        let by_name = types.iter().enumerate().map(|(i, t)| (t.meta().name, i)).collect();
        Plugins {
            types,
            by_name,
            node: Arc::new(node),
        }
    }

    /// The loaded plugins' metadata, in execution order.
    pub fn iter(&self) -> impl Iterator<Item = &PluginMeta> {
        self.types.iter().map(|t| t.meta())
    }

    /// Whether `name` is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The schema of the loaded plugin `name`.
    pub fn schema(&self, name: &str) -> Option<&'static PluginSchema> {
        self.by_name.get(name).map(|&i| self.types[i].schema())
    }

    /// Offers an Admin API request (`method`, path segments, body) to each loaded plugin's
    /// [`admin_api`](crate::Handler::admin_api), or a Status API request to its
    /// [`status_api`](crate::Handler::status_api), in order, with its instances
    /// (`instances_of(name)`: id and config); the first answer wins.
    pub fn admin_api<'v>(
        &self,
        surface: Surface,
        (method, segments, body): (&str, &[&str], &Value),
        instances_of: impl Fn(&str) -> Vec<(Uuid, &'v Value)>,
    ) -> Option<crate::api::AdminAnswer> {
        self.types.iter().find_map(|t| {
            let instances = instances_of(t.meta().name);
            t.admin_api(surface, (method, segments, body), &instances, self.node())
        })
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The node this gateway runs as.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The node, shared with the requests.
    pub fn node_arc(&self) -> Arc<NodeInfo> {
        self.node.clone()
    }

    /// Runs every loaded plugin's `init_worker`, in priority order. Failures are logged as
    /// Kong does and returned, so the caller can refuse to serve.
    pub async fn init_worker(&self) -> Result<(), Vec<(String, crate::Error)>> {
        let mut failures = Vec::new();
        for t in &self.types {
            if !t.meta().phases.contains(Phase::InitWorker) {
                continue;
            }
            let result = catch(t.init_worker(&self.node)).await;
            if let Err(err) = result {
                tracing::error!(
                    target: "kong",
                    "worker initialization error: failed to execute the \"init_worker\" handler for plugin \"{}\": {err}; this node must be restarted",
                    t.meta().name
                );
                failures.push((t.meta().name.to_owned(), err));
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(failures) }
    }
}

/// Builds a [`Plugins`] from plugin types named in code rather than by registry name.
pub struct PluginsBuilder {
    types: Vec<Arc<dyn PluginType>>,
    node: NodeInfo,
}

impl PluginsBuilder {
    /// Adds plugin type `T` with fresh state.
    #[must_use]
    pub fn with<T: Handler>(mut self) -> Self {
        if !self.types.iter().any(|t| t.meta().name == T::NAME) {
            self.types
                .push(Arc::new(TypeImpl::<T>::new(Arc::new(T::State::default()))));
        }
        self
    }

    /// The loaded set.
    pub fn build(self) -> Plugins {
        Plugins::from_types(self.types, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, FieldKind, FieldSchema, RecordSchema};

    fn secret() -> FieldSchema {
        FieldSchema {
            referenceable: true,
            ..FieldSchema::of(FieldKind::String)
        }
    }

    #[test]
    fn references_resolve_in_nested_records_arrays_and_maps_of_referenceable_fields() {
        let field = |name: &str, schema| Field {
            name: name.into(),
            schema,
        };
        let redis = RecordSchema {
            fields: vec![field("password", secret())],
            entity_checks: Vec::new(),
        };
        let record = RecordSchema {
            fields: vec![
                field("redis", FieldSchema::record(redis)),
                field("list", FieldSchema::of(FieldKind::Array(Box::new(secret())))),
                field(
                    "headers",
                    FieldSchema::of(FieldKind::Map {
                        keys: Box::new(FieldSchema::of(FieldKind::String)),
                        values: Box::new(secret()),
                    }),
                ),
                field("plain", FieldSchema::of(FieldKind::String)),
                field("missing", secret()),
            ],
            entity_checks: Vec::new(),
        };
        let reference = "{vault://env/path}";
        let mut config = serde_json::json!({
            "redis": { "password": reference },
            "list": [reference, "text"],
            "headers": { "X-Key": reference },
            "plain": reference,
            "missing": "{vault://env/kong-pdk-surely-unset-variable}",
        });
        resolve_references(&record, &mut config);
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(config["redis"]["password"], path);
        assert_eq!(config["list"], serde_json::json!([path, "text"]));
        assert_eq!(config["headers"]["X-Key"], path);
        assert_eq!(config["plain"], reference, "not referenceable: only text");
        assert_eq!(
            config["missing"], "{vault://env/kong-pdk-surely-unset-variable}",
            "left, and logged"
        );
    }
}
