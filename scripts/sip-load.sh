#!/usr/bin/env bash
# Measures the highest SIP call rate (calls/s) that completes with no failed
# call, for
#   (a) a SIPp UAC against SIPp's own built-in UAS (`sipp -sn uas`): the
#       ceiling of the load generator on this machine, and
#   (b) the same SIPp UAC against dialcore's example UAS
#       (target/release/examples/uas, built here with cargo),
# and prints both figures and their ratio (b / a).
#
# Each measurement steps the rate up (start, 2x start, 4x start, ...) for
# --duration seconds per step until a step fails, then bisects between the
# last good and the first bad rate. A step passes when SIPp exits 0, every
# call (rate x duration of them) succeeded, and SIPp really sustained at
# least 90% of the asked rate (calls / wall time of the step). Every
# measurement is repeated --runs times and the median is reported.
#
# The UAC plays tests/sipp/uac_basic.xml (INVITE with SDP, 200, ACK, hold,
# BYE, 200). Both sides run on this machine and share its cores: the figures
# are for comparison on one machine, not absolute capacity.
#
# Usage: scripts/sip-load.sh [options]
#   --sipp-only        measure (a) only (no cargo build)
#   --transport T      udp (default) or tcp
#   --duration S       seconds per step (default 5)
#   --start R          first rate, calls/s (default 100)
#   --max R            highest rate tried (default 25600)
#   --hold MS          call hold time between ACK and BYE, ms (default 0)
#   --bisect N         bisection steps after the first failure (default 3)
#   --runs N           repetitions, median reported (default 3)
#   --port P           UAS port (default 5090)
#   -h, --help         this help
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

sipp_only=0
transport=udp
duration=5
start_rate=100
max_rate=25600
hold_ms=0
bisect_steps=3
runs=3
uas_port=5090

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --sipp-only) sipp_only=1 ;;
        --transport) transport=$2; shift ;;
        --duration) duration=$2; shift ;;
        --start) start_rate=$2; shift ;;
        --max) max_rate=$2; shift ;;
        --hold) hold_ms=$2; shift ;;
        --bisect) bisect_steps=$2; shift ;;
        --runs) runs=$2; shift ;;
        --port) uas_port=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$transport" in
    udp) sipp_transport=u1; uas_tcp_flag=() ;;
    tcp) sipp_transport=t1; uas_tcp_flag=(--tcp) ;;
    *) echo "--transport must be udp or tcp" >&2; exit 2 ;;
esac

SIPP=${DIALCORE_SIPP:-sipp}
if ! command -v "$SIPP" >/dev/null 2>&1; then
    echo "SIPp not found ($SIPP): install the Debian package sip-tester (scripts/prereqs.sh)" >&2
    exit 1
fi

SCENARIO="$ROOT/tests/sipp/uac_basic.xml"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dialcore-sip-load.XXXXXX")
UAS_PID=""

stop_uas() {
    if [ -n "$UAS_PID" ]; then
        kill "$UAS_PID" 2>/dev/null || true
        wait "$UAS_PID" 2>/dev/null || true
        UAS_PID=""
    fi
}

cleanup() {
    stop_uas
    if [ -z "${DIALCORE_KEEP_SIPP_LOGS:-}" ]; then
        rm -rf "$WORK"
    else
        echo "SIPp files kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True once something listens on the UAS port (TCP) or has bound it (UDP).
uas_listening() {
    if [ "$transport" = tcp ]; then
        ss -Hltn "sport = :$uas_port" 2>/dev/null | grep -q .
    else
        ss -Hlun "sport = :$uas_port" 2>/dev/null | grep -q . \
            || ss -Hun "sport = :$uas_port" 2>/dev/null | grep -q .
    fi
}

# start_uas sipp|dialcore: starts a fresh UAS on 127.0.0.1:$uas_port.
start_uas() {
    local kind=$1
    stop_uas
    case "$kind" in
        sipp)
            "$SIPP" -sn uas -t "$sipp_transport" -i 127.0.0.1 -p "$uas_port" \
                -mi 127.0.0.1 -ci 127.0.0.1 -nostdin -buff_size 4194304 \
                >/dev/null 2>"$WORK/uas.stderr" &
            ;;
        dialcore)
            "$UAS_BIN" --listen "127.0.0.1:$uas_port" "${uas_tcp_flag[@]}" \
                >/dev/null 2>"$WORK/uas.stderr" &
            ;;
    esac
    UAS_PID=$!
    local i
    for i in $(seq 1 100); do
        if uas_listening; then
            return 0
        fi
        if ! kill -0 "$UAS_PID" 2>/dev/null; then
            echo "the $kind UAS exited at start:" >&2
            cat "$WORK/uas.stderr" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "the $kind UAS does not listen on 127.0.0.1:$uas_port ($transport)" >&2
    exit 1
}

# stat_column FILE NAME: NAME's value in the last row of a SIPp stat CSV.
stat_column() {
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        NF > 1 { last = $col }
        END { print (col && last != "" ? last : 0) }
    ' "$1"
}

