//! Scanning one object (the raw message or one decoded part) against a
//! loaded [`Db`].
//!
//! Every body and logical subsignature contributes its anchor (its longest
//! literal run). Exact anchors of four bytes or more, the bulk of any real
//! database, go behind a blocked Bloom filter of their first four bytes,
//! into a table grouped by filter word: a few bytes per signature, so half
//! a million signatures fit in a few MiB. Shorter and case-insensitive
//! anchors go into Aho-Corasick automatons. Each anchor hit is verified
//! against its full pattern and offset. Logical signatures then evaluate
//! their expressions over the subsignature match counts. Hash signatures are looked up by digest and size; an object whose
//! digest is allow-listed reports nothing; ignored names are dropped.

use std::collections::{BTreeSet, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::db::{Db, HashKind};

/// A pattern of the database: a body signature's, or a subsignature of a
/// logical signature; packed in 32 bits, as the gram table holds one per
/// anchor (the top bit says which, and a subsignature's number takes the
/// low [`SUB_BITS`]).
#[derive(Debug, Clone, Copy)]
struct PatRef(u32);

/// Bits of a subsignature's number in a [`PatRef`]: logical signatures
/// with more subsignatures are refused at load (`db::MAX_SUBSIGS`).
const SUB_BITS: u32 = 8;
const SUB_FLAG: u32 = 1 << 31;

/// What a [`PatRef`] refers to.
enum Ref {
    Body(usize),
    Sub(usize, usize),
}

impl PatRef {
    fn body(i: usize) -> Result<PatRef, String> {
        u32::try_from(i)
            .ok()
            .filter(|i| i & SUB_FLAG == 0)
            .map(PatRef)
            .ok_or_else(|| "too many body signatures".to_string())
    }
    fn sub(i: usize, j: usize) -> Result<PatRef, String> {
        if j >= 1 << SUB_BITS || i >= 1 << (31 - SUB_BITS) {
            return Err("too many logical signatures or subsignatures".into());
        }
        Ok(PatRef(SUB_FLAG | (i as u32) << SUB_BITS | j as u32))
    }
    fn get(self) -> Ref {
        if self.0 & SUB_FLAG == 0 {
            Ref::Body(self.0 as usize)
        } else {
            let v = self.0 & !SUB_FLAG;
            Ref::Sub(
                (v >> SUB_BITS) as usize,
                (v & ((1 << SUB_BITS) - 1)) as usize,
            )
        }
    }
}

/// A database ready to scan.
pub struct Matcher {
    db: Db,
    grams: Option<Grams>,
    exact: Option<(AhoCorasick, Vec<PatRef>)>,
    nocase: Option<(AhoCorasick, Vec<PatRef>)>,
    kinds: BTreeSet<HashKind>,
    /// Where each hash bucket's entries start in the sorted `db.hashes`
    /// (see [`HashIndex::bucket`]).
    hash_index: HashIndex,
    /// The same over the sorted `db.section_hashes`.
    section_index: HashIndex,
    /// The digest kinds section hash signatures use.
    section_kinds: BTreeSet<HashKind>,
}

/// The bucket index over the hash table, sorted by kind and digest.
///
/// A digest's bucket is its kind and its first `bits` bits (digests are
/// uniform); about eight entries share one, so a lookup reads the index
/// and one or two pages of the table (a binary search would read a dozen,
/// and in the sandbox each is a page fault on the image). Sized by the
/// table: a small database gets a small index.
struct HashIndex {
    bits: u32,
    /// Where each bucket starts; one more than the buckets.
    starts: Vec<u32>,
}

/// Most bits of a digest a bucket takes (4,096 buckets a kind, for about
/// 32,000 signatures of a kind and more).
const HASH_BUCKET_BITS_MAX: u32 = 12;

impl HashIndex {
    fn new(hashes: &[crate::db::HashSig]) -> HashIndex {
        let bits = (hashes.len() / 8).max(1).ilog2().min(HASH_BUCKET_BITS_MAX);
        let mut index = HashIndex {
            bits,
            starts: vec![0u32; (HashKind::ALL.len() << bits) + 1],
        };
        for h in hashes {
            let b = index.bucket(h.kind, &h.digest);
            index.starts[b + 1] += 1;
        }
        for b in 0..HashKind::ALL.len() << bits {
            index.starts[b + 1] += index.starts[b];
        }
        index
    }

    /// A digest's bucket: its kind, then its first bits.
    fn bucket(&self, kind: HashKind, digest: &[u8; 32]) -> usize {
        let top = usize::from(u16::from_be_bytes([digest[0], digest[1]]));
        kind.index() << self.bits | top >> (16 - self.bits)
    }

    /// The entries of `digest`'s bucket: a range of the sorted table.
    fn range(&self, kind: HashKind, digest: &[u8; 32]) -> std::ops::Range<usize> {
        let b = self.bucket(kind, digest);
        self.starts[b] as usize..self.starts[b + 1] as usize
    }
}

/// Bits of the gram filter: 2^22 bits, 512 KiB.
const GRAM_FILTER_BITS: u32 = 22;

/// Exact anchors of four bytes or more, by their first four bytes.
///
/// A four-byte gram picks one 64-bit word of the filter and sets
/// [`GRAM_BITS`] bits in it (a blocked Bloom filter): at 500,000
/// signatures about 3% of the grams of a message pass, against 10% with
/// one bit. The table holds the entries grouped by filter word, so a gram
/// that passes reads the few entries of its word (about seven at 500,000
/// signatures) instead of binary-searching the whole table. In the sandbox
/// all of this matters beyond the comparisons: each page of the table that
/// a scan reads is a page fault on the pre-initialised image (about 2 us on
/// the test machine), and a binary search touches a dozen pages.
struct Grams {
    filter: Box<[u64; GRAM_WORDS]>,
    /// Where each filter word's entries start in `fingerprints` and `refs`; one
    /// more than the words (the last is the number of entries).
    starts: Vec<u32>,
    /// A 16-bit fingerprint of each entry's first four anchor bytes,
    /// grouped by filter word: what a passing gram reads (a sixth of the
    /// bytes of whole entries, so a sixth of the pages). Two grams may
    /// share one; every hit is checked against the whole anchor anyway.
    fingerprints: Vec<u16>,
    /// Each entry's pattern, read only when its fingerprint matches.
    refs: Vec<PatRef>,
}

/// Bits a gram sets in its filter word.
const GRAM_BITS: u32 = 4;

/// Words of the gram filter.
const GRAM_WORDS: usize = 1 << (GRAM_FILTER_BITS - 6);

/// Positions [`Grams::passing`] looks at in one call: what bounds the
/// buffer of positions that pass.
const GRAM_CHUNK: usize = 1 << 16;

impl Grams {
    /// The filter word of gram `g`, the bits it sets there, and its
    /// fingerprint (bits of the hash that pick neither).
    fn slot(g: u32) -> (usize, u64, u16) {
        let h = u64::from(g).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let word = (h >> (64 - (GRAM_FILTER_BITS - 6))) as usize;
        let mut mask = 0u64;
        for k in 0..GRAM_BITS {
            mask |= 1 << ((h >> (6 * k)) & 63);
        }
        (word, mask, (h >> 24) as u16)
    }

    fn new(table: Vec<(u32, PatRef)>) -> Option<Grams> {
        if table.is_empty() {
            return None;
        }
        let words = GRAM_WORDS;
        let mut filter: Box<[u64; GRAM_WORDS]> = vec![0u64; words]
            .into_boxed_slice()
            .try_into()
            .expect("GRAM_WORDS words");
        let mut starts = vec![0u32; words + 1];
        // Hashed once each, then grouped by word: (word, fingerprint)
        // packed in the gram's place, so the table's buffer is reused
        // (what init frees stays in the snapshot as garbage).
        const _: () = assert!(GRAM_FILTER_BITS - 6 <= 16);
        let mut entries: Vec<(u32, PatRef)> = table
            .into_iter()
            .map(|(g, r)| {
                let (word, mask, print) = Self::slot(g);
                filter[word] |= mask;
                starts[word + 1] += 1;
                ((word as u32) << 16 | u32::from(print), r)
            })
            .collect();
        for w in 0..words {
            starts[w + 1] += starts[w];
        }
        entries.sort_unstable_by_key(|e| e.0);
        let fingerprints = entries.iter().map(|e| e.0 as u16).collect();
        let refs = entries.into_iter().map(|e| e.1).collect();
        Some(Grams {
            filter,
            starts,
            fingerprints,
            refs,
        })
    }

    /// Calls `hit(pattern, position)` for each position where a pattern's
    /// first four anchor bytes occur, and for the rare position whose four
    /// bytes only share their fingerprint: the caller checks the anchor.
    ///
    /// Two passes: [`Grams::passing`] runs the filter over a chunk of
    /// positions, then the few that pass are looked up. Fused with the
    /// lookups and the caller's checks, the loop had so many values live
    /// that the sandbox's compiler reloaded the memory base and the
    /// filter's address from the stack on every byte (see the README,
    /// "clamsig against ClamAV").
    fn scan(&self, data: &[u8], mut hit: impl FnMut(PatRef, usize)) {
        let Some(last) = data.len().checked_sub(4) else {
            return;
        };
        let mut passing = Vec::new();
        let mut from = 0;
        while from <= last {
            let to = (from + GRAM_CHUNK).min(last + 1);
            passing.clear();
            // The chunk's positions and the three bytes the last one reads.
            self.passing(&data[from..to + 3], from, &mut passing);
            for &i in &passing {
                let g = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                let (word, _, print) = Self::slot(g);
                let (lo, hi) = (self.starts[word] as usize, self.starts[word + 1] as usize);
                for (k, e) in self.fingerprints[lo..hi].iter().enumerate() {
                    if *e == print {
                        hit(self.refs[lo + k], i);
                    }
                }
            }
            from = to;
        }
    }

    /// Appends to `out` `base` plus each position of `data` whose gram
    /// passes the filter.
    ///
    /// Eight positions at a time: their eight filter words are loaded
    /// before any is tested, so that the loads (which miss the cache at
    /// random) overlap instead of waiting on each other's branch.
    #[inline(never)]
    fn passing(&self, data: &[u8], base: usize, out: &mut Vec<usize>) {
        const LANES: usize = 8;
        let filter: &[u64; GRAM_WORDS] = &self.filter;
        let test = |w: &[u8]| {
            let (word, mask, _) = Self::slot(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            filter[word] & mask == mask
        };
        let positions = data.len().saturating_sub(3);
        let mut at = 0;
        while at + LANES <= positions {
            let window = &data[at..at + LANES + 3];
            let mut pass = 0u32;
            for k in 0..LANES {
                pass |= u32::from(test(&window[k..k + 4])) << k;
            }
            while pass != 0 {
                out.push(base + at + pass.trailing_zeros() as usize);
                pass &= pass - 1;
            }
            at += LANES;
        }
        for i in at..positions {
            if test(&data[i..i + 4]) {
                out.push(base + i);
            }
        }
    }
}

/// The digests of `data` of the given kinds, zero-padded to 32 bytes as
/// [`crate::db::HashSig`] holds them, each computed as it is iterated.
///
/// Nothing is allocated: the message and every object in it are hashed.
fn digests_of<'a>(
    kinds: &'a BTreeSet<HashKind>,
    data: &'a [u8],
) -> impl Iterator<Item = (HashKind, [u8; 32])> + 'a {
    kinds.iter().map(move |k| match k {
        HashKind::Md5 => (HashKind::Md5, crate::db::padded(&Md5::digest(data))),
        HashKind::Sha1 => (HashKind::Sha1, crate::db::padded(&Sha1::digest(data))),
        HashKind::Sha256 => (HashKind::Sha256, crate::db::padded(&Sha256::digest(data))),
    })
}

