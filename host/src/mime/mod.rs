//! MIME decomposition: a message into its decoded leaf parts, once per
//! message, shared by every engine that wants parts.
//!
//! mail-parser does the MIME work (base64 and quoted-printable transfer
//! decoding, multipart trees, nested `message/rfc822`); uuencoded blocks in
//! text parts (`begin 644 name` .. `end`) are decoded here into parts of
//! their own. Text parts come out as mail-parser gives them: transfer-decoded
//! and converted to UTF-8.
//!
//! Limits bound the work: parts, nesting depth, decoded bytes, boundary
//! length, multipart and message parts declared, and time. Going past one
//! stops decomposition and is reported in [`Decomposed::exceeded`]; the
//! scan turns it into an `unscannable(limits-exceeded)` outcome for the
//! engines that asked for parts, never a silent pass.
//!
//! Mail controls the shape of the tree, so nothing here recurses on it: the
//! walk keeps its own stack, and the parsed tree of nested messages is taken
//! apart level by level before it is dropped. What would make mail-parser
//! worse than linear is checked or changed before it parses (see
//! `prepare`): an embedded message sent encoded is decoded and parsed
//! here, one level at a time. As a second line of defence
//! [`decompose_bounded`] runs the parser on a thread whose stack is sized
//! for the message, under a process-wide concurrency limit and a
//! wall-clock bound.

mod decoder;
mod embedded;
mod prepare;

pub use decoder::{
    WORKER_STACK_BYTES, declare_thread_stack, decompose_bounded, runtime_builder, stack_bytes_for,
};

pub use embedded::{base64_lenient, embedded_base64_blocks, uudecode_blocks};

pub use prepare::MAX_CONTAINERS;

use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// The parser decomposition uses: the MIME headers parsed (what the walk
/// reads: types, dispositions, names, encodings), every other header kept
/// raw. Parsing all of them (addresses, dates, `Received` chains) cost
/// about 2% of the daemon's CPU per message and was never read.
static PARSER: std::sync::LazyLock<MessageParser> =
    std::sync::LazyLock::new(|| MessageParser::new().with_mime_headers());
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
    /// Wall-clock time decomposition of one message may take, waiting for
    /// a decoder included; past it the message is unscannable.
    pub max_decode_ms: u64,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self {
            max_parts: 1000,
            max_depth: 20,
            max_decoded_bytes: 100 * 1024 * 1024,
            max_decode_ms: 10_000,
        }
    }
}

/// The deepest `max_depth` a config may set: real mail nests a handful of
/// levels; a limit in the thousands only invites deep work.
pub const MAX_DEPTH_CEILING: u32 = 100;

