//! Record values: the ``MarketTickEvent`` envelope around a formatted tick, as JSON or
//! msgpack, in exactly the bytes msgspec writes for the Python structs (field order,
//! shortest round-trip floats, ISO 8601 UTC strings or msgpack Timestamp extensions).

use crate::format::{Formatted, Level};

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(buf: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 16];
    let mut n = value;
    let mut len = 0;
    while n > 0 || len == 0 {
        digits[len] = HEX[(n & 0xF) as usize];
        n >>= 4;
        len += 1;
    }
    for _ in len..width {
        buf.push(b'0');
    }
    for i in (0..len).rev() {
        buf.push(digits[i]);
    }
}

/// The event id up to its sequence: UUIDv7-shaped, as ``WireEncoder.next_id`` builds it.
fn event_id_head(buf: &mut Vec<u8>, emitted_at_ns: i64, id_mid: &str) {
    let ms = emitted_at_ns.div_euclid(1_000_000) as u64;
    hex(buf, ms >> 16, 8);
    buf.push(b'-');
    hex(buf, ms & 0xFFFF, 4);
    buf.push(b'-');
    buf.extend_from_slice(id_mid.as_bytes());
    buf.push(b'-');
}

fn event_id(buf: &mut Vec<u8>, emitted_at_ns: i64, id_mid: &str, seq: u64) {
    event_id_head(buf, emitted_at_ns, id_mid);
    hex(buf, seq, 12);
}

/// Bytes rendered for one key, reused while the key repeats: within a batch the emit
/// time is the same for every record, a frame's receive time for each of its packets,
/// and exchange times repeat across the packets of a frame.
#[derive(Default)]
struct Memo {
    key: Option<i64>,
    bytes: Vec<u8>,
}

impl Memo {
    fn put(&mut self, buf: &mut Vec<u8>, key: i64, render: impl FnOnce(&mut Vec<u8>)) {
        if self.key != Some(key) {
            self.bytes.clear();
            render(&mut self.bytes);
            self.key = Some(key);
        }
        buf.extend_from_slice(&self.bytes);
    }
}

/// What `json_event` keeps between the records of one batch.
#[derive(Default)]
pub struct JsonMemo {
    head: Memo,
    emitted: Memo,
    received: Memo,
    exchange: Memo,
    last_trade: Memo,
}

/// Two decimal digits per step, from a table ("00" to "99"), as the `itoa` crate does.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Written in place at the end of ``buf`` (no intermediate copy: a variable-length copy
/// is a call to ``memmove``, which cost more than the digits themselves).
pub fn uint(buf: &mut Vec<u8>, value: u64) {
    let len = value.checked_ilog10().map_or(1, |log| log as usize + 1);
    buf.reserve(len);
    let start = buf.len();
    let digits = &mut buf.spare_capacity_mut()[..len];
    let mut n = value;
    let mut i = len;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i].write(DIGIT_PAIRS[pair]);
        digits[i + 1].write(DIGIT_PAIRS[pair + 1]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        digits[0].write(DIGIT_PAIRS[pair]);
        digits[1].write(DIGIT_PAIRS[pair + 1]);
    } else {
        digits[0].write(b'0' + n as u8);
    }
    // SAFETY: the loop wrote digits[0..len] (i reaches 2 or 1, then the head fills it),
    // and reserve() made room for them.
    unsafe { buf.set_len(start + len) };
}

fn int(buf: &mut Vec<u8>, value: i64) {
    if value < 0 {
        buf.push(b'-');
    }
    uint(buf, value.unsigned_abs());
}

fn float(buf: &mut Vec<u8>, value: f64) {
    let mut ryu = ryu::Buffer::new();
    buf.extend_from_slice(ryu.format_finite(value).as_bytes());
}

/// A price: a wire integer divided by ``div``. For the divisors 100 and 10,000 the
/// shortest decimal that round-trips is the integer's digits with the point put back
/// (at most 10 significant digits, far inside a double's precision, and never small
/// enough for an exponent), so it is written directly; the same bytes as ``float``.
fn price(buf: &mut Vec<u8>, value: f64, div: u32) {
    let places = match div {
        100 => 2,
        10_000 => 4,
        _ => return float(buf, value),
    };
    let raw = (value * div as f64).round() as u64;
    let whole = raw / div as u64;
    let mut frac = raw % div as u64;
    uint(buf, whole);
    buf.push(b'.');
    if frac == 0 {
        buf.push(b'0');
        return;
    }
    let mut digits = places;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let mut tmp = [b'0'; 4];
    let mut n = frac;
    for i in (0..digits).rev() {
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&tmp[..digits]);
}

