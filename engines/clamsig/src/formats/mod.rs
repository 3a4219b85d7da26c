//! The container readers, one module per format family; each gives the
//! members of one container under the part's [`crate::archive::Budget`].

pub mod arj;
pub mod binhex;
pub mod cab;
pub mod chm;
pub mod html;
pub mod implode;
pub mod iso;
pub mod mail;
pub mod ole2;
pub mod pdf;
pub mod pe;
pub mod rtf;
pub mod sevenz;
pub mod sis;
pub mod stream;
pub mod szdd;
pub mod tnef;
pub mod upx;
pub mod zip;

/// A little-endian u16 at `at`, if the data reaches.
pub fn u16le(d: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?) as usize)
}

/// A little-endian u32 at `at`, if the data reaches.
pub fn u32le(d: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize)
}

/// A big-endian u16 at `at`, if the data reaches.
pub fn u16be(d: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?) as usize)
}

/// A big-endian u32 at `at`, if the data reaches.
pub fn u32be(d: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize)
}

/// `data[at..at + len]`, if the data reaches.
pub fn slice(d: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    d.get(at..at.checked_add(len)?)
}

/// Where `needle` first occurs in `hay` at or after `from`.
pub fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from >= hay.len() {
        return None;
    }
    memchr_find(&hay[from..], needle).map(|p| p + from)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut at = 0;
    while let Some(p) = hay[at..].iter().position(|&b| b == first) {
        let i = at + p;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// A name read from a container, made printable: control characters
/// become `?` and it is cut to 200 characters.
pub fn clean_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
