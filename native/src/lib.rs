//! The feed's hot path: Kite v3 binary frames to ready-to-produce Kafka records.
//!
//! Byte for byte what the Python path gives (`kite.protocol.decoder.decode_message`,
//! `pipeline.formatter.TickFormatter` and `pipeline.wire.WireEncoder`); the differential
//! tests in `tests/unit/test_native_differential.py` hold the two together. Pure: no
//! clock reads (receive and emit times are passed in), no I/O, no logging.
//!
//! Two entry points share one implementation:
//! * `decode_frame` turns a frame into `NativeTick`s (one small object per packet, its
//!   raw bytes kept), which the feed's buffer holds like decoded ticks; `encode_ticks`
//!   turns a batch of them into records.
//! * `encode_frame` does both in one call (benchmarks, differential tests).

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyType};

mod format;
mod out;
mod wal;

use format::{format_packet, Formatted, Options};

const LTP_LENGTH: usize = 8;
const INDEX_QUOTE_LENGTH: usize = 28;
const INDEX_FULL_LENGTH: usize = 32;
const QUOTE_LENGTH: usize = 44;
const FULL_LENGTH: usize = 184;

const SKIP_UNKNOWN_LENGTH: &str = "unknown_length";
const SKIP_TRUNCATED: &str = "truncated";

/// One packet of a frame, decoded lazily: its bytes and the frame's receive time.
#[pyclass(frozen, module = "alphapanda._native", name = "NativeTick")]
pub struct NativeTick {
    packet: [u8; FULL_LENGTH],
    length: u8,
    received_at_ns: i64,
}

impl NativeTick {
    fn bytes(&self) -> &[u8] {
        &self.packet[..self.length as usize]
    }
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

#[pymethods]
impl NativeTick {
    #[getter]
    fn instrument_token(&self) -> u32 {
        be32(&self.packet, 0)
    }

    /// The packet kind as the Python decoder names it.
    #[getter]
    fn mode(&self) -> &'static str {
        match self.length as usize {
            LTP_LENGTH => "ltp",
            INDEX_QUOTE_LENGTH | QUOTE_LENGTH => "quote",
            _ => "full",
        }
    }

    #[getter]
    fn last_price(&self) -> f64 {
        let token = be32(&self.packet, 0);
        be32(&self.packet, 4) as f64 / format::divisor(token)
    }

    #[getter]
    fn volume_traded(&self) -> Option<u32> {
        matches!(self.length as usize, QUOTE_LENGTH | FULL_LENGTH).then(|| be32(&self.packet, 16))
    }

    #[getter]
    fn oi(&self) -> Option<u32> {
        (self.length as usize == FULL_LENGTH).then(|| be32(&self.packet, 48))
    }

    #[getter]
    fn exchange_timestamp(&self) -> Option<u32> {
        match self.length as usize {
            FULL_LENGTH => Some(be32(&self.packet, 60)),
            INDEX_FULL_LENGTH => Some(be32(&self.packet, 28)),
            _ => None,
        }
    }

    #[getter]
    fn received_at_ns(&self) -> i64 {
        self.received_at_ns
    }

    /// What a candle reads of this tick, as its record carries it:
    /// `(instrument_token, last_price, volume_traded, oi, exchange_timestamp,
    /// received_at_ns)`, the exchange time in epoch seconds and `None` when the record
    /// has none (absent, 0, or out of range), `oi` only with `include_oi`.
    fn candle_fields(
        &self,
        include_oi: bool,
    ) -> (u32, f64, Option<u32>, Option<u32>, Option<i64>, i64) {
        let mut malformed = Vec::new(); // counted by the encoder, not here
        let exchange = self.exchange_timestamp().and_then(|epoch| {
            format::timestamp(
                epoch,
                format::ts_max(self.received_at_ns),
                self.instrument_token(),
                &mut malformed,
            )
        });
        (
            self.instrument_token(),
            self.last_price(),
            self.volume_traded(),
            if include_oi { self.oi() } else { None },
            exchange,
            self.received_at_ns,
        )
    }

