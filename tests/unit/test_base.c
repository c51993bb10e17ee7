/* Unit tests for src/base: encodings, buffers, HMAC, log redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/host.h"
#include "base/log.h"

static void test_b64_roundtrip(void **state)
{
	const char *cases[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (size_t i = 0; i < 7; i++) {
		char out[16];
		uint8_t dec[16];
		size_t n;
		b64_encode((const uint8_t *)cases[i], strlen(cases[i]), out);
		assert_string_equal(out, want[i]);
		assert_int_equal(b64_decode(out, strlen(out), dec, &n), 0);
		assert_int_equal(n, strlen(cases[i]));
		assert_memory_equal(dec, cases[i], n);
	}
}

static void test_b64_rejects(void **state)
{
	uint8_t out[16];
	size_t n;
	assert_int_equal(b64_decode("Zm9", 3, out, &n), FH_EINVAL);
	assert_int_equal(b64_decode("Zm=v", 4, out, &n), FH_EINVAL);
	assert_int_equal(b64_decode("Zm9v Yg==", 9, out, &n), FH_EINVAL);
	assert_int_equal(b64_decode("Zg==Zg==", 8, out, &n), FH_EINVAL);
}

static void test_pct(void **state)
{
	char out[64];
	size_t n;
	assert_int_equal(pct_decode("a%2Fb%2fc+d", 11, out, &n), 0);
	assert_string_equal(out, "a/b/c+d");
	assert_int_equal(pct_decode("bad%2", 5, out, &n), FH_EINVAL);
	assert_int_equal(pct_decode("bad%zz", 6, out, &n), FH_EINVAL);
	assert_int_equal(pct_decode("nul%00", 6, out, &n), FH_EINVAL);
	struct buf b = BUF_INIT;
	pct_encode(&b, "localhost:443/devices/d 1!", 26);
	assert_string_equal(b.data, "localhost%3A443%2Fdevices%2Fd%201%21");
	buf_free(&b);
}

static void test_hmac_known(void **state)
{
	/* RFC 4231 test case 2. */
	uint8_t mac[32];
	char hex[65];
	crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
	hex_encode(mac, 32, hex);
	assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* RFC 4231 test case 6: a key longer than the block is hashed first. */
	uint8_t key[131];
	memset(key, 0xaa, sizeof key);
	const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";
	crypto_hmac_sha256(key, sizeof key, msg, strlen(msg), mac);
	hex_encode(mac, 32, hex);
	assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	/* Test case 1: exactly-20-byte key, "Hi There". */
	memset(key, 0x0b, 20);
	crypto_hmac_sha256(key, 20, "Hi There", 8, mac);
	hex_encode(mac, 32, hex);
	assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

