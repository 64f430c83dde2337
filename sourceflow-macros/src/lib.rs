//! Derives and attributes for [sourceflow](https://docs.rs/sourceflow). Use them through
//! `sourceflow` (`use sourceflow::prelude::*;`), never from this crate directly: the generated
//! code names `::sourceflow::...`.
//!
//! - `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]`, `#[derive(ViewModel)]` give
//!   a type its stable wire name (and version, and validation) and register its codec.
//! - `#[saga]` + `#[handles]`, `#[view]` + `#[projects_on]`, `#[aggregate]` + `#[subscribes]`
//!   turn marked methods into entries of a static route table, registered at link time.
//!
//! Every macro reads its input, checks it, and only then generates code; mistakes are
//! reported together, on the offending tokens, with what to write instead.
#![warn(missing_docs)]

mod aggregate;
mod applies;
mod attr;
mod component;
mod message;
mod saga;
mod signature;
mod upcast;
mod view;

use proc_macro::TokenStream;

use component::Marker;

/// Makes a type a command: a request to change one entity, handled by exactly one saga.
///
/// The type must also derive `Serialize` and `Deserialize`, and cannot be generic.
///
/// ```text
/// #[derive(Debug, Clone, Serialize, Deserialize, Command)]
/// #[command(name = "bank.Deposit", validate = check_deposit)]
/// pub struct Deposit { pub amount: i64 }
///
/// fn check_deposit(cmd: &Deposit, v: &mut Violations) {
///     v.check(cmd.amount <= 0, "amount", "must be positive");
/// }
/// ```
///
/// `#[command(..)]` keys, all optional:
/// - `name = "bank.Deposit"`: the stable wire name stored with every command (default: the
///   type's name). Renaming the Rust type then does not break stored logs.
/// - `validate = path::to_fn`: a `fn(&Deposit, &mut Violations)` run before the handler;
///   or the bare flag `validate` to use the type's `Validate` impl.
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::Command, input.into()).into()
}

/// Makes a type an event: a fact recorded in an entity's stream.
///
/// The type must also derive `Serialize` and `Deserialize`, and cannot be generic.
///
/// ```text
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// #[event(name = "bank.Deposited", version = 2)]
/// pub struct Deposited { pub amount: i64, pub balance: i64 }
/// ```
///
/// `#[event(..)]` keys, all optional: `name = ".."` (default: the type's name),
/// `version = 2` (the payload schema version stored with each event, default 1), and
/// `validate = path::to_fn` or `validate` as for [`Command`](derive@Command); events are
/// checked before they are committed.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::Event, input.into()).into()
}

/// Makes a type an entity: the state a saga owns, cached from its command stream.
///
/// The type must also implement `Serialize`, `Deserialize`, `Default` and `Clone`.
///
/// ```text
/// #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
/// #[entity(name = "bank.Account")] // optional; default: the type's name
/// pub struct Account { pub balance: i64 }
/// ```
#[proc_macro_derive(Entity, attributes(entity))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::Entity, input.into()).into()
}

/// Makes a type a view model: a read model maintained by a `#[view]`.
///
/// The type must also implement `Serialize`, `Deserialize`, `Default` and `Clone`.
///
/// ```text
/// #[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
/// #[view_model(name = "bank.AccountSummary")] // optional; default: the type's name
/// pub struct AccountSummary { pub balance: i64, pub deposits: u32 }
/// ```
#[proc_macro_derive(ViewModel, attributes(view_model))]
pub fn derive_view_model(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::ViewModel, input.into()).into()
}

/// Makes an `impl` block a saga: each `#[handles]` method handles one command type.
///
/// ```text
/// #[saga(entity = Account)]       // or `#[saga]` for a process manager without entity
/// impl AccountSaga {
///     #[handles]
///     async fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext)
///         -> Result<(), DomainError>
///     {
///         account.balance += cmd.amount;
///         cx.publish(Deposited { amount: cmd.amount, balance: account.balance });
///         Ok(())
///     }
/// }
/// ```
///
/// Keys: `entity = Type` (the entity the saga owns; omit it for an entity-less saga) and
/// `name = ".."` (default: the type's name).
///
/// `#[handles]` methods take `&self`, then `&mut Entity` (only with `entity =`), then
/// `&Command`, then optionally `&mut SagaContext`. They may be `async` or not, and return
/// `()` or `Result<(), E>` with `E: Into<DomainError>`. A saga handles each command type once.
/// A saga type that implements `Default` is discovered automatically; others are registered
/// by value with the builder.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    saga::expand(args.into(), item.into()).into()
}

/// Marks a method of a `#[saga]` impl block as the handler of the command it takes.
///
/// Only meaningful inside `#[saga]`, which reads and removes it; anywhere else it is an error.
/// See [`saga`](macro@saga) for the accepted signatures.
#[proc_macro_attribute]
pub fn handles(_args: TokenStream, item: TokenStream) -> TokenStream {
    misplaced(Marker::Handles, item)
}

