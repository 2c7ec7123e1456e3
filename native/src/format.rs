//! A packet's bytes to the fields of a ``MarketTick``, with the formatter's null rules.
//!
//! Every wire field is an unsigned 32-bit integer and every divisor is positive, so
//! prices are finite and non-negative and quantities are never negative: of the
//! formatter's malformed reasons only two can come from real bytes, an OHLC whose high
//! is below its low and a timestamp out of range. Both are counted and nulled exactly
//! as the Python formatter's slow path does, in the same order.

pub const TIMESTAMP_MIN: i64 = 946_684_800;
pub const TIMESTAMP_MAX_AHEAD: i64 = 86_400;
const TIMESTAMP_MAX_FALLBACK: i64 = 4_102_444_800;

pub const REASON_OHLC_INCONSISTENT: &str = "ohlc_high_below_low";
pub const REASON_TIMESTAMP_OUT_OF_RANGE: &str = "timestamp_out_of_range";

const SEGMENT_INDICES: u32 = 9;

pub struct Options {
    pub msgpack: bool,
    pub include_depth: bool,
    pub include_oi: bool,
}

pub struct Ohlc {
    pub open: f64,
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub close: f64,
}

pub struct Level {
    pub quantity: u32,
    pub price: f64,
    pub orders: u32,
}

/// The fields of one ``MarketTick`` (``received_at`` comes from the caller).
pub struct Formatted {
    pub token: u32,
    /// The segment's price divisor (prices are wire integers divided by it).
    pub div: u32,
    pub mode: &'static str,
    pub tradable: bool,
    pub last_price: f64,
    pub last_traded_quantity: Option<u32>,
    pub average_traded_price: Option<f64>,
    pub volume_traded: Option<u32>,
    pub total_buy_quantity: Option<u32>,
    pub total_sell_quantity: Option<u32>,
    pub ohlc: Option<Ohlc>,
    pub change: Option<f64>,
    pub last_trade_time: Option<i64>,
    pub oi: Option<[u32; 3]>,
    pub exchange_timestamp: Option<i64>,
    pub depth: Option<[Level; 10]>,
}

/// The price divisor of an instrument's segment (its token's low byte), as a float:
/// integer wire values divided by it give the very floats Python's int / int gives.
pub fn divisor(token: u32) -> f64 {
    divisor_int(token) as f64
}

pub fn divisor_int(token: u32) -> u32 {
    match token & 0xFF {
        3 => 10_000_000,
        6 | 12 => 10_000,
        _ => 100,
    }
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn change(last: f64, close: f64, raw_close: u32) -> f64 {
    // Same expression as the official parser, so the float is identical.
    if raw_close != 0 {
        (last - close) * 100.0 / close
    } else {
        0.0
    }
}

/// The latest exchange time a tick received at `received_at_ns` may carry.
pub fn ts_max(received_at_ns: i64) -> i64 {
    if received_at_ns > 0 {
        received_at_ns.div_euclid(1_000_000_000) + TIMESTAMP_MAX_AHEAD
    } else {
        TIMESTAMP_MAX_FALLBACK
    }
}

pub fn timestamp(
    epoch: u32,
    ts_max: i64,
    token: u32,
    malformed: &mut Vec<(u32, &'static str)>,
) -> Option<i64> {
    if epoch == 0 {
        return None; // Kite's "no value"
    }
    let epoch = epoch as i64;
    if !(TIMESTAMP_MIN..=ts_max).contains(&epoch) {
        malformed.push((token, REASON_TIMESTAMP_OUT_OF_RANGE));
        return None;
    }
    Some(epoch)
}

fn ohlc(
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    token: u32,
    malformed: &mut Vec<(u32, &'static str)>,
) -> Ohlc {
    if high < low {
        // Which one is wrong is unknowable; publishing either would mislead.
        malformed.push((token, REASON_OHLC_INCONSISTENT));
        return Ohlc { open, high: None, low: None, close };
    }
    Ohlc { open, high: Some(high), low: Some(low), close }
}

/// Formats one packet of a known length (8, 28, 32, 44 or 184 bytes).
pub fn format_packet(
    p: &[u8],
    received_at_ns: i64,
    options: &Options,
    malformed: &mut Vec<(u32, &'static str)>,
) -> Formatted {
    let token = be32(p, 0);
    let div = divisor(token);
    let tradable = token & 0xFF != SEGMENT_INDICES;
    let last = be32(p, 4) as f64 / div;
    let ts_max = ts_max(received_at_ns);
    let mut t = Formatted {
        token,
        div: divisor_int(token),
        mode: "ltp",
        tradable,
        last_price: last,
        last_traded_quantity: None,
        average_traded_price: None,
        volume_traded: None,
        total_buy_quantity: None,
        total_sell_quantity: None,
        ohlc: None,
        change: None,
        last_trade_time: None,
        oi: None,
        exchange_timestamp: None,
        depth: None,
    };
    match p.len() {
        28 | 32 => {
            // Index packets put high/low before open/close; their change bytes are
            // ignored and change recomputed, like the official parser.
            let raw_close = be32(p, 20);
            let close = raw_close as f64 / div;
            t.mode = if p.len() == 32 { "full" } else { "quote" };
            t.ohlc = Some(ohlc(
                be32(p, 16) as f64 / div,
                be32(p, 8) as f64 / div,
                be32(p, 12) as f64 / div,
                close,
                token,
                malformed,
            ));
            t.change = Some(change(last, close, raw_close));
            if p.len() == 32 {
                t.exchange_timestamp = timestamp(be32(p, 28), ts_max, token, malformed);
            }
        }
        44 | 184 => {
            let raw_close = be32(p, 40);
            let close = raw_close as f64 / div;
            t.mode = if p.len() == 184 { "full" } else { "quote" };
            t.last_traded_quantity = Some(be32(p, 8));
            t.average_traded_price = Some(be32(p, 12) as f64 / div);
            t.volume_traded = Some(be32(p, 16));
            t.total_buy_quantity = Some(be32(p, 20));
            t.total_sell_quantity = Some(be32(p, 24));
            t.ohlc = Some(ohlc(
                be32(p, 28) as f64 / div,
                be32(p, 32) as f64 / div,
                be32(p, 36) as f64 / div,
                close,
                token,
                malformed,
            ));
            t.change = Some(change(last, close, raw_close));
            if p.len() == 184 {
                t.last_trade_time = timestamp(be32(p, 44), ts_max, token, malformed);
                t.exchange_timestamp = timestamp(be32(p, 60), ts_max, token, malformed);
                if options.include_oi {
                    t.oi = Some([be32(p, 48), be32(p, 52), be32(p, 56)]);
                }
                if options.include_depth {
                    t.depth = Some(std::array::from_fn(|i| {
                        let at = 64 + 12 * i;
                        Level {
                            quantity: be32(p, at),
                            price: be32(p, at + 4) as f64 / div,
                            orders: u16::from_be_bytes([p[at + 8], p[at + 9]]) as u32,
                        }
                    }));
                }
            }
        }
        _ => {}
    }
    t
}
