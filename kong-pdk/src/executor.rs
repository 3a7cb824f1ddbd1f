//! The phase executor: which plugins run in a phase, in which order, and what their failures
//! mean (Kong's `plugins_iterator.lua`). When each phase runs is the runloop's
//! (`runloop.rs`, Kong's `runloop/handler.lua`); this module runs one phase when asked.
//!
//! - Plugins run by PRIORITY descending, ties by name descending.
//! - `certificate` and `rewrite` run global instances only (routing has not happened).
//! - `access` is the collecting phase: for each plugin type, the instance that applies is the
//!   first of route+service+consumer, route+consumer, service+consumer, route+service,
//!   consumer, route, service, global; it is collected for the later phases it implements, and
//!   its `access` runs unless a response was already produced (`exit`, or an error).
//! - Later phases run the collected instances; when access never ran (exit in rewrite, no
//!   route), only global instances run them.
//! - A failing or panicking handler becomes `500 An unexpected error occurred` in Kong's
//!   template, logged with the plugin's name; the process lives on. A returned
//!   [`Exit`](crate::Exit) is the response instead, where the phase may answer.
//! - A collected plugin implementing `response` turns on buffered proxying.
//!
//! A [`PluginSet`] is an immutable snapshot of the configured instances; a gateway swaps in a
//! new one when configuration changes, and in-flight requests finish on the one they started
//! with.

use std::collections::HashMap;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

use crate::phase::Phase;
use crate::registry::{LoadError, Plugins, Scope, catch};
use crate::schema::SchemaViolation;
use crate::transaction::ErasedInstance;
use crate::transaction::{Source, Transaction};

/// A configured plugin instance, as stored (Kong's `plugins` entity).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntity {
    /// Primary key.
    pub id: Uuid,
    /// The plugin's name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// Its config (validated and completed with defaults when added).
    pub config: Value,
    /// Disabled instances are ignored.
    pub enabled: bool,
    /// Kong Enterprise's dynamic ordering in `access`, if any.
    pub ordering: Option<Ordering>,
    /// The protocols it runs for (`None`: its schema's default). Kong loads an instance in the
    /// subsystems its protocols belong to: HTTP (`http`, `https`, `grpc(s)`, `ws(s)`) and
    /// stream (`tcp`, `tls`, `udp`, `tls_passthrough`).
    pub protocols: Option<Vec<String>>,
    /// Kong's `instance_name`: a name unique among plugin instances.
    pub instance_name: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
}

/// Kong Enterprise's dynamic ordering of a plugin instance (`ordering: {before: {access:
/// [...]}, after: {access: [...]}}`): the plugins it runs before and after in `access`; the
/// other phases keep the priority order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ordering {
    /// Plugins this one runs before.
    pub before: Vec<String>,
    /// Plugins this one runs after.
    pub after: Vec<String>,
}

