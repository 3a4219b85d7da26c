//! Windows executables (PE): their headers, sections and entry point (for
//! the PE-relative signature offsets and section hashes), what they carry
//! (other executables embedded in them or appended as an overlay, and the
//! image of a UPX-packed one), and the packers and installers this engine
//! cannot open, which make the executable unscannable, never clean.

use super::{u16le, u32le};
use crate::archive::{Budget, Members, Stop};

/// Embedded executables looked for in one file, at most.
const MAX_EMBEDDED: usize = 10;

/// Sections a PE may declare, at most (the format's own limit).
const MAX_SECTIONS: usize = 96;

/// One section of a PE.
#[derive(Debug, Clone)]
pub struct Section {
    /// Its name, as stored (up to 8 bytes).
    pub name: Vec<u8>,
    /// Relative virtual address.
    pub rva: usize,
    /// Size in memory.
    pub virtual_size: usize,
    /// Where its data is in the file.
    pub raw_offset: usize,
    /// Size of its data in the file.
    pub raw_size: usize,
}

/// A parsed PE.
#[derive(Debug)]
pub struct Pe<'a> {
    /// The whole file.
    pub data: &'a [u8],
    /// The entry point (an RVA).
    pub entry: usize,
    /// The preferred load address.
    pub image_base: usize,
    /// Size of the headers in the file.
    pub headers: usize,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

impl<'a> Pe<'a> {
    /// Parses the headers; `None` when `data` is not a PE.
    pub fn parse(data: &'a [u8]) -> Option<Pe<'a>> {
        if !data.starts_with(b"MZ") {
            return None;
        }
        let pe = u32le(data, 0x3c)?;
        if super::slice(data, pe, 4)? != b"PE\0\0" {
            return None;
        }
        let count = u16le(data, pe + 6)?;
        let opt_size = u16le(data, pe + 20)?;
        let opt = pe + 24;
        let magic = u16le(data, opt)?;
        let entry = u32le(data, opt + 16)?;
        let image_base = match magic {
            0x20b => u32le(data, opt + 24)?, // PE32+: the low half.
            _ => u32le(data, opt + 28)?,
        };
        let headers = u32le(data, opt + 60).unwrap_or(0);
        // Section data is placed at file-alignment boundaries: a pointer or
        // size off the boundary is rounded as the loader (and ClamAV)
        // round it, down for the pointer and up for the size.
        let align = u32le(data, opt + 36).filter(|a| *a != 0 && a % 0x200 == 0);
        let table = opt.checked_add(opt_size)?;
        let mut sections = Vec::new();
        for i in 0..count.min(MAX_SECTIONS) {
            let Some(s) = super::slice(data, table + 40 * i, 40) else {
                break;
            };
            let name = s[..8].iter().copied().take_while(|&b| b != 0).collect();
            let (mut raw_size, mut raw_offset) = (u32le(s, 16)?, u32le(s, 20)?);
            if let Some(a) = align {
                raw_offset = raw_offset / a * a;
                raw_size = raw_size.div_ceil(a).saturating_mul(a);
            }
            sections.push(Section {
                name,
                virtual_size: u32le(s, 8)?,
                rva: u32le(s, 12)?,
                raw_size,
                raw_offset,
            });
        }
        Some(Pe {
            data,
            entry,
            image_base,
            headers,
            sections,
        })
    }

    /// The section holding an RVA.
    pub fn section_of(&self, rva: usize) -> Option<usize> {
        self.sections.iter().position(|s| {
            rva >= s.rva && rva < s.rva.saturating_add(s.virtual_size.max(s.raw_size))
        })
    }

    /// The file offset of an RVA, if it has one.
    pub fn offset_of(&self, rva: usize) -> Option<usize> {
        let s = &self.sections[self.section_of(rva)?];
        let off = s.raw_offset.checked_add(rva - s.rva)?;
        (rva - s.rva < s.raw_size && off < self.data.len()).then_some(off)
    }

    /// Where the sections' data ends in the file: the overlay starts here.
    pub fn end_of_sections(&self) -> usize {
        self.sections
            .iter()
            .map(|s| s.raw_offset.saturating_add(s.raw_size))
            .max()
            .unwrap_or(0)
            .min(self.data.len())
    }

    /// Whether it is packed by UPX: sections named so, or UPX's layout (an
    /// empty first section the second unpacks into).
    fn upx(&self) -> bool {
        let named = self.sections.iter().any(|s| s.name.starts_with(b"UPX"));
        let layout = self.sections.len() >= 2
            && self.sections[0].raw_size == 0
            && self.sections[0].virtual_size > 0
            && self.section_of(self.entry) == Some(1);
        named || layout
    }

    /// The packer, protector or installer this engine cannot open, if the
    /// executable shows one.
    fn unopenable(&self) -> Option<&'static str> {
        let overlay = &self.data[self.end_of_sections()..];
        let has = |hay: &[u8], s: &[u8]| super::find(hay, s, 0).is_some();
        if has(overlay, b"AU3!EA0") || has(self.data, b"AU3!EA05") || has(self.data, b"AU3!EA06") {
            return Some("an AutoIt script executable");
        }
        if has(overlay, b"NullsoftInst") {
            return Some("a Nullsoft (NSIS) installer");
        }
        if has(overlay, b"InstallShield") || has(overlay, b"ISSetupStream") {
            return Some("an InstallShield installer");
        }
        for s in &self.sections {
            let known: &[(&[u8], &str)] = &[
                (b".aspack", "an ASPack-packed executable"),
                (b".adata", "an ASPack-packed executable"),
                (b".petite", "a Petite-packed executable"),
                (b".WWP32", "a WWPack32-packed executable"),
                (b"yC", "a yoda's Crypter-protected executable"),
                (b"MEW", "a MEW-packed executable"),
                (b".taz", "a PESpin-protected executable"),
                (b".nsp", "an NsPack-packed executable"),
                (b".MPRESS", "an MPRESS-packed executable"),
                (b".themida", "a Themida-protected executable"),
                (b".vmp", "a VMProtect-protected executable"),
            ];
            for (name, what) in known {
                if s.name.starts_with(name) {
                    return Some(what);
                }
            }
        }
        // What packers do and compilers do not: section names that are not
        // text, an entry point in the last of several sections.
        let odd_names = self
            .sections
            .iter()
            .any(|s| s.name.iter().any(|&b| !(0x20..0x7f).contains(&b)));
        let last_entry =
            self.sections.len() > 2 && self.section_of(self.entry) == Some(self.sections.len() - 1);
        (odd_names || last_entry).then_some("a packed or protected executable")
    }
}

