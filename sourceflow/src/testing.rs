//! A given/when/then harness for sagas.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sourceflow::prelude::*;
//! use sourceflow::testing::SagaTest;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
//! struct Withdraw { amount: i64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
//! struct Withdrawn { amount: i64, balance: i64 }
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
//! struct Wallet { balance: i64 }
//!
//! struct WalletSaga;
//!
//! #[saga(entity = Wallet)]
//! impl WalletSaga {
//!     #[handles]
//!     async fn withdraw(&self, wallet: &mut Wallet, cmd: &Withdraw, cx: &mut SagaContext)
//!         -> Result<(), DomainError>
//!     {
//!         if cmd.amount > wallet.balance {
//!             return Err(DomainError::with_code("insufficient_funds", "not enough money"));
//!         }
//!         wallet.balance -= cmd.amount;
//!         cx.publish(Withdrawn { amount: cmd.amount, balance: wallet.balance });
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = SagaTest::new(WalletSaga).await;
//! let id = EntityId::from("w-1");
//! test.given_state(&id, Wallet { balance: 50 }).await;
//! test.when(&id, Withdraw { amount: 20 }).await
//!     .expect_events([Withdrawn { amount: 20, balance: 30 }]);
//! test.when(&id, Withdraw { amount: 100 }).await
//!     .expect_rejected("insufficient_funds");
//! # }
//! ```

use std::fmt::Debug;

use crate::base::error::Error;
use crate::base::message::{
    Command, CommandReceipt, Entity, EntityId, Event, RecordedEvent, Sequence, StreamId,
};
use crate::flow::SourceFlow;
use crate::store::{MemoryStore, OutboxMessage};

/// A saga under test, on its own in-memory store. Follow-up commands are captured instead of
/// sent, so a test sees exactly what one command did.
pub struct SagaTest {
    flow: SourceFlow,
}

impl SagaTest {
    /// A harness running only `saga` (no views, aggregates or other sagas).
    ///
    /// # Panics
    /// If `saga` is not a `#[saga]` type.
    pub async fn new<S: Send + Sync + 'static>(saga: S) -> Self {
        let flow = SourceFlow::builder()
            .store(MemoryStore::new())
            .without_discovery()
            .keep_outbox()
            .saga(saga)
            .build()
            .await;
        match flow {
            Ok(flow) => Self { flow },
            Err(e) => panic!("SagaTest::new: {e}"),
        }
    }

    /// The flow behind the harness, for reads the helpers do not cover.
    pub fn flow(&self) -> &SourceFlow {
        &self.flow
    }

    /// Runs a command that must succeed, as history for the next `when`.
    ///
    /// # Panics
    /// If the command fails.
    pub async fn given<C: Command>(&self, id: impl Into<EntityId>, command: C) -> &Self {
        if let Err(e) = self.flow.send(id, command).await {
            panic!("given {}: {e}", C::NAME);
        }
        self.clear_follow_ups().await;
        self
    }

    /// Starts entity `id` from `state` instead of from its history.
    ///
    /// # Panics
    /// If the entity already has a stored state.
    pub async fn given_state<E: Entity>(&self, id: impl Into<EntityId>, state: E) -> &Self {
        let stream = StreamId::of::<E>(id);
        let bytes = match crate::codec::StateVtable::entity::<E>().encode_stored(&state) {
            Ok(bytes) => bytes,
            Err(e) => panic!("given_state: cannot encode {}: {e:?}", E::NAME),
        };
        if let Err(e) = self
            .flow
            .store()
            .put_entity(&stream, Sequence::ZERO, Sequence::ZERO, bytes)
            .await
        {
            panic!("given_state {stream}: {e}");
        }
        self
    }

    /// Sends a command and captures what happened.
    pub async fn when<C: Command>(&self, id: impl Into<EntityId>, command: C) -> Outcome {
        let result = self.flow.send(id, command).await;
        let follow_ups = self.clear_follow_ups().await;
        Outcome { result, follow_ups }
    }

    /// The entity's state now.
    ///
    /// # Panics
    /// If replaying fails.
    pub async fn state<E: Entity>(&self, id: impl Into<EntityId>) -> E {
        let stream = StreamId::of::<E>(id);
        match self.flow.store().get_entity(&stream).await {
            Ok(Some((_, bytes))) => {
                match crate::codec::StateVtable::entity::<E>().decode_stored(&bytes) {
                    Ok(state) => match state.downcast::<E>() {
                        Ok(state) => *state,
                        Err(_) => panic!("state of {stream}: not a {}", E::NAME),
                    },
                    Err(e) => panic!("state of {stream}: {e}"),
                }
            }
            Ok(None) => E::default(),
            Err(e) => panic!("state of {stream}: {e}"),
        }
    }

    async fn clear_follow_ups(&self) -> Vec<OutboxMessage> {
        let store = self.flow.store();
        let pending = store.outbox_pending(usize::MAX).await.unwrap_or_default();
        let ids: Vec<u64> = pending.iter().map(|p| p.id).collect();
        if let Err(e) = store.outbox_remove(&ids).await {
            panic!("clearing follow-ups: {e}");
        }
        pending.into_iter().map(|p| p.message).collect()
    }
}

