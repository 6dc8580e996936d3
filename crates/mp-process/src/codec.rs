//! Encoding with the serializer's own words: postcard turns every error a `Serialize` impl raises
//! (`S::Error::custom("…")`) into one fixed text, "Serde Serialization Error". mp's crates encode through
//! [`to_vec`] and [`to_extend`], which on such an error serialize the value once more into a probe — a
//! serializer that writes nothing and keeps the message — so the error says why the value failed.
//!
//! The fast path is postcard's alone; the second pass runs only for a value that already failed. A
//! `Serialize` impl that fails only the first time (it depends on outside state) gets postcard's text.

use std::fmt::Display;

use serde::Serialize;
use serde::ser;

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