/// Whether `data` is a PE.
pub fn starts(data: &[u8]) -> bool {
    data.starts_with(b"MZ") && Pe::parse(data).is_some()
}

/// What an executable carries: the image of a UPX-packed one, and other
/// executables inside it (from each further `MZ` that starts a PE, to the
/// end of the file, as ClamAV extracts embedded executables). A packer or
/// installer it cannot open stops with `unsupported` after those.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let Some(pe) = Pe::parse(data) else {
        return Ok(());
    };
    if pe.upx() {
        let cap = budget.cap(data.len());
        match super::upx::unpack(&pe, cap) {
            Some(image) => {
                budget.take("(UPX image)", image.len())?;
                embedded(&image, "(UPX image) ", budget, out)?;
                out.push(("(UPX image)".into(), image));
            }
            None => {
                embedded(data, "", budget, out)?;
                return Err(Stop::Unsupported(
                    "a UPX-packed executable that does not unpack".into(),
                ));
            }
        }
    }
    embedded(data, "", budget, out)?;
    match pe.unopenable() {
        Some(what) if !pe.upx() || what != "a packed or protected executable" => {
            Err(Stop::Unsupported(what.into()))
        }
        _ => Ok(()),
    }
}

/// Executables inside `data` after its start, each to the end of `data`.
fn embedded(data: &[u8], prefix: &str, budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    let mut from = 1usize;
    let mut found = 0;
    while let Some(at) = super::find(data, b"MZ", from) {
        from = at + 2;
        if !starts(&data[at..]) {
            continue;
        }
        found += 1;
        if found > MAX_EMBEDDED {
            break;
        }
        let name = format!("{prefix}(executable at offset {at})");
        let end = data
            .len()
            .min(at.saturating_add(budget.limits().max_member_bytes));
        let content = budget.stored(&name, &data[at..end])?;
        out.push((name, content));
    }
    Ok(())
}

/// The layout of the executable `data` for PE-relative signature offsets
/// and section hashes; `None` when it is not a PE.
pub fn layout(data: &[u8]) -> Option<crate::offset::Layout> {
    let pe = Pe::parse(data)?;
    Some(crate::offset::Layout {
        entry: pe.offset_of(pe.entry),
        sections: pe
            .sections
            .iter()
            .map(|s| (s.raw_offset, s.raw_size))
            .collect(),
    })
}
