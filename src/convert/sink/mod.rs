//! Sinks: where spans go. They know nothing of span lines.

pub mod terminal;
