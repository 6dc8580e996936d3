//! `cargo xtask tidy`: the architecture checks that no compiler makes.
//!
//! - **The crate stack.** Each mp crate may depend only on mp crates below it ([`STACK`]), and its `lib.rs`
//!   states its place in an `Architecture invariant:` line.
//! - **Levels inside a crate.** A crate's `lib.rs` declares its modules' levels in a table,
//!
//!   ```text
//!   //! | level | modules | what they hold |
//!   //! |---|---|---|
//!   //! | 0 | `sys`, `method` | ... |
//!   ```
//!
//!   and every module may refer (`crate::…`, in `use` or in a path) only to modules on strictly lower levels,
//!   so that the modules form no cycle and a reader knows what a change may touch. A name the crate root
//!   re-exports (`crate::Process`) counts as the module it comes from. Files inside a module's folder belong to
//!   that module. Every module must have a level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The mp crates, bottom first, with their level in the stack: a crate may depend on crates of a lower level.
const STACK: &[(&str, u32)] = &[
    ("mp-process", 0),
    ("mp-shm", 1),
    ("mp-sync", 2),
    ("mp-ipc", 3),
    ("mp-pool", 4),
    ("mp-log", 4),
    ("mp-manager", 4),
    ("mp-mpi", 5),
];

pub(crate) fn run() -> Result<(), String> {
    let problems = check_workspace(&crate::root());
    if problems.is_empty() {
        println!("tidy: the crate stack and every crate's module levels hold");
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("tidy: {problem}");
        }
        Err(format!("{} architecture problem(s)", problems.len()))
    }
}

/// Every problem found in the workspace at `root`.
fn check_workspace(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("crates")) else {
        return vec![format!("no crates/ folder in {}", root.display())];
    };
    let mut crates: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    crates.sort();
    for dir in crates {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some(level) = stack_level(&name) else { continue }; // not a stacked crate (mp-bench)
        problems.extend(check_stack(&dir, &name, level));
        problems.extend(check_levels(&dir.join("src"), &name));
    }
    problems
}

fn stack_level(name: &str) -> Option<u32> {
    STACK.iter().find(|(n, _)| *n == name).map(|(_, level)| *level)
}

/// The crate's `[dependencies]` on other mp crates, and its architecture line.
fn check_stack(dir: &Path, name: &str, level: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        let dependency = line.split(['.', '=', ' ']).next().unwrap_or_default();
        if !in_dependencies || dependency == name {
            continue;
        }
        if let Some(theirs) = stack_level(dependency)
            && theirs >= level
        {
            problems.push(format!(
                "{name} depends on {dependency}, which is not below it in the crate stack ({name} is at level \
                 {level}, {dependency} at {theirs})"
            ));
        }
    }
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
    if !lib.lines().any(|l| l.starts_with("//! Architecture invariant:")) {
        problems.push(format!("{name}/src/lib.rs has no `//! Architecture invariant:` line"));
    }
    problems
}

/// The module levels of the crate whose sources are in `src`.
fn check_levels(src: &Path, name: &str) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let levels = declared_levels(&lib);
    if levels.is_empty() {
        return vec![format!("{name}/src/lib.rs declares no module levels (a `//! | level | modules | … |` table)")];
    }
    let exports = root_exports(&lib);
    let mut problems = Vec::new();
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    for file in files {
        let relative = file.strip_prefix(src).expect("below src");
        let module = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
        let module = module.strip_suffix(".rs").unwrap_or(module);
        if module == "lib" || module == "main" {
            continue;
        }
        let shown = format!("{name}/src/{}", relative.display());
        let Some(&mine) = levels.get(module) else {
            problems.push(format!("{shown}: module `{module}` has no level in {name}/src/lib.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (line, target) in crate_references(&text) {
            let target_module = if levels.contains_key(target.as_str()) {
                target.clone()
            } else if let Some(module) = exports.get(&target) {
                module.clone()
            } else {
                continue; // a macro or a name the root defines itself
            };
            if target_module == module {
                continue;
            }
            let theirs = levels.get(target_module.as_str()).copied().unwrap_or(u32::MAX);
            if theirs >= mine {
                let via = if target == target_module { String::new() } else { format!(" (through `crate::{target}`)") };
                problems.push(format!(
                    "{shown}:{line}: module `{module}` (level {mine}) uses `{target_module}` (level {theirs}){via}: a \
                     module may use only modules on lower levels"
                ));
            }
        }
    }
    problems
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module → level` from the table in `lib.rs`: rows `//! | N | `a`, `b` | … |`.
fn declared_levels(lib: &str) -> BTreeMap<String, u32> {
    let mut levels = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else { continue };
        let mut cells = row.split('|').map(str::trim);
        let (Some(level), Some(modules)) = (cells.next(), cells.next()) else { continue };
        let Ok(level) = level.parse::<u32>() else { continue };
        for name in modules.split('`').skip(1).step_by(2) {
            let name = name.trim_end_matches(".rs").trim_end_matches('/');
            levels.insert(name.to_owned(), level);
        }
    }
    levels
}

/// The names the crate root re-exports (`pub use crate::{module::{Name, …}}`, `pub(crate) use crate::module::Name`),
/// each with the module it comes from.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for tree in use_trees(&strip_comments(lib)) {
        for path in flatten(&tree) {
            if let [first, .., last] = path.as_slice() {
                exports.insert(last.clone(), first.clone());
            }
        }
    }
    exports
}

