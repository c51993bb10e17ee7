/* MQTT 3.1.1 (and 3.1, "MQIsdp" level 3) packet codec. Pure: bytes in,
 * structs out; no sockets, no globals.
 *
 * Parsing is incremental at packet granularity: mqtt_parse() looks at the
 * bytes received so far and either asks for more, rejects them, or decodes
 * exactly one packet. Every length is checked against max_packet as soon as
 * the remaining-length field is complete, before the body has arrived, so a
 * peer cannot make the caller buffer or allocate more than max_packet.
 *
 * Decoded strings and payloads point into the caller's input buffer
 * (borrowed): they are valid until the caller consumes those bytes. */
#ifndef FH_CODEC_MQTT_H
#define FH_CODEC_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum mqtt_type {
	MQTT_CONNECT = 1,
	MQTT_CONNACK = 2,
	MQTT_PUBLISH = 3,
	MQTT_PUBACK = 4,
	MQTT_PUBREC = 5,
	MQTT_PUBREL = 6,
	MQTT_PUBCOMP = 7,
	MQTT_SUBSCRIBE = 8,
	MQTT_SUBACK = 9,
	MQTT_UNSUBSCRIBE = 10,
	MQTT_UNSUBACK = 11,
	MQTT_PINGREQ = 12,
	MQTT_PINGRESP = 13,
	MQTT_DISCONNECT = 14,
};

/* CONNACK return codes. */
enum {
	MQTT_RC_ACCEPTED = 0,
	MQTT_RC_BAD_PROTOCOL = 1,
	MQTT_RC_ID_REJECTED = 2,
	MQTT_RC_UNAVAILABLE = 3,
	MQTT_RC_BAD_CREDENTIALS = 4,
	MQTT_RC_NOT_AUTHORIZED = 5,
};

/* A length-delimited string borrowed from the input (not NUL-terminated). */
struct mqtt_str {
	const char *p;
	uint16_t len;
};

struct mqtt_connect {
	uint8_t level; /* 4 = 3.1.1 ("MQTT"), 3 = 3.1 ("MQIsdp") */
	bool clean;
	uint16_t keepalive;
	struct mqtt_str client_id;
	bool has_will;
	uint8_t will_qos;
	bool will_retain;
	struct mqtt_str will_topic;
	const uint8_t *will_msg;
	uint16_t will_len;
	bool has_username;
	struct mqtt_str username;
	bool has_password;
	const uint8_t *password; /* binary data in MQTT; SAS tokens are text */
	uint16_t password_len;
};

struct mqtt_publish {
	uint8_t qos; /* 0 or 1 or 2 (the session decides what to do with 2) */
	bool dup;
	bool retain;
	struct mqtt_str topic;
	uint16_t packet_id; /* 0 when qos == 0 */
	const uint8_t *payload;
	size_t payload_len;
};

#define MQTT_MAX_FILTERS 16 /* per SUBSCRIBE/UNSUBSCRIBE packet; more is a protocol error */

struct mqtt_subscribe { /* also UNSUBSCRIBE (qos unused) */
	uint16_t packet_id;
	unsigned count;
	struct mqtt_str filters[MQTT_MAX_FILTERS];
	uint8_t qos[MQTT_MAX_FILTERS];
};

struct mqtt_packet {
	enum mqtt_type type;
	uint8_t flags; /* low nibble of the fixed header */
	union {
		struct mqtt_connect connect;
		struct mqtt_publish publish;
		struct mqtt_subscribe subscribe;
		uint16_t packet_id; /* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK id */
		struct {
			bool session_present;
			uint8_t rc;
		} connack;
	} u;
};

/* Decodes one packet from p[0..n).
 * Returns the number of bytes the packet occupies (> 0) and fills *out;
 * 0 when more bytes are needed; FH_ETOOBIG when the declared remaining length
 * exceeds max_packet (known as soon as the length field is complete);
 * FH_EPROTO for any malformed packet: remaining length over 4 bytes, reserved
 * flag bits wrong for the type, strings overrunning the packet, invalid UTF-8
 * or U+0000 in any string, wildcards (+ #) or an empty topic in PUBLISH, QoS 3,
 * PUBLISH QoS>0 with packet id 0, a CONNECT with a protocol name/level other
 * than MQTT/4 or MQIsdp/3 (FH_EPROTO too: the session answers CONNACK 1 for
 * a wrong level if it wants), will/username/password flag inconsistencies,
 * SUBSCRIBE with no filters, an empty filter or more than MQTT_MAX_FILTERS,
 * trailing bytes inside a packet. Both client and server packet types are
 * decoded (the session decides which it accepts). */
int mqtt_parse(const uint8_t *p, size_t n, size_t max_packet, struct mqtt_packet *out);

/* Encoders append one packet to out. */
void mqtt_encode_connack(struct buf *out, bool session_present, uint8_t rc);
void mqtt_encode_publish(struct buf *out, const char *topic, size_t topic_len, uint8_t qos,
			 uint16_t packet_id, const void *payload, size_t payload_len);
/* PUBACK, PUBREC, PUBREL (flags 0x2), PUBCOMP, UNSUBACK: type + packet id. */
void mqtt_encode_ack(struct buf *out, enum mqtt_type type, uint16_t packet_id);
void mqtt_encode_suback(struct buf *out, uint16_t packet_id, const uint8_t *codes, unsigned n);
void mqtt_encode_pingresp(struct buf *out);
/* Client-side encoders, used by tests and the load generator. */
void mqtt_encode_connect(struct buf *out, const struct mqtt_connect *c);
void mqtt_encode_subscribe(struct buf *out, uint16_t packet_id, const char *filter, uint8_t qos);
void mqtt_encode_simple(struct buf *out, enum mqtt_type type); /* PINGREQ, DISCONNECT */

/* MQTT topic filter match ('+' one level, '#' the rest); 1 when topic matches. */
int mqtt_topic_match(const char *filter, size_t flen, const char *topic, size_t tlen);

#endif
