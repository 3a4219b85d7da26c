//! PKZIP "implode" (method 6): LZ77 with a 4 or 8 KiB window and two or
//! three Shannon-Fano trees, from the format's description in APPNOTE.TXT
//! (section 5.3). The stream has no end mark: it ends at the member's
//! stated size, which is checked against the limits first.

use std::collections::HashMap;

use crate::archive::{Budget, Stop};

/// LSB-first bit reader over the compressed bytes.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
    acc: u64,
    count: u32,
}

impl Bits<'_> {
    fn bits(&mut self, n: u32) -> Option<u32> {
        while self.count < n {
            let b = *self.data.get(self.at)?;
            self.at += 1;
            self.acc |= u64::from(b) << self.count;
            self.count += 8;
        }
        let v = (self.acc & ((1u64 << n) - 1)) as u32;
        self.acc >>= n;
        self.count -= n;
        Some(v)
    }
}

/// One Shannon-Fano tree: `(length << 16 | code) -> value`.
struct Tree(HashMap<u32, u16>);

impl Tree {
    /// Reads a tree of `values` symbols described at the reader's position
    /// (byte aligned: trees come first).
    fn read(data: &[u8], at: &mut usize, values: usize) -> Option<Tree> {
        let n = usize::from(*data.get(*at)?) + 1;
        let desc = data.get(*at + 1..*at + 1 + n)?;
        *at += 1 + n;
        let mut lengths = Vec::with_capacity(values);
        for &d in desc {
            let len = (d & 0x0f) + 1;
            let count = usize::from(d >> 4) + 1;
            lengths.extend(std::iter::repeat_n(len, count));
        }
        if lengths.len() != values {
            return None;
        }
        let mut order: Vec<usize> = (0..values).collect();
        order.sort_by_key(|&v| (lengths[v], v));
        let (mut code, mut step, mut last) = (0u32, 0u32, 0u8);
        let mut map = HashMap::with_capacity(values);
        for &v in order.iter().rev() {
            code = code.wrapping_add(step);
            if lengths[v] != last {
                last = lengths[v];
                step = 1 << (16 - u32::from(last));
            }
            let len = u32::from(lengths[v]);
            let value = (code & 0xffff) >> (16 - len);
            map.insert(len << 16 | value, v as u16);
        }
        Some(Tree(map))
    }

    /// Decodes one symbol: codes are stored most significant bit first.
    fn decode(&self, bits: &mut Bits<'_>) -> Option<u16> {
        let mut code = 0u32;
        for len in 1..=16u32 {
            code = code << 1 | bits.bits(1)?;
            if let Some(&v) = self.0.get(&(len << 16 | code)) {
                return Some(v);
            }
        }
        None
    }
}

/// Expands an imploded member of `size` bytes; `flags` is its general
/// purpose flags (bit 1: 8 KiB window; bit 2: literals are coded).
pub fn explode(
    name: &str,
    data: &[u8],
    size: usize,
    flags: usize,
    budget: &mut Budget,
) -> Result<Vec<u8>, Stop> {
    budget.fits(name, size as u64, data.len())?;
    let big_window = flags & 0x02 != 0;
    let literal_tree = flags & 0x04 != 0;
    let corrupt = || Stop::Corrupt(format!("{name}: imploded data is damaged"));
    let mut at = 0usize;
    let literals = if literal_tree {
        Some(Tree::read(data, &mut at, 256).ok_or_else(corrupt)?)
    } else {
        None
    };
    let lengths = Tree::read(data, &mut at, 64).ok_or_else(corrupt)?;
    let distances = Tree::read(data, &mut at, 64).ok_or_else(corrupt)?;
    let mut bits = Bits {
        data,
        at,
        acc: 0,
        count: 0,
    };
    let low_bits = if big_window { 7 } else { 6 };
    let min_match = if literal_tree { 3 } else { 2 };
    let mut out: Vec<u8> = Vec::with_capacity(size.min(1 << 20));
    // A stream cut short gives what it had; the rest is not invented.
    while out.len() < size {
        let Some(flag) = bits.bits(1) else { break };
        if flag == 1 {
            let byte = match &literals {
                Some(t) => t.decode(&mut bits).map(|v| v as u8),
                None => bits.bits(8).map(|v| v as u8),
            };
            let Some(byte) = byte else { break };
            out.push(byte);
            continue;
        }
        let (Some(low), Some(high)) = (bits.bits(low_bits), distances.decode(&mut bits)) else {
            break;
        };
        let distance = ((u32::from(high) << low_bits) | low) as usize + 1;
        let Some(mut len) = lengths.decode(&mut bits).map(usize::from) else {
            break;
        };
        if len == 63 {
            let Some(extra) = bits.bits(8) else { break };
            len += extra as usize;
        }
        len += min_match;
        for _ in 0..len.min(size - out.len()) {
            // Before the start of the output the window holds zeros.
            let b = out.len().checked_sub(distance).map_or(0, |i| out[i]);
            out.push(b);
        }
    }
    if out.is_empty() && size > 0 {
        return Err(corrupt());
    }
    budget.take(name, out.len())?;
    Ok(out)
}
