#!/usr/bin/env bash
# bench/run.sh quick: the benchmark harness (`make bench-quick`).
#
# Starts a fresh fleethub (embedded SQLite on the normal disk, a generated CA
# and server certificate, one hub on 127.0.0.10) and Mosquitto (the Debian
# package, installed when missing, TLS with the same certificate on
# 127.0.0.11), runs build/loadgen against both, and prints one line per
# scenario:
#   BENCH <name> value=<v> unit=<u> reference=<r> ratio=<v/r> target=<t> ok|miss
# A target is "<minimum value>[,<minimum ratio>x]", or for lower-is-better
# measures "<=<maximum>[,<=<maximum ratio>x]". Only 127.0.0.10 and
# 127.0.0.11 are used (the interop tests use 127.0.0.1-5). Every process this
# script starts is stopped by pid when it exits. The numbers of a quick run
# are smoke values: short runs on a machine shared with other work.
#
# Exit status: 0 when every run finished with no more errors than allowed
# (misses do not count), 1 otherwise, 2 when set-up failed.
set -euo pipefail

mode="${1:-quick}"
case "$mode" in
quick)
	DEVICES=100 DURATION=5 INFLIGHT=4 SIZE=100
	CONN_DEVICES=2000 CONN_RATE=3000 CONN_HOLD=3
	;;
*)
	echo "usage: $0 quick" >&2
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
MQTT_PORT=8883
HTTPS_PORT=443

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

# ---- certificates: a CA, and one server certificate for both servers ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=fleethub bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:localhost,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
	"$HUB" "$HUB_IP" "$MOSQ_IP" >"$work/ext.cnf"
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
	for i in $(seq 1 100); do
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

# ---- fleethub -------------------------------------------------------------
OWNER_KEY="$(openssl rand -base64 32)"
GROUP_KEY="$(openssl rand -base64 32)"
for p in $MQTT_PORT $HTTPS_PORT; do
	port_free $HUB_IP $p || { log "$HUB_IP:$p is already in use"; exit 2; }
done
cat >"$work/fleethub.ini" <<EOF
[server]
data_dir = $work/fleethub-data
mqtt_listen = $HUB_IP:$MQTT_PORT
https_listen = $HUB_IP:$HTTPS_PORT
tls_cert = $work/server.pem
tls_key = $work/server.key

[hub $HUB]
owner_key = $OWNER_KEY
EOF
"$FLEETHUB" serve --config "$work/fleethub.ini" >"$work/fleethub.out" 2>"$work/fleethub.log" &
fh_pid=$!
pids+=("$fh_pid")
wait_listening $HUB_IP $MQTT_PORT "$fh_pid" || {
	log "fleethub did not start; its log:"
	cat "$work/fleethub.log" >&2
	exit 2
}
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
log "$("$MOSQUITTO" -h 2>/dev/null | head -1) pid $mq_pid on $MOSQ_IP"

# ---- runs -------------------------------------------------------------------
failed=0
HUB_ARGS=(--target $HUB_IP:$MQTT_PORT --hub $HUB --ca "$work/ca.pem" --key "$GROUP_KEY")
MOSQ_ARGS=(--target $MOSQ_IP:$MQTT_PORT --tls-name $MOSQ_IP --ca "$work/ca.pem" --no-auth)
LOAD_ARGS=(--devices $DEVICES --duration $DURATION --inflight $INFLIGHT --size $SIZE)

# lg NAME ARGS...: runs loadgen, keeps its line in $work/NAME.out.
lg() {
	local name="$1"
	shift
	if ! "$LOADGEN" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
		failed=1
		log "$name: loadgen failed:"
		sed 's/^/  /' "$work/$name.err" >&2
	fi
	cat "$work/$name.out" >&2
}

# field NAME KEY: a key=value field of a run's line ("" when absent).
field() {
	sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$work/$1.out" | head -1
}

# connections NAME PID ARGS...: ramps up, samples the server's RSS while the
# sessions are held, and records KiB per connection in $work/NAME.rss.
connections() {
	local name="$1" pid="$2"
	shift 2
	local before after i
	before=$(rss_kib "$pid")
	"$LOADGEN" connections "$@" --devices $CONN_DEVICES --rate $CONN_RATE \
		--duration $CONN_HOLD >"$work/$name.out" 2>"$work/$name.err" &
	bg=$!
	after=""
	for i in $(seq 1 300); do
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

log "creating $CONN_DEVICES devices"
if ! "$LOADGEN" --create-devices --devices $CONN_DEVICES --rest $HUB_IP:$HTTPS_PORT \
	--owner-key "$OWNER_KEY" --hub $HUB --key "$GROUP_KEY" --ca "$work/ca.pem" \
	2>"$work/create.err"; then
	sed 's/^/  /' "$work/create.err" >&2
	exit 2
fi
cat "$work/create.err" >&2

lg twin-reported twin-reported "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}"
lg twin-get twin-get "${HUB_ARGS[@]}" "${LOAD_ARGS[@]}"
lg mosquitto-publish mqtt-publish "${MOSQ_ARGS[@]}" "${LOAD_ARGS[@]}"
connections connections "$fh_pid" "${HUB_ARGS[@]}"
connections mosquitto-connections "$mq_pid" "${MOSQ_ARGS[@]}"

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

bench_line twin-reported "$(field twin-reported ops_per_s)" ops/s \
	"$(field mosquitto-publish ops_per_s)" "25000,0.8x"
bench_line twin-get "$(field twin-get ops_per_s)" ops/s - 50000
bench_line connections-rss "$(cat "$work/connections.rss")" KiB/conn \
	"$(cat "$work/mosquitto-connections.rss")" "<=24,<=1.5x"
bench_line connections-rate "$(field connections ops_per_s)" conn/s - 2000

exit $failed
