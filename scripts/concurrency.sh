#!/usr/bin/env bash
# Concurrency benchmark: long inbound calls with speech to an echo agent of a
# release `dialcore serve`, at several levels of concurrent calls, with two
# generators side by side in the same run:
#   - `dialcore load --codec pcma` (our generator: shipped speech, echo timed);
#   - SIPp with tests/sipp/service/caller_speech_28s.xml (the sip-tester
#     PCMA speech pcap played four times, about 27 s).
# Calls ramp up at --rate; once all are up, the CPU time of the server and of
# the generator is read from /proc over a --window second window, with the
# server's resident memory. Per level and generator it prints: calls ok and
# failed, RTP loss and jitter p50/p99 as the server measured them (the call
# records' media_stats), the generator's own view (loss, jitter p99) for
# `dialcore load`, CPU per call of the server and of the generator, and the
# server's resident memory per live call.
#
# Usage: scripts/concurrency.sh [--levels "250 500 1000 2000"] [--rate 50]
#                               [--hold 28] [--window 10] [--no-sipp] [--binary PATH]
#                               [--codec pcma|pcmu|opus]
#                               [--deployment "sqlite postgres cluster"]
# --deployment names the deployments to measure side by side (space-separated; default
# sqlite), all started at the beginning (scripts/lib/deployments.sh), each level run on
# each of them in turn, the deployment named in every row:
#   sqlite    one node on SQLite (what this script always measured);
#   postgres  one node on a throwaway PostgreSQL server (started here, removed on exit);
#   cluster   two nodes on one throwaway PostgreSQL server behind Kamailio
#             (deploy/kamailio/kamailio.cfg); the generators call Kamailio.
# For the cluster the server CPU and resident memory are those of both nodes summed, and
# Kamailio's CPU (all its processes) has a column of its own; for postgres and cluster,
# so has PostgreSQL's (the postmaster and all its backends).
# --codec is what `dialcore load` offers (default pcma); SIPp runs only for pcma, the
# codec of its pcap.
# After the table: how often call setup waited on the store (more than 50 ms) and how
# many store writes were retried, from the service log.
# --binary runs that dialcore build (e.g. one of an earlier commit, for a before/after
# comparison) instead of building target/release/dialcore.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

levels="250 500 1000 2000"
rate=50
hold=28
window=10
with_sipp=1
binary=
codec=pcma
deployments=sqlite
while [ $# -gt 0 ]; do
    case "$1" in
        --levels) levels=$2; shift ;;
        --rate) rate=$2; shift ;;
        --hold) hold=$2; shift ;;
        --window) window=$2; shift ;;
        --no-sipp) with_sipp=0 ;;
        --binary) binary=$(realpath "$2"); shift ;;
        --codec) codec=$2; shift ;;
        --deployment) deployments=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for deployment in $deployments; do
    case "$deployment" in
        sqlite | postgres | cluster) ;;
        *) echo "unknown deployment $deployment (sqlite, postgres or cluster)" >&2; exit 2 ;;
    esac
done

scripts/prereqs.sh
if [ -z "$binary" ]; then
    cargo build --release -p call-control --bin dialcore >&2
    binary="$ROOT/target/release/dialcore"
fi
DIALCORE_BIN=$binary
# shellcheck source=lib/deployments.sh
source scripts/lib/deployments.sh
for deployment in $deployments; do
    start_deployment "$deployment"
done

# SIPp's caller scenario with the route set of the 200 (Record-Route) followed by its ACK
# and BYE, for the cluster, where they go through Kamailio to the node that answered.
python3 - "$ROOT/tests/sipp/service/caller_speech_28s.xml" "$work/caller_speech_28s_via_proxy.xml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = text.replace('<recv response="200" rtd="true"/>', '<recv response="200" rtd="true" rrs="true"/>', 1)
# The INVITE as a transaction: a 180 that one Kamailio worker relays after another relayed
# the 200 is then absorbed (RFC 3261 17.1.1.2), as tests/sipp/service/caller_via_proxy.xml
# does, instead of aborting the call as an unexpected message.
text = text.replace('<send retrans="500">', '<send retrans="500" start_txn="invite">', 1)
for code in ("100", "180", "183"):
    text = text.replace('<recv response="%s" optional="true"/>' % code,
                        '<recv response="%s" optional="true" response_txn="invite"/>' % code, 1)
text = text.replace('rrs="true"/>', 'rrs="true" response_txn="invite"/>', 1)
text = text.replace('<recv response="200" rtd="true" rrs="true" response_txn="invite"/>\n\n  <send>',
                    '<recv response="200" rtd="true" rrs="true" response_txn="invite"/>\n\n  <send ack_txn="invite">', 1)
