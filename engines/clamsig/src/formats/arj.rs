//! ARJ archives: stored members and the four compression methods (1 to 3:
//! LZ77 with static Huffman blocks, as LHA's; 4: LZ77 with unary-coded
//! lengths), from the format's description in the ARJ technical notes.

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// The members of an ARJ archive.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut at = 0usize;
    let mut first = true;
    while data.get(at..at + 2) == Some(&[0x60, 0xea]) {
        let header_size =
            u16le(data, at + 2).ok_or_else(|| Stop::Corrupt("ARJ header cut off".into()))?;
        if header_size == 0 {
            break;
        }
        let h = at + 4;
        let Some(header) = super::slice(data, h, header_size) else {
            return Err(Stop::Corrupt(format!("ARJ header at offset {at} cut off")));
        };
        let first_size = usize::from(header[0]);
        let method = header.get(5).copied().unwrap_or(0);
        let kind = header.get(6).copied().unwrap_or(0);
        let flags = header.get(4).copied().unwrap_or(0);
        let csize = u32le(header, 12).unwrap_or(0);
        let size = u32le(header, 16).unwrap_or(0);
        let name_raw = header.get(first_size..).unwrap_or_default();
        let name = clean_name(name_raw.split(|&b| b == 0).next().unwrap_or_default());
        // Header CRC (4), then extended headers, each counted, until 0.
        let mut next = h + header_size + 4;
        while let Some(ext) = u16le(data, next) {
            next += 2;
            if ext == 0 {
                break;
            }
            next = next.saturating_add(ext + 4);
        }
        if first {
            first = false;
            at = next;
            continue;
        }
        let body = next;
        let end = body.saturating_add(csize).min(data.len());
        if flags & 0x01 != 0 {
            return Err(Stop::Encrypted(name));
        }
        if kind == 0 || kind == 1 {
            match method {
                0 => {
                    let content = budget.stored(&name, &data[body.min(end)..end])?;
                    out.push((name, content));
                }
                1..=4 => {
                    budget.fits(&name, size as u64, end - body.min(end))?;
                    let packed = &data[body.min(end)..end];
                    let content = if method == 4 {
                        fastest(packed, size)
                    } else {
                        huffman(packed, size)
                    };
                    let content = content
                        .ok_or_else(|| Stop::Corrupt(format!("{name}: ARJ data is damaged")))?;
                    budget.take(&name, content.len())?;
                    out.push((name, content));
                }
                m => {
                    return Err(Stop::Unsupported(format!("{name}: ARJ method {m}")));
                }
            }
        }
        at = body.saturating_add(csize);
    }
    Ok(())
}

/// MSB-first bit reader; reads past the end give zeros (the decoders stop
/// on the output size).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
    acc: u64,
    count: u32,
    past_end: u32,
}

impl Bits<'_> {
    fn new(data: &[u8]) -> Bits<'_> {
        Bits {
            data,
            at: 0,
            acc: 0,
            count: 0,
            past_end: 0,
        }
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let b = match self.data.get(self.at) {
                Some(&b) => b,
                None => {
                    self.past_end += 1;
                    0
                }
            };
            self.at += 1;
            self.acc |= u64::from(b) << (56 - self.count);
            self.count += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        self.fill();
        if n == 0 {
            return 0;
        }
        (self.acc >> (64 - n)) as u32
    }

    fn skip(&mut self, n: u32) {
        self.fill();
        self.acc <<= n;
        self.count -= n;
    }

    fn bits(&mut self, n: u32) -> u32 {
        let v = self.peek(n);
        self.skip(n);
        v
    }

    /// Whether the reader has gone well past the data (a damaged stream).
    fn overrun(&self) -> bool {
        self.past_end > 16
    }
}

/// A canonical Huffman code (codes assigned shortest first, in symbol
/// order), or one symbol that takes no bits.
enum Code {
    One(u16),
    Lengths { count: [u16; 17], symbols: Vec<u16> },
}

