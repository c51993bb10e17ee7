#!/usr/bin/env bash
# Runs the interoperability suite: the official Azure IoT Node SDKs against
# the real fleethub binary. Called by `make interop` with FLEETHUB_BIN and
# BUILD_DIR set. Every server listens on 127.0.0.x only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${FLEETHUB_BIN:?set FLEETHUB_BIN to the fleethub binary}"
: "${BUILD_DIR:=$here/../../build}"
certs="$BUILD_DIR/interop-certs"
mkdir -p "$certs"

# A test CA and a server certificate for every name and address the tests
# use (the servers are started with tls_cert/tls_key pointing at it; the
# walkthrough test uses the server's own development CA instead).
if [ ! -f "$certs/server.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=fleethub interop test CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		2>/dev/null
	ips=""
	for i in $(seq 1 20); do ips="$ips,IP:127.0.0.$i"; done
	printf 'subjectAltName=DNS:hub1.fleethub.test,DNS:hub2.fleethub.test,DNS:localhost%s\nextendedKeyUsage=serverAuth\n' \
		"$ips" >"$certs/ext.cnf"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
		-keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
	openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
		-CAcreateserial -days 30 -extfile "$certs/ext.cnf" -out "$certs/server.pem" 2>/dev/null
fi

export FLEETHUB_BIN
export FLEETHUB_TEST_CERT="$certs/server.pem" FLEETHUB_TEST_KEY="$certs/server.key"
export FLEETHUB_TEST_CA="$certs/ca.pem"
export NODE_EXTRA_CA_CERTS="$certs/ca.pem"
export FLEETHUB_HOSTS="hub1.fleethub.test=127.0.0.4,hub2.fleethub.test=127.0.0.5"
export NODE_OPTIONS="--require $here/lib/resolve.js"
export FLEETHUB_TEST_TMP="$BUILD_DIR/interop-tmp"
rm -rf "$FLEETHUB_TEST_TMP"
mkdir -p "$FLEETHUB_TEST_TMP"
cd "$here"
exec node --test --test-concurrency=1 --test-reporter=spec ./*.test.js
