//! CQRS, event sourcing and sagas for Rust.
//!
//! Annotate plain structs and `impl` blocks; sourceflow generates statically typed routing
//! tables at compile time, runs each command through its saga, commits the command, the entity
//! state and the events atomically, and delivers the events to views and aggregates.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sourceflow::prelude::*;
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Command)]
//! #[command(name = "bank.Deposit")]
//! pub struct Deposit { pub amount: i64 }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! #[event(name = "bank.Deposited")]
//! pub struct Deposited { pub amount: i64, pub balance: i64 }
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
//! pub struct Account { pub balance: i64 }
//!
//! #[derive(Default)]
//! pub struct AccountSaga;
//!
//! #[saga(entity = Account)]
//! impl AccountSaga {
//!     #[handles]
//!     async fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext)
//!         -> Result<(), DomainError>
//!     {
//!         if cmd.amount <= 0 { return Err(DomainError::rejected("amount must be positive")); }
//!         account.balance += cmd.amount;
//!         cx.publish(Deposited { amount: cmd.amount, balance: account.balance });
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
//! pub struct Summary { pub balance: i64, pub deposits: u32 }
//!
//! #[derive(Default)]
//! pub struct SummaryView;
//!
//! #[view(model = Summary)]
//! impl SummaryView {
//!     #[projects_on]
//!     async fn deposited(&self, summary: &mut Summary, e: &Deposited) {
//!         summary.balance = e.balance;
//!         summary.deposits += 1;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let flow = SourceFlow::builder().store(MemoryStore::new()).build().await?;
//! let id = EntityId::new();
//! flow.send(&id, Deposit { amount: 100 }).await?;
//! // Read your writes: the view has applied the event when `send` returns.
//! let summary: Summary = flow.view_model(&id).await?.unwrap();
//! assert_eq!((summary.balance, summary.deposits), (100, 1));
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//! - [`message`]: the traits the derives implement, ids, envelopes, receipts.
//! - [`SourceFlow`] and its [`Builder`]: sending, reading, replaying, rebuilding.
//! - [`bus`]: dispatchers (the seam for remote transports) and retry policy.
//! - [`store`]: the storage contract ([`store::Store`], and [`store::StoreAdmin`] for tooling),
//!   the data-fidelity rule, and [`MemoryStore`]; SQL stores live in `sourceflow-sqlx`, and
//!   `sourceflow-testkit` checks a store of your own against the contract.
//! - [`lifecycle`]: deleting and archiving streams ([`SourceFlow::delete_stream`],
//!   [`SourceFlow::archive_stream`]) and the events views receive when they happen.
//! - [`registry`]: a read-only listing of what the macros registered, and the linker caveat.
//! - [`Error`]: what can go wrong; [`Location`] says where a payload that does not encode or
//!   decode is.
//! - [`testing`]: a given/when/then harness for sagas.
//!
//! # Consistency contract
//! Each guarantee is proven by a scenario in the workspace's `tests/src/scenarios.rs`, run
//! against `MemoryStore`, `SqliteStore` and `PostgresStore` (`tests/tests/runtime_*.rs`), and
//! by real OS processes in `tests/tests/processes.rs`.
//!
//! 1. **Read your writes.** When `send` returns `Ok`, every view and aggregate of this process
//!    has applied the command's events. A view may opt into background projection
//!    ([`Builder::background`]); [`SourceFlow::catch_up`] waits for it. *(`read_your_writes`)*
//!    On the fast path a view that this process keeps up applies the events before the commit
//!    and its model writes commit in the command's own transaction
//!    ([`store::InlineProjection`]): one transaction per command, and no moment where the
//!    command is stored but its view is not. The store re-checks every assumption (the view's
//!    position, where the events land) and refuses the batch if one fails; the events are then
//!    projected after the commit from the stored models. [`Stats::projected_inline`] counts the
//!    fast path. *(`views_commit_with_their_command`)* Under concurrency, on a store that
//!    commits groups ([`store::GroupCommit`]; Postgres), the same holds for a whole group of
//!    this process's commands: the views apply the group's events before its commit and their
//!    writes commit in the group's transaction ([`Stats::projected_in_groups`]).
//!    *(`groups_of_concurrent_commands_commit_their_views_writes_with_them`, conformance group
//!    `group`)*
//! 2. **Exactly once, in order.** A view applies a batch of events and commits its model writes
//!    with its new position, compare-and-set on the old one; a second process that got there
//!    first makes the commit fail and this one continues from the stored position. A crash
//!    loses the writes and the position together, and catch-up applies them once.
//!    *(`views_exactly_once_across_handles`, `sqlite/postgres_two_processes_one_account`,
//!    `*_writer_killed_mid_load`)*
//! 3. **Nothing skipped.** Global positions become visible in order (SQLite has one writer;
//!    Postgres serialises the position allocation until commit), so a reader that has seen
//!    position `p` never later finds an event below `p`. *(`subscribe_sees_everything_in_order`,
//!    and the Postgres conformance test holding a transaction open)*
//! 4. **Reactions exactly once.** A follow-up command sent from a `#[subscribes]` method gets a
//!    message id derived from the event id, the handler and its index, so a re-run reaction is
//!    acknowledged as a duplicate. *(`reactions_exactly_once`)*
//! 5. **Idempotency keys.** [`SendOptions::message_id`] makes a resend return the original
//!    receipt without running the handler; concurrent duplicates commit once; keys are scoped
//!    to the stream. *(`resent_message_id_runs_once`, `idempotency_keys`)*
//! 6. **Validation before persistence.** Commands are checked before the handler, events before
//!    the commit; [`Error::Invalid`] lists every problem with its field; nothing is stored.
//!    *(`validation_before_persistence`, `rejection_persists_nothing`)*
//! 7. **Change data capture.** [`SourceFlow::subscribe`] catches up from the log, then follows
//!    live commits in global order. *(`subscribe_sees_everything_in_order`)*
//! 8. **The entity state is a cache.** Dropped, it is rebuilt from the command log;
//!    [`SourceFlow::verify`] names the first sequence where stored data and a replay disagree.
//!    *(`entity_state_is_a_cache`, `replay_and_rebuild_match_live`)*
//! 9. **Admin listing.** Entity types with streams and the stream ids of a type, paged.
//!    *(`admin_listing`)*
//! 10. **Concurrent writers.** Conflicts are retried with jittered backoff, bounded by the
//!     [`RetryPolicy`]; the result is exact and sequences stay dense.
//!     *(`contention_on_one_stream`)*
//! 11. **Deleted streams stay deleted.** [`SourceFlow::delete_stream`] commits a tombstone
//!     through the optimistic path and erases the stream's history in place in the same
//!     transaction: later sends fail with [`Error::StreamDeleted`], reads find nothing, views
//!     receive [`StreamDeleted`], and readers of the global log carry on past the erased
//!     events. [`SourceFlow::archive_stream`] moves a stream's history to the archive, from
//!     which it replays. *(`tests/src/lifecycle.rs`: `deleted_stream_refuses_sends_and_reads_empty`,
//!     `readers_continue_past_a_deleted_stream`,
//!     `delete_racing_sends_never_commits_after_the_tombstone`,
//!     `archived_stream_replays_from_the_archive`)*
//!
//! # Telemetry
//! `tracing` spans `sourceflow.send` (fields `command`, `stream`, `saga`, `seq`),
//! `sourceflow.project` (`handler`) and `sourceflow.schedule.fire` (`schedule`, `command`,
//! `stream`, `attempt`). Metrics through the `metrics` facade:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `sourceflow.commands.committed` | counter | commands committed |
//! | `sourceflow.commands.conflicts` | counter | handler re-runs after a concurrency conflict |
//! | `sourceflow.commands.duplicates` | counter | resent message ids acknowledged |
//! | `sourceflow.commands.rejected` | counter | commands refused by a handler |
//! | `sourceflow.command.duration_seconds` | histogram | send to commit, per command |
//! | `sourceflow.projection.failed` | counter | projection batches that failed (retried by catch-up) |
//! | `sourceflow.outbox.failed` | counter | follow-up commands that could not be delivered |
//! | `sourceflow.schedule.scheduled` | counter | commands scheduled (committed) |
//! | `sourceflow.schedule.cancel_requested` | counter | cancels committed by handlers |
//! | `sourceflow.schedule.cancelled` | counter | schedules cancelled by [`SourceFlow::cancel`] |
//! | `sourceflow.schedule.fired` | counter | scheduled commands sent (not counting duplicates) |
//! | `sourceflow.schedule.failed` | counter | scheduled commands refused or undeliverable |
//! | `sourceflow.schedule.fire_delay_seconds` | histogram | due time to send, per fired command |
#![warn(missing_docs)]

