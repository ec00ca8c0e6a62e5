//! Jute, ZooKeeper's record serialization: big-endian fixed-width integers, length-prefixed
//! strings, buffers and vectors, with -1 meaning null.
//!
//! Bytes from the network are untrusted: every length is checked against the bytes actually
//! left in the frame (and against `string_bytes_max`) before anything is allocated, so a lying
//! length can never make us allocate more than the frame we already hold.

pub mod records;

use std::fmt;

/// Why a record could not be decoded. Every variant maps to a closed connection or
/// MARSHALLINGERROR for the client; none is an internal invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ended before the field did.
    Truncated { needed: usize, left: usize },
    /// A length or count below -1.
    NegativeLength(i32),
    /// A string or buffer longer than the configured maximum.
    TooLong { length: usize, max: usize },
    /// A ustring that is not valid UTF-8.
    InvalidUtf8,
    /// A boolean byte other than 0 or 1.
    InvalidBoolean(u8),
    /// A field value outside the record's domain (e.g. an unknown multi op type).
    InvalidValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, left } => {
                write!(f, "record truncated: needed {needed} bytes, {left} left")
            }
            DecodeError::NegativeLength(n) => write!(f, "negative length {n}"),
            DecodeError::TooLong { length, max } => {
                write!(f, "length {length} exceeds the maximum {max}")
            }
            DecodeError::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            DecodeError::InvalidBoolean(b) => write!(f, "boolean byte {b} is neither 0 nor 1"),
            DecodeError::InvalidValue(what) => write!(f, "invalid value for {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// A cursor over one received frame.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Upper bound for any single string or buffer (jute.maxbuffer + extrasize).
    string_bytes_max: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], string_bytes_max: usize) -> Reader<'a> {
        Reader {
            bytes,
            position: 0,
            string_bytes_max,
        }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn position(&self) -> usize {
        self.position
    }

    fn take(&mut self, count: usize) -> DecodeResult<&'a [u8]> {
        let left = self.remaining();
        if count > left {
            return Err(DecodeError::Truncated {
                needed: count,
                left,
            });
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    pub fn read_u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn read_bool(&mut self) -> DecodeResult<bool> {
        match self.read_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidBoolean(other)),
        }
    }

    pub fn read_i32(&mut self) -> DecodeResult<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn read_i64(&mut self) -> DecodeResult<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A length prefix: -1 is null, anything else below zero is an error, and the length must
    /// fit both the configured maximum and the bytes left.
    fn read_length(&mut self) -> DecodeResult<Option<usize>> {
        let length = self.read_i32()?;
        if length == -1 {
            return Ok(None);
        }
        if length < 0 {
            return Err(DecodeError::NegativeLength(length));
        }
        let length = length as usize;
        if length > self.string_bytes_max {
            return Err(DecodeError::TooLong {
                length,
                max: self.string_bytes_max,
            });
        }
        if length > self.remaining() {
            return Err(DecodeError::Truncated {
                needed: length,
                left: self.remaining(),
            });
        }
        Ok(Some(length))
    }

    /// A `buffer`; null decodes as `None`.
    pub fn read_buffer(&mut self) -> DecodeResult<Option<&'a [u8]>> {
        match self.read_length()? {
            None => Ok(None),
            Some(length) => Ok(Some(self.take(length)?)),
        }
    }

    /// A `buffer` where null and empty are the same to us.
    pub fn read_buffer_vec(&mut self) -> DecodeResult<Vec<u8>> {
        Ok(self.read_buffer()?.map(<[u8]>::to_vec).unwrap_or_default())
    }

    /// A `ustring`; null decodes as `None`.
    pub fn read_ustring_opt(&mut self) -> DecodeResult<Option<String>> {
        match self.read_buffer()? {
            None => Ok(None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(DecodeError::InvalidUtf8),
            },
        }
    }

    /// A `ustring` where null is read as the empty string (as Java's readString does for
    /// fields that are never null in practice).
    pub fn read_ustring(&mut self) -> DecodeResult<String> {
        Ok(self.read_ustring_opt()?.unwrap_or_default())
    }

    /// As [`Reader::read_ustring`], into a shared allocation (one allocation, no copy after).
    pub fn read_ustring_arc(&mut self) -> DecodeResult<std::sync::Arc<str>> {
        match self.read_buffer()? {
            None => Ok(std::sync::Arc::from("")),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(std::sync::Arc::from)
                .map_err(|_| DecodeError::InvalidUtf8),
        }
    }

    /// True, and the bytes consumed, if the next bytes are exactly `expected`; otherwise
    /// nothing is consumed.
    pub fn skip_if_next(&mut self, expected: &[u8]) -> bool {
        let matches = self.bytes[self.position..].starts_with(expected);
        if matches {
            self.position += expected.len();
        }
        matches
    }

    /// A vector count: -1 (null) reads as 0; the count must be plausible for the bytes left,
    /// given that every element takes at least `element_bytes_min` bytes.
    pub fn read_count(&mut self, element_bytes_min: usize) -> DecodeResult<usize> {
        let count = self.read_i32()?;
        if count == -1 {
            return Ok(0);
        }
        if count < 0 {
            return Err(DecodeError::NegativeLength(count));
        }
        let count = count as usize;
        let needed = count.saturating_mul(element_bytes_min.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                needed,
                left: self.remaining(),
            });
        }
        Ok(count)
    }

    pub fn read_string_vec(&mut self) -> DecodeResult<Vec<String>> {
        let count = self.read_count(4)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.read_ustring()?);
        }
        Ok(out)
    }
}

