//! The classes where clamsig once disagreed with clamscan, for the
//! comparison: hash signatures of the whole message file (fixed and `*`
//! sizes), `EOF-n` offsets on messages with LF, CRLF and no final line
//! end, text- and HTML-target signatures on text and HTML members of zip,
//! gzip and tar archives, and mail-target signatures on embedded messages
//! sent base64- or quoted-printable-encoded or inside archives.

use std::path::Path;

use crate::clamscan::{b64, gz, headers, hex, md5_hex, qp, sha_hex, tarball, with_attachment, zip};

/// An embedded message carrying `marker` in its body, sent with `cte`
/// (`base64`, `quoted-printable` or `7bit`) as a message/rfc822 part.
fn embedded(subject: &str, marker: &str, cte: &str) -> Vec<u8> {
    let inner = inner_message(marker);
    let body = match cte {
        "base64" => b64(inner.as_bytes()),
        "quoted-printable" => qp(&inner),
        _ => inner,
    };
    format!(
        "{}Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\n\
         Content-Type: text/plain\r\n\r\nForwarded.\r\n--outer\r\n\
         Content-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n--outer--\r\n",
        headers(subject)
    )
    .into_bytes()
}

fn inner_message(marker: &str) -> String {
    format!(
        "From: inner@example.net\r\nTo: x@example.com\r\nSubject: inner\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\n\
         The inner text {marker} ends here.\r\n--in\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--in--\r\n",
        b64(b"inner attachment bytes")
    )
}

/// Writes `classes.*` signature files into `defs` and the messages into
/// `mail`.
pub(crate) fn generate(defs: &Path, mail: &Path) {
    // Whole message files, with three kinds of line ends.
    let lf = format!(
        "{}Content-Type: text/plain\n\nWhole file body\nlast line WHOLE-EOF-MARK\n",
        headers("whole-lf").replace("\r\n", "\n")
    )
    .into_bytes();
    let crlf = String::from_utf8(lf.clone())
        .unwrap()
        .replace('\n', "\r\n")
        .replace("whole-lf", "whole-crlf")
        .into_bytes();
    let bare = String::from_utf8(crlf[..crlf.len() - 2].to_vec())
        .unwrap()
        .replace("whole-crlf", "whole-bare")
        .into_bytes();
    let mut hdb = String::new();
    let mut hsb = String::new();
    for (name, data) in [("lf", &lf), ("crlf", &crlf), ("bare", &bare)] {
        std::fs::write(mail.join(format!("class-whole-{name}.eml")), data).unwrap();
        hdb.push_str(&format!(
            "{}:{}:Class.Whole.{name}\n",
            md5_hex(data),
            data.len()
        ));
        hsb.push_str(&format!(
            "{}:*:Class.WholeAny.{name}:73\n",
            sha_hex("sha256sum", data)
        ));
    }
    let mark = hex(b"WHOLE-EOF-MARK");
    let mut ndb: Vec<String> = (13..=18)
        .map(|n| format!("Class.Eof{n}:0:EOF-{n}:{mark}"))
        .collect();

    // Text and HTML members of archives.
    let text_member = b"Plain Text   Member with   CLASS-TEXT-MARK\r\nand more\r\n";
    let html_member =
        b"<html><body><p>Html   <b>Member</b></p> CLASS-HTML-MARK <a href=\"x\">y</a></body></html>";
    ndb.push(format!(
        "Class.Text7:7:*:{}",
        hex(b"plain text member with class-text-mark")
    ));
    ndb.push(format!("Class.Html3:3:*:{}", hex(b"class-html-mark")));
    ndb.push(format!("Class.HtmlRaw0:0:*:{}", hex(b"<b>Member</b>")));
    let members: [(&str, &[u8]); 2] = [
        ("docs/read.txt", text_member),
        ("docs/page.html", html_member),
    ];
    for (name, data) in [
        ("zip", zip(&members, true)),
        ("gzip-text", gz(text_member)),
        ("gzip-html", gz(html_member)),
        ("tar", tarball(&members)),
    ] {
        std::fs::write(
            mail.join(format!("class-members-{name}.eml")),
            with_attachment(name, "bundle.bin", &data),
        )
        .unwrap();
    }

    // Mail-target signatures on embedded messages.
    ndb.push(format!("Class.Mail4:4:*:{}", hex(b"CLASS-MAIL-MARK")));
    ndb.push(format!(
        "Class.MailHeader4:4:*:{}",
        hex(b"From: inner@example.net")
    ));
    for cte in ["base64", "quoted-printable", "7bit"] {
        std::fs::write(
            mail.join(format!("class-embedded-{cte}.eml")),
            embedded(cte, "CLASS-MAIL-MARK", cte),
        )
        .unwrap();
    }
    let inner = inner_message("CLASS-MAIL-MARK");
    std::fs::write(
        mail.join("class-embedded-zip.eml"),
        with_attachment(
            "zip",
            "mail.zip",
            &zip(&[("fwd.eml", inner.as_bytes())], true),
        ),
    )
    .unwrap();
    std::fs::write(
        mail.join("class-embedded-tgz.eml"),
        with_attachment(
            "tgz",
            "mail.tgz",
            &gz(&tarball(&[("fwd.eml", inner.as_bytes())])),
        ),
    )
    .unwrap();
    std::fs::write(
        mail.join("class-embedded-attached.eml"),
        with_attachment("attached", "fwd.eml", inner.as_bytes()),
    )
    .unwrap();

    std::fs::write(defs.join("classes.hdb"), hdb).unwrap();
    std::fs::write(defs.join("classes.hsb"), hsb).unwrap();
    std::fs::write(defs.join("classes.ndb"), ndb.join("\n") + "\n").unwrap();
}

