/* The hub's AMQP 1.0 endpoint (amqp.md): what back ends built on the
 * official service SDK and on Event Hubs clients speak.
 *
 *   azure-iothub Client      C2D sender on /messages/devicebound, the
 *                            feedback receiver on /messages/serviceBound/feedback
 *   EventHubConsumerClient   $management reads, receivers on
 *                            <hub>/ConsumerGroups/<group>/Partitions/<n>
 *   the redirect sample      a receiver on .../messages/events/... is
 *                            redirected (amqp:link:redirect) to the hub's
 *                            Event Hub-compatible name, the hub itself
 *
 * Authentication: SASL ANONYMOUS (then CBS put-token on $cbs), SASL PLAIN
 * with "<policy>@sas.root.<hub>" and a SAS token, or the bare AMQP header
 * and CBS. Qpid Proton's connection driver is the protocol engine; bytes
 * come from the project's own TLS and WebSocket code (net/), on the loop
 * thread. One struct per connection: hub_amqp_new makes it, and
 * hub_amqp_handler is the net_conn handler that drives it (set by the
 * caller with net_conn_set_handler or a WebSocket upgrade). */
#ifndef FH_HUB_AMQP_H
#define FH_HUB_AMQP_H

#include <stddef.h>
#include <stdint.h>

#include "net/net.h"

struct hub;
struct hub_set;

#define AMQP_HANDSHAKE_MS 10000 /* from the TCP accept to the AMQP open */
#define AMQP_WS_MAX_FRAME (1024 * 1024) /* a WebSocket frame carrying AMQP */

/* A new AMQP connection's state: the hub is picked from the AMQP open's
 * host name among set, else sni_hub (the TLS SNI name's), else
 * default_hub. port is what a redirect names (5671, or 443 for WebSockets). */
void *hub_amqp_new(const struct hub_set *set, struct hub *sni_hub, struct hub *default_hub,
		   int port);
extern const struct net_conn_handler hub_amqp_handler;

/* For the fuzz target: bytes into a connection that has no socket (what it
 * would write is dropped), and its end. */
void hub_amqp_feed(void *conn, const uint8_t *p, size_t n);
void hub_amqp_free(void *conn);

#endif
