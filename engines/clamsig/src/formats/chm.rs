//! Compiled HTML Help (CHM, `ITSF`): the files its directory lists, those
//! of section 0 stored, those of section 1 in one LZX stream (with the
//! `lzxd` crate) cut into 32 KiB frames by the reset table.

use super::{clean_name, u32le};
use crate::archive::{Budget, Members, Stop};

/// Directory entries one file may hold, at most.
const MAX_ENTRIES: usize = 100_000;
const FRAME: usize = 0x8000;

fn u64le(d: &[u8], at: usize) -> Option<usize> {
    let v = u64::from_le_bytes(super::slice(d, at, 8)?.try_into().ok()?);
    usize::try_from(v).ok()
}

/// A directory entry: name, section, offset, length.
struct Entry {
    name: String,
    section: usize,
    offset: usize,
    length: usize,
}

/// A variable-length integer: 7 bits a byte, high bit set on all but the
/// last.
fn encint(d: &[u8], at: &mut usize) -> Option<usize> {
    let mut v: usize = 0;
    for _ in 0..9 {
        let b = *d.get(*at)?;
        *at += 1;
        v = v.checked_mul(128)?.checked_add(usize::from(b & 0x7f))?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn directory(data: &[u8]) -> Option<(Vec<Entry>, usize)> {
    let version = u32le(data, 4)?;
    let dir = u64le(data, 0x48)?;
    let dir_len = u64le(data, 0x50)?;
    let content = if version >= 3 {
        u64le(data, 0x58)?
    } else {
        dir.checked_add(dir_len)?
    };
    if super::slice(data, dir, 4)? != b"ITSP" {
        return None;
    }
    let header = u32le(data, dir + 8)?;
    let chunk = u32le(data, dir + 0x10)?;
    let chunks = u32le(data, dir + 0x2c)?;
    if chunk < 0x20 {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..chunks {
        let start = dir
            .checked_add(header)?
            .checked_add(i.checked_mul(chunk)?)?;
        let Some(c) = super::slice(data, start, chunk) else {
            break;
        };
        if &c[..4] != b"PMGL" {
            continue;
        }
        let end = chunk.saturating_sub(u32le(c, 4)?);
        let mut at = 0x14;
        while at < end && out.len() < MAX_ENTRIES {
            let len = encint(c, &mut at)?;
            let name = clean_name(super::slice(c, at, len)?);
            at += len;
            let section = encint(c, &mut at)?;
            let offset = encint(c, &mut at)?;
            let length = encint(c, &mut at)?;
            out.push(Entry {
                name,
                section,
                offset,
                length,
            });
        }
    }
    Some((out, content))
}

/// The members of a CHM file: every file with data but the container's
/// own bookkeeping (`::DataSpace/...`).
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let corrupt = |what: &str| Stop::Corrupt(format!("CHM {what}"));
    let (entries, content) = directory(data).ok_or_else(|| corrupt("directory unreadable"))?;
    let section0 = |e: &Entry| {
        content
            .checked_add(e.offset)
            .and_then(|at| super::slice(data, at, e.length))
    };
    let find = |suffix: &str| {
        entries
            .iter()
            .find(|e| e.name.ends_with(suffix) && e.section == 0)
    };
    let mut stream: Option<Vec<u8>> = None;
    let needed = entries
        .iter()
        .filter(|e| e.section == 1)
        .filter_map(|e| e.offset.checked_add(e.length))
        .max()
        .unwrap_or(0);
    if needed > 0 {
        let (Some(content), Some(control), Some(table)) = (
            find("MSCompressed/Content").and_then(section0),
            find("MSCompressed/ControlData").and_then(section0),
            find("InstanceData/ResetTable").and_then(section0),
        ) else {
            return Err(corrupt("compressed section without its tables"));
        };
        budget.fits("(CHM)", needed as u64, content.len())?;
        stream = Some(
            lzx(content, control, table, needed).ok_or_else(|| corrupt("LZX data is damaged"))?,
        );
    }
    for e in &entries {
        if e.length == 0 || e.name.starts_with("::") || e.name.ends_with('/') {
            continue;
        }
        let bytes = match e.section {
            0 => section0(e),
            _ => stream
                .as_deref()
                .and_then(|s| super::slice(s, e.offset, e.length)),
        };
        let Some(bytes) = bytes else {
            return Err(corrupt(&format!("{}: data past the end", e.name)));
        };
        let content = budget.stored(&e.name, bytes)?;
        out.push((e.name.clone(), content));
    }
    Ok(())
}

/// Decompresses the first `needed` bytes of section 1.
fn lzx(content: &[u8], control: &[u8], table: &[u8], needed: usize) -> Option<Vec<u8>> {
    if super::slice(control, 4, 4)? != b"LZXC" {
        return None;
    }
    let version = u32le(control, 8)?;
    let (mut reset, mut window) = (u32le(control, 12)?, u32le(control, 16)?);
    if version == 2 {
        reset = reset.checked_mul(FRAME)?;
        window = window.checked_mul(FRAME)?;
    }
    let window = match window {
        0x8000 => lzxd::WindowSize::KB32,
        0x10000 => lzxd::WindowSize::KB64,
        0x20000 => lzxd::WindowSize::KB128,
        0x40000 => lzxd::WindowSize::KB256,
        0x80000 => lzxd::WindowSize::KB512,
        0x100000 => lzxd::WindowSize::MB1,
        0x200000 => lzxd::WindowSize::MB2,
        _ => return None,
    };
    let frames_per_reset = (reset / FRAME).max(1);
    let count = u32le(table, 4)?;
    let entry = u32le(table, 8)?;
    let start = u32le(table, 12)?;
    let total = u64le(table, 16)?;
    let offsets: Vec<usize> = (0..count.min(1 << 20))
        .map_while(|i| u64le(table, start.checked_add(i.checked_mul(entry)?)?))
        .collect();
    let mut lzx = lzxd::Lzxd::new(window);
    let mut out = Vec::with_capacity(needed.min(1 << 24));
    for (i, &from) in offsets.iter().enumerate() {
        if out.len() >= needed {
            break;
        }
        if i > 0 && i % frames_per_reset == 0 {
            lzx.reset();
        }
        let to = offsets
            .get(i + 1)
            .copied()
            .unwrap_or(content.len())
            .min(content.len());
        let chunk = content.get(from..to)?;
        let len = FRAME.min(total.saturating_sub(out.len()));
        let frame = lzx.decompress_next(chunk, len).ok()?;
        out.extend_from_slice(frame);
    }
    (out.len() >= needed).then_some(out)
}
