#!/usr/bin/env bash
# The project's test command (README): prepare the machine, build the images
# the integration tests start, run the whole workspace's tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
bash scripts/images.sh debug

cargo test --workspace --all-targets -- --test-threads 2
