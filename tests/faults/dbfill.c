/* dbfill DB SCOPE N GROUP: inserts N registration states of enrollment
 * group GROUP into the DPS SCOPE of a stopped fleethub's database, in one
 * transaction, so a test can have a large registrations table in seconds.
 * Test code only. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: dbfill DB SCOPE N GROUP\n");
		return 2;
	}
	long n = strtol(argv[3], NULL, 10);
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "INSERT INTO registrations (scope, id, json) VALUES (?1, ?2, ?3)",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "dbfill: %s: %s\n", argv[1], db ? sqlite3_errmsg(db) : "no memory");
		sqlite3_close(db);
		return 1;
	}
	for (long i = 0; i < n; i++) {
		char id[64], json[512];
		snprintf(id, sizeof id, "filled-%08ld", i);
		snprintf(json, sizeof json,
			 "{\"registrationId\":\"%s\",\"status\":\"assigned\",\"assignedHub\":"
			 "\"localhost\",\"deviceId\":\"%s\",\"_group\":\"%s\","
			 "\"createdDateTimeUtc\":\"2026-01-01T00:00:00.000Z\"}",
			 id, id, argv[4]);
		sqlite3_bind_text(st, 1, argv[2], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, json, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_DONE) {
			fprintf(stderr, "dbfill: %s\n", sqlite3_errmsg(db));
			return 1;
		}
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : 1;
}
