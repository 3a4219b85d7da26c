//! PCRE subsignatures of logical signatures: `[Offset:]Trigger/PCRE/Flags`.
//!
//! The regular expression runs only when its trigger (an expression over
//! the other subsignatures) holds, as ClamAV runs it. Most of what ClamAV
//! signatures write is matched by the `regex` crate over bytes, in linear
//! time; what it lacks (look-around, back-references, atomic groups) by
//! `fancy-regex` over the bytes read as Latin-1, with backtracking bounded
//! by ClamAV's default match limit. Expressions are checked when the
//! database loads and compiled when first needed in a scan, so that a
//! database with thousands of them loads fast and keeps its image small.
//!
//! Flags: `g` counts every match (otherwise one), `r` lets a match start
//! anywhere after the offset (otherwise within the offset's span), `e`
//! keeps the match inside the offset's span; `i`, `s`, `m`, `x` and `U`
//! as in PCRE; `A` anchors at the offset; `E` is what `$` already means
//! here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::logical::Expr;
use crate::offset::{Layout, Offset};

/// Backtracking steps one match may take (ClamAV's `PCREMatchLimit`).
const MATCH_LIMIT: usize = 100_000;

/// Matches one subsignature counts, at most.
const MAX_COUNT: u64 = 10_000;

/// A PCRE subsignature.
#[derive(Debug, Clone)]
pub struct PcreSub {
    /// Its number among the signature's subsignatures.
    pub index: usize,
    /// When it runs.
    pub trigger: Expr,
    /// Where a match may start.
    pub offset: Offset,
    /// The expression, as written.
    pub pattern: Box<str>,
    /// The flags, as written.
    pub flags: Box<str>,
}

/// Whether an .ldb subsignature is a PCRE one: `[Offset:]Trigger/.../Flags`.
pub fn is_pcre(sub: &str) -> bool {
    let Some((head, rest)) = sub.split_once('/') else {
        return false;
    };
    let trigger = head.rsplit_once(':').map_or(head, |(_, t)| t);
    !trigger.is_empty()
        && trigger
            .bytes()
            .all(|b| b.is_ascii_digit() || b"&|()=<>,".contains(&b))
        && rest.contains('/')
}

impl PcreSub {
    /// Parses subsignature `index` of a signature with `subs` of them.
    pub fn parse(sub: &str, index: usize, subs: usize) -> Result<PcreSub, String> {
        let (head, rest) = sub
            .split_once('/')
            .ok_or("a PCRE subsignature needs /PCRE/")?;
        let (pattern, flags) = rest
            .rsplit_once('/')
            .ok_or("a PCRE subsignature needs /PCRE/")?;
        let (offset, trigger) = match head.rsplit_once(':') {
            Some((o, t)) => (Offset::parse(o)?, t),
            None => (Offset::Any, head),
        };
        let trigger = Expr::parse(trigger, subs).map_err(|e| format!("PCRE trigger: {e}"))?;
        for f in flags.chars() {
            if !"grei smxUAE".contains(f) || f == ' ' {
                return Err(format!("unsupported PCRE flag '{f}'"));
            }
        }
        if pattern.is_empty() {
            return Err("empty PCRE".into());
        }
        let sub = PcreSub {
            index,
            trigger,
            offset,
            pattern: pattern.into(),
            flags: flags.into(),
        };
        // Checked now, compiled when needed.
        if regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&sub.expression())
            .is_err()
            && sub.fancy().is_err()
        {
            return Err(format!(
                "unsupported PCRE {pattern:?} (neither regex nor fancy-regex reads it)"
            ));
        }
        Ok(sub)
    }

    fn has(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }

    /// The expression with its flags inline.
    fn expression(&self) -> String {
        let mut inline = String::new();
        for (f, c) in [('i', 'i'), ('s', 's'), ('m', 'm'), ('x', 'x'), ('U', 'U')] {
            if self.has(f) {
                inline.push(c);
            }
        }
        if inline.is_empty() {
            self.pattern.to_string()
        } else {
            format!("(?{inline}){}", self.pattern)
        }
    }

    fn fancy(&self) -> Result<fancy_regex::Regex, String> {
        // fancy-regex has no `U`: laziness is written per quantifier.
        let mut b = fancy_regex::RegexBuilder::new(&self.pattern);
        b.case_insensitive(self.has('i'))
            .dot_matches_new_line(self.has('s'))
            .multi_line(self.has('m'))
            .ignore_whitespace(self.has('x'))
            .unicode_mode(false)
            .backtrack_limit(MATCH_LIMIT);
        if self.has('U') {
            return Err("U with look-around".into());
        }
        b.build().map_err(|e| e.to_string())
    }

    fn compile(&self) -> Option<Compiled> {
        let bytes = regex::bytes::RegexBuilder::new(&self.expression())
            .unicode(false)
            .size_limit(4 << 20)
            .build();
        match bytes {
            Ok(r) => Some(Compiled::Bytes(r)),
            Err(_) => self.fancy().ok().map(Compiled::Fancy),
        }
    }

    /// How many times it matches `data` (at most once without `g`).
    pub fn count(&self, data: &[u8], layout: Option<&Layout>) -> u64 {
        let Some(re) = compiled(self) else {
            return 0;
        };
        let len = data.len();
        let (from, span) = match self.offset {
            Offset::Any => (0, usize::MAX),
            o => match o.base(len, layout) {
                Some(b) => b,
                None => return 0,
            },
        };
        if from > len {
            return 0;
        }
        let end = if self.has('e') {
            len.min(from.saturating_add(span))
        } else {
            len
        };
        let anchored = !matches!(self.offset, Offset::Any) && !self.has('r') || self.has('A');
        let last_start = if anchored {
            from.saturating_add(if self.has('A') { 0 } else { span })
        } else {
            usize::MAX
        };
        let limit = if self.has('g') { MAX_COUNT } else { 1 };
        let mut n = 0;
        re.each_start(&data[from..end], &mut |start| {
            let at = from + start;
            if at > last_start {
                return false;
            }
            n += 1;
            n < limit
        });
        n
    }
}

