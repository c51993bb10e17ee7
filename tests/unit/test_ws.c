/* Unit tests for WebSocket framing: the RFC 6455 accept key, masked
 * frames of each length form, split input, every refusal, encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/err.h"
#include "codec/ws.h"

static size_t masked(uint8_t *out, uint8_t b0, const uint8_t *payload, size_t n)
{
	static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
	size_t k = 0;
	out[k++] = b0;
	if (n < 126) {
		out[k++] = (uint8_t)(0x80 | n);
	} else if (n < 65536) {
		out[k++] = 0x80 | 126;
		out[k++] = (uint8_t)(n >> 8);
		out[k++] = (uint8_t)n;
	} else {
		out[k++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			out[k++] = (uint8_t)((uint64_t)n >> (8 * i));
	}
	memcpy(out + k, mask, 4);
	k += 4;
	for (size_t i = 0; i < n; i++)
		out[k + i] = payload[i] ^ mask[i & 3];
	return k + n;
}

static void test_accept_key(void **state)
{
	char out[29];
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(ws_accept_key("short", out), FH_EINVAL);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=!", out), FH_EINVAL);
}

static void test_lengths_and_split(void **state)
{
	static uint8_t payload[70000], frame[70020];
	for (size_t i = 0; i < sizeof payload; i++)
		payload[i] = (uint8_t)i;
	const size_t sizes[] = {0, 5, 125, 126, 300, 65535, 65536, 70000};
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		size_t n = masked(frame, 0x82, payload, sizes[s]);
		struct buf b = BUF_INIT;
		struct ws_frame f;
		/* Any prefix: need more, nothing appended. */
		assert_int_equal(ws_parse_frame(frame, n - 1, 1 << 20, &f, &b), 0);
		assert_int_equal(b.len, 0);
		assert_int_equal(ws_parse_frame(frame, n, 1 << 20, &f, &b), (int)n);
		assert_true(f.fin);
		assert_int_equal(f.opcode, WS_BINARY);
		assert_int_equal(b.len, sizes[s]);
		assert_memory_equal(b.data, payload, sizes[s]);
		buf_free(&b);
	}
}

static int parse(const uint8_t *p, size_t n, uint64_t max)
{
	struct buf b = BUF_INIT;
	struct ws_frame f;
	int rc = ws_parse_frame(p, n, max, &f, &b);
	buf_free(&b);
	return rc;
}

static void test_refusals(void **state)
{
	uint8_t fr[300];
	assert_int_equal(parse((const uint8_t *)"\x82\x02" "ab", 4, 100), FH_EPROTO); /* unmasked */
	size_t n = masked(fr, 0xc2, (const uint8_t *)"ab", 2);                         /* RSV1 */
	assert_int_equal(parse(fr, n, 100), FH_EPROTO);
	n = masked(fr, 0x83, (const uint8_t *)"ab", 2); /* opcode 3 */
	assert_int_equal(parse(fr, n, 100), FH_EPROTO);
	n = masked(fr, 0x09, (const uint8_t *)"ab", 2); /* fragmented ping */
	assert_int_equal(parse(fr, n, 100), FH_EPROTO);
	uint8_t big[200] = {0};
	n = masked(fr, 0x89, big, 126); /* control frame over 125 */
	assert_int_equal(parse(fr, n, 1000), FH_EPROTO);
	n = masked(fr, 0x82, big, 200);
	assert_int_equal(parse(fr, 4, 100), FH_ETOOBIG); /* known from the header alone */
	const uint8_t nonmin[] = {0x82, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0};
	assert_int_equal(parse(nonmin, sizeof nonmin, 100), FH_EPROTO);
	const uint8_t nonmin64[] = {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4};
	assert_int_equal(parse(nonmin64, sizeof nonmin64, 1 << 20), FH_EPROTO);
	const uint8_t top[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
	assert_true(parse(top, sizeof top, UINT64_MAX) < 0);
}

static void test_encode(void **state)
{
	struct buf b = BUF_INIT;
	ws_encode_frame(&b, WS_BINARY, "hi", 2);
	assert_memory_equal(b.data, "\x82\x02hi", 4);
	buf_reset(&b);
	char big[300] = {0};
	ws_encode_frame(&b, WS_BINARY, big, 300);
	assert_memory_equal(b.data, "\x82\x7e\x01\x2c", 4);
	assert_int_equal(b.len, 304);
	buf_reset(&b);
	ws_encode_close(&b, 1009, "too big");
	assert_memory_equal(b.data, "\x88\x09\x03\xf1too big", 11);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_key),
		cmocka_unit_test(test_lengths_and_split),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_encode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
