//! CloudWatch Logs as a source: `read` (FilterLogEvents over a time range) and `tail --poll`
//! (FilterLogEvents again and again over a sliding window). Produces [`LogRecord`]s in stream
//! order; knows nothing of spans.
//!
//! * [`budget`]: one token bucket per run, so parallel groups stay under the account's 5 TPS.
//! * [`filter`]: one group's pages, retries, ordering; resolving which groups to read.
//! * [`tail`]: `tail --poll`'s passes over event time and their bounded de-duplication.
//! * [`late`]: the ingestion lag measured, late events counted and warned about.
//!
//! The SDK's own retries are turned off for these clients: they would bypass the shared budget.
//! Retries happen here, each attempt paying a token, throttling draining the bucket.
//!
//! [`LogRecord`]: crate::convert::record::LogRecord

pub mod budget;
pub mod export;
pub mod filter;
pub mod late;
pub mod live;
pub mod tail;
