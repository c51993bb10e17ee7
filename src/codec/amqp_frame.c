/* The AMQP frame scanner (amqp_frame.h). A frame is
 *
 *   size (4, big-endian, the whole frame) | doff (1, header size in 4-byte
 *   words) | type (1: 0 AMQP, 1 SASL) | channel (2) | [extended header] |
 *   body: a described list, its descriptor 0x00 then a ulong code
 *   (0x53 small, 0x80 full; Proton 0.37 reads no symbolic descriptor)
 *
 * and a protocol header is "AMQP" and four bytes (id, major, minor,
 * revision), at the start and again after SASL. */
#include "codec/amqp_frame.h"

#include <string.h>

/* The session's performatives, begin to end: attach, flow, transfer,
 * disposition, detach between them. Open (0x10) and close (0x18) belong to
 * the connection, on whatever channel they come. */
#define PERF_BEGIN 0x11
#define PERF_END 0x17

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void amqp_scan_init(struct amqp_scan *s, uint32_t max_frame)
{
	memset(s, 0, sizeof *s);
	s->max_frame = max_frame;
}

static bool is_header(const struct amqp_scan *s)
{
	return memcmp(s->head, "AMQP", 4) == 0;
}

/* A frame that can be judged: an AMQP frame (not SASL) with no extended
 * header, not empty, not over the largest frame. Its first bytes are held
 * until its performative can be read. */
static bool is_amqp_frame(const struct amqp_scan *s)
{
	uint32_t size = be32(s->head);
	return s->head[4] == 2 && s->head[5] == 0 && size > 8 && size <= s->max_frame;
}

/* The bytes of head needed to judge what starts there. Anything but an
 * AMQP frame is judged on its first 8 bytes, so that the engine sees at
 * once what it refuses at once (a frame too large). */
static size_t wanted(const struct amqp_scan *s)
{
	if (s->have < 8 || is_header(s) || !is_amqp_frame(s))
		return 8;
	uint32_t size = be32(s->head);
	return size < AMQP_SCAN_HEAD ? size : AMQP_SCAN_HEAD;
}

/* The performative code of a body's first n bytes, or -1. */
static int performative(const uint8_t *b, size_t n)
{
	if (n < 3 || b[0] != 0x00)
		return -1;
	if (b[1] == 0x53)
		return b[2];
	if (b[1] == 0x80 && n >= 10 && be32(b + 2) == 0 && be32(b + 6) <= 0xff)
		return (int)be32(b + 6);
	return -1;
}

/* head holds what wanted() asked for: pass or drop what starts there. */
static void judge(struct amqp_scan *s, amqp_scan_out out, void *arg)
{
	size_t have = s->have;
	s->have = 0;
	if (is_header(s)) {
		s->started = true;
		out(arg, s->head, have);
		return;
	}
	uint32_t size = be32(s->head);
	unsigned doff = s->head[4];
	unsigned channel = (unsigned)s->head[6] << 8 | s->head[7];
	if (size < 8 || doff < 2) {
		s->raw = true; /* no frame: the engine says so */
		out(arg, s->head, have);
		return;
	}
	bool drop = false;
	int code = -1;
	if (s->head[5] == 0 && size > 8 && channel < AMQP_SCAN_CHANNELS) {
		uint64_t bit = (uint64_t)1 << channel;
		code = is_amqp_frame(s) ? performative(s->head + 8, have - 8) : -1;
		if (code == PERF_BEGIN)
			s->ended &= ~bit;
		else if ((s->ended & bit) && code > PERF_BEGIN && code <= PERF_END)
			drop = true;
		else if (s->ended & bit)
			s->ended &= ~bit; /* not understood: the engine judges from here */
		else if (code == PERF_END)
			s->ended |= bit;
	}
	s->drop = drop;
	s->rest = size - have;
	if (drop) {
		s->dropped++;
		s->drop_channel = channel;
		s->drop_code = code;
	} else {
		out(arg, s->head, have);
	}
}

void amqp_scan_feed(struct amqp_scan *s, const uint8_t *p, size_t n, amqp_scan_out out,
		    void *arg)
{
	while (n) {
		if (!s->raw && !s->started && !s->rest) {
			/* the stream must open with a protocol header: bytes that
			 * cannot start one go to the engine at once, which refuses
			 * them on its first 3 */
			size_t k = s->have + n < 4 ? s->have + n : 4;
			for (size_t i = 0; i < k && !s->raw; i++) {
				uint8_t b = i < s->have ? s->head[i] : p[i - s->have];
				s->raw = b != (uint8_t)"AMQP"[i];
			}
			if (s->raw && s->have) {
				out(arg, s->head, s->have);
				s->have = 0;
			}
		}
		if (s->raw) {
			out(arg, p, n);
			return;
		}
		if (s->rest) {
			size_t k = n < s->rest ? n : (size_t)s->rest;
			if (!s->drop)
				out(arg, p, k);
			s->rest -= k;
			p += k;
			n -= k;
			continue;
		}
		size_t want = wanted(s);
		size_t k = want - s->have < n ? want - s->have : n;
		memcpy(s->head + s->have, p, k);
		s->have += k;
		p += k;
		n -= k;
		if (s->have < wanted(s))
			continue; /* more of the frame first (or the next call) */
		judge(s, out, arg);
	}
}
