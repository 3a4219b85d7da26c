//! ClamAV body patterns (the hex part of .ndb and .ldb signatures): parsing
//! and matching.
//!
//! Supported, with ClamAV's meaning: hex bytes; `??` any byte; `a?` and `?a`
//! nibble wildcards; `*` any number of bytes; `{n}`, `{-n}`, `{n-}`,
//! `{n-m}` and `[n-m]` bounded gaps; `(aa|bb)` alternatives (generic: the
//! alternatives may differ in length and hold nibble wildcards); `!(aa|bb)`
//! negated fixed-length alternatives. The `i` (case-insensitive) and `w`
//! (wide: each byte followed by NUL) modifiers of logical subsignatures are
//! applied at parse time.
//!
//! A pattern is matched by anchoring: its longest run of literal bytes is
//! the key handed to Aho-Corasick, and each hit is verified by matching the
//! tokens before the anchor backwards and the tokens after it forwards, with
//! backtracking over gaps.

/// One byte test: `(value & mask) == want`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteTest {
    /// Bits that must match.
    pub mask: u8,
    /// Their value.
    pub want: u8,
    /// Also accept the other ASCII case.
    pub nocase: bool,
}

impl ByteTest {
    fn exact(b: u8) -> Self {
        Self {
            mask: 0xff,
            want: b,
            nocase: false,
        }
    }
    #[inline]
    fn test(self, b: u8) -> bool {
        if self.nocase {
            (b.to_ascii_lowercase() & self.mask) == self.want
        } else {
            (b & self.mask) == self.want
        }
    }
    /// The byte this test accepts, if only one (up to ASCII case when
    /// `nocase`).
    fn literal(self) -> Option<u8> {
        (self.mask == 0xff).then_some(self.want)
    }
}

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A run of exact bytes (most of most signatures: kept compact).
    Lit(Box<[u8]>),
    /// One byte test.
    Byte(ByteTest),
    /// Between `min` and `max` (None: unbounded) bytes of anything.
    Gap {
        /// At least.
        min: usize,
        /// At most.
        max: Option<usize>,
    },
    /// One of several byte sequences.
    Alt(Vec<Vec<ByteTest>>),
    /// Any sequence of this length that is none of these.
    NotAlt(Vec<Vec<ByteTest>>),
}

/// A parsed body pattern.
///
/// A database holds hundreds of thousands of these for the life of a
/// generation (and in its snapshot), and all but the anchor is read only
/// when the anchor is found: the tokens are kept encoded in one allocation
/// (see [`encode`]) and decoded on a hit. As `Tok`s they took several
/// allocations and about three times the bytes.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// A header of four LEB128 numbers: the index range of the anchor (a
    /// run of literal bytes) in the tokens, then where the anchor's bytes
    /// start (counted from the end of the header) and how many there are;
    /// then the encoded tokens; then the anchor's bytes when they are not
    /// one `Lit` token (a run of case-insensitive byte tests).
    code: Box<[u8]>,
    /// The anchor is to be found regardless of ASCII case.
    pub key_nocase: bool,
}

/// A pattern's header, read.
struct Header {
    /// Index range of the anchor in the tokens.
    anchor: (usize, usize),
    /// Where the tokens start in the code.
    tokens: usize,
    /// Byte range of the anchor's bytes in the code.
    key: (usize, usize),
}

/// Bytes of `v` as LEB128.
fn varint_len(v: usize) -> usize {
    (usize::BITS - v.leading_zeros()).div_ceil(7).max(1) as usize
}

/// A pattern's code: the header for `anchor` and `key` (relative to the
/// start of `tokens`), then `tokens`, in one allocation of the exact size.
fn assemble(anchor: (usize, usize), key: (usize, usize), tokens: &[u8]) -> Box<[u8]> {
    let head = [anchor.0, anchor.1, key.0, key.1];
    let head_len: usize = head.iter().map(|v| varint_len(*v)).sum();
    let mut code = Vec::with_capacity(head_len + tokens.len());
    for v in head {
        put_varint(&mut code, v);
    }
    code.extend_from_slice(tokens);
    code.into_boxed_slice()
}