// The layers, bottom up: base, codec, store, context, routes and registry, signals, write and
// read (side by side), flow, then testing. A module imports only from layers below its own
// (`tests/layering.rs` checks it); ARCHITECTURE.md draws them and traces a command through.
mod base;
mod codec;
mod context;
mod flow;
mod read;
pub mod registry;
mod routes;
mod signals;
pub mod store;
pub mod testing;
mod write;

pub use base::{error, lifecycle, message, validate};
pub use context::{reaction as aggregate, saga, view};
pub use write::bus;

pub mod schedule {
    //! Scheduled commands: durable, cancellable, fired exactly once.
    //!
    //! A saga handler schedules a command with [`SagaContext::schedule`] (committed with its
    //! unit of work) and cancels one with [`SagaContext::cancel`]; a reaction with
    //! [`ReactionContext::schedule`]; outside handlers, [`SourceFlow::schedule`] and
    //! [`SourceFlow::cancel`]. The flow's scheduler (started by the builder, see
    //! [`Builder::scheduler`]) claims due schedules, oldest first, and sends each command
    //! through the ordinary dispatch path with a message id derived from the schedule id, so
    //! the command runs once even when several processes share the store or one dies while
    //! firing. A cancel and a firing of one schedule are exclusive: exactly one wins, and
    //! [`SourceFlow::cancel`] reports which ([`CancelOutcome`]).
    //!
    //! The time comes from the flow's [`Clock`]: the [`SystemClock`] by default, a
    //! [`ManualClock`] in tests, which [`SagaTest`] advances.
    //!
    //! Metrics: `sourceflow.schedule.scheduled`, `.fired`, `.cancelled`, `.failed` (counters)
    //! and `sourceflow.schedule.fire_delay_seconds` (histogram: how late after its due time a
    //! command was sent); spans `sourceflow.schedule.fire` (see the
    //! [crate docs](crate#telemetry)).
    //!
    //! [`SagaContext::schedule`]: crate::SagaContext::schedule
    //! [`SagaContext::cancel`]: crate::SagaContext::cancel
    //! [`ReactionContext::schedule`]: crate::ReactionContext::schedule
    //! [`SourceFlow::schedule`]: crate::SourceFlow::schedule
    //! [`SourceFlow::cancel`]: crate::SourceFlow::cancel
    //! [`Builder::scheduler`]: crate::Builder::scheduler
    //! [`SagaTest`]: crate::testing::SagaTest

