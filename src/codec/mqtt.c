/* MQTT 3.1.1 / 3.1 packet codec (see mqtt.h). Decoding checks the declared
 * remaining length against max_packet before waiting for the body, and every
 * inner length against the packet's own end, so nothing is read or
 * allocated beyond what the peer has justified. */
#include "codec/mqtt.h"

#include <string.h>

#include "base/enc.h"
#include "base/err.h"

/* ---- decoding ----------------------------------------------------------- */

struct rd {
	const uint8_t *p, *end;
};

static int rd_u8(struct rd *r, uint8_t *v)
{
	if (r->p >= r->end)
		return FH_EPROTO;
	*v = *r->p++;
	return 0;
}

static int rd_u16(struct rd *r, uint16_t *v)
{
	if (r->end - r->p < 2)
		return FH_EPROTO;
	*v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return 0;
}

static int rd_bin(struct rd *r, const uint8_t **p, uint16_t *len)
{
	if (rd_u16(r, len) != 0 || r->end - r->p < *len)
		return FH_EPROTO;
	*p = r->p;
	r->p += *len;
	return 0;
}

/* A UTF-8 string: well formed, no U+0000 (utf8_valid checks both). */
static int rd_str(struct rd *r, struct mqtt_str *s)
{
	const uint8_t *p;
	if (rd_bin(r, &p, &s->len) != 0)
		return FH_EPROTO;
	s->p = (const char *)p;
	if (s->len && !utf8_valid(s->p, s->len))
		return FH_EPROTO;
	return 0;
}

static int parse_connect(struct rd *r, struct mqtt_connect *c)
{
	struct mqtt_str name;
	uint8_t level, flags;
	memset(c, 0, sizeof *c);
	if (rd_str(r, &name) || rd_u8(r, &level) || rd_u8(r, &flags) || rd_u16(r, &c->keepalive))
		return FH_EPROTO;
	bool v311 = name.len == 4 && memcmp(name.p, "MQTT", 4) == 0 && level == 4;
	bool v31 = name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0 && level == 3;
	if (!v311 && !v31)
		return FH_EPROTO;
	if (flags & 0x01)
		return FH_EPROTO; /* reserved */
	c->level = level;
	c->clean = flags & 0x02;
	c->has_will = flags & 0x04;
	c->will_qos = (flags >> 3) & 3;
	c->will_retain = flags & 0x20;
	c->has_password = flags & 0x40;
	c->has_username = flags & 0x80;
	if (!c->has_will && (c->will_qos || c->will_retain))
		return FH_EPROTO;
	if (c->will_qos == 3)
		return FH_EPROTO;
	if (c->has_password && !c->has_username)
		return FH_EPROTO;
	if (rd_str(r, &c->client_id))
		return FH_EPROTO;
	if (c->has_will) {
		if (rd_str(r, &c->will_topic) || c->will_topic.len == 0 ||
		    rd_bin(r, &c->will_msg, &c->will_len))
			return FH_EPROTO;
	}
	if (c->has_username && rd_str(r, &c->username))
		return FH_EPROTO;
	if (c->has_password && rd_bin(r, &c->password, &c->password_len))
		return FH_EPROTO;
	return r->p == r->end ? 0 : FH_EPROTO;
}

static int parse_publish(struct rd *r, uint8_t flags, struct mqtt_publish *pb)
{
	memset(pb, 0, sizeof *pb);
	pb->qos = (flags >> 1) & 3;
	pb->dup = flags & 0x08;
	pb->retain = flags & 0x01;
	if (pb->qos == 3 || (pb->qos == 0 && pb->dup))
		return FH_EPROTO;
	if (rd_str(r, &pb->topic) || pb->topic.len == 0)
		return FH_EPROTO;
	if (memchr(pb->topic.p, '+', pb->topic.len) || memchr(pb->topic.p, '#', pb->topic.len))
		return FH_EPROTO;
	if (pb->qos > 0 && (rd_u16(r, &pb->packet_id) || pb->packet_id == 0))
		return FH_EPROTO;
	pb->payload = r->p;
	pb->payload_len = (size_t)(r->end - r->p);
	r->p = r->end;
	return 0;
}

