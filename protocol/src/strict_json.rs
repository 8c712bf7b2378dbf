//! Strict JSON: serde_json with one more rule, that an object never arrives as an array.
//!
//! serde's derived `Deserialize` for a struct also takes a sequence and reads the fields by
//! position, so to plain serde_json `["dave", "correct horse battery"]` is a
//! `CreateAccountRequest`. Field order must not become wire format, so the server reads
//! every request body and client frame with [`from_slice`] or [`from_str`]. They parse
//! through [`Deserializer`], which wraps serde_json's deserializer (and every visitor,
//! `SeqAccess`, `MapAccess`, `EnumAccess` and `VariantAccess` it hands out, as
//! `serde_path_to_error` does) and refuses an array wherever a struct is asked for: a
//! struct at any depth (in a vector, an option, a map, an enum variant), a struct variant,
//! and an internally tagged enum, whose tag serde would otherwise read from the array's
//! first element. Everything else (maps, vectors, tuples, numbers, ignored unknown fields)
//! parses exactly as with serde_json. Nothing is buffered: the wrappers are passed by value
//! and add a few inlined calls per value.
//!
//! The functions also tell a text that is not JSON ([`StrictJsonError::Syntax`]) from JSON
//! that does not fit the type ([`StrictJsonError::Shape`], with the path to the value),
//! so a number out of range for its field is the latter even where serde_json calls it a
//! syntax error (`1e400`, too large for any number type).
//!
//! What the wrapper cannot see is what serde buffers before deserializing it: the
//! variants of an `untagged` enum and the fields inside an internally tagged enum's
//! variant are read from serde's buffer, not from the deserializer. No request type has a
//! struct there.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Unexpected, Visitor};

/// Why a JSON text was refused.
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    /// The text is not JSON: a syntax error, an early end, or more than whitespace after
    /// the value.
    #[error(transparent)]
    Syntax(serde_json::Error),
    /// The text is JSON but does not fit the type: an array where an object is required,
    /// a wrong type, a missing field, a number out of range for its field. The path says
    /// where (`deviceEnvelopes[0].deviceId`).
    #[error(transparent)]
    Shape(serde_path_to_error::Error<serde_json::Error>),
}

impl StrictJsonError {
    /// Sorts a failed parse of `json`: a syntax error if the text is not JSON, whatever the
    /// parse met first, and a shape error if it is, whatever serde_json called it (it
    /// reports a number too large for an f64 as a syntax error). The text is checked again
    /// only on this path, so a valid body pays nothing for it.
    fn classify(json: &[u8], error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        match syntax_error(json) {
            Some(syntax) => Self::Syntax(syntax),
            None => Self::Shape(error),
        }
    }
}

/// serde_json's error for `json` if it is not JSON text.
fn syntax_error(json: &[u8]) -> Option<serde_json::Error> {
    match std::str::from_utf8(json) {
        // Skipping a value checks all of its syntax but converts no number, so no number
        // is out of range, and has no nesting limit.
        Ok(text) => serde_json::from_str::<de::IgnoredAny>(text).err(),
        // JSON text is UTF-8. serde_json checks that only in the strings it decodes, not
        // in those it skips, so here every string is decoded.
        Err(_) => serde_json::from_slice::<serde_json::Value>(json).err(),
    }
}

/// Parses `json` as a `T`, refusing an array wherever `T` has a struct.
pub fn from_slice<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, StrictJsonError> {
    parse(serde_json::Deserializer::from_slice(json), json)
}

/// Parses `json` as a `T`, refusing an array wherever `T` has a struct.
pub fn from_str<'a, T: Deserialize<'a>>(json: &'a str) -> Result<T, StrictJsonError> {
    parse(serde_json::Deserializer::from_str(json), json.as_bytes())
}

fn parse<'a, R, T>(
    mut inner: serde_json::Deserializer<R>,
    json: &[u8],
) -> Result<T, StrictJsonError>
where
    R: serde_json::de::Read<'a>,
    T: Deserialize<'a>,
{
    let value = serde_path_to_error::deserialize(Deserializer::new(&mut inner))
        .map_err(|error| StrictJsonError::classify(json, error))?;
    // As serde_json::from_slice: nothing but whitespace after the value.
    inner.end().map_err(StrictJsonError::Syntax)?;
    Ok(value)
}

/// A deserializer that does what `D` does, except that it refuses a sequence where a
/// struct is asked for (see the [module documentation](self)).
#[derive(Debug)]
pub struct Deserializer<D> {
    inner: D,
    place: Place,
}

