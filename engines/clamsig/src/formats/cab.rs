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

/// Data blocks read from one cabinet, at most (a block holds at most 32
/// KiB: this is far past any real cabinet a mail carries).
const MAX_BLOCKS: usize = 100_000;

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
    // Files by folder, in one pass: a cabinet may declare 65,535 of each.
    let mut by_folder: Vec<Vec<&File>> = vec![Vec::new(); folder_list.len()];
    for f in &file_list {
        if let Some(list) = by_folder.get_mut(f.folder) {
            list.push(f);
        }
    }
    // Data blocks walked in all: folders may share their blocks, and each
    // would walk them again.
    let mut blocks_left = MAX_BLOCKS;
    for (folder, wanted) in folder_list.iter().zip(by_folder) {
        let Some(needed) = wanted
            .iter()
            .filter_map(|f| f.offset.checked_add(f.size))
            .max()
        else {
            continue;
        };
        budget.fits("(cabinet folder)", needed as u64, data.len())?;
        let stream = unpack(data, folder, data_reserve, needed, &mut blocks_left)?;
        for f in wanted {
            let end = f.offset.saturating_add(f.size).min(stream.len());
            let content = budget.stored(&f.name, &stream[f.offset.min(end)..end])?;
            out.push((f.name.clone(), content));
        }
    }
    Ok(())
}

/// A folder's data blocks decompressed, up to `needed` bytes, taking from
/// `blocks_left`.
fn unpack(
    data: &[u8],
    folder: &Folder,
    reserve: usize,
    needed: usize,
    blocks_left: &mut usize,
) -> Result<Vec<u8>, Stop> {
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
        if *blocks_left == 0 {
            return Err(Stop::Limits(format!(
                "a cabinet with more than {MAX_BLOCKS} data blocks to read"
            )));
        }
        *blocks_left -= 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Limits;

    /// A cabinet of `folders` folders that all walk the same `blocks`
    /// empty stored data blocks, each with one file of `size` bytes.
    fn shared_blocks(folders: usize, blocks: usize, size: u32) -> Vec<u8> {
        let files_at = 36 + 8 * folders;
        let data_at = files_at + folders * 18;
        let mut c = b"MSCF\0\0\0\0".to_vec();
        c.extend_from_slice(&[0; 8]); // size, reserved
        c.extend_from_slice(&(files_at as u32).to_le_bytes());
        c.extend_from_slice(&[0; 4]); // reserved
        c.extend_from_slice(&[3, 1]); // version
        c.extend_from_slice(&(folders as u16).to_le_bytes());
        c.extend_from_slice(&(folders as u16).to_le_bytes());
        c.extend_from_slice(&[0; 6]); // flags, set id, index
        for _ in 0..folders {
            c.extend_from_slice(&(data_at as u32).to_le_bytes());
            c.extend_from_slice(&(blocks as u16).to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes()); // stored
        }
        for i in 0..folders {
            c.extend_from_slice(&size.to_le_bytes());
            c.extend_from_slice(&0u32.to_le_bytes());
            c.extend_from_slice(&(i as u16).to_le_bytes());
            c.extend_from_slice(&[0; 6]); // date, time, attributes
            c.extend_from_slice(b"f\0");
        }
        for _ in 0..blocks {
            c.extend_from_slice(&[0; 8]); // checksum, sizes 0
        }
        c
    }

    #[test]
    fn folders_sharing_their_blocks_stop_at_the_block_limit() {
        let mut b = Budget::new(Limits::default());
        let mut out = Vec::new();
        // 2,000 folders of 100 blocks: 200,000 blocks to walk.
        match members(&shared_blocks(2000, 100, 4096), &mut b, &mut out) {
            Err(Stop::Limits(why)) => assert!(why.contains("data blocks"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A few are read.
        let mut out = Vec::new();
        members(&shared_blocks(3, 10, 0), &mut b, &mut out).unwrap();
        assert_eq!(out.len(), 3);
    }
}
