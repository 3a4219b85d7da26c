//! Loading ClamAV signature databases.
//!
//! Read: `.hdb` (MD5 of a whole file), `.hsb` (MD5, SHA1 or SHA256), `.mdb`
//! and `.msb` (hashes of executable sections), `.fp` and `.sfp` (allow
//! lists in the same forms as `.hdb` and `.hsb`), `.ign2` (signature names
//! to ignore), `.ndb` (body patterns) and `.ldb` (logical signatures, with
//! PCRE subsignatures).
//! Every signature from these plain files is unofficial, and its name gets
//! the `.UNOFFICIAL` suffix, as clamscan prints it.
//!
//! What clamsig does not read (bytecode, icon groups, byte-compare and
//! macro subsignatures, version-information offsets) is skipped and
//! counted, never silently: the counts come back in [`LoadStats`]. A line that does not parse is an
//! error naming the file and line.

use std::collections::HashSet;
use std::io::Read;

use crate::logical::Expr;
use crate::pattern::{Modifiers, Pattern, decode_hex_into};

/// The hash algorithm of a hash signature, ordered by digest length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashKind {
    /// 16 bytes.
    Md5,
    /// 20 bytes.
    Sha1,
    /// 32 bytes.
    Sha256,
}

impl HashKind {
    /// Every kind, shortest digest first (their order).
    pub const ALL: [HashKind; 3] = [HashKind::Md5, HashKind::Sha1, HashKind::Sha256];

    /// The kind's place in [`HashKind::ALL`] and in their order.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Bytes of a digest of this kind.
    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Sha1 => 20,
            HashKind::Sha256 => 32,
        }
    }

    /// The kind whose digests are `len` bytes, if any.
    fn of_len(len: usize) -> Option<HashKind> {
        Self::ALL.into_iter().find(|k| k.digest_len() == len)
    }
}

pub use crate::offset::{Layout, Offset};

/// A body signature (.ndb).
#[derive(Debug, Clone)]
pub struct BodySig {
    /// The threat name, without the `.UNOFFICIAL` suffix ([`BodySig::name`]
    /// adds it): a large database holds hundreds of thousands of names.
    pub bare_name: Box<str>,
    /// From an official (`.cvd`/`.cld`) database: no suffix.
    pub official: bool,
    /// The ClamAV target type.
    pub target: u8,
    /// Where it may start.
    pub offset: Offset,
    /// What it matches.
    pub pattern: Pattern,
}

/// A logical signature (.ldb).
#[derive(Debug, Clone)]
pub struct LogicalSig {
    /// The threat name, without the `.UNOFFICIAL` suffix.
    pub bare_name: Box<str>,
    /// From an official database: no suffix.
    pub official: bool,
    /// The target type, if the description names one.
    pub target: Option<u8>,
    /// Inclusive file size range, if given.
    pub file_size: Option<(u64, u64)>,
    /// The logical expression over the subsignatures.
    pub expr: Expr,
    /// The subsignatures; a PCRE one holds a placeholder here and its
    /// expression in `pcres`.
    pub subs: Vec<(Offset, Pattern)>,
    /// The PCRE subsignatures.
    pub pcres: Vec<crate::pcre::PcreSub>,
}

/// A hash signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSig {
    /// The digest, zero-padded to 32 bytes (its length is the kind's).
    pub digest: [u8; 32],
    /// The size the file must have, or [`ANY_SIZE`].
    pub size: u64,
    /// The threat name, without the `.UNOFFICIAL` suffix.
    pub bare_name: Box<str>,
    /// The digest's algorithm.
    pub kind: HashKind,
    /// From an official database: no suffix.
    pub official: bool,
}

/// A hash signature's size for "any size" (`*`).
pub const ANY_SIZE: u64 = u64::MAX;

/// `digest` zero-padded to 32 bytes.
pub fn padded(digest: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    let n = digest.len().min(32);
    d[..n].copy_from_slice(&digest[..n]);
    d
}