impl Ordering {
    /// From a plugin entity's `ordering` value; `None` when it names no plugin.
    ///
    /// ```
    /// use kong_pdk::executor::Ordering;
    /// let o = Ordering::from_json(&serde_json::json!({ "before": { "access": ["key-auth"] } })).unwrap();
    /// assert_eq!(o.before, ["key-auth"]);
    /// assert!(Ordering::from_json(&serde_json::Value::Null).is_none());
    /// ```
    pub fn from_json(v: &Value) -> Option<Ordering> {
        let names = |side: &str| -> Vec<String> {
            v[side]["access"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let ordering = Ordering {
            before: names("before"),
            after: names("after"),
        };
        (!ordering.before.is_empty() || !ordering.after.is_empty()).then_some(ordering)
    }

    /// The entity's `ordering` value: `{before: {access: [...]}, after: {access: [...]}}`.
    pub fn to_json(&self) -> Value {
        let side = |names: &[String]| {
            if names.is_empty() {
                Value::Null
            } else {
                serde_json::json!({ "access": names })
            }
        };
        serde_json::json!({ "before": side(&self.before), "after": side(&self.after) })
    }
}

/// Kong's message for orderings that contradict each other.
pub const CIRCULAR_ORDERING: &str =
    "There is a circular dependency in the graph. It is not possible to derive a topological sort.";

/// Whether the "runs before" pairs `edges` (by plugin name) contain a cycle.
fn has_cycle(edges: &[(String, String)]) -> bool {
    let mut names: Vec<&str> = edges.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
    names.sort_unstable();
    names.dedup();
    // 0: unvisited, 1: on the path, 2: done.
    let mut state = vec![0u8; names.len()];
    fn visit(at: usize, names: &[&str], edges: &[(String, String)], state: &mut [u8]) -> bool {
        state[at] = 1;
        for (_, to) in edges.iter().filter(|(from, _)| from == names[at]) {
            let next = names.binary_search(&to.as_str()).unwrap_or_default();
            let seen = state[next];
            if seen == 1 || (seen == 0 && visit(next, names, edges, state)) {
                return true;
            }
        }
        state[at] = 2;
        false
    }
    (0..names.len()).any(|i| state[i] == 0 && visit(i, &names, edges, &mut state))
}

/// Kong Enterprise's `legacy` ordering of `selected` (in priority order, each with its
/// ordering): walking by priority, each plugin is placed after the plugins it depends on
/// (`A before B` and `B after A` both make B depend on A), depth first. Returns positions
/// into `selected`.
fn dynamic_order(selected: &[(&str, Option<&Ordering>)]) -> Vec<usize> {
    let depends = |b: usize, a: usize| {
        let (name_a, ord_a) = selected[a];
        let (name_b, ord_b) = selected[b];
        a != b
            && (ord_a.is_some_and(|o| o.before.iter().any(|n| n == name_b))
                || ord_b.is_some_and(|o| o.after.iter().any(|n| n == name_a)))
    };
    fn place(at: usize, n: usize, depends: &dyn Fn(usize, usize) -> bool, state: &mut [u8], out: &mut Vec<usize>) {
        if state[at] != 0 {
            return;
        }
        state[at] = 1;
        for dep in 0..n {
            if depends(at, dep) {
                place(dep, n, depends, state, out);
            }
        }
        state[at] = 2;
        out.push(at);
    }
    let mut state = vec![0u8; selected.len()];
    let mut out = Vec::with_capacity(selected.len());
    for at in 0..selected.len() {
        place(at, selected.len(), &depends, &mut state, &mut out);
    }
    out
}

impl PluginEntity {
    /// An enabled, global instance of `name` with `config`.
    pub fn new(name: impl Into<String>, config: Value) -> PluginEntity {
        PluginEntity {
            id: Uuid::new_v4(),
            name: name.into(),
            scope: Scope::GLOBAL,
            config,
            enabled: true,
            ordering: None,
            protocols: None,
            instance_name: None,
            tags: None,
        }
    }

    /// The same instance for these protocols only.
    #[must_use]
    pub fn protocols(mut self, protocols: &[&str]) -> Self {
        self.protocols = Some(protocols.iter().map(|p| (*p).to_owned()).collect());
        self
    }

    /// The same instance scoped to a route.
    #[must_use]
    pub fn route(mut self, id: Uuid) -> Self {
        self.scope.route = Some(id);
        self
    }

    /// The same instance scoped to a service.
    #[must_use]
    pub fn service(mut self, id: Uuid) -> Self {
        self.scope.service = Some(id);
        self
    }

    /// The same instance scoped to a consumer.
    #[must_use]
    pub fn consumer(mut self, id: Uuid) -> Self {
        self.scope.consumer = Some(id);
        self
    }

    /// The same instance with a dynamic `access` ordering.
    #[must_use]
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = Some(ordering);
        self
    }
}

const ROUTE: u8 = 1;
const SERVICE: u8 = 2;
const CONSUMER: u8 = 4;

/// Kong's precedence, as combinations of ROUTE | SERVICE | CONSUMER.
const PRECEDENCE: [u8; 8] = [
    ROUTE | SERVICE | CONSUMER,
    ROUTE | CONSUMER,
    SERVICE | CONSUMER,
    ROUTE | SERVICE,
    CONSUMER,
    ROUTE,
    SERVICE,
    0,
];

fn combo(scope: &Scope) -> u8 {
    let bit = |set: bool, bit: u8| if set { bit } else { 0 };
    bit(scope.route.is_some(), ROUTE) | bit(scope.service.is_some(), SERVICE) | bit(scope.consumer.is_some(), CONSUMER)
}

/// Hashes scopes by folding their ids: ids are random UUIDs, so no keyed hash is needed.
#[derive(Default)]
struct ScopeHasher(u64);

impl std::hash::Hasher for ScopeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

type ScopeMap = HashMap<Scope, Arc<dyn ErasedInstance>, std::hash::BuildHasherDefault<ScopeHasher>>;

/// One plugin type's instances in a snapshot.
struct Slot {
    /// Which combinations exist (bit per combination value), to skip useless lookups.
    combos: u16,
    instances: ScopeMap,
    /// The dynamic orderings of this type's instances, by scope.
    orderings: HashMap<Scope, Ordering>,
    no_consumer: bool,
    no_route: bool,
    no_service: bool,
}

impl Slot {
    fn lookup(
        &self,
        route: Option<Uuid>,
        service: Option<Uuid>,
        consumer: Option<Uuid>,
    ) -> Option<(Scope, &Arc<dyn ErasedInstance>)> {
        let route = if self.no_route { None } else { route };
        let service = if self.no_service { None } else { service };
        let consumer = if self.no_consumer { None } else { consumer };
        for c in PRECEDENCE {
            if self.combos & (1 << c) == 0 {
                continue;
            }
            let scope = Scope {
                route: if c & ROUTE != 0 { Some(route?) } else { None },
                service: if c & SERVICE != 0 {
                    match service {
                        Some(s) => Some(s),
                        None => continue,
                    }
                } else {
                    None
                },
                consumer: if c & CONSUMER != 0 {
                    match consumer {
                        Some(s) => Some(s),
                        None => continue,
                    }
                } else {
                    None
                },
            };
            if let Some(i) = self.instances.get(&scope) {
                return Some((scope, i));
            }
        }
        None
    }
}

/// An immutable snapshot of the configured plugin instances: what runs for each request.
pub struct PluginSet {
    plugins: Arc<Plugins>,
    /// What runs for HTTP requests, and for stream sessions (Kong's two plugin iterators).
    lanes: [Lane; 2],
    all: Vec<Arc<dyn ErasedInstance>>,
}

/// The instances of one subsystem, for per-request lookups.
#[derive(Default)]
struct Lane {
    slots: Vec<Slot>,
    /// Some instance has a dynamic ordering: `access` sorts the plugins it runs.
    ordered: bool,
    globals: Vec<Vec<Arc<dyn ErasedInstance>>>,
}

/// An instance runs for HTTP requests.
const HTTP_LANE: u8 = 1;
/// An instance runs for stream sessions.
const STREAM_LANE: u8 = 2;

/// The lanes `protocols` belong to.
fn lanes_of<'a>(protocols: impl IntoIterator<Item = &'a str>) -> u8 {
    protocols.into_iter().fold(0, |m, p| match p {
        "tcp" | "tls" | "udp" | "tls_passthrough" => m | STREAM_LANE,
        _ => m | HTTP_LANE,
    })
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet").field("instances", &self.all.len()).finish()
    }
}

