/* libFuzzer target: the fast path of reported patches against the jansson
 * path. Whenever twin_reported_meta_fast accepts an input, jansson must parse
 * it as an object (rejecting duplicate keys, as the hub does),
 * twin_check_patch must pass it, and twin_reported_meta_patches must write
 * byte for byte the same clear and set patches. Inputs it declines are not
 * compared: the hub takes the jansson path for them. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "core/twin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char now[] = "2026-01-01T00:00:00.000Z";
	struct buf fc = BUF_INIT, fs = BUF_INIT;
	if (!twin_reported_meta_fast((const char *)data, size, now, &twin_limits_default, &fc,
				     &fs)) {
		if (fc.len || fs.len)
			abort(); /* declined: nothing may be left behind */
		buf_free(&fc);
		buf_free(&fs);
		return 0;
	}
	json_t *patch = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!patch || !json_is_object(patch))
		abort();
	struct twin_error err;
	if (twin_check_patch(patch, TWIN_REPORTED, false, &twin_limits_default, &err) != 0)
		abort();
	struct buf jc = BUF_INIT, js = BUF_INIT;
	twin_reported_meta_patches(patch, now, &jc, &js);
	if (jc.len != fc.len || memcmp(jc.data, fc.data, jc.len) != 0 || js.len != fs.len ||
	    memcmp(js.data, fs.data, js.len) != 0)
		abort();
	json_decref(patch);
	buf_free(&fc);
	buf_free(&fs);
	buf_free(&jc);
	buf_free(&js);
	return 0;
}
