//! Archives inside attachments: zip (stored and deflate), gzip and tar,
//! nested to a bounded depth.
//!
//! The readers are small and written for hostile input: sizes in headers
//! are never trusted. Every member is inflated with an output cap that is
//! the smallest of the per-member limit, what is left of the per-message
//! budget, and the compressed size times the ratio limit; going past any of
//! them stops extraction with [`Stop::Limits`], which the engine reports as
//! `unscannable(limits-exceeded)`. A zip bomb is therefore a bounded amount
//! of work, not a hang.
//!
//! Every offset and length read from an archive is added with checked
//! arithmetic (the engine runs in 32-bit WebAssembly, where a 4 GiB size
//! wraps), and a member the walk cannot reach is never skipped in silence:
//! its bytes are scanned as far as they go, or extraction stops with
//! [`Stop::Corrupt`] and the part is `unscannable(corrupt)`.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// Bounds on extraction for one message part.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Archives inside archives, counting the outermost as 1.
    pub max_depth: u32,
    /// Bytes one member may inflate to.
    pub max_member_bytes: usize,
    /// Bytes all members together may inflate to.
    pub max_total_bytes: usize,
    /// Inflated size over compressed size.
    pub max_ratio: usize,
    /// Members extracted in all.
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 5,
            max_member_bytes: 25 << 20,
            max_total_bytes: 100 << 20,
            max_ratio: 250,
            max_members: 10_000,
        }
    }
}

/// Why extraction stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A limit was reached; the text says which.
    Limits(String),
    /// A member is encrypted.
    Encrypted(String),
    /// A member uses a compression method this reader lacks (bzip2,
    /// deflate64, implode, ...): it cannot be scanned, which is said, not
    /// skipped.
    Unsupported(String),
    /// The archive's structure cannot be walked to a member (an offset
    /// past the end, a streamed member whose end cannot be found): the
    /// member cannot be scanned, which is said, not skipped.
    Corrupt(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Limits(why) => write!(f, "limit reached: {why}"),
            Stop::Encrypted(member) => write!(f, "encrypted member {member}"),
            Stop::Unsupported(what) => write!(f, "cannot unpack {what}"),
            Stop::Corrupt(what) => write!(f, "damaged archive: {what}"),
        }
    }
}

/// The kind of archive `data` is, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PKZIP.
    Zip,
    /// gzip.
    Gzip,
    /// POSIX tar.
    Tar,
}

/// Recognises an archive by content.
pub fn kind(data: &[u8]) -> Option<Kind> {
    if data.starts_with(b"PK\x03\x04") {
        Some(Kind::Zip)
    } else if data.starts_with(&[0x1f, 0x8b, 0x08]) {
        Some(Kind::Gzip)
    } else if data.len() >= 512 && &data[257..262] == b"ustar" {
        Some(Kind::Tar)
    } else {
        None
    }
}

/// Extraction state shared across one part's archives.
pub struct Budget {
    limits: Limits,
    used_bytes: usize,
    members: usize,
}

impl Budget {
    /// A fresh budget.
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            used_bytes: 0,
            members: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn take(&mut self, name: &str, bytes: usize) -> Result<(), Stop> {
        self.members += 1;
        if self.members > self.limits.max_members {
            return Err(Stop::Limits(format!(
                "more than {} archive members",
                self.limits.max_members
            )));
        }
        self.used_bytes += bytes;
        if self.used_bytes > self.limits.max_total_bytes {
            return Err(Stop::Limits(format!(
                "archives inflate to more than {} bytes (at {name})",
                self.limits.max_total_bytes
            )));
        }
        Ok(())
    }

    /// Inflates raw deflate data under every limit.
    fn inflate(&mut self, name: &str, compressed: &[u8]) -> Result<Vec<u8>, Stop> {
        self.inflate_counting(name, compressed).map(|(v, _)| v)
    }

    /// Inflates the raw deflate stream at the start of `compressed` under
    /// every limit; also returns how many input bytes the stream took, so
    /// that what follows it (another gzip member, a zip data descriptor)
    /// can be found. Damaged data gives what could be inflated, and the
    /// whole input as taken.
    fn inflate_counting(
        &mut self,
        name: &str,
        compressed: &[u8],
    ) -> Result<(Vec<u8>, usize), Stop> {
        let l = self.limits;
        let cap = l
            .max_member_bytes
            .min(l.max_total_bytes.saturating_sub(self.used_bytes))
            .min(compressed.len().saturating_mul(l.max_ratio).max(4096));
        let mut r = DecompressorOxide::new();
        let mut out = vec![0u8; cap.clamp(1, 64 * 1024)];
        let (mut in_pos, mut out_pos) = (0usize, 0usize);
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            let (status, used, written) =
                decompress(&mut r, &compressed[in_pos..], &mut out, out_pos, flags);
            in_pos += used;
            out_pos += written;
            match status {
                TINFLStatus::Done => break,
                TINFLStatus::HasMoreOutput => {
                    if out.len() >= cap {
                        return Err(Stop::Limits(format!(
                            "{name} inflates past {cap} bytes (member size, total or ratio {}:1 limit)",
                            l.max_ratio
                        )));
                    }
                    let grown = out.len().saturating_mul(2).min(cap);
                    out.resize(grown, 0);
                }
                // Damaged or cut short: extract what there is and move
                // on, as scanners do; the bytes still get scanned.
                _ => {
                    in_pos = compressed.len();
                    break;
                }
            }
        }
        out.truncate(out_pos);
        self.take(name, out.len())?;
        Ok((out, in_pos))
    }
}

