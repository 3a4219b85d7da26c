//! MIME decomposition: a message into its decoded leaf parts, once per
//! message, shared by every engine that wants parts.
//!
//! mail-parser does the MIME work (base64 and quoted-printable transfer
//! decoding, multipart trees, nested `message/rfc822`); uuencoded blocks in
//! text parts (`begin 644 name` .. `end`) are decoded here into parts of
//! their own. Text parts come out as mail-parser gives them: transfer-decoded
//! and converted to UTF-8.
//!
//! Limits bound the work: parts, nesting depth, and decoded bytes. Going past
//! one stops decomposition and is reported in [`Decomposed::exceeded`]; the
//! scan turns it into an `unscannable(limits-exceeded)` outcome for the
//! engines that asked for parts, never a silent pass.

use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

use crate::bindings::PartInfo;

/// Bounds on decomposition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MimeLimits {
    /// Leaf parts handed to engines, per message.
    pub max_parts: u32,
    /// Nesting depth of multiparts and embedded messages; 0 is the top level.
    pub max_depth: u32,
    /// Decoded bytes of all parts of one message together.
    pub max_decoded_bytes: u64,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self {
            max_parts: 1000,
            max_depth: 20,
            max_decoded_bytes: 100 * 1024 * 1024,
        }
    }
}

/// One decoded leaf part.
#[derive(Debug, Clone)]
pub struct Part {
    /// Index, depth, content type, file name.
    pub info: PartInfo,
    /// The decoded content.
    pub content: Arc<[u8]>,
}

/// A message's leaf parts, and whether a limit cut decomposition short.
#[derive(Debug, Clone, Default)]
pub struct Decomposed {
    /// Leaf parts in depth-first order.
    pub parts: Vec<Part>,
    /// The limit that was reached, if one was: decomposition stopped there.
    pub exceeded: Option<String>,
}

struct Walker<'l> {
    limits: &'l MimeLimits,
    out: Decomposed,
    decoded: u64,
}

impl Walker<'_> {
    /// Adds a leaf; false when a limit stops the walk.
    fn push(
        &mut self,
        depth: u32,
        content_type: String,
        file_name: Option<String>,
        content: &[u8],
    ) -> bool {
        if self.out.parts.len() as u64 >= u64::from(self.limits.max_parts) {
            self.out.exceeded = Some(format!(
                "more than {} parts (max_parts)",
                self.limits.max_parts
            ));
            return false;
        }
        self.decoded += content.len() as u64;
        if self.decoded > self.limits.max_decoded_bytes {
            self.out.exceeded = Some(format!(
                "more than {} decoded bytes (max_decoded_bytes)",
                self.limits.max_decoded_bytes
            ));
            return false;
        }
        let index = self.out.parts.len() as u32;
        self.out.parts.push(Part {
            info: PartInfo {
                index,
                depth,
                content_type,
                file_name,
            },
            content: content.into(),
        });
        true
    }

    fn message(&mut self, msg: &mail_parser::Message<'_>, depth: u32) -> bool {
        self.part(msg, 0, depth)
    }

    fn part(&mut self, msg: &mail_parser::Message<'_>, id: u32, depth: u32) -> bool {
        if depth > self.limits.max_depth {
            self.out.exceeded = Some(format!(
                "nesting deeper than {} (max_depth)",
                self.limits.max_depth
            ));
            return false;
        }
        let Some(part) = msg.part(id) else {
            return true;
        };
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase();
        let name = part.attachment_name().map(str::to_string);
        match &part.body {
            PartType::Multipart(children) => {
                for &child in children {
                    if !self.part(msg, child, depth + 1) {
                        return false;
                    }
                }
                true
            }
            PartType::Message(inner) => self.message(inner, depth + 1),
            PartType::Text(text) | PartType::Html(text) => {
                if !self.push(depth, content_type, name, text.as_bytes()) {
                    return false;
                }
                for (file, data) in uudecode_blocks(text.as_bytes()) {
                    if !self.push(
                        depth + 1,
                        "application/octet-stream".into(),
                        Some(file),
                        &data,
                    ) {
                        return false;
                    }
                }
                true
            }
            PartType::Binary(data) | PartType::InlineBinary(data) => {
                self.push(depth, content_type, name, data)
            }
        }
    }
}

