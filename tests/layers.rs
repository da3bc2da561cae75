//! The layers of ARCHITECTURE.md, checked against the code: every `crate::` path a file of `src/`
//! names must lead to a module below its own in the table (ARCHITECTURE.md, Layers, the one
//! place the order is written), and no file imports, through any chain, a file that imports it
//! back. Reads the source text only; needs nothing running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The table: the first line of the fenced block under "## Layers" is the top. Modules on one line
/// are peers: neither may name the other.
fn ranks() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the Layers section has a fenced block of modules, top first");
    let mut ranks = BTreeMap::new();
    for (rank, line) in block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .enumerate()
    {
        for name in line.split('#').next().unwrap().split_whitespace() {
            assert!(
                ranks.insert(name.to_string(), rank).is_none(),
                "ARCHITECTURE.md's Layers table names {name} twice"
            );
        }
    }
    ranks
}

/// Every `.rs` file under `src/` but the binaries and the crate root, with its module path
/// (`src/engine/steps/mod.rs` is `engine::steps`).
fn files() -> Vec<(PathBuf, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(ROOT).join("src");
    let mut all = Vec::new();
    walk(&src, &mut all);
    let mut out: Vec<_> = all
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module[0] == "bin" || module == ["lib"] {
                return None;
            }
            if module.last().map(String::as_str) == Some("mod") {
                module.pop();
            }
            Some((p, module))
        })
        .collect();
    out.sort();
    out
}

/// The text without comments (doc text naming a module is not a dependency).
fn code_of(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// The paths written at `s[i..]`, just after `crate::` or `super::`: `a::b`, `a::{b, c::{d}}`.
fn tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(i);
    if *i < s.len() && s[*i] == b'{' {
        *i += 1;
        loop {
            skip_ws(i);
            if *i >= s.len() {
                return;
            }
            if s[*i] == b'}' {
                *i += 1;
                return;
            }
            tree(s, i, prefix.clone(), out);
            skip_ws(i);
            if *i < s.len() && s[*i] == b',' {
                *i += 1;
            } else if *i < s.len() && s[*i] != b'}' {
                *i += 1; // `as name`, `*`: nothing more to learn here
            }
        }
    }
    let start = *i;
    while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
        *i += 1;
    }
    let mut path = prefix;
    if *i > start {
        let name = String::from_utf8_lossy(&s[start..*i]).into_owned();
        if name != "self" {
            path.push(name);
        }
        if s[*i..].starts_with(b"::") {
            *i += 2;
            return tree(s, i, path, out);
        }
    }
    out.push(path);
}

/// One path a file names: where (line) and the module path it leads to.
struct Named {
    line: usize,
    path: Vec<String>,
}

/// Every `crate::…` and `super::…` path of `lines`, made absolute for a file of `module`.
fn named(lines: &[String], module: &[String]) -> Vec<Named> {
    // inside a top-level inline module (`mod tests { … }`) `super` is the file itself
    let mut inline = Vec::with_capacity(lines.len());
    let mut inside = false;
    for line in lines {
        let opens = (line.starts_with("mod ") || line.starts_with("pub mod "))
            && line.trim_end().ends_with('{');
        if opens {
            inside = true;
        } else if line.starts_with('}') {
            inside = false;
        }
        inline.push(inside);
    }
    let text = lines.join("\n");
    let s = text.as_bytes();
    let mut starts = vec![0];
    starts.extend(
        s.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((root, off)) = find_root(&s[at..]) {
        let mut i = at + off;
        let line = starts.partition_point(|&st| st <= i) - 1;
        let base: Vec<String> = match root {
            Root::Crate => Vec::new(),
            Root::Super => {
                let mut levels = 1;
                while s[i..].starts_with(b"super::") {
                    levels += 1;
                    i += "super::".len();
                }
                if inline[line] {
                    levels -= 1;
                }
                let mut b = module.to_vec();
                b.truncate(b.len().saturating_sub(levels));
                b
            }
        };
        let mut paths = Vec::new();
        tree(s, &mut i, base, &mut paths);
        out.extend(paths.into_iter().map(|path| Named {
            line: line + 1,
            path,
        }));
        at = i.max(at + off);
    }
    out
}

enum Root {
    Crate,
    Super,
}

/// The first `crate::` or `super::` in `s` that starts a path (not `$crate::`, not `a_crate::`),
/// and the offset just after it.
fn find_root(s: &[u8]) -> Option<(Root, usize)> {
    let mut i = 0;
    while i < s.len() {
        let before_ok = i == 0
            || !(s[i - 1].is_ascii_alphanumeric()
                || s[i - 1] == b'_'
                || s[i - 1] == b'$'
                || s[i - 1] == b':');
        if before_ok && s[i..].starts_with(b"crate::") {
            return Some((Root::Crate, i + "crate::".len()));
        }
        if before_ok && s[i..].starts_with(b"super::") {
            return Some((Root::Super, i + "super::".len()));
        }
        i += 1;
    }
    None
}

/// The file a module path leads to: the longest prefix of it that is a file.
fn file_of(path: &[String], by_module: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|k| by_module.get(&path[..k]).cloned())
}

fn rel(p: &Path) -> String {
    p.strip_prefix(ROOT).unwrap_or(p).display().to_string()
}

