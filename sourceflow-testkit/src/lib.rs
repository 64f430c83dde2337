//! The storage contract of [`sourceflow`], as tests you run against your own store.
//!
//! A backend for sourceflow implements [`sourceflow::store::Store`]: the methods the runtime
//! calls to commit a command, load and save entity states, read the command log and the global
//! event log, and keep view models and handler positions. The rules it must keep (dense
//! sequences from 1 per stream, a conflict instead of an overwrite, a resent message id
//! answered with its original receipt, positions that a reader never sees appear out of order,
//! atomic commits) are written down in [`sourceflow::store`]. This crate checks them: each
//! rule is a scenario, an `async fn(Arc<dyn Store>)` that drives a fresh store and asserts
//! what it must answer, and [`store_conformance!`] turns every scenario into a test of your
//! crate. `MemoryStore`, `SqliteStore` and `PostgresStore` pass the same tests.
//!
//! # Groups
//!
//! | group | module | what it checks | who needs it |
//! |---|---|---|---|
//! | `core` | [`core_scenarios`] | commits, conflicts, idempotent message ids, entity versions, command and stream reads, the global log, positions, projections, the outbox | every store |
//! | `inline` | [`inline_scenarios`] | [`Store::commit_inline`](sourceflow::store::Store::commit_inline) writing a view's batch in the command's transaction | stores that override it (the provided implementation writes no batch, which is always correct) |
//! | `group` | [`group_scenarios`] | group commit: the units of concurrent senders committed in order in one transaction, with the views' projection of the whole group when its assumptions hold | stores whose [`Store::groups`](sourceflow::store::Store::groups) returns `Some` |
//! | `schedule` | [`schedule_scenarios`] | scheduled commands: committed with their unit only, claimed in due order by one caller at a time, cancels exclusive with claims | stores whose [`Store::schedules`](sourceflow::store::Store::schedules) returns `Some` |
//! | `keys` | [`key_scenarios`] | subject keys for personal data: made on first use (concurrent first uses agree; with the unit that first uses them, or not at all), forgotten for good | stores whose [`Store::keys`](sourceflow::store::Store::keys) returns `Some` |
//! | `lease` | [`lease_scenarios`] | leases: one holder at a time until its time runs out or it gives the lease up, one winner among concurrent takers | stores whose [`Store::leases`](sourceflow::store::Store::leases) returns `Some` |
//! | `lifecycle` | [`lifecycle_scenarios`] | deleting a stream (tombstone, erasure in place, positions and message ids kept), archiving and restoring it | stores that implement [`Store::delete_stream`](sourceflow::store::Store::delete_stream) and the archive methods (the provided implementations refuse) |
//! | `admin` | [`admin_scenarios`] | the tooling of [`StoreAdmin`](sourceflow::store::StoreAdmin): direct appends, time-range reads, model edits, listings | stores whose [`Store::admin`](sourceflow::store::Store::admin) returns `Some` |
//!
//! # A worked example
//!
//! Say your crate `my-store` has a `MyStore` that implements the core `Store` trait and
//! nothing else. Add the kit as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! sourceflow-testkit = "0.1"
//! ```
//!
//! and a test file, `tests/conformance.rs`, that tells the kit how to make a fresh store:
//!
//! ```no_run
//! # mod my_store { pub type MyStore = sourceflow::MemoryStore; }
//! use my_store::MyStore;
//! use sourceflow_testkit::{store_conformance, Fixture};
//!
//! store_conformance! {
//!     mod my_store_conformance {
//!         // Evaluated afresh, in an async block, for every test: each scenario gets an
//!         // empty store of its own.
//!         fixture: Fixture::new(MyStore::new()),
//!         // `MyStore` keeps the provided `commit_inline` and has no tooling, so the
//!         // `inline` and `admin` groups are left out.
//!         groups: [core],
//!     }
//! }
//! ```
//!
//! `cargo test` then runs one test per scenario, named after it
//! (`my_store_conformance::resent_message_id_is_accepted_once`, ...), each on a tokio runtime
//! of its own. A failing scenario panics with the assertion that did not hold: what was
//! written, what was expected back, what came back.
//!
//! `examples/btree-store` in the sourceflow repository is such a crate, complete: a store over
//! `BTreeMap`s behind a lock, in one file, that passes the `core` group.
//!
//! # Stores that need a server, or clean-up
//!
//! A fixture can release what the store used once the scenario is over
//! ([`Fixture::with_cleanup`]), and the attributes written before `mod` are put on every
//! generated test. A store that needs a database server marks its tests ignored when the
//! server is not configured, so that `cargo test` reports them as ignored rather than as
//! passed. With a build script that sets a `cfg` when the variable is present:
//!
//! ```no_run
//! // The build script, build.rs: the body of its `fn main`.
//! println!("cargo:rerun-if-env-changed=MY_DATABASE_URL");
//! println!("cargo:rustc-check-cfg=cfg(my_database)");
//! if std::env::var_os("MY_DATABASE_URL").is_some_and(|url| !url.is_empty()) {
//!     println!("cargo:rustc-cfg=my_database");
//! }
//! ```
//!
//! the test file reads:
//!
//! ```no_run
//! # mod my_store { pub struct MyStore; impl MyStore { pub async fn connect(_: &str) -> sourceflow::MemoryStore { sourceflow::MemoryStore::new() } pub async fn drop_schema(_: &str) {} } }
//! use my_store::MyStore;
//! use sourceflow_testkit::{store_conformance, Fixture};
//!
//! async fn fresh() -> Fixture {
//!     let url = std::env::var("MY_DATABASE_URL").expect("MY_DATABASE_URL is set");
//!     let store = MyStore::connect(&url).await;
//!     Fixture::with_cleanup(store, async move { MyStore::drop_schema(&url).await })
//! }
//!
//! store_conformance! {
//!     #[cfg_attr(not(my_database), ignore = "set MY_DATABASE_URL to run")]
//!     mod on_my_database {
//!         fixture: fresh().await,
//!         groups: [core, inline, admin],
//!     }
//! }
//! ```
//!
//! # Using the pieces yourself
//!
//! Every scenario is a plain `pub async fn` (see the group modules), [`run`] runs one the way
//! the generated tests do, and [`records`] has the builders and assertions the scenarios use,
//! for backend-specific tests of your own (a gap written behind the store's back, a schema
//! upgrade, several processes on one database).

