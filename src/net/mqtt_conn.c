/* Sending MQTT on a connection: see mqtt_conn.h. */
#include "mqtt_conn.h"

#include "codec/mqtt.h"

void mqtt_conn_send(struct net_conn *c, struct buf *b)
{
	if (c)
		net_conn_write(c, b->data, b->len);
	buf_reset(b);
}

void mqtt_conn_refuse(struct net_conn *c, uint8_t rc)
{
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, false, rc);
	mqtt_conn_send(c, &b);
	buf_free(&b);
	if (c)
		net_conn_close(c);
}