assert text.count('response_txn="invite"') == 4 and 'ack_txn="invite"' in text, "caller_speech_28s.xml changed shape"
for method in ("ACK", "BYE"):
    text = re.sub(r"\n([ \t]*)%s sip:\S+ SIP/2.0\n([ \t]*Via:[^\n]*\n)" % method,
                  lambda m: "\n%s%s [next_url] SIP/2.0\n%s%s[routes]\n" % (m.group(1), method, m.group(2), m.group(1)),
                  text, count=1)
assert text.count("[routes]") == 2 and 'rrs="true"' in text, "caller_speech_28s.xml changed shape"
open(sys.argv[2], "w").write(text)
PY

hz=$(getconf CLK_TCK)
# CPU ticks (user + system, all threads) of processes, summed; fails when one has exited
# (a zombie's threads no longer count).
ticks() { # pid...
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '$1 != "Z" {print $12 + $13}')
        [ -n "$t" ] || return 1
        total=$((total + t))
    done
    echo "$total"
}
rss_kb() { # pid...: resident memory of processes, summed
    local pid total=0 kb
    for pid in "$@"; do
        kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        total=$((total + kb))
    done
    echo "$total"
}
# CPU ticks of a process tree's root (its own and those of its reaped children) and of
# its live children: PostgreSQL's postmaster and backends, Kamailio and its workers.
# Prints 0 without a pid.
tree_ticks() { # [pid]
    [ -n "${1:-}" ] || { echo 0; return; }
    python3 - "$1" <<'PY'
import os, sys
root, total = sys.argv[1], 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    if pid == root:
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    elif fields[1] == root:
        total += int(fields[11]) + int(fields[12])
print(total)
PY
}

# Waits until every call of the level is up, then reads the CPU of the deployment's
# nodes, of the generator, of Kamailio and of PostgreSQL over the window. Prints:
# server_cores generator_cores kamailio_cores postgres_cores server_rss_kb
sample() { # generator_pid level
    local gen=$1 level=$2
    sleep "$(python3 -c "print($level / $rate + 2)")"
    local s0 g0 k0 p0 s1 g1 k1 p1
    # shellcheck disable=SC2086 # $nodes: one pid per node
    s0=$(ticks $nodes); g0=$(ticks "$gen"); k0=$(tree_ticks "$kamailio"); p0=$(tree_ticks "$postgres")
    sleep "$window"
    # shellcheck disable=SC2086
    s1=$(ticks $nodes); g1=$(ticks "$gen" 2>/dev/null || echo "$g0")
    k1=$(tree_ticks "$kamailio"); p1=$(tree_ticks "$postgres")
    python3 -c "print(($s1 - $s0) / $hz / $window, ($g1 - $g0) / $hz / $window, ($k1 - $k0) / $hz / $window, ($p1 - $p0) / $hz / $window)" | tr '\n' ' '
    # shellcheck disable=SC2086
    rss_kb $nodes
}

# What the server measured on the level's calls: the newest $1 inbound call records.
server_view() { # level
    python3 - "$http" "$key" "$1" <<'PY'
import json, sys, urllib.request
http, key, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls, offset = [], 0
while len(calls) < level:
    url = f"http://{http}/api/public/v1/calls?direction=inbound&limit=200&offset={offset}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    page = json.load(urllib.request.urlopen(request))["data"]
    if not page:
        break
    calls += page
    offset += len(page)
calls = calls[:level]
ok = sum(1 for c in calls if c["status"] == "ended" and c["outcome"] == "caller_hangup")
stats = [c["media_stats"] for c in calls if c.get("media_stats")]
lost = sum(s["packets_lost"] for s in stats)
got = sum(s["packets_received"] for s in stats)
jit = sorted(s["jitter_ms"] for s in stats) or [0]
p = lambda q: jit[min(len(jit) - 1, int(q * len(jit)))]
print(ok, level - ok, "%.3f" % (100 * lost / max(1, lost + got)), "%.1f" % p(0.5), "%.1f" % p(0.99))
PY
}

