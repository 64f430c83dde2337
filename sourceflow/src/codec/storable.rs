//! What every backend can store and read back identically: a value is checked before it is
//! encoded, so that one the JSON encoding would change is refused with the field it concerns
//! instead of being stored and then unreadable.
//!
//! Two kinds of value JSON cannot carry:
//! - a float that is not finite (`NaN`, `inf`, `-inf`): `serde_json` writes it as `null`, which
//!   then does not decode as a float (or silently becomes `None` in an `Option`);
//! - nesting deeper than [`MAX_DEPTH`] arrays and objects: `serde_json` refuses to decode it.
//!
//! Every other value (any string, including U+0000; every finite float, including `-0.0`; every
//! integer) is stored as the exact JSON text and reads back bit for bit on every backend.

use std::borrow::Cow;
use std::fmt;

use serde::ser::{self, Serialize};

use crate::base::error::{Error, Location};
use crate::base::validate::Violations;

/// The deepest nesting of JSON arrays and objects that reads back (`serde_json`'s decoder
/// stops at 128 levels).
pub const MAX_DEPTH: usize = 127;

/// Why a value was not encoded.
#[derive(Debug)]
pub enum EncodeError {
    /// Fields JSON cannot carry so that they read back identically.
    Unstorable(Violations),
    /// The value's own `Serialize` impl failed.
    Serde(serde_json::Error),
}

impl EncodeError {
    /// The runtime's error for value `name` going to `at`: [`Error::Invalid`] naming the
    /// fields, or [`Error::Encode`].
    pub(crate) fn into_error(self, name: &str, at: impl FnOnce() -> Location) -> Error {
        match self {
            EncodeError::Unstorable(mut violations) => {
                violations.message = name.to_owned();
                Error::Invalid(violations)
            }
            EncodeError::Serde(source) => Error::Encode {
                name: name.to_owned(),
                at: at(),
                source,
            },
        }
    }
}

/// Encodes `value` as JSON after checking that it reads back identically.
///
/// # Errors
/// [`EncodeError::Unstorable`] naming each field that JSON cannot carry,
/// [`EncodeError::Serde`] if the value's own `Serialize` impl fails.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    // The first walk only looks: it keeps no path, so a value that reads back costs no
    // allocation. Only a value it finds fault with is walked again, naming each field.
    let mut look = Walk::default();
    let found = match value.serialize(&mut look) {
        Ok(()) if look.found => {
            let mut named = Walk {
                named: true,
                ..Walk::default()
            };
            value
                .serialize(&mut named)
                .map_err(|Custom(message)| EncodeError::Serde(ser::Error::custom(message)))?;
            named.violations
        }
        Ok(()) => Violations::default(),
        Err(Custom(message)) => return Err(EncodeError::Serde(ser::Error::custom(message))),
    };
    if !found.is_empty() {
        return Err(EncodeError::Unstorable(found));
    }
    // Sized for a typical message, so that most are written without growing.
    let mut bytes = Vec::with_capacity(ENCODED_CAPACITY);
    serde_json::to_writer(&mut bytes, value).map_err(EncodeError::Serde)?;
    Ok(bytes)
}

/// The bytes an encoded payload starts with room for.
const ENCODED_CAPACITY: usize = 128;

