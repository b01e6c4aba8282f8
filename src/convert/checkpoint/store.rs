//! The checkpoint's storage (a local file or an S3 object, behind a lock) and `forward`'s
//! commit rule ([`Forwarding`]): see the parent module for the format and the write protocol.

use super::{Checkpoint, CheckpointError};
use crate::convert::aws::AwsOptions;
use crate::convert::source::s3::retry as s3_retry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the checkpoint lives, parsed from `--checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// An S3 object.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

impl Location {
    /// `s3://bucket/key` or a path.
    pub fn parse(s: &str) -> Result<Location, CheckpointError> {
        match s.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((b, k)) if !b.is_empty() && !k.is_empty() && !k.ends_with('/') => {
                    Ok(Location::S3 {
                        bucket: b.to_owned(),
                        key: k.to_owned(),
                    })
                }
                _ => Err(CheckpointError::Format {
                    location: s.to_owned(),
                    message: "expected s3://bucket/key".to_owned(),
                }),
            },
            None => Ok(Location::File(PathBuf::from(s))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// What the lease object says.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    expires_ms: i64,
}

/// An open, locked checkpoint store. Dropping it releases a local lock; call
/// [`Store::unlock`] to release an S3 lease (an abandoned lease expires by itself).
pub struct Store {
    location: Location,
    lock: Held,
    /// S3: the ETag of the checkpoint object as last read or written (`None`: no object yet).
    etag: Option<String>,
}