static void test_utf8(void **state)
{
	assert_true(utf8_valid("h\xc3\xa9llo", 6));
	assert_false(utf8_valid("\xc3", 1));
	assert_false(utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
	assert_false(utf8_valid("\xc0\xaf", 2));     /* overlong */
	assert_false(utf8_valid("a\0b", 3));
}

static void test_buf(void **state)
{
	struct buf b = BUF_INIT;
	buf_printf(&b, "%d-%s", 42, "x");
	buf_appends(&b, "yz");
	assert_string_equal(b.data, "42-xyz");
	buf_consume(&b, 3);
	assert_string_equal(b.data, "xyz");
	char *s = buf_steal(&b);
	assert_string_equal(s, "xyz");
	free(s);
	assert_null(b.data);
}

static void test_log_redact(void **state)
{
	char line[256] = "token SharedAccessSignature sr=a&sig=abc%2Bdef&se=1 and "
			 "HostName=h;SharedAccessKey=c2VjcmV0c2VjcmV0;x=1";
	log_redact(line);
	assert_null(strstr(line, "abc%2Bdef"));
	assert_null(strstr(line, "c2VjcmV0c2VjcmV0"));
	assert_non_null(strstr(line, "HostName=h"));
}

static void test_host_name_eq(void **state)
{
	assert_true(host_name_eq("hub1.test", "HUB1.test", 9));
	assert_true(host_name_eq("hub1.test", "hub1.test:443", 13));
	assert_true(host_name_eq("127.0.0.4", "127.0.0.4:8883", 14));
	assert_false(host_name_eq("hub1.test", "hub1.test2", 10));
	assert_false(host_name_eq("hub1.test", "hub1", 4));
	assert_true(host_name_eq("::1", "::1", 3)); /* IPv6 keeps its colons */
	assert_true(host_name_eq("hub", "hub/devices/x", 3));
}

/* Frames of 3 bytes; a frame "xxx" stops the stream. */
struct frames {
	char seen[64];
	size_t nseen;
	int copies_seen; /* calls whose data was not the caller's own bytes */
	const void *caller;
};

static long three(void *ctx, const unsigned char *p, size_t n)
{
	struct frames *f = ctx;
	if ((const void *)p != f->caller)
		f->copies_seen++;
	size_t used = 0;
	for (; n - used >= 3; used += 3) {
		if (memcmp(p + used, "xxx", 3) == 0)
			return -1;
		memcpy(f->seen + f->nseen, p + used, 3);
		f->nseen += 3;
	}
	return (long)used;
}

static void test_buf_feed(void **state)
{
	struct buf pending = BUF_INIT;
	struct frames f = {0};
	const char *a = "abcdefgh"; /* two frames and "gh" left over */
	f.caller = a;
	assert_int_equal(buf_feed(&pending, a, 8, three, &f), 0);
	assert_int_equal(f.copies_seen, 0); /* nothing pending: no copy */
	assert_int_equal(pending.len, 2);
	const char *b = "i";
	f.caller = b;
	assert_int_equal(buf_feed(&pending, b, 1, three, &f), 0);
	assert_int_equal(pending.len, 0);
	assert_int_equal(f.nseen, 9);
	assert_memory_equal(f.seen, "abcdefghi", 9);
	const char *c = "jklxxxm";
	f.caller = c;
	assert_int_equal(buf_feed(&pending, c, 7, three, &f), -1);
	assert_int_equal(f.nseen, 12);
	assert_memory_equal(f.seen + 9, "jkl", 3);
	buf_free(&pending);
}

/* ISO 8601 with milliseconds, UTC; the per-second cache must not leak a
 * date into the next second or the milliseconds of another call. */
static void test_iso8601(void **state)
{
	char out[32];
	clock_iso8601(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	clock_iso8601(1764979200007LL, out);
	assert_string_equal(out, "2025-12-06T00:00:00.007Z");
	clock_iso8601(1764979200999LL, out);
	assert_string_equal(out, "2025-12-06T00:00:00.999Z");
	clock_iso8601(1764979201050LL, out);
	assert_string_equal(out, "2025-12-06T00:00:01.050Z");
	clock_iso8601(951868799123LL, out); /* back in time: leap day 2000 */
	assert_string_equal(out, "2000-02-29T23:59:59.123Z");
}

static void test_dec_u64(void **state)
{
	char out[21];
	assert_int_equal(dec_u64(0, out), 1);
	assert_string_equal(out, "0");
	assert_int_equal(dec_u64(1000, out), 4);
	assert_string_equal(out, "1000");
	assert_int_equal(dec_u64(UINT64_MAX, out), 20);
	assert_string_equal(out, "18446744073709551615");
}

/* Reads fd to its end into a buffer (a thread of the log sink test). */
struct drain {
	int fd;
	struct buf got;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	char chunk[65536];
	ssize_t n;
	while ((n = read(d->fd, chunk, sizeof chunk)) > 0)
		buf_append(&d->got, chunk, (size_t)n);
	return NULL;
}

/* The asynchronous sink: with its output never read (a pipe that fills),
 * logging 4 MiB neither blocks nor grows: what does not fit in the 1 MiB
 * buffer is dropped and counted, and said once the output moves again;
 * log_stop writes everything queued. */
static void test_log_sink_never_blocks(void **state)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	enum log_level saved = log_min_level;
	log_min_level = LOG_INFO;
	assert_int_equal(log_start_async(fds[1]), 0);
	char pad[1000];
	memset(pad, 'x', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 4096; i++)
		log_at(LOG_INFO, "line %d %s", i, pad);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Nobody reads the pipe: had a line waited for it, this would hang. */
	double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(took < 10);
	unsigned long dropped = log_dropped();
	assert_true(dropped > 2000); /* 64 KiB of pipe + 1 MiB of buffer hold ~1,100 lines */
	struct drain d = {fds[0], BUF_INIT};
	pthread_t reader;
	assert_int_equal(pthread_create(&reader, NULL, drain_main, &d), 0);
	log_stop();
	close(fds[1]);
	pthread_join(reader, NULL);
	close(fds[0]);
	log_min_level = saved;
	buf_appendc(&d.got, '\0');
	assert_non_null(strstr(d.got.data, " info  line 0 xxx"));
	/* Every dropped line is counted in a note (one, or more when the
	 * output moved between drops). */
	unsigned long noted = 0;
	for (const char *p = d.got.data; (p = strstr(p, "log: ")) != NULL; p += 5) {
		unsigned long n;
		if (sscanf(p, "log: %lu lines dropped", &n) == 1)
			noted += n;
	}
	assert_int_equal(noted, dropped);
	buf_free(&d.got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_roundtrip), cmocka_unit_test(test_b64_rejects),
		cmocka_unit_test(test_pct),           cmocka_unit_test(test_hmac_known),
		cmocka_unit_test(test_utf8),          cmocka_unit_test(test_buf),
		cmocka_unit_test(test_buf_feed),      cmocka_unit_test(test_iso8601), cmocka_unit_test(test_dec_u64),
		cmocka_unit_test(test_log_sink_never_blocks),
		cmocka_unit_test(test_log_redact),    cmocka_unit_test(test_host_name_eq),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