/// Builds a [`PluginSet`].
pub struct PluginSetBuilder {
    plugins: Arc<Plugins>,
    entries: Vec<(usize, Arc<dyn ErasedInstance>, u8)>,
    /// Dynamic orderings: (plugin index, scope, ordering).
    orderings: Vec<(usize, Scope, Ordering)>,
    /// "Runs before" pairs of plugin names, from every ordering so far.
    before: Vec<(String, String)>,
}

fn scope_violation(field: &str) -> SchemaViolation {
    let mut fields = serde_json::Map::new();
    fields.insert(field.to_owned(), Value::from("value must be null"));
    SchemaViolation::new(fields)
}

impl PluginSetBuilder {
    /// Validates `entity` against its plugin's schema and adds it. Disabled entities are
    /// validated and left out, as Kong does.
    pub fn add(&mut self, entity: PluginEntity) -> Result<&mut Self, LoadError> {
        let index = self
            .plugins
            .index_of(&entity.name)
            .ok_or_else(|| LoadError::NotEnabled(entity.name.clone()))?;
        let ty = &self.plugins.types[index];
        let meta = ty.meta();
        let invalid = |violation| LoadError::Invalid {
            name: entity.name.clone(),
            violation,
        };
        for (forbidden, set, field) in [
            (meta.no_consumer, entity.scope.consumer.is_some(), "consumer"),
            (meta.no_route, entity.scope.route.is_some(), "route"),
            (meta.no_service, entity.scope.service.is_some(), "service"),
        ] {
            if forbidden && set {
                return Err(invalid(scope_violation(field)));
            }
        }
        let instance = ty
            .instantiate(entity.id, entity.scope, entity.config.clone())
            .map_err(invalid)?;
        if entity.enabled {
            if self
                .entries
                .iter()
                .any(|(i, e, _)| *i == index && e.scope() == entity.scope)
            {
                let mut fields = serde_json::Map::new();
                fields.insert(
                    "@entity".into(),
                    Value::Array(vec![Value::from(format!(
                        "a plugin '{}' is already configured for this scope",
                        entity.name
                    ))]),
                );
                return Err(invalid(SchemaViolation::new(fields)));
            }
            if let Some(ordering) = &entity.ordering {
                let added = ordering
                    .before
                    .iter()
                    .map(|b| (entity.name.clone(), b.clone()))
                    .chain(ordering.after.iter().map(|a| (a.clone(), entity.name.clone())));
                let mut before = self.before.clone();
                before.extend(added);
                if has_cycle(&before) {
                    let mut fields = serde_json::Map::new();
                    fields.insert("ordering".into(), Value::from(CIRCULAR_ORDERING));
                    return Err(invalid(SchemaViolation::new(fields)));
                }
                self.before = before;
                self.orderings.push((index, entity.scope, ordering.clone()));
            }
            let lanes = match &entity.protocols {
                Some(p) => lanes_of(p.iter().map(String::as_str)),
                None => lanes_of(ty.schema().default_protocols().iter().copied()),
            };
            self.entries.push((index, instance, lanes));
        }
        Ok(self)
    }

