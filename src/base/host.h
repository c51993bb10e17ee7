/* Host names as clients write them: in SAS resources, MQTT user names and
 * HTTP Host headers, with or without ":port", in any case. */
#ifndef FH_BASE_HOST_H
#define FH_BASE_HOST_H

#include <stdbool.h>
#include <stddef.h>

/* True when host[0..len) names `name`: case-insensitive, ignoring a
 * ":port" suffix (an unbracketed IPv6 literal keeps its colons). */
bool host_name_eq(const char *name, const char *host, size_t len);

#endif
