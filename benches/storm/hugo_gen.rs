//! A Hugo site's sources (sections, tags, pagination, RSS feeds, a sitemap), built by the real
//! `hugo`, and what a built tree holds: shared by the storm bench (`hugo_site.rs`) and the CDN
//! bench.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

const SECTIONS: &[&str] = &["posts", "docs", "blog"];
const TAGS: usize = 30;

/// Writes the Hugo site's sources: config, layouts, and `pages` content files.
pub(crate) fn write_sources(src: &Path, pages: usize) {
    let w = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "config.toml",
        "baseURL = \"/\"\ntitle = \"Storm\"\ndisableKinds = []\npaginate = 10\n[taxonomies]\ntag = \"tags\"\n",
    );
    w(
        "layouts/_default/baseof.html",
        "<!doctype html><html><head><title>{{ .Title }}</title></head><body>{{ block \"main\" . }}{{ end }}</body></html>\n",
    );
    w(
        "layouts/_default/single.html",
        "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ .Content }}<p>{{ range .Params.tags }}<a href=\"/tags/{{ . | urlize }}/\">{{ . }}</a> {{ end }}</p>{{ end }}\n",
    );
    w(
        "layouts/_default/list.html",
        "{{ define \"main\" }}<h1>{{ .Title }}</h1><ul>{{ range .Paginator.Pages }}<li><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}\n",
    );
    w(
        "layouts/index.html",
        "{{ define \"main\" }}<h1>Home</h1><ul>{{ range first 20 .Site.RegularPages }}<li><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}\n",
    );
    for i in 0..pages {
        write_page(src, i, 0);
    }
}

pub(crate) fn page_path(i: usize) -> String {
    format!("content/{}/page-{i:05}.md", SECTIONS[i % SECTIONS.len()])
}

/// Content page `i`, in its `version`. Dates spread over years so lists and feeds have an order.
pub(crate) fn write_page(src: &Path, i: usize, version: u32) {
    let day = 1 + (i % 28);
    let month = 1 + (i / 28) % 12;
    let year = 2015 + (i / 336) % 10;
    let tags: Vec<String> = (0..3).map(|k| format!("\"tag{}\"", (i * 7 + k * 11) % TAGS)).collect();
    let body = format!(
        "+++\ntitle = \"Page {i}\"\ndate = {year}-{month:02}-{day:02}T10:00:00Z\ntags = [{}]\n+++\n\nPage {i}, version {version}. {}\n",
        tags.join(", "),
        "Lorem ipsum dolor sit amet. ".repeat(20)
    );
    let p = src.join(page_path(i));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

pub(crate) fn hugo(src: &Path, dest: &Path, clean: bool) {
    let mut cmd = Command::new("hugo");
    cmd.arg("-s").arg(src).arg("-d").arg(dest).arg("--quiet");
    if clean {
        cmd.arg("--cleanDestinationDir");
    }
    let out = cmd.stdout(Stdio::null()).output().expect("run hugo");
    assert!(
        out.status.success(),
        "hugo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `root` with its BLAKE3.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes());
            }
        }
    }
    out
}

/// A file's URLs: its own, and for an index.html its directory's with and without the slash.
pub(crate) fn urls(rel: &str) -> Vec<String> {
    let mut out = vec![format!("/{rel}")];
    if rel == "index.html" {
        out.push("/".into());
    } else if let Some(dir) = rel.strip_suffix("/index.html") {
        out.push(format!("/{dir}/"));
        out.push(format!("/{dir}"));
    }
    out
}
