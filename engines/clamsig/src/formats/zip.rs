//! PKZIP: members from the central directory, or by walking the local
//! headers of a streamed zip; stored, deflate, deflate64, bzip2, implode
//! and LZMA members. OOXML and ODF documents, JAR and APK files are zips.

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// One zip member as a directory entry describes it.
struct ZipEntry {
    name: String,
    flags: usize,
    method: usize,
    csize: usize,
    usize: usize,
    local: usize,
    /// Found by walking local headers, sizes in a trailing descriptor.
    streamed: bool,
}

/// Entries from the central directory, if there is one.
fn central_directory(data: &[u8]) -> Option<Vec<ZipEntry>> {
    // The end record is in the last 64 KiB + 22 bytes.
    let from = data.len().saturating_sub(65_557);
    let eocd = (from..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data.get(i..i + 4) == Some(b"PK\x05\x06"))?;
    let count = u16le(data, eocd + 10)?;
    let mut at = u32le(data, eocd + 16)?;
    let mut out = Vec::with_capacity(count.min(65_535));
    for _ in 0..count {
        if data.get(at..at.checked_add(4)?) != Some(b"PK\x01\x02") {
            return None;
        }
        let name_len = u16le(data, at.checked_add(28)?)?;
        let extra_len = u16le(data, at.checked_add(30)?)?;
        let comment_len = u16le(data, at.checked_add(32)?)?;
        let name_at = at.checked_add(46)?;
        out.push(ZipEntry {
            name: clean_name(data.get(name_at..name_at.checked_add(name_len)?)?),
            flags: u16le(data, at + 8)?,
            method: u16le(data, at + 10)?,
            csize: u32le(data, at + 20)?,
            usize: u32le(data, at + 24)?,
            local: u32le(data, at + 42)?,
            streamed: false,
        });
        at = name_at
            .checked_add(name_len)?
            .checked_add(extra_len)?
            .checked_add(comment_len)?;
    }
    Some(out)
}

/// The members of a zip: from the central directory when there is one,
/// else by walking the local headers (a streamed zip, whose deflated
/// members end where their deflate stream ends).
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    match central_directory(data) {
        Some(entries) => {
            for e in entries {
                if let Some(member) = zip_member(data, &e, budget)? {
                    out.push(member);
                }
            }
            Ok(())
        }
        None => walk_local_headers(data, budget, out),
    }
}

/// Where a member's data starts, from its local header.
fn data_start(data: &[u8], local: usize) -> Option<usize> {
    if data.get(local..local.checked_add(4)?) != Some(b"PK\x03\x04") {
        return None;
    }
    let name_len = u16le(data, local.checked_add(26)?)?;
    let extra_len = u16le(data, local.checked_add(28)?)?;
    local
        .checked_add(30)?
        .checked_add(name_len)?
        .checked_add(extra_len)
        .filter(|&at| at <= data.len())
}

/// One member by its directory entry; `None` for a directory.
fn zip_member(
    data: &[u8],
    e: &ZipEntry,
    budget: &mut Budget,
) -> Result<Option<(String, Vec<u8>)>, Stop> {
    if e.name.ends_with('/') {
        return Ok(None);
    }
    if e.flags & 0x0001 != 0 {
        return Err(Stop::Encrypted(e.name.clone()));
    }
    let Some(body) = data_start(data, e.local) else {
        return Err(Stop::Corrupt(format!(
            "{}: its local header at offset {} is not in the file",
            e.name, e.local
        )));
    };
    // A size past the end of the file (a lie, or a cut file): what is
    // there is scanned.
    let end = body.saturating_add(e.csize).min(data.len());
    let compressed = &data[body..end];
    let content = decode(e, compressed, budget)?;
    Ok(Some((e.name.clone(), content)))
}

