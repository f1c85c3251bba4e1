//! Criterion benchmarks of the daemon's hot paths. `cargo bench --bench hot_paths`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use globset::GlobBuilder;
use purgewatch::batch::Batcher;
use purgewatch::compare::diff::{Look, NothingAhead, Trust};
use purgewatch::config::Rule;
use purgewatch::manifest::Manifest;
use purgewatch::plan::{Item, patterns};
use purgewatch::route::{Filter, relative};
use purgewatch::shutdown::Stop;
use regex::Regex;

fn rule(i: usize) -> Rule {
    let g = |s: String| GlobBuilder::new(&s).literal_separator(true).build().unwrap();
    Rule {
        targets: vec!["cdn".into()],
        include: vec![g("**/*.html".into()), g("**/*.css".into()), g(format!("s{i:02}/**"))],
        exclude: vec![g("**/*.tmp".into()), g("**/.*".into()), g(".git/**".into())],
        matches: vec![
            Regex::new(&format!("^s{:02}/", i % 50)).unwrap(),
            Regex::new(r"\.html$").unwrap(),
        ],
        ..Rule::new(format!("r{i}"), format!("/srv/site{}", i % 10))
    }
}

fn route(c: &mut Criterion) {
    let rules: Vec<(Rule, Filter)> = (0..100)
        .map(rule)
        .map(|r| {
            let f = r.filter();
            (r, f)
        })
        .collect();
    let path = Path::new("/srv/site3/s42/d3/p017.html");
    c.bench_function("route one path through 100 rules", |b| {
        b.iter(|| {
            let mut kept = 0;
            for (r, f) in &rules {
                if let Some(rel) = relative(&r.watch, black_box(path))
                    && f.verdict(&rel).is_keep()
                {
                    kept += 1;
                }
            }
            kept
        })
    });
}

fn batcher(c: &mut Criterion) {
    let targets: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    c.bench_function("batcher: 100,000 events over 10 targets", |b| {
        b.iter(|| {
            let mut bt = Batcher::new();
            let start = tokio::time::Instant::now();
            for i in 0..100_000u64 {
                let now = start + Duration::from_micros(i * 10);
                bt.touch(
                    &targets[(i % 10) as usize],
                    Duration::from_secs(2),
                    Duration::from_secs(30),
                    now,
                );
                if i % 1000 == 0 {
                    black_box(bt.next_deadline());
                }
            }
            bt.take_due(start + Duration::from_secs(10)).len()
        })
    });
}

fn planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern planning");
    for n in [10usize, 1_000, 50_000] {
        let items: BTreeSet<Item> = (0..n)
            .map(|i| Item::Url(format!("/s{:03}/d{}/page-{:05}.html", i % 500, i % 7, i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &items, |b, items| {
            b.iter(|| patterns(items, 4096))
        });
    }
    group.finish();
}

fn manifest_diff(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    for a in 0..100 {
        for b in 0..10 {
            let d = dir.path().join(format!("s{a:02}/d{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for p in 0..100 {
                let f = d.join(format!("p{p:03}.html"));
                std::fs::write(&f, format!("<h1>{a} {b} {p}</h1>")).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }
    }
    let filter = rule(0).clone_with_no_filters().filter();
    let manifest = Manifest::baseline(dir.path(), &filter, Stop::NEVER).unwrap();
    assert_eq!(manifest.len(), 100_000);
    let mut group = c.benchmark_group("manifest");
    group.sample_size(10);
    group.bench_function("catch-up diff of an unchanged 100,000-file tree", |b| {
        b.iter(|| {
            let (cands, _, _) = manifest.everything(dir.path(), &filter, Stop::NEVER);
            manifest
                .diff(
                    dir.path(),
                    &cands,
                    &filter,
                    &NothingAhead,
                    Look::new(Trust::Metadata, false),
                )
                .changes
                .len()
        })
    });
    group.finish();
}

trait NoFilters {
    fn clone_with_no_filters(&self) -> Rule;
}

impl NoFilters for Rule {
    fn clone_with_no_filters(&self) -> Rule {
        Rule {
            include: vec![],
            exclude: vec![],
            matches: vec![],
            ..self.clone()
        }
    }
}

criterion_group!(benches, route, batcher, planning, manifest_diff);
criterion_main!(benches);
