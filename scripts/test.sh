#!/usr/bin/env bash
# Runs the whole test suite: unit, property, interop (SIPp, Kamailio) and end-to-end tests,
# then the store's and the engine's tests once more on PostgreSQL (pg-harness starts a
# throwaway server on loopback; SQLite is the default backend of the first run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
cargo test --workspace --all-targets "$@"
DIALCORE_TEST_DATABASE=postgres cargo test -p call-control --lib "$@"
