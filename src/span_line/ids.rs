//! Trace and span ids, and their base64url text form (FORMAT.md §2).
//!
//! Ids are fixed-size byte arrays; the hex forms are what tracing backends show, the base64url
//! forms are what span lines carry (22 + 11 + 11 characters instead of 64 hex digits).

use core::fmt;

/// The base64url alphabet (RFC 4648 §5).
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of a trace id in a span line.
pub const TRACE_ID_B64_LEN: usize = 22;
/// Length of a span id in a span line.
pub const SPAN_ID_B64_LEN: usize = 11;

/// A 128-bit trace id. The all-zero id is invalid and never produced by a decoder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id. The all-zero id is invalid and never produced by a decoder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

/// The value of each base64url character, 0xff for bytes outside the alphabet: one load per
/// character on the hot path of decoding.
const B64_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 64 {
        t[B64[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Encodes `bytes` as unpadded base64url into `out`, which must be exactly
/// `ceil(bytes.len() * 4 / 3)` long.
#[inline]
fn encode_b64(bytes: &[u8], out: &mut [u8]) {
    let mut chunks = bytes.chunks_exact(3);
    let mut outs = out.chunks_exact_mut(4);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        o[0] = B64[(n >> 18) as usize & 63];
        o[1] = B64[(n >> 12) as usize & 63];
        o[2] = B64[(n >> 6) as usize & 63];
        o[3] = B64[n as usize & 63];
    }
    let rem = chunks.remainder();
    let tail = outs.into_remainder();
    match rem.len() {
        1 => {
            let n = u32::from(rem[0]) << 16;
            tail[0] = B64[(n >> 18) as usize & 63];
            tail[1] = B64[(n >> 12) as usize & 63];
        }
        2 => {
            let n = (u32::from(rem[0]) << 16) | (u32::from(rem[1]) << 8);
            tail[0] = B64[(n >> 18) as usize & 63];
            tail[1] = B64[(n >> 12) as usize & 63];
            tail[2] = B64[(n >> 6) as usize & 63];
        }
        _ => {}
    }
}

/// Decodes canonical unpadded base64url of exactly `out.len()` bytes; `None` when a character is
/// outside the alphabet, the length is wrong or the unused low bits are not zero.
fn decode_b64(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != (out.len() * 4).div_ceil(3) {
        return None;
    }
    let mut o = 0;
    for chunk in text.chunks(4) {
        let mut n: u32 = 0;
        let mut bad = 0u8;
        for (i, &c) in chunk.iter().enumerate() {
            let v = B64_VALUE[c as usize];
            bad |= v;
            n |= u32::from(v & 63) << (18 - 6 * i);
        }
        // A byte outside the alphabet has the high bits set.
        if bad & 0xc0 != 0 {
            return None;
        }
        let bytes = chunk.len() - 1;
        // Canonical form: the bits below the last whole byte must be zero.
        let used_bits = 8 * bytes;
        if n & ((1u32 << (24 - used_bits)) - 1) != 0 {
            return None;
        }
        for i in 0..bytes {
            out[o + i] = (n >> (16 - 8 * i)) as u8;
        }
        o += bytes;
    }
    Some(())
}

fn write_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let t = text.as_bytes();
    if t.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in t.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Parses up to `2 * N` hex digits, left-padding with zeros (B3, Jaeger and OpenTracing headers
/// may carry 64-bit trace ids or drop leading zeros).
pub(crate) fn parse_hex_padded<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.is_empty() || text.len() > 2 * N {
        return None;
    }
    let mut padded = [b'0'; 32];
    let start = 2 * N - text.len();
    padded[start..2 * N].copy_from_slice(text.as_bytes());
    core::str::from_utf8(&padded[..2 * N])
        .ok()
        .and_then(parse_hex::<N>)
}

macro_rules! id_impl {
    ($ty:ident, $n:expr, $b64:expr) => {
        impl $ty {
            /// Whether this is the invalid all-zero id.
            pub fn is_zero(&self) -> bool {
                self.0.iter().all(|&b| b == 0)
            }

            /// Parses exactly the lowercase or uppercase hex form.
            pub fn from_hex(text: &str) -> Option<Self> {
                parse_hex::<$n>(text).map(Self)
            }

            /// Writes the base64url form into `out`.
            pub fn to_b64(&self) -> [u8; $b64] {
                let mut out = [0u8; $b64];
                encode_b64(&self.0, &mut out);
                out
            }

            /// Parses the canonical base64url form used in span lines.
            pub fn from_b64(text: &[u8]) -> Option<Self> {
                let mut out = [0u8; $n];
                decode_b64(text, &mut out).map(|()| Self(out))
            }
        }

        /// Lowercase hex, the form tracing backends show.
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($ty))?;
                write_hex(&self.0, f)?;
                write!(f, ")")
            }
        }
    };
}

id_impl!(TraceId, 16, TRACE_ID_B64_LEN);
id_impl!(SpanId, 8, SPAN_ID_B64_LEN);

impl TraceId {
    /// Parses 1 to 32 hex digits, left-padded with zeros (64-bit B3/Jaeger trace ids).
    pub fn from_hex_padded(text: &str) -> Option<Self> {
        parse_hex_padded::<16>(text).map(Self)
    }
}

impl SpanId {
    /// Parses 1 to 16 hex digits, left-padded with zeros.
    pub fn from_hex_padded(text: &str) -> Option<Self> {
        parse_hex_padded::<8>(text).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_b64_matches_format_doc_example() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(&t.to_b64(), b"S_kvNXezTaajzpKdDg5HNg");
        assert_eq!(TraceId::from_b64(b"S_kvNXezTaajzpKdDg5HNg"), Some(t));
        let s = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(&s.to_b64(), b"APBnqgupArc");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn non_canonical_b64_is_rejected() {
        // 'h' instead of 'g' sets an unused low bit.
        assert_eq!(TraceId::from_b64(b"S_kvNXezTaajzpKdDg5HNh"), None);
        assert_eq!(TraceId::from_b64(b"S_kvNXezTaajzpKdDg5HN"), None);
        assert_eq!(SpanId::from_b64(b"APBnqgupAr="), None);
    }

    #[test]
    fn padded_hex_accepts_short_ids() {
        let t = TraceId::from_hex_padded("a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_string(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(TraceId::from_hex_padded(""), None);
        assert_eq!(SpanId::from_hex_padded("xyz"), None);
    }

    proptest::proptest! {
        #[test]
        fn b64_round_trips(bytes: [u8; 16], span: [u8; 8]) {
            let t = TraceId(bytes);
            proptest::prop_assert_eq!(TraceId::from_b64(&t.to_b64()), Some(t));
            let s = SpanId(span);
            proptest::prop_assert_eq!(SpanId::from_b64(&s.to_b64()), Some(s));
        }
    }
}
