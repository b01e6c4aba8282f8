//! Time and id sources for the emitter.

use crate::span_line::{SpanId, TraceId};
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
///
/// One `clock_gettime(CLOCK_REALTIME)` (a vDSO call, no system call), converted by hand:
/// `SystemTime::now().duration_since(UNIX_EPOCH)` reads the same clock but adds `Timespec`
/// arithmetic and a `Result` (about 7 ns per read in `benches/emit.rs`). Start and end are both
/// read from the wall clock, not a monotonic one anchored once per process: after a Lambda
/// SnapStart restore or a long freeze an anchor would be stale, and starts would be wrong by
/// the time spent frozen. The coarse clocks (`CLOCK_REALTIME_COARSE`, a few ns) tick every 1–4 ms,
/// and the format's times are microseconds.
#[cfg(unix)]
#[inline]
pub(crate) fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 || ts.tv_sec < 0 {
        return 0;
    }
    // Fine until the year 586,912.
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
#[cfg(not(unix))]
#[inline]
pub(crate) fn now_us() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        // Cheaper than `as_micros` (no u128 arithmetic); fine until the year 586,912.
        Ok(d) => d.as_secs() * 1_000_000 + u64::from(d.subsec_micros()),
        Err(_) => 0,
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the time, the process and the thread's stack address. Ids need to
/// be unique, not secret; std's `RandomState` would pull SipHash and `getrandom` into every
/// binary for no gain here.
fn seed() -> u64 {
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let t = now_us();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut x = t
        ^ nanos.rotate_left(40)
        ^ addr.rotate_left(17)
        ^ u64::from(std::process::id()).rotate_left(48);
    // One SplitMix64 round to spread the bits.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 27)) | 1
}

/// SplitMix64: fast, statistically sound for ids (not for secrets).
#[inline]
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A fresh non-zero span id.
pub(crate) fn new_span_id() -> SpanId {
    loop {
        let v = next_u64();
        if v != 0 {
            return SpanId(v.to_be_bytes());
        }
    }
}

/// A fresh non-zero trace id.
pub(crate) fn new_trace_id() -> TraceId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&next_u64().to_be_bytes());
    b[8..].copy_from_slice(&new_span_id().0);
    TraceId(b)
}