mod fixture;

pub mod admin_scenarios;
pub mod core_scenarios;
pub mod group_scenarios;
pub mod inline_scenarios;
pub mod key_scenarios;
pub mod lease_scenarios;
pub mod lifecycle_scenarios;
pub mod records;
pub mod schedule_scenarios;

pub use fixture::{run, Fixture};

/// Instantiates the conformance scenarios as tests, one `#[test]` per scenario, in a module
/// of the caller's.
///
/// ```text
/// store_conformance! {
///     #[attribute]...                      // optional: put on every generated test
///     mod <module name> {
///         fixture: <expression>,           // a Fixture; evaluated in an async block, per test
///         groups: [<group>, ...],          // any of `core`, `inline`, `admin`, `schedule`,
///                                          // `keys`, `lease`, `lifecycle`
///     }
/// }
/// ```
///
/// The module sees its parent's items (`use super::*`), so the fixture expression may call the
/// test file's own functions, and may `.await`. Each test builds a multi-threaded tokio runtime
/// and runs one scenario with [`run`]; the calling crate needs no tokio dependency of its own.
/// See the [crate documentation](crate) for the groups and a worked example.
///
/// ```no_run
/// use sourceflow::MemoryStore;
/// use sourceflow_testkit::{store_conformance, Fixture};
///
/// store_conformance! {
///     mod memory {
///         fixture: Fixture::new(MemoryStore::new()),
///         groups: [core, inline, admin],
///     }
/// }
/// ```
#[macro_export]
macro_rules! store_conformance {
    (
        $(#[$attribute:meta])*
        mod $module:ident {
            fixture: $fixture:expr,
            groups: [$($group:ident),+ $(,)?] $(,)?
        }
    ) => {
        $crate::store_conformance!(@module [$(#[$attribute])*] $module $fixture; $($group),+);
    };
    (@module $attributes:tt $module:ident $fixture:expr; $($group:ident),+) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $($crate::__conformance_group!($group tests $attributes $fixture);)+
        }
    };
}

/// The scenarios of each group, listed once: expanded as tests by [`store_conformance!`] and
/// as names by this crate's check that every scenario is listed.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    (core $($how:tt)*) => {
        $crate::__conformance_expand! {core_scenarios [
            sequences_are_dense_from_one,
            append_at_existing_sequence_conflicts,
            streams_of_different_types_are_isolated,
            range_reads_are_inclusive,
            large_and_non_ascii_payloads_round_trip,
            ten_thousand_commands_load_in_order,
            resent_message_id_is_accepted_once,
            resent_message_id_is_found_in_a_long_stream,
            concurrent_duplicates_commit_once,
            entity_versions_are_optimistic,
            entity_with_models_reads_both,
            read_all_pages_in_global_order,
            positions_are_per_handler,
            commit_projection_is_compare_and_set,
            reset_projection_clears_models_and_position,
            view_models_page_in_id_order,
            outbox_pending_and_remove,
            sequence_invariants_hold_under_random_interleavings,
        ] $($how)*}
    };
    (inline $($how:tt)*) => {
        $crate::__conformance_expand! {inline_scenarios [
            inline_projection_commits_with_the_unit,
            inline_projection_is_refused_when_an_assumption_fails,
            inline_projection_is_atomic_with_the_unit,
        ] $($how)*}
    };
    (group $($how:tt)*) => {
        $crate::__conformance_expand! {group_scenarios [
            a_group_commits_its_units_and_views_together,
            a_group_whose_assumption_fails_commits_its_units_only,
            a_group_of_any_shape_commits_in_order,
            a_group_without_views_commits_its_units,
        ] $($how)*}
    };
    (admin $($how:tt)*) => {
        $crate::__conformance_expand! {admin_scenarios [
            direct_appends_at_an_existing_sequence_conflict,
            read_stream_reads_from_a_sequence,
            read_between_filters_by_time,
            deleted_entity_state_is_gone,
            view_models_get_put_delete_list_clear,
            non_ascii_names_and_large_models_round_trip,
            entity_types_and_stream_ids_are_paged,
            append_events_continue_the_stream,
            commands_and_event_appends_race,
        ] $($how)*}
    };
    (schedule $($how:tt)*) => {
        $crate::__conformance_expand! {schedule_scenarios [
            schedules_commit_with_their_unit,
            refused_units_schedule_nothing,
            claims_take_due_schedules_oldest_first,
            cancels_and_claims_exclude_each_other,
            released_claims_are_claimed_again_but_never_cancelled,
            concurrent_claims_never_share_a_schedule,
            cancel_racing_claim_has_one_winner,
            pending_schedules_page_in_due_order,
        ] $($how)*}
    };
    (keys $($how:tt)*) => {
        $crate::__conformance_expand! {key_scenarios [
            a_subject_has_no_key_until_its_first_use,
            subjects_are_exact_text,
            concurrent_first_uses_agree_on_one_key,
            a_forgotten_subject_never_gets_a_key_again,
            a_units_key_commits_with_it_or_not_at_all,
            a_unit_whose_subject_has_another_key_is_refused,
        ] $($how)*}
    };
    (lease $($how:tt)*) => {
        $crate::__conformance_expand! {lease_scenarios [
            a_lease_has_one_holder_until_its_time_runs_out,
            a_released_lease_is_free_at_once,
            concurrent_takers_get_one_lease,
            leases_are_independent_by_name,
        ] $($how)*}
    };
    (lifecycle $($how:tt)*) => {
        $crate::__conformance_expand! {lifecycle_scenarios [
            deletion_erases_in_place,
            deleting_the_newest_stream_keeps_positions,
            archiving_moves_records_and_restoring_brings_them_back,
            listings_page_past_deleted_streams,
        ] $($how)*}
    };
    ($unknown:ident $($how:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown conformance group `",
            ::core::stringify!($unknown),
            "`: the groups are `core`, `inline`, `group`, `admin`, `schedule`, `keys`, `lease` and `lifecycle`"
        ));
    };
}

