#!/usr/bin/env bash
# The project's test command (README): prepare the machine, build the images
# the integration tests start, run the whole workspace's tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
bash scripts/images.sh debug

# Benches are not run here (they measure, and take minutes); clippy --all-targets in
# .ci/run keeps them compiling. Run them with `cargo bench -p <crate>`.
cargo test --workspace --lib --bins --tests -- --test-threads 2