    /// The snapshot.
    pub fn build(self) -> PluginSet {
        let all = self.entries.iter().map(|(_, inst, _)| inst.clone()).collect();
        let lane = |bit: u8| {
            let entries = self.entries.iter().filter(|(_, _, lanes)| lanes & bit != 0);
            let orderings = self.orderings.iter().filter(|(index, scope, _)| {
                self.entries
                    .iter()
                    .any(|(i, inst, lanes)| i == index && inst.scope() == *scope && lanes & bit != 0)
            });
            Lane::build(entries, orderings)
        };
        PluginSet {
            lanes: [lane(HTTP_LANE), lane(STREAM_LANE)],
            plugins: self.plugins,
            all,
        }
    }
}

impl Lane {
    fn build<'a>(
        entries: impl Iterator<Item = &'a (usize, Arc<dyn ErasedInstance>, u8)>,
        orderings: impl Iterator<Item = &'a (usize, Scope, Ordering)>,
    ) -> Lane {
        let mut slots: Vec<(usize, Slot)> = Vec::new();
        let mut globals: Vec<Vec<(usize, Arc<dyn ErasedInstance>)>> = vec![Vec::new(); Phase::ALL.len()];
        for (index, inst, _) in entries {
            let index = *index;
            let meta = inst.meta();
            let scope = inst.scope();
            if scope.is_global() {
                for phase in meta.phases.iter() {
                    globals[phase as usize].push((index, inst.clone()));
                }
            }
            // A plugin that runs in no per-request phase after routing changes nothing there:
            // leave it out of the per-request lookups.
            if !meta.phases.iter().any(|p| p >= Phase::Access) {
                continue;
            }
            let pos = match slots.iter().position(|(i, _)| *i == index) {
                Some(p) => p,
                None => {
                    slots.push((
                        index,
                        Slot {
                            combos: 0,
                            instances: ScopeMap::default(),
                            orderings: HashMap::new(),
                            no_consumer: meta.no_consumer,
                            no_route: meta.no_route,
                            no_service: meta.no_service,
                        },
                    ));
                    slots.len() - 1
                }
            };
            let slot = &mut slots[pos].1;
            slot.combos |= 1 << combo(&scope);
            slot.instances.insert(scope, inst.clone());
        }
        let mut ordered = false;
        for (index, scope, ordering) in orderings {
            if let Some((_, slot)) = slots.iter_mut().find(|(i, _)| i == index) {
                slot.orderings.insert(*scope, ordering.clone());
                ordered = true;
            }
        }
        slots.sort_by_key(|(i, _)| *i);
        for g in &mut globals {
            g.sort_by_key(|(i, _)| *i);
        }
        Lane {
            slots: slots.into_iter().map(|(_, s)| s).collect(),
            ordered,
            globals: globals
                .into_iter()
                .map(|g| g.into_iter().map(|(_, i)| i).collect())
                .collect(),
        }
    }
}

