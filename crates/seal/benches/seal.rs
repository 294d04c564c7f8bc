//! Sealing and opening one 400-byte token (target: each under 5 µs).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lwa_seal::{AeadIdentity, Keyring, MasterKey, SealedValue};

fn seal_and_open(c: &mut Criterion) {
    let keyring = Keyring::new(MasterKey::generate()).with_older(MasterKey::generate());
    let identity = AeadIdentity::new("amzn1.account.AEXAMPLE123", "refresh_token");
    let token = [b'A'; 400];
    let sealed = keyring.seal(&token, &identity);
    let text = sealed.to_string();

    c.bench_function("seal 400 B", |b| {
        b.iter(|| keyring.seal(black_box(&token), black_box(&identity)))
    });
    c.bench_function("seal 400 B to text", |b| {
        b.iter(|| keyring.seal(black_box(&token), black_box(&identity)).to_string())
    });
    c.bench_function("open 400 B", |b| {
        b.iter(|| keyring.open(black_box(&sealed), black_box(&identity)).unwrap())
    });
    c.bench_function("parse and open 400 B", |b| {
        b.iter(|| keyring.open_str(black_box(&text), black_box(&identity)).unwrap())
    });
    c.bench_function("parse 400 B", |b| {
        b.iter(|| SealedValue::parse(black_box(&text)).unwrap())
    });
}

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
