/* Unit tests for the twin logic: merges with null deletion, versions per
 * section, metadata stamps, every limit with the rule in its message,
 * replace with its notification diff, failures leaving the twin alone,
 * the device view and the etag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"
#include "core/twin.h"

static const char *T1 = "2026-01-01T00:00:01.000Z";
static const char *T2 = "2026-01-01T00:00:02.000Z";

static void fresh(struct store_twin *tw)
{
	tw->tags = xstrdup("{}");
	tw->desired = xstrdup("{}");
	tw->reported = xstrdup("{}");
	tw->meta = xstrdup("{}");
	tw->version = tw->desired_version = tw->reported_version = 1;
}

static void clear(struct store_twin *tw)
{
	free(tw->tags);
	free(tw->desired);
	free(tw->reported);
	free(tw->meta);
}

static json_t *J(const char *text)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	return j;
}

static void assert_json(const char *text, const char *want)
{
	json_t *a = J(text), *b = J(want);
	if (!json_equal(a, b))
		fail_msg("got %s, want %s", text, want);
	json_decref(a);
	json_decref(b);
}

static json_t *meta_at(const struct store_twin *tw, const char *section, const char *key)
{
	json_t *m = json_loads(tw->meta, 0, NULL);
	json_t *s = json_object_get(m, section);
	json_t *v = key ? json_object_get(s, key) : s;
	json_incref(v);
	json_decref(m);
	return v;
}

static void test_desired_merge_versions_meta(void **state)
{
	struct store_twin tw;
	struct twin_error err;
	json_t *notice = NULL;
	fresh(&tw);
	json_t *p1 = J("{\"c\":{\"climate\":{\"min\":18,\"max\":25}},\"flag\":true}");
	assert_int_equal(twin_apply_service(&tw, NULL, p1, false, T1, &twin_limits_default, &err, &notice), 0);
	assert_int_equal(tw.desired_version, 2);
	assert_int_equal(tw.reported_version, 1);
	assert_int_equal(tw.version, 2);
	char *n = json_dumps(notice, JSON_COMPACT);
	assert_json(n, "{\"c\":{\"climate\":{\"min\":18,\"max\":25}},\"flag\":true,\"$version\":2}");
	free(n);
	json_decref(notice);

	json_t *p2 = J("{\"c\":{\"climate\":{\"max\":null},\"light\":{\"on\":1}},\"flag\":null}");
	assert_int_equal(twin_apply_service(&tw, NULL, p2, false, T2, &twin_limits_default, &err, &notice), 0);
	assert_json(tw.desired, "{\"c\":{\"climate\":{\"min\":18},\"light\":{\"on\":1}}}");
	assert_int_equal(tw.desired_version, 3);
	json_decref(notice);

	json_t *m = meta_at(&tw, "desired", "c");
	json_t *climate = json_object_get(m, "climate");
	assert_string_equal(json_string_value(json_object_get(climate, "$lastUpdated")), T2);
	json_t *min = json_object_get(climate, "min");
	assert_string_equal(json_string_value(json_object_get(min, "$lastUpdated")), T1);
	assert_int_equal(json_integer_value(json_object_get(min, "$lastUpdatedVersion")), 2);
	assert_null(json_object_get(climate, "max"));
	json_decref(m);
	json_t *root = meta_at(&tw, "desired", NULL);
	assert_null(json_object_get(root, "flag"));
	assert_int_equal(json_integer_value(json_object_get(root, "$lastUpdatedVersion")), 3);
	json_decref(root);

	json_t *tags = J("{\"loc\":{\"b\":\"43\"}}");
	assert_int_equal(twin_apply_service(&tw, tags, NULL, false, T2, &twin_limits_default, &err, &notice), 0);
	assert_null(notice);
	assert_int_equal(tw.desired_version, 3);
	assert_int_equal(tw.version, 4);

	char *props = twin_render_properties(&tw);
	assert_json(props, "{\"desired\":{\"c\":{\"climate\":{\"min\":18},\"light\":{\"on\":1}},\"$version\":3},"
			   "\"reported\":{\"$version\":1}}");
	assert_null(strstr(props, "loc"));
	free(props);
	json_decref(p1);
	json_decref(p2);
	json_decref(tags);
	clear(&tw);
}

static void test_reported(void **state)
{
	struct store_twin tw;
	struct twin_error err;
	fresh(&tw);
	json_t *p = J("{\"fw\":\"1.0\",\"x\":{\"y\":1}}");
	assert_int_equal(twin_apply_reported(&tw, p, T1, &twin_limits_default, &err), 0);
	json_t *q = J("{\"x\":null}");
	assert_int_equal(twin_apply_reported(&tw, q, T2, &twin_limits_default, &err), 0);
	assert_json(tw.reported, "{\"fw\":\"1.0\"}");
	assert_json(tw.desired, "{}");
	assert_int_equal(tw.reported_version, 3);
	assert_int_equal(tw.desired_version, 1);
	assert_int_equal(tw.version, 3);
	json_t *fw = meta_at(&tw, "reported", "fw");
	assert_string_equal(json_string_value(json_object_get(fw, "$lastUpdated")), T1);
	assert_null(json_object_get(fw, "$lastUpdatedVersion"));
	json_decref(fw);

	json_t *o = json_object();
	twin_render_into(o, &tw);
	assert_string_equal(json_string_value(json_object_get(o, "etag")), "AAAAAAAAAAM=");
	json_t *rep = json_object_get(json_object_get(o, "properties"), "reported");
	assert_int_equal(json_integer_value(json_object_get(rep, "$version")), 3);
	assert_non_null(json_object_get(json_object_get(rep, "$metadata"), "fw"));
	json_decref(o);
	json_decref(p);
	json_decref(q);
	clear(&tw);
}

static void expect_refusal(enum twin_section sec, const char *patch, const char *rule)
{
	struct store_twin tw;
	struct twin_error err;
	fresh(&tw);
	json_t *p = J(patch);
	int rc;
	if (sec == TWIN_REPORTED)
		rc = twin_apply_reported(&tw, p, T1, &twin_limits_default, &err);
	else
		rc = twin_apply_service(&tw, sec == TWIN_TAGS ? p : NULL, sec == TWIN_DESIRED ? p : NULL,
					false, T1, &twin_limits_default, &err, NULL);
	assert_int_equal(rc, FH_EINVAL);
	assert_int_equal(err.code, 400004);
	if (!strstr(err.message, rule))
		fail_msg("message '%s' does not name '%s'", err.message, rule);
	assert_int_equal(tw.version, 1);
	assert_string_equal(tw.desired, "{}");
	assert_string_equal(tw.reported, "{}");
	json_decref(p);
	clear(&tw);
}

static void test_limits(void **state)
{
	char deep[256] = "";
	for (int i = 0; i < 11; i++)
		strcat(deep, "{\"a\":");
	strcat(deep, "1");
	for (int i = 0; i < 11; i++)
		strcat(deep, "}");
	expect_refusal(TWIN_DESIRED, deep, "deeper than 10");
	expect_refusal(TWIN_REPORTED, "{\"a.b\":1}", "contains '.'");
	expect_refusal(TWIN_REPORTED, "{\"$x\":1}", "'$'");
	expect_refusal(TWIN_TAGS, "{\"a b\":1}", "a space");
	expect_refusal(TWIN_DESIRED, "{\"a\\u0001\":1}", "control");
	expect_refusal(TWIN_DESIRED, "{\"a\\u0085\":1}", "control");
	expect_refusal(TWIN_DESIRED, "{\"n\":4503599627370496}", "integer outside");
	expect_refusal(TWIN_DESIRED, "{\"n\":-4503599627370497}", "integer outside");
	static char big[40000];
	strcpy(big, "{");
	for (int i = 0; i < 9; i++) {
		char part[4200];
		snprintf(part, sizeof part, "%s\"k%d\":\"%04000d\"", i ? "," : "", i, 0);
		strcat(big, part);
	}
	strcat(big, "}");
	expect_refusal(TWIN_REPORTED, big, "limit of 32768");
	char s[5200];
	snprintf(s, sizeof s, "{\"s\":\"%05000d\"}", 0);
	expect_refusal(TWIN_DESIRED, s, "longer than 4096");
	char key[1100];
	memset(key, 'k', 1025);
	key[1025] = '\0';
	char kp[1200];
	snprintf(kp, sizeof kp, "{\"%s\":1}", key);
	expect_refusal(TWIN_TAGS, kp, "longer than 1024");

	struct twin_error err;
	json_t *arr = J("[1]");
	assert_int_equal(twin_check_patch(arr, TWIN_DESIRED, false, &twin_limits_default, &err), FH_EINVAL);
	json_decref(arr);
	json_t *ok = J("{\"n\":4503599627370495,\"a\":[{\"x\":1}],\"d\":1.5}");
	assert_int_equal(twin_check_patch(ok, TWIN_DESIRED, false, &twin_limits_default, &err), 0);
	json_decref(ok);
}

static void test_replace_diff(void **state)
{
	struct store_twin tw;
	struct twin_error err;
	json_t *notice = NULL;
	fresh(&tw);
	json_t *p = J("{\"a\":1,\"b\":{\"c\":2,\"d\":3}}");
	assert_int_equal(twin_apply_service(&tw, NULL, p, false, T1, &twin_limits_default, &err, NULL), 0);
	json_t *r = J("{\"b\":{\"c\":2,\"d\":4},\"e\":null,\"f\":5}");
	assert_int_equal(twin_apply_service(&tw, NULL, r, true, T2, &twin_limits_default, &err, &notice), 0);
	assert_json(tw.desired, "{\"b\":{\"c\":2,\"d\":4},\"f\":5}");
	char *n = json_dumps(notice, JSON_COMPACT);
	assert_json(n, "{\"a\":null,\"b\":{\"d\":4},\"f\":5,\"$version\":3}");
	free(n);
	json_decref(notice);
	json_decref(p);
	json_decref(r);
	clear(&tw);
}

static void test_init_new(void **state)
{
	struct store_twin tw = {0};
	twin_init_new(&tw, T1);
	assert_int_equal(tw.version, 1);
	json_t *o = json_object();
	twin_render_into(o, &tw);
	json_t *rep = json_object_get(json_object_get(o, "properties"), "reported");
	json_t *m = json_object_get(rep, "$metadata");
	assert_string_equal(json_string_value(json_object_get(m, "$lastUpdated")), T1);
	json_t *des = json_object_get(json_object_get(o, "properties"), "desired");
	m = json_object_get(des, "$metadata");
	assert_int_equal(json_integer_value(json_object_get(m, "$lastUpdatedVersion")), 1);
	json_decref(o);
	store_twin_clear(&tw);
}

static void test_etag(void **state)
{
	char e[13];
	twin_etag(1, e);
	assert_string_equal(e, "AAAAAAAAAAE=");
	twin_etag(258, e);
	assert_string_equal(e, "AAAAAAAAAQI=");
}

/* The fast path of reported patches writes what the jansson path writes
 * for the simple patches it takes, and declines everything else (leaving
 * nothing behind), so that the jansson path decides. */