/// Members found by walking local headers (no central directory).
fn walk_local_headers(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut at = 0usize;
    while data.get(at..at.saturating_add(4)) == Some(b"PK\x03\x04") {
        let (Some(flags), Some(method), Some(csize), Some(usize), Some(name_len), Some(body)) = (
            u16le(data, at + 6),
            u16le(data, at + 8),
            u32le(data, at + 18),
            u32le(data, at + 22),
            u16le(data, at + 26),
            data_start(data, at),
        ) else {
            return Err(Stop::Corrupt(format!(
                "local header at offset {at} is cut off"
            )));
        };
        let name = clean_name(data.get(at + 30..at + 30 + name_len).unwrap_or_default());
        let streamed = flags & 0x0008 != 0 && csize == 0;
        let e = ZipEntry {
            name: name.clone(),
            flags,
            method,
            csize,
            usize,
            local: at,
            streamed,
        };
        if !e.streamed {
            if let Some(member) = zip_member(data, &e, budget)? {
                out.push(member);
            }
            at = body.saturating_add(csize);
            continue;
        }
        // Sizes follow the data: only a deflate stream says where it ends.
        if flags & 0x0001 != 0 {
            return Err(Stop::Encrypted(name));
        }
        if method != 8 {
            return Err(Stop::Corrupt(format!(
                "{name}: streamed member (method {method}) with no central directory; its end cannot be found"
            )));
        }
        let (content, used) = budget.inflate_counting(&name, &data[body..])?;
        if !name.ends_with('/') {
            out.push((name, content));
        }
        // The data descriptor: optional signature, crc, sizes (32-bit).
        at = body.saturating_add(used);
        if data.get(at..at.saturating_add(4)) == Some(b"PK\x07\x08") {
            at = at.saturating_add(16);
        } else {
            at = at.saturating_add(12);
        }
    }
    Ok(())
}

/// A member's bytes, decompressed by its method.
fn decode(e: &ZipEntry, compressed: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Stop> {
    let name = &e.name;
    match e.method {
        0 => budget.stored(name, compressed),
        8 => budget.inflate(name, compressed),
        9 => budget.read_all(
            name,
            deflate64::Deflate64Decoder::new(compressed),
            compressed.len(),
        ),
        12 => budget.read_all(
            name,
            bzip2::read::BzDecoder::new(compressed),
            compressed.len(),
        ),
        6 => super::implode::explode(name, compressed, e.usize, e.flags, budget),
        14 => lzma(e, compressed, budget),
        other => Err(Stop::Unsupported(format!(
            "{name}: zip compression method {other}"
        ))),
    }
}

/// An LZMA member: a 4-byte LZMA SDK header (version, properties size),
/// the 5 properties bytes, then raw LZMA ending at the stored size or an
/// end marker.
fn lzma(e: &ZipEntry, compressed: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Stop> {
    let name = &e.name;
    let (Some(props_len), Some(props)) = (u16le(compressed, 2), compressed.get(4..9)) else {
        return Err(Stop::Corrupt(format!("{name}: LZMA header cut off")));
    };
    let Some(body) = compressed.get(4 + props_len..) else {
        return Err(Stop::Corrupt(format!("{name}: LZMA header cut off")));
    };
    let size = if e.flags & 0x0002 != 0 || e.usize == 0 {
        u64::MAX
    } else {
        e.usize as u64
    };
    super::sevenz::lzma_raw(name, body, props, size, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Kind, Limits, kind};

    /// A stored (method 0) zip with one member.
    fn stored_zip(name: &str, content: &[u8]) -> Vec<u8> {
        let mut z = b"PK\x03\x04".to_vec();
        z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        z.extend_from_slice(&[0; 4]); // crc (not checked)
        z.extend_from_slice(&(content.len() as u32).to_le_bytes());
        z.extend_from_slice(&(content.len() as u32).to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(content);
        z
    }

    #[test]
    fn zip_members_and_nesting_kinds() {
        let z = stored_zip("a/b.txt", b"hello");
        assert_eq!(kind(&z), Some(Kind::Zip));
        let mut b = Budget::new(Limits::default());
        assert_eq!(
            crate::archive::members_whole(&z, &mut b).unwrap(),
            vec![("a/b.txt".to_string(), b"hello".to_vec())]
        );
    }
}
