#!/usr/bin/env bash
# bench/run.sh full|quick: the benchmark harness (`make bench`, `make bench-quick`).
#
# Starts a fresh fleethub (embedded SQLite with synchronous=FULL on the
# normal disk, a generated CA and server certificate, one hub and a DPS on
# 127.0.0.10) and Mosquitto (the Debian package, installed when missing, TLS
# with the same certificate on 127.0.0.11), two custom allocation webhooks
# (build/loadgen webhook, on 127.0.0.12), runs build/loadgen against them and
# seeds every device's twin for the twin queries (loadgen seed-twins) and
# prints one line per scenario:
#   BENCH <name> value=<v> unit=<u> reference=<r> ratio=<v/r> target=<t> ok|miss
# A target is "<minimum value>[,<minimum ratio>x]", or for lower-is-better
# measures "<=<maximum>[,<=<maximum ratio>x]"; "-" for no minimum. Each run
# also writes the lines as a table, with the machine, the versions and the
# commit measured, to build/bench-results/<mode>-<UTC time>.md (and a copy
# as build/bench-results/latest.md); nothing in the tracked tree changes.
# Only 127.0.0.10-12 are used (the interop tests use 127.0.0.1-5). Every
# process this script starts is stopped by pid when it exits. The numbers of
# a quick run are smoke values: short runs.
#
# Exit status: 0 when every run finished with no more errors than allowed
# (misses do not count), 1 otherwise, 2 when set-up failed.
set -euo pipefail

mode="${1:-quick}"
case "$mode" in
quick)
	DEVICES=100 DURATION=5 INFLIGHT=4 SIZE=100
	CONN_DEVICES=2000 CONN_RATE=3000 CONN_HOLD=3
	REST_CONNS=16 REST_INFLIGHT=4 PATCH_RATE=2000
	DPS_CONCURRENCY=300 SLOW_CONCURRENCY=100 HS_CONCURRENCY=50 DPS_DURATION=5
	TPM_DEVICES=3000
	RESTART_TWINS=5000 QUERY_RATE=50
	;;
full)
	DEVICES=1000 DURATION=20 INFLIGHT=4 SIZE=100
	CONN_DEVICES=15000 CONN_RATE=3000 CONN_HOLD=5
	REST_CONNS=64 REST_INFLIGHT=4 PATCH_RATE=2000
	DPS_CONCURRENCY=2000 SLOW_CONCURRENCY=500 HS_CONCURRENCY=100 DPS_DURATION=20
	TPM_DEVICES=12000
	RESTART_TWINS=100000 QUERY_RATE=50
	;;
*)
	echo "usage: $0 full|quick" >&2
	exit 2
	;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
: "${BUILD_DIR:=$root/build}"
FLEETHUB="$BUILD_DIR/fleethub"
LOADGEN="$BUILD_DIR/loadgen"
work="$BUILD_DIR/bench-work"
HUB=bench.fleethub.test
HUB_IP=127.0.0.10
MOSQ_IP=127.0.0.11
HOOK_IP=127.0.0.12
MQTT_PORT=8883
AMQP_PORT=5671
HTTPS_PORT=443
SCOPE=0ne00BE0C11
# Results go under build/, never into the tracked tree: a results file is
# committed on purpose (bench/README.md, "Keeping a run").
results="$BUILD_DIR/bench-results/$mode-$(date -u +%Y%m%dT%H%M%SZ).md"

for bin in "$FLEETHUB" "$LOADGEN"; do
	[ -x "$bin" ] || { echo "bench: $bin is missing (make all loadgen)" >&2; exit 2; }
done

pids=() # servers started here
bg=""   # a loadgen running in the background, while it runs
cleanup() {
	local p
	if [ -n "$bg" ]; then kill "$bg" 2>/dev/null || true; fi
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }

rm -rf "$work"
mkdir -p "$work"

# ---- certificates: a CA, and one server certificate for every server ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=fleethub bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:localhost,IP:%s,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
	"$HUB" "$HUB_IP" "$MOSQ_IP" "$HOOK_IP" >"$work/ext.cnf"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HUB" \
	-keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
	-CAcreateserial -days 2 -extfile "$work/ext.cnf" -out "$work/server.pem" 2>/dev/null

# Refuses to start a server on an address someone else already serves.
port_free() {
	! ss -ltnH "src $1:$2" 2>/dev/null | grep -q .
}