    pub use crate::base::clock::{Clock, ManualClock, SystemClock};
    pub use crate::store::schedule::{
        CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleRecord, ScheduleState,
        ScheduleStore, When,
    };
    pub use crate::write::schedule::SchedulerOptions;
}

pub mod personal {
    //! Personal data: fields encrypted at rest with a key per subject, and forgetting a subject.
    //!
    //! Wrap a field of a command, event, entity or view model in [`Personal`], naming the
    //! subject (a customer, a user) whose key protects it. The flow's store seals such fields
    //! on every write (AES-256-GCM, a random nonce per field, the subject as associated
    //! data) and opens them on every read, so the database holds ciphertext only while
    //! handlers and views see plaintext. A subject's key is made the first time one of its
    //! fields is written, and kept in the store's key table ([`Store::keys`]) or in an external
    //! [`KeyStore`] ([`Builder::key_store`]).
    //!
    //! [`SourceFlow::forget`] deletes a subject's key: from then on its fields read as
    //! redacted everywhere ([`Personal::get`] is `None`) and are stored redacted when written
    //! again; replay, rebuild and `verify` keep working on the redacted values.
    //!
    //! [`Store::keys`]: crate::store::Store::keys
    //! [`Builder::key_store`]: crate::Builder::key_store
    //! [`SourceFlow::forget`]: crate::SourceFlow::forget

    pub use crate::base::personal::Personal;
    pub use crate::store::keys::{KeyState, KeyStore, SubjectKey};
    pub use crate::store::NewKey;
    pub use crate::store::SealedStore;
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use bus::{CommandDispatcher, OutgoingCommand, RetryPolicy, SendOptions};
pub use context::ReactionContext;
pub use context::SagaContext;
pub use context::ViewContext;
pub use error::{DomainError, Error, Location, Result};
pub use flow::{Builder, SourceFlow};
pub use lifecycle::{StreamArchived, StreamDeleted, StreamStatus};
pub use message::{
    Command, CommandReceipt, Entity, EntityId, Envelope, Event, EventMeta, Message, Position,
    RecordedEvent, Sequence, StreamId, ViewModel,
};
pub use read::subscriber::Progress;
pub use signals::Stats;
pub use store::MemoryStore;
pub use validate::{Validate, Violation, Violations};
pub use write::{At, Verification};

pub use sourceflow_macros::{
    aggregate, applies, handles, projects_on, saga, subscribes, upcast, view, Command, Entity,
    Event, ViewModel,
};

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::base::personal::Personal;
    pub use crate::{
        aggregate, applies, handles, projects_on, saga, subscribes, upcast, view, Command,
        CommandReceipt, DomainError, Entity, EntityId, Error, Event, EventMeta, MemoryStore,
        Position, ReactionContext, SagaContext, SendOptions, Sequence, SourceFlow, StreamId,
        Validate, ViewContext, ViewModel, Violations,
    };
}
