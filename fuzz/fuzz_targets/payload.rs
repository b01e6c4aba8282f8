//! Fuzz the CloudWatch Logs payload decoder, `decode_payload`: subscription payloads (what
//! Kinesis and the Lambda event carry), the Lambda `{"awslogs":{"data":…}}` event, Firehose's
//! concatenated gzip members, CLI output; gzip or not. It must decode or return an error, never
//! panic, and what it reports must match what it handed out:
//! * `Ok(found)`: `found.records` is the number of records handed out;
//! * `Err(Json { records, .. })`: `records` is the number handed out before the error;
//! * `Err(Stopped)` exactly when the receiver went away: a second run whose receiver leaves at
//!   the first full batch must end so;
//! * every record has a log group (the payload's or the default) and no more than `max_line`
//!   bytes of message.
//!
//! The first byte may ask for a wrapping, so that mutations of plain JSON reach the decoders
//! behind gzip and base64 (which random mutations of the wrapped bytes almost never keep valid):
//! `0xf0` gzips the rest, `0xf1` makes it the `awslogs.data` of a Lambda event (gzipped, then
//! base64), `0xf2` the same without gzip, `0xf3` gzips each NUL-separated part (up to 8) into
//! one Firehose object. Any other first byte (JSON starts with `{` or a space, gzip with `0x1f`)
//! leaves the input as it is.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use spanline::convert::record::RecordBatch;
use spanline::convert::source::payload::{decode_payload, BatchOut, Found, Limits, PayloadError};
use std::borrow::Cow;

/// Small bounds: a bomb stops at 1 MiB, lines are cut at a length a small input reaches, and
/// batches fill after a few records.
const LIMITS: Limits = Limits {
    max_line: 1000,
    max_payload: 1 << 20,
    max_inflated: 1 << 20,
    batch_bytes: 512,
};

const DEFAULT_GROUP: &str = "/default";

/// `data` as one gzip member of stored deflate blocks: the framing of CloudWatch's gzip
/// without compressing (a compressor per input, up to one per Firehose part, made most of
/// this target's time). The seeds hold compressed members for the decoder's other paths.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut blocks = data.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn awslogs(data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    format!(r#"{{"awslogs":{{"data":"{b64}"}}}}"#).into_bytes()
}

fn wrap(data: &[u8]) -> Cow<'_, [u8]> {
    match data.split_first() {
        Some((0xf0, rest)) => Cow::Owned(gzip(rest)),
        Some((0xf1, rest)) => Cow::Owned(awslogs(&gzip(rest))),
        Some((0xf2, rest)) => Cow::Owned(awslogs(rest)),
        Some((0xf3, rest)) => Cow::Owned(rest.splitn(8, |&b| b == 0).flat_map(gzip).collect()),
        _ => Cow::Borrowed(data),
    }
}

struct Run {
    result: Result<Found, PayloadError>,
    handed: u64,
    /// Batches handed on while decoding (the last, partial one not counted).
    flushes: u64,
}

/// Decodes `data`; the receiver goes away at flush number `leave_at` (1-based), if given.
fn run(data: &[u8], leave_at: Option<u64>) -> Run {
    let mut handed = 0u64;
    let mut flushes = 0u64;
    let mut flush = |mut batch: RecordBatch| {
        flushes += 1;
        handed += check(&batch);
        if leave_at.is_some_and(|n| flushes >= n) {
            return None;
        }
        batch.clear();
        Some(batch)
    };
    let mut out = BatchOut::new(RecordBatch::default(), LIMITS.batch_bytes, &mut flush);
    let result = decode_payload(data, LIMITS, DEFAULT_GROUP, &mut out);
    let last = out.into_batch();
    handed += check(&last);
    Run {
        result,
        handed,
        flushes,
    }
}

/// Checks the records of a batch; their number.
fn check(batch: &RecordBatch) -> u64 {
    for r in batch.iter() {
        assert!(!r.log_group.is_empty(), "a record without a log group");
        assert!(
            r.message.len() <= LIMITS.max_line,
            "a message of {} bytes",
            r.message.len()
        );
    }
    batch.len() as u64
}

fuzz_target!(|data: &[u8]| {
    let data = wrap(data);
    let full = run(&data, None);
    match &full.result {
        Ok(found) => assert_eq!(found.records, full.handed, "{found:?}"),
        Err(PayloadError::Json { records, .. }) => assert_eq!(*records, full.handed),
        Err(PayloadError::Stopped) => panic!("stopped, but the receiver never went away"),
        Err(_) => {}
    }
    if full.flushes > 0 {
        let cut = run(&data, Some(1));
        assert!(
            matches!(cut.result, Err(PayloadError::Stopped)),
            "the receiver went away, but decoding ended with {:?}",
            cut.result
        );
        assert!(cut.handed <= full.handed);
    }
});
