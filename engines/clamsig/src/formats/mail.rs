//! Mail inside containers: a message or an mbox that arrives as an archive
//! member, an embedded-object stream or a TNEF attachment is typed by its
//! content (as clamscan types files) and opened here, each part a member
//! (transfer-decoded by mail-parser; uuencoded files decoded here). Mail
//! that is a MIME part of the scanned message is opened by the host before
//! it gets here.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::archive::{Budget, Members, Stop};

/// Parts one message may give, at most.
const MAX_PARTS: usize = 1000;

/// Embedded messages (`message/` types) one mail member may declare.
const MAX_EMBEDDED: usize = 64;

/// Content types one mail member may declare.
const MAX_TYPES: usize = 2000;

/// How often `needle` (lower case) occurs in `data`, in any case.
fn count_ignoring_case(data: &[u8], needle: &[u8]) -> usize {
    let first = needle[0];
    let mut n = 0;
    let mut at = 0;
    while let Some(p) = data[at..]
        .iter()
        .position(|&b| b.to_ascii_lowercase() == first)
    {
        let i = at + p;
        if data.len() - i >= needle.len() && data[i..i + needle.len()].eq_ignore_ascii_case(needle)
        {
            n += 1;
        }
        at = i + 1;
    }
    n
}

/// Whether `data` is mail: an mbox (`From ` then a header) or a message
/// (header lines, two or more, one only mail carries, then a blank line).
pub fn starts(data: &[u8]) -> bool {
    let body = match data.strip_prefix(b"From ") {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => &rest[nl + 1..],
            None => return false,
        },
        None => data,
    };
    is_message(body)
}

fn is_message(data: &[u8]) -> bool {
    const MAIL_ONLY: [&[u8]; 8] = [
        b"from",
        b"received",
        b"return-path",
        b"message-id",
        b"mime-version",
        b"subject",
        b"date",
        b"delivered-to",
    ];
    let head = &data[..data.len().min(64 * 1024)];
    let (mut headers, mut mail_only) = (0, false);
    for line in head.split_inclusive(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\n") else {
            // The header ran to the end of what was looked at.
            return false;
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return headers >= 2 && mail_only;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if headers == 0 {
                return false;
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        headers += 1;
        mail_only |= MAIL_ONLY.iter().any(|m| name.eq_ignore_ascii_case(m));
    }
    false
}

/// The parts of the message (or of each message of the mbox) in `data`.
/// Embedded messages come out whole, as members of their own, and are
/// opened in turn one level down.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let messages: Vec<&[u8]> = if data.starts_with(b"From ") {
        split_mbox(data)
    } else {
        vec![data]
    };
    // mail-parser nests an embedded message inside its parent (a tree
    // dropped recursively) and handles boundaries in more than linear time
    // past a point: what would make it so is refused before it parses, as
    // the host refuses it.
    let embedded = count_ignoring_case(data, b"message/");
    let types = count_ignoring_case(data, b"content-type:");
    if embedded > MAX_EMBEDDED || types > MAX_TYPES {
        return Err(Stop::Limits(format!(
            "mail with {embedded} embedded messages and {types} parts declared (at most {MAX_EMBEDDED} and {MAX_TYPES})"
        )));
    }
    let parser = MessageParser::new().with_mime_headers();
    for (m, raw) in messages.into_iter().enumerate() {
        let Some(msg) = parser.parse(raw) else {
            continue;
        };
        for (i, part) in msg.parts.iter().enumerate() {
            if out.len() >= MAX_PARTS {
                return Err(Stop::Limits(format!("more than {MAX_PARTS} mail parts")));
            }
            let label = match part.attachment_name() {
                Some(n) => super::clean_name(n.as_bytes()),
                None => format!("(message {} part {})", m + 1, i + 1),
            };
            let bytes: &[u8] = match &part.body {
                PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
                PartType::Binary(b) | PartType::InlineBinary(b) => b,
                PartType::Message(inner) => inner.raw_message(),
                PartType::Multipart(_) => continue,
            };
            let uu = part
                .content_transfer_encoding()
                .is_some_and(|e| e.to_ascii_lowercase().contains("uu"));
            let blocks = if uu || bytes.windows(6).any(|w| w == b"begin ") {
                uudecode_blocks(bytes)
            } else {
                Vec::new()
            };
            for (name, file) in blocks {
                let file = budget.stored(&name, &file)?;
                out.push((name, file));
            }
            if !uu {
                let content = budget.stored(&label, bytes)?;
                out.push((label, content));
            }
        }
    }
    Ok(())
}

/// The messages of an mbox: each after its `From ` line, to the next one
/// that follows a blank line.
fn split_mbox(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_PARTS {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let body = &rest[nl + 1..];
        let mut end = body.len();
        let mut at = 0;
        while let Some(p) = super::find(body, b"\nFrom ", at) {
            if body[..p].ends_with(b"\n") || body[..p].ends_with(b"\n\r") {
                end = p + 1;
                break;
            }
            at = p + 1;
        }
        out.push(&body[..end]);
        rest = &body[end..];
        if rest.is_empty() {
            break;
        }
    }
    out
}

/// Uuencoded files (`begin MODE NAME` .. `end`) in text.
fn uudecode_blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(b"begin ") else {
            continue;
        };
        let mut fields = rest.splitn(2, |&b| b == b' ');
        let mode = fields.next().unwrap_or_default();
        let name = fields.next().unwrap_or_default();
        if mode.is_empty() || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) || name.is_empty() {
            continue;
        }
        let mut data = Vec::new();
        for l in lines.by_ref() {
            if l == b"end" || l.is_empty() {
                break;
            }
            let n = usize::from((l[0].wrapping_sub(b' ')) & 0x3f);
            let mut decoded = Vec::with_capacity(n + 2);
            for q in l[1..].chunks(4) {
                let g = |i: usize| u32::from(q.get(i).map_or(0, |c| c.wrapping_sub(b' ') & 0x3f));
                let v = (g(0) << 18) | (g(1) << 12) | (g(2) << 6) | g(3);
                decoded.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
            decoded.truncate(n);
            data.extend_from_slice(&decoded);
        }
        out.push((super::clean_name(name), data));
        if out.len() >= MAX_PARTS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Limits;

    #[test]
    fn messages_nested_past_the_limit_are_refused_before_parsing() {
        // Each level a message/rfc822 part holding the next.
        let mut msg = String::from("From: a@b\r\nSubject: leaf\r\n\r\nbody\r\n");
        for _ in 0..100 {
            msg = format!("From: a@b\r\nSubject: x\r\nContent-Type: message/rfc822\r\n\r\n{msg}");
        }
        let mut b = Budget::new(Limits::default());
        let mut out = Vec::new();
        match members(msg.as_bytes(), &mut b, &mut out) {
            Err(Stop::Limits(why)) => assert!(why.contains("embedded messages"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Parts past the limit, none of them a message.
        let mut many = String::from(
            "From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
        );
        for _ in 0..2500 {
            many.push_str("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n");
        }
        let mut out = Vec::new();
        match members(many.as_bytes(), &mut b, &mut out) {
            Err(Stop::Limits(why)) => assert!(why.contains("2501 parts declared"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A few levels open.
        let shallow = "From: a@b\r\nSubject: x\r\nContent-Type: message/rfc822\r\n\r\n\
From: c@d\r\nSubject: inner\r\n\r\ninner body\r\n";
        let mut out = Vec::new();
        members(shallow.as_bytes(), &mut b, &mut out).unwrap();
        assert!(
            out.iter()
                .any(|(_, c)| c.windows(10).any(|w| w == b"inner body"))
        );
    }
}
