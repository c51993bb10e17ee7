#!/usr/bin/env bash
# The soak (issue 5, item 8): tests/soak/soak.js against the real binary on
# its own loopback address (127.0.0.20, so it never collides with the test
# suite on 127.0.0.1-5). Called by `make soak` with FLEETHUB_BIN and
# BUILD_DIR set; SOAK_SECONDS (default 1800) and SOAK_WARMUP_SECONDS
# (default 120, or a tenth of a shorter run) bound it. Not part of `make test`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${FLEETHUB_BIN:?set FLEETHUB_BIN to the fleethub binary}"
: "${BUILD_DIR:=$here/../../build}"
certs="$BUILD_DIR/soak-certs"
"$here/../interop/certs.sh" "$certs"

export FLEETHUB_BIN
export FLEETHUB_TEST_CERT="$certs/server.pem" FLEETHUB_TEST_KEY="$certs/server.key"
export FLEETHUB_TEST_CA="$certs/ca.pem" FLEETHUB_TEST_CERTS="$certs"
export NODE_EXTRA_CA_CERTS="$certs/ca.pem"
export FLEETHUB_HOSTS="hub1.fleethub.test=127.0.0.20,dps.fleethub.test=127.0.0.20"
export NODE_OPTIONS="--require $here/../interop/lib/resolve.js"
export FLEETHUB_TEST_TMP="$BUILD_DIR/soak-tmp"
export SOAK_OUT="${SOAK_OUT:-$BUILD_DIR/soak}"
rm -rf "$FLEETHUB_TEST_TMP"
mkdir -p "$FLEETHUB_TEST_TMP" "$SOAK_OUT"
cd "$here/../interop"
exec node "$here/soak.js"
