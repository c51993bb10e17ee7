/* libFuzzer target: MQTT packet decoding. Parses packets one after the
 * other as a session would; a decoded CONNECT or PUBLISH is re-encoded and
 * parsed again, and must come back identical. */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/mqtt.h"

static void check_publish(const struct mqtt_publish *p)
{
	struct buf b = BUF_INIT;
	struct mqtt_packet again;
	mqtt_encode_publish(&b, p->topic.p, p->topic.len, p->qos, p->packet_id, p->payload,
			    p->payload_len);
	int rc = mqtt_parse((const uint8_t *)b.data, b.len, b.len, &again);
	if (rc != (int)b.len || again.u.publish.topic.len != p->topic.len ||
	    memcmp(again.u.publish.topic.p, p->topic.p, p->topic.len) != 0 ||
	    again.u.publish.payload_len != p->payload_len || again.u.publish.qos != p->qos ||
	    again.u.publish.packet_id != p->packet_id)
		abort();
	buf_free(&b);
}

static void check_connect(const struct mqtt_connect *c)
{
	struct buf b = BUF_INIT;
	struct mqtt_packet again;
	mqtt_encode_connect(&b, c);
	int rc = mqtt_parse((const uint8_t *)b.data, b.len, b.len, &again);
	const struct mqtt_connect *d = &again.u.connect;
	if (rc != (int)b.len || d->level != c->level || d->clean != c->clean ||
	    d->keepalive != c->keepalive || d->client_id.len != c->client_id.len ||
	    d->has_username != c->has_username || d->has_password != c->has_password ||
	    d->username.len != c->username.len || d->password_len != c->password_len)
		abort();
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct mqtt_packet pk;
		int rc = mqtt_parse(data + off, size - off, 4096, &pk);
		if (rc <= 0)
			break;
		if (pk.type == MQTT_PUBLISH)
			check_publish(&pk.u.publish);
		else if (pk.type == MQTT_CONNECT)
			check_connect(&pk.u.connect);
		else if (pk.type == MQTT_SUBSCRIBE)
			for (unsigned i = 0; i < pk.u.subscribe.count; i++)
				(void)mqtt_topic_match(pk.u.subscribe.filters[i].p,
						       pk.u.subscribe.filters[i].len, "a/b/c", 5);
		off += (size_t)rc;
	}
	return 0;
}
