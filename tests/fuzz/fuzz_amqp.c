/* libFuzzer target: the AMQP endpoint's connection (src/hub/amqp.c and
 * what it routes to) fed arbitrary bytes after the TLS layer: protocol
 * headers, SASL frames, open / begin / attach / transfer frames through
 * Qpid Proton's connection driver and fleethub's handlers for SASL, $cbs,
 * $management and link attaches. The hub has keys nobody in the corpus
 * signed with, so every put-token is refused and nothing reaches the store
 * (there is none here). Invariants: no crash, no leak, no read outside the
 * input (ASan, UBSan). The corpus starts from what the official clients
 * sent: the Event Hubs consumer, the service SDK's C2D send and feedback
 * receiver, the redirect sample, a flood of link attaches. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "hub/amqp.h"
#include "hub/hub.h"

static struct hub hub;
static struct hub *hubs[1] = {&hub};
static struct hub_set set = {hubs, 1};

static void setup(void)
{
	static int done;
	if (done++)
		return;
	log_min_level = LOG_ERROR; /* every refusal is logged at info */
	snprintf(hub.name, sizeof hub.name, "localhost");
	static const char *const names[HUB_NPOLICIES] = {"iothubowner", "service", "device",
							  "registryRead", "registryReadWrite"};
	for (int i = 0; i < HUB_NPOLICIES; i++) {
		hub.policies[i].name = names[i];
		hub.policies[i].rights = 15;
		snprintf(hub.policies[i].primary, sizeof hub.policies[i].primary,
			 "ZnV6ei1rZXktbm90LXVzZWQtYnktY2xpZW50cy0wMDA=");
		snprintf(hub.policies[i].secondary, sizeof hub.policies[i].secondary,
			 "ZnV6ei1rZXktbm90LXVzZWQtYnktY2xpZW50cy0xMTE=");
	}
	hub.events.partitions = 4;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	void *c = hub_amqp_new(&set, NULL, &hub, 5671);
	/* in two pieces, as a socket may deliver them */
	size_t half = size / 2;
	hub_amqp_feed(c, data, half);
	hub_amqp_feed(c, data + half, size - half);
	hub_amqp_free(c);
	return 0;
}
