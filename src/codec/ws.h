/* WebSocket (RFC 6455) server-side framing. Pure: bytes in, frames out.
 * Client frames must be masked; control frames must be final and carry at
 * most 125 bytes; reserved bits must be zero (no extension is negotiated). */
#ifndef FH_CODEC_WS_H
#define FH_CODEC_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum ws_opcode { WS_CONT = 0x0, WS_TEXT = 0x1, WS_BINARY = 0x2, WS_CLOSE = 0x8,
		 WS_PING = 0x9, WS_PONG = 0xA };

struct ws_frame {
	bool fin;
	uint8_t opcode;
	uint64_t payload_len;
};

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA1(key +
 * GUID)). out receives 28 chars + NUL. Returns FH_EINVAL when the key is not
 * 24 base64 characters decoding to 16 bytes. */
int ws_accept_key(const char *client_key, char out[29]);

/* Decodes one frame from p[0..n). Returns bytes consumed (> 0) and appends
 * the unmasked payload to *payload; 0 when more bytes are needed;
 * FH_ETOOBIG when the declared payload exceeds max_payload (known from the
 * header alone); FH_EPROTO for an unmasked frame, reserved bits, an unknown
 * opcode, a fragmented or oversized control frame, a non-minimal length. */
int ws_parse_frame(const uint8_t *p, size_t n, uint64_t max_payload, struct ws_frame *f,
		   struct buf *payload);

/* Appends one unmasked server frame (FIN set). */
void ws_encode_frame(struct buf *out, enum ws_opcode op, const void *payload, size_t n);
/* Appends a CLOSE frame with a status code and reason. */
void ws_encode_close(struct buf *out, uint16_t code, const char *reason);

#endif
