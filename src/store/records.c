/* The records' own helpers (records.h): clearing and a new twin. */
#include "store/records.h"

#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

void store_device_clear(struct store_device *d)
{
	free(d->json);
	memset(d, 0, sizeof *d);
}

void store_twin_clear(struct store_twin *tw)
{
	free(tw->tags);
	free(tw->desired);
	free(tw->reported);
	free(tw->meta);
	memset(tw, 0, sizeof *tw);
}

void store_twin_init_empty(struct store_twin *tw)
{
	tw->tags = xstrdup("{}");
	tw->desired = xstrdup("{}");
	tw->reported = xstrdup("{}");
	tw->meta = xstrdup("{}");
	tw->version = 1;
	tw->desired_version = 1;
	tw->reported_version = 1;
}

void store_twin_view_clear(struct store_twin_view *v)
{
	store_twin_clear(&v->twin);
	free(v->meta_desired);
	free(v->meta_reported);
	free(v->status);
	free(v->status_reason);
	free(v->status_updated_time);
	free(v->capabilities);
	free(v->auth_type);
	free(v->x509_thumbprint);
	memset(v, 0, sizeof *v);
}
