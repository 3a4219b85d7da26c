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

use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_with_limit};

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
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Limits(why) => write!(f, "limit reached: {why}"),
            Stop::Encrypted(member) => write!(f, "encrypted member {member}"),
            Stop::Unsupported(what) => write!(f, "cannot unpack {what}"),
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
        let l = self.limits;
        let cap = l
            .max_member_bytes
            .min(l.max_total_bytes.saturating_sub(self.used_bytes))
            .min(compressed.len().saturating_mul(l.max_ratio).max(4096));
        match decompress_to_vec_with_limit(compressed, cap) {
            Ok(v) => {
                self.take(name, v.len())?;
                Ok(v)
            }
            Err(e) if e.status == TINFLStatus::HasMoreOutput => Err(Stop::Limits(format!(
                "{name} inflates past {cap} bytes (member size, total or ratio {}:1 limit)",
                l.max_ratio
            ))),
            // Damaged data: extract what there is and move on, as scanners
            // do; the bytes still get scanned.
            Err(e) => {
                self.take(name, e.output.len())?;
                Ok(e.output)
            }
        }
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
        if data.get(at..at + 4) != Some(b"PK\x01\x02") {
            return None;
        }
        let name_len = u16le(data, at + 28)?;
        let extra_len = u16le(data, at + 30)?;
        let comment_len = u16le(data, at + 32)?;
        out.push(ZipEntry {
            name: String::from_utf8_lossy(data.get(at + 46..at + 46 + name_len)?).into_owned(),
            flags: u16le(data, at + 8)?,
            method: u16le(data, at + 10)?,
            csize: u32le(data, at + 20)?,
            local: u32le(data, at + 42)?,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(out)
}

/// Entries found by walking local headers (no central directory).
fn local_headers(data: &[u8]) -> Vec<ZipEntry> {
    let mut out = Vec::new();
    let mut at = 0;
    while data.get(at..at + 4) == Some(b"PK\x03\x04") {
        let (Some(flags), Some(method), Some(csize), Some(name_len), Some(extra_len)) = (
            u16le(data, at + 6),
            u16le(data, at + 8),
            u32le(data, at + 18),
            u16le(data, at + 26),
            u16le(data, at + 28),
        ) else {
            break;
        };
        let name =
            String::from_utf8_lossy(data.get(at + 30..at + 30 + name_len).unwrap_or_default())
                .into_owned();
        out.push(ZipEntry {
            name,
            flags,
            method,
            csize,
            local: at,
        });
        if flags & 0x0008 != 0 && csize == 0 {
            // Size only in a trailing descriptor and no directory: the
            // walk cannot go on past this member.
            break;
        }
        at += 30 + name_len + extra_len + csize;
    }
    out
}

/// The members of a zip.
fn zip(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let entries = central_directory(data).unwrap_or_else(|| local_headers(data));
    let mut out = Vec::new();
    for e in entries {
        if e.name.ends_with('/') {
            continue;
        }
        if e.flags & 0x0001 != 0 {
            return Err(Stop::Encrypted(e.name));
        }
        let (Some(name_len), Some(extra_len)) =
            (u16le(data, e.local + 26), u16le(data, e.local + 28))
        else {
            continue;
        };
        let body = e.local + 30 + name_len + extra_len;
        let Some(compressed) = data.get(body..body.saturating_add(e.csize)) else {
            continue;
        };
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
        out.push((e.name, content));
    }
    Ok(out)
}

fn gzip(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let flags = *data.get(3).unwrap_or(&0);
    let mut at = 10;
    if flags & 0x04 != 0 {
        at += 2 + u16le(data, at).unwrap_or(0);
    }
    let mut name = String::from("(gzip)");
    if flags & 0x08 != 0 {
        let end = data[at.min(data.len())..]
            .iter()
            .position(|&b| b == 0)
            .map_or(data.len(), |p| at + p);
        name = String::from_utf8_lossy(data.get(at..end).unwrap_or_default()).into_owned();
        at = end + 1;
    }
    if flags & 0x10 != 0 {
        at = data[at.min(data.len())..]
            .iter()
            .position(|&b| b == 0)
            .map_or(data.len(), |p| at + p + 1);
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    let body = data.get(at..).unwrap_or_default();
    Ok(vec![(name.clone(), budget.inflate(&name, body)?)])
}

fn tar(data: &[u8], budget: &mut Budget) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = data.get(at..at + 512) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let mut name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        if &h[257..262] == b"ustar" && h[345] != 0 {
            let pend = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
            name = format!("{}/{name}", String::from_utf8_lossy(&h[345..345 + pend]));
        }
        let size_field = std::str::from_utf8(&h[124..136])
            .unwrap_or("")
            .trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size_field, 8).unwrap_or(0);
        let body = at + 512;
        let typeflag = h[156];
        if matches!(typeflag, b'0' | 0) {
            let content = data
                .get(body..body + size)
                .unwrap_or_else(|| data.get(body..).unwrap_or_default());
            budget.take(&name, content.len())?;
            out.push((name, content.to_vec()));
        }
        at = body + size.div_ceil(512) * 512;
    }
    Ok(out)
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