impl Code {
    fn new(lengths: &[u8]) -> Option<Code> {
        let mut count = [0u16; 17];
        for &l in lengths {
            *count.get_mut(usize::from(l))? += 1;
        }
        count[0] = 0;
        let mut symbols = Vec::with_capacity(lengths.len());
        for len in 1..=16u8 {
            symbols.extend((0..lengths.len() as u16).filter(|&s| lengths[usize::from(s)] == len));
        }
        Some(Code::Lengths { count, symbols })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Option<u16> {
        let (count, symbols) = match self {
            Code::One(s) => return Some(*s),
            Code::Lengths { count, symbols } => (count, symbols),
        };
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for &n in &count[1..] {
            code |= bits.bits(1) as i32;
            let n = i32::from(n);
            if code - first < n {
                return symbols.get((index + code - first) as usize).copied();
            }
            index += n;
            first = (first + n) << 1;
            code <<= 1;
        }
        None
    }
}

const THRESHOLD: usize = 3;
const NC: usize = 255 + 256 + 2 - THRESHOLD;
const NP: usize = 17;
const NT: usize = 19;

/// Lengths of the position or length-table code: `nn` symbols, `nbit`
/// bits for the count; after symbol `special`, a 2-bit run of zeros.
fn read_pt(
    bits: &mut Bits<'_>,
    nn: usize,
    nbit: u32,
    special: Option<usize>,
) -> Option<(Code, Vec<u8>)> {
    let n = bits.bits(nbit) as usize;
    if n == 0 {
        let c = bits.bits(nbit) as u16;
        return Some((Code::One(c), vec![0; nn]));
    }
    if n > nn {
        return None;
    }
    let mut lengths = vec![0u8; nn];
    let mut i = 0;
    while i < n {
        let mut c = bits.peek(3);
        if c == 7 {
            let mut mask = 1u32 << 12;
            let window = bits.peek(16);
            while mask & window != 0 && c < 16 {
                mask >>= 1;
                c += 1;
            }
        }
        bits.skip(if c < 7 { 3 } else { c - 3 });
        lengths[i] = c as u8;
        i += 1;
        if Some(i) == special {
            let zeros = bits.bits(2) as usize;
            i = (i + zeros).min(nn);
        }
    }
    Some((Code::new(&lengths)?, lengths))
}

/// The literal/length code, its lengths coded with `pt`.
fn read_c(bits: &mut Bits<'_>, pt: &Code) -> Option<Code> {
    let n = bits.bits(9) as usize;
    if n == 0 {
        return Some(Code::One(bits.bits(9) as u16));
    }
    let mut lengths = vec![0u8; NC];
    let mut i = 0;
    while i < n.min(NC) {
        let c = pt.decode(bits)? as usize;
        if c <= 2 {
            let zeros = match c {
                0 => 1,
                1 => bits.bits(4) as usize + 3,
                _ => bits.bits(9) as usize + 20,
            };
            i = (i + zeros).min(NC);
        } else {
            lengths[i] = (c - 2) as u8;
            i += 1;
        }
    }
    Code::new(&lengths)
}

/// Methods 1 to 3.
fn huffman(data: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut bits = Bits::new(data);
    let mut out = Vec::with_capacity(size.min(1 << 20));
    let (mut left, mut c_code, mut p_code) = (0u32, Code::One(0), Code::One(0));
    while out.len() < size {
        if left == 0 {
            left = bits.bits(16);
            let (pt, _) = read_pt(&mut bits, NT, 5, Some(3))?;
            c_code = read_c(&mut bits, &pt)?;
            p_code = read_pt(&mut bits, NP, 5, None)?.0;
            if left == 0 || bits.overrun() {
                return None;
            }
        }
        left -= 1;
        let c = usize::from(c_code.decode(&mut bits)?);
        if c <= 255 {
            out.push(c as u8);
        } else {
            let len = c - (256 - THRESHOLD);
            let mut p = u32::from(p_code.decode(&mut bits)?);
            if p != 0 {
                p = (1 << (p - 1)) + bits.bits(p - 1);
            }
            copy(&mut out, p as usize + 1, len, size)?;
        }
        if bits.overrun() {
            return None;
        }
    }
    Some(out)
}

/// Method 4: lengths and positions in unary-prefixed widths.
fn fastest(data: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut bits = Bits::new(data);
    let mut out = Vec::with_capacity(size.min(1 << 20));
    let unary = |bits: &mut Bits<'_>, start: u32, stop: u32| {
        let (mut plus, mut pwr, mut width) = (0u32, 1u32 << start, start);
        while width < stop {
            if bits.bits(1) == 0 {
                break;
            }
            plus += pwr;
            pwr <<= 1;
            width += 1;
        }
        bits.bits(width) + plus
    };
    while out.len() < size {
        let c = unary(&mut bits, 0, 7) as usize;
        if c == 0 {
            out.push(bits.bits(8) as u8);
        } else {
            let len = c - 1 + THRESHOLD;
            let p = unary(&mut bits, 9, 13) as usize;
            copy(&mut out, p + 1, len, size)?;
        }
        if bits.overrun() {
            return None;
        }
    }
    Some(out)
}

/// Copies `len` bytes from `distance` back, up to `size` bytes in all.
fn copy(out: &mut Vec<u8>, distance: usize, len: usize, size: usize) -> Option<()> {
    if distance > out.len() {
        return None;
    }
    for _ in 0..len.min(size - out.len()) {
        out.push(out[out.len() - distance]);
    }
    Some(())
}
