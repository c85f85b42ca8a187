//! Replays the fuzz corpus (fuzz/corpus/<target>/*) on the stable toolchain, in the normal test
//! suite: this is how CI runs every corpus input (seeds and what `cargo fuzz` found) on every
//! run, without nightly or libFuzzer. The entry points are the fuzz targets' own
//! (fuzz/common.rs, included by path), so a target and its replay never drift apart. Inputs may
//! be refused with errors; a panic fails the test. No root, no network, well under a second.

#[path = "../fuzz/common.rs"]
mod common;

use std::path::Path;

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
}

#[test]
fn fuzz_corpus_oci_state() {
    replay("oci_state", common::oci_state);
}

#[test]
fn fuzz_corpus_bundle_config() {
    replay("bundle_config", common::bundle_config);
}

#[test]
fn fuzz_corpus_publish_spec() {
    replay("publish_spec", common::publish_spec);
}
