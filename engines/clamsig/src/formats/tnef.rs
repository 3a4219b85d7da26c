//! TNEF (`winmail.dat`, `application/ms-tnef`): the attachments Outlook
//! wraps, each an `attAttachData` attribute named by the `attAttachTitle`
//! around it.

use super::{clean_name, u32le};
use crate::archive::{Budget, Members, Stop};

const ATT_ATTACH_DATA: usize = 0x800f;
const ATT_ATTACH_TITLE: usize = 0x8010;
const ATT_ATTACH_RENDDATA: usize = 0x9002;

/// The members of a TNEF stream: each attachment's data.
pub fn members(data: &[u8], budget: &mut Budget, out: &mut Members) -> Result<(), Stop> {
    // Signature (4) and key (2), then attributes: level (1), id (4),
    // length (4), data, checksum (2).
    let mut at = 6usize;
    let mut title: Option<String> = None;
    let mut pending: Option<Vec<u8>> = None;
    let flush = |pending: &mut Option<Vec<u8>>, title: &Option<String>, out: &mut Members| {
        if let Some(content) = pending.take() {
            let name = title
                .clone()
                .unwrap_or_else(|| format!("(TNEF attachment {})", out.len() + 1));
            out.push((name, content));
        }
    };
    // Fewer bytes than an attribute header at the end are padding.
    while at + 9 <= data.len() {
        let (Some(&level), Some(id), Some(len)) =
            (data.get(at), u32le(data, at + 1), u32le(data, at + 5))
        else {
            break;
        };
        let body = at + 9;
        let Some(end) = body.checked_add(len).filter(|&e| e <= data.len()) else {
            // A length past the end: what is there is scanned.
            if level == 2 && id & 0xffff == ATT_ATTACH_DATA {
                let content = budget.stored("(TNEF attachment)", &data[body.min(data.len())..])?;
                pending = Some(content);
            }
            break;
        };
        let value = &data[body..end];
        if level == 2 {
            match id & 0xffff {
                // A new attachment starts: the last one is done.
                ATT_ATTACH_RENDDATA => {
                    flush(&mut pending, &title, out);
                    title = None;
                }
                ATT_ATTACH_TITLE => {
                    let raw = value.split(|&b| b == 0).next().unwrap_or_default();
                    title = Some(clean_name(raw));
                }
                ATT_ATTACH_DATA => {
                    flush(&mut pending, &title, out);
                    pending = Some(budget.stored("(TNEF attachment)", value)?);
                }
                _ => {}
            }
        }
        at = end + 2;
    }
    flush(&mut pending, &title, out);
    Ok(())
}
