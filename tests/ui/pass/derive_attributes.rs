//! Every key the derives accept: wire names, event versions, validation by function and by
//! `Validate` impl, defaults when nothing is given, and enums and unit structs as messages.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::Message as _;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "bank.OpenAccount", validate = checks::open_account)]
pub struct OpenAccount {
    pub owner: String,
}

mod checks {
    pub fn open_account(cmd: &super::OpenAccount, v: &mut sourceflow::Violations) {
        v.check(cmd.owner.is_empty(), "owner", "must not be empty");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(validate)]
pub struct Deposit {
    pub amount: i64,
}

impl Validate for Deposit {
    fn validate(&self, v: &mut Violations) {
        v.check(self.amount <= 0, "amount", "must be positive");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct CloseAccount;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "bank.Adjust")]
pub enum Adjust {
    Up(i64),
    Down { by: i64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bank.Deposited", version = 3, validate = deposited_is_positive)]
pub struct Deposited {
    pub amount: i64,
}

fn deposited_is_positive(e: &Deposited, v: &mut Violations) {
    v.check(e.amount <= 0, "amount", "must be positive");
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(validate)]
#[event(name = "bank.Closed")]
pub struct Closed;

impl Validate for Closed {
    fn validate(&self, _: &mut Violations) {}
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Opened {
    pub owner: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
#[entity(name = "bank.Account")]
pub struct Account {
    pub balance: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
pub struct Ledger;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
#[view_model(name = "bank.Summary")]
pub struct Summary {
    pub balance: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
pub struct Totals;

const _: () = {
    assert!(matches!(OpenAccount::NAME.as_bytes(), b"bank.OpenAccount"));
    assert!(matches!(Deposit::NAME.as_bytes(), b"Deposit"));
    assert!(matches!(CloseAccount::NAME.as_bytes(), b"CloseAccount"));
    assert!(matches!(Adjust::NAME.as_bytes(), b"bank.Adjust"));
    assert!(matches!(Deposited::NAME.as_bytes(), b"bank.Deposited"));
    assert!(Deposited::VERSION == 3);
    assert!(matches!(Closed::NAME.as_bytes(), b"bank.Closed"));
    assert!(Opened::VERSION == 1);
    assert!(matches!(Opened::NAME.as_bytes(), b"Opened"));
    assert!(matches!(Account::NAME.as_bytes(), b"bank.Account"));
    assert!(matches!(Ledger::NAME.as_bytes(), b"Ledger"));
    assert!(matches!(Summary::NAME.as_bytes(), b"bank.Summary"));
    assert!(matches!(Totals::NAME.as_bytes(), b"Totals"));
};

fn is_command<C: sourceflow::Command>() {}

fn main() {
    is_command::<OpenAccount>();
    is_command::<Adjust>();
    let mut v = Violations::default();
    OpenAccount { owner: String::new() }.validate_message(&mut v);
    Deposit { amount: 0 }.validate_message(&mut v);
    Deposited { amount: 0 }.validate_message(&mut v);
    assert_eq!(v.items.len(), 3);
}