/// The first segment after `crate::` of every reference in `text`, with its line number: in `use` trees
/// (`use crate::{a, b::c}` names `a` and `b`) and in paths (`crate::a::f()`). Comments are skipped.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let code = strip_comments(text);
    let mut found = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        // `pub(crate)` or `$crate::` are not references to a module.
        if start > 0 && code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at..];
        if rest.starts_with('{') {
            let end = matching_brace(rest).unwrap_or(rest.len());
            for part in split_top_level(&rest[1..end]) {
                let first: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() && first != "self" {
                    found.push((line_of(start), first));
                }
            }
            at += end;
        } else {
            let first: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !first.is_empty() {
                found.push((line_of(start), first));
            }
        }
    }
    found
}

/// The `crate::…` use trees of `code` (for the root's re-exports), as their text after `crate::`.
fn use_trees(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("use crate::") {
        let start = at + i + "use crate::".len();
        let end = code[start..].find(';').map_or(code.len(), |e| start + e);
        trees.push(code[start..end].to_owned());
        at = end;
    }
    trees
}

/// Every path a use tree names: `a::{B, c::D}` → `[a, B]`, `[a, c, D]` (an `x as y` counts as `y`).
fn flatten(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(body) = tree.strip_prefix('{') {
        let end = matching_brace(tree).unwrap_or(tree.len());
        return split_top_level(&body[..end - 1]).iter().flat_map(|part| flatten(part)).collect();
    }
    match tree.split_once("::") {
        Some((head, rest)) => flatten(rest)
            .into_iter()
            .map(|mut path| {
                path.insert(0, head.trim().to_owned());
                path
            })
            .collect(),
        None if tree.is_empty() || tree == "self" || tree == "*" => Vec::new(),
        None => vec![vec![tree.rsplit(" as ").next().unwrap_or(tree).trim().to_owned()]],
    }
}

/// The index of the brace closing the one `text` starts with.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `text` with `//` comments (doc comments included) blanked out, lines kept.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway workspace (named after the test, which run in parallel) with one crate, `mp-shm`, whose
    /// `lib.rs` is `lib` and whose modules are `files`.
    fn workspace(test: &str, lib: &str, files: &[(&str, &str)], manifest_deps: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("crates/mp-shm/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            root.join("crates/mp-shm/Cargo.toml"),
            format!("[package]\nname = \"mp-shm\"\n\n[dependencies]\n{manifest_deps}\n"),
        )
        .unwrap();
        std::fs::write(src.join("lib.rs"), lib).unwrap();
        for (path, text) in files {
            let path = src.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    const LIB: &str = "\
//! Architecture invariant: uses mp-process only.
//!
//! | level | modules | what |
//! |---|---|---|
//! | 0 | `sys` | the OS |
//! | 1 | `segment`, `error` | segments |
//! | 2 | `tracker/` | cleanup |

mod error;
mod segment;
mod sys;
mod tracker;

pub use crate::{error::Error, segment::{Segment, open}, tracker::Tracker};
";

    #[test]
    fn levels_that_hold_pass() {
        let root = workspace(
            "levelsthat",
            LIB,
            &[
                ("sys.rs", "pub(crate) fn raw() {}\n"),
                ("error.rs", "pub struct Error;\n"),
                ("segment.rs", "use crate::sys;\n// crate::tracker in a comment is no use\npub struct Segment;\n"),
                ("tracker/mod.rs", "use crate::{Segment, sys::raw};\nmod inner;\n"),
                ("tracker/inner.rs", "use super::*;\nfn f() { crate::segment::open(); }\n"),
            ],
            "mp-process.workspace = true",
        );
        let problems = check_workspace(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn an_upward_import_fails_naming_both_modules() {
        let root = workspace(
            "anupward",
            LIB,
            &[
                ("sys.rs", "pub(crate) fn raw() {}\n"),
                ("error.rs", "pub struct Error;\n"),
                ("segment.rs", "use crate::{error::Error, Tracker};\npub struct Segment;\n"),
                ("tracker/mod.rs", "use crate::segment::Segment;\n"),
            ],
            "mp-process.workspace = true",
        );
        let problems = check_workspace(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("mp-shm/src/segment.rs:1")
                && problems[0].contains("`segment` (level 1) uses `error` (level 1)"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("`segment` (level 1) uses `tracker` (level 2) (through `crate::Tracker`)"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_crate_depending_upward_or_a_module_without_level_fails() {
        let root = workspace(
            "acrate",
            LIB,
            &[("sys.rs", ""), ("error.rs", ""), ("segment.rs", ""), ("tracker/mod.rs", ""), ("stray.rs", "")],
            "mp-process.workspace = true\nmp-ipc = { path = \"../mp-ipc\" }",
        );
        let problems = check_workspace(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("mp-shm depends on mp-ipc"), "{problems:?}");
        assert!(problems[1].contains("module `stray` has no level"), "{problems:?}");
    }

    #[test]
    fn use_trees_flatten() {
        assert_eq!(
            flatten("{a::{B, c::D as E}, f::G}"),
            vec![
                vec!["a".to_owned(), "B".to_owned()],
                vec!["a".to_owned(), "c".to_owned(), "E".to_owned()],
                vec!["f".to_owned(), "G".to_owned()]
            ]
        );
    }
}
