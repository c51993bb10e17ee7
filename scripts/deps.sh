#!/usr/bin/env bash
# Installs what fleethub needs on Debian 12 when it is missing. Quiet and
# fast when everything is already there.
#   scripts/deps.sh run    what building and running the server needs
#                          (Debian packages only: works offline once they are
#                          installed; `make run` uses this)
#   scripts/deps.sh        everything, for the tests too: compilers and
#                          libraries the tests use, Node.js and the npm test
#                          clients from the committed lockfile (`make test`)
set -euo pipefail
cd "$(dirname "$0")/.."

run_pkgs=(build-essential pkg-config libuv1-dev libssl-dev libhttp-parser-dev
	  libcurl4-openssl-dev libsqlite3-dev libjansson-dev libinih-dev libpq-dev
	  libqpid-proton11-dev openssl)
test_pkgs=(clang libcmocka-dev postgresql-15 nodejs npm swtpm tpm2-tools)
pkgs=("${run_pkgs[@]}")
[ "${1:-all}" = run ] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm may come from elsewhere than Debian's packages; only ask apt for
# them when the commands are absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
	missing=("${missing[@]/nodejs/}"); missing=("${missing[@]/npm/}")
fi
want=()
for p in "${missing[@]}"; do [ -n "$p" ] && want+=("$p"); done
if [ ${#want[@]} -gt 0 ]; then
	echo "deps: installing ${want[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: need root to install Debian packages: ${want[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${want[@]}" >/dev/null
fi

[ "${1:-all}" = run ] && exit 0
if [ -f tests/interop/package-lock.json ]; then
	stamp=tests/interop/node_modules/.fleethub-lock
	if [ ! -f "$stamp" ] || ! cmp -s tests/interop/package-lock.json "$stamp"; then
		echo "deps: installing npm test clients"
		# --ignore-scripts: azure-iot-security-tpm pulls in ffi-napi, whose
		# native build fails on Node 20 and which only its Windows TPM path
		# loads; every package the tests use is plain JavaScript.
		(cd tests/interop && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
		cp tests/interop/package-lock.json "$stamp"
	fi
fi
