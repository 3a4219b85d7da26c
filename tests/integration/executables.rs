//! clamsig against clamscan on Windows executables: PE section hashes
//! (`.mdb` with MD5, `.msb` with SHA1 and SHA256, fixed and `*` sizes) and
//! body signatures at PE-relative offsets (`EP+n`, `EP-n`, `Sx+n`, `SL+n`,
//! `SEx`, spans) in `.ndb` and `.ldb`, built for the test from Debian's
//! clamav-testfiles executables, each mailed as an attachment. For every
//! signature that should match, a near miss (one byte off) that must not.

use std::collections::BTreeSet;
use std::path::Path;

use crate::clamscan::{clamscan, md5_hex, with_attachment};

const EXECUTABLES: &[&str] = &[
    "clam.exe",
    "clam-nsis.exe",
    "clam-fsg.exe",
    "clam-wwpack.exe",
    "clam-upx.exe",
];

/// Executables whose unpacked content ClamAV scans as a rebuilt PE where
/// cordon does not: what matches inside is not compared, what matches the
/// file itself is.
const UNPACKED_ONLY_BY_CLAMAV: &[(&str, &str)] = &[
    (
        "clam-nsis.exe",
        "an NSIS installer: clamsig does not open NSIS (unscannable)",
    ),
    (
        "clam-wwpack.exe",
        "WWPack32: clamsig does not unpack it (unscannable)",
    ),
    (
        "clam-upx.exe",
        "clamsig unpacks UPX and scans what the image holds, but does not rebuild \
         the image into an executable, so section and entry-point signatures of \
         the packed program do not apply to it",
    ),
];

/// Sections as ClamAV places them: pointer rounded down and size rounded
/// up to the file alignment (a multiple of 512); with the entry point's
/// file offset.
struct Exe {
    entry: Option<usize>,
    sections: Vec<(usize, usize)>,
}

fn u16le(d: &[u8], at: usize) -> usize {
    u16::from_le_bytes([d[at], d[at + 1]]) as usize
}

fn u32le(d: &[u8], at: usize) -> usize {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize
}

