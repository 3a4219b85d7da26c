//! Microsoft Cabinet files (with the `cab` crate: stored, MSZIP and LZX
//! folders; Quantum is unsupported and said so).

use std::io::Cursor;

use super::clean_name;
use crate::archive::{Budget, Members, Stop};

/// The members of a cabinet, every file of every folder.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut cabinet = cab::Cabinet::new(Cursor::new(data))
        .map_err(|e| Stop::Corrupt(format!("(cab): {}", clean_name(e.to_string().as_bytes()))))?;
    let mut files = Vec::new();
    for folder in cabinet.folder_entries() {
        if let cab::CompressionType::Quantum(..) = folder.compression_type() {
            return Err(Stop::Unsupported(
                "a Quantum-compressed cabinet folder".into(),
            ));
        }
        for file in folder.file_entries() {
            files.push((file.name().to_string(), file.uncompressed_size()));
        }
    }
    for (name, size) in files {
        let shown = clean_name(name.as_bytes());
        budget.fits(&shown, u64::from(size), data.len())?;
        let reader = cabinet.read_file(&name).map_err(|e| {
            Stop::Corrupt(format!("{shown}: {}", clean_name(e.to_string().as_bytes())))
        })?;
        let content = budget.read_all(&shown, reader, data.len())?;
        out.push((shown, content));
    }
    Ok(())
}