/// A threat name as printed: unofficial signatures get `.UNOFFICIAL`.
fn printed(bare: &str, official: bool) -> String {
    if official {
        bare.to_string()
    } else {
        format!("{bare}{UNOFFICIAL}")
    }
}

impl BodySig {
    /// The threat name as printed.
    pub fn name(&self) -> String {
        printed(&self.bare_name, self.official)
    }
}

impl LogicalSig {
    /// The threat name as printed.
    pub fn name(&self) -> String {
        printed(&self.bare_name, self.official)
    }
}

impl HashSig {
    /// The threat name as printed.
    pub fn name(&self) -> String {
        printed(&self.bare_name, self.official)
    }
}

/// What was loaded and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Signatures loaded, by file extension.
    pub loaded: Vec<(String, usize)>,
    /// Signatures skipped because they cannot apply to mail or use a
    /// feature this engine lacks, with the first few reasons.
    pub skipped: usize,
    /// Up to ten `file:line: reason` examples of skips.
    pub skipped_examples: Vec<String>,
    /// Files skipped whole (unsupported types), by name.
    pub skipped_files: Vec<String>,
}

/// A loaded database.
#[derive(Debug, Default)]
pub struct Db {
    /// Hash signatures, in file order (the matcher sorts them by kind and
    /// digest): a table of fixed-size entries, not a map of small
    /// allocations (a large database has tens of thousands).
    pub hashes: Vec<HashSig>,
    /// PE section hash signatures (.mdb, .msb): the size is the section's;
    /// sorted by the matcher like `hashes`.
    pub section_hashes: Vec<HashSig>,
    /// Allow-listed (kind, digest, size).
    pub allow: HashSet<(HashKind, Vec<u8>, Option<u64>)>,
    /// Signature names to ignore (without the `.UNOFFICIAL` suffix).
    pub ignored: HashSet<String>,
    /// Body signatures.
    pub body: Vec<BodySig>,
    /// Logical signatures.
    pub logical: Vec<LogicalSig>,
    /// The load report.
    pub stats: LoadStats,
}

const UNOFFICIAL: &str = ".UNOFFICIAL";

/// The most bytes read at a time by [`Db::add_read`].
const READ_PIECE: usize = 1 << 20;

/// Subsignatures a logical signature may have (ClamAV allows 64).
pub const MAX_SUBSIGS: usize = 255;

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    decode_hex_into(s, &mut out).then_some(out)
}

/// The first four `:`-separated fields of `line` (the fourth absent when
/// there are three), without collecting them: a large database has
/// hundreds of thousands of lines.
fn fields(line: &str) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    let mut it = line.split(':');
    (it.next(), it.next(), it.next(), it.next())
}

/// Zeroes `buf` before it is freed: what init frees stays in the
/// generation's snapshot unless it is zero (the snapshot leaves zero pages
/// out), and definitions are tens of megabytes. (`black_box`: a store
/// before a free is otherwise dead and removed.)
pub fn zero(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// The buffers [`Db::add_read`] reads definitions through, made once for a
/// whole load and first, so that they sit low in the heap, and sized in
/// proportion to what is read ([`Pieces::for_total`]): what the load builds
/// after them must fill them again once they are freed. Free space left in
/// the snapshot's heap costs every scan: a scan allocates there, and with
/// 1 MiB pieces per file a fresh instance of the small test database cost
/// 38 us instead of 16 (with 64 KiB pieces, 22; with 4 KiB, 17; `cargo
/// bench --bench clamsig`). Small pieces cost reads, though: 4 KiB pieces
/// took the 500,000-signature `init` from 0.46 to 1.2 s.
pub struct Pieces {
    buf: Vec<u8>,
    pending: Vec<u8>,
}

impl Pieces {
    /// Buffers for reading `total` bytes: a 32nd of them at a time,
    /// between 4 KiB and [`READ_PIECE`].
    pub fn for_total(total: u64) -> Pieces {
        let piece = usize::try_from(total / 32).unwrap_or(usize::MAX);
        Pieces::new(piece.clamp(4096, READ_PIECE))
    }

    /// Buffers for reading `piece` bytes at a time.
    pub fn new(piece: usize) -> Pieces {
        Pieces {
            buf: vec![0u8; piece.max(1)],
            pending: Vec::with_capacity(2 * piece),
        }
    }

    /// The number of lines `r` holds (a last line without its newline
    /// counts).
    pub fn count_lines<R: Read>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let (mut lines, mut last) = (0, b'\n');
        loop {
            let n = r.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            lines += self.buf[..n].iter().filter(|b| **b == b'\n').count();
            last = self.buf[n - 1];
        }
        Ok(lines + usize::from(last != b'\n'))
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        zero(&mut self.buf);
        let cap = self.pending.capacity();
        self.pending.resize(cap, 0);
        zero(&mut self.pending);
    }
}

