/* Tests for the admin CLI's command-line parsing (src/cli/cli.c:
 * cli_parse_args). The REST side is exercised by the integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cli/cli.h"

/* Parses a NULL-terminated word list (program name first). */
static int parse(struct cli_args *a, char *err, size_t errlen, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;
	va_start(ap, errlen);
	char *w;
	while ((w = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = w;
	va_end(ap);
	argv[argc] = NULL;
	return cli_parse_args(argc, argv, a, err, errlen);
}

static void test_commands(void **state)
{
	struct cli_args a;
	char err[256];
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "create", "d1", NULL), 0);
	assert_int_equal(a.cmd, CLI_CMD_DEVICE_CREATE);
	assert_string_equal(a.id, "d1");
	assert_string_equal(a.data_dir, "./fleethub-data");
	assert_false(a.disabled);

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "--data-dir", "/d", "device",
	                       "create", "--edge", "d2", "--primary-key=PK", "--disabled", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_DEVICE_CREATE);
	assert_string_equal(a.id, "d2");
	assert_string_equal(a.data_dir, "/d");
	assert_string_equal(a.primary_key, "PK");
	assert_true(a.disabled);
	assert_true(a.edge);

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "list", "--hub", "h",
	                       "--server", "127.0.0.1:8443", "--ca", "/ca.pem", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_DEVICE_LIST);
	assert_string_equal(a.hub, "h");
	assert_string_equal(a.server, "127.0.0.1:8443");
	assert_string_equal(a.ca, "/ca.pem");

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "update", "x", "--status",
	                       "disabled", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_DEVICE_UPDATE);
	assert_string_equal(a.status, "disabled");

	/* The query is text, sent in a body: any characters, one argument. */
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "query",
	                       "SELECT * FROM devices WHERE tags.a = 'x/y z'", "--table", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_QUERY);
	assert_string_equal(a.id, "SELECT * FROM devices WHERE tags.a = 'x/y z'");
	assert_true(a.table);
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "query", "", NULL), -1);
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "list", "--table", NULL),
	                 -1);
	assert_non_null(strstr(err, "--table does not apply"));

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "twin", "update", "x", "--desired",
	                       "{\"a\":1}", "--etag", "AAAA", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_TWIN_UPDATE);
	assert_string_equal(a.desired, "{\"a\":1}");
	assert_string_equal(a.etag, "AAAA");

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "hub", "connection-string",
	                       "--connection-string",
	                       "HostName=h;SharedAccessKeyName=n;"
	                       "SharedAccessKey=k",
	                       NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_HUB_CONNECTION_STRING);
	assert_non_null(a.connection_string);

	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "help", NULL), 0);
	assert_int_equal(a.cmd, CLI_CMD_HELP);
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "--help", NULL), 0);
	assert_int_equal(a.cmd, CLI_CMD_HELP);

	/* X.509: CA certificates of a hub or (--dps) of the DPS; enrollments by
	 * certificate file or CA name. */
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "ca", "upload", "root",
	                       "--certificate", "root.pem", "--dps", NULL),
	                 0);
	assert_int_equal(a.cmd, CLI_CMD_CA_UPLOAD);
	assert_true(a.dps);
	assert_string_equal(a.certificate, "root.pem");
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "ca", "list", NULL), 0);
	assert_false(a.dps);
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "enrollment-group", "create", "g",
	                       "--ca-ref", "root", "--secondary-ca-ref", "old-root", NULL),
	                 0);
	assert_string_equal(a.ca_ref, "root");
	assert_string_equal(a.secondary_ca_ref, "old-root");
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "enrollment", "update", "r",
	                       "--certificate", "d.pem", "--secondary-certificate", "d2.pem", NULL),
	                 0);
	assert_string_equal(a.certificate, "d.pem");
	assert_string_equal(a.secondary_certificate, "d2.pem");
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "device", "list", "--dps", NULL),
	                 -1);
	assert_non_null(strstr(err, "--dps does not apply"));
	assert_int_equal(parse(&a, err, sizeof err, "fleethub", "ca", "upload", "x", "--ca-ref",
	                       "y", NULL),
	                 -1);
	assert_non_null(strstr(err, "--ca-ref does not apply"));

	/* "--" lets an ID start with a dash. */
	assert_int_equal(
	    parse(&a, err, sizeof err, "fleethub", "device", "show", "--", "-odd", NULL), 0);
	assert_string_equal(a.id, "-odd");
}

static void expect_usage_error(const char *want, char *w1, char *w2, char *w3, char *w4, char *w5)
{
	struct cli_args a;
	char err[256] = "";
	char *argv[] = {"fleethub", w1, w2, w3, w4, w5, NULL};
	int argc = 1;
	while (argc < 6 && argv[argc])
		argc++;
	int rc = cli_parse_args(argc, argv, &a, err, sizeof err);
	if (rc != -1 || !strstr(err, want)) {
		print_error("got rc %d err \"%s\", wanted \"%s\"\n", rc, err, want);
		fail();
	}
}

static void test_usage_errors(void **state)
{
	expect_usage_error("no command", NULL, NULL, NULL, NULL, NULL);
	expect_usage_error("unknown command \"device frob\"", "device", "frob", NULL, NULL, NULL);
	expect_usage_error("unknown command \"nope\"", "nope", NULL, NULL, NULL, NULL);
	expect_usage_error("missing device ID", "device", "show", NULL, NULL, NULL);
	expect_usage_error("unexpected argument", "device", "show", "a", "b", NULL);
	expect_usage_error("unexpected argument", "device", "list", "a", NULL, NULL);
	expect_usage_error("--status is required", "device", "update", "a", NULL, NULL);
	expect_usage_error("enabled or disabled", "device", "update", "a", "--status", "on");
	expect_usage_error("--edge does not apply", "device", "show", "a", "--edge", NULL);
	expect_usage_error("unknown option --frob", "device", "list", "--frob", NULL, NULL);
	expect_usage_error("unknown option -x", "device", "list", "-x", NULL, NULL);
	expect_usage_error("--hub needs a value", "device", "list", "--hub", NULL, NULL);
	expect_usage_error("--edge takes no value", "device", "create", "a", "--edge=1", NULL);
	expect_usage_error("--tags and/or --desired", "twin", "update", "a", NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_usage_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
