#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster (Debian's postgresql-15) for trying
# several nodes (README), the tests and the bench: run as an unprivileged
# user (postgres when started as root), listening on a unix socket in DIR
# only, fsync on. DIR is emptied first.
#   pg-dev.sh start DIR PORT   prints the libpq connection string of its
#                              superuser fleethub (no database: createdb one)
#   pg-dev.sh stop DIR
#   pg-dev.sh restart DIR      (fault tests: a fast shutdown, then a start)
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
cmd=$1 dir=$2
as() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
	port=$3
	rm -rf "$dir"
	mkdir -p "$dir"
	[ "$(id -u)" -ne 0 ] || chown postgres "$dir"
	as "$bin/initdb" -D "$dir/data" -A trust -U fleethub --no-sync >"$dir/initdb.log" 2>&1
	echo "$port" >"$dir/port"
	as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
		-o "-k $dir -p $port -c listen_addresses= -c max_connections=400" start >/dev/null
	echo "host=$dir port=$port user=fleethub"
	;;
stop)
	as "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	;;
restart)
	port=$(cat "$dir/port")
	as "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
		-o "-k $dir -p $port -c listen_addresses= -c max_connections=400" start >/dev/null
	;;
*)
	echo "usage: pg-dev.sh start DIR PORT | stop DIR | restart DIR" >&2
	exit 2
	;;
esac
