//! UPX-packed Windows executables: the packed image is decompressed
//! (NRV2B, NRV2D or NRV2E, the methods UPX uses for 32-bit Windows) so
//! that what it packs is scanned. The image is not rebuilt into a runnable
//! executable; executables inside it are found by the embedded-executable
//! search of [`super::pe`].

use super::pe::Pe;
use super::u32le;

/// An LSB-word bit reader as UPX's 32-bit decoders use: 32-bit
/// little-endian words, bits taken from the top.
struct Src<'a> {
    data: &'a [u8],
    at: usize,
    word: u32,
    left: u32,
}

impl Src<'_> {
    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            self.word = u32le(self.data, self.at)? as u32;
            self.at += 4;
            self.left = 32;
        }
        self.left -= 1;
        Some((self.word >> self.left) & 1)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// `v = v*2 + bit` until a stop bit (the "gamma" code).
    fn gamma(&mut self, mut v: u32, nrv2b: bool) -> Option<u32> {
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit()?)?;
            if self.bit()? == 1 {
                return Some(v);
            }
            if !nrv2b {
                v = (v - 1).checked_mul(2)?.checked_add(self.bit()?)?;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    B,
    D,
    E,
}

/// Decompresses `src` with `method` into at most `cap` bytes; `None` when
/// the stream is not one (a bad offset, the input ends before the end
/// mark, or the output would pass `cap`).
fn decompress(src: &[u8], method: Method, cap: usize) -> Option<Vec<u8>> {
    let mut s = Src {
        data: src,
        at: 0,
        word: 0,
        left: 0,
    };
    let mut out: Vec<u8> = Vec::with_capacity(cap.min(1 << 20));
    let mut last_off: u32 = 1;
    loop {
        while s.bit()? == 1 {
            if out.len() >= cap {
                return None;
            }
            out.push(s.byte()?);
        }
        let nrv2b = method == Method::B;
        let m = s.gamma(1, nrv2b)?;
        let (off, mut len);
        if m == 2 {
            off = last_off;
            len = s.bit()?;
        } else {
            let v = (m - 3)
                .checked_mul(256)?
                .checked_add(u32::from(s.byte()?))?;
            if v == u32::MAX {
                return Some(out);
            }
            if nrv2b {
                off = v + 1;
                len = s.bit()?;
            } else {
                len = (v ^ u32::MAX) & 1;
                off = (v >> 1) + 1;
            }
            last_off = off;
        }
        match method {
            Method::B | Method::D => {
                len = len * 2 + s.bit()?;
                if len == 0 {
                    len = s.gamma(1, true)? + 2;
                }
            }
            Method::E => {
                if len == 1 {
                    len = 1 + s.bit()?;
                } else if s.bit()? == 1 {
                    len = 3 + s.bit()?;
                } else {
                    len = s.gamma(1, true)? + 3;
                }
            }
        }
        let far = if method == Method::B { 0xd00 } else { 0x500 };
        len += u32::from(off > far);
        let (off, len) = (off as usize, len as usize + 1);
        if off > out.len() || out.len() + len > cap {
            return None;
        }
        for _ in 0..len {
            out.push(out[out.len() - off]);
        }
    }
}

/// The image a UPX-packed executable unpacks to, if it can be unpacked:
/// the stub's `mov esi, imm32` at the entry point says where the packed
/// data starts; each method is tried, the first that ends at its end mark
/// wins. `cap` bounds the output.
pub fn unpack(pe: &Pe<'_>, cap: usize) -> Option<Vec<u8>> {
    let ep = pe.offset_of(pe.entry)?;
    let code = pe.data.get(ep..ep + 16)?;
    // pushad; mov esi, imm32
    let at = code.iter().position(|&b| b == 0xbe).filter(|&p| p < 8)?;
    let esi = u32le(code, at + 1)?;
    let start = pe.offset_of(esi.checked_sub(pe.image_base)?)?;
    let src = pe.data.get(start..)?;
    let image = [Method::B, Method::D, Method::E]
        .into_iter()
        .filter_map(|m| decompress(src, m, cap))
        .find(|out| out.len() > 64)?;
    let base = pe.sections.first()?.rva;
    Some(trim(image, base))
}

/// The image without what UPX stores after it (the import table it
/// rebuilds at run time and the original PE header): cut where the
/// original header's last section ends, when that header is found.
/// Executables at the end of the last section then end where they would
/// in the unpacked file.
fn trim(mut image: Vec<u8>, base: usize) -> Vec<u8> {
    let mut from = image.len();
    // The original header is near the end: the last `PE\0\0` that
    // parses.
    while let Some(at) = image[..from].windows(4).rposition(|w| w == b"PE\0\0") {
        from = at;
        let (Some(count), Some(opt_size)) =
            (super::u16le(&image, at + 6), super::u16le(&image, at + 20))
        else {
            continue;
        };
        let opt = at + 24;
        let align = u32le(&image, opt + 32).unwrap_or(0x1000).max(1);
        let table = opt + opt_size;
        let end = (0..count.min(96))
            .filter_map(|i| {
                let s = super::slice(&image, table + 40 * i, 40)?;
                let (vsize, rva) = (u32le(s, 8)?, u32le(s, 12)?);
                rva.checked_add(vsize.div_ceil(align).checked_mul(align)?)
            })
            .max();
        if let Some(end) = end.and_then(|e| e.checked_sub(base))
            && end > 0
            && end < at
        {
            image.truncate(end);
            return image;
        }
        if image.len() - at > 64 * 1024 {
            break;
        }
    }
    image
}
