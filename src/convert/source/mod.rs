//! Sources: where `LogRecord`s come from. They know AWS formats, nothing of spans.
//!
//! * [`file`]: export trees, subscription payloads, CLI output, captured stdout on disk.
//! * [`cloudwatch`]: FilterLogEvents (`read`, `tail --poll`).
//! * [`s3`]: a CreateExportTask tree in S3 (`convert s3://…`), through `file`'s parser.
//! * [`merge`]: several sources at once (`tail` over several accounts and Regions).

#[cfg(feature = "convert")]
pub mod cloudwatch;
pub mod file;
#[cfg(feature = "convert")]
pub mod local;
#[cfg(feature = "convert")]
pub mod merge;
pub mod payload;
#[cfg(feature = "convert")]
pub mod s3;
