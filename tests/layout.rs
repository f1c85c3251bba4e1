//! The source's own shape, as issue 24 set it: no cycle between the crate's top-level modules
//! (each stage depends only on the stages and parts below it), no function longer than 80
//! lines, and no source file longer than 700 lines before its tests. Read from the text of
//! `src/`: test modules and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources() -> Vec<PathBuf> {
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
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// A file's path under `src/`, with `/` separators.
fn rel(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/")
}

/// Whether the whole file is tests (a `tests.rs` of a module, or the daemon's test harness).
fn test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs") || rel.ends_with("/testing.rs")
}

/// The file's lines before its `#[cfg(test)] mod tests`, if it has one.
fn before_tests(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

#[test]
fn the_top_level_modules_depend_on_each_other_without_a_cycle() {
    let word = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources() {
        let rel = rel(&path);
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) || test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in before_tests(&text) {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for c in word.captures_iter(line) {
                if c[1] != module {
                    deps.entry(module.clone()).or_default().insert(c[1].to_string());
                }
            }
        }
    }
    assert!(deps.len() > 20, "the modules were found: {deps:?}");
    // Depth-first: a module met again while it is still on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for d in deps.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        if let Some(cycle) = visit(m, &deps, &mut Vec::new(), &mut done) {
            panic!("a module cycle: {}", cycle.join(" -> "));
        }
    }
}

/// Each function's length, from its `fn` line to its closing brace (braces in strings and
/// character literals do not count).
fn functions(lines: &[&str]) -> Vec<(usize, String, usize)> {
    let head = regex::Regex::new(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)").unwrap();
    let strings = regex::Regex::new(r#""(\\.|[^"\\])*"|'(\\.|[^'\\])'"#).unwrap();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(c) = head.captures(line) else { continue };
        let (mut depth, mut started) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let l = strings.replace_all(l, "\"\"");
            if !started && l.trim_end().ends_with(';') && !l.contains('{') {
                break;
            }
            for ch in l.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth == 0 {
                out.push((i + 1, c[6].to_string(), j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_80_lines_and_no_file_over_700_before_its_tests() {
    let mut long = Vec::new();
    for path in sources() {
        let rel = rel(&path);
        if test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = before_tests(&text);
        if lines.len() > 700 {
            long.push(format!("{rel}: {} lines before its tests", lines.len()));
        }
        for (at, name, n) in functions(&lines) {
            if n > 80 {
                long.push(format!("{rel}:{at}: fn {name} is {n} lines"));
            }
        }
    }
    assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
    // The measure measures: a function of 81 lines is found.
    let body = format!("fn big() {{\n{}}}\n", "    let _ = 1;\n".repeat(79));
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(functions(&lines), [(1, "big".to_string(), 81)]);
}
