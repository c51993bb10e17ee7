/* Command-line parsing for the admin CLI: a table of commands (words,
 * whether they take a device ID, which options apply, usage line) and a
 * table of options. Options may come anywhere among the command words;
 * "--name=value" and "--" work. Pure: no environment, no I/O except
 * cli_usage. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/enrollment.h"
#include "core/registry.h"

#define DEFAULT_DATA_DIR "./fleethub-data"

/* ---- command line ---- */

enum opt_bit {
	OPT_PRIMARY_KEY = 1 << 0,
	OPT_SECONDARY_KEY = 1 << 1,
	OPT_DISABLED = 1 << 2,
	OPT_EDGE = 1 << 3,
	OPT_STATUS = 1 << 4,
	OPT_TAGS = 1 << 5,
	OPT_DESIRED = 1 << 6,
	OPT_ETAG = 1 << 7,
	OPT_COMMON = 1 << 8, /* --data-dir --hub --connection-string --server --ca */
	OPT_ENROLL = 1 << 9, /* --policy --hubs --webhook --initial-twin --reprovision */
	OPT_DEVICE_ID = 1 << 10,
	OPT_GROUP = 1 << 11,
	OPT_POLICY_NAME = 1 << 12,
	OPT_TABLE = 1 << 13,
	OPT_X509 = 1 << 14, /* --x509-thumbprint --x509-secondary-thumbprint */
	OPT_CERTIFICATE = 1 << 15,
	OPT_CERT = 1 << 16, /* --issuer --days */
	OPT_DPS = 1 << 17,
	OPT_X509_ENROLL = 1 << 18, /* --secondary-certificate --ca-ref --secondary-ca-ref */
	OPT_TPM = 1 << 19,         /* --tpm-ek --tpm-srk */
	OPT_METHOD = 1 << 20,      /* --payload --timeout --connect-timeout */
	OPT_TAIL = 1 << 21,        /* --from --partition --limit --wait */
	OPT_C2D = 1 << 22,         /* --body --prop --ack --ttl --message-id */
};

#define ENROLL_OPTS                                                                                \
	(OPT_PRIMARY_KEY | OPT_SECONDARY_KEY | OPT_DISABLED | OPT_EDGE | OPT_ENROLL |             \
	 OPT_CERTIFICATE | OPT_X509_ENROLL)
#define ENROLL_USAGE                                                                               \
	"[--primary-key K] [--secondary-key K]\n"                                                  \
	"      [--certificate FILE [--secondary-certificate FILE] | --ca-ref NAME [--secondary-ca-ref NAME]]\n" \
	"      [--policy hashed|static|geoLatency|custom] [--hubs HUB,...] [--webhook URL]\n"      \
	"      [--initial-twin JSON] [--reprovision migrate|reset|never] [--disabled] [--edge]"
/* update: only what is given changes */
#define UPDATE_OPTS                                                                                \
	(OPT_PRIMARY_KEY | OPT_SECONDARY_KEY | OPT_STATUS | OPT_ENROLL | OPT_CERTIFICATE |          \
	 OPT_X509_ENROLL)
#define UPDATE_USAGE                                                                               \
	"[--primary-key K] [--secondary-key K]\n"                                                  \
	"      [--certificate FILE [--secondary-certificate FILE] | --ca-ref NAME [--secondary-ca-ref NAME]]\n" \
	"      [--policy hashed|static|geoLatency|custom] [--hubs HUB,...] [--webhook URL]\n"      \
	"      [--initial-twin JSON] [--reprovision migrate|reset|never] [--status enabled|disabled]"

struct command {
	const char *group, *verb; /* verb NULL: one-word command */
	enum cli_command cmd;
	bool takes_id;
	unsigned opts;
	const char *usage;
};