static int parse_subscribe(struct rd *r, bool with_qos, struct mqtt_subscribe *s)
{
	memset(s, 0, sizeof *s);
	if (rd_u16(r, &s->packet_id) || s->packet_id == 0)
		return FH_EPROTO;
	while (r->p < r->end) {
		if (s->count == MQTT_MAX_FILTERS)
			return FH_EPROTO;
		struct mqtt_str *f = &s->filters[s->count];
		if (rd_str(r, f) || f->len == 0)
			return FH_EPROTO;
		if (with_qos) {
			uint8_t q;
			if (rd_u8(r, &q) || q > 2)
				return FH_EPROTO;
			s->qos[s->count] = q;
		}
		s->count++;
	}
	return s->count ? 0 : FH_EPROTO;
}

/* The low nibble each type must carry (PUBLISH is checked separately). */
static int flags_ok(enum mqtt_type t, uint8_t flags)
{
	switch (t) {
	case MQTT_PUBLISH:
		return 1;
	case MQTT_PUBREL:
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		return flags == 2;
	default:
		return flags == 0;
	}
}

int mqtt_parse(const uint8_t *p, size_t n, size_t max_packet, struct mqtt_packet *out)
{
	if (n < 2)
		return 0;
	uint8_t type = p[0] >> 4, flags = p[0] & 0x0f;
	if (type < MQTT_CONNECT || type > MQTT_DISCONNECT || !flags_ok(type, flags))
		return FH_EPROTO;
	size_t len = 0, i = 1;
	for (unsigned shift = 0;; shift += 7) {
		if (i > 4)
			return FH_EPROTO; /* a fifth length byte */
		if (i >= n)
			return 0;
		uint8_t b = p[i++];
		len |= (size_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			break;
	}
	if (len > max_packet || len + i > max_packet + 5)
		return FH_ETOOBIG;
	if (n - i < len)
		return 0;
	struct rd r = {p + i, p + i + len};
	memset(out, 0, sizeof *out);
	out->type = type;
	out->flags = flags;
	int rc = 0;
	switch (type) {
	case MQTT_CONNECT:
		rc = parse_connect(&r, &out->u.connect);
		break;
	case MQTT_CONNACK: {
		uint8_t sp, code;
		if (len != 2 || rd_u8(&r, &sp) || rd_u8(&r, &code) || (sp & 0xfe))
			return FH_EPROTO;
		out->u.connack.session_present = sp;
		out->u.connack.rc = code;
		break;
	}
	case MQTT_PUBLISH:
		rc = parse_publish(&r, flags, &out->u.publish);
		break;
	case MQTT_SUBSCRIBE:
		rc = parse_subscribe(&r, true, &out->u.subscribe);
		break;
	case MQTT_UNSUBSCRIBE:
		rc = parse_subscribe(&r, false, &out->u.subscribe);
		break;
	case MQTT_SUBACK:
		if (len < 3 || rd_u16(&r, &out->u.packet_id))
			return FH_EPROTO;
		r.p = r.end; /* return codes: not needed by anyone here */
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
	case MQTT_UNSUBACK:
		if (len != 2 || rd_u16(&r, &out->u.packet_id))
			return FH_EPROTO;
		break;
	default: /* PINGREQ, PINGRESP, DISCONNECT */
		if (len != 0)
			return FH_EPROTO;
	}
	if (rc != 0 || r.p != r.end)
		return FH_EPROTO;
	return (int)(i + len);
}

/* ---- encoding ------------------------------------------------------------ */

static void put_header(struct buf *out, uint8_t first, size_t len)
{
	uint8_t h[5];
	size_t k = 0;
	h[k++] = first;
	do {
		uint8_t b = len & 0x7f;
		len >>= 7;
		h[k++] = len ? (uint8_t)(b | 0x80) : b;
	} while (len);
	buf_append(out, h, k);
}

static void put_u16(struct buf *out, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	buf_append(out, b, 2);
}

static void put_bin(struct buf *out, const void *p, uint16_t n)
{
	put_u16(out, n);
	buf_append(out, p, n);
}

void mqtt_encode_connack(struct buf *out, bool session_present, uint8_t rc)
{
	uint8_t b[4] = {MQTT_CONNACK << 4, 2, session_present ? 1 : 0, rc};
	buf_append(out, b, 4);
}

void mqtt_encode_publish(struct buf *out, const char *topic, size_t topic_len, uint8_t qos,
			 uint16_t packet_id, const void *payload, size_t payload_len)
{
	size_t len = 2 + topic_len + (qos ? 2 : 0) + payload_len;
	put_header(out, (uint8_t)(MQTT_PUBLISH << 4 | qos << 1), len);
	put_bin(out, topic, (uint16_t)topic_len);
	if (qos)
		put_u16(out, packet_id);
	if (payload_len)
		buf_append(out, payload, payload_len);
}

void mqtt_encode_ack(struct buf *out, enum mqtt_type type, uint16_t packet_id)
{
	put_header(out, (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0)), 2);
	put_u16(out, packet_id);
}

