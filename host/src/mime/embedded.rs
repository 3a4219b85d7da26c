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