/// A compiled expression.
enum Compiled {
    Bytes(regex::bytes::Regex),
    Fancy(fancy_regex::Regex),
}

impl Compiled {
    /// Calls `each` with the start of every match (non-overlapping) until
    /// it returns false.
    fn each_start(&self, subject: &[u8], each: &mut dyn FnMut(usize) -> bool) {
        match self {
            Compiled::Bytes(r) => {
                for m in r.find_iter(subject) {
                    if !each(m.start()) {
                        return;
                    }
                }
            }
            Compiled::Fancy(r) => {
                // Bytes as Latin-1 characters; positions mapped back.
                let text: String = subject.iter().map(|&b| char::from(b)).collect();
                let (mut chars, mut bytes) = (0usize, 0usize);
                for m in r.find_iter(&text) {
                    // A match past the backtracking limit is no match.
                    let Ok(m) = m else { return };
                    chars += text[bytes..m.start()].chars().count();
                    bytes = m.start();
                    if !each(chars) {
                        return;
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Expressions compiled in this instance, by flags and expression:
    /// each engine instance lives for one scan, so this lives as long.
    static CACHE: RefCell<HashMap<String, Option<Rc<Compiled>>>> = RefCell::new(HashMap::new());
}

fn compiled(sub: &PcreSub) -> Option<Rc<Compiled>> {
    let key = format!("{}/{}", sub.flags, sub.pattern);
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(key)
            .or_insert_with(|| sub.compile().map(Rc::new))
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> PcreSub {
        PcreSub::parse(s, 1, 2).unwrap()
    }

    #[test]
    fn flags_offsets_and_counts() {
        assert!(is_pcre("0/abc/i"));
        assert!(is_pcre("10:0&1/x.y/g"));
        assert!(!is_pcre("414243"));
        let data = b"xx ABC abc aBc yy";
        assert_eq!(sub("0/abc/").count(data, None), 1);
        assert_eq!(sub("0/abc/i").count(data, None), 1);
        assert_eq!(sub("0/abc/gi").count(data, None), 3);
        // Anchored at the offset (within its span) unless rolling.
        assert_eq!(sub("3:0/ABC/").count(data, None), 1);
        assert_eq!(sub("4:0/abc/g").count(data, None), 0);
        assert_eq!(sub("4:0/abc/rg").count(data, None), 1);
        assert_eq!(sub("4,4:0/abc/g").count(data, None), 1);
        // Encompassed: the match must end inside the span (as clamscan
        // does: ABC at 3..6 is inside 0,6 and not inside 0,5).
        assert_eq!(sub("0,8:0/abc/eg").count(data, None), 0);
        assert_eq!(sub("0,6:0/ABC/e").count(data, None), 1);
        assert_eq!(sub("0,5:0/ABC/e").count(data, None), 0);
        assert_eq!(sub("0,8:0/ABC/reg").count(data, None), 1);
        // Look-around and back-references go to fancy-regex.
        assert_eq!(sub("0/(a)(?=B)/gi").count(data, None), 3);
        assert_eq!(sub("0/(x)\\1/").count(data, None), 1);
        // Binary data.
        assert_eq!(
            sub("0/\\xff\\x00+\\xfe/").count(b"a\xff\x00\x00\xfeb", None),
            1
        );
        assert!(PcreSub::parse("0/abc/q", 1, 2).is_err());
        assert!(PcreSub::parse("5/abc/", 1, 2).is_err());
    }
}