/// The longest MIME boundary mail-parser is handed. RFC 2046 allows 70
/// characters; a longer one is tolerated up to this, and past it the
/// message is unscannable: the parser's boundary search costs the
/// boundary's length at every `--` in the body, so a huge boundary made of
/// dashes makes parsing quadratic.
pub const MAX_BOUNDARY_BYTES: usize = 256;

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

    /// Parses `raw` (a message, or an embedded one decoded) at `depth` and
    /// walks it; false when a limit stops the walk. Embedded messages that
    /// were sent encoded come back here, one level deeper each time; the
    /// depth limit bounds how often.
    fn walk_bytes(&mut self, raw: &[u8], depth: u32) -> bool {
        if depth > self.limits.max_depth {
            self.out.exceeded = Some(format!(
                "nesting deeper than {} (max_depth)",
                self.limits.max_depth
            ));
            return false;
        }
        if let Some(why) = prepare::precheck(raw) {
            self.out.exceeded = Some(why);
            return false;
        }
        let marked = prepare::neutralize_encoded_messages(raw);
        let bytes = marked.as_deref().unwrap_or(raw);
        match PARSER.parse(bytes) {
            Some(msg) => {
                let ok = self.walk(&msg, depth);
                drop_flat(msg);
                ok
            }
            // Not parseable as a message at all: the whole input is one
            // part, so engines still see its bytes.
            None => self.push(depth, "application/octet-stream".into(), None, raw),
        }
    }

    /// Walks `msg` depth first with an explicit stack, so that the
    /// message's nesting never becomes the host's recursion.
    fn walk(&mut self, root: &mail_parser::Message<'_>, base_depth: u32) -> bool {
        enum Work<'a, 'x> {
            /// A part: its message, id, depth, and whether its parent is a
            /// `multipart/digest` (where untyped parts are messages).
            Part(&'a mail_parser::Message<'x>, u32, u32, bool),
            Epilogue(&'a [u8], u32),
        }
        let mut stack = vec![Work::Part(root, 0, base_depth, false)];
        while let Some(work) = stack.pop() {
            let (msg, id, depth, in_digest) = match work {
                Work::Part(msg, id, depth, in_digest) => (msg, id, depth, in_digest),
                Work::Epilogue(text, depth) => {
                    if !self.push(depth, "text/plain".into(), None, text) {
                        return false;
                    }
                    continue;
                }
            };
            if depth > self.limits.max_depth {
                self.out.exceeded = Some(format!(
                    "nesting deeper than {} (max_depth)",
                    self.limits.max_depth
                ));
                return false;
            }
            let Some(part) = msg.part(id) else {
                continue;
            };
            let ok = match &part.body {
                PartType::Multipart(children) => {
                    // Text after the closing boundary (mailing-list footers
                    // are appended there) is part of what recipients see;
                    // it comes after the children.
                    if let Some(text) = epilogue(msg, part) {
                        stack.push(Work::Epilogue(text, depth + 1));
                    }
                    let digest = part
                        .content_type()
                        .and_then(|ct| ct.subtype())
                        .is_some_and(|sub| sub.eq_ignore_ascii_case("digest"));
                    for &child in children.iter().rev() {
                        stack.push(Work::Part(msg, child, depth + 1, digest));
                    }
                    true
                }
                // An embedded message sent encoded: decoded here, parsed
                // and walked one level down (see `prepare`).
                PartType::Message(_) if marked_encoding(part).is_some() => {
                    self.encoded_message(msg, part, depth)
                }
                PartType::Message(inner) => {
                    stack.push(Work::Part(inner, 0, depth + 1, false));
                    true
                }
                // Marked, but mail-parser found no message in the encoded
                // text (it usually does not): still an embedded message.
                _ if marked_encoding(part).is_some() && is_message_part(part, in_digest) => {
                    self.encoded_message(msg, part, depth)
                }
                _ => self.leaf(msg, part, depth),
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Adds a leaf part (and what is embedded in it); false when a limit
    /// stops the walk.
    fn leaf(
        &mut self,
        msg: &mail_parser::Message<'_>,
        part: &mail_parser::MessagePart<'_>,
        depth: u32,
    ) -> bool {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase();
        let name = part.attachment_name().map(str::to_string);
        if marked_encoding(part).is_some() {
            // Renamed in `prepare` but not an embedded message after all:
            // decoded here instead of by mail-parser.
            let decoded = decode_marked(msg, part);
            if !self.push(depth, content_type, name, &decoded) {
                return false;
            }
            return self.embedded(depth, &decoded);
        }
        match &part.body {
            PartType::Text(text) | PartType::Html(text) => {
                let lenient = lenient_body(msg, part);
                let bytes = lenient.as_deref().unwrap_or(text.as_bytes());
                if !self.push(depth, content_type, name, bytes) {
                    return false;
                }
                self.embedded(depth, bytes) && self.messages(depth, bytes)
            }
            PartType::Binary(data) | PartType::InlineBinary(data) => {
                // A part sent with Content-Transfer-Encoding: x-uuencode
                // reaches us undecoded: its blocks are its content.
                let uu = part
                    .content_transfer_encoding()
                    .is_some_and(|e| e.to_ascii_lowercase().contains("uu"));
                if uu {
                    let blocks = uudecode_blocks(data);
                    if !blocks.is_empty() {
                        for (file, decoded) in blocks {
                            if !self.push(depth, content_type.clone(), Some(file), &decoded) {
                                return false;
                            }
                        }
                        return true;
                    }
                }
                let lenient = lenient_body(msg, part);
                let bytes = lenient.as_deref().unwrap_or(data);
                if !self.push(depth, content_type.clone(), name, bytes) {
                    return false;
                }
                if !self.messages(depth, bytes) {
                    return false;
                }
                // A multipart whose boundary is missing or empty comes out
                // as one opaque body: what mail clients would still find in
                // it (pasted base64, uuencode) is searched for, as in text.
                if content_type.starts_with("multipart/") {
                    return self.embedded(depth, bytes);
                }
                true
            }
            PartType::Multipart(_) | PartType::Message(_) => true,
        }
    }

    /// An embedded message sent encoded: decoded, handed to engines whole
    /// (a `message/rfc822` part: its bytes appear nowhere else decoded, and
    /// scanners match mail signatures on embedded messages), then walked
    /// one level down.
    fn encoded_message(
        &mut self,
        msg: &mail_parser::Message<'_>,
        part: &mail_parser::MessagePart<'_>,
        depth: u32,
    ) -> bool {
        let decoded = decode_marked(msg, part);
        let name = part.attachment_name().map(str::to_string);
        self.push(depth, "message/rfc822".into(), name, &decoded)
            && self.walk_bytes(&decoded, depth + 1)
    }

    /// Walks a part that is mail whatever its declared type (a message or
    /// an mbox attached as a file), one level down, as ClamAV types files
    /// by content.
    fn messages(&mut self, depth: u32, content: &[u8]) -> bool {
        let max = self.limits.max_parts as usize;
        for message in embedded::as_messages(content, max).unwrap_or_default() {
            if !self.walk_bytes(message, depth + 1) {
                return false;
            }
        }
        true
    }

    /// Adds the uuencoded and pasted base64 blocks found in `text`.
    fn embedded(&mut self, depth: u32, text: &[u8]) -> bool {
        let embedded = uudecode_blocks(text)
            .into_iter()
            .chain(embedded_base64_blocks(text));
        for (file, data) in embedded {
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
}

/// Whether mail-parser would take `part` for an embedded message.
fn is_message_part(part: &mail_parser::MessagePart<'_>, in_digest: bool) -> bool {
    match part.content_type() {
        Some(ct) => {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                })
        }
        None => in_digest,
    }
}

/// The transfer encoding `prepare` renamed on this part, if it did.
fn marked_encoding(part: &mail_parser::MessagePart<'_>) -> Option<&'static str> {
    let cte = part.content_transfer_encoding()?.trim();
    [prepare::BASE64_MARK, prepare::QP_MARK]
        .into_iter()
        .find(|m| cte.eq_ignore_ascii_case(m))
}

/// A marked part's body from the message bytes, decoded.
fn decode_marked(msg: &mail_parser::Message<'_>, part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    let raw = msg.raw_message();
    let start = (part.offset_body as usize).min(raw.len());
    let end = match part.offset_end as usize {
        e if e > start && e <= raw.len() => e,
        _ => raw.len(),
    };
    let body = &raw[start..end];
    match marked_encoding(part) {
        Some(prepare::QP_MARK) => prepare::quoted_printable(body),
        _ => base64_lenient(body),
    }
}

/// The non-blank text after a multipart's closing boundary, if any.
fn epilogue<'m>(
    msg: &'m mail_parser::Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> Option<&'m [u8]> {
    let boundary = part.content_type()?.attribute("boundary")?;
    let body = msg
        .raw_message()
        .get(part.offset_body as usize..part.offset_end as usize)?;
    let close = format!("--{boundary}--");
    let at = memchr::memmem::rfind(body, close.as_bytes())?;
    let after = &body[at + close.len()..];
    let rest = &after[after
        .iter()
        .position(|&b| b == b'\n')
        .map_or(after.len(), |p| p + 1)..];
    (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
}

/// When mail-parser could not decode a base64 body (stray blank lines,
/// junk between the lines), decodes it again as mail clients and ClamAV
/// do: every character outside the base64 alphabet is skipped.
fn lenient_body(
    msg: &mail_parser::Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> Option<Vec<u8>> {
    // On failure mail-parser resets `encoding`, so ask the header.
    let base64 = part
        .content_transfer_encoding()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    if !part.is_encoding_problem || !base64 {
        return None;
    }
    let raw = msg
        .raw_message()
        .get(part.offset_body as usize..part.offset_end as usize)?;
    Some(base64_lenient(raw))
}

/// Decomposes `raw` into decoded leaf parts within `limits`, on the calling
/// thread: use [`decompose_bounded`] for anything that comes from outside,
/// or a thread with [`stack_bytes_for`] of stack.
pub fn decompose(raw: &[u8], limits: &MimeLimits) -> Decomposed {
    let mut w = Walker {
        limits,
        out: Decomposed::default(),
        decoded: 0,
    };
    w.walk_bytes(raw, 0);
    w.out
}

/// Drops a parsed message level by level: dropping the tree as it is would
/// recurse once per nested message.
fn drop_flat(msg: mail_parser::Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut m) = stack.pop() {
        for p in &mut m.parts {
            if matches!(p.body, PartType::Message(_))
                && let PartType::Message(inner) =
                    std::mem::replace(&mut p.body, PartType::Binary(Default::default()))
            {
                stack.push(inner);
            }
        }
    }
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
    fn broken_base64_is_decoded_leniently() {
        let msg = b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\nPGh0bWw+\r\naGk=\r\n--b--\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert_eq!(&*d.parts[0].content, b"<html>hi");
        assert_eq!(base64_lenient(b"aG k\r\n=\r\nzz"), b"hi");
    }

    #[test]
    fn base64_pasted_into_a_text_body_becomes_a_part() {
        let msg =
            b"Subject: s\r\nMIME-Version: 1.0\r\n\r\nThis is a multipart MIME message.\r\n\r\n\
--= Boundary\r\nContent-Type: application/octet-stream;\r\n\tname=\"p.htm\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nPGh0bWw+\r\naGk=\r\n--= Boundary--\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert_eq!(d.parts.len(), 2);
        assert_eq!(d.parts[1].info.file_name.as_deref(), Some("p.htm"));
        assert_eq!(&*d.parts[1].content, b"<html>hi");
    }

    #[test]
    fn pasted_base64_under_a_message_header_group_is_still_found() {
        // `prepare` marks the encoding of this header group (it looks like
        // an encoded embedded message); the pasted block is found anyway.
        let msg = b"Subject: s\r\nMIME-Version: 1.0\r\n\r\nForwarded:\r\n\r\n\
Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nPGh0bWw+\r\naGk=\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert!(
            d.parts.iter().any(|p| &*p.content == b"<html>hi"),
            "{:?}",
            d.parts
                .iter()
                .map(|p| String::from_utf8_lossy(&p.content))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_epilogue_is_a_text_part() {
        let msg = b"Subject: e\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b--\r\n\r\nTo unsubscribe: list-off@example.org\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert_eq!(d.parts.len(), 2);
        assert_eq!(
            &*d.parts[1].content,
            b"\r\nTo unsubscribe: list-off@example.org\r\n"
        );
        let none = b"Subject: e\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b--\r\n\r\n";
        assert_eq!(decompose(none, &MimeLimits::default()).parts.len(), 1);
    }

    #[test]
    fn an_x_uuencode_part_is_decoded_to_its_files() {
        // "Cat" uuencoded, sent as the part's transfer encoding.
        let msg = b"Subject: u\r\nMIME-Version: 1.0\r\n\
Content-Type: application/octet-stream; name=\"cat.txt\"\r\n\
Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 cat.txt\r\n#0V%T\r\n`\r\nend\r\n";
        let d = decompose(msg, &MimeLimits::default());
        assert_eq!(d.parts.len(), 1);
        assert_eq!(d.parts[0].info.file_name.as_deref(), Some("cat.txt"));
        assert_eq!(&*d.parts[0].content, b"Cat");
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
