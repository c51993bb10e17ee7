/* Event Hubs selector filters (see amqp_filter.h). */
#include "codec/amqp_filter.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"

static const struct {
	const char *name;
	enum amqp_filter_kind kind;
} annotations[] = {
    {"amqp.annotation.x-opt-offset", AMQP_FILTER_OFFSET},
    {"amqp.annotation.x-opt-sequence-number", AMQP_FILTER_SEQUENCE},
    {"amqp.annotation.x-opt-enqueued-time", AMQP_FILTER_TIME},
};

static size_t skip_spaces(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i;
}

static int fail(char *err, size_t errlen, const char *why)
{
	snprintf(err, errlen, "%s", why);
	return FH_EINVAL;
}

int amqp_filter_parse(const char *s, size_t n, struct amqp_filter *out, char *err,
		      size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (n > AMQP_FILTER_MAX)
		return fail(err, errlen, "the selector filter is too long");
	size_t i = skip_spaces(s, n, 0);
	size_t name_end = i;
	while (name_end < n && s[name_end] != ' ' && s[name_end] != '\t' && s[name_end] != '>')
		name_end++;
	size_t k = 0, nk = sizeof annotations / sizeof annotations[0];
	for (; k < nk; k++)
		if (strlen(annotations[k].name) == name_end - i &&
		    strncasecmp(annotations[k].name, s + i, name_end - i) == 0)
			break;
	if (k == nk)
		return fail(err, errlen,
			    "the selector filter must compare amqp.annotation.x-opt-offset, "
			    "x-opt-sequence-number or x-opt-enqueued-time");
	out->kind = annotations[k].kind;
	i = skip_spaces(s, n, name_end);
	if (i >= n || s[i] != '>')
		return fail(err, errlen, "the selector filter's operator must be > or >=");
	i++;
	if (i < n && s[i] == '=') {
		out->inclusive = true;
		i++;
	}
	i = skip_spaces(s, n, i);
	char quote = 0;
	if (i < n && (s[i] == '\'' || s[i] == '"'))
		quote = s[i++];
	size_t v = i;
	while (i < n && s[i] != quote && s[i] != ' ' && s[i] != '\t')
		i++;
	size_t vlen = i - v;
	if (quote) {
		if (i >= n || s[i] != quote)
			return fail(err, errlen, "the selector filter's value has no closing quote");
		i++;
	}
	if (skip_spaces(s, n, i) != n)
		return fail(err, errlen, "the selector filter has text after its value");
	if (out->kind == AMQP_FILTER_OFFSET && vlen == 7 && strncmp(s + v, "@latest", 7) == 0) {
		out->latest = true;
		return 0;
	}
	bool neg = vlen > 0 && s[v] == '-';
	size_t d = v + neg;
	if (d == v + vlen || v + vlen - d > 18)
		return fail(err, errlen, "the selector filter's value must be a decimal integer");
	int64_t x = 0;
	for (size_t j = d; j < v + vlen; j++) {
		if (s[j] < '0' || s[j] > '9')
			return fail(err, errlen,
				    "the selector filter's value must be a decimal integer");
		x = x * 10 + (s[j] - '0');
	}
	if (neg && !(out->kind != AMQP_FILTER_TIME && x == 1))
		return fail(err, errlen, "the selector filter's value must not be negative "
					 "(but -1: before the first)");
	out->value = neg ? -x : x;
	return 0;
}
