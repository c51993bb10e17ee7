/* Unit tests for src/codec/amqp_frame.c: the frames a client sends on a
 * channel it has ended are dropped, whatever the chunks the stream comes
 * in; everything else passes byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "codec/amqp_frame.h"

#define MAX_FRAME 65536

/* A stream being written, and what the scanner passed of it. */
struct stream {
	uint8_t in[8192], out[8192], want[8192];
	size_t n, outn, wantn;
};

static void collect(void *arg, const uint8_t *p, size_t n)
{
	struct stream *st = arg;
	assert_true(st->outn + n <= sizeof st->out);
	memcpy(st->out + st->outn, p, n);
	st->outn += n;
}

static void add(struct stream *st, const uint8_t *p, size_t n, bool passes)
{
	memcpy(st->in + st->n, p, n);
	st->n += n;
	if (passes) {
		memcpy(st->want + st->wantn, p, n);
		st->wantn += n;
	}
}

/* A frame: doff 2, type, channel, body given in hex. */
static void frame(struct stream *st, unsigned type, unsigned channel, const char *hex, bool passes)
{
	uint8_t f[2048];
	size_t bl = strlen(hex) / 2, size = 8 + bl;
	f[0] = (uint8_t)(size >> 24);
	f[1] = (uint8_t)(size >> 16);
	f[2] = (uint8_t)(size >> 8);
	f[3] = (uint8_t)size;
	f[4] = 2;
	f[5] = (uint8_t)type;
	f[6] = (uint8_t)(channel >> 8);
	f[7] = (uint8_t)channel;
	for (size_t i = 0; i < bl; i++)
		assert_int_equal(sscanf(hex + 2 * i, "%2hhx", &f[8 + i]), 1);
	add(st, f, size, passes);
}

#define OPEN "005310c00f02a10178a1096c6f63616c686f7374"
#define BEGIN "005311c00d04404370000008007000000800"
#define ATTACH "005312c00c03a1036162634241"
#define FLOW "005313c00d04437000000800437000000800"
#define DISPOSITION "005315c0050441434041"
#define DETACH "005316c0030243"
#define END "00531745"
#define CLOSE "00531845"

static void header(struct stream *st)
{
	add(st, (const uint8_t *)"AMQP\0\1\0\0", 8, true);
}

/* Feeds the stream in chunks of step bytes and checks what passed. */
static uint64_t run(struct stream *st, size_t step)
{
	struct amqp_scan s;
	amqp_scan_init(&s, MAX_FRAME);
	st->outn = 0;
	for (size_t at = 0; at < st->n; at += step)
		amqp_scan_feed(&s, st->in + at, st->n - at < step ? st->n - at : step, collect, st);
	if (st->outn != st->wantn || memcmp(st->out, st->want, st->wantn) != 0)
		fail_msg("chunks of %zu: %zu bytes passed, %zu expected", step, st->outn, st->wantn);
	return s.dropped;
}

static void run_all(struct stream *st, uint64_t dropped)
{
	for (size_t step = 1; step <= 40; step++)
		assert_int_equal(run(st, step), dropped);
	assert_int_equal(run(st, st->n), dropped);
}

/* rhea's way: end, then the dispositions of what arrived meanwhile. */
static void test_after_end(void **state)
{
	static struct stream st;
	memset(&st, 0, sizeof st);
	header(&st);
	frame(&st, 0, 0, OPEN, true);
	frame(&st, 0, 0, BEGIN, true);
	frame(&st, 0, 1, BEGIN, true);
	frame(&st, 0, 1, ATTACH, true);
	frame(&st, 0, 1, DETACH, true);
	frame(&st, 0, 1, END, true);
	frame(&st, 0, 1, DISPOSITION, false);
	frame(&st, 0, 1, FLOW, false);
	frame(&st, 0, 1, ATTACH, false);
	frame(&st, 0, 1, DETACH, false);
	frame(&st, 0, 1, END, false);
	frame(&st, 0, 0, DISPOSITION, true); /* another channel goes on */
	frame(&st, 0, 1, "", true);          /* a heartbeat, whatever its channel */
	frame(&st, 0, 1, BEGIN, true);       /* the channel again */
	frame(&st, 0, 1, DISPOSITION, true);
	frame(&st, 0, 0, END, true);
	frame(&st, 0, 0, CLOSE, true);       /* the connection's, on an ended channel */
	run_all(&st, 5);
}

/* A transfer larger than what is read of a frame: dropped whole. */
static void test_large_frames(void **state)
{
	static struct stream st;
	memset(&st, 0, sizeof st);
	header(&st);
	frame(&st, 0, 0, OPEN, true);
	frame(&st, 0, 3, BEGIN, true);
	frame(&st, 0, 3, END, true);
	char transfer[2 * 600 + 1] = "005314c0";
	for (size_t i = strlen(transfer); i < sizeof transfer - 1; i++)
		transfer[i] = 'a';
	transfer[sizeof transfer - 1] = 0;
	frame(&st, 0, 3, transfer, false);
	frame(&st, 0, 2, transfer, true);
	frame(&st, 0, 3, DISPOSITION, false);
	frame(&st, 0, 2, DISPOSITION, true);
	run_all(&st, 2);
}

