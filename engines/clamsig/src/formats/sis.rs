//! Symbian installation files (EPOC SIS, releases 3 to 6): each file
//! record's data, zlib-packed unless the package says otherwise.

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// Whether `data` is an EPOC SIS file: its third UID.
pub fn starts(data: &[u8]) -> bool {
    u32le(data, 8) == Some(0x1000_0419) && matches!(u32le(data, 4), Some(0x1000_006d | 0x1000_3a12))
}

/// File records one package may hold, at most.
const MAX_RECORDS: usize = 10_000;

/// The members: every file of every language.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let corrupt = |what: &str| Stop::Corrupt(format!("SIS {what}"));
    let release6 = u32le(data, 4) == Some(0x1000_3a12);
    let (Some(langs), Some(files), Some(flags), Some(mut at)) = (
        u16le(data, 18),
        u16le(data, 20),
        u16le(data, 36),
        u32le(data, 52),
    ) else {
        return Err(corrupt("header cut off"));
    };
    let langs = langs.max(1);
    if files > MAX_RECORDS || langs > 100 {
        return Err(Stop::Limits(format!(
            "SIS with {files} records in {langs} languages"
        )));
    }
    let compressed = flags & 0x0008 == 0;
    for _ in 0..files {
        let kind = u32le(data, at).ok_or_else(|| corrupt("record cut off"))?;
        at += 4;
        match kind {
            // A simple file, or one per language.
            0 | 1 => {
                let per = if kind == 0 { 1 } else { langs };
                let name_len = u32le(data, at + 12).unwrap_or(0);
                let name_ptr = u32le(data, at + 16).unwrap_or(0);
                let name = super::slice(data, name_ptr, name_len)
                    .map(|n| {
                        clean_name(&n.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>())
                    })
                    .unwrap_or_else(|| format!("(SIS file {})", out.len() + 1));
                at += 24;
                let lens: Vec<usize> = (0..per).filter_map(|i| u32le(data, at + 4 * i)).collect();
                at += 4 * per;
                let ptrs: Vec<usize> = (0..per).filter_map(|i| u32le(data, at + 4 * i)).collect();
                at += 4 * per;
                if release6 {
                    // Original lengths, then the MIME type (counted).
                    at += 4 * per + 8;
                }
                for (len, ptr) in lens.into_iter().zip(ptrs) {
                    let Some(stored) = super::slice(data, ptr, len) else {
                        return Err(corrupt(&format!("{name}: data past the end")));
                    };
                    let content = if compressed {
                        budget.inflate_zlib(&name, stored)?
                    } else {
                        budget.stored(&name, stored)?
                    };
                    out.push((name.clone(), content));
                }
            }
            // Options: per option, a name per language; then 16 bytes.
            2 => {
                let n = u32le(data, at).ok_or_else(|| corrupt("options cut off"))?;
                at = at
                    .checked_add(4)
                    .and_then(|a| a.checked_add(n.checked_mul(langs)?.checked_mul(8)?))
                    .and_then(|a| a.checked_add(16))
                    .ok_or_else(|| corrupt("options too long"))?;
            }
            // If and else-if: a counted expression.
            3 | 4 => {
                let n = u32le(data, at).ok_or_else(|| corrupt("condition cut off"))?;
                at = at
                    .checked_add(4 + n)
                    .ok_or_else(|| corrupt("condition too long"))?;
            }
            5 | 6 => {}
            other => return Err(corrupt(&format!("record type {other}"))),
        }
    }
    Ok(())
}