static void test_reported_fast(void **state)
{
	static const char now[] = "2026-03-04T05:06:07.089Z";
	static const char *const taken[] = {
	    "{\"seq\":\"0000000001\",\"p0\":\"xxxxxxxx\"}",
	    "{\"a\":{\"b\":{\"c\":1,\"d\":null}},\"e\":true,\"f\":false,\"g\":-12}",
	    "{\"a\":{},\"b\":{\"c\":{}},\"d\":{\"e\":null}}",
	    " {\"k\" : \"v\" ,\n\t\"n\":null}\r\n",
	    "{}",
	    "{\"a\":-0,\"b\":0,\"c\":999999999999999}",
	};
	static const char *const declined[] = {
	    "{\"a\":1,\"a\":2}",            /* duplicate key */
	    "{\"a\":1.5}",                  /* not an integer */
	    "{\"a\":1e3}",                  /* exponent */
	    "{\"a\":[1]}",                  /* array */
	    "{\"a\":\"\\u00e9\"}",          /* escape */
	    "{\"a\":\"\xc3\xa9\"}",         /* not ASCII */
	    "{\"a.b\":1}",                  /* '.' in a key */
	    "{\"$a\":1}",                   /* '$' in a key */
	    "{\"a b\":1}",                  /* space in a key */
	    "{\"\":1}",                     /* empty key */
	    "{\"a\":01}",                   /* leading zero */
	    "{\"a\":1234567890123456}",     /* 16 digits */
	    "{\"a\":tru}",                  /* broken literal */
	    "{\"a\":1,}",                   /* trailing comma */
	    "{\"a\":1} x",                  /* trailing bytes */
	    "[1]",                          /* not an object */
	    "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{}}}}}}}}}}}",
	    "",
	};
	for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
		struct buf fc = BUF_INIT, fs = BUF_INIT, jc = BUF_INIT, js = BUF_INIT;
		assert_true(twin_reported_meta_fast(taken[i], strlen(taken[i]), now,
						    &twin_limits_default, &fc, &fs));
		json_t *patch = json_loads(taken[i], JSON_REJECT_DUPLICATES, NULL);
		assert_non_null(patch);
		struct twin_error err;
		assert_int_equal(
		    twin_check_patch(patch, TWIN_REPORTED, false, &twin_limits_default, &err), 0);
		twin_reported_meta_patches(patch, now, &jc, &js);
		assert_string_equal(fc.data, jc.data);
		assert_string_equal(fs.data, js.data);
		json_decref(patch);
		buf_free(&fc);
		buf_free(&fs);
		buf_free(&jc);
		buf_free(&js);
	}
	for (size_t i = 0; i < sizeof declined / sizeof declined[0]; i++) {
		struct buf fc = BUF_INIT, fs = BUF_INIT;
		assert_false(twin_reported_meta_fast(declined[i], strlen(declined[i]), now,
						     &twin_limits_default, &fc, &fs));
		assert_int_equal(fc.len + fs.len, 0);
		buf_free(&fc);
		buf_free(&fs);
	}
	/* what it writes, spelled out once */
	struct buf c = BUF_INIT, st = BUF_INIT;
	const char *pt = "{\"a\":{\"b\":1},\"n\":null,\"e\":{}}";
	assert_true(twin_reported_meta_fast(pt, strlen(pt), now, &twin_limits_default, &c, &st));
	assert_string_equal(c.data, "{\"reported\":{\"a\":{\"b\":null},\"n\":null}}");
	assert_string_equal(st.data,
			    "{\"reported\":{\"$lastUpdated\":\"2026-03-04T05:06:07.089Z\","
			    "\"a\":{\"$lastUpdated\":\"2026-03-04T05:06:07.089Z\","
			    "\"b\":{\"$lastUpdated\":\"2026-03-04T05:06:07.089Z\"}},"
			    "\"e\":{\"$lastUpdated\":\"2026-03-04T05:06:07.089Z\"}}}");
	buf_free(&c);
	buf_free(&st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_desired_merge_versions_meta),
		cmocka_unit_test(test_reported),
		cmocka_unit_test(test_reported_fast),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_replace_diff),
		cmocka_unit_test(test_init_new),
		cmocka_unit_test(test_etag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
