//! `include:`: more rules files, one per site on a host that serves many. Each included file may
//! hold `targets:` and `rules:`; names are unique across every file, and a rule may name a target
//! of any file. A glob may hold wildcards in its file name (`/etc/purgewatch/rules.d/*.yaml`);
//! relative globs are relative to the main file's directory.
//!
//! Each file is judged on its own: at a reload, an included file with an error keeps its
//! previous version in force (a new one with an error is not added), while every other file's
//! changes take effect. `check` reports every file's errors, each naming its file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::yaml::{Node, Pos, Value};

/// One `include:` glob: the directory it lists and the file names it takes there.
#[derive(Debug, Clone)]
pub struct Include {
    /// As written in the rules file.
    pub pattern: String,
    pub dir: PathBuf,
    pub names: globset::GlobMatcher,
}

impl Include {
    /// Whether `path` is (or would be) one of the files this glob takes.
    pub fn takes(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && path.file_name().is_some_and(|n| self.names.is_match(Path::new(n)))
    }

    /// The files the glob takes now, sorted.
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if self.takes(&path) && path.is_file() {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `pattern` (relative to `base`) as an [`Include`]; an error says what is wrong with it.
pub fn parse(pattern: &str, base: &Path) -> Result<Include, String> {
    let path = std::path::absolute(base.join(pattern)).unwrap_or_else(|_| base.join(pattern));
    let wild = |s: &str| s.contains(['*', '?', '[', '{']);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("`{pattern}` names no file"));
    };
    if wild(&dir.to_string_lossy()) {
        return Err(format!(
            "`{pattern}`: wildcards may stand in the file name only, like /etc/purgewatch/rules.d/*.yaml"
        ));
    }
    let glob = globset::GlobBuilder::new(name)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`{pattern}`: bad glob: {}", e.kind()))?;
    Ok(Include {
        pattern: pattern.to_string(),
        dir: dir.to_path_buf(),
        names: glob.compile_matcher(),
    })
}

/// The file an included part came from, and the names it defines (for a reload that keeps a
/// broken file's previous version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub file: PathBuf,
    pub targets: Vec<String>,
    pub rules: Vec<String>,
}

/// What a file's tree declares, read before any file is built: the target names (with their
/// positions), and the target names its rules use.
#[derive(Debug, Default)]
pub(super) struct Declared {
    pub targets: Vec<(String, Pos)>,
    pub rules: Vec<(String, Pos)>,
    pub used: BTreeSet<String>,
}

pub(super) fn declared(root: &Node) -> Declared {
    let mut out = Declared::default();
    let Value::Map(top) = &root.value else { return out };
    for (k, v) in top {
        match (k.as_scalar(), &v.value) {
            (Some("targets"), Value::Map(entries)) => {
                for (name, _) in entries {
                    if let Some(n) = name.as_scalar().filter(|s| !s.is_empty()) {
                        out.targets.push((n.to_string(), name.pos));
                    }
                }
            }
            (Some("rules"), Value::Seq(items)) => {
                for item in items {
                    let Value::Map(entries) = &item.value else { continue };
                    for (key, val) in entries {
                        match (key.as_scalar(), &val.value) {
                            (Some("name"), _) => {
                                if let Some(n) = val.as_scalar() {
                                    out.rules.push((n.to_string(), val.pos));
                                }
                            }
                            (Some("targets"), Value::Seq(names)) => {
                                out.used
                                    .extend(names.iter().filter_map(|n| n.as_scalar()).map(str::to_string));
                            }
                            (Some("targets"), _) => {
                                out.used.extend(val.as_scalar().map(str::to_string));
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The `include:` value of a main file's tree: its globs as strings with their positions.
pub(super) fn globs(root: &Node) -> Option<&Node> {
    let Value::Map(top) = &root.value else { return None };
    top.iter()
        .find(|(k, _)| k.as_scalar() == Some("include"))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_takes_the_files_its_name_matches_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.yaml", "b.yaml", "c.yml", ".hidden.yaml.swp"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.yaml")).unwrap();
        let inc = parse("rules.d/*.yaml", dir.path()).unwrap();
        assert_eq!(inc.dir, dir.path().join("rules.d"));
        let inc = parse(&format!("{}/*.yaml", dir.path().display()), Path::new("/elsewhere")).unwrap();
        let files: Vec<String> = inc
            .files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, vec!["a.yaml", "b.yaml"]);
        assert!(inc.takes(&dir.path().join("new.yaml")));
        assert!(!inc.takes(&dir.path().join("sub/new.yaml")));
        assert!(parse("/etc/*/x.yaml", Path::new("/")).is_err());
    }
}
