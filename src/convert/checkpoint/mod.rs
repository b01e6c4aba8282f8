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
//!   arrives late; the next run reads from a little before it (the head, [`GroupState::plan`]).
//! * `swept_ms`: when the lateness window was last read whole (the read's end, `now` of that
//!   run); the next sweep reads from `swept_ms - lateness`, so every event ingested at most
//!   `lateness` after its timestamp is read by a sweep after its ingestion. Absent in
//!   checkpoints of earlier builds: the next run sweeps from `cursor_ms - lateness`.
//! * `lag_p99_ms`: the 99th percentile of the ingestion lag the last run measured; it sizes
//!   the head.
//! * `kept_traces` (only with sampling): the trace ids a run kept, with its read end; spans of
//!   them read by a later run are kept whatever the sampling rule says of them alone.
//!   Remembered for the lateness plus 15 minutes, at most 16,384.
//! * `forwarded`: the span ids the backend accepted, one entry per run and per read range
//!   (`until_ms` is the end of the range they were read from). A re-read meets those spans
//!   again and drops them by id; an entry is forgotten once `until_ms` falls before the
//!   earliest read start of any later run ([`GroupState::earliest_next_read_ms`]), because no
//!   later read can meet its spans again.
//!
//! # Reads
//! Reading `[cursor - lateness, now]` on every run loses nothing late but returns each event
//! `lateness / schedule + 1` times (6 for 5 minutes every minute). So a run reads the **head**,
//! `[cursor - head, now]` with `head` the measured 99th percentile of the lag plus a second
//! (at most the lateness): what came in on time. Once `sweep_every` has passed since the last
//! sweep it reads the **sweep** instead, `[swept_ms - lateness, now]`: any event ingested after
//! the last sweep with a lag of at most `lateness` has its timestamp in there. An event is then
//! returned by one or two heads and by `(lateness + sweep_every) / sweep_every` sweeps (three
//! reads in all at the defaults), and one that came in late is forwarded by the next sweep.
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
    /// The end of the last read of the whole lateness window (a sweep), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swept_ms: Option<i64>,
    /// The 99th percentile of the ingestion lag the last run measured, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_p99_ms: Option<i64>,
    /// Spans accepted by the backend that a re-read could meet again.
    #[serde(default)]
    pub forwarded: Vec<Forwarded>,
}

/// The head's margin over the measured lag, and its size before any lag was measured, ms.
pub const HEAD_MARGIN_MS: i64 = 1_000;

/// Where a run reads a group from (to its `now`), and whether that read is a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// Event time the read starts at, ms.
    pub from_ms: i64,
    /// The read covers the whole lateness window since the last sweep.
    pub sweep: bool,
    /// How far before the cursor the head reads, ms.
    pub head_ms: i64,
}

impl ReadPlan {
    /// The first read of a group without state: everything from `from_ms`, a sweep.
    pub fn first(from_ms: i64) -> Self {
        ReadPlan {
            from_ms,
            sweep: true,
            head_ms: 0,
        }
    }
}

impl GroupState {
    /// How far before the cursor a run reads to meet the events that came in a little late:
    /// the measured 99th percentile of the lag plus [`HEAD_MARGIN_MS`], at most `lateness_ms`.
    pub fn head_ms(&self, lateness_ms: i64) -> i64 {
        self.lag_p99_ms
            .unwrap_or(0)
            .max(0)
            .saturating_add(HEAD_MARGIN_MS)
            .min(lateness_ms.max(0))
    }

    /// What a run at `now_ms` reads: the sweep `[swept_ms - lateness, now]` once `sweep_every_ms`
    /// has passed since the last one (or none is recorded), else the head
    /// `[cursor - head, now]`; either starts no later than the head.
    pub fn plan(&self, now_ms: i64, lateness_ms: i64, sweep_every_ms: i64) -> ReadPlan {
        let head_ms = self.head_ms(lateness_ms);
        let head_from = self.cursor_ms.saturating_sub(head_ms);
        let sweep = self
            .swept_ms
            .is_none_or(|s| now_ms.saturating_sub(s) >= sweep_every_ms);
        let from_ms = if sweep {
            let swept = self.swept_ms.unwrap_or(self.cursor_ms);
            swept.saturating_sub(lateness_ms).min(head_from)
        } else {
            head_from
        };
        ReadPlan {
            from_ms,
            sweep,
            head_ms,
        }
    }

