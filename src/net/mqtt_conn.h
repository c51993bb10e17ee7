/* Sending MQTT on a connection: what the hub's and the DPS's device
 * sessions share. Loop thread only. */
#ifndef FH_NET_MQTT_CONN_H
#define FH_NET_MQTT_CONN_H

#include <stdint.h>

#include "base/buf.h"
#include "net/net.h"

/* A client must send its whole CONNECT within this long of connecting (TLS
 * or WebSocket upgrade done); then the connection is closed. */
#define MQTT_CONNECT_TIMEOUT_MS 10000

/* Queues the encoded packets in b on c (when c is not NULL) and empties b. */
void mqtt_conn_send(struct net_conn *c, struct buf *b);
/* Sends CONNACK with rc (no session present) and closes c after it. */
void mqtt_conn_refuse(struct net_conn *c, uint8_t rc);

#endif