/// What each class message must give (clamscan agreeing is checked by the
/// caller): the signature, and whether it matches there.
const EXPECTED: &[(&str, &str, bool)] = &[
    ("class-whole-lf.eml", "Class.Whole.lf", true),
    ("class-whole-lf.eml", "Class.WholeAny.lf", true),
    ("class-whole-crlf.eml", "Class.Whole.crlf", true),
    ("class-whole-bare.eml", "Class.WholeAny.bare", true),
    ("class-whole-bare.eml", "Class.Whole.lf", false),
    // The marker ends 15 bytes from the end of LF text (its line end), 16
    // in the CRLF file and 14 with no line end; a text part is written
    // with LF line ends and a last one.
    ("class-whole-lf.eml", "Class.Eof15", true),
    ("class-whole-lf.eml", "Class.Eof16", false),
    ("class-whole-crlf.eml", "Class.Eof16", true),
    ("class-whole-crlf.eml", "Class.Eof15", true),
    ("class-whole-bare.eml", "Class.Eof14", true),
    ("class-whole-bare.eml", "Class.Eof15", true),
    ("class-whole-bare.eml", "Class.Eof13", false),
    ("class-members-zip.eml", "Class.Text7", true),
    ("class-members-zip.eml", "Class.Html3", true),
    ("class-members-zip.eml", "Class.HtmlRaw0", false),
    ("class-members-tar.eml", "Class.HtmlRaw0", true),
    ("class-members-gzip-text.eml", "Class.Text7", true),
    ("class-members-gzip-html.eml", "Class.Html3", true),
    ("class-embedded-base64.eml", "Class.Mail4", true),
    ("class-embedded-base64.eml", "Class.MailHeader4", true),
    ("class-embedded-quoted-printable.eml", "Class.Mail4", true),
    ("class-embedded-7bit.eml", "Class.Mail4", true),
    ("class-embedded-zip.eml", "Class.MailHeader4", true),
    ("class-embedded-tgz.eml", "Class.MailHeader4", true),
    ("class-embedded-attached.eml", "Class.MailHeader4", true),
];

/// Asserts what cordon found (`ours`, names by message path) on the class
/// messages.
pub(crate) fn check(ours: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>) {
    crate::clamscan::expect_findings(ours, EXPECTED);
}
