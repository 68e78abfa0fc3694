//! Parse + validate throughput for typical JDLs (budget: ≤ 10 µs per JDL, ≥ 100k/s per core).
//!
//! Run with `cargo bench -p dirac-jdl --bench parse`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dirac_jdl::{ClassAd, Policy, expand, validate};

const EXAMPLE_A: &str = include_str!("../tests/fixtures/a.jdl");
const EXAMPLE_C: &str = include_str!("../tests/fixtures/c.jdl");
const EXAMPLE_D: &str = include_str!("../tests/fixtures/d.jdl");

fn parse_and_validate(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("parse_validate");
    group.throughput(Throughput::Elements(1));
    for (name, text) in [("example_a", EXAMPLE_A), ("diracx_example_d", EXAMPLE_D)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let ad = ClassAd::parse(black_box(text)).ok()?;
                validate(&ad, &policy, "lhcb").ok()
            });
        });
    }
    group.finish();

    let ad = ClassAd::parse(EXAMPLE_A).ok();
    c.bench_function("print_example_a", |b| {
        b.iter(|| ad.as_ref().map(ClassAd::to_jdl))
    });
    let parametric = ClassAd::parse(EXAMPLE_C).ok();
    c.bench_function("expand_example_c", |b| {
        b.iter(|| parametric.as_ref().map(|ad| expand(black_box(ad), 100)))
    });
}

criterion_group!(benches, parse_and_validate);
criterion_main!(benches);
