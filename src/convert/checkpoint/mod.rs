//! The forwarder's durable state (`spanline forward`): per log group, where the next run reads
//! from and which spans were already accepted by the backend, kept in a local file or an S3
//! object, behind a lock so two runs never forward the same window.
//!
//! # Format (version 1)
//! ```json
//! {"version":1,"groups":{"/aws/lambda/orders":{"cursor_ms":1764547200000,
//!   "forwarded":[{"until_ms":1764547260000,"span_ids":["4bf92f3577b34da6", …]}]}}}
//! ```
//! * `cursor_ms`: everything of the group before this event time was forwarded, except what
//!   arrives late; the next run reads from `cursor_ms - lateness`.
//! * `forwarded`: the span ids the backend accepted, one entry per run and per read range
//!   (`until_ms` is the end of the range they were read from). A re-read of the lateness window
//!   meets those spans again and drops them by id; an entry is forgotten once `until_ms` falls
//!   before the next run's read start, because no later read can meet its spans again.
//!
//! # Writes
//! Local: the file is written to a temporary file beside it, fsynced, renamed over the old one,
//! and the directory fsynced; the lock is `<file>.lock`, held with an exclusive advisory lock
//! (`flock`) that the operating system releases when the process dies, even by SIGKILL. Neither
//! is opened through a symbolic link (`O_NOFOLLOW`), and the temporary file has a random name
//! and is created exclusively: a link or file planted at either path is an error naming it,
//! and whatever it points to is left alone.
//! S3: every write is a conditional PUT (`If-Match` the ETag read, or `If-None-Match: *` for the
//! first), so a run that lost its lock cannot overwrite a newer checkpoint; the lock is a lease
//! object `<key>.lock` created with `If-None-Match: *`, renewed on each write, and taken over
//! only when expired.

#[cfg(feature = "convert")]
mod store;
#[cfg(feature = "convert")]
pub use store::*;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// The checkpoint format this build writes and reads.
pub const VERSION: u32 = 1;

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Another run holds the lock.
    #[error("checkpoint {location}: locked by another run ({holder})")]
    Locked {
        /// Where the checkpoint is.
        location: String,
        /// What the lock says about its holder.
        holder: String,
    },
    /// A local file could not be read or written.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a checkpoint this build understands.
    #[error("checkpoint {location}: {message}")]
    Format {
        /// Where the checkpoint is.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// S3 refused or failed.
    #[cfg(feature = "convert")]
    #[error("checkpoint {0}")]
    S3(#[from] crate::convert::source::s3::S3Error),
    /// The S3 object changed since it was read: another run wrote it.
    #[error("checkpoint {location}: changed by another run since it was read")]
    Conflict {
        /// Where the checkpoint is.
        location: String,
    },
}

/// Spans the backend accepted, read from a range ending at `until_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forwarded {
    /// End of the read range (event time, ms).
    pub until_ms: i64,
    /// Span ids, 16 hex digits.
    pub span_ids: Vec<String>,
}

/// One log group's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupState {
    /// Everything before this event time is forwarded (but late arrivals).
    pub cursor_ms: i64,
    /// Spans accepted by the backend that a re-read could meet again.
    #[serde(default)]
    pub forwarded: Vec<Forwarded>,
}

impl GroupState {
    /// The ids of every span already accepted.
    pub fn accepted(&self) -> HashSet<String> {
        self.forwarded
            .iter()
            .flat_map(|f| f.span_ids.iter().cloned())
            .collect()
    }

    /// Records spans accepted from a read ending at `until_ms`.
    pub fn add(&mut self, until_ms: i64, ids: impl IntoIterator<Item = String>) {
        match self.forwarded.last_mut() {
            Some(f) if f.until_ms == until_ms => f.span_ids.extend(ids),
            _ => self.forwarded.push(Forwarded {
                until_ms,
                span_ids: ids.into_iter().collect(),
            }),
        }
    }

    /// Moves the cursor (never back) and forgets the spans no read from `next_read_from_ms`
    /// on can meet again.
    pub fn advance(&mut self, cursor_ms: i64, next_read_from_ms: i64) {
        self.cursor_ms = self.cursor_ms.max(cursor_ms);
        self.forwarded
            .retain(|f| f.until_ms >= next_read_from_ms && !f.span_ids.is_empty());
    }
}

/// The whole checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// State by log group name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            version: VERSION,
            groups: BTreeMap::new(),
        }
    }
}

