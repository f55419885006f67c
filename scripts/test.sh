#!/usr/bin/env bash
# Runs the whole test suite: lints, unit and property tests, deterministic raft simulations, and
# the cluster tests that start real shoal-manager processes. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

step "docker engine (the agent tests run real containers)"
bash scripts/ensure-docker.sh
step "headless Chromium and its WebDriver (the dashboard test drives a browser)"
bash scripts/ensure-chromium.sh
step "test images (built locally; nothing is pulled)"
bash deploy/images/build.sh

step "build (binaries are spawned by the cluster tests)"
cargo build --workspace --bins --tests --locked

step "shoal/shoal:local image from the debug binaries (the fault tests run nodes as containers)"
bash deploy/image/build.sh debug

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doc tests
    cargo test --workspace --doc --locked
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads=2
fi

step "the README tour, run as written (scripts/check-tour.sh)"
bash scripts/check-tour.sh

step "benchmark smoke run (shoal-bench --quick: every scenario must still run; figures are not judged)"
target/debug/shoal-bench --quick --no-write >/dev/null
echo "shoal-bench --quick: all scenarios ran"
