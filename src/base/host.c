/* Host name comparison (see host.h). */
#include "host.h"

#include <string.h>
#include <strings.h>

bool host_name_eq(const char *name, const char *host, size_t len)
{
	const char *colon = memchr(host, ':', len);
	if (colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - host)) == NULL)
		len = (size_t)(colon - host);
	return strlen(name) == len && strncasecmp(name, host, len) == 0;
}