/// Collecting phases and the phases their collected plugins run in afterwards.
const HTTP_DOWNSTREAM: [Phase; 4] = [Phase::Response, Phase::HeaderFilter, Phase::BodyFilter, Phase::Log];
const WS_DOWNSTREAM: [Phase; 3] = [Phase::WsClientFrame, Phase::WsUpstreamFrame, Phase::WsClose];
const STREAM_DOWNSTREAM: [Phase; 1] = [Phase::Log];

impl PluginSet {
    /// A builder for a snapshot of `plugins`' instances.
    pub fn builder(plugins: Arc<Plugins>) -> PluginSetBuilder {
        PluginSetBuilder {
            plugins,
            entries: Vec::new(),
            orderings: Vec::new(),
            before: Vec::new(),
        }
    }

    /// A snapshot with no instances.
    pub fn empty(plugins: Arc<Plugins>) -> PluginSet {
        PluginSet::builder(plugins).build()
    }

    /// The loaded plugin types.
    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    /// Runs `configure` of every loaded plugin type that defines it, with its enabled
    /// instances in this snapshot (or none). Call before the snapshot takes traffic.
    pub async fn configure(&self) {
        for ty in &self.plugins.types {
            let meta = ty.meta();
            if !meta.phases.contains(Phase::Configure) {
                continue;
            }
            let instances: Vec<Arc<dyn ErasedInstance>> = self
                .all
                .iter()
                .filter(|i| i.meta().index == meta.index)
                .cloned()
                .collect();
            if let Err(err) = catch(ty.configure(&self.plugins.node, &instances)).await {
                tracing::error!(target: "kong", "failed to execute plugin '{}:configure ({err})'", meta.name);
            }
        }
    }

    /// Whether any global instance handles `phase` (the gateway skips building a transaction
    /// for the `certificate` phase otherwise).
    pub fn has_globals(&self, phase: Phase) -> bool {
        self.lanes.iter().any(|l| !l.globals[phase as usize].is_empty())
    }

    /// The instances that run for `tx`'s subsystem.
    fn lane(&self, tx: &Transaction) -> &Lane {
        match tx.subsystem {
            crate::transaction::Subsystem::Stream => &self.lanes[1],
            _ => &self.lanes[0],
        }
    }

    /// Whether a later phase (`header_filter`, `body_filter`, `log`) has handlers for `tx`:
    /// the instances collected in access, or the globals when access never ran.
    pub fn handles(&self, tx: &Transaction, phase: Phase) -> bool {
        let list = tx
            .collected
            .as_deref()
            .unwrap_or(&self.lane(tx).globals[phase as usize]);
        list.iter().any(|i| i.meta().phases.contains(phase))
    }

    /// Runs `certificate` of the global instances.
    pub async fn run_certificate(&self, tx: &mut Transaction) {
        self.run_globals(Phase::Certificate, tx).await;
    }

    /// Runs `rewrite` of the global instances. An exit or error stops the phase; the request
    /// then skips access and proxying.
    pub async fn run_rewrite(&self, tx: &mut Transaction) {
        self.run_globals(Phase::Rewrite, tx).await;
    }

    async fn run_globals(&self, phase: Phase, tx: &mut Transaction) {
        for inst in &self.lane(tx).globals[phase as usize] {
            if !self.call(phase, inst, tx).await || tx.exit.is_some() {
                break;
            }
        }
    }