/// Whether the tables of format `ext` (a lower-case file extension) are
/// sized before loading ([`Db::reserve_for`]): the formats of a large
/// database's bulk.
pub fn sized_up_front(ext: &str) -> bool {
    matches!(ext, "ndb" | "hdb" | "hsb" | "mdb" | "msb")
}

/// Makes room for `additional` more elements in one step. When the vector
/// must move, its old buffer is zeroed before it is freed: what init frees
/// stays in the generation's snapshot, and only zero pages are left out of
/// it (the body signatures of a large database are tens of megabytes).
fn reserve_zeroing<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    let mut moved = Vec::with_capacity(v.len() + additional);
    moved.append(v);
    v.spare_capacity_mut()
        .iter_mut()
        .for_each(|s| *s = std::mem::MaybeUninit::zeroed());
    std::hint::black_box(&mut *v);
    *v = moved;
}

/// One line of a hash database: (kind, digest, size, name).
fn parse_hash_line(
    line: &str,
    md5_only: bool,
) -> Result<(HashKind, Vec<u8>, Option<u64>, String), String> {
    let (Some(hash), Some(size), Some(name), flevel) = fields(line) else {
        return Err("expected HASH:SIZE:NAME".into());
    };
    let digest = parse_hex(hash).ok_or_else(|| format!("bad hash {hash:?}"))?;
    let kind = HashKind::of_len(digest.len())
        .ok_or_else(|| format!("hash {hash:?} is not MD5, SHA1 or SHA256"))?;
    if md5_only && kind != HashKind::Md5 {
        return Err(format!(
            "hash {hash:?} is not MD5 (use .hsb for SHA1/SHA256)"
        ));
    }
    let size = if size == "*" {
        let flevel: u32 = flevel.and_then(|v| v.parse().ok()).unwrap_or(0);
        if flevel < 73 {
            return Err("a '*' size needs a minimum engine level of 73 in field 4".into());
        }
        None
    } else {
        Some(size.parse().map_err(|_| format!("bad size {size:?}"))?)
    };
    if name.is_empty() {
        return Err("empty signature name".into());
    }
    Ok((kind, digest, size, name.to_string()))
}

/// A hash signature from a parsed hash line.
fn hash_sig(
    (kind, digest, size, name): (HashKind, Vec<u8>, Option<u64>, String),
    official: bool,
) -> HashSig {
    HashSig {
        digest: padded(&digest),
        size: size.unwrap_or(ANY_SIZE),
        bare_name: name.into_boxed_str(),
        kind,
        official,
    }
}

/// An offset relative to an executable's entry point or sections is
/// refused on any target but executables (1), as ClamAV refuses it.
fn pe_offset_needs_pe(offset: Offset, target: Option<u8>) -> Result<(), String> {
    if offset.executable_only() && target != Some(1) {
        return Err(format!(
            "offset {offset:?} is relative to an executable and needs target 1 (PE)"
        ));
    }
    Ok(())
}

