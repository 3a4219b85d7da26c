//! What is checked and changed before mail-parser sees a message.
//!
//! mail-parser is linear on most input, but two shapes make it worse: a
//! long MIME boundary (its search costs the boundary's length at every
//! `--`), and an embedded message sent base64- or quoted-printable-encoded
//! (it parses the decoded message again, recursively, and copies the whole
//! decoded buffer for every message nested inside it: a 1.7 MB message of
//! 40,000 nested levels asked for tens of gigabytes). [`precheck`] refuses
//! the first; [`neutralize_encoded_messages`] renames the transfer encoding
//! of the second in a copy of the message, so that mail-parser leaves its
//! body alone, and the walk decodes and parses it itself, one level at a
//! time, within the same limits.

use super::MAX_BOUNDARY_BYTES;

/// Multipart and message parts one message (or decoded embedded message)
/// may declare. mail-parser keeps a state of a few kilobytes for every
/// level it is inside; this bounds that memory before it parses, whatever
/// the nesting. Real mail declares a handful.
pub const MAX_CONTAINERS: usize = 10_000;

/// Checks, in one linear pass before parsing, what would make the parser's
/// work or memory worse than linear: a MIME boundary parameter (or RFC 2231
/// piece of one) of a `Content-Type` header longer than
/// [`MAX_BOUNDARY_BYTES`], or more than [`MAX_CONTAINERS`] multipart and
/// message parts declared.
/// `boundary=` elsewhere (a long URL in a text body) is not a boundary.
pub(super) fn precheck(raw: &[u8]) -> Option<String> {
    let finder = memchr::memmem::Finder::new(b"oundary");
    let mut total_pieces = 0usize;
    let mut containers = 0usize;
    // Whether the current line belongs to a Content-Type header (its first
    // line, or a folded continuation of it), and whether its value is still
    // to come (folded onto the next line).
    let mut in_content_type = false;
    let mut value_pending = false;
    let mut start = 0;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |p| start + p + 1);
        let line = &raw[start..end];
        let value = match line.first() {
            Some(b' ' | b'\t') if in_content_type => {
                let v = trim_start(line);
                let first = std::mem::replace(&mut value_pending, false);
                first.then_some(v)
            }
            Some(b' ' | b'\t') => None,
            _ => {
                in_content_type = content_type_value(line).is_some();
                let v = content_type_value(line).map(trim_start);
                value_pending = v.is_some_and(|v| v.iter().all(u8::is_ascii_whitespace));
                v.filter(|_| !value_pending)
            }
        };
        if let Some(value) = value
            && (starts_with_ignore_case(value, b"multipart/")
                || starts_with_ignore_case(value, b"message/"))
        {
            containers += 1;
            if containers > MAX_CONTAINERS {
                return Some(format!(
                    "more than {MAX_CONTAINERS} multipart and message parts"
                ));
            }
        }
        if in_content_type {
            for at in finder.find_iter(line) {
                if at == 0 || !line[at - 1].eq_ignore_ascii_case(&b'b') {
                    continue;
                }
                let (len, continued) = boundary_value_len(&raw[start + at + 7..]);
                if continued {
                    total_pieces += len;
                }
                if len > MAX_BOUNDARY_BYTES || total_pieces > MAX_BOUNDARY_BYTES {
                    return Some(format!(
                        "a MIME boundary longer than {MAX_BOUNDARY_BYTES} bytes"
                    ));
                }
            }
        }
        start = end;
    }
    None
}

/// The length of the value after `boundary` at the start of `rest`
/// (`*0*="..."`, `= value`), folded lines joined, and whether it is an
/// RFC 2231 piece. Counting stops past [`MAX_BOUNDARY_BYTES`] (or four
/// times that of bytes walked, folding included); no `=` gives 0.
fn boundary_value_len(rest: &[u8]) -> (usize, bool) {
    let mut i = 0;
    let continued = rest.first() == Some(&b'*');
    while i < rest.len() && (rest[i] == b'*' || rest[i].is_ascii_digit()) {
        i += 1;
    }
    while i < rest.len() && matches!(rest[i], b' ' | b'\t') {
        i += 1;
    }
    if rest.get(i) != Some(&b'=') {
        return (0, false);
    }
    i += 1;
    while i < rest.len() && matches!(rest[i], b' ' | b'\t') {
        i += 1;
    }
    let quoted = rest.get(i) == Some(&b'"');
    if quoted {
        i += 1;
    }
    let (from, mut len) = (i, 0usize);
    while i < rest.len() && len <= MAX_BOUNDARY_BYTES && i - from <= 4 * MAX_BOUNDARY_BYTES {
        match rest[i] {
            b'\r' | b'\n' => {
                // A fold (line break, then white space) joins the value to
                // the next line; any other line break ends it.
                let mut j = i;
                while j < rest.len() && matches!(rest[j], b'\r' | b'\n') && j - i < 2 {
                    j += 1;
                }
                if quoted && matches!(rest.get(j), Some(b' ' | b'\t')) {
                    i = j;
                    continue;
                }
                break;
            }
            b'"' if quoted => break,
            b';' | b' ' | b'\t' if !quoted => break,
            _ => len += 1,
        }
        i += 1;
    }
    if i - from > 4 * MAX_BOUNDARY_BYTES {
        len = len.max(MAX_BOUNDARY_BYTES + 1);
    }
    (len, continued)
}

