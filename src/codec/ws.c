/* WebSocket framing (RFC 6455), server side (see ws.h). A frame's header is
 * checked completely -- mask, reserved bits, opcode, control-frame rules,
 * minimal length encoding, max_payload -- before its payload is waited for
 * or copied. */
#include "codec/ws.h"

#include <string.h>

#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int ws_accept_key(const char *client_key, char out[29])
{
	uint8_t raw[18];
	size_t n;
	if (!client_key || strlen(client_key) != 24 || b64_decode(client_key, 24, raw, &n) != 0 ||
	    n != 16)
		return FH_EINVAL;
	char text[24 + sizeof WS_GUID];
	memcpy(text, client_key, 24);
	memcpy(text + 24, WS_GUID, sizeof WS_GUID);
	uint8_t sha[20];
	crypto_sha1(text, 24 + sizeof WS_GUID - 1, sha);
	b64_encode(sha, 20, out);
	return 0;
}

int ws_parse_frame(const uint8_t *p, size_t n, uint64_t max_payload, struct ws_frame *f,
		   struct buf *payload)
{
	if (n < 2)
		return 0;
	uint8_t b0 = p[0], b1 = p[1];
	if (b0 & 0x70)
		return FH_EPROTO; /* RSV1-3: no extension negotiated */
	uint8_t op = b0 & 0x0f;
	bool control = op & 0x08;
	if (op != WS_CONT && op != WS_TEXT && op != WS_BINARY && op != WS_CLOSE &&
	    op != WS_PING && op != WS_PONG)
		return FH_EPROTO;
	if (!(b1 & 0x80))
		return FH_EPROTO; /* client frames must be masked */
	uint64_t len = b1 & 0x7f;
	size_t hdr = 2;
	if (control && (!(b0 & 0x80) || len > 125))
		return FH_EPROTO;
	if (len == 126) {
		if (n < 4)
			return 0;
		len = (uint64_t)p[2] << 8 | p[3];
		if (len < 126)
			return FH_EPROTO;
		hdr = 4;
	} else if (len == 127) {
		if (n < 10)
			return 0;
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		if (len < 65536 || (len >> 63))
			return FH_EPROTO;
		hdr = 10;
	}
	if (len > max_payload)
		return FH_ETOOBIG;
	if (n < hdr + 4)
		return 0;
	const uint8_t *mask = p + hdr;
	hdr += 4;
	if (n - hdr < len)
		return 0;
	f->fin = b0 & 0x80;
	f->opcode = op;
	f->payload_len = len;
	buf_reserve(payload, (size_t)len);
	uint8_t *dst = (uint8_t *)payload->data + payload->len;
	for (size_t i = 0; i < (size_t)len; i++)
		dst[i] = p[hdr + i] ^ mask[i & 3];
	payload->len += (size_t)len;
	payload->data[payload->len] = '\0';
	return (int)(hdr + len);
}

void ws_encode_frame(struct buf *out, enum ws_opcode op, const void *payload, size_t n)
{
	uint8_t h[10];
	size_t k = 0;
	h[k++] = (uint8_t)(0x80 | op);
	if (n < 126) {
		h[k++] = (uint8_t)n;
	} else if (n < 65536) {
		h[k++] = 126;
		h[k++] = (uint8_t)(n >> 8);
		h[k++] = (uint8_t)n;
	} else {
		h[k++] = 127;
		for (int i = 7; i >= 0; i--)
			h[k++] = (uint8_t)((uint64_t)n >> (8 * i));
	}
	buf_append(out, h, k);
	if (n)
		buf_append(out, payload, n);
}

void ws_encode_close(struct buf *out, uint16_t code, const char *reason)
{
	uint8_t b[125];
	size_t rl = reason ? strlen(reason) : 0;
	if (rl > 123)
		rl = 123;
	b[0] = (uint8_t)(code >> 8);
	b[1] = (uint8_t)code;
	if (rl)
		memcpy(b + 2, reason, rl);
	ws_encode_frame(out, WS_CLOSE, b, 2 + rl);
}
