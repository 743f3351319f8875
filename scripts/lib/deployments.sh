# Sourced by scripts/concurrency.sh: starts the deployments it measures side by side, each
# with an echo agent on +15550100000 behind a trunk that accepts calls from 127.0.0.0/8:
#   sqlite    one release `dialcore serve` on a SQLite file (HTTP 127.0.0.1:18080, SIP
#             127.0.0.1:15060, default RTP ports: what scripts/lib/echo-service.sh starts);
#   postgres  one node on a throwaway PostgreSQL server of its own;
#   cluster   two nodes on one throwaway PostgreSQL server, behind Kamailio running
#             deploy/kamailio/kamailio.cfg (dispatcher list naming both nodes).
# PostgreSQL is started as crates/pg-harness does (initdb --locale=C, trust auth, fsync off,
# a free loopback port, as the postgres user when running as root). Everything lives in one
# temporary directory; on exit (or failure, or Ctrl-C) every process is stopped and the
# directory removed.
#
# Sets: ROOT, work, key, and per deployment (associative arrays indexed by its name):
#   dep_http     the HTTP address of the node the REST API is driven through;
#   dep_sip      where the load generators send their INVITEs (the node, or Kamailio);
#   dep_nodes    the pids of the deployment's `dialcore serve` processes;
#   dep_kamailio Kamailio's main pid (cluster), dep_postgres the postmaster's pid;
#   dep_logs     the nodes' log files.
# The caller sets `generator` to the pid of a running load generator: it is killed on exit.
# Call start_deployment NAME for each. Runs $DIALCORE_BIN.

