/* dbcheck DB: runs PRAGMA integrity_check on a fleethub database (read
 * only) and prints what it says; exits 0 when it says "ok". Used by the
 * disk-fault test after the server stopped. Test code only. */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: dbcheck DB\n");
		return 2;
	}
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int ok = 0;
	if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "dbcheck: %s: %s\n", argv[1], db ? sqlite3_errmsg(db) : "no memory");
		sqlite3_close(db);
		return 1;
	}
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *line = (const char *)sqlite3_column_text(st, 0);
		printf("%s\n", line ? line : "");
		ok = line && strcmp(line, "ok") == 0;
	}
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "dbcheck: %s: %s\n", argv[1], sqlite3_errmsg(db));
		ok = 0;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return ok ? 0 : 1;
}
