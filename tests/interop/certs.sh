#!/usr/bin/env bash
# Creates the test CAs and certificates in DIR (once; kept while they
# still name everything the tests use). Shared by the interoperability
# suite (run.sh) and the soak (tests/soak/run.sh).
set -euo pipefail
certs="${1:?usage: certs.sh DIR}"
mkdir -p "$certs"

# A test CA and a server certificate for every name and address the tests
# use (the servers are started with tls_cert/tls_key pointing at it; the
# walkthrough test uses the server's own development CA instead).
if ! grep -qs dps.fleethub.test "$certs/ext.cnf" || [ ! -f "$certs/rogue.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=fleethub interop test CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		2>/dev/null
	ips=""
	for i in $(seq 1 20); do ips="$ips,IP:127.0.0.$i"; done
	printf 'subjectAltName=DNS:hub1.fleethub.test,DNS:hub2.fleethub.test,DNS:dps.fleethub.test,DNS:localhost%s\nextendedKeyUsage=serverAuth\n' \
		"$ips" >"$certs/ext.cnf"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
		-keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
	openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
		-CAcreateserial -days 30 -extfile "$certs/ext.cnf" -out "$certs/server.pem" 2>/dev/null
	# The custom allocation webhooks of the tests have a CA of their own
	# (given to the DPS as webhook_ca); "rogue" is self-signed, trusted by
	# nobody (the TLS-failure case).
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=fleethub webhook test CA" -keyout "$certs/webhook-ca.key" \
		-out "$certs/webhook-ca.pem" -addext basicConstraints=critical,CA:TRUE \
		-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$certs/webhook-ext.cnf"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
		-keyout "$certs/webhook.key" -out "$certs/webhook.csr" 2>/dev/null
	openssl x509 -req -in "$certs/webhook.csr" -CA "$certs/webhook-ca.pem" \
		-CAkey "$certs/webhook-ca.key" -CAcreateserial -days 30 \
		-extfile "$certs/webhook-ext.cnf" -out "$certs/webhook.pem" 2>/dev/null
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$certs/rogue.key" -out "$certs/rogue.pem" 2>/dev/null
	cat "$certs/webhook-ca.pem" "$certs/ca.pem" >"$certs/dps-trust.pem"
fi
