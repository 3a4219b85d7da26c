//! OLE2 compound files (Word, Excel and PowerPoint 97-2003, MSI; with the
//! `cfb` crate): every stream is a member, and so is what is packed inside
//! some of them: the file an `Ole10Native` stream wraps (a document's
//! embedded "package"), the objects a PowerPoint stream stores (zlib-packed
//! OLE2 files), and the source of every VBA macro module (MS-OVBA
//! compression, read through the project's `dir` stream).

use std::io::{Cursor, Read};

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// The members of a compound file.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let corrupt = |e: std::io::Error| {
        Stop::Corrupt(format!("(OLE2): {}", clean_name(e.to_string().as_bytes())))
    };
    let mut file = cfb::CompoundFile::open(Cursor::new(data)).map_err(corrupt)?;
    let streams: Vec<(std::path::PathBuf, u64)> = file
        .walk()
        .filter(|e| e.is_stream())
        .map(|e| (e.path().to_path_buf(), e.len()))
        .collect();
    let mut vba_dirs = Vec::new();
    for (path, len) in streams {
        let name = clean_name(path.to_string_lossy().trim_start_matches('/').as_bytes());
        budget.fits(&name, len, data.len())?;
        let reader = file.open_stream(&path).map_err(corrupt)?;
        let content = budget.read_all(&name, reader.take(len), data.len())?;
        let leaf = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if leaf.eq_ignore_ascii_case("\u{1}Ole10Native") {
            if let Some(inner) = ole10_native(&content) {
                let inner = budget.stored(&name, inner)?;
                out.push((format!("{name} (package)"), inner));
            }
        } else if leaf.eq_ignore_ascii_case("PowerPoint Document") {
            for (i, object) in powerpoint_objects(&name, &content, budget)?
                .into_iter()
                .enumerate()
            {
                out.push((format!("{name} (object {})", i + 1), object));
            }
        } else if leaf.eq_ignore_ascii_case("dir")
            && let Some(parent) = path.parent()
            && parent
                .file_name()
                .is_some_and(|p| p.eq_ignore_ascii_case("VBA"))
        {
            vba_dirs.push((parent.to_path_buf(), content.clone()));
        }
        out.push((name, content));
    }
    // Streams by name, for the modules' lookups.
    let by_name: std::collections::HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), i))
        .collect();
    for (storage, dir) in vba_dirs {
        let Some(dir) = ovba_decompress(&dir, budget.cap(dir.len())) else {
            continue;
        };
        for (module, stream, offset) in vba_modules(&dir) {
            let path = storage.join(&stream);
            let key = clean_name(path.to_string_lossy().trim_start_matches('/').as_bytes());
            let Some(raw) = by_name.get(&key).map(|&i| out[i].1.clone()) else {
                continue;
            };
            let Some(packed) = raw.get(offset..) else {
                continue;
            };
            let name = format!("{} (VBA source)", clean_name(module.as_bytes()));
            let Some(source) = ovba_decompress(packed, budget.cap(packed.len())) else {
                continue;
            };
            let source = budget.stored(&name, &vba_normalise(&source))?;
            out.push((name, source));
        }
    }
    Ok(())
}

/// The file inside an `Ole10Native` stream: a 32-bit size, then an OLE1
/// "Package" (see [`super::rtf::package`]).
fn ole10_native(stream: &[u8]) -> Option<&[u8]> {
    super::rtf::package(stream.get(4..)?)
}

/// The embedded objects of a PowerPoint document stream: `ExOleObjStg`
/// records (type 0x1011), zlib-packed when their instance is 1.
fn powerpoint_objects(
    name: &str,
    stream: &[u8],
    budget: &mut Budget,
) -> Result<Vec<Vec<u8>>, Stop> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let (Some(ver_inst), Some(kind), Some(len)) = (
        u16le(stream, at),
        u16le(stream, at + 2),
        u32le(stream, at + 4),
    ) {
        let body = at + 8;
        if ver_inst & 0x0f == 0x0f {
            // A container: its children follow its header.
            at = body;
            continue;
        }
        let Some(end) = body.checked_add(len).filter(|&e| e <= stream.len()) else {
            break;
        };
        if kind == 0x1011 {
            let record = &stream[body..end];
            let object = if ver_inst >> 4 == 1 {
                let size = u32le(record, 0).unwrap_or(0);
                budget.fits(name, size as u64, record.len())?;
                budget.inflate_zlib(name, record.get(4..).unwrap_or_default())?
            } else {
                budget.stored(name, record)?
            };
            out.push(object);
        }
        at = end;
    }
    Ok(out)
}