impl Checkpoint {
    /// Parses a checkpoint, refusing versions this build does not know.
    pub fn parse(bytes: &[u8], location: &str) -> Result<Checkpoint, CheckpointError> {
        let format = |message: String| CheckpointError::Format {
            location: location.to_owned(),
            message,
        };
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format(format!("not JSON: {e}")))?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(VERSION) => {}
            Some(n) => {
                return Err(format(format!(
                    "format version {n}; this spanline reads version {VERSION}"
                )))
            }
            None => return Err(format("no format version".to_owned())),
        }
        serde_json::from_value(v).map_err(|e| format(e.to_string()))
    }

    /// The bytes written.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec(self).unwrap_or_default();
        b.push(b'\n');
        b
    }
}

#[cfg(all(test, feature = "convert"))]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_forgets_what_no_read_can_meet_again() {
        let mut g = GroupState::default();
        g.add(1_000, ["a".to_owned(), "b".to_owned()]);
        g.add(1_000, ["c".to_owned()]);
        g.add(2_000, ["d".to_owned()]);
        assert_eq!(g.forwarded.len(), 2);
        assert_eq!(g.accepted().len(), 4);
        g.advance(1_500, 900);
        assert_eq!(g.cursor_ms, 1_500);
        assert_eq!(
            g.accepted().len(),
            4,
            "a read from 900 meets the spans read until 1000"
        );
        g.advance(1_200, 1_001);
        assert_eq!(g.cursor_ms, 1_500, "the cursor never moves back");
        assert_eq!(g.accepted(), HashSet::from(["d".to_owned()]));
        let mut cp = Checkpoint::default();
        cp.groups.insert("/aws/lambda/x".into(), g);
        let back = Checkpoint::parse(&cp.to_bytes(), "t").map_err(|e| e.to_string());
        assert_eq!(back, Ok(cp));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused_with_the_reason() {
        let e = Checkpoint::parse(br#"{"version":2,"groups":{}}"#, "cp.json")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("checkpoint cp.json: format version 2; this spanline reads version 1")
        );
        assert!(Checkpoint::parse(b"{}", "x").is_err());
        assert!(Checkpoint::parse(b"not json", "x").is_err());
        assert!(
            Checkpoint::parse(br#"{"version":1,"groups":{"g":{"cursor_ms":"x"}}}"#, "x").is_err()
        );
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("s3://b/k/cp.json").ok(),
            Some(Location::S3 {
                bucket: "b".into(),
                key: "k/cp.json".into()
            })
        );
        assert!(Location::parse("s3://b/").is_err());
        assert!(Location::parse("s3://b").is_err());
        assert_eq!(
            Location::parse("dir/cp.json").ok(),
            Some(Location::File("dir/cp.json".into()))
        );
    }

    #[test]
    fn a_local_lock_excludes_a_second_holder_until_released() {
        let dir = std::env::temp_dir().join(format!("spanline-lock-{}", std::process::id()));
        let path = dir.join("cp.json");
        let first = lock_file(&path).map_err(|e| e.to_string());
        assert!(first.is_ok());
        match lock_file(&path) {
            Err(CheckpointError::Locked { holder, .. }) => {
                assert_eq!(holder, format!("pid {}", std::process::id()))
            }
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        drop(first);
        assert!(lock_file(&path).is_ok());
        write_atomically(&path, b"{}")
            .map_err(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"{}"[..]));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "spanline-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlink_planted_at_the_lock_is_refused_and_its_target_untouched() {
        let dir = scratch_dir("lock-symlink");
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("cp.json");
        let lock = dir.join("cp.json.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let e = lock_file(&path).map(|_| ()).unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
        assert!(e.to_string().contains("cp.json.lock"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_file_is_refused_and_its_target_untouched() {
        let dir = scratch_dir("tmp-symlink");
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("cp.json");
        // The name the temporary file used to have: predictable from the process id.
        let mut old_tmp = path.as_os_str().to_owned();
        old_tmp.push(format!(".tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // Even at the name chosen, a planted link (or any file) is an error naming it.
        let tmp = dir.join("cp.json.tmp.planted");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = write_via(&path, &tmp, b"{\"x\":1}").unwrap_err();
        assert!(e.to_string().contains("cp.json.tmp.planted"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        // Temporary files get unpredictable names.
        assert_ne!(temp_path(&path), temp_path(&path));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_holder_named_by_a_lock_is_printable() {
        let dir = scratch_dir("lock-holder");
        let path = dir.join("cp.json");
        let held = lock_file(&path).map_err(|e| e.to_string());
        assert!(held.is_ok());
        std::fs::write(dir.join("cp.json.lock"), "pid 7\u{1b}]0;pwned\u{7}\n").unwrap();
        match lock_file(&path) {
            Err(CheckpointError::Locked { holder, .. }) => {
                assert_eq!(holder, "pid 7\\x1b]0;pwned\\x07")
            }
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        drop(held);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
