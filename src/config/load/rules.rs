//! The `rules:` section: each rule's name, watched directory, targets, filters, URL mapping
//! and `verify:`.

use super::*;

impl Cx<'_> {
    /// A rule's `verify:` mapping.
    pub(super) fn verify(&mut self, node: &Node, what: &str) -> Option<Verify> {
        let entries = self.mapping(node, what)?;
        let mut v = Verify {
            base_url: String::new(),
            sample: 20,
            after: Duration::from_secs(2),
            repurge: 2,
            check: VerifyCheck::Content,
        };
        let n_errors = self.errors.len();
        for (key, _, val) in self.keys(entries, VERIFY_KEYS, what) {
            let kw = format!("{what}: {key}");
            match key {
                "base_url" => {
                    if let Some(u) = self.api_url(val, &kw) {
                        v.base_url = u.trim_end_matches('/').to_string();
                    }
                }
                "sample" => {
                    if let Some(n) = self.number::<usize>(val, &kw, "a number of URLs") {
                        v.sample = n
                    }
                }
                "after" => {
                    if let Some(d) = self.duration(val, &kw) {
                        v.after = d
                    }
                }
                "repurge" => {
                    if let Some(n) = self.number::<u32>(val, &kw, "a number of re-purges") {
                        v.repurge = n
                    }
                }
                "check" => {
                    let options = [("content", VerifyCheck::Content), ("status", VerifyCheck::Status)];
                    if let Some(c) = self.choice(val, &kw, &options) {
                        v.check = c
                    }
                }
                _ => {}
            }
        }
        (self.errors.len() == n_errors).then_some(v)
    }

    /// The valid rules, each with where its `watch:` value is.
    pub(super) fn rules(&mut self, node: &Node, targets: &[&str]) -> Vec<(Rule, Pos)> {
        let items: &[Node] = match &node.value {
            Value::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(node.pos, "rules must be a list (each item starts with `- name:`)");
                return vec![];
            }
        };
        let mut out = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let rule = self.rule(i, item, targets);
            if let Some((r, _)) = &rule {
                self.rule_positions.push((r.name.clone(), self.file.clone(), item.pos));
            }
            // A second rule of the same name is an error whether or not either rule is valid.
            if let Some((name, pos)) = rule_name(item)
                && !seen.insert(name)
            {
                self.error(
                    pos,
                    format!("rule \"{name}\" is defined twice (rule names must be unique)"),
                );
                continue;
            }
            out.extend(rule);
        }
        if items.is_empty() {
            self.error(node.pos, "rules: no rule defined");
        }
        out
    }

    pub(super) fn rule(&mut self, index: usize, node: &Node, targets: &[&str]) -> Option<(Rule, Pos)> {
        let entries = self.mapping(node, &format!("rule #{}", index + 1))?;
        let name = entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("name"))
            .and_then(|(_, v)| v.as_scalar().map(str::to_string));
        let what = match &name {
            Some(n) => format!("rule \"{n}\""),
            None => {
                self.error(node.pos, format!("rule #{}: missing `name:`", index + 1));
                format!("rule #{}", index + 1)
            }
        };
        let n_errors = self.errors.len();
        let mut rule = Rule::new(name.unwrap_or_default(), PathBuf::new());
        let mut seen = RuleSeen::default();
        for (key, _, v) in self.keys(entries, RULE_KEYS, &what) {
            self.rule_key(&mut rule, &mut seen, &what, key, v, targets);
        }
        self.rule_complete(&mut rule, &seen, &what, node.pos);
        (self.errors.len() == n_errors).then(|| (rule, seen.watch.unwrap_or(node.pos)))
    }

    /// One key of a rule, read into `rule`.
    fn rule_key(&mut self, rule: &mut Rule, seen: &mut RuleSeen, what: &str, key: &str, v: &Node, targets: &[&str]) {
        let kw = format!("{what}: {key}");
        match key {
            "watch" => {
                seen.watch = Some(v.pos);
                if let Some(p) = self.watch_dir(v, &kw) {
                    rule.watch = p;
                }
            }
            "targets" => {
                seen.targets = true;
                self.rule_targets(rule, what, &kw, v, targets);
            }
            "include" | "exclude" => {
                for (g, pos) in self.strings(v, &kw) {
                    match GlobBuilder::new(&g).literal_separator(true).build() {
                        Ok(glob) if key == "include" => rule.include.push(glob),
                        Ok(glob) => rule.exclude.push(glob),
                        Err(e) => self.error(pos, format!("{kw}: bad glob `{g}`: {}", glob_reason(&e))),
                    }
                }
            }
            "match" => {
                for (r, pos) in self.strings(v, &kw) {
                    match Regex::new(&r) {
                        Ok(re) => rule.matches.push(re),
                        Err(e) => {
                            let reason = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                            self.error(pos, format!("{kw}: bad regex `{r}`: {reason}"));
                        }
                    }
                }
            }
            "url_prefix" => {
                if let Some(p) = self.url_prefix(v, &kw) {
                    rule.url_prefix = p;
                }
            }
            "index_files" => rule.index_files = self.strings(v, &kw).into_iter().map(|(s, _)| s).collect(),
            "base_url" => rule.base_url = self.base_url(v, &kw),
            "verify" => {
                seen.verify = Some(v.pos);
                rule.verify = self.verify(v, &kw);
            }
            "warm" => {
                if let Some(b) = self.choice(v, &kw, BOOLEAN) {
                    rule.warm = b;
                    seen.warm = b.then_some(v.pos);
                }
            }
            "follow_symlinks" => {
                if let Some(b) = self.choice(v, &kw, BOOLEAN) {
                    rule.follow_symlinks = b
                }
            }
            "warm_limit" => match self.number::<usize>(v, &kw, "a number of URLs") {
                Some(n) if n > 0 => rule.warm_limit = n,
                Some(_) => self.error(v.pos, format!("{kw}: must be at least 1 (or set `warm: false`)")),
                None => {}
            },
            "purge" => {
                if let Some(m) = self.choice(v, &kw, &[("changed", PurgeMode::Changed), ("all", PurgeMode::All)]) {
                    rule.purge = m
                }
            }
            _ => {}
        }
    }

    /// A rule's `watch:`: a directory that exists (with `trees_optional`, a missing one is a
    /// warning) and is not a system tree.
    fn watch_dir(&mut self, v: &Node, kw: &str) -> Option<PathBuf> {
        let p = self.path(v, kw, false)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                if let Some(fs) = system_tree(&real_path(&p)) {
                    self.error(
                        v.pos,
                        format!(
                            "{kw}: {} is {fs}, not a site: watch the directory your site is built into",
                            p.display()
                        ),
                    );
                }
            }
            Ok(_) => self.error(v.pos, format!("{kw}: {} is not a directory", p.display())),
            Err(e) => {
                let message = format!(
                    "{kw}: directory {} does not exist ({e}); create it or fix the path (relative paths are relative to the rules file)",
                    p.display()
                );
                if self.opts.trees_optional {
                    self.warn(v.pos, message);
                } else {
                    self.error(v.pos, message);
                }
            }
        }
        Some(p)
    }

    /// A rule's `targets:` (one name or a list), each a target some rules file defines.
    fn rule_targets(&mut self, rule: &mut Rule, what: &str, kw: &str, v: &Node, targets: &[&str]) {
        let list = match &v.value {
            Value::Seq(_) => self.strings(v, kw),
            _ => self.string(v, kw, false).map(|s| vec![(s, v.pos)]).unwrap_or_default(),
        };
        for (t, pos) in list {
            if targets.contains(&t.as_str()) {
                if !rule.targets.contains(&t) {
                    rule.targets.push(t);
                }
            } else {
                let hint = did_you_mean(&t, targets.iter().copied());
                self.error(pos, format!("{what}: unknown target \"{t}\"{hint}"));
            }
        }
    }

    /// A rule's `url_prefix:`, a URL path (`/blog/`), written with both slashes.
    fn url_prefix(&mut self, v: &Node, kw: &str) -> Option<String> {
        let p = self.string(v, kw, false)?;
        if p.contains("://") || p.contains('?') || p.contains('#') {
            self.error(
                v.pos,
                format!("{kw}: `{p}` must be a URL path like /blog/, without host or query"),
            );
        }
        let p = p.trim_matches('/');
        Some(if p.is_empty() { "/".into() } else { format!("/{p}/") })
    }

    /// The checks of a rule read whole: `watch:` and `targets:` given, `verify.base_url` (which
    /// defaults to the rule's `base_url`), `warm:` with `verify:`.
    fn rule_complete(&mut self, rule: &mut Rule, seen: &RuleSeen, what: &str, pos: Pos) {
        if seen.watch.is_none() {
            self.error(pos, format!("{what}: missing `watch:` (the directory to watch)"));
        }
        if let Some(v) = rule.verify.as_mut().filter(|v| v.base_url.is_empty()) {
            match &rule.base_url {
                Some(base) => v.base_url = base.clone(),
                None => self.error(
                    seen.verify.unwrap_or(pos),
                    format!(
                        "{what}: verify: missing `base_url:` (where the watched directory is served, like https://www.example.com; here or as the rule's `base_url:`)"
                    ),
                ),
            }
        }
        if let (Some(at), None) = (seen.warm, &rule.verify) {
            self.error(
                at,
                format!("{what}: warm: true needs `verify: {{base_url: https://...}}` to know where the site is served (`sample: 0` warms without checking)"),
            );
        }
        if !seen.targets {
            self.error(pos, format!("{what}: missing `targets:` (a list of target names)"));
        }
    }
}

/// Where a rule's keys were, for the checks of the rule read whole.
#[derive(Default)]
struct RuleSeen {
    watch: Option<Pos>,
    verify: Option<Pos>,
    /// `warm: true`.
    warm: Option<Pos>,
    targets: bool,
}

/// A rule item's `name:` and where its value is.
pub(super) fn rule_name(item: &Node) -> Option<(&str, Pos)> {
    match &item.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("name"))
            .and_then(|(_, v)| Some((v.as_scalar()?, v.pos))),
        _ => None,
    }
}