/// A section hash line: `SIZE:HASH:NAME[:FLEVEL]` (.mdb and .msb put the
/// size first).
fn parse_section_hash_line(
    line: &str,
    md5_only: bool,
) -> Result<(HashKind, Vec<u8>, Option<u64>, String), String> {
    let mut f: Vec<&str> = line.splitn(4, ':').collect();
    if f.len() < 3 {
        return Err("expected SIZE:HASH:NAME".into());
    }
    f.swap(0, 1);
    parse_hash_line(&f.join(":"), md5_only)
}

/// Splits an .ldb subsignature into offset, pattern and modifiers.
fn parse_subsig(s: &str) -> Result<(Offset, Pattern), String> {
    let (body, mods) = match s.split_once("::") {
        Some((b, m)) => (b, m),
        None => (s, ""),
    };
    let mut m = Modifiers::default();
    for c in mods.chars() {
        match c {
            'i' => m.nocase = true,
            'w' => m.wide = true,
            'a' => m.ascii = true,
            other => return Err(format!("unsupported subsignature modifier '{other}'")),
        }
    }
    if m.ascii && m.wide {
        return Err("unsupported subsignature modifier combination 'wa'".into());
    }
    if body.contains('/') || body.contains('#') || body.starts_with("${") {
        return Err("unsupported subsignature type (byte compare or macro)".into());
    }
    let (offset, hex) = match body.split_once(':') {
        Some((o, h)) => (Offset::parse(o)?, h),
        None => (Offset::Any, body),
    };
    Ok((offset, Pattern::parse(hex, m)?))
}

fn parse_ldb(line: &str, official: bool) -> Result<LogicalSig, String> {
    let f: Vec<&str> = line.split(';').collect();
    if f.len() < 4 {
        return Err("expected NAME;TARGET-DESCRIPTION;EXPRESSION;SUBSIG0[;SUBSIG1...]".into());
    }
    let mut target = None;
    let mut file_size = None;
    for attr in f[1].split(',') {
        let (k, v) = attr
            .split_once(':')
            .ok_or_else(|| format!("bad target description item {attr:?}"))?;
        match k {
            "Target" => target = Some(v.parse().map_err(|_| format!("bad Target {v:?}"))?),
            "Engine" => {}
            "FileSize" => {
                let (a, b) = v
                    .split_once('-')
                    .ok_or_else(|| format!("bad FileSize {v:?}"))?;
                file_size = Some((
                    a.parse().map_err(|_| format!("bad FileSize {v:?}"))?,
                    b.parse().map_err(|_| format!("bad FileSize {v:?}"))?,
                ));
            }
            other => return Err(format!("unsupported target description item {other}")),
        }
    }
    if f.len() - 3 > MAX_SUBSIGS {
        return Err(format!(
            "unsupported: more than {MAX_SUBSIGS} subsignatures ({})",
            f.len() - 3
        ));
    }
    let count = f.len() - 3;
    let mut subs = Vec::with_capacity(count);
    let mut pcres = Vec::new();
    for (j, sub) in f[3..].iter().enumerate() {
        if crate::pcre::is_pcre(sub) {
            let p = crate::pcre::PcreSub::parse(sub, j, count)?;
            pe_offset_needs_pe(p.offset, target)?;
            pcres.push(p);
            // A placeholder the matcher never indexes.
            subs.push((Offset::Any, Pattern::parse("00", Modifiers::default())?));
        } else {
            subs.push(parse_subsig(sub)?);
        }
    }
    for (offset, _) in &subs {
        pe_offset_needs_pe(*offset, target)?;
    }
    let expr = Expr::parse(f[2], subs.len())?;
    Ok(LogicalSig {
        bare_name: f[0].into(),
        official,
        target,
        file_size,
        expr,
        subs,
        pcres,
    })
}