impl<D> Deserializer<D> {
    /// Wraps `inner`, for JSON a `&mut serde_json::Deserializer`.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            place: Place::Value,
        }
    }
}

/// Where a value sits in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The whole text, an object's key or value, a variant's name or content.
    Value,
    /// An element of an array. It is never a field or variant name: reading one from an
    /// array (serde's internally tagged enums take `[tag, fields...]`) is reading an
    /// object by position.
    ArrayElement,
}

/// The error for an array where an object is required.
fn array_not_object<E: de::Error>(expected: &dyn de::Expected) -> E {
    E::invalid_type(Unexpected::Seq, expected)
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Wrapped::any(visitor))
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Deserializer<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_struct(name, fields, Wrapped::object(visitor))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        if self.place == Place::ArrayElement {
            return Err(array_not_object(&"an object"));
        }
        self.inner.deserialize_identifier(Wrapped::any(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor handed to the wrapped deserializer: passes on wrapped accessors, so every
/// nested value is read strictly too, and for a struct refuses a sequence.
struct Wrapped<V> {
    visitor: V,
    takes_sequence: bool,
}

impl<V> Wrapped<V> {
    fn any(visitor: V) -> Self {
        Self {
            visitor,
            takes_sequence: true,
        }
    }

    fn object(visitor: V) -> Self {
        Self {
            visitor,
            takes_sequence: false,
        }
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
            self.visitor.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrapped<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(Deserializer::new(inner))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        inner: D,
    ) -> Result<V::Value, D::Error> {
        self.visitor.visit_newtype_struct(Deserializer::new(inner))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if !self.takes_sequence {
            return Err(array_not_object(&self));
        }
        self.visitor.visit_seq(SeqAccess(seq))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(MapAccess(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_enum(EnumAccess(data))
    }
}

/// A seed whose value is read through [`Deserializer`], at `place`.
struct Seed<S> {
    seed: S,
    place: Place,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, inner: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Deserializer {
            inner,
            place: self.place,
        })
    }
}

struct SeqAccess<A>(A);

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for SeqAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed {
            seed,
            place: Place::ArrayElement,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct MapAccess<A>(A);

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for MapAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed {
            seed,
            place: Place::Value,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed {
            seed,
            place: Place::Value,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct EnumAccess<A>(A);

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for EnumAccess<A> {
    type Error = A::Error;
    type Variant = VariantAccess<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let seed = Seed {
            seed,
            place: Place::Value,
        };
        self.0
            .variant_seed(seed)
            .map(|(value, variant)| (value, VariantAccess(variant)))
    }
}

struct VariantAccess<A>(A);

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for VariantAccess<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed {
            seed,
            place: Place::Value,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrapped::any(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrapped::object(visitor))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::Value;

    use super::*;
    use crate::api::accounts::CreateAccountRequest;
    use crate::api::stream::ClientFrame;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Wrapper(Point);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Pair(i32, String);

    /// Externally tagged, every kind of variant.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Shape {
        Stop,
        Move { x: i32, y: i32 },
        Boxed(Point),
        Line(i32, i32),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "camelCase")]
    enum Tagged {
        Dot { x: i32 },
        Empty,
        Boxed(Point),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "t", content = "c", rename_all = "camelCase")]
    enum Adjacent {
        Move { x: i32, y: i32 },
        Stop,
    }

    /// A request-like body with a struct in every position serde offers.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        points: Vec<Point>,
        #[serde(default)]
        maybe: Option<Point>,
        #[serde(default)]
        by_name: BTreeMap<String, Point>,
        #[serde(default)]
        tuple: (u8, String),
        #[serde(default)]
        pair: Option<Pair>,
        #[serde(default)]
        wrapper: Option<Wrapper>,
        #[serde(default)]
        shapes: Vec<Shape>,
        #[serde(default)]
        tagged: Option<Tagged>,
        #[serde(default)]
        adjacent: Option<Adjacent>,
        #[serde(default)]
        numbers: (i64, u64, f64),
        #[serde(default)]
        text: String,
    }

    fn strict<T: for<'a> Deserialize<'a>>(json: &str) -> Result<T, StrictJsonError> {
        from_str(json)
    }

    /// The error for `json`, which must be a shape error; its message.
    fn shape_error<T: for<'a> Deserialize<'a> + fmt::Debug>(json: &str) -> String {
        match strict::<T>(json) {
            Err(error @ StrictJsonError::Shape(_)) => error.to_string(),
            other => panic!("{json}: expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn a_struct_is_an_object_never_an_array() {
        assert_eq!(
            strict::<Point>(r#"{"x": 1, "y": 2}"#).unwrap(),
            Point { x: 1, y: 2 }
        );
        // What plain serde_json does, and the adapter is for.
        assert_eq!(
            serde_json::from_str::<Point>("[1, 2]").unwrap(),
            Point { x: 1, y: 2 }
        );
        let message = shape_error::<Point>("[1, 2]");
        assert!(message.contains("expected struct Point"), "{message}");
        shape_error::<Point>("[]");

        let account: CreateAccountRequest =
            serde_json::from_str(r#"["dave", "correct horse battery"]"#).unwrap();
        assert_eq!(account.username, "dave");
        shape_error::<CreateAccountRequest>(r#"["dave", "correct horse battery"]"#);
        strict::<CreateAccountRequest>(r#"{"username": "dave", "password": "pw"}"#).unwrap();
    }

    #[test]
    fn nested_structs_are_objects_in_vectors_options_maps_and_newtypes() {
        let message = shape_error::<Body>(r#"{"points": [{"x": 1, "y": 2}, [3, 4]]}"#);
        assert!(message.starts_with("points[1]: "), "{message}");
        let message = shape_error::<Body>(r#"{"points": [], "maybe": [1, 2]}"#);
        assert!(message.starts_with("maybe: "), "{message}");
        shape_error::<Body>(r#"{"points": [], "byName": {"a": [1, 2]}}"#);
        shape_error::<Body>(r#"{"points": [], "wrapper": [1, 2]}"#);
        shape_error::<Vec<Vec<Point>>>("[[[1, 2]]]");

        let body: Body = strict(
            r#"{"points": [{"x": 1, "y": 2}], "maybe": null, "byName": {"a": {"x": 3, "y": 4}},
                "wrapper": {"x": 5, "y": 6}}"#,
        )
        .unwrap();
        assert_eq!(body.by_name["a"], Point { x: 3, y: 4 });
        assert_eq!(body.wrapper, Some(Wrapper(Point { x: 5, y: 6 })));
        assert_eq!(body.maybe, None);
    }

    #[test]
    fn tuples_vectors_and_maps_keep_their_usual_form() {
        let body: Body =
            strict(r#"{"points": [], "tuple": [7, "seven"], "pair": [8, "eight"]}"#).unwrap();
        assert_eq!(body.tuple, (7, "seven".to_owned()));
        assert_eq!(body.pair, Some(Pair(8, "eight".to_owned())));
        assert_eq!(strict::<Vec<u64>>("[1, 2, 3]").unwrap(), vec![1, 2, 3]);
        let map: BTreeMap<String, Vec<u8>> = strict(r#"{"a": [1], "b": []}"#).unwrap();
        assert_eq!(map["a"], vec![1]);
        let value: Value = strict(r#"[1, {"a": [true, null]}, "x"]"#).unwrap();
        assert_eq!(value, serde_json::json!([1, {"a": [true, null]}, "x"]));
    }

    #[test]
    fn externally_tagged_variants_take_their_own_forms() {
        assert_eq!(strict::<Shape>(r#""stop""#).unwrap(), Shape::Stop);
        assert_eq!(
            strict::<Shape>(r#"{"move": {"x": 1, "y": 2}}"#).unwrap(),
            Shape::Move { x: 1, y: 2 }
        );
        assert_eq!(
            strict::<Shape>(r#"{"line": [1, 2]}"#).unwrap(),
            Shape::Line(1, 2)
        );
        assert_eq!(
            strict::<Shape>(r#"{"boxed": {"x": 1, "y": 2}}"#).unwrap(),
            Shape::Boxed(Point { x: 1, y: 2 })
        );
        assert!(serde_json::from_str::<Shape>(r#"{"move": [1, 2]}"#).is_ok());
        shape_error::<Shape>(r#"{"move": [1, 2]}"#);
        shape_error::<Shape>(r#"{"boxed": [1, 2]}"#);
        let body: Body = strict(r#"{"points": [], "shapes": ["stop", {"line": [3, 4]}]}"#).unwrap();
        assert_eq!(body.shapes, vec![Shape::Stop, Shape::Line(3, 4)]);
    }

    #[test]
    fn internally_tagged_enums_are_objects() {
        assert_eq!(
            strict::<ClientFrame>(r#"{"type": "ack", "upTo": 7}"#).unwrap(),
            ClientFrame::Ack {
                up_to: Some(7),
                seqs: vec![]
            }
        );
        assert_eq!(
            strict::<ClientFrame>(r#"{"seqs": [1, 3], "type": "ack", "unknown": [[]]}"#).unwrap(),
            ClientFrame::Ack {
                up_to: None,
                seqs: vec![1, 3]
            }
        );
        // serde reads an internally tagged enum from [tag, fields...] too.
        assert_eq!(
            serde_json::from_str::<ClientFrame>(r#"["ack", 7, [1]]"#).unwrap(),
            ClientFrame::Ack {
                up_to: Some(7),
                seqs: vec![1]
            }
        );
        shape_error::<ClientFrame>(r#"["ack", 7, [1]]"#);
        shape_error::<ClientFrame>(r#"["ack"]"#);
        shape_error::<ClientFrame>("[]");
        shape_error::<Tagged>(r#"["dot", 1]"#);
        shape_error::<Body>(r#"{"points": [], "tagged": ["dot", 1]}"#);

        assert_eq!(
            strict::<Tagged>(r#"{"kind": "boxed", "x": 1, "y": 2}"#).unwrap(),
            Tagged::Boxed(Point { x: 1, y: 2 })
        );
        assert_eq!(
            strict::<Tagged>(r#"{"kind": "empty"}"#).unwrap(),
            Tagged::Empty
        );
    }

    #[test]
    fn adjacently_tagged_enums_are_objects() {
        assert_eq!(
            strict::<Adjacent>(r#"{"t": "move", "c": {"x": 1, "y": 2}}"#).unwrap(),
            Adjacent::Move { x: 1, y: 2 }
        );
        assert!(serde_json::from_str::<Adjacent>(r#"["move", {"x": 1, "y": 2}]"#).is_ok());
        shape_error::<Adjacent>(r#"["move", {"x": 1, "y": 2}]"#);
        shape_error::<Adjacent>(r#"{"t": "move", "c": [1, 2]}"#);
    }

    #[test]
    fn unknown_fields_are_ignored_whatever_they_hold() {
        assert_eq!(
            strict::<Point>(r#"{"x": 1, "extra": [1, [2], {"a": []}], "y": 2, "more": 1e400}"#)
                .unwrap(),
            Point { x: 1, y: 2 }
        );
    }

    #[test]
    fn not_json_is_a_syntax_error() {
        for text in [
            "",
            "{",
            r#"{"x": 1, "y": 2"#,
            r#"{"x": 1, "y": 2} x"#,
            r#"{"x": 1e, "y": 2}"#,
            r#"{"x": 1e400"#,
            "[1, 2",
            "nul",
        ] {
            assert!(
                matches!(strict::<Point>(text), Err(StrictJsonError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_out_of_range_are_shape_errors() {
        // serde_json calls a number too large for an f64 a syntax error.
        assert!(
            serde_json::from_str::<Point>(r#"{"x": 1e400, "y": 2}"#)
                .unwrap_err()
                .is_syntax()
        );
        let message = shape_error::<Point>(r#"{"x": 1e400, "y": 2}"#);
        assert!(message.starts_with("x: number out of range"), "{message}");
        shape_error::<Point>(r#"{"x": -1e400, "y": 2}"#);
        shape_error::<Point>(r#"{"x": 2147483648, "y": 2}"#);
        shape_error::<Point>(r#"{"x": 100000000000000000000000, "y": 2}"#);
        shape_error::<Point>(r#"{"x": 1.5, "y": 2}"#);
        shape_error::<Value>("1e400");
        shape_error::<ClientFrame>(r#"{"type": "ack", "upTo": 1e400}"#);
    }

    #[test]
    fn borrowed_strings_stay_borrowed() {
        #[derive(Deserialize)]
        struct Borrowing<'a> {
            name: &'a str,
        }
        let parsed: Borrowing<'_> = from_str(r#"{"name": "alice"}"#).unwrap();
        assert_eq!(parsed.name, "alice");
    }

    fn point() -> impl Strategy<Value = Point> {
        (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y })
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Stop),
            (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Shape::Move { x, y }),
            point().prop_map(Shape::Boxed),
            (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Shape::Line(x, y)),
        ]
    }

    fn tagged() -> impl Strategy<Value = Tagged> {
        prop_oneof![
            any::<i32>().prop_map(|x| Tagged::Dot { x }),
            Just(Tagged::Empty),
            point().prop_map(Tagged::Boxed),
        ]
    }

    fn adjacent() -> impl Strategy<Value = Adjacent> {
        prop_oneof![
            (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Adjacent::Move { x, y }),
            Just(Adjacent::Stop),
        ]
    }

    prop_compose! {
        fn body()(
            points in prop::collection::vec(point(), 0..4),
            maybe in prop::option::of(point()),
            by_name in prop::collection::btree_map(".{0,8}", point(), 0..3),
            tuple in (any::<u8>(), ".{0,8}"),
            pair in prop::option::of((any::<i32>(), ".{0,8}").prop_map(|(n, s)| Pair(n, s))),
            wrapper in prop::option::of(point().prop_map(Wrapper)),
            shapes in prop::collection::vec(shape(), 0..4),
            tagged in prop::option::of(tagged()),
            adjacent in prop::option::of(adjacent()),
            numbers in (any::<i64>(), any::<u64>(), any::<f64>().prop_filter("finite", |f| f.is_finite())),
            text in any::<String>(),
        ) -> Body {
            Body { points, maybe, by_name, tuple, pair, wrapper, shapes, tagged, adjacent, numbers, text }
        }
    }

    /// Any JSON value; with `arrays: false`, none with an array in it.
    fn json(arrays: bool) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[xy]|.{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            let object =
                prop::collection::btree_map("[xy]|kind|stop|move|.{0,4}", inner.clone(), 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect()));
            let array = prop::collection::vec(inner, 0..5).prop_map(Value::Array);
            if arrays {
                prop_oneof![object, array].boxed()
            } else {
                object.boxed()
            }
        })
    }

    /// The strict result next to serde_json's, comparable.
    fn both<T: for<'a> Deserialize<'a>>(json: &str) -> (Option<T>, Option<T>) {
        (strict::<T>(json).ok(), serde_json::from_str::<T>(json).ok())
    }

    proptest! {
        #[test]
        fn valid_objects_parse_exactly_as_with_serde_json(body in body(), unknown in json(true)) {
            for json in [serde_json::to_string(&body).unwrap(), serde_json::to_string_pretty(&body).unwrap()] {
                let plain: Body = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(strict::<Body>(&json).unwrap(), plain);
            }
            // An unknown field is skipped, whatever it holds.
            let mut object = serde_json::to_value(&body).unwrap();
            object["zUnknown"] = unknown;
            let json = object.to_string();
            prop_assert_eq!(strict::<Body>(&json).unwrap(), serde_json::from_str::<Body>(&json).unwrap());
        }

        #[test]
        fn json_values_parse_exactly_as_with_serde_json(value in json(true)) {
            let json = value.to_string();
            prop_assert_eq!(strict::<Value>(&json).unwrap(), serde_json::from_str::<Value>(&json).unwrap());
        }

        #[test]
        fn strict_only_refuses_and_without_arrays_refuses_nothing_more(value in json(true), plain in json(false)) {
            let json = value.to_string();
            let (strict_point, plain_point) = both::<Point>(&json);
            if strict_point.is_some() {
                prop_assert_eq!(strict_point, plain_point);
            }
            let (strict_tagged, plain_tagged) = both::<Tagged>(&json);
            if strict_tagged.is_some() {
                prop_assert_eq!(strict_tagged, plain_tagged);
            }
            let (strict_shapes, plain_shapes) = both::<Vec<Shape>>(&json);
            if strict_shapes.is_some() {
                prop_assert_eq!(strict_shapes, plain_shapes);
            }

            let json = plain.to_string();
            let (strict_point, plain_point) = both::<Point>(&json);
            prop_assert_eq!(strict_point, plain_point);
            let (strict_tagged, plain_tagged) = both::<Tagged>(&json);
            prop_assert_eq!(strict_tagged, plain_tagged);
            let (strict_shape, plain_shape) = both::<Shape>(&json);
            prop_assert_eq!(strict_shape, plain_shape);
            let (strict_frame, plain_frame) = both::<ClientFrame>(&json);
            prop_assert_eq!(strict_frame, plain_frame);
        }

        #[test]
        fn only_text_that_is_not_json_is_a_syntax_error(text in r#"[\[\]{}":,0-9eE.+\- xya-z]{0,24}"#) {
            let syntax = matches!(strict::<Point>(&text), Err(StrictJsonError::Syntax(_)));
            prop_assert_eq!(syntax, serde_json::from_str::<de::IgnoredAny>(&text).is_err());
        }
    }
}