ROOT=${ROOT:-$(pwd)}
work=$(mktemp -d)
# PostgreSQL runs as the postgres user, which must reach its directory below.
chmod 711 "$work"
key=sk_load_dialcore
# `[secret] key` of the PostgreSQL nodes (required there), the same on every node.
secret_key=$(openssl rand -hex 32 2>/dev/null || od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
pids=()
pg_dirs=()
declare -A dep_http dep_sip dep_nodes dep_kamailio dep_postgres dep_logs

cleanup() {
    set +e
    # The nodes and Kamailio first (SIGTERM; SIGKILL for what is still up after 10 s),
    # then PostgreSQL (fast shutdown), then the directory.
    local pid dir deadline
    # A load generator still running (set by the caller while one runs).
    [ -n "${generator:-}" ] && kill "$generator" 2>/dev/null
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null
    done
    for dir in "${pg_dirs[@]}"; do
        [ -f "$dir/data/postmaster.pid" ] || continue
        pid=$(head -1 "$dir/data/postmaster.pid")
        kill -INT "$pid" 2>/dev/null
        deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# N distinct loopback ports, each free on both TCP and UDP (SIP listens on both).
free_ports() { # count
    python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
    except OSError:
        continue
    held += [tcp, udp]
    ports.append(port)
print(" ".join(map(str, ports)))
PY
}

# Runs a command as the postgres user when running as root (PostgreSQL refuses root).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "${PG_BIN:-}" ] && pg_bin=$PG_BIN

# Starts a throwaway PostgreSQL server in $work/pg-NAME with an empty database `dialcore`.
# Sets pg_url and pg_pid (the postmaster).
start_postgres() { # name
    local dir=$work/pg-$1 port launcher
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
        echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)" >&2
        exit 1
    fi
    mkdir -p "$dir/data"
    chmod 755 "$dir"
    chmod 700 "$dir/data"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
    pg_dirs+=("$dir")
    if ! (cd / && as_postgres "$pg_bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C --no-sync) >"$work/initdb-$1.log" 2>&1; then
        cat "$work/initdb-$1.log" >&2
        exit 1
    fi
    port=$(free_ports 1)
    (cd / && as_postgres "$pg_bin/postgres" -D "$dir/data" -p "$port" -k "$dir" \
        -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off -c max_connections=300) </dev/null >"$work/postgres-$1.log" 2>&1 &
    launcher=$!
    for _ in $(seq 300); do
        "$pg_bin/pg_isready" -q -h 127.0.0.1 -U postgres -p "$port" && break
        if ! kill -0 "$launcher" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -U postgres -p "$port"; then
        echo "PostgreSQL ($1) did not start:" >&2
        cat "$work/postgres-$1.log" >&2
        exit 1
    fi
    "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -l C -T template0 dialcore
    pg_url="postgres://postgres@127.0.0.1:$port/dialcore"
    pg_pid=$(head -1 "$dir/data/postmaster.pid")
}

# Starts `dialcore serve` with the common settings plus the NAME=value arguments; waits
# for /healthz. Sets node_pid.
start_node() { # log http NAME=value...
    local log=$1 http=$2
    shift 2
    env DIALCORE_HTTP_LISTEN="$http" DIALCORE_API_KEY=$key \
        DIALCORE_API_RATE_LIMIT_PER_MINUTE=100000 DIALCORE_LOG_LEVEL=warn \
        DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS=true "$@" \
        "${DIALCORE_BIN:-$ROOT/target/release/dialcore}" serve >"$log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    for _ in $(seq 300); do
        curl -sf "http://$http/healthz" >/dev/null && return 0
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "dialcore serve on $http did not come up; its log:" >&2
    tail -40 "$log" >&2
    exit 1
}

# Kamailio with deploy/kamailio/kamailio.cfg on 127.0.0.1:PORT in front of the SIP
# addresses given; waits until it answers OPTIONS. Sets kamailio_pid.
start_kamailio() { # dir port node_sip_address...
    local dir=$1 port=$2 program index=0 uri
    shift 2
    program=$(command -v kamailio || echo /usr/sbin/kamailio)
    mkdir -p "$dir"
    : >"$dir/dispatcher.list"
    for uri in "$@"; do
        echo "1 sip:$uri 0 0 node=$index" >>"$dir/dispatcher.list"
        index=$((index + 1))
    done
    (cd "$dir" && exec "$program" -DD -E -f "$ROOT/deploy/kamailio/kamailio.cfg" -Y "$dir" \
        -P "$dir/kamailio.pid" -A "LISTEN_IP=127.0.0.1" -A "LISTEN_PORT=$port" \
        -A "DISPATCHER_LIST=\"$dir/dispatcher.list\"" -A 'CARRIER_NETWORKS="127.0.0.0/8"' \
        -A "CHILDREN=2" -A "CTL_SOCKET=\"unix:$dir/kamailio_ctl\"") \
        </dev/null >"$dir/kamailio.log" 2>&1 &
    kamailio_pid=$!
    pids+=("$kamailio_pid")
    if ! python3 - "$port" <<'PY'; then
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.2)
local = "127.0.0.1:%d" % s.getsockname()[1]
deadline = time.time() + 20
attempt = 0
while time.time() < deadline:
    attempt += 1
    options = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {local};branch=z9hG4bKready{attempt};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:load@{local}>;tag=ready\r\nTo: <sip:127.0.0.1:{port}>\r\n"
               f"Call-ID: ready-{attempt}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    s.sendto(options.encode(), ("127.0.0.1", port))
    try:
        if s.recv(2048).startswith(b"SIP/2.0 200"):
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
PY
        echo "Kamailio did not answer OPTIONS on 127.0.0.1:$port; its log:" >&2
        tail -40 "$dir/kamailio.log" >&2
        exit 1
    fi
}

# The echo agent, the loopback trunk and +15550100000, through the REST API at HTTP.
provision() { # http
    local http=$1 agent trunk
    api() { curl -sf -X POST "http://$http/api/public/v1$1" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d "$2"; }
    id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'; }
    agent=$(api /agents '{"name":"load echo","prompt":"echo","status":"active","runtime":{"type":"echo"}}' | id_of)
    trunk=$(api /trunks '{"name":"sipp","host":"127.0.0.1","port":5999,"transport":"udp","allowed_networks":["127.0.0.0/8"]}' | id_of)
    api /phone-numbers "{\"number\":\"+15550100000\",\"trunk_id\":\"$trunk\",\"agent_id\":\"$agent\"}" >/dev/null
}

start_deployment() { # sqlite|postgres|cluster
    local name=$1 ports http_a http_b sip_a sip_b kam
    case "$name" in
        sqlite)
            # As scripts/lib/echo-service.sh: fixed ports, default RTP range.
            start_node "$work/service.log" 127.0.0.1:18080 \
                DIALCORE_SIP_LISTEN=127.0.0.1:15060 \
                DIALCORE_DATABASE_URL="sqlite://$work/dialcore.db" \
                DIALCORE_RECORDINGS_DIR="$work/recordings"
            dep_http[$name]=127.0.0.1:18080
            dep_sip[$name]=127.0.0.1:15060
            dep_nodes[$name]=$node_pid
            dep_logs[$name]="$work/service.log"
            ;;
        postgres)
            start_postgres "$name"
            dep_postgres[$name]=$pg_pid
            read -r http_a sip_a <<<"$(free_ports 2)"
            start_node "$work/postgres-node.log" "127.0.0.1:$http_a" \
                DIALCORE_NODE_ID=dialcore-pg DIALCORE_SIP_LISTEN="127.0.0.1:$sip_a" \
                DIALCORE_RTP_PORT_MIN=31000 DIALCORE_RTP_PORT_MAX=40999 \
                DIALCORE_DATABASE_URL="$pg_url" DIALCORE_SECRET_KEY="$secret_key" \
                DIALCORE_RECORDINGS_DIR="$work/dialcore-pg/recordings"
            dep_http[$name]=127.0.0.1:$http_a
            dep_sip[$name]=127.0.0.1:$sip_a
            dep_nodes[$name]=$node_pid
            dep_logs[$name]="$work/postgres-node.log"
            ;;
        cluster)
            start_postgres "$name"
            dep_postgres[$name]=$pg_pid
            read -r http_a sip_a http_b sip_b kam <<<"$(free_ports 5)"
            start_node "$work/cluster-a.log" "127.0.0.1:$http_a" \
                DIALCORE_NODE_ID=dialcore-a DIALCORE_SIP_LISTEN="127.0.0.1:$sip_a" \
                DIALCORE_RTP_PORT_MIN=41000 DIALCORE_RTP_PORT_MAX=50999 \
                DIALCORE_SIP_OUTBOUND_PROXY="sip:127.0.0.1:$kam;transport=udp" \
                DIALCORE_DATABASE_URL="$pg_url" DIALCORE_SECRET_KEY="$secret_key" \
                DIALCORE_RECORDINGS_DIR="$work/dialcore-a/recordings"
            dep_nodes[$name]=$node_pid
            start_node "$work/cluster-b.log" "127.0.0.1:$http_b" \
                DIALCORE_NODE_ID=dialcore-b DIALCORE_SIP_LISTEN="127.0.0.1:$sip_b" \
                DIALCORE_RTP_PORT_MIN=51000 DIALCORE_RTP_PORT_MAX=60999 \
                DIALCORE_SIP_OUTBOUND_PROXY="sip:127.0.0.1:$kam;transport=udp" \
                DIALCORE_DATABASE_URL="$pg_url" DIALCORE_SECRET_KEY="$secret_key" \
                DIALCORE_RECORDINGS_DIR="$work/dialcore-b/recordings"
            dep_nodes[$name]="${dep_nodes[$name]} $node_pid"
            start_kamailio "$work/kamailio" "$kam" "127.0.0.1:$sip_a" "127.0.0.1:$sip_b"
            dep_kamailio[$name]=$kamailio_pid
            dep_http[$name]=127.0.0.1:$http_a
            dep_sip[$name]=127.0.0.1:$kam
            dep_logs[$name]="$work/cluster-a.log $work/cluster-b.log"
            ;;
        *)
            echo "unknown deployment $name (sqlite, postgres or cluster)" >&2
            exit 2
            ;;
    esac
    provision "${dep_http[$name]}"
}