enum Held {
    File(#[allow(dead_code)] std::fs::File),
    S3 {
        client: aws_sdk_s3::Client,
        owner: String,
        etag: String,
        ttl: Duration,
    },
    Nothing,
}

fn now_ms() -> i64 {
    crate::convert::time::now_ms()
}

fn is_precondition_failed(e: &crate::convert::source::s3::S3Error) -> bool {
    let t = e.to_string();
    t.contains("PreconditionFailed") || t.contains("ConditionalRequestConflict")
}

fn is_missing(e: &crate::convert::source::s3::S3Error) -> bool {
    let t = e.to_string();
    t.contains("NoSuchKey") || t.contains("NotFound")
}

impl Store {
    /// Opens the store and takes its lock (`lock_ttl`: how long an S3 lease lasts unless
    /// renewed). With `lock == false` (a dry run) nothing is locked and nothing may be saved.
    pub async fn open(
        location: Location,
        aws: &AwsOptions,
        lock: bool,
        lock_ttl: Duration,
    ) -> Result<Store, CheckpointError> {
        let held = match (&location, lock) {
            (_, false) => Held::Nothing,
            (Location::File(p), true) => Held::File(lock_file(p)?),
            (Location::S3 { bucket, key }, true) => {
                let client = aws.s3_client().await;
                let owner = format!(
                    "pid {} on {}",
                    std::process::id(),
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown host".into())
                );
                let etag = take_lease(&client, bucket, key, &owner, lock_ttl, &location).await?;
                Held::S3 {
                    client,
                    owner,
                    etag,
                    ttl: lock_ttl,
                }
            }
        };
        Ok(Store {
            location,
            lock: held,
            etag: None,
        })
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Reads the checkpoint (an empty one when there is none yet).
    pub async fn load(&mut self, aws: &AwsOptions) -> Result<Checkpoint, CheckpointError> {
        let loc = self.location.to_string();
        match &self.location {
            Location::File(p) => match std::fs::read(p) {
                Ok(b) => Checkpoint::parse(&b, &loc),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
                Err(source) => Err(CheckpointError::Io {
                    path: p.clone(),
                    source,
                }),
            },
            Location::S3 { bucket, key } => {
                let client = match &self.lock {
                    Held::S3 { client, .. } => client.clone(),
                    _ => aws.s3_client().await,
                };
                let got = s3_retry(bucket, key, "GetObject", || {
                    client.get_object().bucket(bucket).key(key).send()
                })
                .await;
                match got {
                    Ok(o) => {
                        self.etag = o.e_tag().map(str::to_owned);
                        let body = o
                            .body
                            .collect()
                            .await
                            .map_err(|e| CheckpointError::Format {
                                location: loc.clone(),
                                message: format!("reading the object: {e}"),
                            })?;
                        Checkpoint::parse(&body.into_bytes(), &loc)
                    }
                    Err(e) if is_missing(&e) => {
                        self.etag = None;
                        Ok(Checkpoint::default())
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Writes the checkpoint durably (and renews an S3 lease).
    pub async fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let bytes = cp.to_bytes();
        let loc = self.location.to_string();
        match (&self.location, &mut self.lock) {
            (_, Held::Nothing) => Err(CheckpointError::Format {
                location: loc,
                message: "not locked: a dry run saves nothing".to_owned(),
            }),
            (Location::File(p), _) => write_atomically(p, &bytes),
            (
                Location::S3 { bucket, key },
                Held::S3 {
                    client,
                    owner,
                    etag: lease_etag,
                    ttl,
                },
            ) => {
                *lease_etag =
                    renew_lease(client, bucket, key, owner, lease_etag, *ttl, &self.location)
                        .await?;
                match put_if(client, bucket, key, &bytes, self.etag.as_deref()).await? {
                    Some(etag) => {
                        self.etag = Some(etag);
                        Ok(())
                    }
                    None => Err(CheckpointError::Conflict { location: loc }),
                }
            }
            (Location::S3 { .. }, Held::File(_)) => Err(CheckpointError::Format {
                location: loc,
                message: "an S3 checkpoint with a file lock".to_owned(),
            }),
        }
    }

    /// Releases the lock (deletes an S3 lease if it is still ours).
    pub async fn unlock(mut self) -> Result<(), CheckpointError> {
        if let (Location::S3 { bucket, key }, Held::S3 { client, etag, .. }) =
            (&self.location, &self.lock)
        {
            let lock_key = format!("{key}.lock");
            s3_retry(bucket, &lock_key, "DeleteObject", || {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&lock_key)
                    .if_match(etag)
                    .send()
            })
            .await?;
        }
        self.lock = Held::Nothing;
        Ok(())
    }
}

/// Takes the exclusive advisory lock on `<path>.lock` without waiting.
pub(super) fn lock_file(path: &Path) -> Result<std::fs::File, CheckpointError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let file = no_follow(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true),
    )
    .open(&lock_path)
    .map_err(|source| CheckpointError::Io {
        path: lock_path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message another run prints; advisory only.
            let _ = file.set_len(0);
            let _ = (&file).write_all(format!("pid {}\n", std::process::id()).as_bytes());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(CheckpointError::Locked {
            location: path.display().to_string(),
            // Whatever another process wrote there: made printable.
            holder: std::fs::read_to_string(&lock_path)
                .map(|s| crate::convert::printable::visible(s.trim()).into_owned())
                .unwrap_or_default(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(CheckpointError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// `options` made to refuse a symbolic link as the last component of the path (`O_NOFOLLOW`:
/// the open fails with `ELOOP`). The lock and temporary files sit in a directory other users
/// may be able to write to; following a link planted there would truncate and overwrite the
/// link's target with our permissions.
fn no_follow(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// A fresh name for the temporary file beside `path`: `<path>.tmp.<16 random hex digits>`, so
/// nobody can plant anything at it in advance.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{:016x}", rand::random::<u64>()));
    PathBuf::from(tmp)
}

/// temp file + fsync + rename + fsync of the directory.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_via(path, &temp_path(path), bytes)
}

/// [`write_atomically`] through the temporary file `tmp`, which must not exist yet: it is
/// created exclusively (`O_CREAT | O_EXCL`, which also refuses a symbolic link, dangling or
/// not) and without following links, so a planted file or link is an error naming it.
pub(super) fn write_via(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| CheckpointError::Io { path: p, source }
    };
    let mut f = no_follow(std::fs::OpenOptions::new().write(true).create_new(true))
        .open(tmp)
        .map_err(io(tmp))?;
    if let Err(source) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        // The file is ours (`create_new`): do not leave it behind.
        drop(f);
        let _ = std::fs::remove_file(tmp);
        return Err(CheckpointError::Io {
            path: tmp.to_owned(),
            source,
        });
    }
    drop(f);
    std::fs::rename(tmp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(&dir) {
        d.sync_all().map_err(io(&dir))?;
    }
    Ok(())
}

pub(super) fn lease_body(owner: &str, ttl: Duration) -> Vec<u8> {
    let lease = Lease {
        owner: owner.to_owned(),
        expires_ms: now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
    };
    serde_json::to_vec(&lease).unwrap_or_default()
}

/// A conditional PUT: with `etag`, only over that version of the object (`If-Match`); without,
/// only if there is no object yet (`If-None-Match: *`). Returns the new ETag, or `None` when the
/// condition failed: another run wrote (or removed) the object since.
async fn put_if(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    etag: Option<&str>,
) -> Result<Option<String>, crate::convert::source::s3::S3Error> {
    let put = s3_retry(bucket, key, "PutObject", || {
        let req = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.to_vec().into());
        match etag {
            Some(e) => req.if_match(e),
            None => req.if_none_match("*"),
        }
        .send()
    })
    .await;
    match put {
        Ok(o) => Ok(Some(o.e_tag().unwrap_or_default().to_owned())),
        Err(e) if is_precondition_failed(&e) || (etag.is_some() && is_missing(&e)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the lease object, or takes over an expired one. Returns its ETag.
async fn take_lease(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    owner: &str,
    ttl: Duration,
    location: &Location,
) -> Result<String, CheckpointError> {
    let lock_key = format!("{key}.lock");
    let body = lease_body(owner, ttl);
    if let Some(etag) = put_if(client, bucket, &lock_key, &body, None).await? {
        return Ok(etag);
    }
    // Someone holds it: take it over only if the lease ran out.
    let got = s3_retry(bucket, &lock_key, "GetObject", || {
        client.get_object().bucket(bucket).key(&lock_key).send()
    })
    .await?;
    let etag = got.e_tag().unwrap_or_default().to_owned();
    let raw = got
        .body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .unwrap_or_default();
    let lease: Option<Lease> = serde_json::from_slice(&raw).ok();
    let locked = |holder: String| CheckpointError::Locked {
        location: location.to_string(),
        holder,
    };
    match lease {
        Some(l) if l.expires_ms > now_ms() => Err(locked(format!(
            "{}, lease expires in {} s",
            l.owner,
            (l.expires_ms - now_ms()) / 1000
        ))),
        _ => put_if(client, bucket, &lock_key, &body, Some(&etag))
            .await?
            .ok_or_else(|| locked("another run took over the expired lease".into())),
    }
}

/// Extends our lease; fails with `Locked` when it is no longer ours.
async fn renew_lease(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    owner: &str,
    etag: &str,
    ttl: Duration,
    location: &Location,
) -> Result<String, CheckpointError> {
    let lock_key = format!("{key}.lock");
    put_if(
        client,
        bucket,
        &lock_key,
        &lease_body(owner, ttl),
        Some(etag),
    )
    .await?
    .ok_or_else(|| CheckpointError::Locked {
        location: location.to_string(),
        holder: "the lease expired and another run took it".into(),
    })
}

/// Where the checkpoint is written, for [`Forwarding`]: the real [`Store`], or memory in
/// tests.
pub trait SaveCheckpoint: Send {
    /// Writes `cp` durably; `Ok` only once it is.
    fn save_checkpoint(
        &mut self,
        cp: &Checkpoint,
    ) -> impl std::future::Future<Output = Result<(), CheckpointError>> + Send;
}

impl SaveCheckpoint for Store {
    async fn save_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        self.save(cp).await
    }
}

/// A store that keeps nothing: a dry run computes what it would forward and saves nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSave;

impl SaveCheckpoint for NoSave {
    async fn save_checkpoint(&mut self, _: &Checkpoint) -> Result<(), CheckpointError> {
        Ok(())
    }
}

/// Checkpoints kept in memory (tests; the last one saved is what a next run loads). Saves
/// after the first `fail_after` fail, as a crash before the write would.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// Every checkpoint saved, in order.
    pub saved: std::sync::Arc<std::sync::Mutex<Vec<Checkpoint>>>,
    /// Saves that succeed before every later one fails.
    pub fail_after: Option<usize>,
}

impl MemoryStore {
    /// The last checkpoint saved (an empty one when none was).
    pub fn last(&self) -> Checkpoint {
        self.saved
            .lock()
            .ok()
            .and_then(|v| v.last().cloned())
            .unwrap_or_default()
    }
}

impl SaveCheckpoint for MemoryStore {
    async fn save_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let mut saved = self.saved.lock().map_err(|_| CheckpointError::Format {
            location: "memory".into(),
            message: "poisoned".into(),
        })?;
        if self.fail_after.is_some_and(|n| saved.len() >= n) {
            return Err(CheckpointError::Io {
                path: PathBuf::from("memory"),
                source: std::io::Error::other("told to fail"),
            });
        }
        saved.push(cp.clone());
        Ok(())
    }
}

/// `forward`'s rule, as the pipeline's [`Committer`](crate::convert::pipeline::Committer):
/// spans the checkpoint records as accepted are not sent again; each batch the sinks accepted
/// is recorded (and the checkpoint written) before the next is sent; a log group's cursor
/// moves only when every span read before it was accepted and nothing the converter holds
/// back started before it (the pipeline lowers the position to that). A crash loses nothing
/// and re-sends at most the batch in flight.
pub struct Forwarding<S> {
    store: S,
    cp: Checkpoint,
    accepted: HashSet<crate::span_line::SpanId>,
    read_to_ms: i64,
    lateness_ms: i64,
    sweeps: HashSet<String>,
    sampling: bool,
    /// The group key of each input (input `i`: the `i`-th range read), when they are named by
    /// more than the span's log group (several accounts or Regions).
    input_keys: Vec<String>,
    /// Spans accepted in this run, by log group.
    pub forwarded: BTreeMap<String, u64>,
}

impl<S> std::fmt::Debug for Forwarding<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("read_to_ms", &self.read_to_ms)
            .field("lateness_ms", &self.lateness_ms)
            .finish_non_exhaustive()
    }
}

impl<S: SaveCheckpoint> Forwarding<S> {
    /// Continues from `cp`; this run reads up to `read_to_ms`, and each run re-reads
    /// `lateness_ms` before a group's cursor.
    pub fn new(store: S, cp: Checkpoint, read_to_ms: i64, lateness_ms: i64) -> Self {
        let accepted = cp
            .groups
            .values()
            .flat_map(|g| g.forwarded.iter())
            .flat_map(|f| f.span_ids.iter())
            .filter_map(|id| crate::span_line::SpanId::from_hex(id))
            .collect();
        Forwarding {
            store,
            cp,
            accepted,
            read_to_ms,
            lateness_ms,
            sweeps: HashSet::new(),
            sampling: false,
            input_keys: Vec::new(),
            forwarded: BTreeMap::new(),
        }
    }

    /// The run samples: the traces of accepted spans are recorded as kept
    /// ([`Checkpoint::kept_traces`]), so later runs keep their other spans.
    pub fn sampling(mut self, on: bool) -> Self {
        self.sampling = on;
        self
    }

    /// This run's reads of `groups` are sweeps ([`super::ReadPlan::sweep`]): when a group's
    /// read is committed whole, its `swept_ms` becomes this run's `read_to_ms`.
    pub fn sweeping(mut self, groups: impl IntoIterator<Item = String>) -> Self {
        self.sweeps.extend(groups);
        self
    }

    /// The key each input's spans are recorded under (input `i` is `keys[i]`): the range's
    /// key when groups of several accounts or Regions are read (`account/region/group`);
    /// without it (or for an input past the list), the span's log group.
    pub fn input_keys(mut self, keys: Vec<String>) -> Self {
        self.input_keys = keys;
        self
    }

    /// The checkpoint as it stands.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.cp
    }

    /// The store, back (to unlock it).
    pub fn into_store(self) -> S {
        self.store
    }
}

impl<S: SaveCheckpoint> crate::convert::pipeline::Committer for Forwarding<S> {
    type Error = CheckpointError;

    fn already_accepted(&self, span: &crate::convert::assemble::Span) -> bool {
        self.accepted.contains(&span.span_id)
    }

    async fn accepted(
        &mut self,
        spans: &[crate::convert::assemble::Span],
    ) -> Result<(), CheckpointError> {
        for s in spans {
            let group = match self.input_keys.get(s.input as usize) {
                Some(k) => k.as_str(),
                None => s.log_group().unwrap_or(""),
            };
            self.cp
                .groups
                .entry(group.to_owned())
                .or_default()
                .add(self.read_to_ms, [s.span_id.to_string()]);
            *self.forwarded.entry(group.to_owned()).or_default() += 1;
            if self.sampling {
                self.cp.keep_trace(&s.trace_id, self.read_to_ms);
            }
        }
        if self.sampling {
            let before = self
                .read_to_ms
                .saturating_sub(self.lateness_ms.saturating_add(super::KEPT_TRACES_FOR_MS));
            self.cp.forget_kept_traces(before);
        }
        self.store.save_checkpoint(&self.cp).await
    }

    async fn commit(
        &mut self,
        position: &crate::convert::pipeline::Position,
    ) -> Result<(), CheckpointError> {
        let crate::convert::pipeline::Position::Group {
            group,
            key,
            through_ms,
            lag_p99_ms,
        } = position
        else {
            return Ok(());
        };
        let group = key.as_ref().unwrap_or(group);
        let st = self.cp.groups.entry(group.to_string()).or_default();
        // The whole range was read and everything in it accepted or held back (held lines
        // keep the cursor, so the head reads them again).
        if self.sweeps.contains(&**group) {
            st.swept_ms = Some(st.swept_ms.unwrap_or(i64::MIN).max(self.read_to_ms));
        }
        if lag_p99_ms.is_some() {
            st.lag_p99_ms = *lag_p99_ms;
        }
        st.advance(*through_ms, self.lateness_ms);
        self.store.save_checkpoint(&self.cp).await
    }
}

#[cfg(test)]
mod forwarding_tests {
    //! `forward`'s rule end to end through the pipeline, with an in-memory source, sink and
    //! store: a run stopped at any step (a sink failing, a checkpoint write failing, as a crash
    //! would) and the next run from the last checkpoint deliver every span at least once, and
    //! at most one batch twice.
    use super::*;
    use crate::convert::pipeline::{
        self, MemorySource, Mode, Options, Outcome, Position, SourceEvent,
    };
    use crate::convert::record::RecordBatch;
    use crate::convert::sink::{AnySink, MemorySink};
    use std::collections::HashMap;

    const GROUP: &str = "/aws/lambda/fwd";
    // No lateness: a re-read covers nothing more than the cursor asks for, so that a cursor
    // moved too far loses spans the test sees.
    const LATENESS: i64 = 0;
    const BATCH: usize = 2;

    fn req(i: usize) -> String {
        format!("00000000-0000-0000-0000-{i:012}")
    }

    /// `n` invocations, each START, a child and a root span line, REPORT; `loose` span lines of
    /// no invocation between them. One event a second.
    fn log(n: usize, loose: usize) -> Vec<(i64, String)> {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = Vec::new();
        let mut t = 1_700_000_000_000i64;
        let mut tick = || {
            t += 1000;
            t
        };
        for i in 0..n {
            let r = req(i);
            let trace = b.encode([i as u8 + 1; 16]);
            let root = b.encode([i as u8 + 1, 1, 0, 0, 0, 0, 0, 1]);
            let child = b.encode([i as u8 + 1, 2, 0, 0, 0, 0, 0, 1]);
            out.push((tick(), format!("START RequestId: {r} Version: $LATEST")));
            out.push((
                tick(),
                format!("2024-01-01T00:00:00.000Z\t{r}\tINFO\tSPLN1 {trace}{child}{root} 1700000000000000 10 child;"),
            ));
            out.push((
                tick(),
                format!("2024-01-01T00:00:00.000Z\t{r}\tINFO\tSPLN1 {trace}{root} 1700000000000000 20s root;"),
            ));
            out.push((
                tick(),
                format!("REPORT RequestId: {r}\tDuration: 1.00 ms\t"),
            ));
            if i < loose {
                let lt = b.encode([0xee, i as u8 + 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                let ls = b.encode([0xee, i as u8 + 1, 0, 0, 0, 0, 0, 1]);
                out.push((tick(), format!("SPLN1 {lt}{ls} 1700000000000000 5 loose;")));
            }
        }
        out
    }

    /// Runs the pipeline over `events` into `sink` under `committer`, to the end, on a runtime
    /// of its own.
    fn run_pipeline<C: pipeline::Committer + 'static>(
        events: Vec<SourceEvent>,
        sink: MemorySink,
        committer: C,
        options: Options,
    ) -> pipeline::Report {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(pipeline::run(
            MemorySource::new(events),
            vec![AnySink::Memory(sink)],
            committer,
            options,
            None,
            None,
        ))
    }

    /// The events of one run: what a read of `[from, to]` returns, one record per batch, and
    /// the group's mark.
    fn events(log: &[(i64, String)], from: i64, to: i64) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        for (t, m) in log.iter().filter(|(t, _)| *t >= from && *t <= to) {
            let mut b = RecordBatch::new(0);
            let o = b.origin(GROUP, "2024/01/01/[$LATEST]0");
            b.push(o, "", *t, m);
            out.push(SourceEvent::Records(b));
        }
        out.push(SourceEvent::Mark(Position::Group {
            group: GROUP.into(),
            key: None,
            through_ms: to,
            lag_p99_ms: None,
        }));
        out
    }

    /// One run from `cp` over the log up to `to`; the sink fails after `sends` sends, the
    /// store after `saves` saves. Returns what the sink accepted and the store's last
    /// checkpoint.
    fn run_once(
        log: &[(i64, String)],
        cp: Checkpoint,
        to: i64,
        sends: Option<usize>,
        saves: Option<usize>,
    ) -> (Vec<String>, Checkpoint, bool) {
        run_with(log, cp, to, sends, saves, false)
    }

    /// As [`run_once`], the read a sweep when `sweep`.
    fn run_with(
        log: &[(i64, String)],
        cp: Checkpoint,
        to: i64,
        sends: Option<usize>,
        saves: Option<usize>,
        sweep: bool,
    ) -> (Vec<String>, Checkpoint, bool) {
        let from = cp
            .groups
            .get(GROUP)
            .map_or(i64::MIN, |g| g.cursor_ms.saturating_sub(LATENESS));
        let sink = match sends {
            Some(n) => MemorySink::new().fail_after(n),
            None => MemorySink::new(),
        };
        let store = MemoryStore {
            fail_after: saves,
            ..MemoryStore::default()
        };
        let sweeps = sweep.then(|| GROUP.to_owned());
        let committer = Forwarding::new(store.clone(), cp.clone(), to, LATENESS).sweeping(sweeps);
        let options = Options {
            mode: Mode::Resumable,
            batch_spans: BATCH,
            ..Options::default()
        };
        let report = run_pipeline(events(log, from, to), sink.clone(), committer, options);
        let ok = matches!(report.outcome, Outcome::Completed);
        let saved = store.saved.lock().unwrap().clone();
        let last = saved.last().cloned().unwrap_or(cp);
        let ids = sink.spans().iter().map(|s| s.span_id.to_string()).collect();
        (ids, last, ok)
    }

    /// Every span the log makes, run whole.
    fn all_spans(log: &[(i64, String)], to: i64) -> Vec<String> {
        let (ids, _, ok) = run_once(log, Checkpoint::default(), to, None, None);
        assert!(ok);
        ids
    }

    #[test]
    fn a_sweep_is_recorded_once_its_range_is_delivered_and_its_spans_kept_until_the_next() {
        let log = log(3, 0);
        let to = log.last().map_or(0, |(t, _)| *t);
        let mid = log.get(log.len() / 2).map_or(0, |(t, _)| *t);
        // A sweep whose delivery fails is not recorded: the next run sweeps again.
        let (_, cp, ok) = run_with(&log, Checkpoint::default(), mid, Some(0), None, true);
        assert!(!ok);
        assert_eq!(cp.groups.get(GROUP).and_then(|g| g.swept_ms), None);
        // Delivered: recorded at the read's end.
        let (_, cp, ok) = run_with(&log, Checkpoint::default(), mid, None, None, true);
        assert!(ok);
        assert_eq!(cp.groups[GROUP].swept_ms, Some(mid));
        let first = cp.groups[GROUP].accepted();
        assert!(!first.is_empty());
        // A head run after it keeps the spans the next sweep (from the last one) meets again,
        // although they are before its cursor.
        let (_, cp, ok) = run_with(&log, cp, to, None, None, false);
        assert!(ok);
        let g = &cp.groups[GROUP];
        assert_eq!(g.swept_ms, Some(mid), "a head is not a sweep");
        assert!(g.cursor_ms > mid);
        assert!(
            first.is_subset(&g.accepted()),
            "{first:?} {:?}",
            g.accepted()
        );
        // The next sweep forgets them.
        let (_, cp, ok) = run_with(&log, cp, to + 1, None, None, true);
        assert!(ok);
        assert_eq!(cp.groups[GROUP].swept_ms, Some(to + 1));
        assert!(cp.groups[GROUP].accepted().is_disjoint(&first));
    }

    /// Several accounts or Regions: the position is recorded under its key, and an invocation
    /// whose REPORT has not come still holds it back (found by the group's name, which the
    /// records carry), as in a run of one account.
    #[test]
    fn a_keyed_group_keeps_its_cursor_before_an_unfinished_invocation() {
        const KEY: &str = "222222222222/eu-west-1//aws/lambda/fwd";
        let mut log = log(2, 0);
        // The second invocation's REPORT has not come.
        let report = log.pop().expect("REPORT");
        assert!(report.1.starts_with("REPORT"));
        let start = log[4].0;
        assert!(log[4].1.starts_with("START"));
        let to = report.0 + 1000;
        let mut events = events(&log, i64::MIN, to);
        if let Some(SourceEvent::Mark(Position::Group { key, .. })) = events.last_mut() {
            *key = Some(KEY.into());
        }
        let store = MemoryStore::default();
        let committer = Forwarding::new(store.clone(), Checkpoint::default(), to, LATENESS)
            .input_keys(vec![KEY.to_owned()]);
        let options = Options {
            mode: Mode::Resumable,
            batch_spans: BATCH,
            ..Options::default()
        };
        let report = run_pipeline(events, MemorySink::new(), committer, options);
        assert!(matches!(report.outcome, Outcome::Completed));
        let saved = store.saved.lock().unwrap().clone();
        let cp = saved.last().expect("a checkpoint");
        assert_eq!(cp.groups.keys().collect::<Vec<_>>(), [KEY], "{cp:?}");
        let g = &cp.groups[KEY];
        assert!(
            g.cursor_ms <= start,
            "the cursor passed the unfinished invocation: {} > {start}",
            g.cursor_ms
        );
        // The first invocation's spans are filed under the key too.
        assert!(!g.accepted().is_empty());
    }

    /// A span line of no invocation at event time `t_s` (seconds past a base), ending then.
    fn loose(trace: u8, span: u8, parent: Option<u8>, t_s: i64, error: bool) -> (i64, String) {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = 1_700_000_000_000i64 + t_s * 1000;
        let ids = format!(
            "{}{}{}",
            b.encode([trace; 16]),
            b.encode([trace, span, 0, 0, 0, 0, 0, 1]),
            parent.map_or(String::new(), |p| b.encode([trace, p, 0, 0, 0, 0, 0, 1]))
        );
        let flags = if error { "e" } else { "" };
        (
            t,
            format!("SPLN1 {ids} {} 1000{flags} s{span};", t * 1000 - 1000),
        )
    }

    /// A sampled run from `cp` over the log up to `to`: what the sink accepted (trace byte,
    /// span byte), and the checkpoint.
    fn run_sampled(log: &[(i64, String)], cp: Checkpoint, to: i64) -> (Vec<(u8, u8)>, Checkpoint) {
        let from = cp
            .groups
            .get(GROUP)
            .map_or(i64::MIN, |g| g.cursor_ms.saturating_sub(LATENESS));
        let sink = MemorySink::new();
        let store = MemoryStore::default();
        let committer = Forwarding::new(store.clone(), cp.clone(), to, LATENESS).sampling(true);
        let options = Options {
            mode: Mode::Resumable,
            batch_spans: BATCH,
            sampling: Some(crate::convert::sample::Policy {
                rate: 0.001,
                wait_ms: 30_000,
                max_wait_ms: 30_000,
                ..Default::default()
            }),
            kept_traces: cp.kept_trace_ids(),
            ..Options::default()
        };
        let report = run_pipeline(events(log, from, to), sink.clone(), committer, options);
        assert!(matches!(report.outcome, Outcome::Completed));
        let last = store.saved.lock().unwrap().last().cloned().unwrap_or(cp);
        let ids = sink
            .spans()
            .iter()
            .map(|s| (s.trace_id.0[0], s.span_id.0[1]))
            .collect();
        (ids, last)
    }

    /// Issue "Traces worth keeping": a trace kept in one `forward` run has its later spans kept
    /// in the next (the checkpoint remembers it); a trace still undecided at the end of a run
    /// is read again by the next, which keeps it whole when its error comes then; a trace
    /// without an error or a slow root, which the ratio drops, is never sent.
    #[test]
    fn sampled_forward_runs_send_every_span_of_a_kept_trace_across_runs() {
        let (a, b, c) = (0xa0, 0xb0, 0xc0);
        let log = vec![
            loose(b, 1, None, 1_000, true), // B's root is an error: kept in run 1
            loose(c, 2, Some(1), 1_001, false), // C: never an error, dropped
            loose(c, 1, None, 1_002, false),
            loose(a, 2, Some(1), 1_030, false), // A: undecided at the end of run 1
            loose(a, 1, None, 1_040, false),
            loose(c, 9, None, 1_050, false), // (advances the clock in run 1)
            loose(a, 3, Some(1), 1_060, true), // A's error, in run 2
            loose(b, 2, Some(1), 1_200, false), // B's later span, in run 2
            loose(c, 8, None, 1_300, false),
        ];
        let cut = log[5].0;
        let end = log[8].0;
        let (first, cp) = run_sampled(&log, Checkpoint::default(), cut);
        assert_eq!(first, [(b, 1)]);
        assert!(cp
            .kept_traces
            .contains_key(&crate::span_line::TraceId([b; 16]).to_string()));
        // A's spans are before the cursor of the next read.
        assert!(cp.groups[GROUP].cursor_ms <= log[3].0, "{cp:?}");
        let (second, cp) = run_sampled(&log, cp, end);
        let mut second = second;
        second.sort_unstable();
        assert_eq!(second, [(a, 1), (a, 2), (a, 3), (b, 2)]);
        // Nothing left for a third run.
        let (third, _) = run_sampled(&log, cp.clone(), end + 1);
        assert!(third.is_empty(), "{third:?}");
        // Without the memory of kept traces, B's later span would have been dropped.
        let mut forgetful = cp;
        forgetful.kept_traces.clear();
        forgetful.groups.clear();
        let (alone, _) = run_sampled(&log[7..], forgetful, end);
        assert!(!alone.contains(&(b, 2)), "{alone:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn a_run_stopped_at_any_step_and_the_next_lose_nothing_and_repeat_at_most_one_batch(
            n in 1usize..5,
            loose in 0usize..3,
            cut in 0usize..24,
        ) {
            let log = log(n, loose);
            let to = log.last().map_or(0, |(t, _)| *t);
            // The first run reads up to here (an invocation may be open then), the next to the end.
            let cut_to = log.get(cut).map_or(to, |(t, _)| *t);
            let want = all_spans(&log, to);
            // Each invocation: its two spans and the invocation span; loose spans.
            proptest::prop_assert_eq!(want.len(), 3 * n + loose.min(n));
            let steps = want.len() / BATCH + 3;
            for (sends, saves) in (0..=steps)
                .map(|k| (Some(k), None))
                .chain((0..=2 * steps).map(|k| (None, Some(k))))
            {
                let (first, cp, _) = run_once(&log, Checkpoint::default(), cut_to, sends, saves);
                let (second, cp2, ok) = run_once(&log, cp, to, None, None);
                proptest::prop_assert!(ok, "the replay completes");
                let mut count: HashMap<&str, usize> = HashMap::new();
                for id in first.iter().chain(&second) {
                    *count.entry(id).or_default() += 1;
                }
                for id in &want {
                    proptest::prop_assert!(
                        count.contains_key(id.as_str()),
                        "span {} lost (sink fails after {:?}, store after {:?})", id, sends, saves
                    );
                }
                let twice: usize = count.values().map(|c| c - 1).sum();
                proptest::prop_assert!(
                    twice <= BATCH,
                    "{} spans sent twice (sink fails after {:?}, store after {:?})", twice, sends, saves
                );
                // And a third run has nothing left to send.
                let (third, _, ok) = run_once(&log, cp2, to, None, None);
                proptest::prop_assert!(ok);
                proptest::prop_assert!(third.is_empty(), "a third run sent {:?}", third);
            }
        }
    }
}