fn parse_ndb(line: &str, official: bool) -> Result<BodySig, String> {
    let (Some(name), Some(target), Some(offset), Some(hex)) = fields(line) else {
        return Err("expected NAME:TARGET:OFFSET:HEXSIG".into());
    };
    let target: u8 = target
        .parse()
        .map_err(|_| format!("bad target type {target:?}"))?;
    if !matches!(target, 0..=4 | 7) {
        return Err(format!(
            "unsupported target type {target} (not one clamsig types files as)"
        ));
    }
    let offset = Offset::parse(offset)?;
    pe_offset_needs_pe(offset, Some(target))?;
    Ok(BodySig {
        bare_name: name.into(),
        official,
        target,
        offset,
        pattern: Pattern::parse(hex, Modifiers::default())?,
    })
}

impl Db {
    /// Adds one file's contents. `file` names it in errors; its extension
    /// picks the format. A parse error is `Err("FILE line N: reason")`.
    /// Signatures get the `.UNOFFICIAL` suffix.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<(), String> {
        self.add_file_as(file, text, false)
    }

    /// As [`Db::add_file`]; `official` signatures (from a `.cvd`/`.cld`)
    /// keep their names as they are.
    pub fn add_file_as(&mut self, file: &str, text: &str, official: bool) -> Result<(), String> {
        let Some(ext) = self.format_of(file) else {
            return Ok(());
        };
        self.reserve_for(&ext, text.lines().count());
        let count = self.add_lines(file, &ext, text, 0, official)?;
        self.stats.loaded.push((file.to_string(), count));
        Ok(())
    }

    /// As [`Db::add_file`], reading the file in pieces: never holding a
    /// whole definitions file keeps it out of the engine's heap, and so out
    /// of the generation's snapshot (a freed buffer leaves a hole there that
    /// the image still spans).
    ///
    /// Size the tables for every file first ([`Pieces::count_lines`] of
    /// each file whose format [`sized_up_front`], then [`Db::reserve_for`]):
    /// grown file by file, the tables would move and the old copies leave
    /// holes the image still spans.
    pub fn add_read<R: Read>(
        &mut self,
        file: &str,
        mut r: R,
        pieces: &mut Pieces,
    ) -> Result<(), String> {
        let Some(ext) = self.format_of(file) else {
            return Ok(());
        };
        let io = |e: std::io::Error| format!("{file}: cannot read: {e}");
        // `pending` holds what follows the last complete line read so far.
        let Pieces { buf, pending } = pieces;
        pending.clear();
        let (mut line, mut count) = (0, 0);
        loop {
            let n = r.read(buf).map_err(io)?;
            let end = n == 0;
            pending.extend_from_slice(&buf[..n]);
            let upto = if end {
                pending.len()
            } else {
                match pending.iter().rposition(|b| *b == b'\n') {
                    Some(p) => p + 1,
                    None => continue,
                }
            };
            // `from_utf8` first: its check is word-at-a-time over ASCII,
            // `from_utf8_lossy`'s byte-by-byte.
            let text = match std::str::from_utf8(&pending[..upto]) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(&pending[..upto]),
            };
            count += self.add_lines(file, &ext, &text, line, false)?;
            line += text.lines().count();
            drop(text);
            pending.drain(..upto);
            if end {
                break;
            }
        }
        self.stats.loaded.push((file.to_string(), count));
        Ok(())
    }

    /// The format of `file` by its extension, or None (recorded as a file
    /// skipped whole) when it is not one this engine reads.
    fn format_of(&mut self, file: &str) -> Option<String> {
        let ext = file
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        if matches!(
            ext.as_str(),
            "hdb" | "hsb" | "mdb" | "msb" | "fp" | "sfp" | "ign2" | "ndb" | "ldb"
        ) {
            Some(ext)
        } else {
            self.stats.skipped_files.push(file.to_string());
            None
        }
    }

    /// Room for `lines` more signatures of format `ext` (a file extension,
    /// lower case) at once: grown by doubling, the old buffers would stay
    /// in the generation's snapshot.
    /// Formats other than those [`sized_up_front`] are left to grow.
    pub fn reserve_for(&mut self, ext: &str, lines: usize) {
        match ext {
            "ndb" => reserve_zeroing(&mut self.body, lines),
            "hdb" | "hsb" => reserve_zeroing(&mut self.hashes, lines),
            "mdb" | "msb" => reserve_zeroing(&mut self.section_hashes, lines),
            _ => {}
        }
    }

    /// Adds the lines of `text`, the first being line `first + 1` of
    /// `file`; returns how many signatures were added.
    fn add_lines(
        &mut self,
        file: &str,
        ext: &str,
        text: &str,
        first: usize,
        official: bool,
    ) -> Result<usize, String> {
        let mut count = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("{file} line {}: {e}", first + i + 1);
            let result = match ext {
                "hdb" | "hsb" => parse_hash_line(line, ext == "hdb")
                    .map(|sig| self.hashes.push(hash_sig(sig, official))),
                "mdb" | "msb" => parse_section_hash_line(line, ext == "mdb")
                    .map(|sig| self.section_hashes.push(hash_sig(sig, official))),
                "fp" | "sfp" => parse_hash_line(line, ext == "fp").map(|(k, d, size, _)| {
                    self.allow.insert((k, d, size));
                }),
                "ign2" => {
                    let name = line.split(':').next().unwrap_or(line).trim();
                    self.ignored
                        .insert(name.trim_end_matches(UNOFFICIAL).to_string());
                    Ok(())
                }
                "ndb" => parse_ndb(line, official).map(|s| self.body.push(s)),
                _ => parse_ldb(line, official).map(|s| self.logical.push(s)),
            };
            match result {
                Ok(()) => count += 1,
                Err(e) if e.starts_with("unsupported") => {
                    self.stats.skipped += 1;
                    if self.stats.skipped_examples.len() < 10 {
                        self.stats.skipped_examples.push(at(e));
                    }
                }
                Err(e) => return Err(at(e)),
            }
        }
        Ok(count)
    }

    /// Adds a signed ClamAV container (`.cvd`, or `.cld` as freshclam
    /// leaves it): a 512-byte `ClamAV-VDB:` header, then a tar archive,
    /// gzip-compressed in a `.cvd`. The header's MD5 of the body is checked
    /// for `.cvd` files (the RSA signature is not: cordon has no key to check
    /// it with, so keep the definitions directory writable only by the
    /// updater). Returns the header's version number.
    pub fn add_container(&mut self, file: &str, bytes: &[u8]) -> Result<u64, String> {
        let header = bytes
            .get(..512)
            .filter(|h| h.starts_with(b"ClamAV-VDB:"))
            .ok_or_else(|| {
                format!("{file}: not a ClamAV database container (no ClamAV-VDB header)")
            })?;
        let header = String::from_utf8_lossy(header);
        let fields: Vec<&str> = header.trim_end().split(':').collect();
        let version: u64 = fields
            .get(2)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{file}: header has no version number"))?;
        let body = &bytes[512..];
        if file.ends_with(".cvd") {
            use md5::{Digest, Md5};
            let want = fields.get(5).copied().unwrap_or_default();
            let got: String = Md5::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !want.eq_ignore_ascii_case(&got) {
                return Err(format!(
                    "{file}: header MD5 {want} does not match the contents ({got}): the file is damaged or was altered"
                ));
            }
        }
        let limits = crate::archive::Limits {
            max_depth: 1,
            max_member_bytes: 1 << 30,
            max_total_bytes: 1 << 30,
            max_ratio: 1000,
            max_members: 10_000,
        };
        let mut budget = crate::archive::Budget::new(limits);
        let mut tar = if body.starts_with(&[0x1f, 0x8b]) {
            crate::archive::members_whole(body, &mut budget)
                .map_err(|e| format!("{file}: cannot decompress: {e}"))?
                .into_iter()
                .next()
                .map(|(_, data)| data)
                .unwrap_or_default()
        } else {
            body.to_vec()
        };
        let members = crate::archive::members_whole(&tar, &mut budget)
            .map_err(|e| format!("{file}: cannot unpack: {e}"))?;
        zero(&mut tar);
        if members.is_empty() {
            return Err(format!("{file}: the container holds no files"));
        }
        for (name, mut data) in members {
            let inner = format!("{file}/{name}");
            self.add_file_as(&inner, &String::from_utf8_lossy(&data), true)?;
            zero(&mut data);
        }
        Ok(version)
    }

    /// Signatures loaded in all.
    pub fn signatures(&self) -> usize {
        self.stats.loaded.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_kinds_are_found_by_their_digest_length() {
        for (i, kind) in HashKind::ALL.into_iter().enumerate() {
            assert_eq!(HashKind::of_len(kind.digest_len()), Some(kind));
            assert_eq!(kind.index(), i);
        }
        assert!(HashKind::ALL.is_sorted());
        assert_eq!(HashKind::Sha1.digest_len(), 20);
        for len in [0, 15, 17, 19, 21, 31, 33, 64] {
            assert_eq!(HashKind::of_len(len), None, "{len} bytes");
        }
    }

    #[test]
    fn loads_each_format_and_names_errors() {
        let mut db = Db::default();
        db.add_file(
            "a.hdb",
            "aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File\n# comment\n",
        )
        .unwrap();
        db.add_file(
            "a.hsb",
            "2ef7bde608ce5404e97d5f042f95f89f1c232871:*:Sha1Any:73\n",
        )
        .unwrap();
        db.add_file("a.ndb", "Ndb.Test:0:*:41424344\nVi.Only:1:VI:4d5a\n")
            .unwrap();
        db.add_file(
            "a.ldb",
            "Ldb.Test;Engine:51-255,Target:0;0&1;4142;EOF-4:4344::i\n",
        )
        .unwrap();
        db.add_file("a.ign2", "Ndb.Test\n").unwrap();
        db.add_file("daily.cbc", "bytecode").unwrap();
        assert_eq!(db.signatures(), 5);
        assert_eq!(db.stats.skipped, 1);
        assert!(db.stats.skipped_examples[0].starts_with("a.ndb line 2: unsupported"));
        assert_eq!(db.stats.skipped_files, ["daily.cbc"]);
        assert_eq!(db.body[0].name(), "Ndb.Test.UNOFFICIAL");
        assert!(db.ignored.contains("Ndb.Test"));
        assert_eq!(db.logical[0].subs[1].0, Offset::Eof(4, 0));

        let err = db
            .add_file("bad.ndb", "ok:0:*:4142\nbroken:0:*:41zz\n")
            .unwrap_err();
        assert!(err.starts_with("bad.ndb line 2: bad hex digit"), "{err}");
        let err = db.add_file("bad.hsb", "abcd:*:X\n").unwrap_err();
        assert!(err.starts_with("bad.hsb line 1:"), "{err}");
        let err = db
            .add_file("bad.hsb", "aa15bcf478d165efd2065190eb473bcb:*:X\n")
            .unwrap_err();
        assert!(err.contains("engine level of 73"), "{err}");
        let err = db
            .add_file("bad.ldb", "X;Target:0;0&2;4142;4344\n")
            .unwrap_err();
        assert!(err.contains("subsignature 2"), "{err}");
    }

    #[test]
    fn reserving_moves_the_elements_once_and_only_when_needed() {
        let mut v: Vec<u64> = vec![u64::MAX; 1000];
        let old = v.as_ptr() as usize;
        reserve_zeroing(&mut v, 10);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|x| *x == u64::MAX));
        assert!(v.capacity() >= 1010);
        assert_ne!(v.as_ptr() as usize, old);
        // Room enough: nothing moves.
        let at = v.as_ptr();
        reserve_zeroing(&mut v, 10);
        assert_eq!(v.as_ptr(), at);
    }

    #[test]
    fn names_get_the_unofficial_suffix_only_outside_official_databases() {
        let mut db = Db::default();
        db.add_file_as("main.ndb", "Official.Sig:0:*:41424344\n", true)
            .unwrap();
        db.add_file("local.ndb", "Local.Sig:0:*:41424345\n")
            .unwrap();
        db.add_file(
            "local.hdb",
            "aa15bcf478d165efd2065190eb473bcb:544:Local.Hash\n",
        )
        .unwrap();
        db.add_file("local.ldb", "Local.Ldb;Target:0;0;414243\n")
            .unwrap();
        assert_eq!(db.body[0].name(), "Official.Sig");
        assert_eq!(db.body[1].name(), "Local.Sig.UNOFFICIAL");
        assert_eq!(db.logical[0].name(), "Local.Ldb.UNOFFICIAL");
        assert_eq!(db.hashes[0].name(), "Local.Hash.UNOFFICIAL");
    }

    #[test]
    fn a_file_read_in_pieces_loads_as_the_whole_text_does() {
        let text = "# comment\r\nA.One:0:*:41424344\r\n\nA.Two:0:*:45464748\nVi.Only:1:VI:4d5a\nA.Three:0:EOF-2:4142";
        let mut whole = Db::default();
        whole.add_file("t.ndb", text).unwrap();
        for piece in [1, 3, 7, 64, 1 << 20] {
            let mut read = Db::default();
            let mut pieces = Pieces::new(piece);
            read.add_read("t.ndb", std::io::Cursor::new(text.as_bytes()), &mut pieces)
                .unwrap();
            let names = |d: &Db| d.body.iter().map(BodySig::name).collect::<Vec<_>>();
            assert_eq!(names(&read), names(&whole), "piece {piece}");
            assert_eq!(read.stats, whole.stats, "piece {piece}");
            assert_eq!(read.body[2].offset, Offset::Eof(2, 0));
            // Line numbers run on across pieces.
            let err = read
                .add_read(
                    "bad.ndb",
                    std::io::Cursor::new(&b"ok:0:*:4142\r\n# c\nbroken:0:*:41zz"[..]),
                    &mut pieces,
                )
                .unwrap_err();
            assert!(
                err.starts_with("bad.ndb line 3: bad hex digit"),
                "{piece}: {err}"
            );
        }
    }

    #[test]
    fn executable_offsets_and_section_hashes() {
        let mut db = Db::default();
        db.add_file(
            "p.ndb",
            "Pe.Ep:1:EP+0:4d5a\nPe.S:1:S0+4,2:4d5a\nPe.SE:1:SE1:4d5a\n",
        )
        .unwrap();
        assert_eq!(db.body[0].offset, Offset::Entry(0, 0));
        assert_eq!(db.body[1].offset, Offset::Section(0, 4, 2));
        let err = db.add_file("q.ndb", "Pe.Any:0:EP+0:4d5a\n").unwrap_err();
        assert!(err.contains("needs target 1"), "{err}");
        let err = db
            .add_file("q.ldb", "L;Engine:51-255,Target:0;0;EP+0:4d5a\n")
            .unwrap_err();
        assert!(err.contains("needs target 1"), "{err}");
        db.add_file(
            "s.mdb",
            "512:aa15bcf478d165efd2065190eb473bcb:Sect.Md5\n*:aa15bcf478d165efd2065190eb473bcb:Sect.Any:73\n",
        )
        .unwrap();
        db.add_file(
            "s.msb",
            "4096:2ef7bde608ce5404e97d5f042f95f89f1c232871:Sect.Sha1\n",
        )
        .unwrap();
        assert_eq!(db.section_hashes.len(), 3);
        assert_eq!(db.section_hashes[0].size, 512);
        assert_eq!(db.section_hashes[1].size, ANY_SIZE);
        assert_eq!(db.section_hashes[2].kind, HashKind::Sha1);
        let err = db
            .add_file("t.mdb", "*:aa15bcf478d165efd2065190eb473bcb:NoLevel\n")
            .unwrap_err();
        assert!(err.contains("engine level of 73"), "{err}");
    }
}
