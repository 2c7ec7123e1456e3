//! The WAL's writer thread, native: it never takes the interpreter lock.
//!
//! Same operations, same bytes and same counters as `alphapanda.wal.writer.
//! WalWriterThread` (the Python reference and fallback; the differential tests in
//! `tests/unit/test_wal_native.py` hold the two together). The event loop hands over
//! a frame (a reference, no copy) through a channel; the thread frames it as a framed-log record
//! (magic, length, CRC-32 over both and the payload; payload = receive time, shard,
//! frame), writes with `writev`, and commits with group commit: one `fsync` at most
//! every `fsync_ms` (0: after every write).
//!
//! Why native: a Python thread needs the interpreter lock after every system call it
//! makes (CRC, write, fsync, waking up), and each time it takes it the event loop has
//! to hand it over and wait for the thread to be scheduled. On a loaded machine those
//! hand-overs delayed the loop's delivery reports by a millisecond or more per frame.
//!
//! Errors never reach the caller: the first one is kept in `error` and appends are
//! discarded until a `rotate` opens a fresh segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

const MAGIC: &[u8; 4] = b"\xa7APL";
/// Framed-log header (magic, length, CRC) plus the frame head (receive time u64, shard u8).
const RECORD_OVERHEAD: u64 = 12 + 9;
/// Linux's IOV_MAX: buffers per writev.
const WRITEV_MAX: usize = 1024;
/// How long the idle thread sleeps when nothing needs an fsync (it wakes on any op).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// A frame handed over without a copy: the Python `bytes` object, kept alive by the
/// reference held here, and its buffer (immutable for the object's lifetime). Dropped on
/// the writer thread without the interpreter lock, the reference is released by the
/// next call into the extension (pyo3's deferred reference pool).
struct Frame {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer belongs to an immutable `bytes` object that `_owner` keeps alive;
// it is only read.
unsafe impl Send for Frame {}

impl Frame {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see `unsafe impl Send`: valid and unchanging while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

enum Op {
    Append { received_at_ns: u64, shard: u8, frame: Frame },
    Rotate { path: PathBuf },
    Delete { paths: Vec<PathBuf>, watermark: PathBuf, watermark_ns: u64 },
    Close,
}

#[derive(Default)]
struct Shared {
    error: Mutex<Option<String>>,
    written_frames: AtomicU64,
    written_bytes: AtomicU64,
    discarded_frames: AtomicU64,
    fsyncs: AtomicU64,
    durable_ns: AtomicU64,
    deleted_segments: AtomicU64,
    delete_failures: AtomicU64,
    taken_bytes: AtomicU64,
}

impl Shared {
    fn failed(&self) -> bool {
        self.error.lock().unwrap().is_some()
    }