const OP_LIT: u8 = 0;
const OP_BYTE: u8 = 1;
const OP_GAP: u8 = 2;
const OP_ALT: u8 = 3;
const OP_NOT_ALT: u8 = 4;

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tests(out: &mut Vec<u8>, seq: &[ByteTest]) {
    put_varint(out, seq.len());
    for b in seq {
        out.extend_from_slice(&[b.mask, b.want, u8::from(b.nocase)]);
    }
}

/// Encodes `toks`, returning the code and where each `Lit` token's bytes
/// start in it: an opcode per token; `Lit`: length, bytes; `Byte`: mask,
/// value, nocase; `Gap`: min, then max + 1 or 0 for unbounded; `Alt` and
/// `NotAlt`: the count, then each sequence as its length and its tests.
/// Numbers are LEB128.
fn encode(toks: &[Tok]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut lit_at = Vec::with_capacity(toks.len());
    for t in toks {
        match t {
            Tok::Lit(b) => {
                out.push(OP_LIT);
                put_varint(&mut out, b.len());
                lit_at.push(out.len());
                out.extend_from_slice(b);
            }
            Tok::Byte(b) => {
                lit_at.push(usize::MAX);
                out.extend_from_slice(&[OP_BYTE, b.mask, b.want, u8::from(b.nocase)]);
            }
            Tok::Gap { min, max } => {
                lit_at.push(usize::MAX);
                out.push(OP_GAP);
                put_varint(&mut out, *min);
                put_varint(&mut out, max.map_or(0, |m| m + 1));
            }
            Tok::Alt(alts) | Tok::NotAlt(alts) => {
                lit_at.push(usize::MAX);
                out.push(if matches!(t, Tok::Alt(_)) {
                    OP_ALT
                } else {
                    OP_NOT_ALT
                });
                put_varint(&mut out, alts.len());
                for a in alts {
                    put_tests(&mut out, a);
                }
            }
        }
    }
    (out, lit_at)
}

/// Reads what [`encode`] wrote.
struct Decoder<'a> {
    code: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.code[self.at];
        self.at += 1;
        b
    }
    fn varint(&mut self) -> usize {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let b = self.byte();
            v |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn test(&mut self) -> ByteTest {
        ByteTest {
            mask: self.byte(),
            want: self.byte(),
            nocase: self.byte() != 0,
        }
    }
    fn tests(&mut self) -> Vec<ByteTest> {
        let n = self.varint();
        (0..n).map(|_| self.test()).collect()
    }
    fn tok(&mut self) -> Tok {
        match self.byte() {
            OP_LIT => {
                let n = self.varint();
                let b = self.code[self.at..self.at + n].into();
                self.at += n;
                Tok::Lit(b)
            }
            OP_BYTE => Tok::Byte(self.test()),
            OP_GAP => {
                let min = self.varint();
                let max = self.varint().checked_sub(1);
                Tok::Gap { min, max }
            }
            op => {
                let n = self.varint();
                let alts = (0..n).map(|_| self.tests()).collect();
                if op == OP_ALT {
                    Tok::Alt(alts)
                } else {
                    Tok::NotAlt(alts)
                }
            }
        }
    }
}

/// Modifiers of a logical subsignature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// `i`: case-insensitive.
    pub nocase: bool,
    /// `w`: wide (UTF-16LE of ASCII).
    pub wide: bool,
    /// `a`: also ASCII when wide.
    pub ascii: bool,
}

/// The value of one hex digit.
fn hexval(c: u8) -> Option<u8> {
    let v = HEX[usize::from(c)];
    (v & NOT_HEX == 0).then_some(v)
}

/// Marks a byte that is not a hex digit in [`HEX`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a hex digit, or [`NOT_HEX`].
const HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Appends the bytes of the hex digit pairs in `hex` (of even length) to
/// `out`; false, with `out` holding garbage, when one is not a hex digit.
/// Without an exit per digit (a database has millions of them).
pub(crate) fn decode_hex_into(hex: &[u8], out: &mut Vec<u8>) -> bool {
    let mut bad = 0u8;
    for pair in hex.chunks_exact(2) {
        let (h, l) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= h | l;
        out.push(h << 4 | (l & 0x0f));
    }
    bad & NOT_HEX == 0 && hex.len().is_multiple_of(2)
}

