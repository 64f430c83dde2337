//! [`Personal<T>`]: a field of personal data, encrypted at rest with its subject's key and read
//! back as [redacted](Personal::is_redacted) once that subject is forgotten.
//!
//! A `Personal<T>` is a plain value in handlers and views. Its JSON names its subject next to
//! the value:
//!
//! ```text
//! {"$personal":"customer-42","value":"Alice Smith"}      in memory, on the way to the store
//! {"$personal":"customer-42","sealed":"<base64>"}         stored: the value encrypted
//! {"$personal":"customer-42"}                             redacted: the key is gone
//! ```
//!
//! The store layer turns the first form into the second on every write and back on every read
//! (see `store/sealed.rs`); a forgotten subject's fields read as the third. This type only
//! reads and writes those shapes: it never sees a key.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The JSON key that marks a personal field and carries its subject.
pub(crate) const SUBJECT_KEY: &str = "$personal";
/// The JSON key of a personal field's plaintext value.
pub(crate) const VALUE_KEY: &str = "value";
/// The JSON key of a personal field's stored ciphertext.
pub(crate) const SEALED_KEY: &str = "sealed";

/// Personal data about one subject (a customer, a user): encrypted at rest with a key of that
/// subject, and unreadable everywhere once the subject is forgotten
/// ([`SourceFlow::forget`](crate::SourceFlow::forget)).
///
/// Use it for fields of commands, events, entities and view models. Handlers and views read
/// it with [`get`](Self::get); after `forget` every read path (entity loads, replay, views'
/// catch-up and rebuild, `subscribe`, remote consumers) yields it redacted: `get` is `None`,
/// never an error and never the old value.
///
/// ```
/// use sourceflow::personal::Personal;
///
/// let email = Personal::new("customer-42", "alice@example.com".to_owned());
/// assert_eq!(email.get().map(String::as_str), Some("alice@example.com"));
/// assert_eq!(email.subject(), "customer-42");
///
/// let forgotten = Personal::<String>::redacted("customer-42");
/// assert_eq!(forgotten.get(), None);
/// assert_eq!(forgotten.or("[forgotten]"), "[forgotten]");
/// ```
///
/// The subject is stored in plaintext next to the ciphertext, so it should be an opaque id
/// (a customer number), not personal data itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Personal<T> {
    subject: String,
    value: Option<T>,
}

impl<T> Personal<T> {
    /// `value`, personal data of `subject`.
    pub fn new(subject: impl Into<String>, value: T) -> Self {
        Self {
            subject: subject.into(),
            value: Some(value),
        }
    }

    /// A redacted field of `subject`: what a forgotten subject's fields read as.
    pub fn redacted(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            value: None,
        }
    }

    /// The subject whose key protects this value.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The value, or `None` if its subject has been forgotten.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// True if the value is gone because its subject was forgotten.
    pub fn is_redacted(&self) -> bool {
        self.value.is_none()
    }

    /// The value, or `None` if its subject has been forgotten.
    pub fn into_inner(self) -> Option<T> {
        self.value
    }

    /// The value, or `placeholder` if its subject has been forgotten (for display).
    pub fn or<'a, U: ?Sized>(&'a self, placeholder: &'a U) -> &'a U
    where
        T: AsRef<U>,
    {
        self.value.as_ref().map_or(placeholder, AsRef::as_ref)
    }

    /// A field of the same subject holding `f` of this value (redacted stays redacted).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Personal<U> {
        Personal {
            subject: self.subject,
            value: self.value.map(f),
        }
    }

    /// A field of the same subject holding a reference to this value.
    pub fn as_ref(&self) -> Personal<&T> {
        Personal {
            subject: self.subject.clone(),
            value: self.value.as_ref(),
        }
    }
}

/// Debug output never shows the value: logs are not a place for personal data.
impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.value.is_some() {
            "<personal>"
        } else {
            "<redacted>"
        };
        f.debug_struct("Personal")
            .field("subject", &self.subject)
            .field("value", &format_args!("{shown}"))
            .finish()
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + usize::from(self.value.is_some())))?;
        map.serialize_entry(SUBJECT_KEY, &self.subject)?;
        if let Some(value) = &self.value {
            map.serialize_entry(VALUE_KEY, value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PersonalVisitor(PhantomData))
    }
}

struct PersonalVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for PersonalVisitor<T> {
    type Value = Personal<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a personal field: an object with \"$personal\" (its subject)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut subject: Option<String> = None;
        let mut value: Option<T> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Subject => subject = Some(map.next_value()?),
                Key::Value => value = Some(map.next_value()?),
                // Ciphertext that was not opened (no key at hand): the value is unreadable
                // here, which is what a redacted field means.
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let subject = subject.ok_or_else(|| de::Error::missing_field(SUBJECT_KEY))?;
        Ok(Personal { subject, value })
    }
}

/// A key of a personal field's object, read without copying it (a `Cow<str>` key would be
/// an owned copy: serde borrows only where a derive asks it to).
enum Key {
    Subject,
    Value,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key of a personal field")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            SUBJECT_KEY => Key::Subject,
            VALUE_KEY => Key::Value,
            _ => Key::Other,
        })
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Key, E> {
        std::str::from_utf8(key).map_or(Ok(Key::Other), |key| self.visit_str(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_read_back() {
        let plain = Personal::new("c-1", Some(5_i64));
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(json, r#"{"$personal":"c-1","value":5}"#);
        assert_eq!(
            serde_json::from_str::<Personal<Option<i64>>>(&json).unwrap(),
            plain
        );

        let null = Personal::new("c-1", None::<i64>);
        let json = serde_json::to_string(&null).unwrap();
        assert_eq!(json, r#"{"$personal":"c-1","value":null}"#);
        let back: Personal<Option<i64>> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.get(),
            Some(&None),
            "a null value is a value, not a redaction"
        );

        let redacted: Personal<String> = serde_json::from_str(r#"{"$personal":"c-1"}"#).unwrap();
        assert!(redacted.is_redacted());
        let escaped: Personal<i64> =
            serde_json::from_str(r#"{"\u0024personal":"c-1","v\u0061lue":5}"#).unwrap();
        assert_eq!(
            escaped,
            Personal::new("c-1", 5),
            "escaped keys read the same"
        );
        let sealed: Personal<String> =
            serde_json::from_str(r#"{"$personal":"c-1","sealed":"AAAA"}"#).unwrap();
        assert!(
            sealed.is_redacted(),
            "unopened ciphertext reads as redacted"
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let shown = format!("{:?}", Personal::new("c-1", "alice@example.com"));
        assert!(!shown.contains("alice"), "{shown}");
    }
}
