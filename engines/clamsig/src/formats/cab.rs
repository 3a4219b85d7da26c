//! Microsoft Cabinet files: folders of data blocks, stored, MSZIP
//! (deflate blocks sharing one history) or LZX (with the `lzxd` crate);
//! Quantum is unsupported and said so. Read from the format's published
//! description (MS-CAB); every count and offset is checked against the
//! file and the limits before use.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

use super::{clean_name, u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// Folders and files one cabinet may declare, at most.
const MAX_ENTRIES: usize = 65_535;

struct Folder {
    data_at: usize,
    blocks: usize,
    method: usize,
}

struct File {
    name: String,
    size: usize,
    offset: usize,
    folder: usize,
}

fn corrupt(what: &str) -> Stop {
    Stop::Corrupt(format!("cabinet {what}"))
}

/// The members of a cabinet, every file of every folder.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let (Some(files_at), Some(folders), Some(files), Some(flags)) = (
        u32le(data, 16),
        u16le(data, 26),
        u16le(data, 28),
        u16le(data, 30),
    ) else {
        return Err(corrupt("header cut off"));
    };
    let mut at = 36usize;
    // Reserved space: header, folder and data reserve sizes.
    let (mut folder_reserve, mut data_reserve) = (0, 0);
    if flags & 0x0004 != 0 {
        let header_reserve = u16le(data, 36).ok_or_else(|| corrupt("header cut off"))?;
        folder_reserve = usize::from(*data.get(38).ok_or_else(|| corrupt("header cut off"))?);
        data_reserve = usize::from(*data.get(39).ok_or_else(|| corrupt("header cut off"))?);
        at = 40 + header_reserve;
    }
    // Previous and next cabinet names (a set spanning files).
    for bit in [0x0001, 0x0002] {
        if flags & bit != 0 {
            for _ in 0..2 {
                let nul = data.get(at..).and_then(|r| r.iter().position(|&b| b == 0));
                at += nul.ok_or_else(|| corrupt("set names cut off"))? + 1;
            }
        }
    }
    let mut folder_list = Vec::with_capacity(folders.min(MAX_ENTRIES));
    for _ in 0..folders {
        let (Some(data_at), Some(blocks), Some(method)) =
            (u32le(data, at), u16le(data, at + 4), u16le(data, at + 6))
        else {
            return Err(corrupt("folder table cut off"));
        };
        folder_list.push(Folder {
            data_at,
            blocks,
            method,
        });
        at += 8 + folder_reserve;
    }
    let mut file_list = Vec::with_capacity(files.min(MAX_ENTRIES));
    let mut at = files_at;
    for _ in 0..files {
        let (Some(size), Some(offset), Some(folder)) =
            (u32le(data, at), u32le(data, at + 4), u16le(data, at + 8))
        else {
            return Err(corrupt("file table cut off"));
        };
        let name_at = at + 16;
        let len = data
            .get(name_at..)
            .and_then(|r| r.iter().position(|&b| b == 0))
            .ok_or_else(|| corrupt("file name cut off"))?;
        file_list.push(File {
            name: clean_name(&data[name_at..name_at + len]),
            size,
            offset,
            folder,
        });
        at = name_at + len + 1;
    }
    for (i, folder) in folder_list.iter().enumerate() {
        let wanted: Vec<&File> = file_list.iter().filter(|f| f.folder == i).collect();
        let Some(needed) = wanted
            .iter()
            .filter_map(|f| f.offset.checked_add(f.size))
            .max()
        else {
            continue;
        };
        budget.fits("(cabinet folder)", needed as u64, data.len())?;
        let stream = unpack(data, folder, data_reserve, needed)?;
        for f in wanted {
            let end = f.offset.saturating_add(f.size).min(stream.len());
            let content = budget.stored(&f.name, &stream[f.offset.min(end)..end])?;
            out.push((f.name.clone(), content));
        }
    }
    Ok(())
}

/// A folder's data blocks decompressed, up to `needed` bytes.
fn unpack(data: &[u8], folder: &Folder, reserve: usize, needed: usize) -> Result<Vec<u8>, Stop> {
    let mut out: Vec<u8> = Vec::with_capacity(needed.min(1 << 20));
    let mut lzx = match folder.method & 0x0f {
        0 | 1 => None,
        3 => {
            let window = match (folder.method >> 8) & 0x1f {
                15 => lzxd::WindowSize::KB32,
                16 => lzxd::WindowSize::KB64,
                17 => lzxd::WindowSize::KB128,
                18 => lzxd::WindowSize::KB256,
                19 => lzxd::WindowSize::KB512,
                20 => lzxd::WindowSize::MB1,
                21 => lzxd::WindowSize::MB2,
                _ => return Err(corrupt("LZX window size")),
            };
            Some(lzxd::Lzxd::new(window))
        }
        2 => {
            return Err(Stop::Unsupported(
                "a Quantum-compressed cabinet folder".into(),
            ));
        }
        m => return Err(corrupt(&format!("compression type {m}"))),
    };
    let mut at = folder.data_at;
    for _ in 0..folder.blocks {
        if out.len() >= needed {
            break;
        }
        let (Some(packed), Some(unpacked)) = (u16le(data, at + 4), u16le(data, at + 6)) else {
            return Err(corrupt("data block cut off"));
        };
        let body = at + 8 + reserve;
        let Some(block) = super::slice(data, body, packed) else {
            return Err(corrupt("data block past the end"));
        };
        at = body + packed;
        match (folder.method & 0x0f, &mut lzx) {
            (0, _) => out.extend_from_slice(block),
            (1, _) => mszip(block, unpacked, &mut out)?,
            (_, Some(lzx)) => {
                let frame = lzx
                    .decompress_next(block, unpacked)
                    .map_err(|_| corrupt("LZX data is damaged"))?;
                out.extend_from_slice(frame);
            }
            _ => return Err(corrupt("compression type")),
        }
    }
    Ok(out)
}

/// One MSZIP block: `CK`, then a deflate stream whose back-references may
/// reach into the blocks before it.
fn mszip(block: &[u8], unpacked: usize, out: &mut Vec<u8>) -> Result<(), Stop> {
    let Some(deflated) = block.strip_prefix(b"CK") else {
        return Err(corrupt("MSZIP block without its signature"));
    };
    let start = out.len();
    out.resize(start + unpacked, 0);
    let mut r = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut r, deflated, out, start, flags);
    out.truncate(start + written);
    match status {
        TINFLStatus::Done => Ok(()),
        _ if written > 0 => Ok(()),
        _ => Err(corrupt("MSZIP data is damaged")),
    }
}
