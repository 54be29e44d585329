//! Typed serializers and deserializers for keys and values.
//!
//! ```
//! use runnel_api::serde::{Json, Serde, Str};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Order { id: u32 }
//! let bytes = Json::<Order>::serialize(&Order { id: 7 }).unwrap();
//! assert_eq!(Json::<Order>::deserialize(&bytes).unwrap(), Order { id: 7 });
//! assert_eq!(Str::deserialize(&Str::serialize(&"hi".to_string()).unwrap()).unwrap(), "hi");
//! ```

use std::marker::PhantomData;

use bytes::Bytes;

use crate::error::ClientError;

/// Converts a type to and from record bytes.
pub trait Serde {
    /// The Rust type.
    type Item;
    /// To bytes.
    fn serialize(item: &Self::Item) -> Result<Bytes, ClientError>;
    /// From bytes.
    fn deserialize(bytes: &[u8]) -> Result<Self::Item, ClientError>;
}

/// Raw bytes.
pub struct Raw;
impl Serde for Raw {
    type Item = Bytes;
    fn serialize(item: &Bytes) -> Result<Bytes, ClientError> {
        Ok(item.clone())
    }
    fn deserialize(bytes: &[u8]) -> Result<Bytes, ClientError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

/// UTF-8 strings.
pub struct Str;
impl Serde for Str {
    type Item = String;
    fn serialize(item: &String) -> Result<Bytes, ClientError> {
        Ok(Bytes::from(item.clone()))
    }
    fn deserialize(bytes: &[u8]) -> Result<String, ClientError> {
        String::from_utf8(bytes.to_vec())
            .map_err(|e| ClientError::Protocol(format!("not UTF-8: {e}")))
    }
}

/// JSON through serde.
pub struct Json<T>(PhantomData<T>);
impl<T: serde::Serialize + serde::de::DeserializeOwned> Serde for Json<T> {
    type Item = T;
    fn serialize(item: &T) -> Result<Bytes, ClientError> {
        serde_json::to_vec(item)
            .map(Bytes::from)
            .map_err(|e| ClientError::Protocol(format!("JSON: {e}")))
    }
    fn deserialize(bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("JSON: {e}")))
    }
}
