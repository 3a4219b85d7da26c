//! PCRE subsignatures for the clamscan comparison: logical signatures with
//! PCRE subsignatures of every flag and offset kind, the messages that
//! trigger them and near misses; and one signature triggered by every
//! message of the SpamAssassin corpus, so that the expression runs on all
//! of it, raw and decoded, in both scanners.

use std::path::Path;

use crate::clamscan::{hex, html_part, raw_body, with_attachment};

/// Writes `pcre.ldb` into `defs` and the messages into `mail`.
pub(crate) fn generate(defs: &Path, mail: &Path) {
    let t = hex(b"PCRE-TRIGGER");
    let sigs = [
        format!("Pcre.Plain;Engine:81-255,Target:0;0&1;{t};0/pay(load|day)\\s+\\d+/"),
        format!("Pcre.Icase;Engine:81-255,Target:0;0&1;{t};0/secret\\s+code/i"),
        format!("Pcre.Global3;Engine:81-255,Target:0;0&1=3;{t};0/token-\\d/g"),
        format!("Pcre.Global2;Engine:81-255,Target:0;0&1=2;{t};0/token-\\d/g"),
        format!("Pcre.Rolling;Engine:81-255,Target:0;0&1;{t};200:0/rolling-[a-z]+/r"),
        format!("Pcre.AtZero;Engine:81-255,Target:0;0&1;{t};0:0/Hello,/"),
        format!("Pcre.Within;Engine:81-255,Target:0;0&1;{t};0,40:0/Hello,\\s+PCRE/e"),
        format!("Pcre.Lookahead;Engine:81-255,Target:0;0&1;{t};0/price(?=\\s*\\$)/i"),
        format!("Pcre.Backref;Engine:81-255,Target:0;0&1;{t};0/(zz|qq)-\\1-\\1/"),
        format!("Pcre.DotAll;Engine:81-255,Target:0;0&1;{t};0/begin-x.+end-x/s"),
        format!(
            "Pcre.Binary;Engine:81-255,Target:0;0&1;{t};0/\\xde\\xad[\\x00-\\x0f]{{2}}\\xbe\\xef/"
        ),
        format!(
            "Pcre.Html;Engine:81-255,Target:3;0&1;{};0/<a href=.{{0,40}}evil-site/",
            hex(b"pcre-html")
        ),
        "Pcre.Never;Engine:81-255,Target:0;0&1;4e455645522d5052455345;0/./".to_string(),
        // Every message has a Subject header: this one runs everywhere.
        format!(
            "Pcre.Corpus;Engine:81-255,Target:0;0&1;{};0/(free\\s+money|100%\\s+free|click\\s+here)/i",
            hex(b"Subject:")
        ),
    ];
    std::fs::write(defs.join("pcre.ldb"), sigs.join("\n") + "\n").unwrap();

    let texts: &[(&str, &str)] = &[
        ("plain", "PCRE-TRIGGER payday  42 and payload 7"),
        ("plain-miss", "PCRE-TRIGGER payday soon"),
        ("icase", "PCRE-TRIGGER the SECRET   Code is 1234"),
        ("global3", "PCRE-TRIGGER token-1 token-2 token-3"),
        ("global2", "PCRE-TRIGGER token-1 token-2"),
        (
            "rolling",
            "PCRE-TRIGGER padding padding padding padding padding padding padding padding padding padding padding padding padding padding rolling-stone",
        ),
        ("within", "PCRE-TRIGGER"),
        ("lookahead", "PCRE-TRIGGER price  $10, price tag"),
        ("lookahead-miss", "PCRE-TRIGGER price tag"),
        ("backref", "PCRE-TRIGGER zz-zz-zz"),
        ("backref-miss", "PCRE-TRIGGER zz-qq-zz"),
        ("dotall", "PCRE-TRIGGER begin-x\r\nmiddle\r\nend-x"),
        ("untriggered", "payday 42 token-1 token-2 token-3 zz-zz-zz"),
    ];
    for (name, text) in texts {
        std::fs::write(mail.join(format!("pcre-{name}.eml")), raw_body(name, text)).unwrap();
    }
    std::fs::write(
        mail.join("pcre-binary.eml"),
        with_attachment(
            "binary",
            "x.bin",
            b"PCRE-TRIGGER \x00\x01\xde\xad\x03\x04\xbe\xef\x02",
        ),
    )
    .unwrap();
    std::fs::write(
        mail.join("pcre-html.eml"),
        html_part(
            "html",
            "<html><body>pcre-html <A HREF=\"http://x.example/evil-site\">x</a></body></html>",
        ),
    )
    .unwrap();
}

/// What each PCRE message must give (clamscan agreeing is checked by the
/// caller): the signature, and whether it matches there.
const EXPECTED: &[(&str, &str, bool)] = &[
    ("pcre-plain.eml", "Pcre.Plain", true),
    ("pcre-plain-miss.eml", "Pcre.Plain", false),
    ("pcre-icase.eml", "Pcre.Icase", true),
    ("pcre-global3.eml", "Pcre.Global3", true),
    ("pcre-global3.eml", "Pcre.Global2", false),
    ("pcre-global2.eml", "Pcre.Global2", true),
    ("pcre-rolling.eml", "Pcre.Rolling", true),
    ("pcre-within.eml", "Pcre.AtZero", true),
    ("pcre-within.eml", "Pcre.Within", true),
    ("pcre-lookahead.eml", "Pcre.Lookahead", true),
    ("pcre-lookahead-miss.eml", "Pcre.Lookahead", false),
    ("pcre-backref.eml", "Pcre.Backref", true),
    ("pcre-backref-miss.eml", "Pcre.Backref", false),
    ("pcre-dotall.eml", "Pcre.DotAll", true),
    ("pcre-untriggered.eml", "Pcre.Plain", false),
    ("pcre-untriggered.eml", "Pcre.Global3", false),
    ("pcre-binary.eml", "Pcre.Binary", true),
    ("pcre-html.eml", "Pcre.Html", true),
];

/// Asserts what cordon found (`ours`, names by message path) on the PCRE
/// messages, and that the corpus-wide expression matched real mail.
pub(crate) fn check(ours: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>) {
    crate::clamscan::expect_findings(ours, EXPECTED);
    let corpus = ours
        .values()
        .filter(|n| n.contains("Pcre.Corpus.UNOFFICIAL"))
        .count();
    assert!(corpus >= 100, "Pcre.Corpus matched only {corpus} messages");
    assert!(!ours.values().any(|n| n.contains("Pcre.Never.UNOFFICIAL")));
}
