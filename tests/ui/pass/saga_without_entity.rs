//! An entity-less saga (a pure process manager), with every handler shape.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct StartTransfer {
    pub from: String,
    pub to: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct Ping;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct Audit;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct Check;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct TransferStarted {
    pub amount: i64,
}

#[derive(Default)]
pub struct TransferProcess;

#[saga]
impl TransferProcess {
    #[handles]
    async fn start(&self, cmd: &StartTransfer, cx: &mut SagaContext) -> Result<(), DomainError> {
        if cmd.from == cmd.to {
            return Err(DomainError::rejected("same account"));
        }
        cx.publish(TransferStarted { amount: cmd.amount });
        cx.send(cmd.to.as_str(), Ping);
        Ok(())
    }

    #[handles]
    async fn ping(&self, _cmd: &Ping) {}

    #[handles]
    fn audit(&self, _cmd: &Audit, _cx: &mut SagaContext) {}

    #[handles]
    fn check(&self, _: &Check) -> Result<(), DomainError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct Notify;

#[derive(Default)]
pub struct Notifier;

#[sourceflow::saga(name = "notifications")]
impl Notifier {
    #[sourceflow::handles]
    async fn notify(&self, _cmd: &Notify) {}
}

fn main() {}