# Waits until ip:port accepts connections, while pid is alive.
wait_listening() {
	local ip="$1" port="$2" pid="$3" i
	for i in $(seq 1 300); do
		if ss -ltnH "src $ip:$port" 2>/dev/null | grep -q .; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

rss_kib() {
	awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# CPU seconds (user + system) process PID has used so far.
TICKS=$(getconf CLK_TCK)
cpu_s() {
	awk -v t="$TICKS" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/$1/stat"
}

# ---- fleethub -------------------------------------------------------------
OWNER_KEY="$(openssl rand -base64 32)"
DPS_KEY="$(openssl rand -base64 32)"
GROUP_KEY="$(openssl rand -base64 32)"  # devices, and the hashed enrollment group
CUSTOM_KEY="$(openssl rand -base64 32)" # the custom allocation group (fast webhook)
SLOW_KEY="$(openssl rand -base64 32)"   # the custom allocation group (slow webhook)
for p in $MQTT_PORT $HTTPS_PORT $AMQP_PORT; do
	port_free $HUB_IP $p || { log "$HUB_IP:$p is already in use"; exit 2; }
done
cat >"$work/fleethub.ini" <<EOF
[server]
data_dir = $work/fleethub-data
mqtt_listen = $HUB_IP:$MQTT_PORT
https_listen = $HUB_IP:$HTTPS_PORT
amqp_listen = $HUB_IP:$AMQP_PORT
tls_cert = $work/server.pem
tls_key = $work/server.key
max_connections = 30000
# The generator drives each device far harder than any device should
# (bench-quick: 100 devices share 250k twin GETs/s); the limiter still runs
# and costs the same, it just never refuses.
device_request_rate = 1000000
device_request_burst = 1000000
# The tag the selective query scenario asks about. (Not the reported
# paths: SQLite does not use an expression index for a range that
# selects 10 % in device id order, nor for GROUP BY, and each index on
# reported costs every reported patch; bench/README.md.)
query_indexes = tags.plant

[hub $HUB]
owner_key = $OWNER_KEY

[dps $HUB]
id_scope = $SCOPE
owner_key = $DPS_KEY
webhook_ca = $work/ca.pem
EOF
fh_pid=""
# start_fleethub: starts the server, sets fh_pid, waits until it listens.
start_fleethub() {
	"$FLEETHUB" serve --config "$work/fleethub.ini" >>"$work/fleethub.out" 2>>"$work/fleethub.log" &
	fh_pid=$!
	pids+=("$fh_pid")
	wait_listening $HUB_IP $MQTT_PORT "$fh_pid" || {
		log "fleethub did not start; its log:"
		cat "$work/fleethub.log" >&2
		exit 2
	}
}
ulimit -n "$(ulimit -Hn)" # the connections scenario holds thousands of sessions
start_fleethub
log "fleethub $("$FLEETHUB" --version 2>/dev/null || echo) pid $fh_pid on $HUB_IP"

# ---- Mosquitto --------------------------------------------------------------
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
if [ ! -x "$MOSQUITTO" ]; then
	log "installing mosquitto (apt-get)"
	apt-get install -y mosquitto >"$work/apt.log" 2>&1 ||
		{ apt-get update >>"$work/apt.log" 2>&1 && apt-get install -y mosquitto >>"$work/apt.log" 2>&1; } ||
		{ log "cannot install mosquitto; see $work/apt.log"; exit 2; }
	MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
fi
port_free $MOSQ_IP $MQTT_PORT || { log "$MOSQ_IP:$MQTT_PORT is already in use"; exit 2; }
cat >"$work/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
max_keepalive 65535
log_dest stderr
log_type error
log_type warning
listener $MQTT_PORT $MOSQ_IP
cafile $work/ca.pem
certfile $work/server.pem
keyfile $work/server.key
EOF
if [ "$(id -u)" = 0 ]; then
	echo "user root" >>"$work/mosquitto.conf" # it reads the key in this directory
fi
"$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
mq_pid=$!
pids+=("$mq_pid")
wait_listening $MOSQ_IP $MQTT_PORT "$mq_pid" || {
	log "mosquitto did not start; its log:"
	cat "$work/mosquitto.log" >&2
	exit 2
}
MOSQ_VERSION="$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
log "$MOSQ_VERSION pid $mq_pid on $MOSQ_IP"

# ---- webhooks ---------------------------------------------------------------
# webhook PORT DELAY_MS: a custom allocation webhook on HOOK_IP:PORT; its
# pid is appended to hooks.
hooks=()
webhook() {
	port_free $HOOK_IP "$1" || { log "$HOOK_IP:$1 is already in use"; exit 2; }
	"$LOADGEN" webhook --listen "$HOOK_IP:$1" --tls-cert "$work/server.pem" \
		--tls-key "$work/server.key" --hub $HUB --delay-ms "$2" \
		>"$work/webhook-$1.out" 2>"$work/webhook-$1.err" &
	local pid=$!
	pids+=("$pid")
	hooks+=("$pid")
	wait_listening $HOOK_IP "$1" "$pid" || { log "webhook on port $1 did not start"; exit 2; }
}
webhook 8443 0
webhook 8444 200

# ---- set-up: devices and enrollment groups -----------------------------------
CREATE=$CONN_DEVICES
[ "$RESTART_TWINS" -gt "$CREATE" ] && CREATE=$RESTART_TWINS
log "creating $CREATE devices"
if ! "$LOADGEN" --create-devices --devices "$CREATE" --rest $HUB_IP:$HTTPS_PORT \
	--owner-key "$OWNER_KEY" --hub $HUB --key "$GROUP_KEY" --ca "$work/ca.pem" \
	2>"$work/create.err"; then
	sed 's/^/  /' "$work/create.err" >&2
	exit 2
fi
cat "$work/create.err" >&2

cli() {
	"$FLEETHUB" "$@" --data-dir "$work/fleethub-data" --server $HUB_IP:$HTTPS_PORT \
		--ca "$work/ca.pem" >>"$work/cli.out" 2>&1 ||
		{ log "fleethub $* failed:"; sed 's/^/  /' "$work/cli.out" >&2; exit 2; }
}
cli enrollment-group create bench-hashed --primary-key "$GROUP_KEY" --policy hashed
cli enrollment-group create bench-custom --primary-key "$CUSTOM_KEY" --policy custom \
	--webhook "https://$HOOK_IP:8443/allocate"
cli enrollment-group create bench-slow --primary-key "$SLOW_KEY" --policy custom \
	--webhook "https://$HOOK_IP:8444/allocate"

# ---- runs -------------------------------------------------------------------
failed=0
HUB_ARGS=(--target $HUB_IP:$MQTT_PORT --hub $HUB --ca "$work/ca.pem" --key "$GROUP_KEY")
REST_ARGS=(--rest $HUB_IP:$HTTPS_PORT --owner-key "$OWNER_KEY")
MOSQ_ARGS=(--target $MOSQ_IP:$MQTT_PORT --tls-name $MOSQ_IP --ca "$work/ca.pem" --no-auth)
LOAD_ARGS=(--devices $DEVICES --duration $DURATION --inflight $INFLIGHT --size $SIZE)
DPS_ARGS=(--target $HUB_IP:$MQTT_PORT --tls-name $HUB --ca "$work/ca.pem" --scope $SCOPE
	--duration $DPS_DURATION --timeout 30)

# lg NAME PID ARGS...: runs loadgen against the server PID, keeps its line
# in $work/NAME.out and the server's CPU seconds during the run in
# $work/NAME.srvcpu.
lg() {
	local name="$1" pid="$2" before
	shift 2
	log "running $name"
	before=$(cpu_s "$pid")
	if ! "$LOADGEN" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
		failed=1
		log "$name: loadgen failed:"
		sed 's/^/  /' "$work/$name.err" >&2
	fi
	awk -v a="$before" -v b="$(cpu_s "$pid")" 'BEGIN { printf "%.2f\n", b - a }' \
		>"$work/$name.srvcpu"
	cat "$work/$name.out" >&2
}

# field NAME KEY: a key=value field of a run's line ("" when absent).
field() {
	sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$work/$1.out" 2>/dev/null | head -1
}

# connections NAME PID ARGS...: ramps up, samples the server's RSS while the
# sessions are held, and records KiB per connection in $work/NAME.rss.
connections() {
	local name="$1" pid="$2"
	shift 2
	local before after i cpu0
	log "running $name"
	before=$(rss_kib "$pid")
	cpu0=$(cpu_s "$pid")
	"$LOADGEN" connections "$@" --devices $CONN_DEVICES --rate $CONN_RATE \
		--connect-concurrency 500 --duration $CONN_HOLD --timeout 30 --clean-session 0 \
		>"$work/$name.out" 2>"$work/$name.err" &
	bg=$!
	after=""
	for i in $(seq 1 1200); do
		if grep -q "ramp done" "$work/$name.err"; then
			sleep 1
			after=$(rss_kib "$pid")
			break
		fi
		kill -0 "$bg" 2>/dev/null || break
		sleep 0.1
	done
	local st=0
	wait "$bg" || st=$?
	bg=""
	awk -v a="$cpu0" -v b="$(cpu_s "$pid")" 'BEGIN { printf "%.2f\n", b - a }' \
		>"$work/$name.srvcpu"
	if [ $st -ne 0 ]; then
		failed=1
		log "$name: loadgen failed:"
		sed 's/^/  /' "$work/$name.err" >&2
	fi
	cat "$work/$name.out" >&2
	if [ -n "$after" ]; then
		awk -v a="$after" -v b="$before" -v n="$(field "$name" ready)" \
			'BEGIN { if (n > 0) printf "%.2f\n", (a - b) / n }' >"$work/$name.rss"
	else
		: >"$work/$name.rss"
	fi
	log "$name: server RSS ${before} KiB before, ${after:-?} KiB holding the sessions"
}

lg twin-reported "$fh_pid" twin-reported "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}"
lg mosquitto-publish "$mq_pid" mqtt-publish "${MOSQ_ARGS[@]}" "${LOAD_ARGS[@]}"
lg twin-get "$fh_pid" twin-get "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}"
lg twin-desired-latency "$fh_pid" twin-desired-latency "${HUB_ARGS[@]}" "${REST_ARGS[@]}" \
	--devices $DEVICES --duration $DURATION --connections 4 --patch-rate $PATCH_RATE
lg twin-rest-patch "$fh_pid" twin-rest-patch "${HUB_ARGS[@]}" "${REST_ARGS[@]}" \
	--devices $DEVICES --duration $DURATION --connections $REST_CONNS \
	--inflight $REST_INFLIGHT --size $SIZE
# ---- messaging (issue 18): telemetry from 1,000 devices (QoS 1, 200 B,
# acknowledged after the durable append) against Mosquitto's QoS 1 with
# the same load; direct methods at a fixed rate, timed from the REST call
# to its answer; cloud-to-device: the queues of 1,000 devices filled
# through the REST API (C2D_PER_DEVICE each), then drained by the devices.
TEL_DEVICES=1000
TEL_ARGS=(--devices $TEL_DEVICES --duration $DURATION --inflight $INFLIGHT --size 200)
lg telemetry-ingest "$fh_pid" mqtt-publish "${HUB_ARGS[@]}" "${TEL_ARGS[@]}"
lg mosquitto-telemetry "$mq_pid" mqtt-publish "${MOSQ_ARGS[@]}" "${TEL_ARGS[@]}"
# ---- the AMQP endpoint (issue 19): an Event Hubs consumer per partition
# reads the log telemetry-ingest filled, from its start (1,000,000 events,
# or all there are); cloud-to-device sends over AMQP fill the devices'
# queues that c2d-delivery then drains.
AMQP_ARGS=(--target $HUB_IP:$AMQP_PORT --hub $HUB --ca "$work/ca.pem" --owner-key "$OWNER_KEY")
lg amqp-consume "$fh_pid" amqp-consume "${AMQP_ARGS[@]}" --connections 4 --count 1000000 \
	--duration 120
lg method-roundtrip "$fh_pid" method-roundtrip "${HUB_ARGS[@]}" "${REST_ARGS[@]}" \
	--devices $DEVICES --duration $DURATION --connections 4 --patch-rate 1000
C2D_PER_DEVICE=40
lg c2d-send "$fh_pid" c2d-send "${AMQP_ARGS[@]}" --count $((TEL_DEVICES * C2D_PER_DEVICE)) \
	--devices $TEL_DEVICES --inflight 256 --size 100 --duration 300
lg c2d-delivery "$fh_pid" c2d-delivery "${HUB_ARGS[@]}" --devices $TEL_DEVICES --duration 120 \
	--count $((TEL_DEVICES * C2D_PER_DEVICE))
# ---- twin queries (issue 14). The twin scenarios above ran on the twins as
# created; now every device (all CREATE of them) gets the query fleet's tags
# and reported properties (bench/twinset.h), and the queries run before
# the provisioning scenarios add devices the checks do not expect. The
# twin-reported run beside a query loop is compared with a plain
# twin-reported run on the same (seeded) twins just before it: seeded
# twins are larger, and a patch of one costs more than at the top ----
lg seed-twins "$fh_pid" seed-twins "${HUB_ARGS[@]}" "${REST_ARGS[@]}" --devices $CREATE \
	--connections 16 --inflight 8 --concurrency 500 --timeout 30
QUERY_ARGS=(--rest $HUB_IP:$HTTPS_PORT --owner-key "$OWNER_KEY" --hub $HUB --ca "$work/ca.pem"
	--devices $CREATE --duration $DURATION --timeout 30)
lg query-tag-eq "$fh_pid" query-tag-eq "${QUERY_ARGS[@]}"
lg query-reported-range "$fh_pid" query-reported-range "${QUERY_ARGS[@]}"
lg query-group-count "$fh_pid" query-group-count "${QUERY_ARGS[@]}"
lg twin-reported-seeded "$fh_pid" twin-reported "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}"
lg twin-reported-queries "$fh_pid" twin-reported "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}" \
	"${REST_ARGS[@]}" --seeded $CREATE --query-rate $QUERY_RATE
log "twin-reported-queries: $(field twin-reported-queries queries) queries done in the" \
	"window ($(field twin-reported-queries queries_per_s)/s of $QUERY_RATE/s;" \
	"$(field twin-reported-queries queries_due) due), $(field twin-reported-queries query_errors) failed"
lg tls-handshakes "$fh_pid" tls-handshakes "${DPS_ARGS[@]}" --concurrency $HS_CONCURRENCY
lg dps-register "$fh_pid" dps-register "${DPS_ARGS[@]}" --key "$GROUP_KEY" \
	--concurrency $DPS_CONCURRENCY --prefix bench-reg-
lg dps-custom "$fh_pid" dps-register "${DPS_ARGS[@]}" --key "$CUSTOM_KEY" \
	--concurrency $DPS_CONCURRENCY --prefix bench-custom-
lg dps-register-slowref "$fh_pid" dps-register "${DPS_ARGS[@]}" --key "$GROUP_KEY" \
	--concurrency $SLOW_CONCURRENCY --prefix bench-ref-
lg dps-custom-slow "$fh_pid" dps-register "${DPS_ARGS[@]}" --key "$SLOW_KEY" \
	--concurrency $SLOW_CONCURRENCY --prefix bench-slow-
# TPM attestation over HTTPS, the devices' TPM work done by loadgen in
# software on the same cores (its TPM_DEVICES enrollments are made first)
lg dps-tpm "$fh_pid" dps-tpm --target $HUB_IP:$HTTPS_PORT --tls-name $HUB --ca "$work/ca.pem" \
	--scope $SCOPE --duration $DPS_DURATION --timeout 30 --owner-key "$DPS_KEY" \
	--devices $TPM_DEVICES --concurrency $DPS_CONCURRENCY --prefix bench-tpm-
# ---- sessions for the connection ramp: half its devices connect once with
# clean session 0 and leave, so that after the restart the ramp (clean
# session 0 too) resumes half of its sessions from the store and creates
# the other half, as a fleet reconnecting after an upgrade does. Mosquitto
# keeps sessions in memory only (no persistence here): after a restart it
# would have none, so its ramp creates all of them, unseeded ----
SEED=$((CONN_DEVICES / 2))
log "seeding $SEED clean-session-0 sessions"
if ! "$LOADGEN" connections "${HUB_ARGS[@]}" --devices $SEED --rate $CONN_RATE \
	--connect-concurrency 500 --duration 0.001 --timeout 30 --clean-session 0 \
	>"$work/seed.out" 2>"$work/seed.err"; then
	failed=1
	log "seeding failed:"
	sed 's/^/  /' "$work/seed.err" >&2
fi

# ---- restart: start-up with RESTART_TWINS twins until a twin GET is answered ----
log "restart with $RESTART_TWINS twins"
kill -TERM "$fh_pid"
wait "$fh_pid" 2>/dev/null || true
t0=$(date +%s%N)
start_fleethub
answered=0
for i in $(seq 1 1000); do
	if "$LOADGEN" twin-get "${HUB_ARGS[@]}" --devices 1 --duration 0.001 --timeout 10 \
		>"$work/restart.probe" 2>>"$work/restart.err"; then
		answered=1
		break
	fi
	sleep 0.01
done
t1=$(date +%s%N)
if [ $answered = 1 ]; then
	awk -v a="$t0" -v b="$t1" \
		'BEGIN { printf "loadgen scenario=restart value_s=%.3f\n", (b - a) / 1e9 }' \
		>"$work/restart.out"
	cat "$work/restart.out" >&2
else
	# No probe was answered: no time to report (the line prints "-" and misses).
	: >"$work/restart.out"
	failed=1
	log "restart: no twin GET was answered after the restart ($i probes):"
	tail -5 "$work/restart.err" | sed 's/^/  /' >&2
fi

# ---- connections: on the freshly restarted server, so its RSS growth is
# the sessions' and not the reuse of memory earlier runs freed ----
connections connections "$fh_pid" "${HUB_ARGS[@]}"
connections mosquitto-connections "$mq_pid" "${MOSQ_ARGS[@]}"

# ---- connections with client certificates: the same ramp with
# certificateAuthority devices (a development CA the hub verified; each
# device's certificate, CN = its id, signed by loadgen before the run), half
# of them seeded and the server restarted as for the SAS ramp above ----
X509_ARGS=(--prefix bench-x509- --x509-ca "$work/bench-ca.pem" --x509-ca-key "$work/bench-ca.key")
"$FLEETHUB" cert root "$work/bench-ca" >>"$work/cli.out" 2>&1 ||
	{ log "fleethub cert root failed"; exit 2; }
"$FLEETHUB" ca upload bench-ca --certificate "$work/bench-ca.pem" --data-dir "$work/fleethub-data" \
	--server $HUB_IP:$HTTPS_PORT --ca "$work/ca.pem" >"$work/ca-upload.json" 2>>"$work/cli.out" ||
	{ log "fleethub ca upload failed:"; sed 's/^/  /' "$work/cli.out" >&2; exit 2; }
code=$(sed -n 's/.*"verificationCode": *"\([0-9A-F]*\)".*/\1/p' "$work/ca-upload.json")
"$FLEETHUB" cert verification "$work/$code" --issuer "$work/bench-ca" >>"$work/cli.out" 2>&1 ||
	{ log "fleethub cert verification failed"; exit 2; }
cli ca verify bench-ca --certificate "$work/$code.pem"
log "creating $CONN_DEVICES certificateAuthority devices"
if ! "$LOADGEN" --create-devices --devices $CONN_DEVICES --rest $HUB_IP:$HTTPS_PORT \
	--owner-key "$OWNER_KEY" --hub $HUB --key "$GROUP_KEY" --ca "$work/ca.pem" \
	"${X509_ARGS[@]}" 2>"$work/create-x509.err"; then
	failed=1
	sed 's/^/  /' "$work/create-x509.err" >&2
fi
if ! "$LOADGEN" connections "${HUB_ARGS[@]}" "${X509_ARGS[@]}" --devices $SEED \
	--rate $CONN_RATE --connect-concurrency 500 --duration 0.001 --timeout 30 \
	--clean-session 0 >"$work/seed-x509.out" 2>"$work/seed-x509.err"; then
	failed=1
	log "seeding certificate sessions failed:"
	sed 's/^/  /' "$work/seed-x509.err" >&2
fi
kill -TERM "$fh_pid"
wait "$fh_pid" 2>/dev/null || true
start_fleethub
connections connections-x509 "$fh_pid" "${HUB_ARGS[@]}" "${X509_ARGS[@]}"

# ---- PostgreSQL (issue 17): one node, then two, on a PostgreSQL 15 cluster
# started here (scripts/pg-dev.sh: Debian's postgresql-15, fsync on, a
# unix socket in the work directory). Node a on 127.0.0.13, node b on
# 127.0.0.14, both with the SQLite server's keys and id scope. References:
# PostgreSQL's own rate for the same upserts (build/pgraw, libpq pipeline
# mode, no fleethub around it; decisions.md 24) and the SQLite lines above ----
PG_A=127.0.0.13
PG_B=127.0.0.14
pg_base=$("$root/scripts/pg-dev.sh" start "$work/pg" 55433) ||
	{ log "cannot start PostgreSQL (postgresql-15)"; exit 2; }
pg_stop() { "$root/scripts/pg-dev.sh" stop "$work/pg"; }
trap 'cleanup; pg_stop' EXIT
/usr/lib/postgresql/15/bin/createdb -h "$work/pg" -p 55433 -U fleethub fhbench ||
	{ log "cannot create the bench database"; exit 2; }
PG_CONN="$pg_base dbname=fhbench"
# pg_node NAME IP: a fleethub node on PostgreSQL; sets pg_pid.
pg_node() {
	local name="$1" ip="$2"
	for p in $MQTT_PORT $HTTPS_PORT $AMQP_PORT; do
		port_free "$ip" $p || { log "$ip:$p is already in use"; exit 2; }
	done
	sed -e "s|^data_dir = .*|data_dir = $work/pg-$name-data|" \
		-e "s|^mqtt_listen = .*|mqtt_listen = $ip:$MQTT_PORT|" \
		-e "s|^https_listen = .*|https_listen = $ip:$HTTPS_PORT|" \
		-e "s|^amqp_listen = .*|amqp_listen = $ip:$AMQP_PORT|" \
		-e "s|^query_indexes = .*||" \
		-e "s|^\[server\]|[server]\nstore = postgresql\npostgresql = $PG_CONN\nnode_name = $name|" \
		"$work/fleethub.ini" >"$work/pg-$name.ini"
	"$FLEETHUB" serve --config "$work/pg-$name.ini" >>"$work/pg-$name.out" 2>>"$work/pg-$name.log" &
	pg_pid=$!
	pids+=("$pg_pid")
	wait_listening "$ip" $MQTT_PORT "$pg_pid" || {
		log "fleethub on PostgreSQL did not start; its log:"
		cat "$work/pg-$name.log" >&2
		exit 2
	}
}
pg_node a $PG_A
pga_pid=$pg_pid
PGA_HUB=(--target $PG_A:$MQTT_PORT --hub $HUB --ca "$work/ca.pem" --key "$GROUP_KEY")
PGA_REST=(--rest $PG_A:$HTTPS_PORT --owner-key "$OWNER_KEY")
log "creating $DEVICES devices on PostgreSQL"
for prefix in bench- pg-half-; do
	"$LOADGEN" --create-devices --devices $DEVICES --rest $PG_A:$HTTPS_PORT --prefix $prefix \
		--owner-key "$OWNER_KEY" --hub $HUB --key "$GROUP_KEY" --ca "$work/ca.pem" \
		2>>"$work/pg-create.err" || { failed=1; sed 's/^/  /' "$work/pg-create.err" >&2; }
done
"$FLEETHUB" enrollment-group create bench-hashed --primary-key "$GROUP_KEY" --policy hashed \
	--data-dir "$work/pg-a-data" --server $PG_A:$HTTPS_PORT --ca "$work/ca.pem" \
	>>"$work/cli.out" 2>&1 || { log "enrollment group on PostgreSQL failed"; exit 2; }
log "running pg-raw"
"$BUILD_DIR/pgraw" "$PG_CONN" --devices $DEVICES --duration $DURATION --size $SIZE \
	>"$work/pg-raw.out" 2>"$work/pg-raw.err" || { failed=1; cat "$work/pg-raw.err" >&2; }
cat "$work/pg-raw.out" >&2
lg pg-twin-reported "$pga_pid" twin-reported "${PGA_HUB[@]}" "${LOAD_ARGS[@]}"
lg pg-dps-register "$pga_pid" dps-register --target $PG_A:$MQTT_PORT --tls-name $HUB \
	--ca "$work/ca.pem" --scope $SCOPE --duration $DPS_DURATION --timeout 30 --key "$GROUP_KEY" \
	--concurrency $DPS_CONCURRENCY --prefix bench-pgreg-
pg_node b $PG_B
pgb_pid=$pg_pid
# Devices on node a, desired changes through node b's REST API, at 1,000/s.
lg pg-cross-node-desired-latency "$pga_pid" twin-desired-latency "${PGA_HUB[@]}" \
	--rest $PG_B:$HTTPS_PORT --owner-key "$OWNER_KEY" --devices $DEVICES --duration $DURATION \
	--connections 4 --patch-rate 1000
# Two nodes, the devices split: half on each, both loads at once.
HALF=$((DEVICES / 2))
log "running pg-two-nodes-twin-reported"
"$LOADGEN" twin-reported --target $PG_B:$MQTT_PORT --hub $HUB --ca "$work/ca.pem" --key "$GROUP_KEY" \
	--devices $HALF --prefix pg-half- --duration $DURATION --inflight $INFLIGHT --size $SIZE \
	>"$work/pg-two-b.out" 2>"$work/pg-two-b.err" &
bg=$!
lg pg-two-a "$pga_pid" twin-reported "${PGA_HUB[@]}" --devices $HALF --duration $DURATION \
	--inflight $INFLIGHT --size $SIZE
wait "$bg" || { failed=1; sed 's/^/  /' "$work/pg-two-b.err" >&2; }
bg=""
cat "$work/pg-two-b.out" >&2
awk -v a="$(field pg-two-a ops_per_s)" -v b="$(field pg-two-b ops_per_s)" \
	'BEGIN { if (a != "" && b != "") printf "loadgen scenario=pg-two-nodes ops_per_s=%.0f\n", a + b }' \
	>"$work/pg-two-nodes.out"

# ---- webhooks' own counts ----
for p in "${hooks[@]}"; do
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
done
cat "$work"/webhook-*.out >&2 || true
for f in "$work"/webhook-*.out; do
	errs=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' "$f")
	[ "${errs:-1}" = 0 ] || { failed=1; log "$f: the webhook saw bad requests"; }
done

# ---- the lines ----------------------------------------------------------------
# bench_line NAME VALUE UNIT REFERENCE TARGET: TARGET is "min[,ratio x]" or
# "<=max[,<=ratio x]"; an empty value or reference prints "-" and misses.
bench_line() {
	awk -v name="$1" -v v="$2" -v unit="$3" -v r="$4" -v t="$5" 'BEGIN {
		lower = (substr(t, 1, 2) == "<=")
		n = split(t, parts, ",")
		tv = parts[1]; sub(/^<=/, "", tv)
		tr = ""
		if (n > 1) { tr = parts[2]; sub(/^<=/, "", tr); sub(/x$/, "", tr) }
		ratio = "-"
		if (v != "" && r != "" && r != "-" && r + 0 > 0) ratio = sprintf("%.2f", v / r)
		ok = (v != "")
		if (ok && tv != "" && tv != "-") ok = lower ? (v + 0 <= tv + 0) : (v + 0 >= tv + 0)
		if (ok && tr != "") ok = (ratio != "-") && (lower ? (ratio + 0 <= tr + 0) : (ratio + 0 >= tr + 0))
		printf "BENCH %s value=%s unit=%s reference=%s ratio=%s target=%s %s\n",
			name, (v == "" ? "-" : v), unit, (r == "" ? "-" : r), ratio, t, (ok ? "ok" : "miss")
	}'
}

# p99 in ms of a run's latency histogram.
p99_ms() {
	local us
	us=$(field "$1" p99_us)
	[ -n "$us" ] && awk -v u="$us" 'BEGIN { printf "%.2f\n", u / 1000 }'
}

{
	bench_line twin-reported "$(field twin-reported ops_per_s)" ops/s \
		"$(field mosquitto-publish ops_per_s)" "25000,0.8x"
	bench_line twin-desired-latency "$(p99_ms twin-desired-latency)" ms-p99 - "<=10"
	bench_line twin-rest-patch "$(field twin-rest-patch ops_per_s)" ops/s - 10000
	bench_line twin-get "$(field twin-get ops_per_s)" ops/s - 50000
	bench_line telemetry-ingest "$(field telemetry-ingest ops_per_s)" msg/s \
		"$(field mosquitto-telemetry ops_per_s)" "-,0.8x"
	bench_line method-roundtrip "$(p99_ms method-roundtrip)" ms-p99 - "<=10"
	bench_line amqp-consume "$(field amqp-consume ops_per_s)" msg/s \
		"$(field telemetry-ingest ops_per_s)" "-,1.0x"
	bench_line c2d-send "$(field c2d-send ops_per_s)" msg/s - 5000
	bench_line c2d-delivery "$(field c2d-delivery ops_per_s)" msg/s - 10000
	bench_line dps-register "$(field dps-register ops_per_s)" reg/s \
		"$(field tls-handshakes ops_per_s)" "1000,0.5x"
	bench_line dps-custom "$(field dps-custom ops_per_s)" reg/s \
		"$(field dps-register ops_per_s)" "-,0.8x"
	bench_line dps-custom-slow "$(field dps-custom-slow ops_per_s)" reg/s \
		"$(field dps-register-slowref ops_per_s)" "-,0.5x"
	bench_line dps-tpm "$(field dps-tpm ops_per_s)" reg/s \
		"$(field dps-register ops_per_s)" "-,0.25x"
	bench_line connections-rss "$(cat "$work/connections.rss")" KiB/conn \
		"$(cat "$work/mosquitto-connections.rss")" "<=24,<=1.5x"
	bench_line connections-rate "$(field connections ops_per_s)" conn/s \
		"$(field mosquitto-connections ops_per_s)" "-,1.0x"
	bench_line connections-x509 "$(field connections-x509 ops_per_s)" conn/s \
		"$(field connections ops_per_s)" "-,0.7x"
	bench_line connections-x509-rss "$(cat "$work/connections-x509.rss")" KiB/conn \
		"$(cat "$work/connections.rss")" "-"
	bench_line restart "$(field restart value_s)" s - "<=2"
	bench_line query-tag-eq "$(field query-tag-eq ops_per_s)" queries/s - 2000
	bench_line query-reported-range "$(field query-reported-range ops_per_s)" queries/s - 20
	bench_line query-group-count "$(field query-group-count ops_per_s)" queries/s - 10
	bench_line twin-reported-queries "$(field twin-reported-queries ops_per_s)" ops/s \
		"$(field twin-reported-seeded ops_per_s)" "-,0.8x"
	bench_line pg-twin-reported "$(field pg-twin-reported ops_per_s)" ops/s \
		"$(field pg-raw ops_per_s)" "-,0.7x"
	bench_line pg-two-nodes-twin-reported "$(field pg-two-nodes ops_per_s)" ops/s \
		"$(field twin-reported ops_per_s)" "-"
	bench_line pg-cross-node-desired-latency "$(p99_ms pg-cross-node-desired-latency)" ms-p99 - "<=20"
	bench_line pg-dps-register "$(field pg-dps-register ops_per_s)" reg/s \
		"$(field dps-register ops_per_s)" "-,0.8x"
} | tee "$work/bench.lines"

# ---- results table --------------------------------------------------------------
mkdir -p "$(dirname "$results")"
data_dev=$(df --output=source,fstype "$work" | tail -1)
# the commit measured, "-dirty" when the sources differ from it (the results
# file this run rewrites does not count)
fh_rev="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$root" status --porcelain -- . ':!bench/results' 2>/dev/null)" ]; then
	fh_rev="$fh_rev-dirty"
