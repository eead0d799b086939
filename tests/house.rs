//! The house rules a newcomer relies on, checked on the source itself (issue 30):
//!
//! * the import graph of `src/` (one node per module file, one arrow per `use crate::…`,
//!   `super::…` or inline `crate::…` path) has no circle, and no arrow runs back up from a
//!   module to one of its ancestors (a child uses what its parent is made of, never the parent);
//! * no function is over 100 lines and no file in `src/` is over 500 lines.
//!
//! The graph is built here from the text, with no crate to trust: a `use` is expanded through
//! its braces, and each path is resolved to the longest prefix that names a module file.
//! `cargo test --test house -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under src/ except main.rs (the binary sits above the library).
fn source_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    files.sort();
    files
}

/// src/gpu/engine/mod.rs → "gpu::engine"; src/gpu/matmul.rs → "gpu::matmul"; lib.rs → "".
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib") | Some("main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The text with comments, string and char literals blanked (braces inside them do not count),
/// line breaks kept so that line numbers stay true.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
            // Raw string r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let end: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat(b'#').take(hashes)).collect();
                out.extend(std::iter::repeat(b' ').take(j + 1 - i));
                i = j + 1;
                while i < b.len() && !b[i..].starts_with(&end) {
                    out.push(blank(b[i]));
                    i += 1;
                }
                out.extend(std::iter::repeat(b' ').take(end.len().min(b.len() - i)));
                i += end.len();
            } else {
                out.push(b[i]);
                i += 1;
            }
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\'', '{') or a lifetime ('a): a literal closes within 4-10 bytes.
            let close = if b.get(i + 1) == Some(&b'\\') {
                (i + 3..(i + 12).min(b.len())).find(|&j| b[j] == b'\'')
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    out.extend(std::iter::repeat(b' ').take(j + 1 - i));
                    i = j + 1;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The code before the file's `#[cfg(test)]` module (its `use super::*` means the file itself).
fn without_tests(code: &str) -> &str {
    match code.find("#[cfg(test)]") {
        Some(at) => &code[..at],
        None => code,
    }
}

/// `a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e].
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => out.push(format!("{prefix}{tree}")),
            Some(open) => {
                let head = format!("{prefix}{}", &tree[..open]);
                let inner = &tree[open + 1..tree.rfind('}').unwrap()];
                let (mut depth, mut start) = (0, 0);
                for (k, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&head, &inner[start..k], out);
                            start = k + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    go(&head, &inner[start..], out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// The module paths one file names: its `use` trees and every inline `crate::`/`super::` path.
fn paths_named(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    // use statements (pub use too), expanded through their braces.
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        paths.extend(expand_use(&after[..end]));
        rest = &after[end..];
    }
    // Inline paths anywhere in the code.
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(start) {
            let at = from + k;
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            // `pub(in crate::gpu)` is a visibility, not an import.
            if !code[..at].trim_end().ends_with("(in") {
                paths.push(code[at..at + len].to_string());
            }
            from = at + len.max(1);
        }
    }
    paths
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(k) = text[from..].find(word) {
        let at = from + k;
        let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        let after_ok = b.get(at + word.len()).is_some_and(|c| c.is_ascii_whitespace());
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// A named path resolved, from module `here`, to the longest prefix that is a module file.
fn resolve(path: &str, here: &str, modules: &BTreeSet<String>, is_mod_rs: bool) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = if here.is_empty() { vec![] } else { here.split("::").map(String::from).collect() };
    // `super` in a.rs (module a::b) is a; in a/b/mod.rs (module a::b) also a.
    let _ = is_mod_rs;
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        Some("self") => {
            segments.remove(0);
        }
        _ => return None, // an outside crate or a local name
    }
    let mut best = None;
    let mut candidate = base.clone();
    if modules.contains(&candidate.join("::")) {
        best = Some(candidate.join("::"));
    }
    for s in segments {
        candidate.push(s.to_string());
        let name = candidate.join("::");
        if modules.contains(&name) {
            best = Some(name);
        } else {
            break;
        }
    }
    best
}

/// The import graph: module → the modules it names (itself left out).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = source_files();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        if file.ends_with("main.rs") {
            continue;
        }
        let here = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let code = code_only(&text);
        let is_mod_rs = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let mut to = BTreeSet::new();
        for path in paths_named(without_tests(&code)) {
            if let Some(target) = resolve(&path, &here, &modules, is_mod_rs) {
                if target != here {
                    to.insert(target);
                }
            }
        }
        graph.insert(here, to);
    }
    graph
}

/// The graph seen from `depth` segments: gpu::engine::gradient → gpu::kernels becomes
/// gpu::engine → gpu::kernels at depth 2 and disappears at depth 1 (inside one room).
fn collapsed(graph: &BTreeMap<String, BTreeSet<String>>, depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        let f = cut(from);
        out.entry(f.clone()).or_default();
        for to in tos {
            let t = cut(to);
            if t != f && !is_ancestor(&t, &f) && !is_ancestor(&f, &t) {
                out.entry(f.clone()).or_default().insert(t);
            }
        }
    }
    out
}

