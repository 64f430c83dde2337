//! What handlers get: the contexts passed to `#[handles]`, `#[subscribes]` and
//! `#[projects_on]` methods, through which they publish events, send follow-up commands and
//! load view models. The runtime fills them in and reads back what the handler recorded.

pub mod reaction;
pub mod saga;
pub(crate) mod schedule;
pub mod view;

pub use reaction::ReactionContext;
pub use saga::SagaContext;
pub use view::ViewContext;