fn opt_price(buf: &mut Vec<u8>, value: Option<f64>, div: u32) {
    match value {
        Some(v) => price(buf, v, div),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn two(buf: &mut Vec<u8>, n: u32) {
    buf.push(b'0' + (n / 10) as u8);
    buf.push(b'0' + (n % 10) as u8);
}

/// ``"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"`` with the quotes.
fn json_datetime(buf: &mut Vec<u8>, secs: i64, micros: u32) {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    buf.push(b'"');
    let y = year as u32;
    two(buf, y / 100);
    two(buf, y % 100);
    buf.push(b'-');
    two(buf, month);
    buf.push(b'-');
    two(buf, day);
    buf.push(b'T');
    two(buf, rem / 3600);
    buf.push(b':');
    two(buf, rem / 60 % 60);
    buf.push(b':');
    two(buf, rem % 60);
    if micros != 0 {
        buf.push(b'.');
        let mut m = [0u8; 6];
        let mut n = micros;
        for d in m.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf.extend_from_slice(&m);
    }
    buf.extend_from_slice(b"Z\"");
}

/// Nanoseconds since the epoch to (seconds, microseconds), truncated to the
/// microsecond as ``datetime`` does.
fn split_ns(ns: i64) -> (i64, u32) {
    let micros = ns.div_euclid(1000);
    (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) as u32)
}

fn json_opt_u32(buf: &mut Vec<u8>, value: Option<u32>) {
    match value {
        Some(v) => uint(buf, v as u64),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json_opt_f64(buf: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(v) => float(buf, v),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json_opt_ts(buf: &mut Vec<u8>, memo: &mut Memo, value: Option<i64>) {
    match value {
        Some(v) => memo.put(buf, v, |b| json_datetime(b, v, 0)),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json_levels(buf: &mut Vec<u8>, levels: &[Level], div: u32) {
    buf.push(b'[');
    for (i, level) in levels.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"quantity\":");
        uint(buf, level.quantity as u64);
        buf.extend_from_slice(b",\"price\":");
        price(buf, level.price, div);
        buf.extend_from_slice(b",\"orders\":");
        uint(buf, level.orders as u64);
        buf.push(b'}');
    }
    buf.push(b']');
}

pub fn json_event(
    buf: &mut Vec<u8>,
    memo: &mut JsonMemo,
    t: &Formatted,
    emitted_at_ns: i64,
    id_mid: &str,
    seq: u64,
    received_at_ns: i64,
) {
    memo.head.put(buf, emitted_at_ns, |b| {
        b.extend_from_slice(
            b"{\"schema_version\":1,\"event_type\":\"market_tick\",\"broker\":\"shared\",\"id\":\"",
        );
        event_id_head(b, emitted_at_ns, id_mid);
    });
    hex(buf, seq, 12);
    buf.extend_from_slice(b"\",\"emitted_at\":");
    memo.emitted.put(buf, emitted_at_ns, |b| {
        let (secs, micros) = split_ns(emitted_at_ns);
        json_datetime(b, secs, micros);
    });
    buf.extend_from_slice(b",\"data\":{\"instrument_token\":");
    uint(buf, t.token as u64);
    buf.extend_from_slice(b",\"mode\":\"");
    buf.extend_from_slice(t.mode.as_bytes());
    buf.extend_from_slice(if t.tradable {
        b"\",\"tradable\":true,\"last_price\":"
    } else {
        b"\",\"tradable\":false,\"last_price\":"
    });
    price(buf, t.last_price, t.div);
    buf.extend_from_slice(b",\"last_traded_quantity\":");
    json_opt_u32(buf, t.last_traded_quantity);
    buf.extend_from_slice(b",\"average_traded_price\":");
    opt_price(buf, t.average_traded_price, t.div);
    buf.extend_from_slice(b",\"volume_traded\":");
    json_opt_u32(buf, t.volume_traded);
    buf.extend_from_slice(b",\"total_buy_quantity\":");
    json_opt_u32(buf, t.total_buy_quantity);
    buf.extend_from_slice(b",\"total_sell_quantity\":");
    json_opt_u32(buf, t.total_sell_quantity);
    buf.extend_from_slice(b",\"ohlc\":");
    match &t.ohlc {
        Some(o) => {
            buf.extend_from_slice(b"{\"open\":");
            price(buf, o.open, t.div);
            buf.extend_from_slice(b",\"high\":");
            opt_price(buf, o.high, t.div);
            buf.extend_from_slice(b",\"low\":");
            opt_price(buf, o.low, t.div);
            buf.extend_from_slice(b",\"close\":");
            price(buf, o.close, t.div);
            buf.push(b'}');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"change\":");
    json_opt_f64(buf, t.change);
    buf.extend_from_slice(b",\"last_trade_time\":");
    json_opt_ts(buf, &mut memo.last_trade, t.last_trade_time);
    let [oi, oih, oil] = match t.oi {
        Some([a, b, c]) => [Some(a), Some(b), Some(c)],
        None => [None, None, None],
    };
    buf.extend_from_slice(b",\"oi\":");
    json_opt_u32(buf, oi);
    buf.extend_from_slice(b",\"oi_day_high\":");
    json_opt_u32(buf, oih);
    buf.extend_from_slice(b",\"oi_day_low\":");
    json_opt_u32(buf, oil);
    buf.extend_from_slice(b",\"exchange_timestamp\":");
    json_opt_ts(buf, &mut memo.exchange, t.exchange_timestamp);
    buf.extend_from_slice(b",\"depth\":");
    match &t.depth {
        Some(levels) => {
            buf.extend_from_slice(b"{\"buy\":");
            json_levels(buf, &levels[..5], t.div);
            buf.extend_from_slice(b",\"sell\":");
            json_levels(buf, &levels[5..], t.div);
            buf.push(b'}');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"received_at\":");
    memo.received.put(buf, received_at_ns, |b| {
        let (secs, micros) = split_ns(received_at_ns);
        json_datetime(b, secs, micros);
        b.extend_from_slice(b",\"received_at_ns\":");
        int(b, received_at_ns);
    });
    buf.extend_from_slice(b"}}");
}

// -- msgpack -------------------------------------------------------------------------

fn mp_str(buf: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        buf.push(0xA0 | len as u8);
    } else if len < 256 {
        buf.push(0xD9);
        buf.push(len as u8);
    } else {
        buf.push(0xDA);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    }
    buf.extend_from_slice(s.as_bytes());
}

fn mp_uint(buf: &mut Vec<u8>, v: u64) {
    if v < 128 {
        buf.push(v as u8);
    } else if v <= 0xFF {
        buf.push(0xCC);
        buf.push(v as u8);
    } else if v <= 0xFFFF {
        buf.push(0xCD);
        buf.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xFFFF_FFFF {
        buf.push(0xCE);
        buf.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        buf.push(0xCF);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

fn mp_int(buf: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        mp_uint(buf, v as u64);
    } else if v >= -32 {
        buf.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        buf.push(0xD0);
        buf.push(v as i8 as u8);
    } else if v >= i16::MIN as i64 {
        buf.push(0xD1);
        buf.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        buf.push(0xD2);
        buf.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        buf.push(0xD3);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

fn mp_f64(buf: &mut Vec<u8>, v: f64) {
    buf.push(0xCB);
    buf.extend_from_slice(&v.to_bits().to_be_bytes());
}

fn mp_opt_u32(buf: &mut Vec<u8>, v: Option<u32>) {
    match v {
        Some(v) => mp_uint(buf, v as u64),
        None => buf.push(0xC0),
    }
}

fn mp_opt_f64(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => mp_f64(buf, v),
        None => buf.push(0xC0),
    }
}

/// The msgpack Timestamp extension (type -1) in its smallest form.
fn mp_timestamp(buf: &mut Vec<u8>, secs: i64, micros: u32) {
    let nanos = micros as u64 * 1000;
    if secs >= 0 && (secs as u64) >> 34 == 0 {
        if nanos == 0 && secs as u64 <= 0xFFFF_FFFF {
            buf.extend_from_slice(&[0xD6, 0xFF]);
            buf.extend_from_slice(&(secs as u32).to_be_bytes());
        } else {
            buf.extend_from_slice(&[0xD7, 0xFF]);
            buf.extend_from_slice(&((nanos << 34) | secs as u64).to_be_bytes());
        }
    } else {
        buf.extend_from_slice(&[0xC7, 12, 0xFF]);
        buf.extend_from_slice(&(nanos as u32).to_be_bytes());
        buf.extend_from_slice(&secs.to_be_bytes());
    }
}

fn mp_opt_ts(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => mp_timestamp(buf, v, 0),
        None => buf.push(0xC0),
    }
}

fn mp_levels(buf: &mut Vec<u8>, levels: &[Level]) {
    buf.push(0x90 | levels.len() as u8);
    for level in levels {
        buf.push(0x83);
        mp_str(buf, "quantity");
        mp_uint(buf, level.quantity as u64);
        mp_str(buf, "price");
        mp_f64(buf, level.price);
        mp_str(buf, "orders");
        mp_uint(buf, level.orders as u64);
    }
}

pub fn msgpack_event(
    buf: &mut Vec<u8>,
    t: &Formatted,
    emitted_at_ns: i64,
    id_mid: &str,
    seq: u64,
    received_at_ns: i64,
) {
    buf.push(0x86);
    mp_str(buf, "schema_version");
    mp_uint(buf, 1);
    mp_str(buf, "event_type");
    mp_str(buf, "market_tick");
    mp_str(buf, "broker");
    mp_str(buf, "shared");
    mp_str(buf, "id");
    let mut id = Vec::with_capacity(36);
    event_id(&mut id, emitted_at_ns, id_mid, seq);
    mp_str(buf, std::str::from_utf8(&id).unwrap_or_default());
    mp_str(buf, "emitted_at");
    let (secs, micros) = split_ns(emitted_at_ns);
    mp_timestamp(buf, secs, micros);
    mp_str(buf, "data");
    // MarketTick: 19 fields, a map16.
    buf.extend_from_slice(&[0xDE, 0, 19]);
    mp_str(buf, "instrument_token");
    mp_uint(buf, t.token as u64);
    mp_str(buf, "mode");
    mp_str(buf, t.mode);
    mp_str(buf, "tradable");
    buf.push(if t.tradable { 0xC3 } else { 0xC2 });
    mp_str(buf, "last_price");
    mp_f64(buf, t.last_price);
    mp_str(buf, "last_traded_quantity");
    mp_opt_u32(buf, t.last_traded_quantity);
    mp_str(buf, "average_traded_price");
    mp_opt_f64(buf, t.average_traded_price);
    mp_str(buf, "volume_traded");
    mp_opt_u32(buf, t.volume_traded);
    mp_str(buf, "total_buy_quantity");
    mp_opt_u32(buf, t.total_buy_quantity);
    mp_str(buf, "total_sell_quantity");
    mp_opt_u32(buf, t.total_sell_quantity);
    mp_str(buf, "ohlc");
    match &t.ohlc {
        Some(o) => {
            buf.push(0x84);
            mp_str(buf, "open");
            mp_f64(buf, o.open);
            mp_str(buf, "high");
            mp_opt_f64(buf, o.high);
            mp_str(buf, "low");
            mp_opt_f64(buf, o.low);
            mp_str(buf, "close");
            mp_f64(buf, o.close);
        }
        None => buf.push(0xC0),
    }
    mp_str(buf, "change");
    mp_opt_f64(buf, t.change);
    mp_str(buf, "last_trade_time");
    mp_opt_ts(buf, t.last_trade_time);
    let [oi, oih, oil] = match t.oi {
        Some([a, b, c]) => [Some(a), Some(b), Some(c)],
        None => [None, None, None],
    };
    mp_str(buf, "oi");
    mp_opt_u32(buf, oi);
    mp_str(buf, "oi_day_high");
    mp_opt_u32(buf, oih);
    mp_str(buf, "oi_day_low");
    mp_opt_u32(buf, oil);
    mp_str(buf, "exchange_timestamp");
    mp_opt_ts(buf, t.exchange_timestamp);
    mp_str(buf, "depth");
    match &t.depth {
        Some(levels) => {
            buf.push(0x82);
            mp_str(buf, "buy");
            mp_levels(buf, &levels[..5]);
            mp_str(buf, "sell");
            mp_levels(buf, &levels[5..]);
        }
        None => buf.push(0xC0),
    }
    mp_str(buf, "received_at");
    let (secs, micros) = split_ns(received_at_ns);
    mp_timestamp(buf, secs, micros);
    mp_str(buf, "received_at_ns");
    mp_int(buf, received_at_ns);
}