fn layout(d: &[u8]) -> Exe {
    let pe = u32le(d, 0x3c);
    let count = u16le(d, pe + 6);
    let opt = pe + 24;
    let table = opt + u16le(d, pe + 20);
    let entry_rva = u32le(d, opt + 16);
    let align = u32le(d, opt + 36);
    let mut sections = Vec::new();
    let mut entry = None;
    for i in 0..count {
        let s = table + 40 * i;
        let (vsize, rva) = (u32le(d, s + 8), u32le(d, s + 12));
        let raw = u32le(d, s + 20) / align * align;
        let size = u32le(d, s + 16).div_ceil(align) * align;
        if entry_rva >= rva && entry_rva < rva + vsize.max(size) {
            entry = Some(raw + entry_rva - rva);
        }
        sections.push((raw, size));
    }
    Exe { entry, sections }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signature files for `exes`: every section's hashes, and patterns at
/// each kind of PE offset with their near misses.
fn signatures(exes: &[(String, Vec<u8>)], defs: &Path) {
    let (mut mdb, mut msb, mut ndb, mut ldb) =
        (String::new(), String::new(), String::new(), String::new());
    // ClamAV keeps one name per digest: a section two files share is
    // listed once.
    let mut seen = BTreeSet::new();
    for (n, d) in exes {
        let n = n.replace('.', "_");
        let exe = layout(d);
        for (i, &(raw, size)) in exe.sections.iter().enumerate() {
            let Some(data) = d.get(raw..raw + size).filter(|_| size > 0) else {
                continue;
            };
            if !seen.insert(md5_hex(data)) {
                continue;
            }
            mdb.push_str(&format!("{size}:{}:Md5.{n}.S{i}\n", md5_hex(data)));
            // The wrong size never matches.
            mdb.push_str(&format!(
                "{}:{}:Md5Size.{n}.S{i}\n",
                size + 1,
                md5_hex(data)
            ));
            let sha1 = crate::clamscan::sha_hex("sha1sum", data);
            let sha256 = crate::clamscan::sha_hex("sha256sum", data);
            msb.push_str(&format!("{size}:{sha1}:Sha1.{n}.S{i}\n"));
            msb.push_str(&format!("*:{sha256}:Sha256.{n}.S{i}:73\n"));
            // A place where the bytes one further on differ, so that the
            // near miss (one byte off) cannot match by repetition.
            if let Some(off) = (16..size.saturating_sub(48))
                .find(|&o| d[raw + o..raw + o + 8] != d[raw + o + 1..raw + o + 9])
            {
                let at = raw + off;
                let bytes = hex(&d[at..at + 8]);
                ndb.push_str(&format!("Sx.{n}.S{i}:1:S{i}+{off}:{bytes}\n"));
                ndb.push_str(&format!("SxMiss.{n}.S{i}:1:S{i}+{}:{bytes}\n", off + 1));
                ndb.push_str(&format!("SE.{n}.S{i}:1:SE{i}:{bytes}\n"));
            }
        }
        if let Some(&(raw, size)) = exe.sections.last()
            && size >= 16
            && d.len() >= raw + 16
        {
            ndb.push_str(&format!("SL.{n}:1:SL+8:{}\n", hex(&d[raw + 8..raw + 16])));
        }
        if let Some(ep) = exe.entry.filter(|&e| e >= 8 && e + 16 <= d.len()) {
            ndb.push_str(&format!("Ep.{n}:1:EP+0:{}\n", hex(&d[ep..ep + 8])));
            ndb.push_str(&format!("EpPlus.{n}:1:EP+4:{}\n", hex(&d[ep + 4..ep + 12])));
            ndb.push_str(&format!("EpMinus.{n}:1:EP-8:{}\n", hex(&d[ep - 8..ep])));
            ndb.push_str(&format!(
                "EpSpan.{n}:1:EP+0,8:{}\n",
                hex(&d[ep + 6..ep + 14])
            ));
            ndb.push_str(&format!("EpMiss.{n}:1:EP+1:{}\n", hex(&d[ep..ep + 8])));
            ldb.push_str(&format!(
                "Ldb.{n};Engine:51-255,Target:1;0&1;EP+0:{};{}\n",
                hex(&d[ep..ep + 4]),
                hex(&d[0..2])
            ));
        }
    }
    for (file, text) in [
        ("t.mdb", mdb),
        ("t.msb", msb),
        ("t.ndb", ndb),
        ("t.ldb", ldb),
    ] {
        std::fs::write(defs.join(file), text).unwrap();
    }
}

#[test]
fn pe_section_hashes_and_offsets_match_clamscan() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    let mail = dir.path().join("mail");
    std::fs::create_dir(&defs).unwrap();
    std::fs::create_dir(&mail).unwrap();
    let src = Path::new("/usr/share/clamav-testfiles");
    let exes: Vec<(String, Vec<u8>)> = EXECUTABLES
        .iter()
        .map(|n| {
            let d = std::fs::read(src.join(n))
                .unwrap_or_else(|e| panic!("{n}: {e} (./dev test installs clamav-testfiles)"));
            (n.to_string(), d)
        })
        .collect();
    signatures(&exes, &defs);
    for (name, data) in &exes {
        std::fs::write(
            mail.join(format!("{name}.eml")),
            with_attachment(name, name, data),
        )
        .unwrap();
    }
    // Plain text is never an executable: the PE-relative signatures must
    // not match it even where its bytes are the same.
    let text: Vec<u8> = exes[0].1.iter().map(|_| b'x').collect();
    std::fs::write(
        mail.join("text.eml"),
        with_attachment("text", "x.txt", &text),
    )
    .unwrap();

    let theirs = clamscan(&defs, &[&mail]);
    let ours = crate::clamscan::cordon_scan(&defs, &[&mail], dir.path());
    assert_eq!(ours.len(), exes.len() + 1);
    let mut differences = Vec::new();
    let mut matched = 0;
    for (path, mine) in &ours {
        let clam = &theirs[path];
        matched += mine.len();
        // Signatures made from the file itself must agree exactly; those of
        // the other files may also match inside what ClamAV unpacks.
        let file = Path::new(path).file_stem().unwrap().to_string_lossy();
        let tag = format!(".{}", file.replace('.', "_"));
        let own = |names: &BTreeSet<String>| -> BTreeSet<String> {
            names.iter().filter(|n| n.contains(&tag)).cloned().collect()
        };
        let unpacked = UNPACKED_ONLY_BY_CLAMAV.iter().any(|(f, _)| *f == file);
        let (mine, clam) = if unpacked {
            (own(mine), own(clam))
        } else {
            (mine.clone(), clam.clone())
        };
        if mine != clam {
            differences.push(format!(
                "{path}: only cordon {:?}, only clamscan {:?}",
                mine.difference(&clam).collect::<Vec<_>>(),
                clam.difference(&mine).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // Every kind of signature matched somewhere, and no near miss did.
    let all: BTreeSet<&str> = ours
        .values()
        .flatten()
        .map(|n| n.split('.').next().unwrap())
        .collect();
    for kind in [
        "Md5", "Sha1", "Sha256", "Sx", "SE", "SL", "Ep", "EpPlus", "EpMinus", "EpSpan", "Ldb",
    ] {
        assert!(all.contains(kind), "no {kind} signature matched: {all:?}");
    }
    for miss in ["Md5Size", "SxMiss", "EpMiss"] {
        assert!(!all.contains(miss), "{miss} matched");
    }
    assert!(matched > 20, "only {matched} matches");
}
