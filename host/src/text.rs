//! Text from outsiders made safe for where it lands.
//!
//! Engines, mail and MTA clients hand the host strings that end up on an
//! operator's terminal, in the log, in a header or in an SMTP reply. Each of
//! those has a grammar that a stray CR, LF, ESC or NUL can break or forge,
//! and a line limit. [`escape`] makes a string one safe line of bounded
//! length for terminals and logs; [`printable`] makes it printable ASCII
//! for headers and replies; [`bounded_list`] joins names within a byte
//! budget and says how many did not fit.

/// `s` as one line of at most `max_bytes` bytes (plus the note of what was
/// cut): control characters (C0, DEL, C1) and the Unicode characters that
/// reorder or hide text become `\n`, `\t`, `\x1b`, `\u{202e}` escapes.
pub fn escape(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes) + 16);
    for (at, c) in s.char_indices() {
        if out.len() >= max_bytes {
            out.push_str(&format!("...(+{} bytes)", s.len() - at));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if hides_text(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// C1 controls, bidirectional overrides and invisible separators: they
/// reorder or hide what a terminal shows.
fn hides_text(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0x200b..=0x200f | 0x2028..=0x202e | 0x2066..=0x2069 | 0xfeff)
}

/// `s` as printable ASCII for a header or an SMTP reply: anything else
/// becomes `?`, and `%` (a format character to some MTAs) becomes `_`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '%' => '_',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// `items` made [`printable`] and joined by `", "` in at most `budget`
/// bytes; what does not fit is counted: `a, b (+3 more)`. An item longer
/// than the whole budget is cut.
pub fn bounded_list<'a>(items: impl IntoIterator<Item = &'a str>, budget: usize) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let item = printable(item);
        let sep = if out.is_empty() { "" } else { ", " };
        let rest = items.len() - i - 1;
        // Room for this item, and for the note if more follow.
        let note = if rest > 0 {
            format!(" (+{rest} more)").len()
        } else {
            0
        };
        if out.len() + sep.len() + item.len() + note > budget {
            if out.is_empty() {
                // Not even one fits whole: cut it.
                let keep = budget.saturating_sub(note + 3).min(item.len());
                out.push_str(&item[..keep]);
                out.push_str("...");
                if rest > 0 {
                    out.push_str(&format!(" (+{rest} more)"));
                }
                return out;
            }
            out.push_str(&format!(" (+{} more)", items.len() - i));
            return out;
        }
        out.push_str(sep);
        out.push_str(&item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_one_bounded_line() {
        assert_eq!(escape("a\nb\r\x1b[31m\0", 100), "a\\nb\\r\\x1b[31m\\x00");
        assert_eq!(escape("x\u{202e}y\u{85}", 100), "x\\u{202e}y\\u{85}");
        let long = "é".repeat(100);
        let e = escape(&long, 9);
        assert!(e.starts_with("ééééé..."), "{e}");
        assert!(e.ends_with("(+190 bytes)"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn printable_is_ascii_without_percent() {
        assert_eq!(printable("50% é\r\n"), "50_ ???");
    }

    #[test]
    fn bounded_list_counts_what_does_not_fit() {
        let names = ["Eicar-Test", "Other.Thing", "Third"];
        assert_eq!(bounded_list(names, 100), "Eicar-Test, Other.Thing, Third");
        assert_eq!(bounded_list(names, 30), "Eicar-Test (+2 more)");
        let long = "x".repeat(1000);
        let cut = bounded_list([long.as_str(), "b"], 50);
        assert!(cut.len() <= 50, "{} bytes", cut.len());
        assert!(cut.ends_with("... (+1 more)"), "{cut}");
        let many: Vec<String> = (0..10_000).map(|i| format!("Threat.{i}")).collect();
        let s = bounded_list(many.iter().map(String::as_str), 400);
        assert!(s.len() <= 400, "{} bytes", s.len());
        assert!(s.ends_with("more)"));
    }
}
