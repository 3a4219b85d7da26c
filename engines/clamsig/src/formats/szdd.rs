//! MS-DOS `COMPRESS.EXE` files (SZDD, `FILE.EX_`): LZSS with a 4 KiB
//! window that starts filled with spaces.

use super::u32le;
use crate::archive::{Budget, Members, Stop};

/// The one member of an SZDD file.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let name = "(SZDD)";
    let size = u32le(data, 10).ok_or_else(|| Stop::Corrupt("SZDD header cut off".into()))?;
    budget.fits(name, size as u64, data.len())?;
    let mut window = [b' '; 4096];
    let mut pos = 4096 - 16;
    let mut plain = Vec::with_capacity(size.min(1 << 20));
    let mut i = 14usize;
    'plainer: while i < data.len() && plain.len() < size {
        let control = data[i];
        i += 1;
        for bit in 0..8 {
            if plain.len() >= size {
                break 'plainer;
            }
            if control & (1 << bit) != 0 {
                let Some(&b) = data.get(i) else {
                    break 'plainer;
                };
                i += 1;
                plain.push(b);
                window[pos] = b;
                pos = (pos + 1) & 4095;
            } else {
                let (Some(&lo), Some(&hi)) = (data.get(i), data.get(i + 1)) else {
                    break 'plainer;
                };
                i += 2;
                let mut from = usize::from(lo) | (usize::from(hi & 0xf0) << 4);
                for _ in 0..(usize::from(hi & 0x0f) + 3) {
                    let b = window[from];
                    plain.push(b);
                    window[pos] = b;
                    pos = (pos + 1) & 4095;
                    from = (from + 1) & 4095;
                }
            }
        }
    }
    plain.truncate(size);
    budget.take(name, plain.len())?;
    out.push((name.into(), plain));
    Ok(())
}