    /// Runs the collecting `access` phase (call after routing set `tx.route`/`tx.service`).
    pub async fn run_access(&self, tx: &mut Transaction) {
        self.collect(Phase::Access, &HTTP_DOWNSTREAM, tx).await;
    }

    /// Runs the collecting `ws_handshake` phase of a WebSocket service.
    pub async fn run_ws_handshake(&self, tx: &mut Transaction) {
        self.collect(Phase::WsHandshake, &WS_DOWNSTREAM, tx).await;
    }

    /// Runs the collecting `preread` phase of a stream connection.
    pub async fn run_preread(&self, tx: &mut Transaction) {
        self.collect(Phase::Preread, &STREAM_DOWNSTREAM, tx).await;
    }

    async fn collect(&self, phase: Phase, downstream: &[Phase], tx: &mut Transaction) {
        if phase == Phase::Access && self.lane(tx).ordered && self.collect_ordered(downstream, tx).await {
            return;
        }
        let route = tx.route.as_ref().map(|r| r.id);
        let service = tx.service.as_ref().map(|s| s.id);
        let mut collected = Vec::new();
        for slot in &self.lane(tx).slots {
            let consumer = tx.consumer.as_ref().map(|c| c.id);
            let Some((_, inst)) = slot.lookup(route, service, consumer) else {
                continue;
            };
            let phases = inst.meta().phases;
            if downstream.iter().any(|p| phases.contains(*p)) {
                collected.push(inst.clone());
            }
            if phase == Phase::Access && phases.contains(Phase::Response) {
                tx.buffered = true;
            }
            if phases.contains(phase) && tx.exit.is_none() {
                self.call(phase, inst, tx).await;
            }
        }
        tx.collected = Some(collected.into());
    }

    /// `access` with dynamic ordering, when a plugin selected for the request has one
    /// (`false`, with nothing run, when none has): the instances are selected first (with the
    /// consumer known when `access` starts: Kong Enterprise does not order consumer-scoped
    /// plugins), run in the `legacy` order, and collected in priority order for the later
    /// phases.
    async fn collect_ordered(&self, downstream: &[Phase], tx: &mut Transaction) -> bool {
        let route = tx.route.as_ref().map(|r| r.id);
        let service = tx.service.as_ref().map(|s| s.id);
        let consumer = tx.consumer.as_ref().map(|c| c.id);
        let selected: Vec<(&Arc<dyn ErasedInstance>, Option<&Ordering>)> = self
            .lane(tx)
            .slots
            .iter()
            .filter_map(|slot| {
                let (scope, inst) = slot.lookup(route, service, consumer)?;
                Some((inst, slot.orderings.get(&scope)))
            })
            .collect();
        if selected.iter().all(|(_, o)| o.is_none()) {
            return false;
        }
        let names: Vec<(&str, Option<&Ordering>)> = selected.iter().map(|(i, o)| (i.meta().name, *o)).collect();
        let mut collected = Vec::new();
        for (inst, _) in &selected {
            let phases = inst.meta().phases;
            if downstream.iter().any(|p| phases.contains(*p)) {
                collected.push((*inst).clone());
            }
            if phases.contains(Phase::Response) {
                tx.buffered = true;
            }
        }
        for at in dynamic_order(&names) {
            let inst = selected[at].0;
            if inst.meta().phases.contains(Phase::Access) && tx.exit.is_none() {
                self.call(Phase::Access, inst, tx).await;
            }
        }
        tx.collected = Some(collected.into());
        true
    }

    /// Runs `response` with the buffered upstream response in `tx.upstream_response`.
    pub async fn run_response(&self, tx: &mut Transaction) {
        self.run_downstream(Phase::Response, tx, true).await;
    }

    /// Runs `header_filter`; afterwards the headers count as sent.
    pub async fn run_header_filter(&self, tx: &mut Transaction) {
        self.run_downstream(Phase::HeaderFilter, tx, true).await;
        tx.response.headers_sent = true;
    }

    /// Runs `body_filter` over one chunk and returns the chunk to send. A failing filter
    /// marks the transaction aborted (the gateway cuts the response).
    pub async fn run_body_filter(&self, tx: &mut Transaction, chunk: Bytes, eof: bool) -> Bytes {
        tx.body.chunk = chunk;
        tx.body.eof = eof;
        self.run_downstream(Phase::BodyFilter, tx, true).await;
        std::mem::take(&mut tx.body.chunk)
    }

