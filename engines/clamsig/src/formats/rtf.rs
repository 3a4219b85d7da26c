//! Rich Text Format: the objects embedded with `\objdata` (hex-coded OLE1
//! objects: an OLE2 document, or a "Package" wrapping any file) and the
//! pictures and data of `\bin` are members.

use super::u32le;
use crate::archive::{Budget, Members, Stop};

/// Objects an RTF document may embed, at most.
const MAX_OBJECTS: usize = 1000;

/// The members of an RTF document: each `\objdata` object decoded, and
/// what its OLE1 header wraps.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut from = 0usize;
    while let Some(at) = super::find(data, b"\\objdata", from) {
        if out.len() >= MAX_OBJECTS {
            return Err(Stop::Limits(format!("more than {MAX_OBJECTS} RTF objects")));
        }
        let (hex, end) = hex_group(data, at + 8);
        from = end.max(at + 8);
        let name = format!("(RTF object {})", out.len() + 1);
        budget.fits(&name, hex.len() as u64 / 2, data.len())?;
        let object = budget.stored(&name, &decode_hex(&hex))?;
        if let Some(native) = ole1_native(&object) {
            let native = native.to_vec();
            // A "Package" holds a file after its label and paths.
            if let Some(file) = package(&native) {
                let file = budget.stored(&name, file)?;
                out.push((format!("{name} (package)"), file));
            }
            let native = budget.stored(&name, &native)?;
            out.push((format!("{name} (native data)"), native));
        }
        out.push((name, object));
    }
    Ok(())
}

/// The hex digits of the group that starts at `from` (until the brace that
/// closes it), control words and white space skipped; and where it ends.
fn hex_group(data: &[u8], from: usize) -> (Vec<u8>, usize) {
    let mut hex = Vec::new();
    let mut depth = 0i32;
    let mut i = from;
    while i < data.len() {
        match data[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            b'\\' => {
                // A control word: letters, an optional number.
                i += 1;
                while i < data.len() && data[i].is_ascii_alphabetic() {
                    i += 1;
                }
                while i < data.len() && (data[i].is_ascii_digit() || data[i] == b'-') {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_hexdigit() => hex.push(c),
            _ => {}
        }
        i += 1;
    }
    (hex, i)
}

fn decode_hex(hex: &[u8]) -> Vec<u8> {
    let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    hex.chunks_exact(2)
        .map(|p| v(p[0]) << 4 | v(p[1]))
        .collect()
}

/// The native data of an OLE1 embedded object: version, format (2:
/// embedded), class, topic and item names (each counted), then the data
/// (counted).
fn ole1_native(object: &[u8]) -> Option<&[u8]> {
    if u32le(object, 4)? != 2 {
        return None;
    }
    let mut at = 8usize;
    for _ in 0..3 {
        let len = u32le(object, at)?;
        at = at.checked_add(4)?.checked_add(len)?;
    }
    let len = u32le(object, at)?;
    let start = at.checked_add(4)?;
    object.get(start..start.checked_add(len)?.min(object.len()))
}

/// The file inside OLE1 "Package" native data: a type, the label and
/// original path (NUL-ended), a kind, the temporary path (counted), the
/// data (counted).
pub fn package(native: &[u8]) -> Option<&[u8]> {
    let nul = |from: usize| {
        native
            .get(from..)?
            .iter()
            .position(|&b| b == 0)
            .map(|p| from + p + 1)
    };
    let mut at = nul(nul(2)?)?;
    at = at.checked_add(4)?;
    let temp = u32le(native, at)?;
    at = at.checked_add(4)?.checked_add(temp)?;
    let len = u32le(native, at)?;
    let start = at.checked_add(4)?;
    native
        .get(start..start.checked_add(len)?.min(native.len()))
        .filter(|d| !d.is_empty())
}
