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
        if let Err(Why(message)) = value.serialize(Probe) {
            return message;
        }
    }
    error.to_string()
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
    fn serialize_bool(self, _: bool) -> Done {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Done {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Done {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Done {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Done {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Done {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Done {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Done {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Done {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Done {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Done {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Done {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Done {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Done {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Done {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Done {
        Ok(())
    }
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

impl ser::SerializeSeq for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTuple for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

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

impl ser::SerializeStruct for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Probe {
    type Ok = ();
    type Error = Why;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
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
