//! clamsig against clamscan on the containers mail carries: each of the 44
//! files of Debian's clamav-testfiles (the same 544-byte clam.exe inside
//! every archive, compressor, document format and packer ClamAV opens)
//! attached to a message, and again inside a zip attachment, scanned with
//! one signature: clam.exe's MD5 with its size, as ClamAV's own test does.
//!
//! Beside them, formats the testfiles lack, made here with Debian's tools
//! (`./dev test` installs them): an ISO 9660 image (genisoimage), an
//! MSZIP cabinet (gcab) and an xz file.
//!
//! Every file clamscan finds, cordon finds, except the packed executables
//! and installers listed in `UNOPENED`; each of those must come out
//! `unscannable(unsupported)` (deferred by the default policy), never
//! clean.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::clamscan::{clamscan, cordon_outcomes, md5_hex, with_attachment, zip};

const TESTFILES: &str = "/usr/share/clamav-testfiles";

/// The packed executables and installers clamsig does not open, each with
/// its format: ten formats at most.
const UNOPENED: &[(&str, &str)] = &[
    ("clam-aspack.exe", "ASPack"),
    ("clam-mew.exe", "MEW"),
    ("clam-nsis.exe", "NSIS"),
    ("clam-pespin.exe", "PESpin"),
    ("clam-petite.exe", "Petite"),
    ("clam-upack.exe", "Upack"),
    ("clam-wwpack.exe", "WWPack32"),
    ("clam-yc.exe", "yoda's Crypter"),
    ("clam_IScab_ext.exe", "InstallShield"),
    ("clam_IScab_int.exe", "InstallShield"),
    ("clam_ISmsi_ext.exe", "InstallShield"),
    ("clam_ISmsi_int.exe", "InstallShield"),
    ("clam.ea05.exe", "AutoIt"),
    ("clam.ea06.exe", "AutoIt"),
];

/// Runs a tool that makes a test file; a missing tool fails with the
/// package to install.
fn make(tool: &str, args: &[&str], dir: &Path, package: &str) {
    let o = std::process::Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): ./dev test installs {package}"));
    assert!(
        o.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// clam.exe in the formats made here: name and bytes.
pub(crate) fn made_here(exe: &[u8], dir: &Path) -> Vec<(String, Vec<u8>)> {
    let work = dir.join("made");
    std::fs::create_dir_all(work.join("tree/sub")).unwrap();
    std::fs::write(work.join("tree/sub/clam.exe"), exe).unwrap();
    std::fs::write(work.join("clam.exe"), exe).unwrap();
    make(
        "genisoimage",
        &["-quiet", "-J", "-R", "-o", "clam.iso", "tree"],
        &work,
        "genisoimage",
    );
    make(
        "gcab",
        &["-c", "-z", "clam.mszip.cab", "clam.exe"],
        &work,
        "gcab",
    );
    make("xz", &["-k", "clam.exe"], &work, "xz-utils");
    ["clam.iso", "clam.mszip.cab", "clam.exe.xz"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(work.join(n)).unwrap()))
        .collect()
}

#[test]
fn clamsig_finds_clam_exe_in_every_container_clamscan_opens() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    let mail = dir.path().join("mail");
    std::fs::create_dir(&defs).unwrap();
    std::fs::create_dir(&mail).unwrap();
    let src = Path::new(TESTFILES);
    let exe = std::fs::read(src.join("clam.exe")).unwrap_or_else(|e| {
        panic!("{TESTFILES}/clam.exe: {e} (./dev test installs clamav-testfiles)")
    });
    std::fs::write(
        defs.join("testfiles.hdb"),
        format!("{}:{}:ClamTest.Exe\n", md5_hex(&exe), exe.len()),
    )
    .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 44, "clamav-testfiles changed: {files:?}");
    let mut inputs: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|n| (n.clone(), std::fs::read(src.join(n)).unwrap()))
        .collect();
    inputs.extend(made_here(&exe, dir.path()));
    for (name, data) in &inputs {
        std::fs::write(
            mail.join(format!("attached-{name}.eml")),
            with_attachment(name, name, data),
        )
        .unwrap();
        let zipped = zip(&[(name.as_str(), data)], true);
        std::fs::write(
            mail.join(format!("zipped-{name}.eml")),
            with_attachment(name, &format!("{name}.zip"), &zipped),
        )
        .unwrap();
    }

    let theirs = clamscan(&defs, &[&mail]);
    let ours = cordon_outcomes(&defs, &[&mail], dir.path());
    assert_eq!(
        ours.len(),
        2 * inputs.len(),
        "cordon scanned {} messages",
        ours.len()
    );
    let unopened: BTreeMap<&str, &str> = UNOPENED.iter().copied().collect();
    let mut failures = Vec::new();
    let mut found = 0;
    for (path, (names, outcome)) in &ours {
        let file = Path::new(path).file_name().unwrap().to_string_lossy();
        let testfile = file
            .trim_start_matches("attached-")
            .trim_start_matches("zipped-")
            .trim_end_matches(".eml");
        let clam_found = theirs.get(path).is_some_and(|n| !n.is_empty());
        let we_found = names.contains("ClamTest.Exe.UNOFFICIAL");
        found += usize::from(we_found);
        if clam_found && !we_found {
            if unopened.contains_key(testfile) {
                if outcome != "unscannable:unsupported" {
                    failures.push(format!(
                        "{file}: a {} file came out {outcome}, not unscannable:unsupported",
                        unopened[testfile]
                    ));
                }
            } else {
                failures.push(format!(
                    "{file}: clamscan finds clam.exe, cordon says {outcome}"
                ));
            }
        }
        if we_found && !clam_found {
            failures.push(format!("{file}: cordon finds {names:?}, clamscan nothing"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let formats: BTreeSet<&str> = UNOPENED.iter().map(|(_, f)| *f).collect();
    assert!(formats.len() <= 10, "{} formats unopened", formats.len());
    // Every file but the clean one and the unopened ones, in both forms.
    assert!(
        found >= 2 * (inputs.len() - 1 - UNOPENED.len()),
        "cordon found clam.exe in only {found} messages"
    );
}
