//! Sources: where `LogRecord`s come from. They know AWS formats, nothing of spans.

pub mod file;
