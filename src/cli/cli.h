/* The admin CLI: every `fleethub` command except `serve`. It speaks only
 * the hub's public REST API over HTTPS (libcurl), authenticated with a SAS
 * token made from an owner (or service) policy's connection string. */
#ifndef FH_CLI_CLI_H
#define FH_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* Exit codes. */
enum {
	CLI_OK = 0,
	CLI_REFUSED = 1,     /* the server answered with an error */
	CLI_USAGE = 2,       /* bad command line */
	CLI_UNREACHABLE = 3, /* the server could not be reached, or TLS failed */
	CLI_CONFIG = 4,      /* no server configured: cli.conf missing or names no such hub/DPS */
};

enum cli_command {
	CLI_CMD_HELP,
	CLI_CMD_DEVICE_CREATE,
	CLI_CMD_DEVICE_SHOW,
	CLI_CMD_DEVICE_LIST,
	CLI_CMD_DEVICE_UPDATE,
	CLI_CMD_DEVICE_DELETE,
	CLI_CMD_DEVICE_CONNECTION_STRING,
	CLI_CMD_TWIN_SHOW,
	CLI_CMD_TWIN_UPDATE,
	CLI_CMD_HUB_CONNECTION_STRING,
	CLI_CMD_ENROLLMENT_CREATE,
	CLI_CMD_ENROLLMENT_UPDATE,
	CLI_CMD_ENROLLMENT_SHOW,
	CLI_CMD_ENROLLMENT_LIST,
	CLI_CMD_ENROLLMENT_DELETE,
	CLI_CMD_GROUP_CREATE,
	CLI_CMD_GROUP_UPDATE,
	CLI_CMD_GROUP_SHOW,
	CLI_CMD_GROUP_LIST,
	CLI_CMD_GROUP_DELETE,
	CLI_CMD_REGISTRATION_SHOW,
	CLI_CMD_REGISTRATION_LIST,
	CLI_CMD_REGISTRATION_DELETE,
	CLI_CMD_DPS_CONNECTION_STRING,
	CLI_CMD_WEBHOOK_CALLS,
	CLI_CMD_QUERY,
	CLI_CMD_NODES,
	CLI_CMD_METHOD_INVOKE,
	CLI_CMD_EVENTS_TAIL,
	CLI_CMD_C2D_SEND,
	CLI_CMD_C2D_PURGE,
	CLI_CMD_C2D_FEEDBACK,
	CLI_CMD_HUB_STATS,
	CLI_CMD_CA_UPLOAD,
	CLI_CMD_CA_VERIFY,
	CLI_CMD_CA_SHOW,
	CLI_CMD_CA_LIST,
	CLI_CMD_CA_DELETE,
	CLI_CMD_CERT_ROOT,
	CLI_CMD_CERT_INTERMEDIATE,
	CLI_CMD_CERT_DEVICE,
	CLI_CMD_CERT_VERIFICATION,
};

/* The parsed command line. Strings are borrowed from argv. */
struct cli_args {
	enum cli_command cmd;
	const char *id; /* device, registration or group id, or the query's text */
	/* common options */
	const char *data_dir; /* default "./fleethub-data" */
	const char *hub;
	const char *connection_string; /* option or FLEETHUB_CONNECTION_STRING */
	const char *server;
	const char *ca;
	/* command options */
	const char *primary_key, *secondary_key;
	const char *x509_thumbprint, *x509_secondary; /* a selfSigned device */
	bool x509_ca;                                 /* a certificateAuthority device */
	const char *certificate; /* ca upload / verify, enrollments: a PEM file */
	const char *secondary_certificate;     /* enrollments: X.509 attestation */
	const char *ca_ref, *secondary_ca_ref; /* enrollments: the DPS's CA names */
	bool dps;                /* ca: the DPS's CA certificates, not a hub's */
	const char *tpm_ek, *tpm_srk; /* enrollments: TPM attestation (base64 TPM2B_PUBLIC) */
	const char *issuer, *days; /* cert: the signing CA's file prefix, validity */
	bool disabled, edge;
	const char *status;
	const char *tags, *desired, *etag;
	/* enrollments */
	const char *policy, *hubs, *webhook, *initial_twin, *reprovision, *device_id, *group;
	/* connection-string: a policy other than the owner */
	const char *policy_name;
	bool table; /* query: a readable table instead of JSON */
	/* method invoke */
	const char *name, *payload, *timeout, *connect_timeout;
	/* events tail (group and device_id above too) */
	const char *from, *partition, *limit, *wait;
	/* c2d send */
	const char *body, *ack, *ttl, *message_id;
	const char *props[32]; /* "k=v", --prop repeated */
	unsigned nprops;
};

/* Parses argv[1..argc) (argv[0] is the program): options may come before,
 * between or after the command words; "--name=value" works too. Checks the
 * ID argument against the rules of what it names (device, registration or
 * group id), so that no id can change the request's path. Does not read
 * the environment. Returns 0, or -1 with a message in err. */
int cli_parse_args(int argc, char **argv, struct cli_args *out, char *err, size_t errlen);

/* Prints the command summary and common options. */
#include <stdio.h>
void cli_usage(FILE *f);

/* Runs one command; returns the process exit code (CLI_*). */
int cli_main(int argc, char **argv);

/* `fleethub cert ...` (cli_cert.c): development certificates, made
 * locally; no server is involved. Returns a CLI_* exit code. */
int cli_cert(const struct cli_args *a);

#endif
