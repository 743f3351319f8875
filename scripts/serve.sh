#!/usr/bin/env bash
# Runs the dialcore service on its embedded defaults (HTTP 127.0.0.1:8080, SIP 127.0.0.1:5060).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
exec cargo run --release -p call-control --bin dialcore -- serve "$@"
