//! Single-stream compressors (gzip, bzip2, xz) and the simple archives
//! (tar, cpio).

use super::{clean_name, u16be, u16le};
use crate::archive::{Budget, Members, Stop};

/// The members of a gzip file: every gzip member in it (RFC 1952 allows
/// several, one after another), each inflated.
pub fn gzip(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut count = 0usize;
    let mut start = 0usize;
    while data
        .get(start..start.saturating_add(3))
        .is_some_and(|m| m == [0x1f, 0x8b, 0x08])
    {
        let member = &data[start..];
        let flags = *member.get(3).unwrap_or(&0);
        let mut at = 10usize;
        if flags & 0x04 != 0 {
            at = at.saturating_add(2 + u16le(member, at).unwrap_or(0));
        }
        count += 1;
        let mut name = if count == 1 {
            String::from("(gzip)")
        } else {
            format!("(gzip member {count})")
        };
        let nul_after = |from: usize| {
            member
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .map_or(member.len(), |p| from + p)
        };
        if flags & 0x08 != 0 {
            let end = nul_after(at);
            name = clean_name(member.get(at..end).unwrap_or_default());
            at = end.saturating_add(1);
        }
        if flags & 0x10 != 0 {
            at = nul_after(at).saturating_add(1);
        }
        if flags & 0x02 != 0 {
            at = at.saturating_add(2);
        }
        let body = member.get(at..).unwrap_or_default();
        let (content, used) = budget.inflate_counting(&name, body)?;
        out.push((name, content));
        // The trailer: CRC-32 and size, 8 bytes.
        start = start
            .saturating_add(at)
            .saturating_add(used)
            .saturating_add(8);
    }
    Ok(())
}

/// The members of a tar archive: regular files.
pub fn tar(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut at = 0usize;
    while let Some(h) = data.get(at..at.saturating_add(512)) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let mut name = clean_name(&h[..name_end]);
        if &h[257..262] == b"ustar" && h[345] != 0 {
            let pend = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
            name = format!("{}/{name}", clean_name(&h[345..345 + pend]));
        }
        let size = tar_size(&h[124..136])
            .ok_or_else(|| Stop::Corrupt(format!("{name}: tar size field is not a number")))?;
        let body = at + 512;
        let typeflag = h[156];
        // A size past the end (a lie, or a cut file): what is there is
        // scanned, and the walk ends, since nothing after it can be found.
        let end = body.checked_add(size).filter(|&e| e <= data.len());
        if matches!(typeflag, b'0' | 0) {
            let content = &data[body.min(data.len())..end.unwrap_or(data.len())];
            let content = budget.stored(&name, content)?;
            out.push((name, content));
        }
        let Some(next) = end.and_then(|_| body.checked_add(size.div_ceil(512).checked_mul(512)?))
        else {
            break;
        };
        at = next;
    }
    Ok(())
}

/// A tar size field: octal digits, or GNU's base-256 (high bit set);
/// `None` when it is neither. Sizes past `usize` saturate.
fn tar_size(field: &[u8]) -> Option<usize> {
    if field[0] & 0x80 != 0 {
        let mut v: usize = 0;
        for &b in &field[1..] {
            v = v.saturating_mul(256).saturating_add(usize::from(b));
        }
        return Some(v);
    }
    let digits = std::str::from_utf8(field)
        .ok()?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    let mut v: usize = 0;
    for c in digits.chars() {
        let d = c.to_digit(8)? as usize;
        v = v.saturating_mul(8).saturating_add(d);
    }
    Some(v)
}

/// A bzip2 file (one or more streams, one after another): one member.
pub fn bzip2(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let content = budget.read_all(
        "(bzip2)",
        bzip2::read::MultiBzDecoder::new(data),
        data.len(),
    )?;
    out.push(("(bzip2)".into(), content));
    Ok(())
}

/// Memory the xz and LZMA decoders may take for their dictionary.
pub const DICT_LIMIT_KIB: u32 = 64 * 1024;

/// An xz file (one or more streams): one member. A dictionary larger than
/// [`DICT_LIMIT_KIB`] is a limit, not an allocation.
pub fn xz(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let reader = lzma_rust2::XzReader::new_mem_limit(data, true, DICT_LIMIT_KIB);
    let content = budget
        .read_all("(xz)", reader, data.len())
        .map_err(|e| match e {
            Stop::Corrupt(why) if why.contains("memory") => Stop::Limits(format!(
                "xz dictionary larger than {} MiB",
                DICT_LIMIT_KIB / 1024
            )),
            other => other,
        })?;
    out.push(("(xz)".into(), content));
    Ok(())
}

