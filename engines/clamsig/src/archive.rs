//! Containers inside attachments: archives, compressors, documents and
//! executables that carry other files, typed by content and opened to a
//! bounded depth. The readers themselves are in [`crate::formats`].
//!
//! Every reader is written for hostile input: sizes in headers are never
//! trusted. Every member is decompressed with an output cap that is the
//! smallest of the per-member limit, what is left of the per-part budget,
//! and the compressed size times the ratio limit; going past any of them
//! stops extraction with [`Stop::Limits`], which the engine reports as
//! `unscannable(limits-exceeded)`. A bomb is therefore a bounded amount of
//! work, not a hang.
//!
//! Every offset and length read from a container is added with checked
//! arithmetic (the engine runs in 32-bit WebAssembly, where a 4 GiB size
//! wraps), and a member the walk cannot reach is never skipped in silence:
//! its bytes are scanned as far as they go, or extraction stops with
//! [`Stop::Corrupt`], [`Stop::Encrypted`] or [`Stop::Unsupported`] and the
//! part is unscannable.

use std::io::Read;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

use crate::formats;

/// Bounds on extraction for one message part.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Containers inside containers, counting the outermost as 1.
    pub max_depth: u32,
    /// Bytes one member may decompress to.
    pub max_member_bytes: usize,
    /// Bytes all members together may decompress to.
    pub max_total_bytes: usize,
    /// Decompressed size over compressed size.
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
    /// A format or method this engine lacks (a RAR archive, a packed
    /// executable): it cannot be scanned, which is said, not skipped.
    Unsupported(String),
    /// The container's structure cannot be walked to a member (an offset
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
            Stop::Corrupt(what) => write!(f, "damaged container: {what}"),
        }
    }
}

/// The kind of container `data` is, by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PKZIP (and OOXML, ODF, JAR, APK).
    Zip,
    /// gzip.
    Gzip,
    /// POSIX tar.
    Tar,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// 7-Zip.
    SevenZip,
    /// cpio, any of its four headers.
    Cpio,
    /// Microsoft Cabinet.
    Cab,
    /// ARJ.
    Arj,
    /// OLE2 compound file (doc, xls, ppt, msi).
    Ole2,
    /// Rich Text Format.
    Rtf,
    /// PDF.
    Pdf,
    /// TNEF (winmail.dat).
    Tnef,
    /// BinHex 4.0.
    BinHex,
    /// MS-DOS `COMPRESS.EXE` (SZDD).
    Szdd,
    /// Compiled HTML Help.
    Chm,
    /// Symbian installation file.
    Sis,
    /// ISO 9660 or UDF image.
    Iso,
    /// A Windows executable.
    Pe,
    /// RAR: no freely licensed decoder.
    Rar,
    /// A mail message or an mbox.
    Mail,
}

/// Recognises a container by content.
pub fn kind(data: &[u8]) -> Option<Kind> {
    let at = |off: usize, magic: &[u8]| data.get(off..off + magic.len()) == Some(magic);
    Some(if at(0, b"PK\x03\x04") {
        Kind::Zip
    } else if at(0, &[0x1f, 0x8b, 0x08]) {
        Kind::Gzip
    } else if data.len() >= 512 && at(257, b"ustar") {
        Kind::Tar
    } else if at(0, b"BZh") && at(4, &[0x31, 0x41, 0x59, 0x26, 0x53, 0x59]) {
        Kind::Bzip2
    } else if at(0, &[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Kind::Xz
    } else if at(0, &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c]) {
        Kind::SevenZip
    } else if at(0, &[0xc7, 0x71])
        || at(0, &[0x71, 0xc7])
        || at(0, b"070707")
        || at(0, b"070701")
        || at(0, b"070702")
    {
        Kind::Cpio
    } else if at(0, b"MSCF\0\0\0\0") {
        Kind::Cab
    } else if at(0, &[0x60, 0xea]) {
        Kind::Arj
    } else if at(0, &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) {
        Kind::Ole2
    } else if at(0, b"{\\rtf") {
        Kind::Rtf
    } else if formats::pdf::starts(data) {
        Kind::Pdf
    } else if at(0, &[0x78, 0x9f, 0x3e, 0x22]) {
        Kind::Tnef
    } else if formats::binhex::starts(data) {
        Kind::BinHex
    } else if at(0, b"SZDD\x88\xf0\x27\x33") {
        Kind::Szdd
    } else if at(0, b"ITSF") {
        Kind::Chm
    } else if formats::sis::starts(data) {
        Kind::Sis
    } else if formats::iso::starts(data) {
        Kind::Iso
    } else if formats::pe::starts(data) {
        Kind::Pe
    } else if at(0, b"Rar!\x1a\x07") {
        Kind::Rar
    } else if formats::mail::starts(data) {
        Kind::Mail
    } else {
        return None;
    })
}

