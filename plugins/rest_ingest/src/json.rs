//! The body's structure, read in one pass without building a JSON tree: objects keep their
//! keys in order and every duplicate (serde_json's `Map` silently keeps the last one), and
//! row values stay raw JSON text, parsed per column type later (decimals exactly from the
//! literal, not through an f64).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A key as written: borrowed from the body unless it had escapes.
#[derive(Debug)]
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// An object's members in order, duplicates kept, values as raw JSON text.
pub type Members<'a> = Vec<(Key<'a>, &'a RawValue)>;

fn members<'de, A: MapAccess<'de>>(mut map: A) -> Result<Members<'de>, A::Error> {
    let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
    while let Some(key) = map.next_key::<Key<'de>>()? {
        out.push((key, map.next_value::<&'de RawValue>()?));
    }
    Ok(out)
}

/// A value that is not what was expected, described for an error message (`number 7`).
fn describe_scalar(kind: &str, text: impl fmt::Display) -> String {
    let mut text = text.to_string();
    if text.len() > 40 {
        let mut end = 37;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    format!("{kind} {text}")
}

/// Implements the visitor methods of every non-object JSON value as "not an object",
/// described for the error message; arrays are skipped to their end.
macro_rules! not_an_object {
    ($ctor:expr) => {
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok($ctor(describe_scalar("boolean", v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok($ctor(describe_scalar("number", v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok($ctor(describe_scalar("number", v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok($ctor(describe_scalar("number", v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok($ctor(describe_scalar("string", format!("{v:?}"))))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($ctor("null".to_string()))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($ctor("an array".to_string()))
        }
    };
}

/// One row: an object, or something else (reported with the row's number).
#[derive(Debug)]
pub enum Row<'a> {
    Object(Members<'a>),
    NotObject(String),
}

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Row<'de>, A::Error> {
                members(map).map(Row::Object)
            }
            not_an_object!(Row::NotObject);
        }
        deserializer.deserialize_any(RowVisitor)
    }
}

/// The envelope's `data`: rows, one row object, or something else.
#[derive(Debug)]
pub enum Data<'a> {
    Rows(Vec<Row<'a>>),
    Row(Members<'a>),
    Other(String),
}

impl<'de> Deserialize<'de> for Data<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row object or an array of row objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data<'de>, A::Error> {
                members(map).map(Data::Row)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data<'de>, A::Error> {
                let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(row) = seq.next_element::<Row<'de>>()? {
                    rows.push(row);
                }
                Ok(Data::Rows(rows))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Data<'de>, E> {
                Ok(Data::Other(describe_scalar("boolean", v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Data<'de>, E> {
                Ok(Data::Other(describe_scalar("number", v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Data<'de>, E> {
                Ok(Data::Other(describe_scalar("number", v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Data<'de>, E> {
                Ok(Data::Other(describe_scalar("number", v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Data<'de>, E> {
                Ok(Data::Other(describe_scalar("string", format!("{v:?}"))))
            }
            fn visit_unit<E>(self) -> Result<Data<'de>, E> {
                Ok(Data::Other("null".to_string()))
            }
        }
        deserializer.deserialize_any(DataVisitor)
    }
}

/// A member of the envelope: `data` is read as rows, the rest stays raw.
#[derive(Debug)]
pub enum Field<'a> {
    Data(Data<'a>),
    Raw(&'a RawValue),
}

/// The request body of the JSON form: an object of fields, or something else.
#[derive(Debug)]
pub enum Envelope<'a> {
    Object(Vec<(Key<'a>, Field<'a>)>),
    NotObject(String),
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let field = if key.0 == "data" {
                        Field::Data(map.next_value()?)
                    } else {
                        Field::Raw(map.next_value()?)
                    };
                    fields.push((key, field));
                }
                Ok(Envelope::Object(fields))
            }
            not_an_object!(Envelope::NotObject);
        }
        deserializer.deserialize_any(EnvelopeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_kept_in_order() {
        let Row::Object(members) =
            serde_json::from_str::<Row>(r#"{"id":1,"a\u0062":"x","id":2.50}"#).unwrap()
        else {
            panic!("not an object")
        };
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.0.as_ref()).collect();
        assert_eq!(keys, ["id", "ab", "id"]);
        // The literal as written: nothing went through an f64.
        assert_eq!(members[2].1.get(), "2.50");
    }
}
