#!/usr/bin/env bash
# Runs the whole test suite: unit, property, interop (SIPp) and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
cargo test --workspace --all-targets "$@"