    /// The packet's bytes as they came in the frame.
    #[getter]
    fn packet<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.bytes())
    }
}

/// Walks a frame like the Python decoder: calls `on_packet(bytes)` for every packet of
/// a known length, records skipped ones as (index, length, reason). Returns heartbeat.
fn walk_frame<'a>(
    data: &'a [u8],
    skipped: &mut Vec<(usize, usize, &'static str)>,
    mut on_packet: impl FnMut(&'a [u8]),
) -> bool {
    let size = data.len();
    if size == 1 {
        return true;
    }
    if size < 2 {
        skipped.push((0, size, SKIP_TRUNCATED));
        return false;
    }
    let count = ((data[0] as usize) << 8) | data[1] as usize;
    let mut pos = 2usize;
    for index in 0..count {
        if pos + 2 > size {
            skipped.push((index, size - pos, SKIP_TRUNCATED));
            break;
        }
        let length = ((data[pos] as usize) << 8) | data[pos + 1] as usize;
        let start = pos + 2;
        pos = start + length;
        if pos > size {
            skipped.push((index, length, SKIP_TRUNCATED));
            break;
        }
        match length {
            LTP_LENGTH | INDEX_QUOTE_LENGTH | INDEX_FULL_LENGTH | QUOTE_LENGTH | FULL_LENGTH => {
                on_packet(&data[start..pos])
            }
            _ => skipped.push((index, length, SKIP_UNKNOWN_LENGTH)),
        }
    }
    false
}

/// ``(ticks, heartbeat, skipped)`` for one binary message; never raises on any input.
#[pyfunction]
fn decode_frame<'py>(
    py: Python<'py>,
    data: &[u8],
    received_at_ns: i64,
) -> PyResult<(Bound<'py, PyList>, bool, Vec<(usize, usize, &'static str)>)> {
    let mut skipped = Vec::new();
    let mut packets: Vec<&[u8]> = Vec::new();
    let heartbeat = walk_frame(data, &mut skipped, |p| packets.push(p));
    let list = PyList::empty(py);
    for p in packets {
        let mut packet = [0u8; FULL_LENGTH];
        packet[..p.len()].copy_from_slice(p);
        let tick = NativeTick { packet, length: p.len() as u8, received_at_ns };
        list.append(Bound::new(py, tick)?)?;
    }
    Ok((list, heartbeat, skipped))
}

/// Each record's packet index in its frame (the ``pkt`` header), numbered as
/// ``WireEncoder.position_headers`` numbers it, on that encoder's own state: ``state``
/// maps a token to ``(receive time, index)`` of its last record, ``headers_at(index)``
/// gives the (shared) header list for an index.
struct Positions<'py> {
    state: Bound<'py, PyDict>,
    headers_at: Bound<'py, PyAny>,
    max: usize,
    // Header lists by index, asked of ``headers_at`` once per call.
    lists: Vec<Bound<'py, PyAny>>,
}

impl<'py> Positions<'py> {
    /// ``token`` and ``received`` are the record's own objects (its key's token as an
    /// int, its receive time), reused here rather than made again.
    fn headers(
        &mut self,
        token: &Bound<'py, PyAny>,
        received: &Bound<'py, PyAny>,
        received_at_ns: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let last = self.state.get_item(token)?;
        let index = match &last {
            Some(entry) => {
                let (ns, index): (i64, usize) = entry.extract()?;
                if ns == received_at_ns {
                    index + 1
                } else {
                    0
                }
            }
            None => 0,
        };
        if last.is_none() && self.state.len() >= self.max {
            self.state.clear();
        }
        self.state.set_item(token, (received, index))?;
        while self.lists.len() <= index {
            let list = self.headers_at.call1((self.lists.len(),))?;
            self.lists.push(list);
        }
        Ok(self.lists[index].clone())
    }
}

