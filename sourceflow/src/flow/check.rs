//! The wiring rules [`Builder::build`](super::Builder::build) checks, one function each. Every
//! rule records its problems and the builder reports them all at once.

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use foldhash::HashMap;

use crate::codec::{ErasedComponent, TypeIndex, TypeKind, TypeRecord, UpcastRecord};
use crate::read::subscriber::Subscriber;
use crate::routes::{ComponentKind, ComponentRecord, Registry, RouteFn};
use crate::store::Store;
use crate::write::SagaRoute;

/// A component registered by value: its type, kind, Rust name and the instance (what the
/// builder collects and the rules below check).
pub(super) type Instance = (TypeId, ComponentKind, &'static str, ErasedComponent);

/// A store was given.
pub(super) fn check_store(
    store: Option<Arc<dyn Store>>,
    problems: &mut Vec<String>,
) -> Option<Arc<dyn Store>> {
    if store.is_none() {
        problems.push(
            "no store: call .store(MemoryStore::new()) (or SqliteStore / PostgresStore)".to_owned(),
        );
    }
    store
}

/// The components of the flow: explicit instances first (each must be a component of the kind
/// it was registered as, once), then, unless discovery is off, every linked `Default` one.
/// Returns them with the discovered components that could not be built (no `Default`).
pub(super) fn check_components(
    registry: &Registry,
    instances: Vec<Instance>,
    discover: bool,
    problems: &mut Vec<String>,
) -> (
    Vec<(ComponentRecord, ErasedComponent)>,
    HashMap<TypeId, &'static str>,
) {
    let mut chosen: Vec<(ComponentRecord, ErasedComponent)> = Vec::new();
    let mut seen = HashSet::new();
    for (type_id, kind, rust_name, instance) in instances {
        match registry.component(type_id) {
            Some(record) if record.kind == kind => {
                if seen.insert(type_id) {
                    chosen.push((*record, instance));
                } else {
                    problems.push(format!("`{rust_name}` is registered twice"));
                }
            }
            Some(record) => problems.push(format!(
                "`{rust_name}` is a {:?}, not a {kind:?}: register it with .{}(..)",
                record.kind,
                kind_method(record.kind)
            )),
            None => problems.push(format!(
                "`{rust_name}` is not a #[{}] type (or its crate is not linked)",
                kind_method(kind)
            )),
        }
    }
    let mut missing_instances: HashMap<TypeId, &'static str> = HashMap::default();
    if discover {
        let mut discovered: Vec<&ComponentRecord> = registry
            .components()
            .filter(|r| !seen.contains(&(r.type_id)()))
            .collect();
        discovered.sort_by_key(|r| r.name);
        for record in discovered {
            match (record.construct)() {
                Some(instance) => chosen.push((*record, instance)),
                None => {
                    missing_instances.insert((record.type_id)(), record.name);
                }
            }
        }
    }
    (chosen, missing_instances)
}

/// Every command has exactly one owner among the chosen sagas. Returns the routes and each
/// command's stream type.
pub(super) fn check_saga_owners(
    registry: &Registry,
    chosen: &[(ComponentRecord, ErasedComponent)],
    problems: &mut Vec<String>,
) -> (
    HashMap<TypeId, SagaRoute>,
    HashMap<TypeId, Cow<'static, str>>,
) {
    let mut sagas: HashMap<TypeId, SagaRoute> = HashMap::default();
    let mut streams: HashMap<TypeId, Cow<'static, str>> = HashMap::default();
    for (record, instance) in chosen.iter().filter(|(r, _)| r.kind == ComponentKind::Saga) {
        for route in registry.routes_of((record.type_id)()) {
            let RouteFn::Handle(handle) = route.call else {
                continue;
            };
            let command_id = (route.message)();
            let Some(command) = registry.type_record(command_id) else {
                problems.push(format!(
                    "command {} of saga {} is not registered",
                    (route.message_name)(),
                    record.name
                ));
                continue;
            };
            if let Some(existing) = sagas.get(&command_id) {
                problems.push(format!(
                    "command {} is handled by two sagas: {} and {}; each command needs exactly one owner",
                    command.name, existing.saga_name, record.name
                ));
                continue;
            }
            let stream_type = record.state.map_or(record.name, |s| s.name);
            streams.insert(command_id, Cow::Borrowed(stream_type));
            sagas.insert(
                command_id,
                SagaRoute {
                    saga: instance.clone(),
                    saga_name: record.name,
                    method: route.method,
                    handle,
                    state: record.state,
                    command: *command,
                },
            );
        }
    }
    debug_assert!(sagas.values().all(|r| !r.method.is_empty()));
    (sagas, streams)
}

/// No wire name is used by two types.
pub(super) fn check_wire_names(registry: &Registry, problems: &mut Vec<String>) {
    for (name, records) in by_name(registry) {
        if records.len() > 1 {
            let mut types: Vec<&str> = records.iter().map(|r| (r.rust_name)()).collect();
            types.sort_unstable();
            problems.push(format!(
                "wire name {name:?} is used by {}; give each a distinct name",
                types.join(" and ")
            ));
        }
    }
}

/// An alias (or the name an upcaster renames from) resolves to one type: it is neither another
/// type's name nor another type's alias.
pub(super) fn check_aliases(registry: &Registry, problems: &mut Vec<String>) {
    let mut claims: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for record in registry.types() {
        claims
            .entry(record.name)
            .or_default()
            .push((record.rust_name)());
    }
    let mut aliases: Vec<(&'static str, &'static str)> = Vec::new();
    for record in registry.types() {
        for alias in record.aliases {
            aliases.push((alias, (record.rust_name)()));
        }
    }
    for step in inventory::iter::<UpcastRecord> {
        if let Some(name) = step.stored_name {
            let target = (step.target_name)();
            if !aliases.contains(&(name, target)) {
                aliases.push((name, target));
            }
        }
    }
    aliases.sort_unstable();
    for (alias, rust_name) in aliases {
        let owners = claims.entry(alias).or_default();
        if !owners.is_empty() && !owners.contains(&rust_name) {
            problems.push(format!(
                "wire name {alias:?} is an earlier name of {rust_name} and also names {}; \
                 stored rows must resolve to one type",
                owners.join(" and ")
            ));
        }
        owners.push(rust_name);
    }
}

/// Upcaster chains are whole: each step belongs to a registered command or event, reads a
/// version below the type's, is the only step for its version, and every version from the
/// oldest step's up to the type's has a step; a command's steps need a saga linked into the
/// binary that handles the command (this flow may leave it out: a read side runs no saga).
pub(super) fn check_upcasters(registry: &Registry, problems: &mut Vec<String>) {
    let handled: HashSet<TypeId> = registry
        .components()
        .filter(|c| c.kind == ComponentKind::Saga)
        .flat_map(|c| registry.routes_of((c.type_id)()))
        .map(|r| (r.message)())
        .collect();
    let index = TypeIndex::global();
    let mut by_type: BTreeMap<&'static str, (Option<&TypeRecord>, Vec<&UpcastRecord>)> =
        BTreeMap::new();
    for step in inventory::iter::<UpcastRecord> {
        let record = registry
            .type_record((step.target)())
            .filter(|r| matches!(r.kind, TypeKind::Command | TypeKind::Event));
        let entry = by_type
            .entry((step.target_name)())
            .or_insert_with(|| (record, Vec::new()));
        entry.1.push(step);
    }
    for (rust_name, (record, mut steps)) in by_type {
        steps.sort_by_key(|s| (s.from, s.function));
        let Some(record) = record else {
            for step in &steps {
                problems.push(format!(
                    "upcaster {} is declared for {rust_name}, which is not a registered command \
                     or event",
                    step.function
                ));
            }
            continue;
        };
        if record.kind == TypeKind::Command && !handled.contains(&(record.type_id)()) {
            problems.push(format!(
                "upcasters of command {} ({}) are declared but no saga handles it",
                record.name,
                steps
                    .iter()
                    .map(|s| s.function)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for pair in steps.windows(2) {
            if pair[0].from == pair[1].from {
                problems.push(format!(
                    "two upcasters read version {} of {}: {} and {}; keep one",
                    pair[0].from, record.name, pair[0].function, pair[1].function
                ));
            }
        }
        for step in steps.iter().filter(|s| s.from >= record.version) {
            problems.push(format!(
                "upcaster {} reads version {} of {}, which is only at version {}: raise \
                 `version` on the type or remove the step",
                step.function, step.from, record.name, record.version
            ));
        }
        let oldest = steps.first().map_or(record.version, |s| s.from);
        for from in oldest..record.version {
            if index.step((record.type_id)(), from).is_none() {
                problems.push(format!(
                    "{} is version {} and its upcasters start at version {oldest}, but none \
                     reads version {from}: declare `#[upcast({}, from = {from})]`",
                    record.name,
                    record.version,
                    rust_name.rsplit("::").next().unwrap_or(rust_name)
                ));
            }
        }
    }
}

/// Every registered command has a saga in this flow (with discovery on), and a saga that
/// could not be built is named with the fix.
pub(super) fn check_commands_handled(
    registry: &Registry,
    sagas: &HashMap<TypeId, SagaRoute>,
    missing_instances: &HashMap<TypeId, &'static str>,
    discover: bool,
    problems: &mut Vec<String>,
) {
    for (name, records) in by_name(registry) {
        for record in records {
            if record.kind != TypeKind::Command || sagas.contains_key(&(record.type_id)()) {
                continue;
            }
            let owner = registry
                .components()
                .filter(|c| missing_instances.contains_key(&(c.type_id)()))
                .find(|c| {
                    registry
                        .routes_of((c.type_id)())
                        .iter()
                        .any(|r| (r.message)() == (record.type_id)())
                });
            match owner {
                Some(owner) => problems.push(format!(
                    "command {name} is handled by saga {} which has no Default impl: register an instance with .saga(..)",
                    owner.name
                )),
                None if discover => {
                    problems.push(format!("command {name} has no saga handling it"));
                }
                None => {}
            }
        }
    }
}

/// The registered types by wire name, in name order.
fn by_name(registry: &Registry) -> BTreeMap<&'static str, Vec<&TypeRecord>> {
    let mut by_name: BTreeMap<&'static str, Vec<&TypeRecord>> = BTreeMap::new();
    for record in registry.types() {
        by_name.entry(record.name).or_default().push(record);
    }
    by_name
}

/// Views and aggregates have distinct names (their positions are kept per name) and valid
/// routes. Returns them as subscribers; events nobody consumes are noted at debug level.
pub(super) fn check_subscribers(
    registry: &Registry,
    chosen: &[(ComponentRecord, ErasedComponent)],
    background_views: &HashSet<TypeId>,
    problems: &mut Vec<String>,
) -> Vec<Arc<Subscriber>> {
    let mut subscribers = Vec::new();
    let mut subscriber_names = HashSet::new();
    let mut consumed = HashSet::new();
    for (record, instance) in chosen.iter().filter(|(r, _)| r.kind != ComponentKind::Saga) {
        if !subscriber_names.insert(record.name) {
            problems.push(format!(
                "two views or aggregates are named {}; positions are kept per name, give one `name = \"..\"`",
                record.name
            ));
            continue;
        }
        let routes = registry.routes_of((record.type_id)());
        consumed.extend(routes.iter().map(|r| (r.message)()));
        let background = record.background || background_views.contains(&(record.type_id)());
        match Subscriber::new(record, instance.clone(), routes, background) {
            Ok(subscriber) => subscribers.push(Arc::new(subscriber)),
            Err(problem) => problems.push(problem),
        }
    }
    for record in registry.types().filter(|r| r.kind == TypeKind::Event) {
        if !consumed.contains(&(record.type_id)()) {
            tracing::debug!(
                event = record.name,
                "no view or aggregate consumes this event"
            );
        }
    }
    subscribers
}

/// The builder method that registers a component of this kind.
fn kind_method(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Saga => "saga",
        ComponentKind::View => "view",
        ComponentKind::Aggregate => "aggregate",
    }
}
