//! The zero-loss local file store (layout in `tapio_common::store`).
//!
//! - Each event goes to the bucket of its own timestamp's UTC hour.
//! - An hour is sealed once the wall clock is past its end by the seal
//!   grace; later events for it go to its `.late.jsonl` sidecar.
//! - A failed write is rolled back (the file is truncated to its length
//!   before the write, so no torn line remains), counted, and retried on
//!   the fallback directory if one is configured; what neither path takes
//!   is counted as dropped. The next batch tries the primary path again,
//!   so writing resumes by itself once space is freed.
//! - Retention removes whole hour files by age, then oldest first by total
//!   bytes; each removal is counted.
//! - Written files are fsynced by the store's own thread ([`Syncer`]), at
//!   the sender's flush (every `batching.flush_interval_ms`) and at least
//!   every `fsync_every`, never on the sender's thread: an fsync of a
//!   second of a connect storm took long enough to overflow the event
//!   queue. A round still running when the next is due makes the next
//!   wait (the files stay marked dirty); at the end the sink waits for
//!   every file to be synced. The same thread starts the write-out of
//!   every `STORE_WRITEBACK_BYTES` written (`sync_file_range`): a second
//!   of a storm's evidence written back at once held the file's block
//!   allocation lock for up to 32 ms, and the sender's next write waited
//!   for it.
//! - Once written back, the store's pages leave the page cache
//!   (`POSIX_FADV_DONTNEED`): the node's cache does not grow by the
//!   evidence, and new writes reuse warm pages.
//! - Nothing here panics on an I/O error.

use crate::sink::{Line, Sink, SinkResult};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tapio_common::store::{self, Part};
use tapio_common::time::{hour_of, now_unix_ns};

const MAX_OPEN: usize = 4;
/// Closed files that wait for the next sync round, at most; past it the
/// oldest is synced on the spot (never seen: files close once an hour).
const MAX_CLOSING: usize = 2 * MAX_OPEN;

/// One sync round: files to sync (None), or whose range (from, bytes) is
/// only to be written out. It holds a handle of each: the last one of a
/// file the sink has closed.
struct Round(Vec<(Arc<File>, Option<Span>)>);

/// Bytes of a file: (from, how many).
type Span = (u64, u64);

impl Round {
    /// Syncs or writes out every file of the round; how many of those
    /// failed (the kernel reports a write-back error once, to the first
    /// sync that waits for it: a failure is counted, never retried).
    fn sync(&self) -> u64 {
        use std::os::fd::AsRawFd;
        let mut failed = 0;
        for (f, range) in &self.0 {
            let fd = f.as_raw_fd();
            // The bytes now on disk, from the start, that the page cache
            // may let go (0: the whole file); None: none yet.
            let on_disk = match *range {
                None => {
                    failed += u64::from(f.sync_data().is_err());
                    Some(0)
                }
                Some((from, len)) => {
                    // SAFETY (both calls): plain syscalls on a descriptor
                    // the round keeps open. The first one starts the
                    // write-out of the span; the second waits for the
                    // write-out of everything before it, which an earlier
                    // round started.
                    unsafe {
                        let start = libc::sync_file_range(
                            fd,
                            from as i64,
                            len as i64,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                        let wait = if from > 0 {
                            libc::sync_file_range(
                                fd,
                                0,
                                from as i64,
                                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                                    | libc::SYNC_FILE_RANGE_WRITE
                                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                            )
                        } else {
                            0
                        };
                        failed += u64::from(start != 0) + u64::from(wait != 0);
                    };
                    (from > 0).then_some(from)
                }
            };
            // The written-back pages leave the page cache, which only
            // ever drops clean ones: the store does not grow the node's
            // cache by what it writes, and its next writes reuse pages
            // that are still warm. Fresh pages for every write cost the
            // sender 3 times as much at storm rate (docs/budgets.md).
            if let Some(len) = on_disk {
                // SAFETY: as above; 0 bytes is "to the end of the file".
                unsafe { libc::posix_fadvise(fd, 0, len as i64, libc::POSIX_FADV_DONTNEED) };
            }
        }
        failed
    }
}

/// The store's fsync thread. It holds one round at a time: a round is
/// handed over only while it is idle, so a due round waits while one runs.
/// (A mutex and a condition variable: a channel cost the agent 12 KB.)
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    changed: Condvar,
    /// Failed syncs not yet counted in the metrics (`Round::sync`).
    failed: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// Handed over, not yet taken by the thread.
    round: Option<Round>,
    /// The thread is syncing a round.
    busy: bool,
    /// The sink is gone: the thread ends once it has nothing left.
    done: bool,
}

