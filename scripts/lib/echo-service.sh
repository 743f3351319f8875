# Sourced by the load scripts: starts a release `dialcore serve` on its own
# temporary database, with an echo agent on +15550100000 behind a trunk that
# accepts calls from loopback. Sets: ROOT, work, http, sip_port, key,
# service_pid, pids (killed on exit), api(), id_of(). Runs $DIALCORE_BIN, by default
# target/release/dialcore (built by the caller).

ROOT=${ROOT:-$(pwd)}
work=$(mktemp -d)
http=127.0.0.1:18080
sip_port=15060
key=sk_load_dialcore
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
DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS=true \
    "${DIALCORE_BIN:-$ROOT/target/release/dialcore}" serve >"$work/service.log" 2>&1 &
service_pid=$!
pids+=($service_pid)
for _ in $(seq 100); do
    curl -sf "http://$http/healthz" >/dev/null && break
    sleep 0.1
done

api() { curl -sf -X POST "http://$http/api/public/v1$1" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d "$2"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'; }
agent=$(api /agents '{"name":"load echo","prompt":"echo","status":"active","runtime":{"type":"echo"}}' | id_of)
trunk=$(api /trunks '{"name":"sipp","host":"127.0.0.1","port":5999,"transport":"udp","allowed_networks":["127.0.0.0/8"]}' | id_of)
api /phone-numbers "{\"number\":\"+15550100000\",\"trunk_id\":\"$trunk\",\"agent_id\":\"$agent\"}" >/dev/null
