//! The layer order of cordon's modules, and the test that holds the code
//! to it: a module may use modules of lower layers only, never one of its
//! own layer or above. Dependencies then point one way, down the data
//! path, and a module can be read and changed knowing only what is below
//! it.

/// Every top-level module and its layer, bottom first. Modules of one
/// layer are siblings: neither uses the other.
pub const LAYERS: &[(&str, u32)] = &[
    ("text", 0),
    ("process", 0),
    ("bindings", 0),
    ("listen", 1),
    ("inputs", 1),
    ("mime", 1),
    ("verdict_cache", 1),
    ("engine", 2),
    ("scan", 3),
    ("policy", 3),
    ("judge", 4),
    ("live", 5),
    ("registry", 6),
    ("watch", 7),
    ("milter", 8),
    ("control", 8),
    ("config", 9),
    ("daemon", 10),
    ("cli", 11),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    fn layer(module: &str) -> Option<u32> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    /// The source without comments (doc links are not dependencies) and
    /// without string literals' contents.
    fn code_only(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let mut in_str = false;
            let mut prev = ' ';
            let mut kept = String::new();
            let chars: Vec<char> = line.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                    break;
                }
                if c == '"' && prev != '\\' && !(prev == '\'' && chars.get(i + 1) == Some(&'\'')) {
                    in_str = !in_str;
                }
                if !in_str {
                    kept.push(c);
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                i += 1;
            }
            out.push_str(&kept);
            out.push('\n');
        }
        out
    }

    /// The top-level modules `code` names through `crate::`, including
    /// every branch of a `use crate::{a::X, b};` group.
    fn crate_modules(code: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // The top-level items of the group, to its closing brace.
                let mut depth = 0;
                let mut item = String::new();
                let mut items = Vec::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                        _ => {}
                    }
                    item.push(c);
                }
                items.push(item);
                for i in items {
                    let name: String = i
                        .trim_start_matches([',', ' ', '\n', '\t'])
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }

    /// The top-level module a file of `src/` belongs to.
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        match name {
            "lib" | "main" | "layers" => None,
            n => Some(n.to_string()),
        }
    }

    /// Every import that points up or sideways, as "file: a -> b".
    fn violations(src: &Path) -> (usize, Vec<String>) {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut bad = Vec::new();
        let mut checked = 0;
        for f in &files {
            let Some(module) = module_of(src, f) else {
                continue;
            };
            let Some(own) = layer(&module) else {
                bad.push(format!(
                    "{}: module {module} has no layer in layers.rs",
                    f.display()
                ));
                continue;
            };
            checked += 1;
            let code = code_only(&std::fs::read_to_string(f).expect("reading a source file"));
            for used in crate_modules(&code) {
                if used == module {
                    continue;
                }
                match layer(&used) {
                    Some(l) if l < own => {}
                    Some(l) => bad.push(format!(
                        "{}: {module} (layer {own}) uses {used} (layer {l})",
                        f.display()
                    )),
                    None => bad.push(format!(
                        "{}: {module} uses {used}, which has no layer",
                        f.display()
                    )),
                }
            }
        }
        (checked, bad)
    }

    #[test]
    fn no_module_uses_one_of_its_layer_or_above() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (checked, bad) = violations(&src);
        assert!(checked > 30, "only {checked} files checked");
        assert!(
            bad.is_empty(),
            "imports against the layers:\n{}",
            bad.join("\n")
        );
    }

    /// A file past about 600 lines usually holds two ideas (DESIGN.md).
    #[test]
    fn no_source_file_is_past_about_600_lines() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let long: Vec<String> = files
            .iter()
            .map(|f| {
                let n = std::fs::read_to_string(f).expect("source").lines().count();
                (f, n)
            })
            .filter(|(_, n)| *n > 620)
            .map(|(f, n)| format!("{}: {n} lines", f.display()))
            .collect();
        assert!(
            long.is_empty(),
            "split these along their ideas:\n{}",
            long.join("\n")
        );
    }

    #[test]
    fn every_module_in_lib_has_a_layer_and_every_layer_a_module() {
        let lib = include_str!("lib.rs");
        let declared: BTreeSet<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';'))
            .collect();
        let layered: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
        assert_eq!(declared, layered);
    }

    #[test]
    fn the_check_finds_imports_in_groups_and_paths_but_not_in_comments() {
        let code = code_only(
            "use crate::{engine::X, policy};\n\
             let a = crate::cli::run(); // crate::daemon\n\
             let s = \"crate::config\";\n\
             use crate::{\n    registry::{A, B},\n    judge,\n};\n",
        );
        let found: Vec<String> = crate_modules(&code).into_iter().collect();
        assert_eq!(found, ["cli", "engine", "judge", "policy", "registry"]);
    }

    #[test]
    fn an_upward_import_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path();
        std::fs::create_dir(src.join("policy")).expect("mkdir");
        for (file, text) in [
            ("text.rs", "pub fn f() {}\n"),
            (
                "policy/mod.rs",
                "use crate::scan::Message;\nuse crate::text;\n",
            ),
            ("engine.rs", "use crate::{bindings, config::X};\n"),
        ] {
            std::fs::write(src.join(file), text).expect("write");
        }
        let (_, bad) = violations(src);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].contains("engine (layer 2) uses config (layer 9)"),
            "{bad:?}"
        );
        assert!(
            bad[1].contains("policy (layer 3) uses scan (layer 3)"),
            "{bad:?}"
        );
    }
}