row() { # generator level server_view sample extra
    local gen=$1 level=$2 view=$3 cpu=$4 extra=$5
    read -r ok failed loss j50 j99 <<<"$view"
    read -r scores gcores kcores pcores rss <<<"$cpu"
    [ -n "$kamailio" ] || kcores=-
    [ -n "$postgres" ] || pcores=-
    python3 - "$gen" "$level" "$ok" "$failed" "$loss" "$j50" "$j99" "$scores" "$gcores" "$rss" "$rss0" "$extra" "$deployment" "$kcores" "$pcores" <<'PY'
import sys
gen, level, ok, failed, loss, j50, j99, s, g, rss, rss0, extra, deployment, k, p = sys.argv[1:]
level = int(level); s = float(s); g = float(g)
per = lambda cores: "1/%d core" % (level / cores) if cores > 0 else "-"
cores = lambda c: "-" if c == "-" else f"{float(c):.2f} cores, {per(float(c))}"
mem = (int(rss) - int(rss0)) / level
print(f"| {level} | {deployment} | {gen} | {ok}/{failed} | {loss} % | {j50} / {j99} ms | {s:.2f} cores, {per(s)} | {g:.2f} cores, {per(g)} | {cores(k)} | {cores(p)} | {mem:.0f} kB | {extra} |")
PY
}

echo "| concurrent calls | deployment | generator | ok/failed | loss (server) | jitter p50/p99 (server) | server CPU, per call | generator CPU, per call | Kamailio CPU, per call | PostgreSQL CPU, per call | server RSS per call | generator's view |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for level in $levels; do
    for deployment in $deployments; do
        http=${dep_http[$deployment]}
        sip=${dep_sip[$deployment]}
        nodes=${dep_nodes[$deployment]}
        kamailio=${dep_kamailio[$deployment]:-}
        postgres=${dep_postgres[$deployment]:-}
        scenario=$ROOT/tests/sipp/service/caller_speech_28s.xml
        [ -z "$kamailio" ] || scenario=$work/caller_speech_28s_via_proxy.xml
        sleep 3
        # shellcheck disable=SC2086
        rss0=$(rss_kb $nodes)
        "$binary" load "sip:+15550100000@$sip" \
            --calls "$level" --rate "$rate" --hold "${hold}s" --codec "$codec" --json \
            >"$work/load_${deployment}_$level.json" 2>/dev/null &
        gen=$!
        generator=$gen
        cpu=$(sample "$gen" "$level")
        wait "$gen" || true
        generator=
        sleep 2
        extra=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print("loss %.3f %%, jitter p99 %s ms, echo rtt p50 %s ms" % (s["loss_percent"], s["jitter_ms"]["p99"], s["echo_rtt_ms"]["p50"]))
' "$work/load_${deployment}_$level.json")
        row "dialcore load" "$level" "$(server_view "$level")" "$cpu" "$extra"

        if [ "$with_sipp" = 1 ] && [ "$codec" = pcma ]; then
            sleep 3
            # shellcheck disable=SC2086
            rss0=$(rss_kb $nodes)
            sipp -sf "$scenario" -t u1 -i 127.0.0.1 -p 0 \
                -mp 30000 -s +15550100000 -r "$rate" -m "$level" -l "$level" -nostdin \
                -timeout 300s "$sip" >/dev/null 2>&1 &
            gen=$!
            generator=$gen
            cpu=$(sample "$gen" "$level")
            wait "$gen" || true
            generator=
            sleep 2
            row "SIPp" "$level" "$(server_view "$level")" "$cpu" "-"
        fi
    done
done

# What the service logged about its store over the whole run (issue 14: call setup must
# not wait on it; a write it could not do now is retried, never dropped).
echo
for deployment in $deployments; do
    label=
    [ "$deployments" = sqlite ] || label=" ($deployment)"
    # shellcheck disable=SC2086 # the cluster has two logs
    python3 - "$label" ${dep_logs[$deployment]} <<'PY'
import collections, fileinput, re, sys
label = sys.argv.pop(1)
waits, retried, failures = collections.Counter(), 0, collections.Counter()
longest = 0
for line in fileinput.input(openhook=fileinput.hook_encoded("utf-8", "replace")):
    if "call setup waited on the store" in line:
        what = re.search(r'what="?([^"]+?)"? waited_ms', line) or re.search(r'"what":"([^"]+)"', line)
        waits[what.group(1) if what else "?"] += 1
        ms = re.search(r'waited_ms[=":]+(\d+)', line)
        longest = max(longest, int(ms.group(1)) if ms else 0)
    elif "store unavailable; retrying" in line:
        retried += 1
    elif "store failed" in line or "not written" in line or "not queued" in line:
        failures[re.sub(r"^\S+\s+\S+\s+", "", line.strip())[:160]] += 1
print(f"service log{label}: {sum(waits.values())} call setups waited on the store for more than 50 ms"
      f" (longest {longest} ms; {dict(waits)}), {retried} store writes retried,"
      f" {sum(failures.values())} store failures")
for message, count in failures.most_common(3):
    print(f"  {count} x {message}")
PY
done
