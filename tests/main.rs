//! Integration tests: one binary, modules per area (ripgrep's layout).

mod accounts;
mod article;
mod cloudwatch;
mod conformance;
mod convert;
mod e2e;
mod forward;
mod hostile;
mod lambda;
mod memory;
mod model;
mod otlp_logs;
mod properties;
mod reference;
mod sampling;
mod support;
mod xray;
