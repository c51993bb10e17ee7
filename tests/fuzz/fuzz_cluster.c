/* Fuzz target for src/core/cluster.c: arbitrary text as a message from
 * another node (it comes out of the database). Invariants: a decoded
 * message encodes again and decodes to the same fields; nothing crashes
 * or reads outside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	struct cluster_msg m, again;
	if (cluster_decode(text, &m) == 0) {
		char *enc = cluster_encode(&m);
		if (!enc || cluster_decode(enc, &again) != 0 || again.kind != m.kind ||
		    again.change != m.change || again.n != m.n || strcmp(again.node, m.node) != 0 ||
		    strcmp(again.scope, m.scope) != 0 || strcmp(again.id, m.id) != 0 || strcmp(again.to, m.to) != 0 ||
		    !again.text != !m.text || (m.text && strcmp(again.text, m.text) != 0))
			abort();
		cluster_msg_clear(&again);
		free(enc);
		cluster_msg_clear(&m);
	}
	free(text);
	return 0;
}