/// Extraction state shared across one part's containers.
pub struct Budget {
    limits: Limits,
    used_bytes: usize,
    members: usize,
}

/// What one container gives up: its members, by name.
pub type Members = Vec<(String, Vec<u8>)>;

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

    /// Counts a member of `bytes` against the limits.
    pub fn take(&mut self, name: &str, bytes: usize) -> Result<(), Stop> {
        self.members += 1;
        if self.members > self.limits.max_members {
            return Err(Stop::Limits(format!(
                "more than {} archive members",
                self.limits.max_members
            )));
        }
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        if self.used_bytes > self.limits.max_total_bytes {
            return Err(Stop::Limits(format!(
                "archives inflate to more than {} bytes (at {name})",
                self.limits.max_total_bytes
            )));
        }
        Ok(())
    }

    /// The most one member decompressed from `compressed` bytes may take.
    pub fn cap(&self, compressed: usize) -> usize {
        let l = self.limits;
        l.max_member_bytes
            .min(l.max_total_bytes.saturating_sub(self.used_bytes))
            .min(compressed.saturating_mul(l.max_ratio).max(4096))
    }

    fn too_big(&self, name: &str, cap: usize) -> Stop {
        Stop::Limits(format!(
            "{name} decompresses past {cap} bytes (member size, total or ratio {}:1 limit)",
            self.limits.max_ratio
        ))
    }

    /// Whether a member that says it decompresses to `size` bytes from
    /// `compressed` fits; checked before a decoder is given the size.
    pub fn fits(&self, name: &str, size: u64, compressed: usize) -> Result<(), Stop> {
        let cap = self.cap(compressed);
        if size > cap as u64 {
            return Err(self.too_big(name, cap));
        }
        Ok(())
    }

    /// A copy of stored (uncompressed) bytes, counted.
    pub fn stored(&mut self, name: &str, data: &[u8]) -> Result<Vec<u8>, Stop> {
        if data.len() > self.limits.max_member_bytes {
            return Err(self.too_big(name, self.limits.max_member_bytes));
        }
        self.take(name, data.len())?;
        Ok(data.to_vec())
    }

    /// Reads a decoder to its end under every limit; `compressed` is the
    /// size of its input, for the ratio. A decoder that fails partway
    /// gives what it had decoded (damaged data is scanned as far as it
    /// goes), or, if it had decoded nothing, `corrupt`.
    pub fn read_all(
        &mut self,
        name: &str,
        mut reader: impl Read,
        compressed: usize,
    ) -> Result<Vec<u8>, Stop> {
        let cap = self.cap(compressed);
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if out.len() + n > cap {
                        return Err(self.too_big(name, cap));
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if out.is_empty() {
                        return Err(Stop::Corrupt(format!("{name}: {e}")));
                    }
                    break;
                }
            }
        }
        self.take(name, out.len())?;
        Ok(out)
    }

    /// Inflates raw deflate data under every limit.
    pub fn inflate(&mut self, name: &str, compressed: &[u8]) -> Result<Vec<u8>, Stop> {
        self.inflate_counting(name, compressed).map(|(v, _)| v)
    }

    /// Inflates zlib data (a two-byte header, then deflate) under every
    /// limit; data without the header is inflated as raw deflate.
    pub fn inflate_zlib(&mut self, name: &str, compressed: &[u8]) -> Result<Vec<u8>, Stop> {
        let zlib = compressed.len() >= 2
            && compressed[0] & 0x0f == 8
            && (u16::from(compressed[0]) << 8 | u16::from(compressed[1])) % 31 == 0;
        self.inflate(name, if zlib { &compressed[2..] } else { compressed })
    }

    /// Inflates the raw deflate stream at the start of `compressed` under
    /// every limit; also returns how many input bytes the stream took, so
    /// that what follows it (another gzip member, a zip data descriptor)
    /// can be found. Damaged data gives what could be inflated, and the
    /// whole input as taken.
    pub fn inflate_counting(
        &mut self,
        name: &str,
        compressed: &[u8],
    ) -> Result<(Vec<u8>, usize), Stop> {
        let cap = self.cap(compressed.len());
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
                        return Err(self.too_big(name, cap));
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

/// The members of the container `data`, if it is one: those extracted,
/// and why extraction stopped early if it did (the members before the stop
/// are still scanned).
pub fn members(data: &[u8], budget: &mut Budget) -> (Members, Option<Stop>) {
    let mut out = Vec::new();
    let Some(kind) = kind(data) else {
        return (out, None);
    };
    let o = &mut out;
    let result = match kind {
        Kind::Zip => formats::zip::members(data, budget, o),
        Kind::Gzip => formats::stream::gzip(data, budget, o),
        Kind::Tar => formats::stream::tar(data, budget, o),
        Kind::Bzip2 => formats::stream::bzip2(data, budget, o),
        Kind::Xz => formats::stream::xz(data, budget, o),
        Kind::Cpio => formats::stream::cpio(data, budget, o),
        Kind::SevenZip => formats::sevenz::members(data, budget, o),
        Kind::Cab => formats::cab::members(data, budget, o),
        Kind::Arj => formats::arj::members(data, budget, o),
        Kind::Ole2 => formats::ole2::members(data, budget, o),
        Kind::Rtf => formats::rtf::members(data, budget, o),
        Kind::Pdf => formats::pdf::members(data, budget, o),
        Kind::Tnef => formats::tnef::members(data, budget, o),
        Kind::BinHex => formats::binhex::members(data, budget, o),
        Kind::Szdd => formats::szdd::members(data, budget, o),
        Kind::Chm => formats::chm::members(data, budget, o),
        Kind::Sis => formats::sis::members(data, budget, o),
        Kind::Iso => formats::iso::members(data, budget, o),
        Kind::Pe => formats::pe::members(data, budget, o),
        Kind::Mail => formats::mail::members(data, budget, o),
        Kind::Rar => Err(Stop::Unsupported(
            "a RAR archive (no freely licensed RAR decoder exists)".into(),
        )),
    };
    (out, result.err())
}

/// The members of a container that must open whole, or why it did not.
pub fn members_whole(data: &[u8], budget: &mut Budget) -> Result<Members, Stop> {
    match members(data, budget) {
        (members, None) => Ok(members),
        (_, Some(stop)) => Err(stop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deflate_bomb_stops_at_the_ratio_limit() {
        let zeros = vec![0u8; 50 << 20];
        let packed = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        assert!(packed.len() < 100_000);
        let mut b = Budget::new(Limits::default());
        match b.inflate("bomb", &packed) {
            Err(Stop::Limits(why)) => assert!(why.contains("bomb decompresses past"), "{why}"),
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

    #[test]
    fn a_reader_past_the_cap_stops_and_one_that_fails_keeps_what_it_gave() {
        let mut b = Budget::new(Limits {
            max_member_bytes: 100,
            ..Limits::default()
        });
        let big = vec![7u8; 1000];
        assert!(matches!(
            b.read_all("big", &big[..], 10),
            Err(Stop::Limits(_))
        ));
        struct Half(usize);
        impl Read for Half {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("bad block"));
                }
                self.0 = 0;
                buf[..3].copy_from_slice(b"abc");
                Ok(3)
            }
        }
        assert_eq!(b.read_all("half", Half(1), 10).unwrap(), b"abc");
        assert!(matches!(
            b.read_all("none", Half(0), 10),
            Err(Stop::Corrupt(_))
        ));
    }
}