static const struct command commands[] = {
    {"device", "create", CLI_CMD_DEVICE_CREATE, true,
     OPT_PRIMARY_KEY | OPT_SECONDARY_KEY | OPT_DISABLED | OPT_EDGE | OPT_X509,
     "device create ID [--primary-key K] [--secondary-key K] [--disabled] [--edge]\n"
     "      [--x509-thumbprint T [--x509-secondary-thumbprint T] | --x509-ca]"},
    {"device", "show", CLI_CMD_DEVICE_SHOW, true, 0, "device show ID"},
    {"device", "list", CLI_CMD_DEVICE_LIST, false, 0, "device list"},
    {"device", "update", CLI_CMD_DEVICE_UPDATE, true, OPT_STATUS,
     "device update ID --status enabled|disabled"},
    {"device", "delete", CLI_CMD_DEVICE_DELETE, true, 0, "device delete ID"},
    {"device", "connection-string", CLI_CMD_DEVICE_CONNECTION_STRING, true, 0,
     "device connection-string ID"},
    {"twin", "show", CLI_CMD_TWIN_SHOW, true, 0, "twin show ID"},
    {"twin", "update", CLI_CMD_TWIN_UPDATE, true, OPT_TAGS | OPT_DESIRED | OPT_ETAG,
     "twin update ID [--tags JSON] [--desired JSON] [--etag ETAG]"},
    {"hub", "connection-string", CLI_CMD_HUB_CONNECTION_STRING, false, OPT_POLICY_NAME,
     "hub connection-string [--hub NAME] [--policy-name NAME]"},
    {"enrollment", "create", CLI_CMD_ENROLLMENT_CREATE, true,
     ENROLL_OPTS | OPT_DEVICE_ID | OPT_TPM,
     "enrollment create REGISTRATION_ID [--device-id ID] [--tpm-ek B64 [--tpm-srk B64]]\n"
     "      " ENROLL_USAGE},
    {"enrollment", "update", CLI_CMD_ENROLLMENT_UPDATE, true,
     UPDATE_OPTS | OPT_DEVICE_ID | OPT_TPM,
     "enrollment update REGISTRATION_ID [--device-id ID] [--tpm-ek B64 [--tpm-srk B64]]\n"
     "      " UPDATE_USAGE},
    {"enrollment", "show", CLI_CMD_ENROLLMENT_SHOW, true, 0, "enrollment show REGISTRATION_ID"},
    {"enrollment", "list", CLI_CMD_ENROLLMENT_LIST, false, 0, "enrollment list"},
    {"enrollment", "delete", CLI_CMD_ENROLLMENT_DELETE, true, 0,
     "enrollment delete REGISTRATION_ID"},
    {"enrollment-group", "create", CLI_CMD_GROUP_CREATE, true, ENROLL_OPTS,
     "enrollment-group create GROUP_ID " ENROLL_USAGE},
    {"enrollment-group", "update", CLI_CMD_GROUP_UPDATE, true, UPDATE_OPTS,
     "enrollment-group update GROUP_ID " UPDATE_USAGE},
    {"enrollment-group", "show", CLI_CMD_GROUP_SHOW, true, 0, "enrollment-group show GROUP_ID"},
    {"enrollment-group", "list", CLI_CMD_GROUP_LIST, false, 0, "enrollment-group list"},
    {"enrollment-group", "delete", CLI_CMD_GROUP_DELETE, true, 0,
     "enrollment-group delete GROUP_ID"},
    {"registration", "show", CLI_CMD_REGISTRATION_SHOW, true, 0,
     "registration show REGISTRATION_ID"},
    {"registration", "list", CLI_CMD_REGISTRATION_LIST, false, OPT_GROUP,
     "registration list [--group GROUP_ID]"},
    {"registration", "delete", CLI_CMD_REGISTRATION_DELETE, true, 0,
     "registration delete REGISTRATION_ID"},
    {"dps", "connection-string", CLI_CMD_DPS_CONNECTION_STRING, false, OPT_POLICY_NAME,
     "dps connection-string [--policy-name NAME]"},
    {"webhook", "calls", CLI_CMD_WEBHOOK_CALLS, true, 0, "webhook calls REGISTRATION_ID"},
    {"query", NULL, CLI_CMD_QUERY, true, OPT_TABLE, "query \"SELECT ...\" [--table]"},
    {"nodes", NULL, CLI_CMD_NODES, false, 0, "nodes"},
    {"method", "invoke", CLI_CMD_METHOD_INVOKE, true, OPT_METHOD,
     "method invoke ID NAME [--payload JSON] [--timeout S] [--connect-timeout S]"},
    {"events", "tail", CLI_CMD_EVENTS_TAIL, false, OPT_TAIL | OPT_DEVICE_ID | OPT_GROUP,
     "events tail [--device ID] [--from start|end|TIME] [--partition N] [--group NAME]\n"
     "      [--limit N] [--wait S]"},
    {"c2d", "send", CLI_CMD_C2D_SEND, true, OPT_C2D,
     "c2d send ID --body TEXT [--prop K=V]... [--message-id ID] [--ack none|positive|negative|full]\n"
     "      [--ttl S]"},
    {"c2d", "purge", CLI_CMD_C2D_PURGE, true, 0, "c2d purge ID"},
    {"c2d", "feedback", CLI_CMD_C2D_FEEDBACK, false, 0, "c2d feedback"},
    {"hub", "stats", CLI_CMD_HUB_STATS, false, 0, "hub stats [--hub NAME]"},
    {"ca", "upload", CLI_CMD_CA_UPLOAD, true, OPT_CERTIFICATE | OPT_DPS,
     "ca upload NAME --certificate FILE [--dps]"},
    {"ca", "verify", CLI_CMD_CA_VERIFY, true, OPT_CERTIFICATE | OPT_DPS,
     "ca verify NAME --certificate FILE [--dps]"},
    {"ca", "show", CLI_CMD_CA_SHOW, true, OPT_DPS, "ca show NAME [--dps]"},
    {"ca", "list", CLI_CMD_CA_LIST, false, OPT_DPS, "ca list [--dps]"},
    {"ca", "delete", CLI_CMD_CA_DELETE, true, OPT_DPS, "ca delete NAME [--dps]"},
    {"cert", "root", CLI_CMD_CERT_ROOT, true, OPT_CERT, "cert root NAME [--days N]"},
    {"cert", "intermediate", CLI_CMD_CERT_INTERMEDIATE, true, OPT_CERT,
     "cert intermediate NAME --issuer CA [--days N]"},
    {"cert", "device", CLI_CMD_CERT_DEVICE, true, OPT_CERT,
     "cert device DEVICE_ID [--issuer CA] [--days N]"},
    {"cert", "verification", CLI_CMD_CERT_VERIFICATION, true, OPT_CERT,
     "cert verification CODE --issuer CA"},
    {"help", NULL, CLI_CMD_HELP, false, 0, "help"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

struct option {
	const char *name;
	unsigned bit;
	bool has_value;
	size_t offset; /* const char * or bool in struct cli_args */
};

#define ARG(field) offsetof(struct cli_args, field)

static const struct option options[] = {
    {"data-dir", OPT_COMMON, true, ARG(data_dir)},
    {"hub", OPT_COMMON, true, ARG(hub)},
    {"connection-string", OPT_COMMON, true, ARG(connection_string)},
    {"server", OPT_COMMON, true, ARG(server)},
    {"ca", OPT_COMMON, true, ARG(ca)},
    {"primary-key", OPT_PRIMARY_KEY, true, ARG(primary_key)},
    {"secondary-key", OPT_SECONDARY_KEY, true, ARG(secondary_key)},
    {"disabled", OPT_DISABLED, false, ARG(disabled)},
    {"edge", OPT_EDGE, false, ARG(edge)},
    {"x509-thumbprint", OPT_X509, true, ARG(x509_thumbprint)},
    {"x509-secondary-thumbprint", OPT_X509, true, ARG(x509_secondary)},
    {"x509-ca", OPT_X509, false, ARG(x509_ca)},
    {"status", OPT_STATUS, true, ARG(status)},
    {"tags", OPT_TAGS, true, ARG(tags)},
    {"desired", OPT_DESIRED, true, ARG(desired)},
    {"etag", OPT_ETAG, true, ARG(etag)},
    {"policy", OPT_ENROLL, true, ARG(policy)},
    {"hubs", OPT_ENROLL, true, ARG(hubs)},
    {"webhook", OPT_ENROLL, true, ARG(webhook)},
    {"initial-twin", OPT_ENROLL, true, ARG(initial_twin)},
    {"reprovision", OPT_ENROLL, true, ARG(reprovision)},
    {"device-id", OPT_DEVICE_ID, true, ARG(device_id)},
    {"device", OPT_DEVICE_ID, true, ARG(device_id)}, /* events tail --device ID */
    {"group", OPT_GROUP, true, ARG(group)},
    {"policy-name", OPT_POLICY_NAME, true, ARG(policy_name)},
    {"table", OPT_TABLE, false, ARG(table)},
    {"certificate", OPT_CERTIFICATE, true, ARG(certificate)},
    {"secondary-certificate", OPT_X509_ENROLL, true, ARG(secondary_certificate)},
    {"ca-ref", OPT_X509_ENROLL, true, ARG(ca_ref)},
    {"secondary-ca-ref", OPT_X509_ENROLL, true, ARG(secondary_ca_ref)},
    {"dps", OPT_DPS, false, ARG(dps)},
    {"tpm-ek", OPT_TPM, true, ARG(tpm_ek)},
    {"tpm-srk", OPT_TPM, true, ARG(tpm_srk)},
    {"issuer", OPT_CERT, true, ARG(issuer)},
    {"days", OPT_CERT, true, ARG(days)},
    {"payload", OPT_METHOD, true, ARG(payload)},
    {"timeout", OPT_METHOD, true, ARG(timeout)},
    {"connect-timeout", OPT_METHOD, true, ARG(connect_timeout)},
    {"from", OPT_TAIL, true, ARG(from)},
    {"partition", OPT_TAIL, true, ARG(partition)},
    {"limit", OPT_TAIL, true, ARG(limit)},
    {"wait", OPT_TAIL, true, ARG(wait)},
    {"body", OPT_C2D, true, ARG(body)},
    {"prop", OPT_C2D, true, 0}, /* repeated: out->props */
    {"ack", OPT_C2D, true, ARG(ack)},
    {"ttl", OPT_C2D, true, ARG(ttl)},
    {"message-id", OPT_C2D, true, ARG(message_id)},
};

#define NOPTIONS (sizeof options / sizeof options[0])

/* What the command's ID argument is, from its usage line, and its rule. */
static const char *id_name(const struct command *c)
{
	if (c->cmd == CLI_CMD_QUERY)
		return "query";
	if (c->cmd >= CLI_CMD_CERT_ROOT && c->cmd <= CLI_CMD_CERT_VERIFICATION)
		return "file name";
	if (strstr(c->usage, " GROUP_ID"))
		return "group ID";
	if (strstr(c->usage, " REGISTRATION_ID"))
		return "registration ID";
	return "device ID";
}

/* NULL when id is valid for c, else what is wrong with it. */
static const char *id_problem(const struct command *c, const char *id)
{
	if (c->cmd == CLI_CMD_QUERY) /* sent in a JSON body: the server checks it */
		return id[0] ? NULL : "empty";
	if (c->cmd >= CLI_CMD_CERT_ROOT && c->cmd <= CLI_CMD_CERT_VERIFICATION)
		return id[0] ? NULL : "empty"; /* a path; cli_cert checks its last part */
	if (strstr(c->usage, " GROUP_ID"))
		return enrollment_groupid_valid(id) ? NULL
						    : "1-128 characters: letters, digits and "
						      "-._: (not . or ..)";
	if (strstr(c->usage, " REGISTRATION_ID"))
		return enrollment_regid_valid(id) ? NULL
						  : "1-128 characters: lower-case letters, digits "
						    "and -._: (not . or ..)";
	return registry_id_valid(id) ? NULL
				     : "1-128 characters: letters, digits and -:.+%_#*?!(),=@$' "
				       "(not . or ..)";
}

void cli_usage(FILE *f)
{
	fprintf(f, "usage:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  fleethub %s\n", commands[i].usage);
	fprintf(f, "  fleethub serve [--config FILE] [--data-dir DIR]\n"
	           "  fleethub --version\n"
	           "\ncommon options:\n"
	           "  --data-dir DIR             where `fleethub serve` wrote cli.conf "
	           "(default " DEFAULT_DATA_DIR ")\n"
	           "  --hub NAME                 the hub to talk to (default: the first)\n"
	           "                             (enrollment, registration, dps and webhook\n"
	           "                             commands talk to the DPS)\n"
	           "  --connection-string CS     owner connection string (or "
	           "FLEETHUB_CONNECTION_STRING)\n"
	           "  --server HOST:PORT         dial this address; TLS and the token keep "
	           "the hub name\n"
	           "  --ca FILE                  CA certificate to trust\n"
	           "\nexit codes: 0 success, 1 refused by the server, 2 usage error, "
	           "3 server unreachable or TLS failure,\n"
	           "            4 no server configured (no cli.conf, or it names no such hub "
	           "or DPS)\n");
}

int cli_parse_args(int argc, char **argv, struct cli_args *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	const char *words[8];
	size_t nwords = 0;
	unsigned used = 0;
	bool seen[NOPTIONS] = {false}; /* which options were given */
	bool only_words = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (only_words || a[0] != '-' || a[1] == '\0') {
			if (nwords == sizeof words / sizeof words[0]) {
				snprintf(err, errlen, "too many arguments");
				return -1;
			}
			words[nwords++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_words = true;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			out->cmd = CLI_CMD_HELP;
			return 0;
		}
		if (a[1] != '-') {
			snprintf(err, errlen, "unknown option %s", a);
			return -1;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct option *o = NULL;
		for (size_t k = 0; k < NOPTIONS; k++)
			if (strlen(options[k].name) == nlen &&
			    strncmp(options[k].name, name, nlen) == 0)
				o = &options[k];
		if (!o) {
			snprintf(err, errlen, "unknown option --%.*s", (int)nlen, name);
			return -1;
		}
		char *field = (char *)out + o->offset;
		if (!o->has_value) {
			if (eq) {
				snprintf(err, errlen, "--%s takes no value", o->name);
				return -1;
			}
			*(bool *)(void *)field = true;
		} else {
			const char *v;
			if (eq)
				v = eq + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else {
				snprintf(err, errlen, "--%s needs a value", o->name);
				return -1;
			}
			if (strcmp(o->name, "prop") == 0) {
				if (out->nprops == sizeof out->props / sizeof out->props[0] ||
				    !strchr(v, '=') || v[0] == '=') {
					snprintf(err, errlen, "--prop takes K=V (at most 32 of them)");
					return -1;
				}
				out->props[out->nprops++] = v;
			} else {
				*(const char **)(void *)field = v;
			}
		}
		used |= o->bit;
		seen[o - options] = true;
	}
	if (nwords == 0) {
		snprintf(err, errlen, "no command given");
		return -1;
	}
	if (strcmp(words[0], "help") == 0) {
		out->cmd = CLI_CMD_HELP;
		return 0;
	}
	const struct command *c = NULL;
	for (size_t k = 0; k < NCOMMANDS && !c; k++) {
		if (strcmp(commands[k].group, words[0]) != 0)
			continue;
		if (!commands[k].verb)
			c = &commands[k];
		else if (nwords >= 2 && strcmp(commands[k].verb, words[1]) == 0)
			c = &commands[k];
	}
	if (!c) {
		if (nwords >= 2)
			snprintf(err, errlen, "unknown command \"%s %s\"", words[0], words[1]);
		else
			snprintf(err, errlen, "unknown command \"%s\"", words[0]);
		return -1;
	}
	size_t nw = c->verb ? 2 : 1;
	if (c->takes_id) {
		if (nwords < nw + 1) {
			snprintf(err, errlen, "missing %s; usage: fleethub %s", id_name(c),
			         c->usage);
			return -1;
		}
		out->id = words[nw++];
		const char *why = id_problem(c, out->id);
		if (why) {
			snprintf(err, errlen, "\"%s\" is not a valid %s (%s)", out->id, id_name(c),
				 why);
			return -1;
		}
	}
	if (c->cmd == CLI_CMD_METHOD_INVOKE) { /* a NAME word after the ID */
		if (nwords < nw + 1) {
			snprintf(err, errlen, "missing NAME; usage: fleethub %s", c->usage);
			return -1;
		}
		out->name = words[nw++];
	}
	if (nwords > nw) {
		snprintf(err, errlen, "unexpected argument \"%s\"; usage: fleethub %s", words[nw],
		         c->usage);
		return -1;
	}
	unsigned extra = used & ~(c->opts | OPT_COMMON);
	for (size_t k = 0; k < NOPTIONS; k++)
		if (seen[k] && (extra & options[k].bit)) {
			snprintf(err, errlen, "--%s does not apply; usage: fleethub %s",
			         options[k].name, c->usage);
			return -1;
		}
	out->cmd = c->cmd;
	if (c->cmd == CLI_CMD_DEVICE_UPDATE || out->status) {
		if (!out->status) {
			snprintf(err, errlen, "--status is required; usage: fleethub %s", c->usage);
			return -1;
		}
		if (strcmp(out->status, "enabled") != 0 && strcmp(out->status, "disabled") != 0) {
			snprintf(err, errlen, "--status must be enabled or disabled");
			return -1;
		}
	}
	if (out->reprovision && strcmp(out->reprovision, "migrate") != 0 &&
	    strcmp(out->reprovision, "reset") != 0 && strcmp(out->reprovision, "never") != 0) {
		snprintf(err, errlen, "--reprovision must be migrate, reset or never");
		return -1;
	}
	if ((c->cmd == CLI_CMD_ENROLLMENT_UPDATE || c->cmd == CLI_CMD_GROUP_UPDATE) &&
	    !(used & (UPDATE_OPTS | OPT_DEVICE_ID | OPT_TPM))) {
		snprintf(err, errlen, "nothing to change; usage: fleethub %s", c->usage);
		return -1;
	}
	if (out->device_id && !registry_id_valid(out->device_id)) {
		snprintf(err, errlen, "--device-id \"%s\" is not a valid device ID",
			 out->device_id);
		return -1;
	}
	if (c->cmd == CLI_CMD_C2D_SEND && !out->body) {
		snprintf(err, errlen, "--body is required; usage: fleethub %s", c->usage);
		return -1;
	}
	if (out->ack && strcmp(out->ack, "none") != 0 && strcmp(out->ack, "positive") != 0 &&
	    strcmp(out->ack, "negative") != 0 && strcmp(out->ack, "full") != 0) {
		snprintf(err, errlen, "--ack must be none, positive, negative or full");
		return -1;
	}
	if (c->cmd == CLI_CMD_TWIN_UPDATE && !out->tags && !out->desired) {
		snprintf(err, errlen, "give --tags and/or --desired; usage: fleethub %s", c->usage);
		return -1;
	}
	const struct {
		const char *const *v;
		const char *name;
		long lo, hi;
	} numbers[] = {
	    {&out->timeout, "--timeout", 5, 300},       {&out->connect_timeout, "--connect-timeout", 0, 300},
	    {&out->partition, "--partition", 0, 31},    {&out->limit, "--limit", 1, 1000000000},
	    {&out->wait, "--wait", 0, 86400},       {&out->ttl, "--ttl", 1, 172800},
	};
	for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++) {
		const char *v = *numbers[k].v;
		char *end;
		long n = v ? strtol(v, &end, 10) : 0;
		if (v && (!*v || *end || n < numbers[k].lo || n > numbers[k].hi)) {
			snprintf(err, errlen, "%s must be a number %ld..%ld", numbers[k].name,
				 numbers[k].lo, numbers[k].hi);
			return -1;
		}
	}
	if (!out->data_dir)
		out->data_dir = DEFAULT_DATA_DIR;
	return 0;
}
