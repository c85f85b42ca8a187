#!/bin/sh
# Run each fuzz target (fuzz/fuzz_targets/*.rs) for a bounded time, growing fuzz/corpus/<target>/.
#
# Needs: a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`); a C++ toolchain for libFuzzer. No root, no network at run time.
# Usage: contrib/fuzz.sh [SECONDS] [TARGET...]   (default 30 s each, all targets)
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script fail. New corpus
# entries are replayed on stable by tests/fuzz_corpus.rs (`cargo test`); minimize before
# committing them: cargo +nightly fuzz cmin TARGET
set -eu
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
[ $# -gt 0 ] && shift
targets=${*:-$(cargo +nightly fuzz list)}
for t in $targets; do
    echo "== $t: ${secs}s"
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs"
done
