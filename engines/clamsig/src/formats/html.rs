//! HTML with files inside it: RFC 2397 `data:` URIs (base64 or
//! percent-encoded), as in `<a href="data:application/octet-stream;base64,...">`.

use crate::archive::{Budget, Members};

/// Data URIs one document may give, at most.
const MAX_URIS: usize = 1000;

/// The files in an HTML document's data URIs that are at least a few
/// bytes long (small inline images included: they are scanned too). A
/// budget stop ends the list.
pub fn data_uris(html: &[u8], budget: &mut Budget) -> Members {
    let mut out = Vec::new();
    let mut from = 0usize;
    while let Some(at) = find_data(html, from) {
        from = at + 5;
        if out.len() >= MAX_URIS {
            break;
        }
        // The header ends at the comma; the data at a quote, space or `>`.
        let Some(comma) = html[from..]
            .iter()
            .take(256)
            .position(|&b| b == b',')
            .map(|p| from + p)
        else {
            continue;
        };
        let header = html[from..comma].to_ascii_lowercase();
        if header
            .iter()
            .any(|&b| matches!(b, b'"' | b'\'' | b'<' | b'>' | b' '))
        {
            continue;
        }
        let end = html[comma + 1..]
            .iter()
            .position(|&b| matches!(b, b'"' | b'\'' | b'>' | b'<' | b')'))
            .map_or(html.len(), |p| comma + 1 + p);
        let raw = &html[comma + 1..end];
        from = end;
        let bytes = if header.ends_with(b";base64") {
            base64(raw)
        } else {
            percent(raw)
        };
        if bytes.len() < 16 {
            continue;
        }
        let name = format!("(data URI {})", out.len() + 1);
        match budget.stored(&name, &bytes) {
            Ok(b) => out.push((name, b)),
            Err(_) => break,
        }
    }
    out
}

/// Where `data:` (in any case) next occurs at or after `from`, without
/// copying the document.
fn find_data(html: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 5 <= html.len() {
        let p = html[at..].iter().position(|&b| b == b':')? + at;
        if p >= 4 && html[p - 4..p].eq_ignore_ascii_case(b"data") && p - 4 >= from {
            return Some(p - 4);
        }
        at = p + 1;
    }
    None
}

fn base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
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

fn percent(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if text[i] == b'%'
            && let (Some(h), Some(l)) = (
                text.get(i + 1).and_then(|&c| hex(c)),
                text.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push((h << 4 | l) as u8);
            i += 3;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Limits;

    #[test]
    fn data_uris_in_any_case_base64_or_percent_coded() {
        let html = b"<a href=\"DATA:application/octet-stream;BASE64,aGVsbG8gZnJvbSBpbnNpZGUgdGhlIHVyaQ==\">x</a>\
<img src='data:text/plain,percent%20coded%20payload%21'> data: not one; data:,tiny";
        let mut b = Budget::new(Limits::default());
        let got: Vec<Vec<u8>> = data_uris(html, &mut b)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(
            got,
            [&b"hello from inside the uri"[..], b"percent coded payload!"]
        );
    }
}