    /// Runs `log`. Failures are logged and the other plugins still run.
    pub async fn run_log(&self, tx: &mut Transaction) {
        self.run_downstream(Phase::Log, tx, false).await;
    }

    /// Runs `ws_client_frame` or `ws_upstream_frame` over the frame in `tx.frame`, in
    /// priority order, each handler seeing the earlier ones' changes. A handler that drops
    /// the frame, closes the session or fails ends the phase.
    pub async fn run_ws_frame(&self, tx: &mut Transaction, from_client: bool) {
        let phase = if from_client {
            Phase::WsClientFrame
        } else {
            Phase::WsUpstreamFrame
        };
        let collected = tx.collected.clone();
        let list = collected.as_deref().unwrap_or(&self.lane(tx).globals[phase as usize]);
        for inst in list.iter().filter(|i| i.meta().phases.contains(phase)) {
            let ok = self.call(phase, inst, tx).await;
            let Some(state) = &tx.frame else { break };
            if !ok || state.dropped || state.close.is_some() {
                break;
            }
        }
    }

    /// Runs `ws_close`.
    pub async fn run_ws_close(&self, tx: &mut Transaction) {
        self.run_downstream(Phase::WsClose, tx, false).await;
    }

    async fn run_downstream(&self, phase: Phase, tx: &mut Transaction, stop_on_failure: bool) {
        // A WebSocket session collected its plugins for the WebSocket phases only: Kong runs
        // no `header_filter`, `body_filter` or `log` handler for it, even on its error answers.
        if tx.websocket && !WS_DOWNSTREAM.contains(&phase) {
            return;
        }
        let stop_on_exit = matches!(phase, Phase::Response | Phase::HeaderFilter);
        // The collected instances, or the globals when access never ran. A shared handle, not
        // taken out: a call that is dropped half-way leaves them for the phases after it.
        let collected = tx.collected.clone();
        let list = collected.as_deref().unwrap_or(&self.lane(tx).globals[phase as usize]);
        for inst in list.iter().filter(|i| i.meta().phases.contains(phase)) {
            let had_exit = tx.exit.is_some();
            let ok = self.call(phase, inst, tx).await;
            if (!ok && stop_on_failure) || (stop_on_exit && !had_exit && tx.exit.is_some()) {
                break;
            }
        }
    }

    /// Calls one handler; on error or panic, logs it with the plugin's name and applies
    /// Kong's consequence for the phase. Returns whether the handler succeeded.
    async fn call(&self, phase: Phase, inst: &Arc<dyn ErasedInstance>, tx: &mut Transaction) -> bool {
        let span = plugin_span(phase, inst.meta().name, tx);
        let result = catch(inst.call(phase, tx)).await;
        if let (Some(span), Some(trace)) = (span, tx.trace.as_mut()) {
            trace.finish(span, None);
        }
        let Err(err) = result else { return true };
        let name = inst.meta().name;
        // A returned `Exit` is the response, where the phase may produce one.
        let err = match err.get_ref().downcast_ref::<crate::pdk::Exit>() {
            Some(exit) if phase.may_respond() => match exit.apply(tx, phase) {
                Ok(()) => return true,
                Err(e) => crate::Error::from(e),
            },
            _ => err,
        };
        crate::pdk::log::record(tx, crate::pdk::Level::Err, format!("[{name}] {phase} failed: {err}"));
        match phase {
            Phase::Certificate
            | Phase::Rewrite
            | Phase::Access
            | Phase::Preread
            | Phase::WsHandshake
            | Phase::Response => {
                unexpected(tx);
            }
            Phase::HeaderFilter => {
                if !tx.response.headers_sent {
                    unexpected(tx);
                }
            }
            Phase::BodyFilter => tx.aborted = true,
            Phase::WsClientFrame | Phase::WsUpstreamFrame => {
                if let Some(f) = &mut tx.frame {
                    f.failed = true;
                }
            }
            Phase::Log | Phase::WsClose | Phase::InitWorker | Phase::Configure => {}
        }
        false
    }
}