/// Files included as `#[path = "x_tests.rs"] mod tests;`: a test module of the file beside it.
fn test_files(files: &[(PathBuf, Vec<String>)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (p, _) in files {
        let text = std::fs::read_to_string(p).unwrap();
        for l in text.lines() {
            if let Some(name) = l
                .trim()
                .strip_prefix("#[path = \"")
                .and_then(|r| r.strip_suffix("\"]"))
            {
                out.insert(p.parent().unwrap().join(name));
            }
        }
    }
    out
}

#[test]
fn every_module_names_only_modules_below_it_in_architecture_md() {
    let ranks = ranks();
    let files = files();
    let tops: BTreeSet<String> = files.iter().map(|(_, m)| m[0].clone()).collect();
    let listed: BTreeSet<String> = ranks.keys().cloned().collect();
    assert_eq!(
        tops, listed,
        "the modules of src/ (left) and ARCHITECTURE.md's Layers table (right) must be the same"
    );
    let order: Vec<String> = {
        let mut by: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for (m, r) in &ranks {
            by.entry(*r).or_default().push(m);
        }
        by.values().map(|v| v.join(" ")).collect()
    };
    let mut wrong = Vec::new();
    for (p, module) in &files {
        let text = std::fs::read_to_string(p).unwrap();
        let lines = code_of(&text);
        for n in named(&lines, module) {
            let Some(to) = n.path.first() else { continue };
            let (from, to) = (&module[0], to);
            if from == to || !ranks.contains_key(to) {
                continue;
            }
            if ranks[to] <= ranks[from] {
                wrong.push(format!(
                    "{}:{}: {from} names crate::{}, which is not below it",
                    rel(p),
                    n.line,
                    n.path.join("::")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} upward or sideways references; the order, top first:\n  {}\n{}",
        wrong.len(),
        order.join("\n  "),
        wrong.join("\n")
    );
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let files = files();
    let tests = test_files(&files);
    let by_module: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|(p, m)| (m.clone(), p.clone())).collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (p, module) in &files {
        if tests.contains(p)
            || module.last().map(String::as_str) == Some("tests")
            || module.contains(&"tests".to_string())
            || module.contains(&"fakes".to_string())
        {
            continue; // tests and fakes see everything they test
        }
        let text = std::fs::read_to_string(p).unwrap();
        let mut lines = code_of(&text);
        // a file's own unit tests (`#[cfg(test)] mod tests { … }` at its end) are not its imports
        if let Some(i) = lines.iter().position(|l| l.starts_with("#[cfg(test)]")) {
            lines.truncate(i);
        }
        for n in named(&lines, module) {
            if let Some(to) = file_of(&n.path, &by_module) {
                // a module's own mod.rs holds re-exports and declarations, not a dependency back
                let parent_of_self = module.starts_with(&by_module_key(&to, &files));
                if &to != p && !parent_of_self {
                    edges.entry(p.clone()).or_default().insert(to);
                }
            }
        }
    }
    let cycles = strongly_connected(&edges);
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| c.iter().map(|p| rel(p)).collect::<Vec<_>>().join(" ↔ "))
        .collect();
    assert!(
        cycles.is_empty(),
        "files that import each other (through any chain):\n{}",
        shown.join("\n")
    );
}

fn by_module_key(file: &Path, files: &[(PathBuf, Vec<String>)]) -> Vec<String> {
    files
        .iter()
        .find(|(p, _)| p == file)
        .map(|(_, m)| m.clone())
        .unwrap_or_default()
}

/// Tarjan's strongly connected components of more than one file.
fn strongly_connected(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn strong<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                if !t.index.contains_key(w) {
                    strong(t, w);
                    let l = t.low[v].min(t.low[w]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.low[v].min(t.index[w]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&PathBuf> = edges
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a).chain(bs.iter()))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            strong(&mut t, v);
        }
    }
    t.out
}

#[test]
fn paths_in_groups_and_across_lines_are_read_whole() {
    let lines = code_of(
        "use crate::{a::{b, c::D}, e};\nuse super::super::f::G; // crate::x\nlet x = $crate::y::z;\n",
    );
    let got: Vec<String> = named(&lines, &["m".into(), "n".into(), "o".into()])
        .into_iter()
        .map(|n| format!("{}:{}", n.line, n.path.join("::")))
        .collect();
    assert_eq!(got, ["1:a::b", "1:a::c::D", "1:e", "2:m::f::G"]);
}

/// `src/…` paths named in ARCHITECTURE.md (backticked; `{a,b}` groups expanded), each there.
#[test]
fn every_source_path_architecture_md_names_exists() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut named = 0;
    for quoted in doc.split('`').skip(1).step_by(2) {
        let Some(start) = quoted.find("src/") else {
            continue;
        };
        let word = quoted[start..].split_whitespace().next().unwrap_or("");
        if !(start == 0 || quoted[..start].ends_with(' ')) {
            continue;
        }
        for path in expand(word) {
            named += 1;
            if !Path::new(ROOT).join(&path).exists() {
                missing.push(path);
            }
        }
    }
    assert!(
        named > 20,
        "ARCHITECTURE.md names {named} source paths: is the check reading it?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that are not there: {missing:?}"
    );
}

/// `src/a/{b,c}.rs` as `src/a/b.rs` and `src/a/c.rs`.
fn expand(word: &str) -> Vec<String> {
    match (word.find('{'), word.find('}')) {
        (Some(a), Some(b)) if a < b => word[a + 1..b]
            .split(',')
            .flat_map(|part| expand(&format!("{}{}{}", &word[..a], part.trim(), &word[b + 1..])))
            .collect(),
        _ => vec![word.trim_end_matches([',', ')', ';']).to_string()],
    }
}
