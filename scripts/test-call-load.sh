#!/usr/bin/env bash
# Load harness for SIP loopback test calls: increasing numbers of concurrent
# sip-mode runs (outbound: the agent calls the test bot) against an echo
# agent, through the REST API of the release `dialcore serve`, and reports for
# each level the median response latency and MOS of the runs and how many
# failed, next to a baseline of single runs measured first in the same run.
# A level "holds" when every run completed, its median response latency is
# within +25% (and at most +20 ms) of the baseline's and its median MOS within
# 0.1. The service runs on its own temporary database; the bots, the agents and
# the load generator share this machine's cores.
#
# Usage: scripts/test-call-load.sh [--levels "1 5 10 20 40"] [--baseline N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

levels="5 10 20 40 60"
baseline=3
while [ $# -gt 0 ]; do
    case "$1" in
        --levels) levels=$2; shift ;;
        --baseline) baseline=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cargo build --release -p call-control --bin dialcore >&2

work=$(mktemp -d)
http=127.0.0.1:18180
sip_port=15160
key=sk_load_test_calls
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

DIALCORE_HTTP_LISTEN=$http DIALCORE_SIP_LISTEN=127.0.0.1:$sip_port \
DIALCORE_DATABASE_URL="sqlite://$work/dialcore.db" DIALCORE_RECORDINGS_DIR="$work/recordings" \
DIALCORE_API_KEY=$key DIALCORE_API_RATE_LIMIT_PER_MINUTE=100000 DIALCORE_LOG_LEVEL=warn \
DIALCORE_TEST_CALLS_MAX_CONCURRENT_RUNS=1000 DIALCORE_TEST_CALLS_MAX_RUN_SECONDS=60 \
DIALCORE_CREDITS_STARTING_BALANCE_CENTS=100000000 \
    "$ROOT/target/release/dialcore" serve >"$work/service.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://$http/healthz" >/dev/null && break
    sleep 0.1
done

BASE="http://$http/api/public/v1" KEY=$key LEVELS=$levels BASELINE=$baseline python3 - <<'PY'
import json, os, statistics, time, urllib.request

base, key = os.environ["BASE"], os.environ["KEY"]
levels = [int(n) for n in os.environ["LEVELS"].split()]
baseline_runs = int(os.environ["BASELINE"])
scenario = ("say Hello, I would like to book a table for two.\nexpect_speech 5s\n"
            "say Tomorrow at eight, please.\nexpect_speech 5s\nhangup")

def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]

agent = api("POST", "/agents", {"name": "load echo", "prompt": "echo", "status": "active",
                                "runtime": {"type": "echo"}})["id"]

def run_level(n):
    """Starts n runs at once (batches of at most 20, no stagger); returns the runs."""
    batches, left = [], n
    while left > 0:
        count = min(20, left)
        batches.append(api("POST", "/test-call-batches", {
            "target_type": "agent", "target_id": agent, "direction": "outbound",
            "mode": "sip", "run_count": count, "stagger_seconds": 0,
            "scenario_prompt": scenario, "consent_to_charge": True})["id"])
        left -= count
    run_ids = []
    for batch_id in batches:
        while True:
            batch = api("GET", "/test-call-batches/" + batch_id)
            if batch["status"] != "in_progress":
                run_ids += batch["run_ids"]
                break
            time.sleep(0.5)
    return [api("GET", "/test-calls/" + run_id) for run_id in run_ids]

def summary(runs):
    done = [r for r in runs if r["status"] == "completed"]
    latency = [r["measurements"]["response_latency_ms"]["p50"] for r in done
               if (r["measurements"].get("response_latency_ms") or {}).get("p50") is not None]
    mos = [r["measurements"]["mos"] for r in done if r["measurements"].get("mos") is not None]
    return {"runs": len(runs), "failed": len(runs) - len(done),
            "latency": statistics.median(latency) if latency else None,
            "mos": statistics.median(mos) if mos else None}

singles = []
for _ in range(baseline_runs):
    singles += run_level(1)
base_summary = summary(singles)
print(f"baseline: {baseline_runs} single runs, median response latency "
      f"{base_summary['latency']} ms, median MOS {base_summary['mos']}, failed {base_summary['failed']}")
print("| concurrent runs | failed | median response latency (ms) | median MOS | holds |")
print("|---|---|---|---|---|")
held = 1
for n in levels:
    s = summary(run_level(n))
    holds = (s["failed"] == 0 and s["latency"] is not None and s["mos"] is not None
             and s["latency"] <= max(base_summary["latency"] * 1.25, base_summary["latency"] + 20)
             and s["mos"] >= base_summary["mos"] - 0.1)
    print(f"| {n} | {s['failed']} | {s['latency']} | {s['mos']} | {'yes' if holds else 'no'} |", flush=True)
    if not holds:
        break
    held = n
print(f"concurrent sip-mode runs held with latency and MOS unchanged: {held}")
PY