fn parse_byte(hi: u8, lo: u8) -> Result<ByteTest, String> {
    match (hi, lo) {
        (b'?', b'?') => Ok(ByteTest {
            mask: 0,
            want: 0,
            nocase: false,
        }),
        (b'?', l) => {
            let l = hexval(l).ok_or_else(|| format!("bad hex digit {:?}", l as char))?;
            Ok(ByteTest {
                mask: 0x0f,
                want: l,
                nocase: false,
            })
        }
        (h, b'?') => {
            let h = hexval(h).ok_or_else(|| format!("bad hex digit {:?}", h as char))?;
            Ok(ByteTest {
                mask: 0xf0,
                want: h << 4,
                nocase: false,
            })
        }
        (h, l) => {
            let h = hexval(h).ok_or_else(|| format!("bad hex digit {:?}", h as char))?;
            let l = hexval(l).ok_or_else(|| format!("bad hex digit {:?}", l as char))?;
            Ok(ByteTest::exact((h << 4) | l))
        }
    }
}

fn parse_bytes(s: &[u8]) -> Result<Vec<ByteTest>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of hex digits in {:?}",
            String::from_utf8_lossy(s)
        ));
    }
    s.chunks(2).map(|c| parse_byte(c[0], c[1])).collect()
}

fn parse_range(s: &str) -> Result<(usize, Option<usize>), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("bad number {t:?} in range {s:?}"))
    };
    match s.split_once('-') {
        None => {
            let n = num(s)?;
            Ok((n, Some(n)))
        }
        Some(("", m)) => Ok((0, Some(num(m)?))),
        Some((n, "")) => Ok((num(n)?, None)),
        Some((n, m)) => {
            let (n, m) = (num(n)?, num(m)?);
            if m < n {
                return Err(format!("range {s:?} ends before it starts"));
            }
            Ok((n, Some(m)))
        }
    }
}