/// Which ClamAV target types apply to an object.
#[derive(Debug, Clone, Copy)]
pub struct Targets(u16);

impl Targets {
    /// From a list of target type numbers.
    pub fn of(types: &[u8]) -> Self {
        Targets(types.iter().fold(0, |m, &t| m | (1 << t)))
    }
    fn has(self, t: u8) -> bool {
        t < 16 && self.0 & (1 << t) != 0
    }
}

fn build(
    keys: Vec<(Vec<u8>, PatRef)>,
    nocase: bool,
) -> Result<Option<(AhoCorasick, Vec<PatRef>)>, String> {
    if keys.is_empty() {
        return Ok(None);
    }
    let (pats, refs): (Vec<Vec<u8>>, Vec<PatRef>) = keys.into_iter().unzip();
    let ac = AhoCorasickBuilder::new()
        .match_kind(MatchKind::Standard)
        .ascii_case_insensitive(nocase)
        .build(&pats)
        .map_err(|e| format!("cannot build the matcher: {e}"))?;
    Ok(Some((ac, refs)))
}

impl Matcher {
    /// Builds the automatons for `db`.
    pub fn new(mut db: Db) -> Result<Matcher, String> {
        // Loading grew these by doubling; the matcher keeps them for the
        // generation's life (and in its snapshot).
        db.body.shrink_to_fit();
        db.logical.shrink_to_fit();
        db.hashes.shrink_to_fit();
        db.hashes.sort_unstable_by_key(|h| (h.kind, h.digest));
        let hash_index = HashIndex::new(&db.hashes);
        db.section_hashes.shrink_to_fit();
        db.section_hashes
            .sort_unstable_by_key(|h| (h.kind, h.digest));
        let section_index = HashIndex::new(&db.section_hashes);
        let section_kinds = db.section_hashes.iter().map(|h| h.kind).collect();
        // Sized once: what init frees stays in the snapshot as garbage.
        let patterns = db.body.len() + db.logical.iter().map(|l| l.subs.len()).sum::<usize>();
        let (mut grams, mut exact, mut nocase) =
            (Vec::with_capacity(patterns), Vec::new(), Vec::new());
        let mut add = |p: &crate::pattern::Pattern, r: PatRef| {
            let key = p.key();
            if p.key_nocase {
                nocase.push((key.to_vec(), r));
            } else if key.len() >= 4 {
                grams.push((u32::from_le_bytes([key[0], key[1], key[2], key[3]]), r));
            } else {
                exact.push((key.to_vec(), r));
            }
        };
        for (i, s) in db.body.iter().enumerate() {
            add(&s.pattern, PatRef::body(i)?);
        }
        for (i, l) in db.logical.iter().enumerate() {
            for (j, (_, p)) in l.subs.iter().enumerate() {
                // A PCRE subsignature's placeholder is never looked for.
                if l.pcres.iter().any(|p| p.index == j) {
                    continue;
                }
                add(p, PatRef::sub(i, j)?);
            }
        }
        let mut kinds: BTreeSet<HashKind> = db.hashes.iter().map(|h| h.kind).collect();
        kinds.extend(db.allow.iter().map(|(k, _, _)| *k));
        Ok(Matcher {
            grams: Grams::new(grams),
            exact: build(exact, false)?,
            nocase: build(nocase, true)?,
            kinds,
            hash_index,
            section_index,
            section_kinds,
            db,
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The digests of `data` this database can use (see [`digests_of`]).
    fn digests<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = (HashKind, [u8; 32])> + 'a {
        digests_of(&self.kinds, data)
    }

    /// Names of the section hash signatures (.mdb, .msb) the sections of
    /// the executable `data`, laid out as `layout`, match.
    pub fn section_matches(&self, data: &[u8], layout: &crate::offset::Layout) -> Vec<String> {
        let mut out = Vec::new();
        if self.db.section_hashes.is_empty() {
            return out;
        }
        for &(at, size) in &layout.sections {
            let Some(section) = at.checked_add(size).and_then(|end| data.get(at..end)) else {
                continue;
            };
            if size == 0 {
                continue;
            }
            for (kind, digest) in digests_of(&self.section_kinds, section) {
                let range = self.section_index.range(kind, &digest);
                out.extend(
                    self.db.section_hashes[range]
                        .iter()
                        .filter(|s| s.kind == kind && s.digest == digest)
                        .filter(|s| s.size == crate::db::ANY_SIZE || s.size == size as u64)
                        .map(|s| s.name()),
                );
            }
        }
        out
    }

    /// Whether `hashed` (the bytes whose digests identify the object) is
    /// allow-listed.
    pub fn allowed(&self, hashed: &[u8]) -> bool {
        if self.db.allow.is_empty() {
            return false;
        }
        let size = hashed.len() as u64;
        self.digests(hashed).any(|(k, d)| {
            let d = d[..k.digest_len()].to_vec();
            self.db.allow.contains(&(k, d.clone(), Some(size)))
                || self.db.allow.contains(&(k, d, None))
        })
    }

    /// Names of the hash signatures `hashed` matches.
    pub fn hash_matches(&self, hashed: &[u8]) -> Vec<String> {
        if self.db.hashes.is_empty() {
            return Vec::new();
        }
        let size = hashed.len() as u64;
        let mut out = Vec::new();
        for (kind, digest) in self.digests(hashed) {
            let range = self.hash_index.range(kind, &digest);
            out.extend(
                self.db.hashes[range]
                    .iter()
                    .filter(|s| s.kind == kind && s.digest == digest)
                    .filter(|s| s.size == crate::db::ANY_SIZE || s.size == size)
                    .map(|s| s.name()),
            );
        }
        out
    }

    /// Names of the body and logical signatures matching `data` among those
    /// whose target is in `targets`.
    pub fn body_matches(&self, data: &[u8], targets: Targets) -> Vec<String> {
        self.body_matches_in(data, targets, None)
    }

    /// As [`Matcher::body_matches`], for an executable laid out as
    /// `layout` (the PE-relative offsets apply only with one).
    pub fn body_matches_in(
        &self,
        data: &[u8],
        targets: Targets,
        layout: Option<&crate::offset::Layout>,
    ) -> Vec<String> {
        let len = data.len();
        let mut body_hits: BTreeSet<usize> = BTreeSet::new();
        let mut counts: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut on_hit = |r: PatRef, at: usize| match r.get() {
            Ref::Body(i) => {
                if body_hits.contains(&i) {
                    return;
                }
                let s = &self.db.body[i];
                if targets.has(s.target)
                    && s.pattern.key_matches(data, at)
                    && s.pattern
                        .verify(data, at, &|st| s.offset.allows(st, len, layout))
                        .is_some()
                {
                    body_hits.insert(i);
                }
            }
            Ref::Sub(i, j) => {
                let l = &self.db.logical[i];
                if !l.target.is_none_or(|t| targets.has(t)) {
                    return;
                }
                let (offset, p) = &l.subs[j];
                if p.key_matches(data, at)
                    && p.verify(data, at, &|st| offset.allows(st, len, layout))
                        .is_some()
                {
                    counts.entry(i).or_insert_with(|| vec![0; l.subs.len()])[j] += 1;
                }
            }
        };
        if let Some(g) = &self.grams {
            g.scan(data, &mut on_hit);
        }
        for (ac, refs) in [&self.exact, &self.nocase].into_iter().flatten() {
            for m in ac.find_overlapping_iter(data) {
                on_hit(refs[m.pattern().as_usize()], m.start());
            }
        }
        let mut names: Vec<String> = body_hits
            .into_iter()
            .map(|i| self.db.body[i].name())
            .collect();
        // Logical signatures can be true with no subsignature matched
        // (`0<2`): evaluate every one that applies, with zero counts.
        let zero: Vec<u64> = Vec::new();
        for (i, l) in self.db.logical.iter().enumerate() {
            if !l.target.is_none_or(|t| targets.has(t)) {
                continue;
            }
            if let Some((lo, hi)) = l.file_size
                && !(lo..=hi).contains(&(len as u64))
            {
                continue;
            }
            let c = counts.get(&i).unwrap_or(&zero);
            let matched = if l.pcres.is_empty() {
                l.expr.eval(c)
            } else {
                // Each PCRE runs when its trigger holds on what the others
                // matched.
                let mut c = c.clone();
                c.resize(l.subs.len(), 0);
                for p in &l.pcres {
                    if p.trigger.eval(&c) {
                        c[p.index] = p.count(data, layout);
                    }
                }
                l.expr.eval(&c)
            };
            if matched {
                names.push(l.name());
            }
        }
        names
    }

    /// Drops ignored names and duplicates, keeping order.
    pub fn finish(&self, names: Vec<String>) -> Vec<String> {
        let mut seen = BTreeSet::new();
        names
            .into_iter()
            .filter(|n| !self.db.ignored.contains(n.trim_end_matches(".UNOFFICIAL")))
            .filter(|n| seen.insert(n.clone()))
            .collect()
    }
}

/// Text as ClamAV normalises it for target types 3 and 7: ASCII lower case,
/// each run of white space one space.
pub fn normalise_text(data: &[u8]) -> Vec<u8> {
    // Two passes, each a loop the compilers turn into vector code: every
    // byte mapped, then each run of spaces cut to its first, by finding
    // two spaces in a row (`memmem`) and moving what lies between.
    let mut out: Vec<u8> = data
        .iter()
        .map(|&b| {
            if b.is_ascii_whitespace() {
                b' '
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect();
    let pair = memchr::memmem::Finder::new(b"  ");
    let Some(first) = pair.find(&out) else {
        return out;
    };
    // `out[..write]` is done; `out[read..]` is still as mapped.
    let mut write = first + 1;
    let mut read = first + 1;
    while read < out.len() {
        read += out[read..].iter().take_while(|&&b| b == b' ').count();
        let next = pair.find(&out[read..]).map_or(out.len(), |k| read + k + 1);
        out.copy_within(read..next, write);
        write += next - read;
        read = next;
    }
    out.truncate(write);
    out
}

/// A decoded text part as clamscan writes it out (and so hashes and
/// matches it): line by line, each line ended with LF, so CRLF becomes LF
/// and a last line without an end gets one.
pub fn text_as_hashed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    let mut from = 0;
    for cr in memchr::memchr_iter(b'\r', data) {
        if data.get(cr + 1) == Some(&b'\n') {
            out.extend_from_slice(&data[from..cr]);
            from = cr + 1;
        }
    }
    out.extend_from_slice(&data[from..]);
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// Whether content is text (no control bytes but white space and ESC in its
/// first 4 KiB; bytes above 0x7f allowed for UTF-8 and Latin-1).
pub fn looks_textual(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    !head.is_empty()
        && head
            .iter()
            .all(|&b| b >= 0x20 && b != 0x7f || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
}

/// Whether text content looks like HTML (clamscan types files by content).
pub fn looks_like_html(data: &[u8]) -> bool {
    const TAGS: [&[u8]; 8] = [
        b"html", b"body", b"iframe", b"script", b"head", b"a href", b"div", b"table",
    ];
    let head = &data[..data.len().min(4096)];
    memchr::memchr_iter(b'<', head).any(|lt| {
        let rest = &head[lt + 1..];
        TAGS.iter().any(|t| {
            rest.get(..t.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(t))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gram filter runs over chunks of positions, eight at a time: an
    /// anchor found across a chunk's end, in the last lanes, at the very
    /// start and at the very end of the data.
    #[test]
    fn anchors_are_found_across_chunks_and_lanes() {
        let m = matcher(&[("t.ndb", "Edge.Sig:0:*:41424344454647\n")]);
        let sig = b"ABCDEFG";
        for at in [
            0,
            5,
            7,
            8,
            GRAM_CHUNK - 4,
            GRAM_CHUNK - 3,
            GRAM_CHUNK,
            2 * GRAM_CHUNK + 1,
        ] {
            for tail in [0, 1, 9] {
                let mut data = vec![b'.'; at];
                data.extend_from_slice(sig);
                data.extend(std::iter::repeat_n(b'.', tail));
                assert_eq!(
                    m.body_matches(&data, Targets::of(&[0])),
                    vec!["Edge.Sig.UNOFFICIAL".to_string()],
                    "anchor at {at}, {tail} bytes after it"
                );
                data[at + 6] = b'.';
                assert!(m.body_matches(&data, Targets::of(&[0])).is_empty());
            }
        }
    }

    /// The byte-at-a-time forms these functions had before they were
    /// written for speed, on inputs that hit each case.
    #[test]
    fn text_helpers_agree_with_their_plain_forms() {
        fn normalise(data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut in_space = false;
            for &b in data {
                if b.is_ascii_whitespace() {
                    if !in_space {
                        out.push(b' ');
                    }
                    in_space = true;
                } else {
                    out.push(b.to_ascii_lowercase());
                    in_space = false;
                }
            }
            out
        }
        fn hashed(data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, &b) in data.iter().enumerate() {
                if !(b == b'\r' && data.get(i + 1) == Some(&b'\n')) {
                    out.push(b);
                }
            }
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out
        }
        fn html(data: &[u8]) -> bool {
            let lower = data[..data.len().min(4096)].to_ascii_lowercase();
            [
                &b"<html"[..],
                b"<body",
                b"<iframe",
                b"<script",
                b"<head",
                b"<a href",
                b"<div",
                b"<table",
            ]
            .iter()
            .any(|t| lower.windows(t.len()).any(|w| w == *t))
        }
        let mut late = vec![b'x'; 4090];
        late.extend_from_slice(b"<TABLE>");
        let inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\r".to_vec(),
            b"\r\n".to_vec(),
            b"a\r\r\nb\rc\n".to_vec(),
            b"  Hello,\t\tWORLD \r\n\x0c end  ".to_vec(),
            b"<p>x</p><A HREF=y>".to_vec(),
            b"<a  href><BoDy".to_vec(),
            b"text <scrip".to_vec(),
            b"<".to_vec(),
            late,
            (0..=255u8).cycle().take(5000).collect(),
            b" ".to_vec(),
            b"   ".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"a b  c   d    e\t\r\n".to_vec(),
            b" \t x \t".to_vec(),
            b"a  ".repeat(3000),
        ];
        for input in &inputs {
            assert_eq!(normalise_text(input), normalise(input), "{input:?}");
            assert_eq!(text_as_hashed(input), hashed(input), "{input:?}");
            assert_eq!(looks_like_html(input), html(input), "{input:?}");
        }
        assert!(looks_like_html(b"<p>x</p><A HREF=y>"));
        assert!(!looks_like_html(b"<a  href>"));
    }

    fn matcher(files: &[(&str, &str)]) -> Matcher {
        let mut db = Db::default();
        for (f, t) in files {
            db.add_file(f, t).unwrap();
        }
        Matcher::new(db).unwrap()
    }

    #[test]
    fn body_logical_hash_allow_and_ignore() {
        let m = matcher(&[
            (
                "t.ndb",
                "Ab:0:*:4142\nMailOnly:4:*:4d41494c\nAtZero:0:0:5858\nNearEnd:0:EOF-2:5959\n",
            ),
            (
                "t.ldb",
                "Both;Target:0;0&1;6f6e65;74776f::i\nAbsent;Target:0;0<1;7a7a7a\n",
            ),
            ("t.hdb", &format!("{:x}:3:Hashed\n", Md5::digest(b"abc"))),
            ("t.ign2", "Ab\n"),
        ]);
        let any = Targets::of(&[0]);
        let names = m.finish(m.body_matches(b"XXAB one TWO YY", any));
        assert_eq!(
            names,
            [
                "AtZero.UNOFFICIAL",
                "NearEnd.UNOFFICIAL",
                "Both.UNOFFICIAL",
                "Absent.UNOFFICIAL"
            ]
        );
        // Target 4 only where mail targets apply.
        assert!(
            m.body_matches(b"MAIL", any)
                .iter()
                .all(|n| n != "MailOnly.UNOFFICIAL")
        );
        assert!(
            m.body_matches(b"MAIL", Targets::of(&[0, 4]))
                .contains(&"MailOnly.UNOFFICIAL".to_string())
        );
        assert_eq!(m.hash_matches(b"abc"), ["Hashed.UNOFFICIAL"]);
        assert!(m.hash_matches(b"abcd").is_empty());

        let allow = matcher(&[("a.fp", &format!("{:x}:3:Whatever\n", Md5::digest(b"abc")))]);
        assert!(allow.allowed(b"abc"));
        assert!(!allow.allowed(b"abd"));
    }

    #[test]
    fn every_exact_anchor_is_found_among_many_sharing_grams_and_filter_words() {
        // 20,000 eight-byte anchors from a small alphabet: many share their
        // first four bytes, and the filter words hold many entries each.
        let mut x: u32 = 12345;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let anchors: Vec<[u8; 8]> = (0..20_000)
            .map(|_| {
                let mut a = [0u8; 8];
                for b in &mut a {
                    *b = b'a' + (next() % 6) as u8;
                }
                a
            })
            .collect();
        let text: String = anchors
            .iter()
            .enumerate()
            .map(|(i, a)| format!("S{i}:0:*:{}\n", hex(a)))
            .collect();
        let m = matcher(&[("t.ndb", &text)]);
        for probe in [0usize, 1, 777, 19_999] {
            let mut data = b"0123456789".to_vec();
            data.extend_from_slice(&anchors[probe]);
            data.extend_from_slice(b"9876543210");
            let found = m.body_matches(&data, Targets::of(&[0]));
            // Every signature whose anchor is that same string, and no other.
            let mut want: Vec<String> = anchors
                .iter()
                .enumerate()
                .filter(|(_, a)| **a == anchors[probe])
                .map(|(i, _)| format!("S{i}.UNOFFICIAL"))
                .collect();
            let mut got = found.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "probe {probe}");
        }
        assert!(m.body_matches(b"0123456789", Targets::of(&[0])).is_empty());
    }

    #[test]
    fn every_hash_signature_is_found_by_kind_digest_and_size() {
        let mut hdb = String::new();
        let mut hsb = String::new();
        for i in 0..3000 {
            let data = format!("object {i}");
            hdb.push_str(&format!(
                "{}:{}:Md5.{i}\n",
                hex(&Md5::digest(&data)),
                data.len()
            ));
            if i % 3 == 0 {
                hsb.push_str(&format!(
                    "{}:*:Sha256.{i}:73\n",
                    hex(&Sha256::digest(&data))
                ));
            }
            if i % 5 == 0 {
                // The right digest with the wrong size never matches.
                hsb.push_str(&format!(
                    "{}:{}:Sha1.{i}\n",
                    hex(&Sha1::digest(&data)),
                    data.len() + 1
                ));
            }
        }
        let m = matcher(&[("t.hdb", &hdb), ("t.hsb", &hsb)]);
        for i in [0usize, 1, 3, 5, 1234, 2999] {
            let mut got = m.hash_matches(format!("object {i}").as_bytes());
            got.sort();
            let mut want = vec![format!("Md5.{i}.UNOFFICIAL")];
            if i % 3 == 0 {
                want.push(format!("Sha256.{i}.UNOFFICIAL"));
            }
            want.sort();
            assert_eq!(got, want, "object {i}");
        }
        assert!(m.hash_matches(b"object 3000").is_empty());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn text_helpers() {
        assert_eq!(normalise_text(b"Hello \r\n\t World"), b"hello world");
        assert_eq!(text_as_hashed(b"a\r\nb"), b"a\nb\n");
        assert_eq!(text_as_hashed(b"a\r\nb\r\n"), b"a\nb\n");
        assert!(looks_like_html(b"hi <IFRAME src=x>"));
        assert!(!looks_like_html(b"plain"));
    }
}
