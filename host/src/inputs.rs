//! Where `cordon scan` gets messages: files, directories (recursively),
//! mbox files (each message), Maildir folders, and standard input.
//!
//! Inputs are expanded into [`Input`]s lazily, in a stable order (directory
//! entries sorted by name), so that output order is reproducible. A file
//! that cannot be read becomes an `Input` carrying the error, so one bad
//! file is reported and the rest are still scanned.

use std::io::Read;
use std::path::{Path, PathBuf};

/// One message to scan, or the reason it could not be read.
#[derive(Debug)]
pub struct Input {
    /// How the message is named in output: the path, `path[N]` for the Nth
    /// message (from 1) of an mbox, or `-` for stdin.
    pub label: String,
    /// The raw message.
    pub bytes: Result<Vec<u8>, String>,
}

/// Expands command-line operands into the files to read, in order.
/// Directories are walked recursively; Maildir `tmp/` folders (messages
/// still being written) are skipped. A missing operand is reported as an
/// error input.
pub fn expand(operands: &[PathBuf]) -> Vec<Operand> {
    let mut out = Vec::new();
    for op in operands {
        if op.as_os_str() == "-" {
            out.push(Operand::Stdin);
        } else {
            walk(op, &mut out);
        }
    }
    out
}

/// One file (or stdin) to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// Standard input.
    Stdin,
    /// A file.
    File(PathBuf),
    /// Something that could not be listed.
    Error(PathBuf, String),
}

fn walk(path: &Path, out: &mut Vec<Operand>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(Operand::Error(path.to_path_buf(), e.to_string()));
            return;
        }
    };
    if !meta.is_dir() {
        out.push(Operand::File(path.to_path_buf()));
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            out.push(Operand::Error(path.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    let maildir = is_maildir(path);
    for child in children {
        let name = child.file_name().map(|n| n.to_string_lossy().into_owned());
        if maildir && name.as_deref() == Some("tmp") {
            continue;
        }
        // Dot files: Maildir++ subfolders (`.Sent`) are walked, other hidden
        // files (`.DS_Store`, editor swap files) are not messages.
        if child.is_file() && name.as_deref().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        walk(&child, out);
    }
}

fn is_maildir(dir: &Path) -> bool {
    ["cur", "new", "tmp"].iter().all(|d| dir.join(d).is_dir())
}

/// Reads one operand into its messages: one for a plain file or stdin, one
/// per message for an mbox file.
pub fn read(op: &Operand) -> Vec<Input> {
    match op {
        Operand::Error(p, e) => vec![Input {
            label: p.display().to_string(),
            bytes: Err(format!("cannot read {}: {e}", p.display())),
        }],
        Operand::Stdin => {
            let mut buf = Vec::new();
            let bytes = std::io::stdin()
                .read_to_end(&mut buf)
                .map(|_| buf)
                .map_err(|e| format!("cannot read standard input: {e}"));
            split_if_mbox("-", bytes)
        }
        Operand::File(p) => {
            let label = p.display().to_string();
            let bytes = std::fs::read(p).map_err(|e| format!("cannot read {label}: {e}"));
            split_if_mbox(&label, bytes)
        }
    }
}

fn split_if_mbox(label: &str, bytes: Result<Vec<u8>, String>) -> Vec<Input> {
    match bytes {
        Ok(b) if b.starts_with(b"From ") => split_mbox(&b)
            .into_iter()
            .enumerate()
            .map(|(i, m)| Input {
                label: format!("{label}[{}]", i + 1),
                bytes: Ok(m),
            })
            .collect(),
        bytes => vec![Input {
            label: label.to_string(),
            bytes,
        }],
    }
}

/// The names of a message's header fields, in order: each line of the header
/// section that is not a continuation and has a colon.
pub fn header_names(message: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            names.push(
                String::from_utf8_lossy(&line[..colon])
                    .trim_end()
                    .to_string(),
            );
        }
    }
    names
}

/// Splits an mbox (mboxo or mboxrd) into messages. A message starts at a
/// line beginning `From ` that is the first line or follows an empty line;
/// the `From ` separator line itself is not part of the message, and one
/// level of `>From ` quoting is removed (mboxrd: `>>From ` becomes `>From `).
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let is_sep = prev_blank && line.starts_with(b"From ");
        if is_sep {
            if let Some(mut m) = current.take() {
                // The blank line before a separator belongs to the mbox.
                strip_one_trailing_blank_line(&mut m);
                messages.push(m);
            }
            current = Some(Vec::new());
        } else if let Some(m) = current.as_mut() {
            let unquoted = line
                .iter()
                .position(|&b| b != b'>')
                .filter(|&n| n > 0 && line[n..].starts_with(b"From "))
                .map_or(line, |_| &line[1..]);
            m.extend_from_slice(unquoted);
        }
        prev_blank = line == b"\n" || line == b"\r\n";
    }
    if let Some(mut m) = current {
        strip_one_trailing_blank_line(&mut m);
        messages.push(m);
    }
    messages
}

fn strip_one_trailing_blank_line(m: &mut Vec<u8>) {
    if m.ends_with(b"\n\n") {
        m.pop();
    } else if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_splits_on_from_lines_after_blank_lines() {
        let mbox = b"From a@x Thu Jan  1 00:00:00 2026\nSubject: 1\n\nbody one\nFrom here on, not a separator\n\n\
From b@x Thu Jan  1 00:00:00 2026\nSubject: 2\n\n>From quoted\n>>From twice\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            b"Subject: 1\n\nbody one\nFrom here on, not a separator\n"
        );
        assert_eq!(msgs[1], b"Subject: 2\n\nFrom quoted\n>From twice\n");
    }

    #[test]
    fn directories_are_walked_in_order_skipping_maildir_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["md/cur", "md/new", "md/tmp", "z"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "b.eml",
            "a.eml",
            "md/cur/1",
            "md/new/2",
            "md/tmp/partial",
            "z/.hidden",
            "z/c",
        ] {
            std::fs::write(root.join(f), "Subject: x\n\nx\n").unwrap();
        }
        let got: Vec<String> = expand(&[root.to_path_buf()])
            .into_iter()
            .map(|o| match o {
                Operand::File(p) => p.strip_prefix(root).unwrap().display().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["a.eml", "b.eml", "md/cur/1", "md/new/2", "z/c"]);
    }

    #[test]
    fn missing_file_is_an_error_input_naming_it() {
        let ops = expand(&[PathBuf::from("/nonexistent/cordon-test.eml")]);
        let inputs = read(&ops[0]);
        let err = inputs[0].bytes.as_ref().unwrap_err();
        assert!(err.contains("/nonexistent/cordon-test.eml"), "{err}");
    }
}