fn circles_of(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    circles(graph)
}

fn is_ancestor(ancestor: &str, of: &str) -> bool {
    ancestor.is_empty() || of.starts_with(&format!("{ancestor}::"))
}

/// The graph's circles: its strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on_stack: BTreeSet::new(), next: 0, found: vec![] };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_import_graph_has_no_circle_and_no_arrow_back_up() {
    let graph = import_graph();
    let mut up = Vec::new();
    for (from, tos) in &graph {
        println!("{} → {}", if from.is_empty() { "(lib)" } else { from }, tos.iter().cloned().collect::<Vec<_>>().join(", "));
        for to in tos {
            if is_ancestor(to, from) {
                up.push(format!("{from} → {}", if to.is_empty() { "crate root (lib.rs)" } else { to }));
            }
        }
    }
    // Circles among files, and among folders at every depth (cpu → gpu → cpu is a circle of
    // rooms even when no two files name each other).
    let mut circles = circles(&graph);
    for depth in 1..=3 {
        circles.extend(circles_of(&collapsed(&graph, depth)).into_iter().filter(|c| !circles.contains(c)).collect::<Vec<_>>());
    }
    assert!(graph.len() > 40, "the graph was read: {} modules", graph.len());
    assert!(
        circles.is_empty() && up.is_empty(),
        "circles in src/'s imports:\n{}\narrows running back up (child → ancestor):\n{}",
        circles.iter().map(|c| format!("  {}", c.join(" ↔ "))).collect::<Vec<_>>().join("\n"),
        up.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n")
    );
}

/// The graph reader itself finds a circle and an upward arrow where they are.
#[test]
fn the_graph_reader_sees_circles_and_upward_arrows() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(circles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    assert!(is_ancestor("gpu", "gpu::engine") && is_ancestor("", "gpu") && !is_ancestor("gpu", "gpux"));
    assert_eq!(expand_use("crate::gpu::{a, b::{c, d}}"), vec!["crate::gpu::a", "crate::gpu::b::c", "crate::gpu::b::d"]);
    let modules: BTreeSet<String> = ["", "gpu", "gpu::engine", "gpu::kernels"].map(String::from).into();
    assert_eq!(resolve("super::kernels::X", "gpu::engine", &modules, true).as_deref(), Some("gpu::kernels"));
    assert_eq!(resolve("crate::gpu::engine::state::GpuEngine", "gpu::kernels", &modules, false).as_deref(), Some("gpu::engine"));
    assert_eq!(resolve("std::fs", "gpu", &modules, false), None);
    let code = code_only("let s = \"use crate::gpu;\"; // use crate::gpu;\nlet c = '{';");
    assert!(paths_named(&code).is_empty() && !code.contains('{'), "{code}");
}

/// Each `fn` in src/ with its length in lines, from its signature to its closing brace.
fn function_lengths() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for file in source_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_only(&text);
        let b = code.as_bytes();
        let mut from = 0;
        while let Some(at) = find_word(&code[from..], "fn").map(|k| from + k) {
            from = at + 2;
            // The body starts at the first '{' before any ';' (a trait method without a body has none).
            let Some(open) = code[at..].find(|c| c == '{' || c == ';').map(|k| at + k) else { break };
            if b[open] == b';' {
                continue;
            }
            let mut depth = 0;
            let mut close = open;
            for (k, &c) in b[open..].iter().enumerate() {
                match c {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let first = code[..at].matches('\n').count() + 1;
            let last = code[..close].matches('\n').count() + 1;
            let name: String = code[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push((format!("{}:{first} fn {name}", file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display()), last - first + 1));
        }
    }
    out
}

#[test]
fn no_function_over_100_lines_and_no_file_over_500() {
    let functions = function_lengths();
    assert!(functions.len() > 500, "the functions were read: {}", functions.len());
    let long: Vec<String> = functions.iter().filter(|(_, n)| *n > 100).map(|(f, n)| format!("  {f}: {n} lines")).collect();
    let big: Vec<String> = source_files()
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 500)
        .map(|(f, n)| format!("  {}: {n} lines", f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display()))
        .collect();
    assert!(long.is_empty() && big.is_empty(), "functions over 100 lines:\n{}\nfiles over 500 lines:\n{}", long.join("\n"), big.join("\n"));
}

#[test]
fn the_length_reader_measures_a_function() {
    // The reader works on src/: check it on src/main.rs's main, measured here by its lines.
    let lengths = function_lengths();
    // `module_of` above is in tests/, not src/; src/main.rs's `main` is measured like any other.
    let main = lengths.iter().find(|(f, _)| f.starts_with("src/main.rs") && f.ends_with("fn main")).expect("main.rs's main");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    let start = text.lines().position(|l| l.contains("fn main(")).unwrap();
    let end = start + text.lines().skip(start).position(|l| l == "}").unwrap();
    assert_eq!(main.1, end - start + 1);
}
