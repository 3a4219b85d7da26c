//! PDF: every stream (page content, fonts, embedded files, scripts) is a
//! member, decoded through its filters (Flate, ASCIIHex, ASCII85, and
//! chains of them). Streams are found by their keywords, not through the
//! cross-reference table, so damaged and hand-made files open too.

use crate::archive::{Budget, Members, Stop};

/// Streams one PDF may hold, at most.
const MAX_STREAMS: usize = 10_000;

/// Whether `data` is a PDF: `%PDF-` in its first KiB (readers allow junk
/// before it).
pub fn starts(data: &[u8]) -> bool {
    super::find(&data[..data.len().min(1024)], b"%PDF-", 0).is_some()
}

/// The members of a PDF: each stream, decoded.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut from = 0usize;
    while let Some(kw) = super::find(data, b"stream", from) {
        from = kw + 6;
        // `endstream` contains `stream`; and the keyword ends its line.
        if data[..kw].ends_with(b"end") {
            continue;
        }
        let mut start = kw + 6;
        match (data.get(start), data.get(start + 1)) {
            (Some(b'\r'), Some(b'\n')) => start += 2,
            (Some(b'\n' | b'\r'), _) => start += 1,
            _ => continue,
        }
        let end = super::find(data, b"endstream", start).unwrap_or(data.len());
        let mut body = &data[start..end];
        while let Some(rest) = body
            .strip_suffix(b"\n")
            .or_else(|| body.strip_suffix(b"\r"))
        {
            body = rest;
        }
        from = end;
        if out.len() >= MAX_STREAMS {
            return Err(Stop::Limits(format!("more than {MAX_STREAMS} PDF streams")));
        }
        let dict = dictionary_before(data, kw);
        let name = format!("(PDF stream {})", out.len() + 1);
        let content = decode(&name, body, &filters(dict), budget)?;
        out.push((name, content));
    }
    Ok(())
}

/// How far back from a `stream` keyword its dictionary is looked for:
/// dictionaries with filters are short, and a file of many small streams
/// must not make each search read far back.
const DICTIONARY_WINDOW: usize = 4096;

/// The object dictionary before the `stream` keyword at `kw`: back to the
/// `obj` keyword, within [`DICTIONARY_WINDOW`] bytes.
fn dictionary_before(data: &[u8], kw: usize) -> &[u8] {
    let lo = kw.saturating_sub(DICTIONARY_WINDOW);
    let window = &data[lo..kw];
    let start = window
        .windows(3)
        .rposition(|w| w == b"obj")
        .map_or(0, |p| p + 3);
    &window[start..]
}

/// The filter names of a dictionary, in order (`/Filter /A` or
/// `/Filter [/A /B]`), without their slashes.
fn filters(dict: &[u8]) -> Vec<Vec<u8>> {
    let Some(at) = super::find(dict, b"/Filter", 0) else {
        return Vec::new();
    };
    let rest = &dict[at + 7..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let list = if rest.trim_ascii_start().starts_with(b"[") {
        let r = rest.trim_ascii_start();
        &r[..r.iter().position(|&b| b == b']').unwrap_or(r.len())]
    } else {
        let r = rest.trim_ascii_start();
        let end = r
            .iter()
            .skip(1)
            .position(|&b| b == b'/' || b == b'>' || b.is_ascii_whitespace())
            .map_or(r.len(), |p| p + 1);
        &r[..end]
    };
    list.split(|&b| b == b'/')
        .skip(1)
        .map(|n| {
            n.iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .copied()
                .collect::<Vec<u8>>()
        })
        .filter(|n| !n.is_empty())
        .take(8)
        .collect()
}

/// A stream's bytes through its filters. A filter this reader lacks
/// (images: DCT, JBIG2, JPX, CCITT; LZW, RunLength) leaves the bytes as
/// they are, which are still scanned.
fn decode(
    name: &str,
    body: &[u8],
    filters: &[Vec<u8>],
    budget: &mut Budget,
) -> Result<Vec<u8>, Stop> {
    let mut data = budget.stored(name, body)?;
    for f in filters {
        data = match f.as_slice() {
            b"FlateDecode" | b"Fl" => budget.inflate_zlib(name, &data)?,
            b"ASCIIHexDecode" | b"AHx" => ascii_hex(&data),
            b"ASCII85Decode" | b"A85" => ascii85(&data),
            _ => return Ok(data),
        };
    }
    Ok(data)
}

fn ascii_hex(data: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = data
        .iter()
        .take_while(|&&b| b != b'>')
        .filter(|b| b.is_ascii_hexdigit())
        .map(|&b| (b as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    digits
        .chunks(2)
        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
        .collect()
}

fn ascii85(data: &[u8]) -> Vec<u8> {
    let data = data.strip_prefix(b"<~").unwrap_or(data);
    let mut out = Vec::with_capacity(data.len() / 5 * 4);
    let (mut acc, mut n) = (0u64, 0);
    for &c in data {
        match c {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                acc = acc * 85 + u64::from(c - b'!');
                n += 1;
                if n == 5 {
                    out.extend_from_slice(&(acc as u32).to_be_bytes());
                    acc = 0;
                    n = 0;
                }
            }
            _ => {}
        }
    }
    if n > 1 {
        for _ in n..5 {
            acc = acc * 85 + 84;
        }
        out.extend_from_slice(&(acc as u32).to_be_bytes()[..n - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Limits;

    #[test]
    fn streams_decoded_through_their_filters() {
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(b"hidden payload", 6);
        let mut pdf =
            b"%PDF-1.4\n1 0 obj\n<< /Length 9 /Filter [/FlateDecode] >>\nstream\n".to_vec();
        pdf.extend_from_slice(&packed);
        pdf.extend_from_slice(b"\nendstream\nendobj\n2 0 obj\n<</Filter/ASCIIHexDecode>>stream\r\n68 69>\r\nendstream\nendobj\n3 0 obj <</Filter /ASCII85Decode>> stream\n<~87cURD]i,\"Ebo80~>\nendstream\n");
        let mut b = Budget::new(Limits::default());
        let m = crate::archive::members_whole(&pdf, &mut b).unwrap();
        let contents: Vec<&[u8]> = m.iter().map(|(_, c)| c.as_slice()).collect();
        assert_eq!(contents, [&b"hidden payload"[..], b"hi", b"Hello World!"]);
    }
}