/// Starts the span of a plugin's rewrite, access or header_filter when the node records it
/// (`kong.<phase>.plugin.<name>`).
fn plugin_span(phase: Phase, name: &str, tx: &mut Transaction) -> Option<crate::tracer::SpanRef> {
    use crate::tracer::Instrumentations;
    let trace = tx.trace.as_mut()?;
    let what = match phase {
        Phase::Rewrite => Instrumentations::PLUGIN_REWRITE,
        Phase::Access => Instrumentations::PLUGIN_ACCESS,
        Phase::HeaderFilter => Instrumentations::PLUGIN_HEADER_FILTER,
        _ => return None,
    };
    if !trace.records(what) {
        return None;
    }
    trace.start_span(format!("kong.{phase}.plugin.{name}"), Default::default())
}

/// Replaces the response with Kong's `500 An unexpected error occurred`.
fn unexpected(tx: &mut Transaction) {
    tx.response.headers.clear();
    tx.exit = None;
    tx.error_response(500, "An unexpected error occurred", None);
    tx.source = Some(Source::Error);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Waker};

    use serde_json::json;

    use super::*;
    use crate::entities::Route;
    use crate::pdk::NodeInfo;
    use crate::prelude::*;
    use crate::transaction::ClientConn;

    static LOGGED: AtomicBool = AtomicBool::new(false);

    /// A body_filter that never finishes, and a log phase that says it ran.
    #[plugin(priority = 1, version = "1.0.0", name = "exec-test-stuck-filter")]
    struct Stuck {}

    #[handler]
    impl Handler for Stuck {
        async fn body_filter(&self, _kong: &mut Kong<BodyFilter>) -> crate::Result {
            std::future::pending().await
        }

        async fn log(&self, _kong: &mut Kong<Log>) -> crate::Result {
            LOGGED.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_dropped_phase_call_leaves_the_collected_plugins_to_log() {
        let plugins = Arc::new(
            crate::registry::Plugins::builder(NodeInfo::default())
                .with::<Stuck>()
                .build(),
        );
        let route = Arc::new(Route::new(&["/"]));
        let mut builder = PluginSet::builder(plugins.clone());
        // Route-scoped: only collection in access makes it run in the later phases.
        builder
            .add(PluginEntity::new("exec-test-stuck-filter", json!({})).route(route.id))
            .unwrap();
        let set = builder.build();
        let mut tx = Transaction::handshake(ClientConn::default(), 8000, plugins.node_arc());
        tx.route = Some(route);
        set.run_access(&mut tx).await;
        {
            let mut filtering = std::pin::pin!(set.run_body_filter(&mut tx, Bytes::from("x"), true));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(filtering.as_mut().poll(&mut cx).is_pending());
        }
        set.run_log(&mut tx).await;
        assert!(LOGGED.load(Ordering::SeqCst), "log ran for the collected plugin");
    }
}

#[cfg(test)]
mod ordering_tests {
    use super::*;

    fn before(names: &[&str]) -> Ordering {
        Ordering {
            before: names.iter().map(|n| (*n).to_owned()).collect(),
            after: Vec::new(),
        }
    }

    #[test]
    fn dependencies_are_placed_right_before_their_dependants() {
        // Priority order: a, b, c, d. `d` runs before `b`; `a` runs after `c`.
        let d = before(&["b"]);
        let a = Ordering {
            before: Vec::new(),
            after: vec!["c".into()],
        };
        let order = dynamic_order(&[("a", Some(&a)), ("b", None), ("c", None), ("d", Some(&d))]);
        let names: Vec<&str> = order.iter().map(|i| ["a", "b", "c", "d"][*i]).collect();
        assert_eq!(names, ["c", "a", "d", "b"]);
        // Without orderings, priority order.
        assert_eq!(dynamic_order(&[("a", None), ("b", None)]), [0, 1]);
    }

    #[test]
    fn contradicting_orderings_are_a_cycle() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert!(!has_cycle(&[pair("a", "b"), pair("b", "c"), pair("a", "c")]));
        assert!(has_cycle(&[pair("a", "b"), pair("b", "c"), pair("c", "a")]));
        assert!(has_cycle(&[pair("a", "a")]));
    }
}