/// MS-OVBA decompression of a compressed container (a signature byte 1,
/// then chunks of up to 4096 bytes); `None` when it is not one. At most
/// `cap` bytes come out.
pub fn ovba_decompress(data: &[u8], cap: usize) -> Option<Vec<u8>> {
    if data.first() != Some(&1) {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 1usize;
    while let Some(header) = u16le(data, at) {
        let size = (header & 0x0fff) + 3;
        let compressed = header & 0x8000 != 0;
        let end = (at + size).min(data.len());
        let chunk_start = out.len();
        let mut i = at + 2;
        if !compressed {
            out.extend_from_slice(data.get(i..end.min(i + 4096))?);
        } else {
            while i < end {
                let flags = data[i];
                i += 1;
                for bit in 0..8 {
                    if i >= end {
                        break;
                    }
                    if flags & (1 << bit) == 0 {
                        out.push(data[i]);
                        i += 1;
                        continue;
                    }
                    let token = u16le(data, i)?;
                    i += 2;
                    let decompressed = out.len() - chunk_start;
                    let bits =
                        (usize::BITS - (decompressed.max(1) - 1).leading_zeros()).max(4) as usize;
                    let bits = bits.min(12);
                    let length_mask = 0xffff >> bits;
                    let length = (token & length_mask) + 3;
                    let offset = (token >> (16 - bits)) + 1;
                    if offset > decompressed {
                        return None;
                    }
                    for _ in 0..length {
                        out.push(out[out.len() - offset]);
                    }
                }
                if out.len() > cap {
                    return None;
                }
            }
        }
        if out.len() > cap {
            return None;
        }
        at = end;
    }
    Some(out)
}

/// Macro source as ClamAV writes it out for scanning: in each line, runs
/// of spaces and tabs made one space and, outside string literals, lower
/// case; line ends kept. Signatures for macros are written against this
/// form.
pub fn vba_normalise(source: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(source.len());
    let (mut in_string, mut space) = (false, false);
    for &b in source {
        match b {
            b'\n' | b'\r' => {
                in_string = false;
                space = false;
                out.push(b);
                continue;
            }
            b'"' => in_string = !in_string,
            b' ' | b'\t' if !in_string => {
                space = true;
                continue;
            }
            _ => {}
        }
        if space {
            out.push(b' ');
            space = false;
        }
        out.push(if in_string { b } else { b.to_ascii_lowercase() });
    }
    out
}

/// The modules a decompressed VBA `dir` stream lists: name, stream name
/// and where in the stream its compressed source starts.
fn vba_modules(dir: &[u8]) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let (mut name, mut stream) = (String::new(), String::new());
    let mut at = 0usize;
    while let (Some(id), Some(mut size)) = (u16le(dir, at), u32le(dir, at + 2)) {
        // PROJECTVERSION's size field says 4, and 6 bytes follow.
        if id == 0x0009 {
            size = 6;
        }
        let body = at + 6;
        let Some(value) = dir.get(body..body.saturating_add(size)) else {
            break;
        };
        match id {
            0x0019 => name = String::from_utf8_lossy(value).into_owned(),
            0x001a => stream = String::from_utf8_lossy(value).into_owned(),
            0x0031 => {
                if let Some(offset) = u32le(value, 0) {
                    out.push((name.clone(), stream.clone(), offset));
                }
            }
            _ => {}
        }
        at = body + size;
        if out.len() > 10_000 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_source_is_normalised_as_clamav_writes_it() {
        assert_eq!(
            vba_normalise(b"Sub AutoOpen()\r\n    Shell \"cmd  /c X\"\r\nEnd   Sub"),
            b"sub autoopen()\r\n shell \"cmd  /c X\"\r\nend sub"
        );
    }

    #[test]
    fn ovba_literal_and_copy_tokens() {
        // "abcabcabc": three literals, then a copy of 6 from offset 3.
        let mut chunk = vec![0b0000_1000, b'a', b'b', b'c'];
        // 3 bytes decompressed: 4 offset bits (minimum), 12 length bits.
        let token: u16 = ((3 - 1) << 12) | (6 - 3);
        chunk.extend_from_slice(&token.to_le_bytes());
        let header: u16 = 0xb000 | (chunk.len() as u16 + 2 - 3);
        let mut data = vec![1];
        data.extend_from_slice(&header.to_le_bytes());
        data.extend_from_slice(&chunk);
        assert_eq!(ovba_decompress(&data, 100).unwrap(), b"abcabcabc");
        assert!(ovba_decompress(&data, 4).is_none());
    }
}