impl Pattern {
    /// Parses a hex body pattern. `Err` says what is wrong; an unsupported
    /// construct is an error starting with `unsupported`.
    pub fn parse(src: &str, m: Modifiers) -> Result<Pattern, String> {
        let s = src.as_bytes();
        // Most signatures are plain hex: one literal, without the token
        // list the general parser builds and merges (a large database
        // loads about a third faster).
        if m == Modifiers::default()
            && !s.is_empty()
            && s.len().is_multiple_of(2)
            && let Some(p) = Pattern::literal_hex(s)
        {
            return Ok(p);
        }
        let mut toks = Vec::new();
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'*' => {
                    toks.push(Tok::Gap { min: 0, max: None });
                    i += 1;
                }
                b'{' | b'[' => {
                    let close = if s[i] == b'{' { b'}' } else { b']' };
                    let end = s[i..]
                        .iter()
                        .position(|&c| c == close)
                        .ok_or("unclosed gap")?
                        + i;
                    let (min, max) = parse_range(&src[i + 1..end])?;
                    toks.push(Tok::Gap { min, max });
                    i = end + 1;
                }
                b'!' | b'(' => {
                    let negate = s[i] == b'!';
                    let open = if negate { i + 1 } else { i };
                    if s.get(open) != Some(&b'(') {
                        return Err("'!' must be followed by '('".into());
                    }
                    let end = s[open..]
                        .iter()
                        .position(|&c| c == b')')
                        .ok_or("unclosed '('")?
                        + open;
                    let body = &src[open + 1..end];
                    if matches!(body, "B" | "L" | "W") {
                        return Err(format!("unsupported boundary anchor ({body})"));
                    }
                    let alts = body
                        .split('|')
                        .map(|a| parse_bytes(a.as_bytes()))
                        .collect::<Result<Vec<_>, _>>()?;
                    if alts.iter().any(|a| a.is_empty()) {
                        return Err("empty alternative".into());
                    }
                    if negate {
                        if alts.iter().any(|a| a.len() != alts[0].len()) {
                            return Err("negated alternatives must have one length".into());
                        }
                        toks.push(Tok::NotAlt(alts));
                    } else {
                        toks.push(Tok::Alt(alts));
                    }
                    i = end + 1;
                }
                _ => {
                    if i + 1 >= s.len() {
                        return Err("odd number of hex digits".into());
                    }
                    toks.push(Tok::Byte(parse_byte(s[i], s[i + 1])?));
                    i += 2;
                }
            }
        }
        if m.wide {
            toks = widen(toks);
        }
        if m.nocase {
            fold_case(&mut toks);
        }
        Pattern::from_toks(compact(toks))
            .ok_or_else(|| format!("pattern {src:?} has no literal byte to anchor on"))
    }

    /// A pattern of one literal straight from its hex (most signatures):
    /// its code written in one allocation of the exact size, no tokens.
    fn literal_hex(hex: &[u8]) -> Option<Pattern> {
        let n = hex.len() / 2;
        let start = 1 + varint_len(n);
        let head = [0, 1, start, n];
        let head_len: usize = head.iter().map(|v| varint_len(*v)).sum();
        let mut code = Vec::with_capacity(head_len + start + n);
        for v in head {
            put_varint(&mut code, v);
        }
        code.push(OP_LIT);
        put_varint(&mut code, n);
        if !decode_hex_into(hex, &mut code) {
            return None;
        }
        debug_assert_eq!(code.len(), code.capacity());
        Some(Pattern {
            code: code.into_boxed_slice(),
            key_nocase: false,
        })
    }

    fn from_toks(toks: Vec<Tok>) -> Option<Pattern> {
        // The anchor is the longest exact run (one `Lit`), or failing that
        // the longest run of case-insensitive literal bytes.
        let mut best: Option<((usize, usize), usize, bool)> = None;
        let mut consider = |range: (usize, usize), len: usize, nocase: bool| {
            if len > 0 && best.is_none_or(|(_, l, _)| len > l) {
                best = Some((range, len, nocase));
            }
        };
        let mut run_start = None;
        for (i, t) in toks.iter().enumerate() {
            if let Tok::Lit(b) = t {
                consider((i, i + 1), b.len(), false);
            }
            let nocase_lit = matches!(t, Tok::Byte(b) if b.nocase && b.literal().is_some());
            match (nocase_lit, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(s)) => {
                    consider((s, i), i - s, true);
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run_start {
            consider((s, toks.len()), toks.len() - s, true);
        }
        let (anchor, _, key_nocase) = best?;
        let (mut code, lit_at) = encode(&toks);
        let key = match &toks[anchor.0] {
            Tok::Lit(b) if !key_nocase => (lit_at[anchor.0], b.len()),
            _ => {
                let start = code.len();
                code.extend(toks[anchor.0..anchor.1].iter().filter_map(|t| match t {
                    Tok::Byte(b) => b.literal(),
                    _ => None,
                }));
                (start, code.len() - start)
            }
        };
        Some(Pattern {
            code: assemble(anchor, key, &code),
            key_nocase,
        })
    }

    /// The header, read.
    fn header(&self) -> Header {
        let mut d = Decoder {
            code: &self.code,
            at: 0,
        };
        let anchor = (d.varint(), d.varint());
        let (start, len) = (d.varint(), d.varint());
        Header {
            anchor,
            tokens: d.at,
            key: (d.at + start, len),
        }
    }

    /// The tokens, decoded.
    fn toks(&self) -> Vec<Tok> {
        let h = self.header();
        // A case-insensitive anchor's bytes were copied after the tokens;
        // an exact one is a `Lit` token's bytes.
        let end = if self.key_nocase {
            h.key.0
        } else {
            self.code.len()
        };
        let mut d = Decoder {
            code: &self.code[..end],
            at: h.tokens,
        };
        let mut toks = Vec::new();
        while d.at < end {
            toks.push(d.tok());
        }
        toks
    }

    /// The anchor's bytes: the literal run found first, then verified.
    pub fn key(&self) -> &[u8] {
        let (start, len) = self.header().key;
        &self.code[start..start + len]
    }

    /// Whether the whole anchor is at `at` (a gram hit only vouches for
    /// its first four bytes; an automaton hit for all of it).
    pub fn key_matches(&self, data: &[u8], at: usize) -> bool {
        let key = self.key();
        match data.get(at..at + key.len()) {
            Some(w) if self.key_nocase => w.eq_ignore_ascii_case(key),
            Some(w) => w == key,
            None => false,
        }
    }

    /// All match start positions given an anchor hit at `at` (the position
    /// of `key` in `data`), filtered by `start_ok`. Returns the first start
    /// that allows a full match.
    pub fn verify(
        &self,
        data: &[u8],
        at: usize,
        start_ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let h = self.header();
        // One exact literal (most signatures): the anchor found is the
        // whole match, and nothing needs decoding.
        if !self.key_nocase
            && h.anchor == (0, 1)
            && h.key.0 == h.tokens + 1 + varint_len(h.key.1)
            && h.key.0 + h.key.1 == self.code.len()
        {
            return start_ok(at).then_some(at);
        }
        let (a0, a1) = h.anchor;
        let after = at + h.key.1;
        let toks = self.toks();
        if self.key_nocase && !seq_at_toks(&toks[a0..a1], data, at) {
            return None;
        }
        // Forward part first (cheap to reject), then backward to the start.
        if !match_fwd(&toks[a1..], data, after) {
            return None;
        }
        let mut found = None;
        match_bwd(&toks[..a0], data, at, &mut |start| {
            if start_ok(start) {
                found = Some(start);
                true
            } else {
                false
            }
        });
        found
    }
}

/// Merges runs of exact byte tests into `Lit` tokens.
fn compact(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut run: Vec<u8> = Vec::new();
    for t in toks {
        match t {
            Tok::Byte(b) if b.mask == 0xff && !b.nocase => run.push(b.want),
            other => {
                if !run.is_empty() {
                    out.push(Tok::Lit(std::mem::take(&mut run).into_boxed_slice()));
                }
                out.push(other);
            }
        }
    }
    if !run.is_empty() {
        out.push(Tok::Lit(run.into_boxed_slice()));
    }
    out.shrink_to_fit();
    out
}

/// `w`: every byte test becomes the byte followed by NUL.
fn widen(toks: Vec<Tok>) -> Vec<Tok> {
    let nul = Tok::Byte(ByteTest::exact(0));
    let wide_seq = |seq: Vec<ByteTest>| -> Vec<ByteTest> {
        seq.into_iter()
            .flat_map(|b| [b, ByteTest::exact(0)])
            .collect()
    };
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Byte(b) => {
                out.push(Tok::Byte(b));
                out.push(nul.clone());
            }
            Tok::Lit(bytes) => out.push(Tok::Lit(bytes.iter().flat_map(|&b| [b, 0]).collect())),
            Tok::Gap { min, max } => out.push(Tok::Gap {
                min: min * 2,
                max: max.map(|m| m * 2),
            }),
            Tok::Alt(a) => out.push(Tok::Alt(a.into_iter().map(wide_seq).collect())),
            Tok::NotAlt(a) => out.push(Tok::NotAlt(a.into_iter().map(wide_seq).collect())),
        }
    }
    out
}

