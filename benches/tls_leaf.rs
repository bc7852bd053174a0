//! What TLS interception costs per host: minting a leaf certificate for a
//! host the local CA has not signed yet (an ECDSA P-256 key pair and one
//! signature), and finding the leaf of a host already in the cache (every
//! other handshake).
//!
//! `cargo bench --bench tls_leaf`. The handshake and per-request costs
//! through a real tunnel are measured by `bench/compare.sh` (HTTPS clients).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sidekey::tls::{LeafCache, LocalCa};

/// A fresh local CA, written to a temp dir the way `sidekey ca init`
/// leaves it (the key 0600) and loaded like `[proxy.intercept]` loads it.
fn local_ca() -> LocalCa {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_pem, key_pem) = LocalCa::generate().expect("generate a CA");
    let cert = dir.path().join("ca.pem");
    let key = dir.path().join("ca.key");
    std::fs::write(&cert, cert_pem).expect("write the CA certificate");
    std::fs::write(&key, key_pem).expect("write the CA key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    LocalCa::load(&cert, &key).expect("load the CA")
}

fn leaf(c: &mut Criterion) {
    let day = Duration::from_secs(24 * 3600);
    // A new host name every iteration: each one mints (and, past the
    // capacity, evicts the least recently used leaf).
    let cache = LeafCache::new(local_ca(), day, 1024);
    let mut n = 0u64;
    c.bench_function("leaf/mint a new host", |b| {
        b.iter(|| {
            n += 1;
            let host = format!("h{n}.wild.example");
            black_box(cache.certified_key(&host).expect("mint"))
        })
    });
    let cache = LeafCache::new(local_ca(), day, 1024);
    cache.certified_key("api.example.com").expect("mint");
    c.bench_function("leaf/cached host", |b| {
        b.iter(|| {
            black_box(
                cache
                    .certified_key(black_box("api.example.com"))
                    .expect("hit"),
            )
        })
    });
}

criterion_group!(benches, leaf);
criterion_main!(benches);