/// One step of the path to a field, kept unformatted (and mostly borrowed) until a violation
/// needs the field's name: walking a value that reads back allocates no path.
enum Segment {
    Name(&'static str),
    Key(Cow<'static, str>),
    Index(usize),
}

/// Walks a value as `serde_json` would write it, finding what would not read back: whether
/// anything does, or (`named`) each field that does, with its path.
#[derive(Default)]
struct Walk {
    /// Keep the path and name each violation; without it the walk only sets `found`.
    named: bool,
    found: bool,
    depth: usize,
    path: Vec<Segment>,
    /// Per open sequence: the index of its next element.
    indexes: Vec<usize>,
    /// A map key being serialised: its text becomes the next path segment.
    in_key: bool,
    key: Cow<'static, str>,
    too_deep: bool,
    violations: Violations,
}

impl Walk {
    fn field(&self) -> String {
        let mut field = String::new();
        for segment in &self.path {
            let name = match segment {
                Segment::Index(index) => {
                    field.push_str(&format!("[{index}]"));
                    continue;
                }
                Segment::Name(name) => name,
                Segment::Key(key) => &**key,
            };
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(name);
        }
        field
    }

    fn open(&mut self) {
        self.depth += 1;
        if self.depth > MAX_DEPTH && !self.too_deep {
            self.too_deep = true;
            self.found = true;
            if !self.named {
                return;
            }
            let field = self.field();
            self.violations.add(
                field,
                format!(
                    "nests deeper than {MAX_DEPTH} arrays and objects, which JSON cannot read back"
                ),
            );
        }
    }

    fn close(&mut self) {
        self.depth -= 1;
    }

    fn float(&mut self, finite: bool) {
        if self.in_key {
            self.key = Cow::Borrowed("<number>");
        } else if !finite {
            self.found = true;
            if !self.named {
                return;
            }
            let field = self.field();
            self.violations.add(
                field,
                "is not a finite number (NaN and infinities cannot be stored as JSON)",
            );
        }
    }

    fn scalar(&mut self, text: impl fmt::Display) {
        if self.in_key && self.named {
            self.key = Cow::Owned(text.to_string());
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        if !self.named {
            return value.serialize(&mut *self);
        }
        let index = self.indexes.last().copied().unwrap_or(0);
        if let Some(next) = self.indexes.last_mut() {
            *next += 1;
        }
        self.within(Segment::Index(index), value)
    }

    fn within<T: Serialize + ?Sized>(&mut self, at: Segment, value: &T) -> Result<(), Custom> {
        if !self.named {
            return value.serialize(&mut *self);
        }
        self.path.push(at);
        let done = value.serialize(&mut *self);
        self.path.pop();
        done
    }
}

/// A failure of the value's own `Serialize` impl.
#[derive(Debug)]
struct Custom(String);

impl fmt::Display for Custom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Custom {}

impl ser::Error for Custom {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Custom(msg.to_string())
    }
}

impl ser::Serializer for &mut Walk {
    type Ok = ();
    type Error = Custom;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Custom> {
        self.float(v.is_finite());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Custom> {
        self.float(v.is_finite());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Custom> {
        self.scalar(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Custom> {
        // Written as an array of numbers.
        self.open();
        self.close();
        self.scalar(format_args!("<{} bytes>", v.len()));
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Custom> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Custom> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Custom> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Custom> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Custom> {
        self.scalar(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Custom> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Custom> {
        self.open();
        let done = self.within(Segment::Name(variant), value);
        self.close();
        done
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Custom> {
        self.open();
        if self.named {
            self.indexes.push(0);
        }
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Custom> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Custom> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Custom> {
        self.open();
        if self.named {
            self.path.push(Segment::Name(variant));
            self.indexes.push(0);
        }
        self.open();
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Custom> {
        self.open();
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Custom> {
        self.open();
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Custom> {
        self.open();
        if self.named {
            self.path.push(Segment::Name(variant));
        }
        self.open();
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        self.element(value)
    }
    fn end(self) -> Result<(), Custom> {
        if self.named {
            self.indexes.pop();
        }
        self.close();
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        self.element(value)
    }
    fn end(self) -> Result<(), Custom> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        self.element(value)
    }
    fn end(self) -> Result<(), Custom> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        self.element(value)
    }
    fn end(self) -> Result<(), Custom> {
        if self.named {
            self.indexes.pop();
            self.path.pop();
        }
        self.close();
        self.close();
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Custom> {
        self.in_key = true;
        self.key = Cow::Borrowed("<key>");
        let done = key.serialize(&mut **self);
        self.in_key = false;
        done
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Custom> {
        let key = std::mem::take(&mut self.key);
        self.within(Segment::Key(key), value)
    }
    fn end(self) -> Result<(), Custom> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Custom> {
        self.within(Segment::Name(name), value)
    }
    fn end(self) -> Result<(), Custom> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walk {
    type Ok = ();
    type Error = Custom;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Custom> {
        self.within(Segment::Name(name), value)
    }
    fn end(self) -> Result<(), Custom> {
        if self.named {
            self.path.pop();
        }
        self.close();
        self.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Line {
        sku: String,
        price: f64,
    }

    #[derive(Serialize)]
    struct Order {
        lines: Vec<Line>,
        discount: Option<f32>,
        tags: BTreeMap<String, f64>,
    }

    fn fields(result: Result<Vec<u8>, EncodeError>) -> Vec<String> {
        match result {
            Err(EncodeError::Unstorable(v)) => v.items.into_iter().map(|i| i.field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn finite_values_encode_as_serde_json_does() {
        let order = Order {
            lines: vec![Line {
                sku: "a\0b".into(),
                price: -0.0,
            }],
            discount: Some(f32::MAX),
            tags: BTreeMap::from([("x".to_owned(), f64::MIN_POSITIVE)]),
        };
        assert_eq!(encode(&order).unwrap(), serde_json::to_vec(&order).unwrap());
    }

    #[test]
    fn non_finite_floats_are_named_by_their_field() {
        let order = Order {
            lines: vec![
                Line {
                    sku: "a".into(),
                    price: 1.0,
                },
                Line {
                    sku: "b".into(),
                    price: f64::NAN,
                },
            ],
            discount: Some(f32::INFINITY),
            tags: BTreeMap::from([("vip".to_owned(), f64::NEG_INFINITY)]),
        };
        assert_eq!(
            fields(encode(&order)),
            ["lines[1].price", "discount", "tags.vip"]
        );
        assert_eq!(fields(encode(&f64::NAN)), [""]);
    }

    #[test]
    fn nesting_is_counted_as_json_nests() {
        fn nested(levels: usize) -> serde_json::Value {
            (0..levels).fold(serde_json::Value::Null, |v, _| serde_json::json!([v]))
        }
        let deepest = nested(MAX_DEPTH);
        let bytes = encode(&deepest).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            deepest
        );
        let too_deep = nested(MAX_DEPTH + 1);
        assert!(serde_json::from_slice::<serde_json::Value>(
            &serde_json::to_vec(&too_deep).unwrap()
        )
        .is_err());
        assert_eq!(fields(encode(&too_deep)).len(), 1);

        #[derive(Serialize)]
        enum Tree {
            List(Vec<Tree>),
            Leaf,
        }
        // {"List":[ ... ]}: two levels per node.
        let tree = (0..64).fold(Tree::Leaf, |t, _| Tree::List(vec![t]));
        assert!(
            serde_json::from_slice::<serde_json::Value>(&serde_json::to_vec(&tree).unwrap())
                .is_err()
        );
        assert_eq!(fields(encode(&tree)).len(), 1);
        let tree = (0..63).fold(Tree::Leaf, |t, _| Tree::List(vec![t]));
        assert!(encode(&tree).is_ok());
    }
}
