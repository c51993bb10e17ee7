/* The records the store hands out and takes, in domain terms: a device
 * identity, a twin, the REST view of a twin. Backend-neutral and free of
 * the store's runtime (no libuv, no SQL): core/ builds and reads them
 * through this header alone; store/store.h has the operations. */
#ifndef FH_STORE_RECORDS_H
#define FH_STORE_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store_device {
	char *json;   /* identity document (deviceId, generationId, status,
	                 authentication, capabilities, ...), owned */
	int64_t etag; /* bumps on every identity change; > 0 once stored */
};

struct store_twin {
	char *tags;     /* JSON object text, owned ("{}" when empty) */
	char *desired;  /* JSON object text, owned, without $version/$metadata */
	char *reported; /* JSON object text, owned, without $version/$metadata */
	char *meta;     /* JSON object {"tags":..,"desired":..,"reported":..} of
	                   $lastUpdated metadata trees, owned */
	int64_t version;          /* twin version: bumps on every twin change */
	int64_t desired_version;  /* $version of properties.desired */
	int64_t reported_version; /* $version of properties.reported */
};

/* What the REST twin document shows, read in one statement: the twin
 * (meta left NULL), the metadata of properties.desired and .reported, the
 * byte sizes of the tags and desired texts, and the device identity's etag
 * and members as JSON texts (NULL when the identity has no such member). */
struct store_twin_view {
	struct store_twin twin;
	char *meta_desired;  /* $metadata of properties.desired, or NULL */
	char *meta_reported; /* $metadata of properties.reported, or NULL */
	size_t tags_len;
	size_t desired_len;
	int64_t device_etag;
	char *status;              /* identity "status" */
	char *status_reason;       /* "statusReason" */
	char *status_updated_time; /* "statusUpdatedTime" */
	char *capabilities;        /* "capabilities" */
	char *auth_type;           /* "authentication"."type" */
	char *x509_thumbprint;     /* "authentication"."x509Thumbprint" */
	bool connected;            /* the stored connection state (below) */
	int64_t last_activity_ms;  /* 0: never */
	int64_t c2d_count;         /* cloud-to-device messages queued */
};

void store_device_clear(struct store_device *d);
void store_twin_clear(struct store_twin *tw);
/* Fills a new device's twin: "{}" sections and metadata, every version 1. */
void store_twin_init_empty(struct store_twin *tw);
void store_twin_view_clear(struct store_twin_view *v);

#endif
