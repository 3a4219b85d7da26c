//! Where a body pattern may start: absolute, from the end, or relative to
//! an executable's entry point and sections (`EP+n`, `Sx+n`, `SL+n`,
//! `SEx`), each with an optional span (`,n`).

/// An executable's layout in its file, for the PE-relative offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The file offset of the entry point, if it has one in the file.
    pub entry: Option<usize>,
    /// Each section's data in the file: offset and size.
    pub sections: Vec<(usize, usize)>,
}

/// Where a body pattern may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// Anywhere (`*`).
    Any,
    /// At `n` to `n + span` from the start.
    Start(u32, u32),
    /// At `len - n` to `len - n + span`.
    Eof(u32, u32),
    /// At the entry point plus `n` (which may be negative), to `+ span`.
    Entry(i32, u32),
    /// At the start of section `x` (from 0) plus `n`, to `+ span`.
    Section(u16, u32, u32),
    /// At the start of the last section plus `n`, to `+ span`.
    LastSection(u32, u32),
    /// Anywhere inside section `x`.
    InSection(u16),
}

fn number<T: std::str::FromStr>(s: &str, whole: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad offset {whole:?}"))
}

impl Offset {
    /// Parses an offset field.
    pub fn parse(s: &str) -> Result<Offset, String> {
        if s == "*" {
            return Ok(Offset::Any);
        }
        let (base, span) = match s.split_once(',') {
            Some((b, sp)) => (b, number::<u32>(sp, s)?),
            None => (s, 0),
        };
        if let Some(n) = base.strip_prefix("EOF-") {
            return Ok(Offset::Eof(number(n, s)?, span));
        }
        if let Some(rest) = base.strip_prefix("EP") {
            let n: i32 = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
                (Some(n), _) => number(n, s)?,
                (_, Some(n)) => -number::<i32>(n, s)?,
                _ if rest.is_empty() => 0,
                _ => return Err(format!("bad offset {s:?}")),
            };
            return Ok(Offset::Entry(n, span));
        }
        if let Some(n) = base.strip_prefix("SL+") {
            return Ok(Offset::LastSection(number(n, s)?, span));
        }
        if let Some(x) = base.strip_prefix("SE") {
            return Ok(Offset::InSection(number(x, s)?));
        }
        if let Some(rest) = base.strip_prefix('S')
            && let Some((x, n)) = rest.split_once('+')
        {
            return Ok(Offset::Section(number(x, s)?, number(n, s)?, span));
        }
        if base.starts_with("VI") || base.starts_with('$') {
            return Err(format!(
                "unsupported offset {s:?} (version information and macros)"
            ));
        }
        Ok(Offset::Start(number(base, s)?, span))
    }

    /// Whether the offset can only apply to an executable.
    pub fn executable_only(self) -> bool {
        matches!(
            self,
            Offset::Entry(..)
                | Offset::Section(..)
                | Offset::LastSection(..)
                | Offset::InSection(_)
        )
    }

    /// Where matches may start, as the first place and how far past it
    /// (`None` for `*`, and for executable offsets without a layout or
    /// outside the data).
    pub fn base(self, len: usize, layout: Option<&Layout>) -> Option<(usize, usize)> {
        let section = |x: u16| layout.and_then(|l| l.sections.get(usize::from(x)).copied());
        match self {
            Offset::Any => None,
            Offset::Start(n, span) => Some((n as usize, span as usize)),
            Offset::Eof(n, span) => Some((len.checked_sub(n as usize)?, span as usize)),
            Offset::Entry(n, span) => Some((
                layout?.entry?.checked_add_signed(n as isize)?,
                span as usize,
            )),
            Offset::Section(x, n, span) => {
                Some((section(x)?.0.checked_add(n as usize)?, span as usize))
            }
            Offset::LastSection(n, span) => Some((
                layout?.sections.last()?.0.checked_add(n as usize)?,
                span as usize,
            )),
            Offset::InSection(x) => {
                let (at, size) = section(x)?;
                Some((at, size.saturating_sub(1)))
            }
        }
    }

    /// Whether a match may start at `start` in data of `len` bytes laid
    /// out as `layout` (executable offsets never match without one).
    pub fn allows(self, start: usize, len: usize, layout: Option<&Layout>) -> bool {
        let within = |base: Option<usize>, span: u32| {
            base.is_some_and(|b| start >= b && start - b <= span as usize)
        };
        match self {
            Offset::Any => true,
            Offset::Start(n, span) => within(Some(n as usize), span),
            Offset::Eof(n, span) => within(len.checked_sub(n as usize), span),
            Offset::Entry(n, span) => {
                let base = layout
                    .and_then(|l| l.entry)
                    .and_then(|e| e.checked_add_signed(n as isize));
                within(base, span)
            }
            Offset::Section(x, n, span) => {
                let base = layout
                    .and_then(|l| l.sections.get(usize::from(x)))
                    .and_then(|s| s.0.checked_add(n as usize));
                within(base, span)
            }
            Offset::LastSection(n, span) => {
                let base = layout
                    .and_then(|l| l.sections.last())
                    .and_then(|s| s.0.checked_add(n as usize));
                within(base, span)
            }
            Offset::InSection(x) => layout
                .and_then(|l| l.sections.get(usize::from(x)))
                .is_some_and(|&(at, size)| start >= at && start - at < size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_executable_offsets() {
        let p = |s| Offset::parse(s).unwrap();
        assert!(p("10").allows(10, 100, None));
        assert!(!p("10").allows(11, 100, None));
        assert!(p("10,5").allows(15, 100, None));
        assert!(p("EOF-10").allows(90, 100, None));
        assert!(!p("EOF-10").allows(89, 100, None));
        let exe = Layout {
            entry: Some(0x440),
            sections: vec![(0x400, 0x200), (0x600, 0x100)],
        };
        assert_eq!(p("EP+16"), Offset::Entry(16, 0));
        assert!(p("EP+16").allows(0x450, 0x800, Some(&exe)));
        assert!(!p("EP+16").allows(0x450, 0x800, None));
        assert!(p("EP-64,8").allows(0x408, 0x800, Some(&exe)));
        assert!(p("S1+4").allows(0x604, 0x800, Some(&exe)));
        assert!(p("SL+0").allows(0x600, 0x800, Some(&exe)));
        assert!(p("SE0").allows(0x5ff, 0x800, Some(&exe)));
        assert!(!p("SE0").allows(0x600, 0x800, Some(&exe)));
        assert!(!p("S2+0").allows(0x600, 0x800, Some(&exe)));
        assert!(Offset::parse("VI").unwrap_err().starts_with("unsupported"));
        assert!(Offset::parse("EPx").is_err());
    }
}