    fn fail(&self, what: &str, err: &io::Error) {
        let mut error = self.error.lock().unwrap();
        if error.is_none() {
            *error = Some(format!("{what} failed: {}", strerror(err)));
        }
    }
}

/// The OS's text for an error, without Rust's " (os error N)" suffix: the same words
/// Python's `OSError.strerror` gives.
fn strerror(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Executes WAL operations in order on one native thread.
#[pyclass(frozen, module = "alphapanda._native", name = "WalWriter")]
pub struct WalWriter {
    fsync_ms: u64,
    tx: Mutex<Option<Sender<Op>>>,
    rx: Mutex<Option<Receiver<Op>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

#[pymethods]
impl WalWriter {
    #[new]
    fn new(fsync_ms: u64) -> Self {
        let (tx, rx) = mpsc::channel();
        WalWriter {
            fsync_ms,
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
            handle: Mutex::new(None),
            shared: Arc::new(Shared::default()),
        }
    }

    fn start(&self) -> PyResult<()> {
        let rx = self
            .rx
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("WalWriter: already started"))?;
        let shared = Arc::clone(&self.shared);
        let fsync = Duration::from_millis(self.fsync_ms);
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || Thread::new(shared, fsync).run(rx))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the WAL writer: {e}")))?;
        *self.handle.lock().unwrap() = Some(handle);
        Ok(())
    }

    /// Queue one frame (not copied: the writer thread holds a reference until written).
    fn append(&self, received_at_ns: u64, shard: u8, frame: Bound<'_, PyBytes>) {
        let data = frame.as_bytes();
        let (ptr, len) = (data.as_ptr(), data.len());
        let frame = Frame { _owner: frame.unbind(), ptr, len };
        self.send(Op::Append { received_at_ns, shard, frame });
    }

    /// Commit and close the current segment; open `path` (created if missing).
    fn rotate(&self, path: PathBuf) {
        self.send(Op::Rotate { path });
    }

    /// Persist `watermark_ns` in the file `watermark` first, then delete `paths`.
    fn delete(&self, paths: Vec<PathBuf>, watermark: PathBuf, watermark_ns: u64) {
        self.send(Op::Delete { paths, watermark, watermark_ns });
    }

    /// Write and fsync what is queued, close the segment, end the thread.
    fn close(&self, py: Python<'_>) {
        if let Some(tx) = self.tx.lock().unwrap().take() {
            let _ = tx.send(Op::Close);
        }
        let handle = self.handle.lock().unwrap().take();
        if let Some(handle) = handle {
            py.detach(|| {
                let _ = handle.join();
            });
        }
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.shared.error.lock().unwrap().clone()
    }

    #[getter]
    fn written_frames(&self) -> u64 {
        self.shared.written_frames.load(Ordering::Relaxed)
    }

    #[getter]
    fn written_bytes(&self) -> u64 {
        self.shared.written_bytes.load(Ordering::Relaxed)
    }

    #[getter]
    fn discarded_frames(&self) -> u64 {
        self.shared.discarded_frames.load(Ordering::Relaxed)
    }

    #[getter]
    fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    #[getter]
    fn durable_ns(&self) -> u64 {
        self.shared.durable_ns.load(Ordering::Acquire)
    }

    #[getter]
    fn deleted_segments(&self) -> u64 {
        self.shared.deleted_segments.load(Ordering::Relaxed)
    }

    /// Deletions that failed (the segments stay; the next one tries again).
    #[getter]
    fn delete_failures(&self) -> u64 {
        self.shared.delete_failures.load(Ordering::Relaxed)
    }

    #[getter]
    fn taken_bytes(&self) -> u64 {
        self.shared.taken_bytes.load(Ordering::Relaxed)
    }
}

impl WalWriter {
    fn send(&self, op: Op) {
        let is_frame = matches!(op, Op::Append { .. });
        let guard = self.tx.lock().unwrap();
        let sent = guard.as_ref().is_some_and(|tx| tx.send(op).is_ok());
        // Closed (or the thread is gone): a frame appended now is not logged.
        if !sent && is_frame {
            self.shared.discarded_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Thread {
    shared: Arc<Shared>,
    fsync: Duration,
    file: Option<File>,
    dirty: bool,
    last_sync: Instant,
    pending_ns: u64,
}

impl Thread {
    fn new(shared: Arc<Shared>, fsync: Duration) -> Self {
        Thread { shared, fsync, file: None, dirty: false, last_sync: Instant::now(), pending_ns: 0 }
    }

    fn run(mut self, rx: Receiver<Op>) {
        let mut closing = false;
        while !closing {
            let first = match self.sync_due_in() {
                Some(wait) if wait.is_zero() => rx.try_recv().ok(),
                wait => match rx.recv_timeout(wait.unwrap_or(IDLE_WAIT)) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Op::Close),
                },
            };
            let mut ops: Vec<Op> = first.into_iter().collect();
            ops.extend(rx.try_iter());
            closing = ops.iter().any(|op| matches!(op, Op::Close));
            let taken: u64 = ops
                .iter()
                .map(|op| match op {
                    Op::Append { frame, .. } => frame.len as u64 + RECORD_OVERHEAD,
                    _ => 0,
                })
                .sum();
            self.shared.taken_bytes.fetch_add(taken, Ordering::Relaxed);
            self.execute(ops);
            if self.dirty && (closing || self.sync_due_in() == Some(Duration::ZERO)) {
                self.sync();
            }
        }
        self.close_segment();
    }

    fn sync_due_in(&self) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        Some((self.last_sync + self.fsync).saturating_duration_since(Instant::now()))
    }

    fn execute(&mut self, ops: Vec<Op>) {
        let mut batch: Vec<(u64, u8, Frame)> = Vec::new();
        for op in ops {
            match op {
                Op::Append { received_at_ns, shard, frame } => {
                    if self.file.is_none() || self.shared.failed() {
                        self.shared.discarded_frames.fetch_add(1, Ordering::Relaxed);
                    } else {
                        batch.push((received_at_ns, shard, frame));
                    }
                }
                Op::Rotate { path } => {
                    self.write(std::mem::take(&mut batch));
                    self.rotate(&path);
                }
                Op::Delete { paths, watermark, watermark_ns } => {
                    self.write(std::mem::take(&mut batch));
                    self.delete(&paths, &watermark, watermark_ns);
                }
                Op::Close => {}
            }
        }
        self.write(batch);
    }