/// What one command did: its receipt or error, and the follow-up commands it sent.
#[derive(Debug)]
pub struct Outcome {
    /// The result `send` returned.
    pub result: Result<CommandReceipt, Error>,
    /// Follow-up commands, in the order they were sent.
    pub follow_ups: Vec<OutboxMessage>,
}

impl Outcome {
    /// The receipt.
    ///
    /// # Panics
    /// If the command failed.
    pub fn receipt(&self) -> &CommandReceipt {
        match &self.result {
            Ok(receipt) => receipt,
            Err(e) => panic!("expected success, got: {e}"),
        }
    }

    /// The recorded events.
    ///
    /// # Panics
    /// If the command failed.
    pub fn events(&self) -> &[RecordedEvent] {
        &self.receipt().events
    }

    /// Asserts the command emitted exactly these events, in order.
    ///
    /// # Panics
    /// If it failed or emitted anything else.
    #[track_caller]
    pub fn expect_events<E: Event + PartialEq + Debug>(
        &self,
        expected: impl IntoIterator<Item = E>,
    ) -> &Self {
        let expected: Vec<E> = expected.into_iter().collect();
        let actual: Vec<E> = self
            .events()
            .iter()
            .map(|e| match e.decode::<E>() {
                Ok(e) => e,
                Err(_) => panic!(
                    "expected only {} events, got {} {}",
                    E::NAME,
                    e.envelope.name,
                    String::from_utf8_lossy(&e.payload)
                ),
            })
            .collect();
        assert_eq!(actual, expected, "events emitted");
        self
    }

    /// Asserts that, among the emitted events, there is one equal to `expected`.
    ///
    /// # Panics
    /// If there is none.
    #[track_caller]
    pub fn expect_event<E: Event + PartialEq + Debug>(&self, expected: E) -> &Self {
        let found = self
            .events()
            .iter()
            .filter_map(|e| e.decode::<E>().ok())
            .any(|e| e == expected);
        assert!(
            found,
            "expected event {expected:?}; emitted: {:?}",
            self.event_summaries()
        );
        self
    }

    /// Asserts the command succeeded without emitting events.
    ///
    /// # Panics
    /// Otherwise.
    #[track_caller]
    pub fn expect_no_events(&self) -> &Self {
        assert!(
            self.events().is_empty(),
            "expected no events; emitted: {:?}",
            self.event_summaries()
        );
        self
    }

    /// Asserts a follow-up command equal to `expected` was sent to `id`.
    ///
    /// # Panics
    /// If there is none.
    #[track_caller]
    pub fn expect_command<C: Command + PartialEq + Debug>(
        &self,
        id: impl Into<EntityId>,
        expected: C,
    ) -> &Self {
        let id = id.into();
        let found = self.follow_ups.iter().any(|m| {
            m.envelope.name == C::NAME
                && m.envelope.stream.id == id
                && serde_json::from_slice::<C>(&m.payload).is_ok_and(|c| c == expected)
        });
        assert!(
            found,
            "expected follow-up {expected:?} to {id}; sent: {:?}",
            self.follow_ups
                .iter()
                .map(|m| format!(
                    "{} to {}: {}",
                    m.envelope.name,
                    m.envelope.stream,
                    String::from_utf8_lossy(&m.payload)
                ))
                .collect::<Vec<_>>()
        );
        self
    }

    /// Asserts no follow-up command was sent.
    ///
    /// # Panics
    /// Otherwise.
    #[track_caller]
    pub fn expect_no_commands(&self) -> &Self {
        assert!(
            self.follow_ups.is_empty(),
            "expected no follow-up commands, got {}",
            self.follow_ups.len()
        );
        self
    }

    /// Asserts the handler refused the command with this code (or a message containing it).
    ///
    /// # Panics
    /// Otherwise.
    #[track_caller]
    pub fn expect_rejected(&self, code_or_message: &str) -> &Self {
        match &self.result {
            Err(Error::Rejected(e))
                if e.code == code_or_message || e.message.contains(code_or_message) => {}
            other => panic!("expected rejection {code_or_message:?}, got {other:?}"),
        }
        self
    }

    /// Asserts validation failed on `field`.
    ///
    /// # Panics
    /// Otherwise.
    #[track_caller]
    pub fn expect_invalid(&self, field: &str) -> &Self {
        match &self.result {
            Err(Error::Invalid(v)) if v.items.iter().any(|i| i.field == field) => {}
            other => panic!("expected a validation failure on {field:?}, got {other:?}"),
        }
        self
    }

    fn event_summaries(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.envelope.name,
                    String::from_utf8_lossy(&e.payload)
                )
            })
            .collect()
    }
}