/// Makes an `impl` block a view: each `#[projects_on]` method projects one event type onto
/// the view's model.
///
/// ```text
/// #[view(model = AccountSummary)]
/// impl AccountSummaryView {
///     #[projects_on]
///     async fn deposited(&self, summary: &mut AccountSummary, e: &Deposited) {
///         summary.balance = e.balance;
///     }
///
///     #[projects_on(id = customer_id)]  // key the model by a field of the event
///     fn opened(&self, summary: &mut AccountSummary, e: &AccountOpened, meta: &EventMeta) {}
///
///     #[projects_on]                    // load and save any number of models
///     async fn closed(&self, e: &AccountClosed, cx: &mut ViewContext) -> Result<(), Error> {
///         cx.delete::<AccountSummary>(cx.meta().entity_id());
///         Ok(())
///     }
/// }
/// ```
///
/// Keys: `model = Type` (required: the view model), `name = ".."` (default: the type's name;
/// the key of the view's stored position), and the flag `background` (project after `send`
/// returns instead of before; `flow.catch_up()` waits for it).
#[proc_macro_attribute]
pub fn view(args: TokenStream, item: TokenStream) -> TokenStream {
    view::expand(args.into(), item.into()).into()
}

/// Marks a method of a `#[view]` impl block as the projection of the event it takes.
///
/// `#[projects_on(id = field)]` keys the model by that field of the event instead of the
/// event's entity id. Only meaningful inside `#[view]`; see [`view`](macro@view).
#[proc_macro_attribute]
pub fn projects_on(_args: TokenStream, item: TokenStream) -> TokenStream {
    misplaced(Marker::ProjectsOn, item)
}

/// Makes an `impl` block an aggregate: each `#[subscribes]` method reacts to one event type
/// of the entity, after it commits, and may send follow-up commands exactly once.
///
/// ```text
/// #[aggregate(entity = Account)]
/// impl OverdraftPolicy {
///     #[subscribes]
///     async fn overdrawn(&self, e: &Overdrawn, cx: &mut ReactionContext) {
///         cx.send(ChargeOverdraftFee { fee: 25 });
///     }
/// }
/// ```
///
/// Keys: `entity = Type` (required) and `name = ".."` (default: the type's name).
/// `#[subscribes]` methods take `(&self, e: &Event)` or `(&self, e: &Event, cx: &mut
/// ReactionContext)`, `async` or not, returning `()` or `Result<(), E: Into<DomainError>>`.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    aggregate::expand(args.into(), item.into()).into()
}

/// Marks a method of an `#[aggregate]` impl block as a reaction to the event it takes.
///
/// Only meaningful inside `#[aggregate]`; see [`aggregate`](macro@aggregate).
#[proc_macro_attribute]
pub fn subscribes(_args: TokenStream, item: TokenStream) -> TokenStream {
    misplaced(Marker::Subscribes, item)
}

/// Makes an impl block of an entity its event appliers: each method folds one of the entity's
/// own events into its state. An entity with appliers is rebuilt from its recorded events
/// (upcast to today's versions) on replay, `state_at` and cache misses, instead of by
/// re-running its commands through today's handlers; the command log stays the audit trail,
/// and `verify` reports the first command after which the two disagree.
///
/// ```text
/// #[applies]
/// impl Account {
///     fn opened(&mut self, e: &Opened) { self.owner = e.owner.clone(); }
///     fn deposited(&mut self, e: &Deposited, meta: &EventMeta) { self.balance = e.balance; }
/// }
/// ```
///
/// Methods take `(&mut self, &Event)` or `(&mut self, &Event, &EventMeta)` and return nothing;
/// events without an applier leave the state as it is.
#[proc_macro_attribute]
pub fn applies(args: TokenStream, item: TokenStream) -> TokenStream {
    applies::expand(args.into(), item.into()).into()
}

/// Declares one upcaster step: how a stored payload of version `from` of a command or event
/// type becomes version `from + 1`. Steps chain: a row of version 1 of a type at version 3 runs
/// the step `from = 1`, then the step `from = 2`, then decodes as today's type.
///
/// ```text
/// // On the JSON value, in place:
/// #[upcast(Deposited, from = 1)]
/// fn deposited_gains_currency(payload: &mut serde_json::Value) {
///     payload["currency"] = "EUR".into();
/// }
///
/// // Typed, keeping the old Rust type (any `Deserialize` type; it need not be registered):
/// #[upcast(Deposited, from = 2, name = "bank.MoneyDeposited")]
/// fn deposited_v2(old: DepositedV2) -> DepositedV3 { old.into() }
/// ```
///
/// Keys: the message type first, `from = n` (required: the version the step reads), and
/// `name = ".."` when rows of version `n` were stored under another wire name (the step then
/// also renames the type). A step returns `()` / the new value, or `Result<_, E>` with
/// `E: Display` to refuse a payload, which reads fail with `Error::Upcast`.
/// `SourceFlow::builder().build()` reports holes in a chain, two steps for one version, and steps
/// for versions the type never had.
#[proc_macro_attribute]
pub fn upcast(args: TokenStream, item: TokenStream) -> TokenStream {
    upcast::expand(args.into(), item.into()).into()
}

/// A marker reached on its own: it is not inside the impl block it belongs to. The item is
/// kept so that its own uses still compile and only this mistake is reported.
fn misplaced(marker: Marker, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let error =
        syn::Error::new(proc_macro2::Span::call_site(), marker.misplaced(None)).to_compile_error();
    quote::quote!(#item #error).into()
}