    /// The earliest event time any later run can read from (its head is at most the
    /// lateness before the cursor, its sweep the lateness before the last sweep).
    pub fn earliest_next_read_ms(&self, lateness_ms: i64) -> i64 {
        self.swept_ms
            .map_or(self.cursor_ms, |s| s.min(self.cursor_ms))
            .saturating_sub(lateness_ms)
    }

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

    /// Moves the cursor (never back) and forgets the spans no later read can meet again:
    /// those read until before [`GroupState::earliest_next_read_ms`].
    pub fn advance(&mut self, cursor_ms: i64, lateness_ms: i64) {
        self.cursor_ms = self.cursor_ms.max(cursor_ms);
        let horizon = self.earliest_next_read_ms(lateness_ms);
        self.forwarded
            .retain(|f| f.until_ms >= horizon && !f.span_ids.is_empty());
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
    /// With sampling: the traces a run kept (32 hex digits), with that run's read end (ms),
    /// so that their spans read by later runs are kept too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_traces: BTreeMap<String, i64>,
}

/// Most kept traces a checkpoint remembers (the oldest forgotten first).
pub const MAX_KEPT_TRACES: usize = 16_384;

/// How long a kept trace is remembered beyond the lateness, ms.
pub const KEPT_TRACES_FOR_MS: i64 = 15 * 60_000;

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            version: VERSION,
            groups: BTreeMap::new(),
            kept_traces: BTreeMap::new(),
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

    /// Records that a run reading up to `until_ms` kept `trace` (sampling).
    pub fn keep_trace(&mut self, trace: &crate::span_line::TraceId, until_ms: i64) {
        let hex = trace.to_string();
        let t = self.kept_traces.entry(hex).or_insert(until_ms);
        *t = (*t).max(until_ms);
    }