fn fold_case(toks: &mut [Tok]) {
    let fold = |b: &mut ByteTest| {
        if b.mask == 0xff && b.want.is_ascii_alphabetic() {
            b.want = b.want.to_ascii_lowercase();
            b.nocase = true;
        }
    };
    for t in toks {
        match t {
            Tok::Byte(b) => fold(b),
            Tok::Alt(a) | Tok::NotAlt(a) => a.iter_mut().flatten().for_each(fold),
            // Case folding runs before `compact`, so there are no runs yet.
            Tok::Lit(_) | Tok::Gap { .. } => {}
        }
    }
}

fn seq_at_toks(toks: &[Tok], data: &[u8], pos: usize) -> bool {
    data.len() >= pos + toks.len()
        && toks
            .iter()
            .zip(&data[pos..])
            .all(|(t, &b)| matches!(t, Tok::Byte(bt) if bt.test(b)))
}

fn seq_at(seq: &[ByteTest], data: &[u8], pos: usize) -> bool {
    data.len() >= pos + seq.len() && seq.iter().zip(&data[pos..]).all(|(t, &b)| t.test(b))
}

/// Whether `toks` match `data` starting at `pos` (any end).
fn match_fwd(toks: &[Tok], data: &[u8], pos: usize) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return true;
    };
    match first {
        Tok::Lit(lit) => {
            data[pos.min(data.len())..].starts_with(lit) && match_fwd(rest, data, pos + lit.len())
        }
        Tok::Byte(t) => data.get(pos).is_some_and(|&b| t.test(b)) && match_fwd(rest, data, pos + 1),
        Tok::Alt(alts) => alts
            .iter()
            .any(|a| seq_at(a, data, pos) && match_fwd(rest, data, pos + a.len())),
        Tok::NotAlt(alts) => {
            let n = alts[0].len();
            data.len() >= pos + n
                && !alts.iter().any(|a| seq_at(a, data, pos))
                && match_fwd(rest, data, pos + n)
        }
        Tok::Gap { min, max } => {
            let lo = pos + min;
            if lo > data.len() {
                return false;
            }
            if rest.is_empty() {
                return true;
            }
            let hi = max.map_or(data.len(), |m| (pos + m).min(data.len()));
            (lo..=hi).any(|p| match_fwd(rest, data, p))
        }
    }
}

