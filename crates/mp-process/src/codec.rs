//! Encoding and decoding with serde's own words: postcard turns every error a `Serialize` impl raises
//! (`S::Error::custom("…")`) into one fixed text, "Serde Serialization Error", and every error a `Deserialize`
//! impl raises into "Serde Deserialization Error". mp's crates encode through [`to_vec`] and [`to_extend`],
//! which on such an error serialize the value once more into a probe — a serializer that writes nothing and
//! keeps the message — and decode through [`from_bytes`], which on such an error decodes once more through an
//! adapter whose errors keep their message, so the error says why the value failed.
//!
//! The fast path is postcard's alone; the second pass runs only for a value that already failed. A
//! `Serialize` impl that fails only the first time (it depends on outside state) gets postcard's text.

use std::fmt::Display;

use serde::Serialize;
use serde::{de, ser};

/// Serializes `value` with postcard into a new vector; the error is the serializer's own message.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| explain(value, &e))
}

/// Serializes `value` with postcard onto the end of `out`; the error is the serializer's own message.
pub fn to_extend<T: Serialize + ?Sized, W: Extend<u8>>(value: &T, out: W) -> Result<W, String> {
    postcard::to_extend(value, out).map_err(|e| explain(value, &e))
}

/// Why `value` failed to serialize with `error`: the message its `Serialize` impl gave, when postcard
/// discarded it, else postcard's own text.
pub fn explain<T: Serialize + ?Sized>(value: &T, error: &postcard::Error) -> String {
    if matches!(error, postcard::Error::SerdeSerCustom) {
        PROBING.set(true);
        let walked = value.serialize(Probe);
        PROBING.set(false);
        if let Err(Why(message)) = walked {
            return message;
        }
    }
    error.to_string()
}

thread_local! {
    static PROBING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is walking a value a second time only to learn why it failed (see
/// [`explain`]): a `Serialize` impl with side effects (one that hands something over as it serializes)
/// skips them then, and answers as it did the first time.
pub fn probing() -> bool {
    PROBING.get()
}

/// The message a `Serialize` impl raised.
#[derive(Debug)]
struct Why(String);

impl Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Why {}

impl ser::Error for Why {
    fn custom<T: Display>(message: T) -> Self {
        Why(message.to_string())
    }
}

/// A serializer that walks a value, writes nothing and keeps the first error's message. It is not
/// human-readable, as postcard is not, so a value takes the same path through its `Serialize` impl.
struct Probe;

type Done = Result<(), Why>;

/// Scalars: nothing to walk.
macro_rules! probe_scalars {
    ($($method:ident : $ty:ty),* $(,)?) => {$(
        fn $method(self, _: $ty) -> Done {
            Ok(())
        }
    )*};
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Why;
    type SerializeSeq = Probe;
    type SerializeTuple = Probe;
    type SerializeTupleStruct = Probe;
    type SerializeTupleVariant = Probe;
    type SerializeMap = Probe;
    type SerializeStruct = Probe;
    type SerializeStructVariant = Probe;

    fn is_human_readable(&self) -> bool {
        false
    }
    probe_scalars!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_u128: u128, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8],
    );
    fn serialize_none(self) -> Done {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(Probe)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_tuple(self, _: usize) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Probe, Why> {
        Ok(Probe)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Probe, Why> {
        Ok(Probe)
    }
}

/// The compound serializers: each part is walked with a fresh probe.
macro_rules! probe_parts {
    ($($trait:ident :: $method:ident ($($key:ty)?)),* $(,)?) => {$(
        impl ser::$trait for Probe {
            type Ok = ();
            type Error = Why;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? value: &T) -> Done {
                value.serialize(Probe)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}

probe_parts!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        key.serialize(Probe)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serializer;

    struct Refuses(&'static str);

    impl Serialize for Refuses {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom(self.0))
        }
    }

    #[test]
    fn the_serializers_message_survives_postcard() {
        assert_eq!(postcard::to_stdvec(&Refuses("x")).unwrap_err().to_string(), "Serde Serialization Error");
        let nested = (1u8, vec![Some(std::collections::BTreeMap::from([(2u8, Refuses("path has a NUL"))]))]);
        assert_eq!(to_vec(&nested).unwrap_err(), "path has a NUL");
        assert_eq!(to_extend(&nested, Vec::new()).unwrap_err(), "path has a NUL");
        assert_eq!(to_vec(&(1u32, "ok")).unwrap(), postcard::to_stdvec(&(1u32, "ok")).unwrap());
    }
}

/// Deserializes `bytes` with postcard; the error is the deserializer's own message when a `Deserialize` impl
/// raised one (postcard alone says "Serde Deserialization Error"), else postcard's.
pub fn from_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| explain_decode::<T>(bytes, &e))
}

/// Why `bytes` failed to decode as `T` with `error`: the message a `Deserialize` impl (or a visitor) raised,
/// when postcard discarded it, else postcard's own text. Decodes a second time through an adapter that keeps
/// the message; the fast path is postcard's alone.
fn explain_decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], error: &postcard::Error) -> String {
    if matches!(error, postcard::Error::SerdeDeCustom) {
        STASHED.set(None);
        let mut inner = postcard::Deserializer::from_bytes(bytes);
        let walked = T::deserialize(Keep(&mut inner));
        STASHED.set(None);
        if let Err(Why(message)) = walked {
            return message;
        }
    }
    error.to_string()
}