/// What a renamed transfer encoding is called: the same length as the
/// name it replaces, so no offset in the message moves.
pub(super) const BASE64_MARK: &str = "xbas64";
/// See [`BASE64_MARK`].
pub(super) const QP_MARK: &str = "x-quoted-printbl";

/// A copy of `raw` in which the transfer encoding of every part that
/// mail-parser would decode and parse as an embedded message (a
/// `message/rfc822` or `message/global` part, or a part with no type when
/// a `multipart/digest` is about) is renamed to [`BASE64_MARK`] or
/// [`QP_MARK`]; `None` when there is none. One pass over the lines.
///
/// A header group is a run of `Name: value` lines (and their folds) that
/// ends in a blank line. Text in a body that looks like one is renamed
/// too; the walk decodes marked text like any other, so nothing is lost.
pub(super) fn neutralize_encoded_messages(raw: &[u8]) -> Option<Vec<u8>> {
    let digest = contains_ignore_case(raw, b"digest");
    let mut renames: Vec<(usize, &'static str)> = Vec::new();
    let mut group = Group::default();
    let mut start = 0;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |p| start + p + 1);
        let line = &raw[start..end];
        let content = line
            .strip_suffix(b"\n")
            .map_or(line, |l| l.strip_suffix(b"\r").unwrap_or(l));
        if content.is_empty() {
            if let Some(r) = group.finish(digest) {
                renames.push(r);
            }
            group = Group::default();
        } else if matches!(content[0], b' ' | b'\t') {
            // A fold: the value of the header above may start here.
            let lead = content.len() - trim_start(content).len();
            match group.pending {
                Pending::Encoding if group.cte.is_none() => {
                    group.cte = encoding_token(&content[lead..], start + lead);
                }
                Pending::Type => group.saw_type(&content[lead..]),
                _ => {}
            }
            group.pending = Pending::None;
        } else if let Some(colon) = header_name_end(content) {
            group.open = true;
            group.pending = Pending::None;
            let name = trim_end(&content[..colon]);
            let value = trim_start(&content[colon + 1..]);
            let at = start + content.len() - value.len();
            if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
                group.cte = encoding_token(value, at);
                if value.is_empty() {
                    group.pending = Pending::Encoding;
                }
            } else if name.eq_ignore_ascii_case(b"content-type") {
                group.has_type = true;
                if value.is_empty() {
                    group.pending = Pending::Type;
                } else {
                    group.saw_type(value);
                }
            }
        } else {
            // Not a header line: whatever came before was not a group.
            group = Group::default();
        }
        start = end;
    }
    if renames.is_empty() {
        return None;
    }
    let mut out = raw.to_vec();
    for (at, mark) in renames {
        out[at..at + mark.len()].copy_from_slice(mark.as_bytes());
    }
    Some(out)
}

/// One header group being read.
#[derive(Default)]
struct Group {
    open: bool,
    has_type: bool,
    /// The type was read and is not `message/...`.
    not_message: bool,
    pending: Pending,
    /// Where the encoding's name is, and the mark to put there.
    cte: Option<(usize, &'static str)>,
}

/// A header whose value was folded onto the next line.
#[derive(Default, PartialEq)]
enum Pending {
    #[default]
    None,
    Type,
    Encoding,
}

impl Group {
    fn saw_type(&mut self, value: &[u8]) {
        self.not_message = !starts_with_ignore_case(value, b"message/");
    }