/// Matches `toks` so that they end at `end`, calling `done(start)` for each
/// way they can; stops at the first `done` that returns true.
fn match_bwd(toks: &[Tok], data: &[u8], end: usize, done: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((last, rest)) = toks.split_last() else {
        return done(end);
    };
    match last {
        Tok::Lit(lit) => {
            end >= lit.len()
                && data[end - lit.len()..end] == **lit
                && match_bwd(rest, data, end - lit.len(), done)
        }
        Tok::Byte(t) => end >= 1 && t.test(data[end - 1]) && match_bwd(rest, data, end - 1, done),
        Tok::Alt(alts) => alts.iter().any(|a| {
            end >= a.len()
                && seq_at(a, data, end - a.len())
                && match_bwd(rest, data, end - a.len(), done)
        }),
        Tok::NotAlt(alts) => {
            let n = alts[0].len();
            end >= n
                && !alts.iter().any(|a| seq_at(a, data, end - n))
                && match_bwd(rest, data, end - n, done)
        }
        Tok::Gap { min, max } => {
            if *min > end {
                return false;
            }
            let hi = end - min;
            let lo = max.map_or(0, |m| end.saturating_sub(m));
            (lo..=hi).rev().any(|p| match_bwd(rest, data, p, done))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hex_parses_as_the_general_parser_would() {
        for src in ["41", "4142434445", "00ff10", "deadBEEF"] {
            let fast = Pattern::parse(src, Modifiers::default()).unwrap();
            // The general path: the same bytes with a no-op gap token at
            // the end are merged into the same literal before it.
            let general = Pattern::parse(&format!("{src}*"), Modifiers::default()).unwrap();
            assert_eq!(fast.key(), general.key(), "{src}");
            assert_eq!(fast.toks().len(), 1, "{src}");
            assert_eq!(fast.toks()[0], general.toks()[0], "{src}");
        }
        assert!(Pattern::parse("4", Modifiers::default()).is_err());
        assert!(Pattern::parse("4g", Modifiers::default()).is_err());
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `pat` matches anywhere in `data` (scanning for the key).
    fn matches(pat: &str, m: Modifiers, data: &[u8]) -> bool {
        let p = Pattern::parse(pat, m).unwrap_or_else(|e| panic!("{pat}: {e}"));
        let mut from = 0;
        while let Some(i) = memfind(&data[from..], p.key(), p.key_nocase) {
            if p.verify(data, from + i, &|_| true).is_some() {
                return true;
            }
            from += i + 1;
        }
        false
    }

    fn memfind(h: &[u8], n: &[u8], nocase: bool) -> Option<usize> {
        h.windows(n.len()).position(|w| {
            if nocase {
                w.eq_ignore_ascii_case(n)
            } else {
                w == n
            }
        })
    }

    #[test]
    fn syntax_table() {
        let none = Modifiers::default();
        let data = b"xxHELLO, big WORLD!yy";
        let rows: &[(&str, bool)] = &[
            (&hex("HELLO"), true),
            (&hex("HELLX"), false),
            (&format!("{}??{}", hex("HELL"), hex(",")), true),
            (&format!("{}4?{}", hex("HE"), hex("LO")), true), // L = 4c
            (&format!("{}?c{}", hex("HE"), hex("LO")), true),
            (&format!("{}?d{}", hex("HE"), hex("LO")), false),
            (&format!("{}*{}", hex("HELLO"), hex("WORLD")), true),
            (&format!("{}*{}", hex("WORLD"), hex("HELLO")), false),
            (&format!("{}{{6}}{}", hex("HELLO"), hex("WORLD")), true),
            (&format!("{}{{5}}{}", hex("HELLO"), hex("WORLD")), false),
            (&format!("{}{{-6}}{}", hex("HELLO"), hex("WORLD")), true),
            (&format!("{}{{-5}}{}", hex("HELLO"), hex("WORLD")), false),
            (&format!("{}{{6-}}{}", hex("HELLO"), hex("WORLD")), true),
            (&format!("{}{{7-}}{}", hex("HELLO"), hex("WORLD")), false),
            (&format!("{}{{2-8}}{}", hex("HELLO"), hex("WORLD")), true),
            (&format!("{}[6-7]{}", hex("HELLO"), hex("WORLD")), true),
            (
                &format!(
                    "{}({}|{}){}",
                    hex("HELLO, "),
                    hex("small"),
                    hex("big"),
                    hex(" WORLD")
                ),
                true,
            ),
            (
                &format!(
                    "{}({}|{}){}",
                    hex("HELLO, "),
                    hex("small"),
                    hex("tiny"),
                    hex(" WORLD")
                ),
                false,
            ),
            (
                &format!(
                    "{}!({}|{}){}",
                    hex("HELLO, "),
                    hex("bag"),
                    hex("bog"),
                    hex(" WORLD")
                ),
                true,
            ),
            (
                &format!(
                    "{}!({}|{}){}",
                    hex("HELLO, "),
                    hex("big"),
                    hex("bog"),
                    hex(" WORLD")
                ),
                false,
            ),
            // Anchor in the middle, wildcards on both sides.
            (&format!("??{}??", hex("big")), true),
            (&format!("{}??", hex("yy")), false),
        ];
        for (pat, want) in rows {
            assert_eq!(matches(pat, none, data), *want, "{pat}");
        }
    }

    #[test]
    fn modifiers() {
        let i = Modifiers {
            nocase: true,
            ..Default::default()
        };
        assert!(matches(&hex("hello"), i, b"..HeLLo.."));
        assert!(!matches(&hex("hello"), Modifiers::default(), b"..HeLLo.."));
        let w = Modifiers {
            wide: true,
            ..Default::default()
        };
        assert!(matches(&hex("abc"), w, b"..a\0b\0c\0.."));
        assert!(!matches(&hex("abc"), w, b"..abc.."));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let m = Modifiers::default();
        assert!(
            Pattern::parse("4142zz", m)
                .unwrap_err()
                .contains("bad hex digit")
        );
        assert!(Pattern::parse("414", m).unwrap_err().contains("odd number"));
        assert!(Pattern::parse("41{3", m).unwrap_err().contains("unclosed"));
        assert!(
            Pattern::parse("41(B)42", m)
                .unwrap_err()
                .starts_with("unsupported")
        );
        assert!(
            Pattern::parse("????", m)
                .unwrap_err()
                .contains("no literal byte")
        );
    }

    #[test]
    fn hex_decodes_in_either_case_and_anything_else_is_refused() {
        let mut out = Vec::new();
        assert!(decode_hex_into(b"00fF7a9B", &mut out));
        assert_eq!(out, [0x00, 0xff, 0x7a, 0x9b]);
        for bad in [&b"0g"[..], b"??", b"+1", b"\xff0", b"0 ", b"abc"] {
            assert!(!decode_hex_into(bad, &mut Vec::new()), "{bad:?}");
        }
        for c in 0..=255u8 {
            let want = (c as char).to_digit(16).map(|d| d as u8);
            assert_eq!(hexval(c), want, "{c}");
        }
    }

    #[test]
    fn a_literal_with_anything_after_it_is_not_taken_for_a_plain_literal() {
        // The fast path of `verify` is for one exact literal only: a
        // literal followed by a byte test must still check that byte.
        let plain = Pattern::parse("41424344", Modifiers::default()).unwrap();
        assert_eq!(plain.verify(b"xABCDy", 1, &|_| true), Some(1));
        assert_eq!(plain.verify(b"xABCDy", 1, &|s| s == 0), None);
        let more = Pattern::parse("4142434445??46", Modifiers::default()).unwrap();
        assert_eq!(more.key(), b"ABCDE");
        assert_eq!(more.verify(b"ABCDE.F", 0, &|_| true), Some(0));
        assert_eq!(more.verify(b"ABCDE.G", 0, &|_| true), None);
        let before = Pattern::parse("46??4142434445", Modifiers::default()).unwrap();
        assert_eq!(before.verify(b"F.ABCDE", 2, &|_| true), Some(0));
        assert_eq!(before.verify(b"G.ABCDE", 2, &|_| true), None);
    }

    #[test]
    fn every_token_kind_survives_the_encoding() {
        let t = |mask, want, nocase| ByteTest { mask, want, nocase };
        let nc = |c: u8| Tok::Byte(t(0xff, c, true));
        let long: Vec<u8> = (0..200u8).collect();
        let toks = vec![
            Tok::Lit(vec![1, 2, 3].into()),
            Tok::Byte(t(0xf0, 0x40, false)),
            Tok::Gap { min: 0, max: None },
            Tok::Gap {
                min: 300,
                max: Some(70_000),
            },
            Tok::Alt(vec![
                vec![t(0xff, 7, false)],
                vec![t(0x0f, 3, false), t(0, 0, false)],
            ]),
            Tok::NotAlt(vec![vec![t(0xff, 8, false)], vec![t(0xff, 9, true)]]),
            nc(b'a'),
            nc(b'b'),
            Tok::Lit(long.clone().into()),
            Tok::Gap {
                min: 1 << 20,
                max: Some(0),
            },
        ];
        let p = Pattern::from_toks(toks.clone()).unwrap();
        assert_eq!(p.toks(), toks);
        assert_eq!(p.key(), &long[..], "the longest exact run anchors");
        assert!(!p.key_nocase);

        // A case-insensitive anchor is copied after the tokens, which
        // still decode to themselves.
        let toks = vec![
            Tok::Byte(t(0xf0, 0x20, false)),
            nc(b'x'),
            nc(b'y'),
            nc(b'z'),
            Tok::Gap {
                min: 2,
                max: Some(5),
            },
        ];
        let p = Pattern::from_toks(toks.clone()).unwrap();
        assert_eq!(p.toks(), toks);
        assert_eq!(p.key(), b"xyz");
        assert!(p.key_nocase);
        assert!(p.key_matches(b"--XyZ--", 2));
        assert_eq!(p.verify(b"\x2fXYZ..", 1, &|_| true), Some(0));
    }

    #[test]
    fn start_predicate_selects_among_starts() {
        let p = Pattern::parse(&format!("??{}", hex("b")), Modifiers::default()).unwrap();
        // "abab": key "b" at 1 and 3; with start fixed at 2, only the hit at 3 works.
        assert_eq!(p.verify(b"abab", 1, &|s| s == 2), None);
        assert_eq!(p.verify(b"abab", 3, &|s| s == 2), Some(2));
    }
}
