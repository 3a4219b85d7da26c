//! Documents with macros for the clamscan comparison: Word 97 documents
//! (OLE2) whose VBA project holds a module, its source compressed as
//! MS-OVBA prescribes, attached on their own and inside a zip; signatures
//! on the macro source, which is nowhere in the file as written, in the
//! form ClamAV scans it (lower case outside strings, white space
//! collapsed).

use std::io::Write;
use std::path::Path;

use crate::clamscan::{hex, with_attachment, zip};

/// MS-OVBA "compressed container": literal tokens only (a flag byte of 0
/// before each run of up to eight bytes), in chunks of up to 4,096 bytes.
fn ovba(data: &[u8]) -> Vec<u8> {
    let mut out = vec![1u8];
    for chunk in data.chunks(4096) {
        let mut body = Vec::new();
        for run in chunk.chunks(8) {
            body.push(0);
            body.extend_from_slice(run);
        }
        let header = 0xb000u16 | (body.len() as u16 + 2 - 3);
        out.extend_from_slice(&header.to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn record(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// The `dir` stream of a project with one standard module.
fn dir(module: &str) -> Vec<u8> {
    let mut d = Vec::new();
    record(&mut d, 0x01, &1u32.to_le_bytes()); // PROJECTSYSKIND: win32
    record(&mut d, 0x02, &0x409u32.to_le_bytes()); // PROJECTLCID
    record(&mut d, 0x14, &0x409u32.to_le_bytes()); // PROJECTLCIDINVOKE
    record(&mut d, 0x03, &1252u16.to_le_bytes()); // PROJECTCODEPAGE
    record(&mut d, 0x04, b"Project"); // PROJECTNAME
    record(&mut d, 0x05, b""); // PROJECTDOCSTRING
    record(&mut d, 0x40, b"");
    record(&mut d, 0x06, b""); // PROJECTHELPFILEPATH
    record(&mut d, 0x3d, b"");
    record(&mut d, 0x07, &0u32.to_le_bytes()); // PROJECTHELPCONTEXT
    record(&mut d, 0x08, &0u32.to_le_bytes()); // PROJECTLIBFLAGS
    // PROJECTVERSION: its size field says 4, then 6 bytes.
    d.extend_from_slice(&0x09u16.to_le_bytes());
    d.extend_from_slice(&4u32.to_le_bytes());
    d.extend_from_slice(&1u32.to_le_bytes());
    d.extend_from_slice(&0u16.to_le_bytes());
    record(&mut d, 0x0c, b""); // PROJECTCONSTANTS
    record(&mut d, 0x3c, b"");
    record(&mut d, 0x0f, &1u16.to_le_bytes()); // PROJECTMODULES
    record(&mut d, 0x13, &0xffffu16.to_le_bytes()); // PROJECTCOOKIE
    let wide: Vec<u8> = module.encode_utf16().flat_map(u16::to_le_bytes).collect();
    record(&mut d, 0x19, module.as_bytes()); // MODULENAME
    record(&mut d, 0x47, &wide);
    record(&mut d, 0x1a, module.as_bytes()); // MODULESTREAMNAME
    record(&mut d, 0x32, &wide);
    record(&mut d, 0x1c, b""); // MODULEDOCSTRING
    record(&mut d, 0x48, b"");
    record(&mut d, 0x31, &0u32.to_le_bytes()); // MODULEOFFSET
    record(&mut d, 0x1e, &0u32.to_le_bytes()); // MODULEHELPCONTEXT
    record(&mut d, 0x2c, &0xffffu16.to_le_bytes()); // MODULECOOKIE
    record(&mut d, 0x21, b""); // MODULETYPE: procedural
    record(&mut d, 0x2b, b""); // module terminator
    record(&mut d, 0x10, b""); // dir terminator
    d
}

/// A Word 97 document whose VBA project holds `source` in a module, in a
/// compound file of `version` (3: 512-byte sectors, as Office writes
/// them; 4: 4,096-byte sectors).
fn macro_document(source: &str, version: cfb::Version) -> Vec<u8> {
    let mut f =
        cfb::CompoundFile::create_with_version(version, std::io::Cursor::new(Vec::new())).unwrap();
    let put = |f: &mut cfb::CompoundFile<_>, path: &str, data: &[u8]| {
        f.create_stream(path).unwrap().write_all(data).unwrap();
    };
    put(
        &mut f,
        "/WordDocument",
        &[0xec, 0xa5, 0xc1, 0x00, 0, 0, 0, 0],
    );
    f.create_storage("/Macros").unwrap();
    f.create_storage("/Macros/VBA").unwrap();
    put(
        &mut f,
        "/Macros/PROJECT",
        b"ID=\"{00000000-0000-0000-0000-000000000000}\"\r\nModule=Module1\r\nName=\"Project\"\r\n",
    );
    put(
        &mut f,
        "/Macros/VBA/_VBA_PROJECT",
        &[0xcc, 0x61, 0xff, 0xff, 0x00, 0x00, 0x00],
    );
    put(&mut f, "/Macros/VBA/dir", &ovba(&dir("Module1")));
    put(&mut f, "/Macros/VBA/Module1", &ovba(source.as_bytes()));
    f.flush().unwrap();
    f.into_inner().into_inner()
}

/// Writes `macros.ndb` into `defs` and the messages into `mail`.
pub(crate) fn generate(defs: &Path, mail: &Path) {
    let source = "Attribute VB_Name = \"Module1\"\r\nSub AutoOpen()\r\n    \
                  Shell \"cmd /c CORDON-MACRO-MARK\"\r\nEnd Sub\r\n";
    let clean =
        "Attribute VB_Name = \"Module1\"\r\nSub Hello()\r\n    MsgBox \"hi\"\r\nEnd Sub\r\n";
    std::fs::write(
        defs.join("macros.ndb"),
        format!(
            "Macro.Mark:0:*:{}\nMacro.Shell:0:*:{}\nMacro.ShellAsWritten:0:*:{}\n",
            hex(b"CORDON-MACRO-MARK"),
            // Macro source is matched as ClamAV writes it out: lower case
            // outside strings, runs of white space one space.
            hex(b"sub autoopen()\r\n shell \"cmd /c"),
            hex(b"    Shell \"cmd /c")
        ),
    )
    .unwrap();
    let doc = macro_document(source, cfb::Version::V3);
    std::fs::write(
        mail.join("macro-doc.eml"),
        with_attachment("macro", "invoice.doc", &doc),
    )
    .unwrap();
    std::fs::write(
        mail.join("macro-zip.eml"),
        with_attachment(
            "macro-zip",
            "invoice.zip",
            &zip(&[("invoice.doc", &doc)], true),
        ),
    )
    .unwrap();
    std::fs::write(
        mail.join("macro-clean.eml"),
        with_attachment(
            "clean",
            "hello.doc",
            &macro_document(clean, cfb::Version::V3),
        ),
    )
    .unwrap();
    std::fs::write(
        mail.join("macro-doc-v4.eml"),
        with_attachment(
            "macro-v4",
            "invoice.doc",
            &macro_document(source, cfb::Version::V4),
        ),
    )
    .unwrap();
}

/// What each macro message must give (clamscan agreeing is checked by the
/// caller).
const EXPECTED: &[(&str, &str, bool)] = &[
    ("macro-doc.eml", "Macro.Mark", true),
    ("macro-doc.eml", "Macro.Shell", true),
    ("macro-doc.eml", "Macro.ShellAsWritten", false),
    ("macro-zip.eml", "Macro.Mark", true),
    ("macro-clean.eml", "Macro.Mark", false),
    ("macro-doc-v4.eml", "Macro.Mark", true),
];

/// Asserts what cordon found on the macro messages.
pub(crate) fn check(ours: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>) {
    crate::clamscan::expect_findings(ours, EXPECTED);
}