impl de::Error for Why {
    fn custom<T: Display>(message: T) -> Self {
        Why(message.to_string())
    }
}

thread_local! {
    /// A message on its way out through postcard's error type, which cannot carry it.
    static STASHED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Into the inner deserializer's error type (which drops the text): the text waits in [`STASHED`].
fn stash<E: de::Error>(why: Why) -> E {
    let error = E::custom(&why.0);
    STASHED.with(|s| *s.borrow_mut() = Some(why.0));
    error
}

/// Out of the inner deserializer's error type: the stashed text if there is one, else the error's own.
fn unstash<E: Display>(error: E) -> Why {
    Why(STASHED.with(|s| s.borrow_mut().take()).unwrap_or_else(|| error.to_string()))
}

/// A deserializer that forwards to `D` and hands its callers errors that keep their message.
struct Keep<D>(D);
/// A visitor that forwards to `V`, calling it with errors that keep their message.
struct KeepVisitor<V>(V);
/// Seeds, sequences, maps and enums, likewise.
struct KeepSeed<S>(S);
struct KeepSeq<A>(A);
struct KeepMap<A>(A);
struct KeepEnum<A>(A);
struct KeepVariant<A>(A);

macro_rules! keep_deserialize {
    ($($method:ident ( $($arg:ident : $ty:ty),* )),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Why> {
            self.0.$method($($arg,)* KeepVisitor(visitor)).map_err(unstash)
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Keep<D> {
    type Error = Why;

    keep_deserialize!(
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
        deserialize_u64(), deserialize_u128(), deserialize_f32(), deserialize_f64(), deserialize_char(),
        deserialize_str(), deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]), deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! keep_visit {
    ($($method:ident : $ty:ty),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method::<Why>(v).map_err(stash)
        }
    )*};
}

impl<'de, V: de::Visitor<'de>> de::Visitor<'de> for KeepVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }
    keep_visit!(
        visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64, visit_i128: i128,
        visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64, visit_u128: u128, visit_f32: f32,
        visit_f64: f64, visit_char: char, visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
        visit_bytes: &[u8], visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>,
    );
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none::<Why>().map_err(stash)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit::<Why>().map_err(stash)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Keep(d)).map_err(stash)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Keep(d)).map_err(stash)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(KeepSeq(seq)).map_err(stash)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(KeepMap(map)).map_err(stash)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(KeepEnum(data)).map_err(stash)
    }
}

impl<'de, S: de::DeserializeSeed<'de>> de::DeserializeSeed<'de> for KeepSeed<S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Keep(d)).map_err(stash)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for KeepSeq<A> {
    type Error = Why;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Why> {
        self.0.next_element_seed(KeepSeed(seed)).map_err(unstash)
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for KeepMap<A> {
    type Error = Why;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Why> {
        self.0.next_key_seed(KeepSeed(seed)).map_err(unstash)
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Why> {
        self.0.next_value_seed(KeepSeed(seed)).map_err(unstash)
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for KeepEnum<A> {
    type Error = Why;
    type Variant = KeepVariant<A::Variant>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), Why> {
        self.0.variant_seed(KeepSeed(seed)).map(|(value, variant)| (value, KeepVariant(variant))).map_err(unstash)
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for KeepVariant<A> {
    type Error = Why;

    fn unit_variant(self) -> Result<(), Why> {
        self.0.unit_variant().map_err(unstash)
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Why> {
        self.0.newtype_variant_seed(KeepSeed(seed)).map_err(unstash)
    }
    fn tuple_variant<V: de::Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Why> {
        self.0.tuple_variant(len, KeepVisitor(visitor)).map_err(unstash)
    }
    fn struct_variant<V: de::Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Why> {
        self.0.struct_variant(fields, KeepVisitor(visitor)).map_err(unstash)
    }
}
