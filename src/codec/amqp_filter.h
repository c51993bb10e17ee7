/* The start position of an Event Hubs receiver: the selector filter an
 * AMQP client puts on its receiver's source (amqp.md §3, "apache.org:
 * selector-filter:string"), e.g.
 *
 *   amqp.annotation.x-opt-offset > '-1'              from the start
 *   amqp.annotation.x-opt-offset > '@latest'         only new events
 *   amqp.annotation.x-opt-offset >= '4096'           from an offset
 *   amqp.annotation.x-opt-sequence-number > '41'     after a sequence number
 *   amqp.annotation.x-opt-enqueued-time > '1796...'  after a time (ms)
 *
 * Pure and bounded: text in, a struct out; tests/fuzz/fuzz_amqp_filter.c
 * drives it. */
#ifndef FH_CODEC_AMQP_FILTER_H
#define FH_CODEC_AMQP_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AMQP_FILTER_MAX 512 /* bytes of a selector */

enum amqp_filter_kind {
	AMQP_FILTER_OFFSET,
	AMQP_FILTER_SEQUENCE,
	AMQP_FILTER_TIME,
};

struct amqp_filter {
	enum amqp_filter_kind kind;
	bool inclusive; /* ">=" rather than ">" */
	bool latest;    /* offset "@latest": only events appended from now on */
	int64_t value;  /* the offset (-1: before the first), number or ms */
};

/* Parses s[0..n). 0, or FH_EINVAL with a sentence in err: another
 * annotation, an operator other than > and >=, a value that is not a
 * decimal integer (or '@latest' for an offset), text after it. The value
 * may be quoted with ' or " or bare; spaces around the parts are allowed. */
int amqp_filter_parse(const char *s, size_t n, struct amqp_filter *out, char *err,
		      size_t errlen);

#endif