impl SyncShared {
    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut st = self.state();
        loop {
            if let Some(round) = st.round.take() {
                st.busy = true;
                drop(st);
                self.failed.fetch_add(round.sync(), Relaxed);
                drop(round);
                st = self.state();
                st.busy = false;
                self.changed.notify_all();
            } else if st.done {
                return;
            } else {
                st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl Syncer {
    fn start() -> Syncer {
        let shared = Arc::new(SyncShared::default());
        let worker = Arc::clone(&shared);
        let thread =
            crate::lifecycle::thread("tapio-store-sync", Box::new(move || worker.run())).ok();
        Syncer { shared, thread }
    }

    /// Hands `round` to the thread: when it is idle, or, with `wait`,
    /// once it is; whether it did (else the round is dropped). Without a
    /// thread, which could not be started, it syncs in place.
    fn hand(&self, round: Round, wait: bool) -> bool {
        if self.thread.is_none() {
            self.shared.failed.fetch_add(round.sync(), Relaxed);
            return true;
        }
        let mut st = self.shared.state();
        while st.busy || st.round.is_some() {
            if !wait {
                return false;
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.round = Some(round);
        self.shared.changed.notify_all();
        true
    }
}

impl Syncer {
    /// Waits until every round handed over is synced, and ends the thread.
    fn finish(&mut self) {
        self.shared.state().done = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub fallback: Option<PathBuf>,
    /// How long after an hour ends it still takes events as primary.
    pub seal_grace: Duration,
    pub max_age_hours: u64,
    pub max_bytes: u64,
    pub fsync_every: Duration,
}

impl StoreConfig {
    pub fn new(dir: PathBuf) -> Self {
        StoreConfig {
            dir,
            fallback: None,
            seal_grace: Duration::from_secs(120),
            max_age_hours: 72,
            max_bytes: 256 * 1024 * 1024,
            fsync_every: Duration::from_secs(5),
        }
    }
}

struct OpenFile {
    hour: u64,
    part: Part,
    fallback: bool,
    /// Shared with the sync round that syncs it.
    file: Arc<File>,
    len: u64,
    /// Write-out started up to here.
    started: u64,
    dirty: bool,
}

impl OpenFile {
    /// `STORE_WRITEBACK_BYTES` or more written since the write-out last
    /// started: the next round starts it.
    fn write_out_due(&self) -> bool {
        self.len - self.started >= tapio_wire::limits::STORE_WRITEBACK_BYTES
    }
}

pub struct FileSink {
    cfg: StoreConfig,
    open: Vec<OpenFile>,
    last_retention_hour: u64,
    last_sync: Instant,
    /// Written files closed since the last sync round: synced in the next.
    closing: Vec<Arc<File>>,
    syncer: Syncer,
    /// Files removed by retention since the last call of `take_removed`.
    removed: u64,
    /// Wall clock source (tests replace it).
    now: fn() -> u64,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl FileSink {
    pub fn new(cfg: StoreConfig) -> Self {
        FileSink {
            cfg,
            open: Vec::new(),
            last_retention_hour: 0,
            last_sync: Instant::now(),
            closing: Vec::new(),
            syncer: Syncer::start(),
            removed: 0,
            now: now_unix_ns,
            metrics: None,
        }
    }

    /// Counts retention removals in `tapio_store_files_removed_total`.
    pub fn with_metrics(mut self, m: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }

    #[cfg(test)]
    pub fn take_removed(&mut self) -> u64 {
        std::mem::take(&mut self.removed)
    }

    fn dir(&self, fallback: bool) -> Option<&Path> {
        if fallback {
            self.cfg.fallback.as_deref()
        } else {
            Some(&self.cfg.dir)
        }
    }

    fn handle(&mut self, hour: u64, part: Part, fallback: bool) -> std::io::Result<&mut OpenFile> {
        if let Some(i) = self
            .open
            .iter()
            .position(|f| f.hour == hour && f.part == part && f.fallback == fallback)
        {
            return Ok(&mut self.open[i]);
        }
        let dir = self
            .dir(fallback)
            .ok_or_else(|| std::io::Error::other("no fallback directory"))?
            .to_path_buf();
        {
            use std::os::unix::fs::DirBuilderExt;
            // 0750: the store is evidence about every process on the host.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)?;
        }
        let path = store::path(&dir, hour, part);
        // 0640, and never through a symlink someone planted in the store.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?
        };
        let len = file.metadata()?.len();
        if self.open.len() >= MAX_OPEN {
            // Close the oldest hour first.
            if let Some((i, _)) = self.open.iter().enumerate().min_by_key(|(_, f)| f.hour) {
                let f = self.open.swap_remove(i);
                self.close(f);
            }
        }
        self.open.push(OpenFile {
            hour,
            part,
            fallback,
            file: Arc::new(file),
            len,
            started: len,
            dirty: false,
        });
        let last = self.open.len() - 1;
        Ok(&mut self.open[last])
    }

    /// Appends `bytes` (whole lines) to one file; on failure restores the
    /// file's previous length and forgets the handle.
    fn append(
        &mut self,
        hour: u64,
        part: Part,
        fallback: bool,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let res = match self.handle(hour, part, fallback) {
            Ok(f) => match (&*f.file).write_all(bytes) {
                Ok(()) => {
                    f.len += bytes.len() as u64;
                    f.dirty = true;
                    Ok(())
                }
                Err(e) => {
                    let _ = f.file.set_len(f.len);
                    Err(e)
                }
            },
            Err(e) => return Err(e),
        };
        if res.is_err() {
            self.open
                .retain(|f| !(f.hour == hour && f.part == part && f.fallback == fallback));
        }
        res
    }

    fn write_group(
        &mut self,
        hour: u64,
        part: Part,
        bytes: &[u8],
        count: u64,
        result: &mut SinkResult,
    ) {
        if bytes.is_empty() {
            return;
        }
        if self.append(hour, part, false, bytes).is_ok() {
            return;
        }
        result.failures += 1;
        if self.cfg.fallback.is_some() {
            if self.append(hour, part, true, bytes).is_ok() {
                result.fallback += count;
                return;
            }
            result.failures += 1;
        }
        result.dropped += count;
    }

    fn retention(&mut self, now_hour: u64) {
        if now_hour == self.last_retention_hour {
            return;
        }
        self.last_retention_hour = now_hour;
        let dirs: Vec<PathBuf> = std::iter::once(self.cfg.dir.clone())
            .chain(self.cfg.fallback.clone())
            .collect();
        let mut files = Vec::new();
        for d in &dirs {
            if let Ok(list) = store::list(d) {
                files.extend(list);
            }
        }
        store::sort_files(&mut files);
        let oldest_kept = now_hour.saturating_sub(self.cfg.max_age_hours);
        let mut total: u64 = files.iter().map(|f| f.bytes).sum();
        for f in &files {
            let too_old = f.hour < oldest_kept;
            let too_big = total > self.cfg.max_bytes && f.hour < now_hour;
            if (too_old || too_big) && std::fs::remove_file(&f.path).is_ok() {
                total = total.saturating_sub(f.bytes);
                self.removed += 1;
                if let Some(m) = &self.metrics {
                    m.store_files_removed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.open.retain(|o| o.hour != f.hour);
            }
        }
    }

    /// Closes `f`; written since its last sync, it is synced in the next
    /// round first.
    fn close(&mut self, f: OpenFile) {
        if !f.dirty {
            return;
        }
        if self.closing.len() >= MAX_CLOSING {
            let _ = self.closing.remove(0).sync_data();
        }
        self.closing.push(f.file);
    }

    /// The files written since the last round, or None.
    /// The files a round takes now: every written one to sync when `sync`,
    /// else the open ones with `STORE_WRITEBACK_BYTES` not yet written out,
    /// to start that.
    fn round(&self, sync: bool) -> Round {
        let mut files: Vec<_> = if sync {
            self.closing.iter().map(|f| (Arc::clone(f), None)).collect()
        } else {
            Vec::new()
        };
        for f in &self.open {
            if sync && f.dirty {
                files.push((Arc::clone(&f.file), None));
            } else if f.write_out_due() {
                files.push((Arc::clone(&f.file), Some((f.started, f.len - f.started))));
            }
        }
        Round(files)
    }

    /// Moves the sync thread's failures into
    /// `tapio_store_sync_failures_total`.
    fn count_sync_failures(&self) {
        let n = self.syncer.shared.failed.swap(0, Relaxed);
        if let Some(m) = self.metrics.as_ref().filter(|_| n > 0) {
            m.store_sync_failures.fetch_add(n, Relaxed);
        }
    }

    /// Starts a sync round when one is due (`force`: the sender's flush),
    /// else the write-out of what is due; only while the sync thread is
    /// idle, else the files stay dirty for later.
    fn maybe_sync(&mut self, force: bool) {
        self.count_sync_failures();
        let sync = force || self.last_sync.elapsed() >= self.cfg.fsync_every;
        let round = self.round(sync);
        if round.0.is_empty() || !self.syncer.hand(round, false) {
            return;
        }
        if sync {
            self.closing.clear();
            self.last_sync = Instant::now();
        }
        for f in &mut self.open {
            if sync || f.write_out_due() {
                f.started = f.len;
            }
            if sync {
                f.dirty = false;
            }
        }
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, lines: &[Line], buf: &str) -> SinkResult {
        let now = (self.now)();
        let now_hour = hour_of(now);
        self.retention(now_hour);
        let sealed_below = hour_of(now.saturating_sub(self.cfg.seal_grace.as_nanos() as u64));
        let mut result = SinkResult::default();
        // Group consecutive events of the same file: batches are almost
        // always a single hour. The sender writes the lines one after
        // another into `buf`, so a group is one slice of it, written as is.
        let bytes = buf.as_bytes();
        let mut current: Option<(u64, Part)> = None;
        let mut group = 0..0;
        let mut count = 0u64;
        for Line {
            range,
            timestamp_ns,
        } in lines
        {
            let hour = hour_of(*timestamp_ns);
            let part = if hour < sealed_below {
                Part::Late
            } else {
                Part::Primary
            };
            if current != Some((hour, part)) || range.start != group.end {
                if let Some((h, p)) = current {
                    self.write_group(h, p, &bytes[group.clone()], count, &mut result);
                }
                group = range.start..range.start;
                count = 0;
                current = Some((hour, part));
            }
            group.end = range.end;
            count += 1;
        }
        if let Some((h, p)) = current {
            self.write_group(h, p, &bytes[group], count, &mut result);
        }
        // Close files of sealed hours.
        let mut sealed = false;
        let mut i = 0;
        while i < self.open.len() {
            let f = &self.open[i];
            if f.part == Part::Late || f.hour >= sealed_below {
                i += 1;
            } else {
                let f = self.open.swap_remove(i);
                self.close(f);
                sealed = true;
            }
        }
        self.maybe_sync(sealed);
        result
    }

    fn flush(&mut self) -> SinkResult {
        self.maybe_sync(true);
        SinkResult::default()
    }
}

impl Drop for FileSink {
    /// The end of the sink: every written file is synced before it returns.
    fn drop(&mut self) {
        let round = self.round(true);
        if !round.0.is_empty() {
            self.syncer.hand(round, true);
        }
        self.syncer.finish();
        self.count_sync_failures();
    }
}

/// For tests: a sink whose clock is fixed.
#[cfg(test)]
impl FileSink {
    fn with_clock(cfg: StoreConfig, now: fn() -> u64) -> Self {
        let mut sink = FileSink::new(cfg);
        sink.now = now;
        sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::event::EventKind;
    use crate::observer::storage::StorageFacts;
    use crate::observers::Facts;
    use tapio_wire::Severity;

    const T0: u64 = 1_795_328_784_500_000_000; // 2026-11-22T06:26:24.5Z
    const HOUR_NS: u64 = 3_600_000_000_000;

    fn ev(seq: u64, ts: u64) -> Event {
        Event {
            seq,
            kind: EventKind::SlowIo,
            severity: Severity::Info,
            timestamp_ns: ts,
            config_generation: 1,
            workload: None,
            memcg: None,
            facts: Facts::Storage(StorageFacts {
                sector: seq,
                ..StorageFacts::sample()
            }),
        }
    }

    fn batch(events: &[Event]) -> (String, Vec<Line>) {
        let mut buf = String::new();
        let mut lines = Vec::new();
        for e in events {
            let start = buf.len();
            e.write_json("t", &mut buf);
            buf.push('\n');
            lines.push(Line {
                range: start..buf.len(),
                timestamp_ns: e.timestamp_ns,
            });
        }
        (buf, lines)
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapio-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn now_t0() -> u64 {
        T0
    }

    fn lines_in(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .map(|s| s.lines().map(String::from).collect())
            .unwrap_or_default()
    }

    #[test]
    fn store_files_are_0640_in_0750_directories_and_symlinks_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tapio-store-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = FileSink::new(StoreConfig::new(dir.join("store")));
        let hour = 2;
        st.handle(hour, Part::Primary, false).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("store")), 0o750);
        let path = store::path(&dir.join("store"), hour, Part::Primary);
        assert_eq!(mode(&path), 0o640);
        // A symlink planted where the next hour's file goes is not followed.
        let target = dir.join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(
            &target,
            store::path(&dir.join("store"), hour + 1, Part::Primary),
        )
        .unwrap();
        assert!(st.handle(hour + 1, Part::Primary, false).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Waits until the sink's sync thread has nothing handed over.
    fn sync_idle(s: &FileSink) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut st = s.syncer.shared.state();
        while st.busy || st.round.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the sync thread never went idle");
            st = s.syncer.shared.changed.wait_timeout(st, left).unwrap().0;
        }
    }

    /// A sync or write-out the kernel refuses is counted, once per call,
    /// in `tapio_store_sync_failures_total` (a pipe: fsync and
    /// sync_file_range both fail on it).
    #[test]
    fn a_failed_sync_is_counted() {
        use std::os::fd::FromRawFd;
        // The read end of a new pipe (its write end closed).
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe() fills two descriptors; each is owned once,
            // by one File.
            unsafe {
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                drop(File::from_raw_fd(fds[1]));
                Arc::new(File::from_raw_fd(fds[0]))
            }
        };
        assert_eq!(Round(vec![(pipe(), None)]).sync(), 1);
        assert_eq!(Round(vec![(pipe(), Some((0, 10)))]).sync(), 1);
        assert_eq!(Round(vec![(pipe(), Some((4096, 10)))]).sync(), 2);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let dir = tmp("syncfail");
        let mut s = FileSink::with_clock(StoreConfig::new(dir.clone()), now_t0)
            .with_metrics(Arc::clone(&metrics));
        assert!(
            s.syncer
                .hand(Round(vec![(pipe(), None), (pipe(), None)]), true)
        );
        sync_idle(&s);
        s.flush();
        assert_eq!(metrics.store_sync_failures.load(Relaxed), 2);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bytes of `path` in the page cache, as the kernel's mincore() says.
    fn cached_bytes(path: &Path) -> u64 {
        use std::os::fd::AsRawFd;
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file of `len`
        // bytes, unmapped below; mincore writes one byte per page of it
        // into `vec`, which holds exactly that many.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count() as u64 * page as u64
    }

    /// Written-back pages leave the page cache: while the store is written
    /// it keeps at most about two write-outs of it cached, and once synced
    /// nothing. Needs a disk-backed directory (tmpfs keeps its pages).
    #[test]
    fn written_back_pages_leave_the_page_cache() {
        use tapio_wire::limits::STORE_WRITEBACK_BYTES as WB;
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target"))
            .join(format!("tapio-file-pagecache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
        let tmpfs = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
        };
        if tmpfs {
            std::fs::remove_dir_all(&dir).unwrap();
            crate::test_skip::record(
                "written_back_pages_leave_the_page_cache (target/ is on tmpfs)",
            );
            return;
        }
        let mut cfg = StoreConfig::new(dir.clone());
        cfg.fsync_every = Duration::from_secs(3600); // only the flush syncs
        let mut s = FileSink::with_clock(cfg, now_t0);
        let events: Vec<Event> = (0..1000).map(|i| ev(i, T0)).collect();
        let (buf, lines) = batch(&events);
        let path = store::path(&dir, hour_of(T0), Part::Primary);
        let mut most = 0;
        while s.open.first().map_or(0, |f| f.len) < 8 * WB {
            s.write_batch(&lines, &buf);
            sync_idle(&s);
            most = most.max(cached_bytes(&path));
        }
        let len = s.open[0].len;
        assert!(
            most <= 2 * WB + 2 * buf.len() as u64,
            "{most} of {len} bytes were cached at once"
        );
        s.flush();
        sync_idle(&s);
        assert_eq!(cached_bytes(&path), 0, "synced, nothing stays cached");
        drop(s);
        assert_eq!(
            lines_in(&path).len() as u64,
            len / (buf.len() as u64) * 1000
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_out_starts_every_writeback_bytes_and_a_flush_syncs_the_rest() {
        use tapio_wire::limits::STORE_WRITEBACK_BYTES as WB;
        let dir = tmp("writeout");
        let mut cfg = StoreConfig::new(dir.clone());
        cfg.fsync_every = Duration::from_secs(3600); // only the flush syncs
        let mut s = FileSink::with_clock(cfg, now_t0);
        let events: Vec<Event> = (0..1000).map(|i| ev(i, T0)).collect();
        let (buf, lines) = batch(&events);
        let mut batches = 0;
        // Below the write-out size nothing is handed over.
        while s.open.first().map_or(0, |f| f.len) + buf.len() as u64 <= WB {
            assert_eq!(s.write_batch(&lines, &buf), SinkResult::default());
            sync_idle(&s);
            batches += 1;
            assert_eq!((s.open[0].started, s.open[0].dirty), (0, true));
        }
        // The batch that passes it starts the write-out of all of it, and
        // the next starts none: the rest is below the size again.
        assert_eq!(s.round(false).0.len(), 0);
        s.write_batch(&lines, &buf);
        let f = &s.open[0];
        assert_eq!(f.len, (batches + 1) * buf.len() as u64);
        assert_eq!((f.started, f.dirty), (f.len, true), "write-out started");
        sync_idle(&s);
        s.write_batch(&lines, &buf);
        sync_idle(&s);
        let f = &s.open[0];
        assert_eq!(f.len - f.started, buf.len() as u64);
        // A flush syncs the file whole: nothing dirty, nothing unstarted.
        s.flush();
        let f = &s.open[0];
        assert_eq!((f.started, f.dirty), (f.len, false));
        assert_eq!(s.round(true).0.len(), 0, "nothing left to sync");
        assert_eq!(
            lines_in(&store::path(&dir, hour_of(T0), Part::Primary)).len() as u64,
            (batches + 2) * 1000
        );
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn buckets_by_event_time_and_late_sidecar() {
        let dir = tmp("buckets");
        let mut s = FileSink::with_clock(StoreConfig::new(dir.clone()), now_t0);
        let events = [
            ev(1, T0),
            ev(2, T0 - HOUR_NS), // previous hour, sealed (26 min > 2 min grace)
            ev(3, T0 + HOUR_NS), // a future hour (clock skew) goes to its own bucket
            ev(4, hour_of(T0) * HOUR_NS - 1), // 05:59:59.999999999: late
        ];
        let (buf, lines) = batch(&events);
        let r = s.write_batch(&lines, &buf);
        assert_eq!(r, SinkResult::default());
        let h = hour_of(T0);
        assert_eq!(lines_in(&store::path(&dir, h, Part::Primary)).len(), 1);
        assert_eq!(lines_in(&store::path(&dir, h - 1, Part::Late)).len(), 2);
        assert_eq!(lines_in(&store::path(&dir, h + 1, Part::Primary)).len(), 1);
        assert!(!store::path(&dir, h - 1, Part::Primary).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_falls_back_and_is_counted_then_resumes() {
        let dir = tmp("fail");
        let fb = tmp("fallback");
        // Make the primary path unusable: a regular file where the
        // directory should be.
        std::fs::write(&dir, b"not a dir").unwrap();
        let mut cfg = StoreConfig::new(dir.clone());
        cfg.fallback = Some(fb.clone());
        let mut s = FileSink::with_clock(cfg, now_t0);
        let events = [ev(1, T0), ev(2, T0)];
        let (buf, lines) = batch(&events);
        let r = s.write_batch(&lines, &buf);
        assert_eq!(
            r,
            SinkResult {
                failures: 1,
                dropped: 0,
                fallback: 2
            }
        );
        assert_eq!(
            lines_in(&store::path(&fb, hour_of(T0), Part::Primary)).len(),
            2
        );
        // primary comes back
        std::fs::remove_file(&dir).unwrap();
        let r = s.write_batch(&lines[..1], &buf[lines[0].range.clone()]);
        assert_eq!(r, SinkResult::default());
        assert_eq!(
            lines_in(&store::path(&dir, hour_of(T0), Part::Primary)).len(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&fb).unwrap();
    }

    #[test]
    fn without_fallback_losses_are_dropped_and_counted() {
        let dir = tmp("nofb");
        std::fs::write(&dir, b"x").unwrap();
        let mut s = FileSink::with_clock(StoreConfig::new(dir.clone()), now_t0);
        let events = [ev(1, T0), ev(2, T0), ev(3, T0)];
        let (buf, lines) = batch(&events);
        assert_eq!(
            s.write_batch(&lines, &buf),
            SinkResult {
                failures: 1,
                dropped: 3,
                fallback: 0
            }
        );
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn retention_by_age_and_bytes() {
        let dir = tmp("retention");
        std::fs::create_dir_all(&dir).unwrap();
        let h = hour_of(T0);
        for back in [100u64, 50, 3, 2, 1] {
            std::fs::write(store::path(&dir, h - back, Part::Primary), vec![b'x'; 1000]).unwrap();
        }
        let mut cfg = StoreConfig::new(dir.clone());
        cfg.max_age_hours = 72;
        cfg.max_bytes = 2500;
        let mut s = FileSink::with_clock(cfg, now_t0);
        let events = [ev(1, T0)];
        let (buf, lines) = batch(&events);
        s.write_batch(&lines, &buf);
        // 100h old: age. Then 50h, 3h: over 2500 bytes.
        let left: Vec<u64> = store::list(&dir)
            .unwrap()
            .iter()
            .map(|f| h - f.hour)
            .collect();
        assert_eq!(left, vec![2, 1, 0]);
        assert_eq!(s.take_removed(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