    fn write(&mut self, batch: Vec<(u64, u8, Frame)>) {
        if batch.is_empty() {
            return;
        }
        let Some(file) = self.file.as_mut() else { return };
        if self.shared.failed() {
            return;
        }
        let heads: Vec<[u8; 21]> =
            batch.iter().map(|(ns, shard, frame)| head(*ns, *shard, frame.bytes())).collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
        for (head, (_, _, frame)) in heads.iter().zip(&batch) {
            slices.push(IoSlice::new(head));
            slices.push(IoSlice::new(frame.bytes()));
        }
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let frames = batch.len() as u64;
        if let Err(err) = write_all_vectored(file, &mut slices) {
            self.shared.fail("write", &err);
            self.dirty = false;
            self.shared.discarded_frames.fetch_add(frames, Ordering::Relaxed);
            return;
        }
        self.shared.written_frames.fetch_add(frames, Ordering::Relaxed);
        self.shared.written_bytes.fetch_add(total as u64, Ordering::Relaxed);
        self.dirty = true;
        self.pending_ns = batch.last().map(|(ns, _, _)| *ns).unwrap_or(0);
    }

    fn sync(&mut self) {
        self.last_sync = Instant::now();
        let Some(file) = self.file.as_ref() else {
            self.dirty = false;
            return;
        };
        if self.shared.failed() {
            self.dirty = false;
            return;
        }
        if let Err(err) = file.sync_all() {
            self.shared.fail("fsync", &err);
            self.dirty = false;
            return;
        }
        self.dirty = false;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared.durable_ns.store(self.pending_ns, Ordering::Release);
    }

    fn rotate(&mut self, path: &Path) {
        if self.dirty {
            self.sync();
        }
        self.close_segment();
        let opened = (|| {
            let directory = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(directory)?;
            let file = OpenOptions::new().append(true).create(true).mode(0o644).open(path)?;
            fsync_dir(directory)?;
            Ok::<File, io::Error>(file)
        })();
        match opened {
            Ok(file) => {
                self.file = Some(file);
                *self.shared.error.lock().unwrap() = None;
            }
            Err(err) => {
                self.dirty = false;
                self.shared.fail("open segment", &err);
            }
        }
    }

    fn delete(&mut self, paths: &[PathBuf], watermark: &Path, watermark_ns: u64) {
        let directory = watermark.parent().unwrap_or(Path::new("."));
        let done = (|| {
            write_watermark(watermark, watermark_ns)?;
            for path in paths {
                match fs::remove_file(path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
            fsync_dir(directory)
        })();
        // Not fatal: the segments stay and are deleted with the next batch.
        match done {
            Ok(()) => self.shared.deleted_segments.fetch_add(paths.len() as u64, Ordering::Relaxed),
            Err(_) => self.shared.delete_failures.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn close_segment(&mut self) {
        let Some(file) = self.file.take() else { return };
        if self.dirty && !self.shared.failed() {
            match file.sync_all() {
                Ok(()) => {
                    self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.shared.durable_ns.store(self.pending_ns, Ordering::Release);
                }
                Err(err) => self.shared.fail("fsync", &err),
            }
        }
        self.dirty = false;
    }
}

/// The record's header and frame head: magic, payload length, CRC-32 (over magic,
/// length and the payload), then the payload's first 9 bytes (receive time, shard).
fn head(received_at_ns: u64, shard: u8, frame: &[u8]) -> [u8; 21] {
    let mut out = [0u8; 21];
    let length = (frame.len() + 9) as u32;
    out[..4].copy_from_slice(MAGIC);
    out[4..8].copy_from_slice(&length.to_be_bytes());
    out[12..20].copy_from_slice(&received_at_ns.to_be_bytes());
    out[20] = shard;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..8]);
    crc.update(&out[12..21]);
    crc.update(frame);
    out[8..12].copy_from_slice(&crc.finalize().to_be_bytes());
    out
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        let n = slices.len().min(WRITEV_MAX);
        match file.write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn fsync_dir(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

/// Replace the watermark atomically and durably (temp file, fsync, rename, dir fsync),
/// as `alphapanda.wal.segments.write_watermark` does.
fn write_watermark(watermark: &Path, watermark_ns: u64) -> io::Result<()> {
    let mut tmp = watermark.as_os_str().to_owned();
    tmp.push(".tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{watermark_ns}\n").as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, watermark)?;
    fsync_dir(watermark.parent().unwrap_or(Path::new(".")))
}
