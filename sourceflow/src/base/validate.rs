//! Validation before persistence: checks declared on message types, run before anything is stored.

use std::fmt;

/// One failed check: the field it concerns and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The offending field (`"quantity"`, `"lines[2].price"`), or `""` for the whole message.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// Every problem found in one message, collected rather than stopping at the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations {
    /// The message these violations belong to (its wire name), filled in by the runtime.
    pub message: String,
    /// The failed checks, in the order they were found.
    pub items: Vec<Violation>,
}

impl Violations {
    /// Records a problem with `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) -> &mut Self {
        self.items.push(Violation {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// Records a problem with `field` when `failed` is true.
    pub fn check(
        &mut self,
        failed: bool,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Self {
        if failed {
            self.add(field, message);
        }
        self
    }

    /// True when no check failed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.message.is_empty() {
            write!(f, "{}: ", self.message)?;
        }
        for (i, v) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if v.field.is_empty() {
                f.write_str(&v.message)?;
            } else {
                write!(f, "{}: {}", v.field, v.message)?;
            }
        }
        Ok(())
    }
}

/// Checks a message implements itself; use with `#[command(validate)]` or `#[event(validate)]`.
///
/// ```
/// use sourceflow::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Command)]
/// #[command(validate)]
/// struct AddItem { sku: String, quantity: u32 }
///
/// impl Validate for AddItem {
///     fn validate(&self, v: &mut Violations) {
///         v.check(self.sku.is_empty(), "sku", "must not be empty");
///         v.check(self.quantity == 0, "quantity", "must be at least 1");
///     }
/// }
/// ```
pub trait Validate {
    /// Adds every problem found to `violations`.
    fn validate(&self, violations: &mut Violations);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem_with_its_field() {
        let mut v = Violations {
            message: "shop.AddItem".into(),
            ..Violations::default()
        };
        v.check(true, "quantity", "must be at least 1")
            .check(false, "sku", "never shown")
            .add("", "the order is closed");
        assert_eq!(
            v.to_string(),
            "shop.AddItem: quantity: must be at least 1; the order is closed"
        );
    }
}
