/* libFuzzer target: the hub's device requests (src/hub/hub_wire.c). The
 * first byte picks the parser, the rest is its input: 0 an MQTT CONNECT
 * user name, 1 a SUBSCRIBE filter, 2 a PUBLISH topic, 3 a stored
 * subscription set. Invariants checked: accepted slices lie inside the
 * input and within their bounds, a $rid holds only safe characters and
 * occurs in the input, a filter maps to a known kind, and a subscription
 * set that decodes re-encodes to text that decodes to the same set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "hub/hub_wire.h"

#define DEVICE "dev-1"

static void check_slice(const char *p, size_t n, const char *in, size_t size)
{
	if (n && (p < in || p + n > in + size))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0] & 3;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;

	if (mode == 0) {
		struct hub_user u;
		if (hub__wire_username(in, n, &u) == 0) {
			if (u.host_len == 0 || u.id_len == 0 || u.id_len > REGISTRY_ID_MAX ||
			    memchr(u.device_id, '\0', u.id_len) || memchr(u.device_id, '/', u.id_len))
				abort();
			check_slice(u.host, u.host_len, in, n);
			check_slice(u.device_id, u.id_len, in, n);
			check_slice(u.query, u.query_len, in, n);
		}
	} else if (mode == 1) {
		int k = hub__wire_filter(in, n, DEVICE);
		if (k < -1 || k >= HUB_SUB_COUNT)
			abort();
		if (k >= 0 && n > 0 && in[n - 1] != '#')
			abort();
	} else if (mode == 2) {
		struct hub_topic_match m;
		enum hub_topic t = hub__wire_topic(in, n, DEVICE, &m);
		if (t == HUB_TOPIC_TWIN_GET || t == HUB_TOPIC_TWIN_REPORTED ||
		    t == HUB_TOPIC_METHOD_RES) {
			size_t rl = strlen(m.rid);
			if (rl == 0 || rl > HUB_RID_MAX || strcspn(m.rid, "/+#?& ") != rl ||
			    !memmem(in, n, m.rid, rl))
				abort();
		} else if (m.rid[0]) {
			abort();
		}
		if (t == HUB_TOPIC_TELEMETRY)
			check_slice(m.props, m.props_len, in, n);
		else if (m.props)
			abort();
	} else {
		struct hub_subs s, back;
		if (hub__wire_subs_decode(in, n, &s) == 0) {
			struct buf b = BUF_INIT;
			hub__wire_subs_encode(&s, &b);
			if (hub__wire_subs_decode(b.data, b.len, &back) != 0 || back.mask != s.mask)
				abort();
			for (int k = 0; k < HUB_SUB_COUNT; k++)
				if ((s.mask & (1u << k)) && back.qos[k] != s.qos[k])
					abort();
			buf_free(&b);
		}
	}
	return 0;
}
