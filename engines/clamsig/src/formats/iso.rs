//! Disc images (`.iso`, `.img`: a common carrier of mail malware): the
//! files of an ISO 9660 directory tree, walked with an explicit queue,
//! every directory once. A UDF image without an ISO 9660 bridge is
//! unsupported, and said so.

use std::collections::BTreeSet;

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// Where the volume descriptors start (sector 16 of 2048 bytes).
const DESCRIPTORS: usize = 0x8000;

/// Directories one image may hold, at most.
const MAX_DIRECTORIES: usize = 10_000;

/// Whether `data` is a disc image: an ISO 9660 or UDF volume descriptor
/// at sector 16.
pub fn starts(data: &[u8]) -> bool {
    matches!(
        data.get(DESCRIPTORS + 1..DESCRIPTORS + 6),
        Some(b"CD001" | b"BEA01")
    )
}

/// The members of a disc image: every file, by its path.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    // The primary volume descriptor: type 1, among the descriptors.
    let pvd = (0..32)
        .map(|i| DESCRIPTORS + i * 2048)
        .take_while(|&at| data.get(at + 1..at + 6).is_some())
        .find(|&at| data[at] == 1 && &data[at + 1..at + 6] == b"CD001");
    let Some(pvd) = pvd else {
        return Err(Stop::Unsupported(
            "a UDF disc image without an ISO 9660 directory".into(),
        ));
    };
    let corrupt = |what: &str| Stop::Corrupt(format!("ISO 9660 {what}"));
    let block = u16le(data, pvd + 128)
        .filter(|&b| b >= 512)
        .ok_or_else(|| corrupt("block size"))?;
    let root = pvd + 156;
    let (Some(lba), Some(size)) = (u32le(data, root + 2), u32le(data, root + 10)) else {
        return Err(corrupt("root directory record cut off"));
    };
    let mut queue = vec![(String::new(), lba, size)];
    let mut seen = BTreeSet::new();
    while let Some((path, lba, size)) = queue.pop() {
        if !seen.insert(lba) {
            continue;
        }
        if seen.len() > MAX_DIRECTORIES {
            return Err(Stop::Limits(format!(
                "more than {MAX_DIRECTORIES} directories in a disc image"
            )));
        }
        let start = lba
            .checked_mul(block)
            .ok_or_else(|| corrupt("directory offset"))?;
        let Some(dir) = super::slice(data, start, size.min(data.len().saturating_sub(start)))
        else {
            return Err(corrupt("directory past the end"));
        };
        let mut at = 0usize;
        while at < dir.len() {
            let len = usize::from(dir[at]);
            if len == 0 {
                // Records do not cross sectors: the next one starts the
                // next sector.
                at = (at / block + 1) * block;
                continue;
            }
            let Some(rec) = dir.get(at..at + len) else {
                break;
            };
            at += len;
            let (Some(lba), Some(size), Some(&flags), Some(&name_len)) =
                (u32le(rec, 2), u32le(rec, 10), rec.get(25), rec.get(32))
            else {
                continue;
            };
            let raw = rec.get(33..33 + usize::from(name_len)).unwrap_or_default();
            // The directory itself and its parent.
            if raw == [0] || raw == [1] {
                continue;
            }
            let name = clean_name(raw);
            let name = name.split(';').next().unwrap_or_default();
            let full = format!("{path}/{name}");
            if flags & 0x02 != 0 {
                queue.push((full, lba, size));
                continue;
            }
            let from = lba
                .checked_mul(block)
                .ok_or_else(|| corrupt("file offset"))?;
            let Some(content) =
                data.get(from.min(data.len())..from.saturating_add(size).min(data.len()))
            else {
                continue;
            };
            let content = budget.stored(&full, content)?;
            out.push((full, content));
        }
    }
    Ok(())
}