/// Appends jute fields to a byte vector.
pub trait Writer {
    fn put_u8(&mut self, v: u8);
    fn put_bool(&mut self, v: bool);
    fn put_i32(&mut self, v: i32);
    fn put_i64(&mut self, v: i64);
    fn put_buffer(&mut self, v: &[u8]);
    fn put_null_buffer(&mut self);
    fn put_ustring(&mut self, v: &str);
    fn put_string_vec<S: AsRef<str>>(&mut self, v: &[S]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_bool(&mut self, v: bool) {
        self.push(v as u8);
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_buffer(&mut self, v: &[u8]) {
        assert!(
            v.len() <= i32::MAX as usize,
            "buffer longer than a jute length can say"
        );
        self.put_i32(v.len() as i32);
        self.extend_from_slice(v);
    }
    fn put_null_buffer(&mut self) {
        self.put_i32(-1);
    }
    fn put_ustring(&mut self, v: &str) {
        self.put_buffer(v.as_bytes());
    }
    fn put_string_vec<S: AsRef<str>>(&mut self, v: &[S]) {
        self.put_i32(v.len() as i32);
        for s in v {
            self.put_ustring(s.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut out = Vec::new();
        out.put_i32(0x01020304);
        out.put_i64(-2);
        assert_eq!(
            out,
            [1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        let mut r = Reader::new(&out, 100);
        assert_eq!(r.read_i32().unwrap(), 0x01020304);
        assert_eq!(r.read_i64().unwrap(), -2);
        assert!(r.is_empty());
    }

    #[test]
    fn null_string_is_minus_one() {
        let bytes = (-1i32).to_be_bytes();
        let mut r = Reader::new(&bytes, 100);
        assert_eq!(r.read_ustring_opt().unwrap(), None);
    }

    #[test]
    fn length_beyond_frame_is_truncated_not_allocated() {
        let mut bytes = Vec::new();
        bytes.put_i32(1_000_000);
        bytes.extend_from_slice(b"abc");
        let mut r = Reader::new(&bytes, 2_000_000);
        assert_eq!(
            r.read_buffer(),
            Err(DecodeError::Truncated {
                needed: 1_000_000,
                left: 3
            })
        );
    }

    #[test]
    fn length_beyond_maximum_is_rejected() {
        let mut bytes = Vec::new();
        bytes.put_buffer(&[0u8; 64]);
        let mut r = Reader::new(&bytes, 10);
        assert_eq!(
            r.read_buffer(),
            Err(DecodeError::TooLong {
                length: 64,
                max: 10
            })
        );
    }

    #[test]
    fn negative_length_is_rejected() {
        let bytes = (-7i32).to_be_bytes();
        let mut r = Reader::new(&bytes, 100);
        assert_eq!(r.read_buffer(), Err(DecodeError::NegativeLength(-7)));
    }

    #[test]
    fn vector_count_larger_than_frame_is_rejected() {
        let mut bytes = Vec::new();
        bytes.put_i32(0x7fff_ffff);
        let mut r = Reader::new(&bytes, 100);
        assert!(matches!(
            r.read_string_vec(),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut bytes = Vec::new();
        bytes.put_buffer(&[0xff, 0xfe]);
        let mut r = Reader::new(&bytes, 100);
        assert_eq!(r.read_ustring(), Err(DecodeError::InvalidUtf8));
    }
}
