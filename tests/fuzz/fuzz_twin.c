/* libFuzzer target: twin patch validation and application. The input is
 * JSON; it is checked as a patch of each section and, when accepted,
 * applied to a small twin as a reported patch, a desired/tags patch and a
 * desired/tags replacement. */
#include <jansson.h>
#include <stdlib.h>

#include "base/mem.h"
#include "core/twin.h"

static void twin_fill(struct store_twin *tw)
{
	tw->tags = xstrdup("{\"t\":1}");
	tw->desired = xstrdup("{\"a\":{\"b\":1}}");
	tw->reported = xstrdup("{\"r\":[1,2]}");
	tw->meta = xstrdup("{}");
	tw->version = tw->desired_version = tw->reported_version = 1;
}

static void twin_free(struct store_twin *tw)
{
	free(tw->tags);
	free(tw->desired);
	free(tw->reported);
	free(tw->meta);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *patch = json_loadb((const char *)data, size, 0, NULL);
	if (!patch)
		return 0;
	struct twin_error err;
	struct store_twin tw;
	twin_fill(&tw);
	if (twin_apply_reported(&tw, patch, "2026-01-01T00:00:00.000Z", &twin_limits_default,
				&err) == 0)
		free(twin_render_properties(&tw));
	for (int replace = 0; replace < 2; replace++) {
		json_t *notice = NULL;
		if (twin_apply_service(&tw, patch, patch, replace, "2026-01-01T00:00:01.000Z",
				       &twin_limits_default, &err, &notice) == 0) {
			if (!notice)
				abort();
			json_t *o = json_object();
			twin_render_into(o, &tw);
			json_decref(o);
		}
		json_decref(notice);
	}
	twin_free(&tw);
	json_decref(patch);
	return 0;
}
