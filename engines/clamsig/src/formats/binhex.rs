//! BinHex 4.0 (`.hqx`): six-bit text, run-length coded, holding a Mac
//! file's data and resource forks; both are members.

use super::{clean_name, u32be};
use crate::archive::{Budget, Members, Stop};

const MARK: &[u8] = b"(This file must be converted with BinHex";
const ALPHABET: &[u8] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";

/// Whether `data` is BinHex: the marker line in its first KiB.
pub fn starts(data: &[u8]) -> bool {
    super::find(&data[..data.len().min(1024)], MARK, 0).is_some()
}

/// The members: the data fork and, if not empty, the resource fork.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let corrupt = || Stop::Corrupt("BinHex text is damaged".into());
    let mark = super::find(data, MARK, 0).ok_or_else(corrupt)?;
    let colon = data[mark..]
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(corrupt)?
        + mark
        + 1;
    let mut value = [0xffu8; 256];
    for (i, &c) in ALPHABET.iter().enumerate() {
        value[c as usize] = i as u8;
    }
    // Six-bit decoding, until the closing colon.
    let cap = budget.cap(data.len());
    let mut packed = Vec::with_capacity((data.len() - colon) * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in &data[colon..] {
        if c == b':' {
            break;
        }
        let v = value[c as usize];
        if v == 0xff {
            continue;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            packed.push((acc >> bits) as u8);
        }
    }
    // Run-length: 0x90 n repeats the previous byte n - 1 more times; 0x90 0
    // is a literal 0x90.
    let mut plain: Vec<u8> = Vec::with_capacity(packed.len());
    let mut i = 0;
    while i < packed.len() {
        let b = packed[i];
        if b == 0x90 && i + 1 < packed.len() {
            let n = packed[i + 1] as usize;
            i += 2;
            match (n, plain.last().copied()) {
                (0, _) => plain.push(0x90),
                (_, Some(prev)) => plain.extend(std::iter::repeat_n(prev, n - 1)),
                (_, None) => return Err(corrupt()),
            }
        } else {
            plain.push(b);
            i += 1;
        }
        if plain.len() > cap {
            return Err(Stop::Limits(format!(
                "BinHex data expands past {cap} bytes"
            )));
        }
    }
    let name_len = *plain.first().ok_or_else(corrupt)? as usize;
    let name = clean_name(plain.get(1..1 + name_len).ok_or_else(corrupt)?);
    // Name, NUL, type, creator, flags (2), then the two lengths, CRC (2).
    let at = 1 + name_len + 1 + 4 + 4 + 2;
    let data_len = u32be(&plain, at).ok_or_else(corrupt)?;
    let rsrc_len = u32be(&plain, at + 4).ok_or_else(corrupt)?;
    let fork = at + 10;
    let end = fork.saturating_add(data_len).min(plain.len());
    let fork_data = budget.stored(&name, &plain[fork.min(end)..end])?;
    out.push((name.clone(), fork_data));
    let rsrc = end.saturating_add(2);
    if rsrc_len > 0 && rsrc < plain.len() {
        let rend = rsrc.saturating_add(rsrc_len).min(plain.len());
        let label = format!("{name} (resource fork)");
        let content = budget.stored(&label, &plain[rsrc..rend])?;
        out.push((label, content));
    }
    Ok(())
}
