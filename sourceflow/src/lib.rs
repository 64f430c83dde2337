//! placeholder docs
#![warn(missing_docs)]

pub mod aggregate;
pub mod bus;
pub mod error;
mod flow;
pub mod message;
mod projection;
pub mod registry;
pub mod saga;
pub mod store;
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
