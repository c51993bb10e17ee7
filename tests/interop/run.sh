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

# The test CAs and certificates (tests/interop/certs.sh).
"$here/certs.sh" "$certs"

export FLEETHUB_BIN
export FLEETHUB_TEST_CERT="$certs/server.pem" FLEETHUB_TEST_KEY="$certs/server.key"
export FLEETHUB_TEST_CA="$certs/ca.pem" FLEETHUB_TEST_CERTS="$certs"
export NODE_EXTRA_CA_CERTS="$certs/ca.pem"
export FLEETHUB_HOSTS="hub1.fleethub.test=127.0.0.4,hub2.fleethub.test=127.0.0.5,dps.fleethub.test=127.0.0.3,localhost=127.0.0.1"
export NODE_OPTIONS="--require $here/lib/resolve.js"
export FLEETHUB_TEST_TMP="$BUILD_DIR/interop-tmp"
rm -rf "$FLEETHUB_TEST_TMP"
mkdir -p "$FLEETHUB_TEST_TMP"
# FLEETHUB_TEST_STORE=postgresql: every server of the suite keeps its state
# in a database of its own on a PostgreSQL cluster started here (scripts/pg-dev.sh).
if [ "${FLEETHUB_TEST_STORE:-sqlite}" = postgresql ]; then
	pgdir="$FLEETHUB_TEST_TMP/pg"
	FLEETHUB_TEST_PG=$("$here/../../scripts/pg-dev.sh" start "$pgdir" 55432)
	export FLEETHUB_TEST_PG FLEETHUB_TEST_PGDIR="$pgdir"
	trap '"$here/../../scripts/pg-dev.sh" stop "$pgdir"' EXIT
fi
cd "$here"
# Arguments, when given, pick test files (e.g. dps.test.js).
if [ $# -gt 0 ]; then set -- "$@"; else set -- ./*.test.js ../hostile/*.test.js; fi
# A test that hangs fails after 5 minutes, and a test file whose client
# leaves a handle open (a close that failed) still exits when its tests are
# done: a stuck test must fail the run, never stall it.
node --test --test-concurrency=1 --test-timeout=300000 --test-force-exit --test-reporter=spec ${FLEETHUB_TEST_NAME:+--test-name-pattern="$FLEETHUB_TEST_NAME"} "$@"