fn u16le(d: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?) as usize)
}
fn u32le(d: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// One zip member as a directory entry describes it.
struct ZipEntry {
    name: String,
    flags: usize,
    method: usize,
    csize: usize,
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
            name: String::from_utf8_lossy(data.get(name_at..name_at.checked_add(name_len)?)?)
                .into_owned(),
            flags: u16le(data, at + 8)?,
            method: u16le(data, at + 10)?,
            csize: u32le(data, at + 20)?,
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
fn zip(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    match central_directory(data) {
        Some(entries) => {
            let mut out = Vec::new();
            for e in entries {
                if let Some(member) = zip_member(data, &e, budget)? {
                    out.push(member);
                }
            }
            Ok(out)
        }
        None => walk_local_headers(data, budget),
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
    let content = match e.method {
        0 => {
            budget.take(&e.name, compressed.len())?;
            compressed.to_vec()
        }
        8 => budget.inflate(&e.name, compressed)?,
        other => {
            return Err(Stop::Unsupported(format!(
                "{}: zip compression method {other}",
                e.name
            )));
        }
    };
    Ok(Some((e.name.clone(), content)))
}

/// Members found by walking local headers (no central directory).
fn walk_local_headers(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.get(at..at.saturating_add(4)) == Some(b"PK\x03\x04") {
        let (Some(flags), Some(method), Some(csize), Some(name_len), Some(body)) = (
            u16le(data, at + 6),
            u16le(data, at + 8),
            u32le(data, at + 18),
            u16le(data, at + 26),
            data_start(data, at),
        ) else {
            return Err(Stop::Corrupt(format!(
                "local header at offset {at} is cut off"
            )));
        };
        let name =
            String::from_utf8_lossy(data.get(at + 30..at + 30 + name_len).unwrap_or_default())
                .into_owned();
        let streamed = flags & 0x0008 != 0 && csize == 0;
        let e = ZipEntry {
            name: name.clone(),
            flags,
            method,
            csize,
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
    Ok(out)
}

/// The members of a gzip file: every gzip member in it (RFC 1952 allows
/// several, one after another), each inflated.
fn gzip(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let mut out = Vec::new();
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
        let mut name = if out.is_empty() {
            String::from("(gzip)")
        } else {
            format!("(gzip member {})", out.len() + 1)
        };
        let nul_after = |from: usize| {
            member
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .map_or(member.len(), |p| from + p)
        };
        if flags & 0x08 != 0 {
            let end = nul_after(at);
            name = String::from_utf8_lossy(member.get(at..end).unwrap_or_default()).into_owned();
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
    Ok(out)
}

fn tar(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = data.get(at..at.saturating_add(512)) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let mut name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        if &h[257..262] == b"ustar" && h[345] != 0 {
            let pend = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
            name = format!("{}/{name}", String::from_utf8_lossy(&h[345..345 + pend]));
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
            budget.take(&name, content.len())?;
            out.push((name, content.to_vec()));
        }
        let Some(next) = end.and_then(|_| body.checked_add(size.div_ceil(512).checked_mul(512)?))
        else {
            break;
        };
        at = next;
    }
    Ok(out)
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

/// The members of the archive `data`, if it is one.
pub fn members(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    match kind(data) {
        Some(Kind::Zip) => zip(data, budget),
        Some(Kind::Gzip) => gzip(data, budget),
        Some(Kind::Tar) => tar(data, budget),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            members(&z, &mut b).unwrap(),
            vec![("a/b.txt".to_string(), b"hello".to_vec())]
        );
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_ratio_limit() {
        let zeros = vec![0u8; 50 << 20];
        let packed = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        assert!(packed.len() < 100_000);
        let mut b = Budget::new(Limits::default());
        match b.inflate("bomb", &packed) {
            Err(Stop::Limits(why)) => assert!(why.contains("bomb inflates past"), "{why}"),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn member_count_and_total_limits() {
        let mut b = Budget::new(Limits {
            max_members: 1,
            ..Limits::default()
        });
        b.take("one", 1).unwrap();
        assert!(matches!(b.take("two", 1), Err(Stop::Limits(_))));
        let mut b = Budget::new(Limits {
            max_total_bytes: 10,
            ..Limits::default()
        });
        assert!(matches!(b.take("big", 11), Err(Stop::Limits(_))));
    }
}