/* The descriptor as a full ulong; what cannot be read on an ended channel
 * passes and ends the watch there (the engine judges it). */
static void test_descriptor_forms(void **state)
{
	static struct stream st;
	memset(&st, 0, sizeof st);
	header(&st);
	frame(&st, 0, 0, OPEN, true);
	frame(&st, 0, 4, "00800000000000000011" "45", true); /* begin */
	frame(&st, 0, 4, "00800000000000000017" "45", true); /* end */
	frame(&st, 0, 4, DISPOSITION, false);
	frame(&st, 0, 4, "00800000000000000015" "45", false); /* disposition */
	frame(&st, 0, 4, "00800000000100000015" "45", true);  /* no performative: */
	frame(&st, 0, 4, DISPOSITION, true);                  /* not watched now */
	frame(&st, 0, 6, BEGIN, true);
	frame(&st, 0, 6, END, true);
	frame(&st, 0, 6, "00a30f616d71703a626567696e3a6c697374" "45", true); /* a symbol */
	frame(&st, 0, 6, FLOW, true);
	run_all(&st, 2);
}

/* A begin with an extended header opens the channel again: it is not read,
 * so the channel is no longer watched. */
static void test_extended_header(void **state)
{
	static struct stream st;
	memset(&st, 0, sizeof st);
	header(&st);
	frame(&st, 0, 0, OPEN, true);
	frame(&st, 0, 1, BEGIN, true);
	frame(&st, 0, 1, END, true);
	frame(&st, 0, 1, FLOW, false);
	uint8_t begin[12 + 18] = {0, 0, 0, 30, 3, 0, 0, 1, 0, 0, 0, 0};
	for (size_t i = 0; i < 18; i++)
		assert_int_equal(sscanf(BEGIN + 2 * i, "%2hhx", &begin[12 + i]), 1);
	add(&st, begin, sizeof begin, true);
	frame(&st, 0, 1, ATTACH, true);
	run_all(&st, 1);
}

/* What is not an AMQP frame passes, and is not held back. */
static void test_passes(void **state)
{
	static struct stream st;
	memset(&st, 0, sizeof st);
	add(&st, (const uint8_t *)"AMQP\3\1\0\0", 8, true); /* SASL */
	frame(&st, 1, 0, "005341c00401a3054e4f4e45", true);
	header(&st);
	frame(&st, 0, 0, OPEN, true);
	frame(&st, 0, 100, BEGIN, true); /* channels past 63 are not tracked */
	frame(&st, 0, 100, END, true);
	frame(&st, 0, 100, DISPOSITION, true);
	frame(&st, 0, 5, BEGIN, true);
	frame(&st, 0, 5, END, true);
	frame(&st, 1, 5, DISPOSITION, true); /* not type 0 */
	uint8_t ext[12 + 4] = {0, 0, 0, 16, 3, 0, 0, 5, 0, 0, 0, 0, 0, 0x53, 0x15, 0x45};
	add(&st, ext, sizeof ext, true);     /* an extended header */
	run_all(&st, 0);
	/* no frame at all: passed as it comes, at once, a byte at a time too */
	struct amqp_scan s;
	amqp_scan_init(&s, MAX_FRAME);
	st.outn = 0;
	const char *http = "GET / HTTP/1.1\r\n\r\n";
	amqp_scan_feed(&s, (const uint8_t *)http, strlen(http), collect, &st);
	assert_int_equal(st.outn, strlen(http));
	amqp_scan_init(&s, MAX_FRAME);
	st.outn = 0;
	amqp_scan_feed(&s, (const uint8_t *)"AM", 2, collect, &st);
	assert_int_equal(st.outn, 0); /* a header may follow */
	amqp_scan_feed(&s, (const uint8_t *)"x", 1, collect, &st);
	assert_int_equal(st.outn, 3);
	assert_memory_equal(st.out, "AMx", 3);
	/* a frame too large: its first 8 bytes at once, for the engine to refuse */
	amqp_scan_init(&s, MAX_FRAME);
	st.outn = 0;
	const uint8_t big[8 + 9] = {'A', 'M', 'Q', 'P', 0, 1, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0};
	amqp_scan_feed(&s, big, sizeof big, collect, &st);
	assert_int_equal(st.outn, sizeof big);
	assert_false(s.raw);
	/* a size under 8: everything passes from there */
	amqp_scan_init(&s, MAX_FRAME);
	st.outn = 0;
	const uint8_t tiny[8 + 16] = {'A', 'M', 'Q', 'P', 0, 1, 0, 0, 0, 0, 0, 4, 2, 0,
				      0, 0, 0, 0, 0, 16, 2, 0, 0, 0};
	amqp_scan_feed(&s, tiny, sizeof tiny, collect, &st);
	assert_int_equal(st.outn, sizeof tiny);
	assert_true(s.raw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_after_end),
	    cmocka_unit_test(test_large_frames),
	    cmocka_unit_test(test_descriptor_forms),
	    cmocka_unit_test(test_extended_header),
	    cmocka_unit_test(test_passes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
