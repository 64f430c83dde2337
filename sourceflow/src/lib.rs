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
//! - [`store`]: the storage contract and [`MemoryStore`]; SQL stores live in `sourceflow-sqlx`.
//! - [`registry`]: what the macros register at link time, and the linker caveat.
//! - [`testing`]: a given/when/then harness for sagas.
//!
//! # Guarantees
//! See the crate README's "Consistency contract": each guarantee names the test that proves it
//! on every backend.
//!
//! # Telemetry
//! `tracing` spans `sourceflow.send` (fields `command`, `stream`, `saga`, `seq`) and
//! `sourceflow.project` (`handler`). Metrics through the `metrics` facade:
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
#![warn(missing_docs)]

pub mod aggregate;
pub mod bus;
mod cache;
pub mod error;
mod flow;
pub mod message;
mod projection;
pub mod registry;
pub mod saga;
pub mod store;
pub mod testing;
pub mod validate;
pub mod view;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use aggregate::ReactionContext;
pub use bus::{CommandDispatcher, OutgoingCommand, RetryPolicy, SendOptions};
pub use error::{DomainError, Error, Result};
pub use flow::{At, Builder, SourceFlow, Stats, Verification};
pub use message::{
    Command, CommandReceipt, Entity, EntityId, Envelope, Event, EventMeta, Message, Position,
    RecordedEvent, Sequence, StreamId, ViewModel,
};
pub use projection::Progress;
pub use saga::SagaContext;
pub use store::MemoryStore;
pub use validate::{Validate, Violation, Violations};
pub use view::ViewContext;

pub use sourceflow_macros::{
    aggregate, handles, projects_on, saga, subscribes, view, Command, Entity, Event, ViewModel,
};

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::{
        aggregate, handles, projects_on, saga, subscribes, view, Command, CommandReceipt,
        DomainError, Entity, EntityId, Error, Event, EventMeta, MemoryStore, Position,
        ReactionContext, SagaContext, SendOptions, Sequence, SourceFlow, StreamId, Validate,
        ViewContext, ViewModel, Violations,
    };
}
