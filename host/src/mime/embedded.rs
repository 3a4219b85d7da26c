//! What mail pastes into text: base64 blocks under their own MIME headers
//! (mail with a broken top-level structure), uuencoded files, and base64
//! decoded as leniently as mail clients and ClamAV do.

use super::prepare;

/// Base64 that skips anything outside the alphabet and stops at padding.
pub fn base64_lenient(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Finds base64 blocks embedded in text under their own MIME headers: mail
/// with a broken or missing top-level Content-Type is one text body with
/// the parts pasted inside, and mail clients and ClamAV still decode them.
/// A block starts after a blank line that ends a header group containing
/// `Content-Transfer-Encoding: base64`, and runs while lines are base64.
pub fn embedded_base64_blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let is_b64_line = |l: &[u8]| {
        !l.is_empty()
            && l.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    };
    let is_cte_base64 = |l: &[u8]| {
        l.len() >= 26
            && l[..26].eq_ignore_ascii_case(b"content-transfer-encoding:")
            && l[26..].windows(6).any(|w| {
                // The mark `prepare` puts in place of base64 counts too.
                w.eq_ignore_ascii_case(b"base64")
                    || w.eq_ignore_ascii_case(prepare::BASE64_MARK.as_bytes())
            })
    };
    // Each line is looked at a bounded number of times: a header group is
    // read once, from the blank line before it to the blank line after it.
    let mut i = 0;
    let mut group_start = 0;
    while i < lines.len() {
        if lines[i].is_empty() {
            group_start = i + 1;
        }
        if !is_cte_base64(lines[i]) {
            i += 1;
            continue;
        }
        // This header group: from the blank line before it to the blank
        // line that ends it; a `name=` in it names the part.
        let first = group_start;
        let mut j = i;
        while j < lines.len() && !lines[j].is_empty() {
            j += 1;
        }
        let mut name = String::from("(embedded base64)");
        for l in &lines[first..j] {
            let l = String::from_utf8_lossy(l);
            if let Some(pos) = l.to_ascii_lowercase().find("name=") {
                name = l[pos + 5..]
                    .trim()
                    .trim_matches(|c| c == '"' || c == ';')
                    .to_string();
            }
        }
        let start = j + 1;
        let mut end = start;
        while end < lines.len() && is_b64_line(lines[end]) {
            end += 1;
        }
        if end > start {
            let joined: Vec<u8> = lines[start..end].concat();
            out.push((name, base64_lenient(&joined)));
        }
        // The rest of the group was read: go on after it.
        i = end.max(j).max(i + 1);
        group_start = i;
    }
    out
}

/// Finds uuencoded blocks (`begin MODE NAME` .. `end`) in text and decodes
/// them. Lines that are not valid uuencode end the block.
pub fn uudecode_blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
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
            if n == 0 {
                continue;
            }
            let chars: Vec<u8> = l[1..].iter().map(|c| c.wrapping_sub(b' ') & 0x3f).collect();
            let mut decoded = Vec::with_capacity(n + 2);
            for q in chars.chunks(4) {
                let g = |i: usize| u32::from(q.get(i).copied().unwrap_or(0));
                let v = (g(0) << 18) | (g(1) << 12) | (g(2) << 6) | g(3);
                decoded.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
            decoded.truncate(n);
            data.extend_from_slice(&decoded);
        }
        out.push((String::from_utf8_lossy(name).into_owned(), data));
    }
    out
}

/// The messages in a part that is itself mail, typed by its content as
/// ClamAV types files: an RFC 5322 message (header lines, at least one of
/// them a header only mail has, then a blank line) or an mbox (messages
/// after `From ` separator lines). `None` for anything else. At most
/// `max` messages come back.
pub fn as_messages(content: &[u8], max: usize) -> Option<Vec<&[u8]>> {
    let head = &content[..content.len().min(64 * 1024)];
    if head.starts_with(b"From ") {
        let mut out = Vec::new();
        let mut rest = content;
        while out.len() < max {
            // Drop the separator line; the message runs to the next one
            // that follows a blank line.
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                break;
            };
            let body = &rest[nl + 1..];
            let end = find_separator(body).unwrap_or(body.len());
            if is_message(&body[..end]) {
                out.push(&body[..end]);
            }
            rest = &body[end..];
            if rest.is_empty() {
                break;
            }
        }
        return (!out.is_empty()).then_some(out);
    }
    is_message(content).then(|| vec![content])
}

/// Where the next mbox separator (`\n\nFrom `, or with CRLF) starts.
fn find_separator(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(p) = data[at..].windows(6).position(|w| w == b"\nFrom ") {
        let i = at + p;
        let before = &data[..i];
        if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
            return Some(i + 1);
        }
        at = i + 1;
    }
    None
}

/// Whether `data` starts with a mail header: only header lines (or their
/// continuations) up to a blank line, at least two of them, one naming a
/// header only mail carries.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_mboxes_are_typed_by_content() {
        let msg = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_eq!(as_messages(msg, 10), Some(vec![&msg[..]]));
        let mbox = b"From a@example.com Thu Jul 31 13:49:50 2008\nFrom: a\nSubject: one\n\nbody one\n\nFrom b@example.com Thu Jul 31 13:49:51 2008\nFrom: b\nSubject: two\n\nbody two\n";
        let got = as_messages(mbox, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with(b"From: a\n") && got[0].ends_with(b"body one\n\n"));
        assert!(got[1].starts_with(b"From: b\n"));
        assert_eq!(as_messages(mbox, 1).unwrap().len(), 1);
        // Text that is not mail: no header, one header, headers only mail
        // does not carry, or no blank line.
        assert_eq!(as_messages(b"hello: world\nthere\n\n", 10), None);
        assert_eq!(as_messages(b"Subject: x\n\nbody", 10), None);
        assert_eq!(
            as_messages(b"Content-Type: text/plain\nX-A: b\n\nbody", 10),
            None
        );
        assert_eq!(as_messages(b"From: a\nSubject: b\n", 10), None);
        assert_eq!(as_messages(b"\x00\x01binary", 10), None);
    }
}