void mqtt_encode_suback(struct buf *out, uint16_t packet_id, const uint8_t *codes, unsigned n)
{
	put_header(out, MQTT_SUBACK << 4, 2 + n);
	put_u16(out, packet_id);
	buf_append(out, codes, n);
}

void mqtt_encode_pingresp(struct buf *out)
{
	mqtt_encode_simple(out, MQTT_PINGRESP);
}

void mqtt_encode_simple(struct buf *out, enum mqtt_type type)
{
	uint8_t b[2] = {(uint8_t)(type << 4), 0};
	buf_append(out, b, 2);
}

void mqtt_encode_connect(struct buf *out, const struct mqtt_connect *c)
{
	bool v31 = c->level == 3;
	const char *name = v31 ? "MQIsdp" : "MQTT";
	size_t len = 2 + strlen(name) + 4 + 2 + c->client_id.len;
	if (c->has_will)
		len += 4 + c->will_topic.len + c->will_len;
	if (c->has_username)
		len += 2 + c->username.len;
	if (c->has_password)
		len += 2 + c->password_len;
	put_header(out, MQTT_CONNECT << 4, len);
	put_bin(out, name, (uint16_t)strlen(name));
	uint8_t flags = (uint8_t)((c->clean ? 2 : 0) | (c->has_will ? 4 : 0) |
				  (c->has_will ? c->will_qos << 3 : 0) |
				  (c->has_will && c->will_retain ? 0x20 : 0) |
				  (c->has_password ? 0x40 : 0) | (c->has_username ? 0x80 : 0));
	uint8_t b[2] = {v31 ? 3 : 4, flags};
	buf_append(out, b, 2);
	put_u16(out, c->keepalive);
	put_bin(out, c->client_id.p, c->client_id.len);
	if (c->has_will) {
		put_bin(out, c->will_topic.p, c->will_topic.len);
		put_bin(out, c->will_msg, c->will_len);
	}
	if (c->has_username)
		put_bin(out, c->username.p, c->username.len);
	if (c->has_password)
		put_bin(out, c->password, c->password_len);
}

void mqtt_encode_subscribe(struct buf *out, uint16_t packet_id, const char *filter, uint8_t qos)
{
	size_t fl = strlen(filter);
	put_header(out, MQTT_SUBSCRIBE << 4 | 2, 2 + 2 + fl + 1);
	put_u16(out, packet_id);
	put_bin(out, filter, (uint16_t)fl);
	buf_append(out, &qos, 1);
}

/* ---- topic filters ---------------------------------------------------------- */

int mqtt_topic_match(const char *filter, size_t flen, const char *topic, size_t tlen)
{
	size_t f = 0, t = 0;
	while (f < flen) {
		if (filter[f] == '#')
			return 1; /* the rest, including the parent level */
		if (filter[f] == '+') {
			while (t < tlen && topic[t] != '/')
				t++;
			f++;
		} else {
			while (f < flen && t < tlen && filter[f] != '/' && filter[f] == topic[t]) {
				f++;
				t++;
			}
			if (f < flen && filter[f] != '/')
				return 0;
			if (t < tlen && topic[t] != '/')
				return 0;
		}
		if (f == flen)
			return t == tlen;
		/* filter[f] == '/' */
		if (t == tlen) /* "a/#" matches "a" */
			return flen - f == 2 && filter[f + 1] == '#';
		f++;
		t++;
	}
	return t == tlen;
}