# step KIND RATE: one step; prints "pass|fail achieved_rate detail" and
# returns 0 on pass.
step() {
    local kind=$1 rate=$2
    local calls=$((rate * duration))
    local limit=$((rate * 4 + 200))
    local stat="$WORK/stat-$kind-$rate.csv"
    start_uas "$kind"
    rm -f "$stat"
    local t0 t1 code=0
    t0=$(date +%s.%N)
    timeout $((duration * 4 + 30)) "$SIPP" -sf "$SCENARIO" -t "$sipp_transport" \
        -i 127.0.0.1 -mi 127.0.0.1 -ci 127.0.0.1 -nostdin -buff_size 4194304 \
        -s +15551234567 -r "$rate" -m "$calls" -l "$limit" -d "$hold_ms" \
        -trace_stat -stf "$stat" -fd 1 \
        "127.0.0.1:$uas_port" >/dev/null 2>"$WORK/uac.stderr" || code=$?
    t1=$(date +%s.%N)
    stop_uas
    local ok=0 failed=0 retrans=0
    if [ -f "$stat" ]; then
        ok=$(stat_column "$stat" 'SuccessfulCall(C)')
        failed=$(stat_column "$stat" 'FailedCall(C)')
        retrans=$(stat_column "$stat" 'Retransmissions(C)')
    fi
    local achieved
    achieved=$(awk -v n="$ok" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    local detail="exit=$code ok=$ok/$calls failed=$failed retrans=$retrans"
    if [ "$code" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$ok" -eq "$calls" ] \
        && [ "$achieved" -ge $((rate * 9 / 10)) ]; then
        echo "pass $achieved $detail"
        return 0
    fi
    echo "fail $achieved $detail"
    return 1
}

# ceiling KIND: the highest passing rate of one measurement, on stdout;
# progress on stderr.
ceiling() {
    local kind=$1 rate=$start_rate good=0 bad=0 result
    while [ "$rate" -le "$max_rate" ]; do
        if result=$(step "$kind" "$rate"); then
            echo "    $kind ${rate}/s: $result" >&2
            good=$rate
            rate=$((rate * 2))
        else
            echo "    $kind ${rate}/s: $result" >&2
            bad=$rate
            break
        fi
    done
    if [ "$bad" -gt 0 ] && [ "$good" -gt 0 ]; then
        local i mid
        for i in $(seq 1 "$bisect_steps"); do
            mid=$(((good + bad) / 2))
            if [ "$mid" -le "$good" ] || [ "$mid" -ge "$bad" ]; then
                break
            fi
            if result=$(step "$kind" "$mid"); then
                echo "    $kind ${mid}/s: $result" >&2
                good=$mid
            else
                echo "    $kind ${mid}/s: $result" >&2
                bad=$mid
            fi
        done
    fi
    echo "$good"
}

median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

measure() {
    local kind=$1 label=$2 i values=()
    echo "$label:" >&2
    for i in $(seq 1 "$runs"); do
        echo "  run $i/$runs" >&2
        values+=("$(ceiling "$kind")")
    done
    echo "$(median "${values[@]}") ${values[*]}"
}

if [ "$sipp_only" -eq 0 ]; then
    echo "building the dialcore example UAS (cargo build --release -p sip-stack --example uas)" >&2
    cargo build --release -p sip-stack --example uas >&2
    UAS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/uas"
    if [ ! -x "$UAS_BIN" ]; then
        echo "no UAS binary at $UAS_BIN" >&2
        exit 1
    fi
fi

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo "machine: $(nproc) cores${cpu:+, $cpu}; $("$SIPP" -v 2>/dev/null | awk '/SIPp v/ { print $1, $2; exit }')" >&2
echo "settings: $transport, uac_basic.xml, hold ${hold_ms} ms, ${duration} s per step, rates from $start_rate up to $max_rate, $runs runs" >&2

read -r sipp_median sipp_runs < <(measure sipp "SIPp UAC -> SIPp built-in UAS")
if [ "$sipp_only" -eq 0 ]; then
    read -r dialcore_median dialcore_runs < <(measure dialcore "SIPp UAC -> dialcore example UAS")
fi

echo
echo "SIP call rate ($transport, hold ${hold_ms} ms, ${duration} s per step, median of $runs runs, $(nproc) cores)"
echo "  SIPp UAC -> SIPp UAS (generator ceiling): ${sipp_median} calls/s  (runs: ${sipp_runs// /, })"
if [ "$sipp_only" -eq 0 ]; then
    echo "  SIPp UAC -> dialcore UAS:                 ${dialcore_median} calls/s  (runs: ${dialcore_runs// /, })"
    awk -v d="$dialcore_median" -v s="$sipp_median" \
        'BEGIN { if (s > 0) printf "  ratio dialcore / SIPp: %.2f\n", d / s; else print "  ratio: n/a" }'
fi