/// Decomposes `raw` into decoded leaf parts within `limits`.
pub fn decompose(raw: &[u8], limits: &MimeLimits) -> Decomposed {
    let mut w = Walker {
        limits,
        out: Decomposed::default(),
        decoded: 0,
    };
    match MessageParser::default().parse(raw) {
        Some(msg) => {
            w.message(&msg, 0);
        }
        // Not parseable as a message at all: the whole input is one part, so
        // engines still see its bytes.
        None => {
            w.push(0, "application/octet-stream".into(), None, raw);
        }
    }
    w.out
}

/// Finds uuencoded blocks (`begin MODE NAME` .. `end`) in text and decodes
/// them. Lines that are not valid uuencode end the block.
pub fn uudecode_blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(b"begin ") else {
            continue;
        };
        let mut fields = rest.splitn(2, |&b| b == b' ');
        let mode = fields.next().unwrap_or_default();
        let name = fields.next().unwrap_or_default();
        if mode.is_empty() || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) || name.is_empty() {
            continue;
        }
        let mut data = Vec::new();
        for l in lines.by_ref() {
            if l == b"end" || l.is_empty() {
                break;
            }
            let n = usize::from((l[0].wrapping_sub(b' ')) & 0x3f);
            if n == 0 {
                continue;
            }
            let chars: Vec<u8> = l[1..].iter().map(|c| c.wrapping_sub(b' ') & 0x3f).collect();
            let mut decoded = Vec::with_capacity(n + 2);
            for q in chars.chunks(4) {
                let g = |i: usize| u32::from(q.get(i).copied().unwrap_or(0));
                let v = (g(0) << 18) | (g(1) << 12) | (g(2) << 6) | g(3);
                decoded.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
            decoded.truncate(n);
            data.extend_from_slice(&decoded);
        }
        out.push((String::from_utf8_lossy(name).into_owned(), data));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = "From: a@x\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n\
--b1\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9=\r\n!\r\n\
--b1--\r\n";

    #[test]
    fn leaves_are_decoded_in_order_with_depth_and_names() {
        let d = decompose(MULTI.as_bytes(), &MimeLimits::default());
        assert_eq!(d.exceeded, None);
        type Row<'a> = (u32, u32, &'a str, Option<&'a str>, &'a [u8]);
        let got: Vec<Row> = d
            .parts
            .iter()
            .map(|p| {
                (
                    p.info.index,
                    p.info.depth,
                    p.info.content_type.as_str(),
                    p.info.file_name.as_deref(),
                    &*p.content,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, "text/plain", None, &b"hello"[..]),
                (
                    1,
                    1,
                    "application/octet-stream",
                    Some("a.bin"),
                    &[0u8, 1, 2, 3][..]
                ),
                (2, 2, "text/plain", None, "café!".as_bytes()),
            ]
        );
    }

    #[test]
    fn limits_stop_decomposition_and_say_which() {
        let tight = MimeLimits {
            max_parts: 2,
            ..MimeLimits::default()
        };
        let d = decompose(MULTI.as_bytes(), &tight);
        assert_eq!(d.parts.len(), 2);
        assert!(d.exceeded.unwrap().contains("max_parts"));

        let shallow = MimeLimits {
            max_depth: 1,
            ..MimeLimits::default()
        };
        let d = decompose(MULTI.as_bytes(), &shallow);
        assert!(d.exceeded.unwrap().contains("max_depth"));

        let small = MimeLimits {
            max_decoded_bytes: 6,
            ..MimeLimits::default()
        };
        let d = decompose(MULTI.as_bytes(), &small);
        assert!(d.exceeded.unwrap().contains("max_decoded_bytes"));
    }

    #[test]
    fn uuencoded_blocks_become_parts() {
        // "Cat" uuencoded.
        let msg = b"Subject: uu\r\n\r\nsee attached\r\nbegin 644 cat.txt\r\n#0V%T\r\n`\r\nend\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert_eq!(d.parts.len(), 2);
        assert_eq!(d.parts[1].info.file_name.as_deref(), Some("cat.txt"));
        assert_eq!(&*d.parts[1].content, b"Cat");
    }
}
