//! 7-Zip archives (with sevenz-rust2: LZMA, LZMA2, PPMd-free builds,
//! bzip2, deflate, BCJ filters) and raw LZMA streams for other formats.

use std::io::{Cursor, Read};

use sevenz_rust2::{ArchiveReader, EntryDecision, Error, Password};

use super::clean_name;
use super::stream::DICT_LIMIT_KIB;
use crate::archive::{Budget, Members, Stop};

/// The members of a 7z archive: every file with data, in order.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut reader = ArchiveReader::new_with_memory_limit(
        Cursor::new(data),
        Password::empty(),
        DICT_LIMIT_KIB as usize,
    )
    .map_err(|e| stop("(7z)", e))?;
    reader.set_thread_count(1);
    // Declared sizes are checked before each member is decoded: a header
    // that claims more than the limits allow is a limit, not an allocation.
    let mut failed: Option<Stop> = None;
    let walked = reader.for_each_entries_with_decision(|entry, r| {
        if entry.is_directory() || !entry.has_stream() {
            return Ok(EntryDecision::Continue);
        }
        let name = clean_name(entry.name().as_bytes());
        let result = budget
            .fits(&name, entry.size(), data.len())
            .and_then(|()| budget.read_all(&name, r.take(entry.size()), data.len()));
        match result {
            Ok(content) => {
                out.push((name, content));
                Ok(EntryDecision::Continue)
            }
            Err(s) => {
                failed = Some(s);
                Ok(EntryDecision::Stop)
            }
        }
    });
    if let Some(s) = failed {
        return Err(s);
    }
    match walked {
        Ok(()) => Ok(()),
        // A checksum or decoding failure after members were read: those
        // members are scanned; the rest cannot be, and that is said.
        Err(e) => Err(stop("(7z)", e)),
    }
}

fn stop(name: &str, e: Error) -> Stop {
    match e {
        Error::PasswordRequired | Error::MaybeBadPassword(_) => Stop::Encrypted(name.into()),
        Error::UnsupportedCompressionMethod(m) if m.to_ascii_lowercase().contains("aes") => {
            Stop::Encrypted(name.into())
        }
        Error::UnsupportedCompressionMethod(m) => {
            Stop::Unsupported(format!("{name}: 7z method {}", clean_name(m.as_bytes())))
        }
        Error::MaxMemLimited { .. } => Stop::Limits(format!(
            "{name}: needs more than {} MiB to decode",
            DICT_LIMIT_KIB / 1024
        )),
        other => Stop::Corrupt(format!(
            "{name}: {}",
            clean_name(other.to_string().as_bytes())
        )),
    }
}

/// Raw LZMA (`props` is the five-byte properties: lc/lp/pb and the
/// dictionary size) ending at `size` bytes or an end marker (`u64::MAX`
/// when only the marker ends it). The dictionary is never larger than the
/// output may be.
pub fn lzma_raw(
    name: &str,
    body: &[u8],
    props: &[u8],
    size: u64,
    budget: &mut Budget,
) -> Result<Vec<u8>, Stop> {
    let (Some(&p), Some(dict)) = (props.first(), super::u32le(props, 1)) else {
        return Err(Stop::Corrupt(format!("{name}: LZMA properties cut off")));
    };
    if size != u64::MAX {
        budget.fits(name, size, body.len())?;
    }
    let cap = budget.cap(body.len());
    let dict = (dict as u64).min(cap as u64).max(4096) as u32;
    let reader = lzma_rust2::LzmaReader::new_with_props(body, size, p, dict, None)
        .map_err(|e| Stop::Corrupt(format!("{name}: {}", clean_name(e.to_string().as_bytes()))))?;
    budget.read_all(name, reader, body.len())
}