/// One group's scenarios as tests (`tests [attributes] fixture`) or as names (`names`).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    ($group:ident [$($scenario:ident),+ $(,)?] tests $attributes:tt $fixture:expr) => {
        $($crate::__conformance_expand!(@test $attributes $fixture; $group::$scenario);)+
    };
    ($group:ident [$($scenario:ident),+ $(,)?] names) => {
        &[$(::core::stringify!($scenario)),+]
    };
    (@test [$(#[$attribute:meta])*] $fixture:expr; $group:ident::$scenario:ident) => {
        #[test]
        $(#[$attribute])*
        fn $scenario() {
            $crate::run(async { $fixture }, $crate::$group::$scenario);
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The `pub async fn`s of a group's source files: its scenarios.
    fn defined(sources: &[&str]) -> BTreeSet<String> {
        sources
            .iter()
            .flat_map(|source| source.lines())
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split('(').next())
            .map(str::to_owned)
            .collect()
    }

    fn listed(names: &[&str]) -> BTreeSet<String> {
        let set: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
        assert_eq!(set.len(), names.len(), "a scenario is listed twice");
        set
    }

    /// Every scenario a group's modules define is one the macro instantiates, and only those.
    #[test]
    fn the_macro_lists_every_scenario() {
        let core: &[&str] = crate::__conformance_group!(core names);
        assert_eq!(
            listed(core),
            defined(&[
                include_str!("core_scenarios/command_log.rs"),
                include_str!("core_scenarios/idempotency.rs"),
                include_str!("core_scenarios/entities.rs"),
                include_str!("core_scenarios/read_side.rs"),
                include_str!("core_scenarios/outbox.rs"),
                include_str!("core_scenarios/properties.rs"),
            ])
        );
        let inline: &[&str] = crate::__conformance_group!(inline names);
        assert_eq!(
            listed(inline),
            defined(&[include_str!("inline_scenarios.rs")])
        );
        let group: &[&str] = crate::__conformance_group!(group names);
        assert_eq!(
            listed(group),
            defined(&[include_str!("group_scenarios.rs")])
        );
        let schedule: &[&str] = crate::__conformance_group!(schedule names);
        assert_eq!(
            listed(schedule),
            defined(&[include_str!("schedule_scenarios.rs")])
        );
        let keys: &[&str] = crate::__conformance_group!(keys names);
        assert_eq!(listed(keys), defined(&[include_str!("key_scenarios.rs")]));
        let lease: &[&str] = crate::__conformance_group!(lease names);
        assert_eq!(
            listed(lease),
            defined(&[include_str!("lease_scenarios.rs")])
        );
        let lifecycle: &[&str] = crate::__conformance_group!(lifecycle names);
        assert_eq!(
            listed(lifecycle),
            defined(&[include_str!("lifecycle_scenarios.rs")])
        );
        let admin: &[&str] = crate::__conformance_group!(admin names);
        assert_eq!(
            listed(admin),
            defined(&[include_str!("admin_scenarios.rs")])
        );
    }
}