fi
{
	echo "# Benchmark results ($mode run)"
	echo
	echo "Written by \`bench/run.sh $mode\` on $(date -u '+%Y-%m-%d %H:%M UTC'); how to read"
	echo "and reproduce them: bench/README.md."
	echo
	echo "| scenario | value | unit | reference | ratio | target | result |"
	echo "|---|---|---|---|---|---|---|"
	awk '{ for (i = 3; i <= 7; i++) { f[i] = $i; sub(/^[^=]*=/, "", f[i]) }
	       printf "| %s | %s | %s | %s | %s | %s | %s |\n", $2, f[3], f[4], f[5], f[6], f[7], $8 }' \
		"$work/bench.lines"
	echo
	echo "## Cost per operation"
	echo
	echo "CPU time of the server and of the load generator during each run, divided"
	echo "by the operations completed in it (measured window and drain; for"
	echo "connections, the sessions brought up). Both share the same two cores."
	echo
	echo "| run | operations | server CPU s | server us/op | loadgen CPU s | loadgen us/op |"
	echo "|---|---|---|---|---|---|"
	for f in "$work"/*.srvcpu; do
		n=$(basename "$f" .srvcpu)
		ops=$(awk -v a="$(field "$n" ops)" -v b="$(field "$n" late_ops)" 'BEGIN { print a + b }')
		awk -v n="$n" -v ops="$ops" -v s="$(cat "$f")" -v l="$(field "$n" cpu_s)" 'BEGIN {
			if (ops > 0) printf "| %s | %d | %.2f | %.0f | %.2f | %.0f |\n", n, ops, s, s * 1e6 / ops, l, l * 1e6 / ops
		}'
	done
	echo
	echo "## Machine"
	echo
	echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores online"
	echo "- Memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "- Kernel: $(uname -sr)"
	echo "- Disk of the data directory: $data_dev"
	echo "- Load generator and servers share the cores (one loadgen process, one loop)."
	echo
	echo "## Versions"
	echo
	echo "- fleethub: $fh_rev"
	echo "- $MOSQ_VERSION"
	echo "- OpenSSL: $(openssl version)"
	echo "- SQLite: $(pkg-config --modversion sqlite3), libuv: $(pkg-config --modversion libuv)"
	echo "- Compiler: $(cc --version | head -1)"
	echo
	echo "## Parameters"
	echo
	echo "devices=$DEVICES duration_s=$DURATION inflight=$INFLIGHT size=$SIZE" \
		"connections=$CONN_DEVICES rest=${REST_CONNS}x$REST_INFLIGHT patch_rate=$PATCH_RATE" \
		"dps_concurrency=$DPS_CONCURRENCY slow_concurrency=$SLOW_CONCURRENCY" \
		"dps_duration_s=$DPS_DURATION tpm_devices=$TPM_DEVICES restart_twins=$RESTART_TWINS" \
		"seeded_twins=$CREATE query_rate=$QUERY_RATE"
	echo
	echo "## Raw loadgen lines"
	echo
	echo '```'
	for f in "$work"/*.out; do
		grep -h '^loadgen\|^webhook' "$f" | sed "s/^/$(basename "$f" .out): /" || true
	done
	echo '```'
} >"$results"
cp "$results" "$BUILD_DIR/bench-results/latest.md"
log "results written to $results"

exit $failed
