//! Replays the fuzz corpus (fuzz/corpus/<target>/*) on the stable toolchain, in the normal test
//! suite: this is how CI runs every corpus input (seeds and what `cargo fuzz` found) on every
//! run, without nightly or libFuzzer. The entry points are the fuzz targets' own
//! (fuzz/common.rs, included by path), so a target and its replay never drift apart. Inputs may
//! be refused with errors; a panic fails the test. No root, no network, well under a second.
//!
//! Then each target gets a bounded mutation run (`NETHOOK_FUZZ_SECS`, default 2 s): corpus
//! inputs with random bit flips, byte insertions, deletions, truncations and splices, from a
//! seed printed on failure. It has no coverage feedback (that is `cargo fuzz`'s job, see
//! contrib/fuzz.sh); it makes every CI run try fresh inputs on the stable toolchain.

#[path = "../fuzz/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// xorshift64*: a seedable generator, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(data.len() + 1);
                let b = [0u8, 0xff, b'"', b'[', b'{', b'\\', b'.', b':', 0xc0][rng.below(9)];
                data.insert(i, b);
            }
            2 if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            3 => data.truncate(rng.below(data.len() + 1)),
            4 if !other.is_empty() => {
                let at = rng.below(data.len() + 1);
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from + 1);
                let tail = data.split_off(at);
                data.extend_from_slice(&other[from..from + len]);
                data.extend_from_slice(&tail);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
}

fn mutation_run(target: &str, f: fn(&[u8])) {
    let secs: u64 = std::env::var("NETHOOK_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let inputs: Vec<Vec<u8>> = corpus(target)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < end {
        let mut data = inputs[rng.below(inputs.len())].clone();
        let other = &inputs[rng.below(inputs.len())];
        mutate(&mut rng, &mut data, other);
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(
            r.is_ok(),
            "{target}: a mutated input panics (seed {seed}, run {runs}): {data:?}"
        );
        runs += 1;
    }
    eprintln!("{target}: {runs} mutated inputs in {secs} s, seed {seed}");
}

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{target}: input {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus in {}", dir.display());
}

#[test]
fn fuzz_corpus_dns_query() {
    replay("dns_query", common::dns_query);
    mutation_run("dns_query", common::dns_query);
}

#[test]
fn fuzz_corpus_oci_state() {
    replay("oci_state", common::oci_state);
    mutation_run("oci_state", common::oci_state);
}

#[test]
fn fuzz_corpus_bundle_config() {
    replay("bundle_config", common::bundle_config);
    mutation_run("bundle_config", common::bundle_config);
}

#[test]
fn fuzz_corpus_publish_spec() {
    replay("publish_spec", common::publish_spec);
    mutation_run("publish_spec", common::publish_spec);
}
