//! No import circles between the modules of a crate.
//!
//! A module that imports from a module which imports back from it (directly or around a longer
//! loop) has no floor of its own: neither can be read, tested or moved without the other. This
//! test reads each crate's sources, takes every `crate::` and `super::` path (in `use` lines
//! and in code) as an edge from the file to the module the path names (the longest prefix that
//! is a module file), and fails naming every circle it finds with the edges that close it.
//! A parent module re-exporting its children (`pub use child::X` in `mod.rs`) is not an edge:
//! that is how a module publishes what its children define. Unit-test modules
//! (`#[cfg(test)] mod ... {` to the end of the file) are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use neutrino_host::fs;

/// Crates whose modules must form no circle. `neutrino-api` and `neutrino-identity` join the
/// list once their layering (issue 11) lands.
const CHECKED: &[&str] = &[
    "neutrino",
    "neutrino-agent",
    "neutrino-core",
    "neutrino-host",
    "neutrino-ini",
    "neutrino-wire",
];

type Module = Vec<String>;

/// Every `.rs` file under `dir`, as (module path, text).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
    let mut names = fs::list_dir(dir).expect("list source directory");
    names.sort();
    for name in names {
        let path = dir.join(&name);
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut m = prefix.to_vec();
            if !matches!(stem, "mod" | "lib" | "main") {
                m.push(stem.to_string());
            }
            let text = fs::read_to_string(&path).expect("read source file");
            out.insert(m, text);
        }
    }
}

/// The text without line comments and without a trailing unit-test module.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.contains('{'))
        {
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths a `crate::`/`super::` occurrence at `at` names: `a::b`, or each item of
/// `a::{b, c::d}` (one level of braces is enough for module resolution).
fn paths_at(s: &str, at: usize) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = &s[at..];
    loop {
        let end = rest.find(|c: char| !ident_char(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    let mut out = vec![segs.clone()];
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(item_path(&segs, &item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        out.push(item_path(&segs, &item));
    }
    out
}

fn item_path(base: &[String], item: &str) -> Vec<String> {
    let item = item.split(" as ").next().unwrap_or_default();
    let mut p = base.to_vec();
    p.extend(
        item.split("::")
            .map(str::trim)
            .take_while(|s| !s.is_empty() && s.chars().all(ident_char) && *s != "self")
            .map(str::to_string),
    );
    p
}

/// Module → modules it imports from.
fn graph(mods: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (m, text) in mods {
        let text = code(text);
        let mut deps = BTreeSet::new();
        for (kw, base) in [
            ("crate::", Vec::new()),
            ("super::", m[..m.len().saturating_sub(1)].to_vec()),
        ] {
            for (at, _) in text.match_indices(kw) {
                if text[..at].chars().next_back().is_some_and(ident_char) {
                    continue;
                }
                for rel in paths_at(&text, at + kw.len()) {
                    let mut start = base.clone();
                    let mut rel = rel.as_slice();
                    while let Some(("super", r)) = rel.split_first().map(|(a, r)| (a.as_str(), r)) {
                        start.pop();
                        rel = r;
                    }
                    start.extend(rel.iter().cloned());
                    let target = (0..=start.len())
                        .rev()
                        .map(|n| start[..n].to_vec())
                        .find(|p| mods.contains_key(p));
                    // A module naming its own ancestors is how Rust reaches siblings and
                    // parents' items; only an edge to a module that is not an ancestor counts.
                    if let Some(t) = target
                        && t != *m
                        && !m.starts_with(&t)
                    {
                        deps.insert(t);
                    }
                }
            }
        }
        edges.insert(m.clone(), deps);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.edges[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
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
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// Each circle of the crate whose sources are in `src`, described with its edges.
fn report(src: &Path) -> Vec<String> {
    let mut mods = BTreeMap::new();
    modules(src, &[], &mut mods);
    let edges = graph(&mods);
    circles(&edges)
        .into_iter()
        .map(|comp| {
            let members: BTreeSet<&Module> = comp.iter().collect();
            let mut s = comp.iter().map(name).collect::<Vec<_>>().join(" ↔ ");
            for a in &comp {
                for b in edges[a].iter().filter(|b| members.contains(b)) {
                    s.push_str(&format!("\n    {} imports {}", name(a), name(b)));
                }
            }
            s
        })
        .collect()
}

#[test]
fn no_crate_has_an_import_circle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for c in CHECKED {
        for circle in report(&crates.join(c).join("src")) {
            found.push(format!("{c}: {circle}"));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_circle_through_a_use_group_and_super() {
    let dir = std::env::temp_dir().join(format!("neutrino-circles-{}", std::process::id()));
    let file = |p: &str, text: &str| fs::write_atomic(&dir.join(p), text).expect("write");
    file("lib.rs", "mod a;\nmod b;\nmod c;\n");
    file(
        "a.rs",
        "use crate::{names, b::inner::Thing};\nfn g() { crate::c::f() }\n",
    );
    file("b/mod.rs", "pub use inner::Thing;\npub mod inner;\n");
    file(
        "b/inner.rs",
        "// crate::c is only a comment\nuse super::super::a;\n",
    );
    file(
        "c.rs",
        "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
    );
    let found = report(&dir);
    fs::remove_dir(&dir).expect("clean up");
    // Neither b's re-export of its child, nor a comment, nor c's unit tests make an edge.
    assert_eq!(
        found,
        ["a ↔ b::inner\n    a imports b::inner\n    b::inner imports a"],
        "{found:?}"
    );
}
