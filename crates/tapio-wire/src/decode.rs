//! Decoding raw JSON into wire types with a field path in every error.
//!
//! serde's derive reports "invalid type" without saying where; an operator
//! reading a controller log needs `events[12].config_generation`. So the
//! controller decodes each field on its own through `Fields`, which knows
//! the path of the object it reads.

use crate::WireError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A wire type that the controller decodes from an untrusted payload.
pub trait FromWire: Sized {
    fn from_wire(value: &Value) -> Result<Self, WireError>;
}

/// The fields of one JSON object at a known path.
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(value: &'a Value, prefix: &str) -> Result<Self, WireError> {
        match value.as_object() {
            Some(obj) => Ok(Fields {
                obj,
                prefix: prefix.to_string(),
            }),
            None => Err(WireError::InvalidField {
                path: if prefix.is_empty() {
                    "$".into()
                } else {
                    prefix.into()
                },
                reason: "must be a JSON object".into(),
            }),
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub(crate) fn raw(&self, name: &str) -> Option<&'a Value> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required field.
    pub(crate) fn req<T: DeserializeOwned>(&self, name: &str) -> Result<T, WireError> {
        match self.raw(name) {
            None => Err(WireError::MissingField(self.path(name))),
            Some(v) => self.convert(name, v),
        }
    }

    /// A required, non-empty string.
    pub(crate) fn req_str(&self, name: &str) -> Result<String, WireError> {
        let s: String = self.req(name)?;
        if s.trim().is_empty() {
            return Err(WireError::MissingField(self.path(name)));
        }
        if s.len() > 512 {
            return Err(WireError::InvalidField {
                path: self.path(name),
                reason: "longer than 512 bytes".into(),
            });
        }
        Ok(s)
    }

    /// An optional field with a default (fields added within v1).
    pub(crate) fn opt<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, WireError> {
        match self.raw(name) {
            None => Ok(T::default()),
            Some(v) => self.convert(name, v),
        }
    }

    fn convert<T: DeserializeOwned>(&self, name: &str, v: &Value) -> Result<T, WireError> {
        T::deserialize(v).map_err(|e| WireError::InvalidField {
            path: self.path(name),
            reason: describe(&e),
        })
    }
}

/// serde's message without the input echoed back beyond its type.
fn describe(e: &serde_json::Error) -> String {
    let s = e.to_string();
    // serde_json's messages on Value input are short ("invalid type: string
    // \"x\", expected u64"); cap them so hostile input cannot inflate logs.
    let mut out: String = s.chars().take(160).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