    /// The rename for this group, if it needs one: an encoded part that is
    /// (or may be) a message. A type that could not be read counts as one:
    /// a part renamed that is not a message is decoded by the walk all the
    /// same.
    fn finish(&self, digest: bool) -> Option<(usize, &'static str)> {
        let maybe_message = if self.has_type {
            !self.not_message
        } else {
            digest
        };
        if self.open && maybe_message {
            self.cte
        } else {
            None
        }
    }
}

/// The value of a `Content-Type` header line (`Content-Type :` too), if
/// `line` is one.
fn content_type_value(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    trim_end(&line[..colon])
        .eq_ignore_ascii_case(b"content-type")
        .then(|| &line[colon + 1..])
}

fn trim_end(v: &[u8]) -> &[u8] {
    let n = v
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &v[..v.len() - n]
}

/// Where the header name of `line` ends (the colon), if `line` starts
/// with one.
fn header_name_end(line: &[u8]) -> Option<usize> {
    let colon = memchr::memchr(b':', line)?;
    let name = trim_end(&line[..colon]);
    (!name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic())).then_some(colon)
}

/// The transfer encoding named at the start of `value` (found at offset
/// `at` of the message), if it is one mail-parser decodes.
fn encoding_token(value: &[u8], at: usize) -> Option<(usize, &'static str)> {
    let lead = value.len() - trim_start(value).len();
    let v = &value[lead..];
    let word = v
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
        .map_or(v, |end| &v[..end]);
    if word.eq_ignore_ascii_case(b"base64") {
        Some((at + lead, BASE64_MARK))
    } else if word.eq_ignore_ascii_case(b"quoted-printable") {
        Some((at + lead, QP_MARK))
    } else {
        None
    }
}

fn trim_start(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &v[n..]
}

fn starts_with_ignore_case(v: &[u8], prefix: &[u8]) -> bool {
    v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether `hay` holds `needle` (lower-case ASCII) in any mix of cases.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let first = needle[0];
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|at| {
        hay.get(at..at + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// Quoted-printable decoding as mail clients do it: `=XX` is a byte, `=`
/// at the end of a line joins it to the next, anything else is itself.
pub(super) fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            match (text.get(i + 1), text.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&a), Some(&b)) => {
                    if let (Some(h), Some(l)) = (hex(a), hex(b)) {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_embedded_messages_are_marked_in_place() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: message/rfc822\r\nContent-Transfer-Encoding: Base64\r\n\r\nU3ViamVjdDogeA0KDQpoaQ==\r\n\
--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n";
        let out = neutralize_encoded_messages(raw).expect("one part marked");
        assert_eq!(out.len(), raw.len());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Transfer-Encoding: xbas64\r\n\r\nU3Vi"),
            "{text}"
        );
        // The text part keeps its encoding.
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\naGk="),
            "{text}"
        );
        assert!(neutralize_encoded_messages(b"Subject: x\r\n\r\nhi\r\n").is_none());
        assert!(contains_ignore_case(b"multipart/DiGeSt", b"digest"));
        assert!(!contains_ignore_case(b"multipart/diges", b"digest"));

        // In a digest, a part without a type is a message.
        let digest = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nSubject: x=0D=0A\r\n--d--\r\n";
        let out = String::from_utf8(neutralize_encoded_messages(digest).unwrap()).unwrap();
        assert!(
            out.contains("Content-Transfer-Encoding: x-quoted-printbl\r\n"),
            "{out}"
        );
    }

    #[test]
    fn folded_and_spaced_headers_are_read_too() {
        let raw = b"Content-Type :\r\n message/rfc822\r\nContent-Transfer-Encoding:\r\n\tbase64\r\n\r\nU3Vi\r\n";
        let out = String::from_utf8(neutralize_encoded_messages(raw).unwrap()).unwrap();
        assert!(out.contains("\txbas64\r\n"), "{out}");
        // A type that is not a message keeps its encoding.
        let text = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n";
        assert!(neutralize_encoded_messages(text).is_none());
        // Folded container declarations count.
        let mut many = Vec::new();
        for _ in 0..=MAX_CONTAINERS {
            many.extend_from_slice(b"Content-Type:\r\n message/rfc822\r\n\r\n");
        }
        assert!(
            precheck(&many)
                .unwrap()
                .contains("multipart and message parts")
        );
    }

    #[test]
    fn quoted_printable_decodes_like_mail_clients() {
        assert_eq!(
            quoted_printable(b"caf=C3=A9=\r\n!=zz="),
            "café!=zz=".as_bytes()
        );
    }
}
