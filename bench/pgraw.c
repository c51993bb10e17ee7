/* pgraw: the reference for the PostgreSQL bench lines (bench/README.md,
 * decisions.md 24). PostgreSQL's own rate for the twin upserts fleethub
 * makes, with nothing of fleethub around them: one connection in libpq's
 * pipeline mode, the same UPDATE statement the store runs for a reported
 * patch (fh_merge_patch of reported and metadata, version bumps) on the
 * same ~--size B patches, BATCH statements per sync (one implicit
 * transaction, committed with synchronous_commit on), two syncs in flight.
 *
 *   pgraw CONNINFO [--devices N] [--duration S] [--size B]
 *
 * Prints one line: "pg-raw ops=<n> ops_per_s=<r> seconds=<s>". The
 * database must hold fleethub's schema (a fleethub started on it once);
 * the rows it writes are its own (hub "pgraw.bench"). */
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 100
#define HUB "pgraw.bench"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(PGconn *c, const char *what)
{
	fprintf(stderr, "pgraw: %s: %s", what, c ? PQerrorMessage(c) : "no connection\n");
	exit(1);
}

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		die(c, sql);
	PQclear(r);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pgraw CONNINFO [--devices N] [--duration S] [--size B]\n");
		return 2;
	}
	unsigned devices = 1000, duration = 10, size = 100;
	for (int i = 2; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--devices") == 0)
			devices = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--duration") == 0)
			duration = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--size") == 0)
			size = (unsigned)atoi(argv[i + 1]);
	}
	PGconn *c = PQconnectdb(argv[1]);
	if (PQstatus(c) != CONNECTION_OK)
		die(c, "connect");
	exec_ok(c, "SET synchronous_commit = on");
	exec_ok(c, "DELETE FROM twins WHERE hub = '" HUB "'");
	char fill[512];
	snprintf(fill, sizeof fill,
		 "INSERT INTO twins SELECT '" HUB "', 'd' || g, '{}', '{}', '{}',"
		 " '{\"tags\":{},\"desired\":{},\"reported\":{}}', 1, 1, 1"
		 " FROM generate_series(0, %u) g",
		 devices - 1);
	exec_ok(c, fill);
	PGresult *p = PQprepare(c, "up",
				"UPDATE twins SET reported = fh_merge_patch(reported, $3),"
				" meta = fh_merge_patch(fh_merge_patch(meta, $4), $5),"
				" version = version + 1, reported_version = reported_version + 1"
				" WHERE hub = $1 AND id = $2 RETURNING reported_version, reported::text",
				5, NULL);
	if (PQresultStatus(p) != PGRES_COMMAND_OK)
		die(c, "prepare");
	PQclear(p);

	/* The patch a loadgen device sends (~size B), and the two metadata
	 * merge patches the hub builds for it. */
	char patch[4096], clear[256], set[512];
	if (size < 40 || size >= sizeof patch)
		size = 100;
	int n = snprintf(patch, sizeof patch, "{\"seq\":\"0000000000\",\"p0\":\"");
	while ((unsigned)n < size - 2)
		patch[n++] = 'x';
	patch[n++] = '"';
	patch[n++] = '}';
	patch[n] = '\0';
	snprintf(clear, sizeof clear, "{\"reported\":{\"seq\":null,\"p0\":null}}");
	snprintf(set, sizeof set,
		 "{\"reported\":{\"$lastUpdated\":\"2026-12-07T00:00:00.000Z\",\"seq\":"
		 "{\"$lastUpdated\":\"2026-12-07T00:00:00.000Z\"},\"p0\":{\"$lastUpdated\":"
		 "\"2026-12-07T00:00:00.000Z\"}}}");

	if (!PQenterPipelineMode(c))
		die(c, "pipeline mode");
	unsigned long done = 0, sent = 0, next = 0;
	int syncs = 0;
	double t0 = now_s(), end = t0 + duration;
	char id[32];
	for (;;) {
		bool more = now_s() < end;
		while (more && syncs < 2) {
			for (int k = 0; k < BATCH; k++) {
				snprintf(id, sizeof id, "d%lu", next++ % devices);
				const char *v[5] = {HUB, id, patch, clear, set};
				if (!PQsendQueryPrepared(c, "up", 5, v, NULL, NULL, 0))
					die(c, "send");
				sent++;
			}
			if (!PQpipelineSync(c))
				die(c, "sync");
			syncs++;
		}
		if (!more && syncs == 0)
			break;
		/* One sync's results: BATCH statements, then its PGRES_PIPELINE_SYNC
		 * (libpq returns NULL between each statement's results). */
		for (;;) {
			PGresult *r = PQgetResult(c);
			if (!r)
				continue;
			ExecStatusType st = PQresultStatus(r);
			PQclear(r);
			if (st == PGRES_PIPELINE_SYNC) {
				syncs--;
				break;
			}
			if (st != PGRES_TUPLES_OK)
				die(c, "update");
			if (now_s() <= end)
				done++;
		}
	}
	double secs = now_s() - t0 < duration ? now_s() - t0 : duration;
	PQexitPipelineMode(c);
	PGresult *r = PQexec(c, "DELETE FROM twins WHERE hub = '" HUB "'");
	PQclear(r);
	printf("pg-raw ops=%lu ops_per_s=%.0f seconds=%.1f sent=%lu\n", done, done / secs, secs,
	       sent);
	PQfinish(c);
	return 0;
}
