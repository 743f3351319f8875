#!/usr/bin/env bash
# Load harness for the running service: SIPp places inbound calls with RTP
# (tests/sipp/service/caller_media.xml: PCMA speech from the sip-tester pcap,
# 3 s of talk, BYE) to a number of an echo agent, and reports
#   - the highest call rate (calls/s) with no failed call, stepping the rate up
#     (--start, 2x, 4x, ... for --duration seconds each) until a step fails;
#   - the concurrent calls held with audio: --concurrent calls started at once
#     (SIPp -l), all must succeed;
# next to the same SIPp caller against SIPp's own built-in UAS in the same run
# (the load generator's ceiling). The service runs from a release build on
# its own temporary database; both sides share this machine's cores.
#
# Usage: scripts/service-load.sh [--duration S] [--start R] [--max R] [--concurrent N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

duration=5
start_rate=10
max_rate=640
concurrent=200
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift ;;
        --start) start_rate=$2; shift ;;
        --max) max_rate=$2; shift ;;
        --concurrent) concurrent=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

scripts/prereqs.sh
cargo build --release -p call-control --bin dialcore >&2

scenario="$ROOT/tests/sipp/service/caller_media.xml"
# shellcheck source=lib/echo-service.sh
source scripts/lib/echo-service.sh

# One SIPp run; prints "ok" or "fail".
run_sipp() { # target rate calls limit
    local target=$1 rate=$2 calls=$3 limit=$4
    if sipp -sf "$scenario" -t u1 -i 127.0.0.1 -p 0 -mp 30000 -s +15550100000 \
        -r "$rate" -m "$calls" -l "$limit" -nostdin -timeout 120s \
        -trace_err -error_file "$work/sipp_err.log" "$target" >/dev/null 2>&1; then
        echo ok
    else
        echo fail
    fi
}

highest_rate() { # target
    local target=$1 rate=$start_rate best=0
    while [ "$rate" -le "$max_rate" ]; do
        if [ "$(run_sipp "$target" "$rate" $((rate * duration)) 100000)" = ok ]; then
            best=$rate
            rate=$((rate * 2))
        else
            break
        fi
    done
    echo "$best"
}

held() { # target
    if [ "$(run_sipp "$1" "$concurrent" "$concurrent" "$concurrent")" = ok ]; then
        echo "$concurrent"
    else
        echo "fewer than $concurrent"
    fi
}

sipp -sn uas -t u1 -i 127.0.0.1 -p 15070 -mp 31000 -nostdin -bg >/dev/null 2>&1 || true
sleep 0.5
pids+=($(pgrep -f "sipp -sn uas -t u1 -i 127.0.0.1 -p 15070" | head -1))

echo "SIPp caller -> SIPp UAS:  highest rate $(highest_rate 127.0.0.1:15070) calls/s, held $(held 127.0.0.1:15070) concurrent"
echo "SIPp caller -> dialcore:  highest rate $(highest_rate 127.0.0.1:$sip_port) calls/s, held $(held 127.0.0.1:$sip_port) concurrent"
ended=$(curl -sf "http://$http/api/public/v1/calls?status=ended&limit=1" -H "Authorization: Bearer $key" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["pagination"]["total"])')
echo "dialcore call records ended normally: $ended"
