//! The `cbor` framing (placeholder: being implemented).

use std::borrow::Cow;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Frame, Framing, FramingError};
use crate::proto::value::Value;

fn todo() -> FramingError {
    FramingError::Malformed {
        framing: Framing::Cbor,
        reason: "not implemented yet".into(),
    }
}

/// Incremental boundary finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed.
#[derive(Debug, Default)]
pub(super) struct Scanner {}

impl Scanner {
    pub(super) fn scan(&mut self, _buf: &[u8], _max: usize) -> Result<Option<Frame>, FramingError> {
        Err(todo())
    }
}

pub(super) fn dest(_bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    Err(todo())
}

pub(super) fn to_value(_bytes: &[u8]) -> Result<Value, FramingError> {
    Err(todo())
}

pub(super) fn decode<T: DeserializeOwned>(_bytes: &[u8]) -> Result<T, FramingError> {
    Err(todo())
}

pub(super) fn encode_packet<T: Serialize + ?Sized>(
    _dest: &str,
    _msg: &T,
    _out: &mut BytesMut,
) -> Result<(), FramingError> {
    Err(todo())
}

pub(super) fn encode_value(_v: &Value, _out: &mut BytesMut) -> Result<(), FramingError> {
    Err(todo())
}
