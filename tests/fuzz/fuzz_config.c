/* Fuzz target for the configuration parser: arbitrary bytes as an INI file.
 * Any input must either load (and then free cleanly) or fail with a
 * message; never crash or leak. */
#include <stdint.h>
#include <string.h>

#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	char err[512];
	if (size > 64 * 1024)
		return 0;
	if (config_load_text(&cfg, (const char *)data, size, "fuzz.ini", err, sizeof err) == 0) {
		/* Invariants of a successful load. */
		if (cfg.nhubs == 0 || !cfg.data_dir || !cfg.log_level ||
		    (!cfg.tls_cert != !cfg.tls_key))
			__builtin_trap();
		config_free(&cfg);
	} else if (err[0] == '\0') {
		__builtin_trap();
	}
	return 0;
}