/// What the record encoder needs besides the ticks (mirrors ``WireEncoder`` state).
struct Encoder<'py> {
    py: Python<'py>,
    options: Options,
    emitted_at_ns: i64,
    id_mid: String,
    seq: u64,
    headers: Bound<'py, PyAny>,
    positions: Option<Positions<'py>>,
    message_type: Bound<'py, PyType>,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
    memo: out::JsonMemo,
    malformed: Vec<(u32, &'static str)>,
    out: Bound<'py, PyList>,
}

impl<'py> Encoder<'py> {
    fn record(&mut self, packet: &[u8], received_at_ns: i64) -> PyResult<()> {
        let formatted: Formatted =
            format_packet(packet, received_at_ns, &self.options, &mut self.malformed);
        self.seq = (self.seq + 1) & 0xFFFF_FFFF_FFFF;
        self.buf.clear();
        if self.options.msgpack {
            out::msgpack_event(
                &mut self.buf,
                &formatted,
                self.emitted_at_ns,
                &self.id_mid,
                self.seq,
                received_at_ns,
            );
        } else {
            out::json_event(
                &mut self.buf,
                &mut self.memo,
                &formatted,
                self.emitted_at_ns,
                &self.id_mid,
                self.seq,
                received_at_ns,
            );
        }
        self.key_buf.clear();
        out::uint(&mut self.key_buf, formatted.token as u64);
        let key = PyBytes::new(self.py, &self.key_buf);
        let value = PyBytes::new(self.py, &self.buf);
        let received = received_at_ns.into_pyobject(self.py)?;
        let headers = match &mut self.positions {
            Some(positions) => {
                let token = formatted.token.into_pyobject(self.py)?.into_any();
                positions.headers(&token, &received, received_at_ns)?
            }
            None => self.headers.clone(),
        };
        let message = new_tuple_of(
            &self.message_type,
            [key.into_any(), value.into_any(), headers, received.into_any()],
        )?;
        self.out.append(message)
    }
}

/// An instance of ``tp`` (a tuple subclass such as a NamedTuple) holding ``items``,
/// allocated as CPython's own ``tuple.__new__(tp, items)`` does, without a Python call.
fn new_tuple_of<'py, const N: usize>(
    tp: &Bound<'py, PyType>,
    items: [Bound<'py, PyAny>; N],
) -> PyResult<Bound<'py, PyAny>> {
    let py = tp.py();
    unsafe {
        let raw = tp.as_type_ptr();
        if ffi::PyType_IsSubtype(raw, std::ptr::addr_of_mut!(ffi::PyTuple_Type)) == 0 {
            return Err(PyTypeError::new_err("message_type must be a tuple subclass"));
        }
        // The stable ABI hides the type's layout: ask for its allocator by slot.
        let slot = ffi::PyType_GetSlot(raw, ffi::Py_tp_alloc);
        let alloc: ffi::allocfunc = if slot.is_null() {
            ffi::PyType_GenericAlloc
        } else {
            std::mem::transmute::<*mut std::ffi::c_void, ffi::allocfunc>(slot)
        };
        let obj = alloc(raw, N as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, item) in items.into_iter().enumerate() {
            ffi::PyTuple_SetItem(obj, i as ffi::Py_ssize_t, item.into_ptr());
        }
        // Records hold bytes, ints and the shared header list (tuples of str and bytes):
        // no cycle can pass through them, and thousands are alive per frame, so the
        // cyclic GC need not traverse them.
        ffi::PyObject_GC_UnTrack(obj.cast());
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

#[allow(clippy::too_many_arguments)]
fn make_encoder<'py>(
    py: Python<'py>,
    emitted_at_ns: i64,
    msgpack: bool,
    include_depth: bool,
    include_oi: bool,
    id_mid: String,
    seq: u64,
    headers: Bound<'py, PyAny>,
    message_type: Bound<'py, PyType>,
) -> Encoder<'py> {
    Encoder {
        py,
        options: Options { msgpack, include_depth, include_oi },
        emitted_at_ns,
        id_mid,
        seq,
        headers,
        positions: None,
        message_type,
        buf: Vec::with_capacity(2048),
        key_buf: Vec::with_capacity(20),
        memo: out::JsonMemo::default(),
        malformed: Vec::new(),
        out: PyList::empty(py),
    }
}