    /// Forgets kept traces recorded before `before_ms`, and the oldest past
    /// [`MAX_KEPT_TRACES`].
    pub fn forget_kept_traces(&mut self, before_ms: i64) {
        self.kept_traces.retain(|_, t| *t >= before_ms);
        if self.kept_traces.len() > MAX_KEPT_TRACES {
            let mut times: Vec<i64> = self.kept_traces.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() - MAX_KEPT_TRACES];
            self.kept_traces.retain(|_, t| *t >= cut);
            // Ties at the cut: drop by id order until within the bound.
            while self.kept_traces.len() > MAX_KEPT_TRACES {
                let Some(k) = self
                    .kept_traces
                    .iter()
                    .find(|(_, t)| **t == cut)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.kept_traces.remove(&k);
            }
        }
    }

    /// The kept traces, as ids.
    pub fn kept_trace_ids(&self) -> Vec<crate::span_line::TraceId> {
        self.kept_traces
            .keys()
            .filter_map(|h| crate::span_line::TraceId::from_hex(h))
            .collect()
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
        // Lateness 600: no later read starts before 900.
        g.advance(1_500, 600);
        assert_eq!(g.cursor_ms, 1_500);
        assert_eq!(
            g.accepted().len(),
            4,
            "a read from 900 meets the spans read until 1000"
        );
        g.advance(1_200, 499);
        assert_eq!(g.cursor_ms, 1_500, "the cursor never moves back");
        assert_eq!(g.accepted(), HashSet::from(["d".to_owned()]));
        let mut cp = Checkpoint::default();
        cp.groups.insert("/aws/lambda/x".into(), g);
        let back = Checkpoint::parse(&cp.to_bytes(), "t").map_err(|e| e.to_string());
        assert_eq!(back, Ok(cp));
    }

    /// Runs a schedule of `forward` runs over events ingested up to the lateness after their
    /// timestamps; returns how many events were never read after their ingestion, and the
    /// reads per event.
    fn simulate(sweep_every_ms: i64, seed: u64) -> (usize, f64) {
        const LATENESS: i64 = 300_000;
        let mut x = seed | 1;
        let mut rnd = move |n: i64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i64::try_from(x % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
        };
        // (timestamp, ingestion): most on time, a few late, the latest at the lateness.
        let events: Vec<(i64, i64)> = (0..20_000)
            .map(|_| {
                let t = rnd(3_600_000);
                let lag = match rnd(1000) {
                    0..=979 => rnd(2_000),
                    980..=994 => 2_000 + rnd(28_000),
                    _ => 30_000 + rnd(LATENESS - 30_000 + 1),
                };
                (t, t + lag)
            })
            .collect();
        let last_ingested = events.iter().map(|e| e.1).max().unwrap_or(0);
        let mut reads = vec![0u32; events.len()];
        let mut st: Option<GroupState> = None;
        let mut now = 0;
        let mut prev_now = i64::MIN;
        // Runs about every minute, until a sweep came after the last ingestion (or an hour
        // after it: a schedule that never sweeps loses the late events).
        while now <= last_ingested + 3_600_000 {
            now += 30_000 + rnd(60_000);
            let plan = st.as_ref().map_or(ReadPlan::first(0), |s| {
                s.plan(now, LATENESS, sweep_every_ms)
            });
            let mut lags = Vec::new();
            for (k, &(t, i)) in events.iter().enumerate() {
                if t >= plan.from_ms && t <= now && i <= now {
                    reads[k] += 1;
                    if i > prev_now {
                        lags.push(i - t);
                    }
                }
            }
            lags.sort_unstable();
            let g = st.get_or_insert_with(GroupState::default);
            g.cursor_ms = now;
            if let Some(q) = lags.get((lags.len().max(1) - 1) * 99 / 100) {
                g.lag_p99_ms = Some(*q);
            }
            if plan.sweep {
                g.swept_ms = Some(now);
                if now > last_ingested {
                    break;
                }
            }
            prev_now = now;
        }
        let missed = reads.iter().filter(|r| **r == 0).count();
        let total: u64 = reads.iter().map(|r| u64::from(*r)).sum();
        (missed, total as f64 / events.len() as f64)
    }

    #[test]
    fn heads_and_sweeps_read_every_event_within_the_lateness_about_three_times() {
        for seed in [1, 7, 42] {
            // Every run sweeps (what forward did before sweeps): nothing lost, 5-6 reads.
            let (missed, every_run) = simulate(0, seed);
            assert_eq!(missed, 0);
            assert!(every_run > 5.0, "{every_run}");
            // The default, a sweep every lateness: nothing lost, about half the reads.
            let (missed, sweeping) = simulate(300_000, seed);
            assert_eq!(missed, 0, "seed {seed}");
            assert!(
                sweeping < 3.3,
                "{sweeping} reads per event (every run: {every_run})"
            );
            // Sweeps rarer than the lateness still lose nothing: they read from the last one.
            let (missed, rare) = simulate(900_000, seed);
            assert_eq!(missed, 0, "seed {seed}");
            assert!(rare < sweeping, "{rare}");
            eprintln!("reads per event: every run {every_run:.2}, sweeps {sweeping:.2}, rare sweeps {rare:.2}");
        }
    }

    #[test]
    fn a_group_state_of_an_earlier_build_sweeps_from_its_cursor() {
        let old = Checkpoint::parse(
            br#"{"version":1,"groups":{"g":{"cursor_ms":1000000}}}"#,
            "x",
        )
        .map_err(|e| e.to_string());
        let g = old.map(|cp| cp.groups["g"].clone()).unwrap_or_default();
        assert_eq!(g.swept_ms, None);
        let p = g.plan(1_060_000, 300_000, 300_000);
        assert!(p.sweep);
        assert_eq!(p.from_ms, 700_000);
        assert_eq!(g.earliest_next_read_ms(300_000), 700_000);
        // Swept a minute ago: the head only, a second before the cursor until a lag is known.
        let g = GroupState {
            swept_ms: Some(1_000_000),
            ..g
        };
        let p = g.plan(1_060_000, 300_000, 300_000);
        assert_eq!(
            (p.sweep, p.from_ms, p.head_ms),
            (false, 999_000, HEAD_MARGIN_MS)
        );
        // The head follows the measured lag, within the lateness.
        let g = GroupState {
            lag_p99_ms: Some(4_000),
            ..g
        };
        assert_eq!(g.plan(1_060_000, 300_000, 300_000).from_ms, 995_000);
        let g = GroupState {
            lag_p99_ms: Some(900_000),
            ..g
        };
        assert_eq!(g.plan(1_060_000, 300_000, 300_000).from_ms, 700_000);
        // Due again: from the lateness before the last sweep.
        let p = g.plan(1_300_000, 300_000, 300_000);
        assert_eq!((p.sweep, p.from_ms), (true, 700_000));
        // Swept fields round-trip, and are left out when unknown.
        let mut cp = Checkpoint::default();
        cp.groups.insert("g".into(), g);
        let bytes = cp.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("\"swept_ms\":1000000"));
        assert_eq!(Checkpoint::parse(&bytes, "x").ok(), Some(cp));
        assert!(!String::from_utf8_lossy(&Checkpoint::default().to_bytes()).contains("swept"));
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