/// A cpio archive in any of its four header forms (old binary in either
/// byte order, odc, newc and crc): regular files, until `TRAILER!!!`.
pub fn cpio(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut count = 0usize;
    let mut at = 0usize;
    loop {
        let Some(h) = cpio_header(data, at) else {
            if at < data.len() && data[at..].iter().any(|&b| b != 0) && count == 0 {
                return Err(Stop::Corrupt(format!(
                    "cpio header at offset {at} unreadable"
                )));
            }
            break;
        };
        let name = clean_name(
            data.get(h.name_at..h.name_at.saturating_add(h.name_len.saturating_sub(1)))
                .unwrap_or_default(),
        );
        if name == "TRAILER!!!" {
            break;
        }
        let body = align(h.name_at.saturating_add(h.name_len), h.align);
        let end = body.checked_add(h.size).filter(|&e| e <= data.len());
        // Regular files only (S_IFREG); a size past the end is scanned as
        // far as it goes, and the walk ends there.
        if h.mode & 0o170000 == 0o100000 {
            let content = &data[body.min(data.len())..end.unwrap_or(data.len())];
            let content = budget.stored(&name, content)?;
            out.push((name, content));
            count += 1;
        }
        let Some(end) = end else { break };
        let next = align(end, h.align);
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(())
}

struct CpioHeader {
    mode: usize,
    size: usize,
    name_at: usize,
    name_len: usize,
    align: usize,
}

fn align(at: usize, to: usize) -> usize {
    at.div_ceil(to).saturating_mul(to)
}

fn cpio_header(d: &[u8], at: usize) -> Option<CpioHeader> {
    let h = d.get(at..)?;
    let octal = |from: usize, len: usize| -> Option<usize> {
        usize::from_str_radix(std::str::from_utf8(h.get(from..from + len)?).ok()?, 8).ok()
    };
    let hex = |from: usize| -> Option<usize> {
        usize::from_str_radix(std::str::from_utf8(h.get(from..from + 8)?).ok()?, 16).ok()
    };
    if h.starts_with(b"070701") || h.starts_with(b"070702") {
        return Some(CpioHeader {
            mode: hex(14)?,
            size: hex(54)?,
            name_len: hex(94)?,
            name_at: at.checked_add(110)?,
            align: 4,
        });
    }
    if h.starts_with(b"070707") {
        return Some(CpioHeader {
            mode: octal(18, 6)?,
            name_len: octal(59, 6)?,
            size: octal(65, 11)?,
            name_at: at.checked_add(76)?,
            align: 1,
        });
    }
    // Old binary: 13 16-bit words in the writer's byte order.
    let word: fn(&[u8], usize) -> Option<usize> = if h.starts_with(&[0xc7, 0x71]) {
        u16le
    } else if h.starts_with(&[0x71, 0xc7]) {
        u16be
    } else {
        return None;
    };
    let size = (word(h, 22)? << 16) | word(h, 24)?;
    Some(CpioHeader {
        mode: word(h, 6)?,
        name_len: word(h, 20)?,
        size,
        name_at: at.checked_add(26)?,
        align: 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Limits;

    #[test]
    fn newc_cpio_members_until_the_trailer() {
        fn entry(name: &str, mode: u32, body: &[u8]) -> Vec<u8> {
            let mut e = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0, mode, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name.len() + 1, 0
            )
            .into_bytes();
            e.extend_from_slice(name.as_bytes());
            e.push(0);
            while e.len() % 4 != 0 {
                e.push(0);
            }
            e.extend_from_slice(body);
            while e.len() % 4 != 0 {
                e.push(0);
            }
            e
        }
        let mut a = entry("dir", 0o040755, b"");
        a.extend(entry("dir/x.bin", 0o100644, b"hello"));
        a.extend(entry("TRAILER!!!", 0, b""));
        a.extend(entry("after", 0o100644, b"never"));
        let mut b = Budget::new(Limits::default());
        assert_eq!(
            crate::archive::members_whole(&a, &mut b).unwrap(),
            vec![("dir/x.bin".into(), b"hello".to_vec())]
        );
    }
}
