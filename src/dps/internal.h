/* Names shared inside the DPS layer only. */
#ifndef FH_DPS_INTERNAL_H
#define FH_DPS_INTERNAL_H

#include <stdint.h>

#include "dps.h"

/* Verifies a service SAS (an Authorization header value: sr = the DPS host
 * name, skn = one of its policies) and returns the policy's rights.
 * Returns 0 or FH_EAUTH with a reason for the log in *why. */
int dps__auth_service(const struct dps *d, const char *header, int64_t now_s, unsigned *rights,
		      const char **why);

#endif
