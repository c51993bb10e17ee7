/* libFuzzer target: WebSocket frame decoding with a small payload limit,
 * frame after frame as the connection would. */
#include "base/buf.h"
#include "codec/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf payload = BUF_INIT;
	size_t off = 0;
	while (off < size) {
		struct ws_frame f;
		int rc = ws_parse_frame(data + off, size - off, 1024, &f, &payload);
		if (rc <= 0)
			break;
		off += (size_t)rc;
	}
	buf_free(&payload);
	if (size >= 24) {
		char key[25], out[29];
		for (int i = 0; i < 24; i++)
			key[i] = (char)data[i];
		key[24] = '\0';
		(void)ws_accept_key(key, out);
	}
	return 0;
}