/// ``(records, seq, malformed)`` for a batch of ``NativeTick``s: each record is
/// ``message_type((key, value, headers, received_at_ns))``; ``seq`` is the id counter
/// after the batch; ``malformed`` lists ``(token, reason)`` per nulled field. With
/// ``positions`` (and ``headers_at``, ``max_positions``) each record gets the header
/// list of its packet index in its frame (see ``Positions``), else ``headers``.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (ticks, emitted_at_ns, *, msgpack, include_depth, include_oi, id_mid, seq, headers, message_type, positions=None, headers_at=None, max_positions=0))]
fn encode_ticks<'py>(
    py: Python<'py>,
    ticks: &Bound<'py, PyList>,
    emitted_at_ns: i64,
    msgpack: bool,
    include_depth: bool,
    include_oi: bool,
    id_mid: String,
    seq: u64,
    headers: Bound<'py, PyAny>,
    message_type: Bound<'py, PyType>,
    positions: Option<Bound<'py, PyDict>>,
    headers_at: Option<Bound<'py, PyAny>>,
    max_positions: usize,
) -> PyResult<(Bound<'py, PyList>, u64, Vec<(u32, &'static str)>)> {
    let mut enc = make_encoder(
        py, emitted_at_ns, msgpack, include_depth, include_oi, id_mid, seq, headers, message_type,
    );
    match (positions, headers_at) {
        (Some(state), Some(headers_at)) => {
            let lists = Vec::new();
            enc.positions = Some(Positions { state, headers_at, max: max_positions, lists });
        }
        (None, None) => {}
        _ => return Err(PyTypeError::new_err("positions and headers_at go together")),
    }
    for item in ticks.iter() {
        let tick = item.cast::<NativeTick>()?;
        let tick = tick.get();
        enc.record(tick.bytes(), tick.received_at_ns)?;
    }
    Ok((enc.out, enc.seq, enc.malformed))
}

/// One call per frame: ``(records, seq, malformed, heartbeat, skipped)``, the records
/// exactly those ``decode_frame`` + ``encode_ticks`` give.
#[pyfunction]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pyo3(signature = (data, received_at_ns, emitted_at_ns, *, msgpack, include_depth, include_oi, id_mid, seq, headers, message_type))]
fn encode_frame<'py>(
    py: Python<'py>,
    data: &[u8],
    received_at_ns: i64,
    emitted_at_ns: i64,
    msgpack: bool,
    include_depth: bool,
    include_oi: bool,
    id_mid: String,
    seq: u64,
    headers: Bound<'py, PyAny>,
    message_type: Bound<'py, PyType>,
) -> PyResult<(
    Bound<'py, PyList>,
    u64,
    Vec<(u32, &'static str)>,
    bool,
    Vec<(usize, usize, &'static str)>,
)> {
    let mut enc = make_encoder(
        py, emitted_at_ns, msgpack, include_depth, include_oi, id_mid, seq, headers, message_type,
    );
    let mut skipped = Vec::new();
    let mut packets: Vec<&[u8]> = Vec::new();
    let heartbeat = walk_frame(data, &mut skipped, |p| packets.push(p));
    for p in packets {
        enc.record(p, received_at_ns)?;
    }
    Ok((enc.out, enc.seq, enc.malformed, heartbeat, skipped))
}

/// The interface this build offers; `alphapanda.pipeline.hotpath.NATIVE_API_VERSION`
/// must say the same, so a build from older sources is refused rather than half used.
/// Raise both when a function or a method is added or changed.
const API_VERSION: u32 = 4;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("API_VERSION", API_VERSION)?;
    m.add_class::<NativeTick>()?;
    m.add_class::<wal::WalWriter>()?;
    m.add_function(wrap_pyfunction!(decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(encode_ticks, m)?)?;
    m.add_function(wrap_pyfunction!(encode_frame, m)?)?;
    Ok(())
}
