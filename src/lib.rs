//! spanline: trace serverless functions through their logs.
//!
//! Functions link the **emitter** ([`emit`]): an OpenTracing-style tracer that prints one
//! compact span line per finished span to stdout, with no network, no background thread and no
//! allocation per span. The **converter** (feature `convert`, on by default) reads those lines
//! back out of CloudWatch Logs and forwards them as spans. Both sides share the
//! [`span_line`] module, the format contract.
//!
//! Build with `default-features = false` to get the emitter alone.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod emit;
pub mod span_line;

#[cfg(feature = "core")]
pub mod convert;
