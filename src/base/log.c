#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clock.h"

enum log_level log_min_level = LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

/* Replaces the value that follows each marker (up to a delimiter) by
 * "<redacted>", in place. The line never grows: a value shorter than the
 * replacement text is overwritten with '*' instead. */
static const char *const markers[] = {"sig=", "SharedAccessKey=", "SharedAccessSignature ",
				      "owner_key=", "primaryKey\":\"", "secondaryKey\":\""};

void log_redact(char *line)
{
	static const char repl[] = "<redacted>";
	for (size_t m = 0; m < sizeof markers / sizeof markers[0]; m++) {
		size_t ml = strlen(markers[m]);
		char *p = line;
		while ((p = strstr(p, markers[m])) != NULL) {
			char *v = p + ml;
			size_t vl = strcspn(v, "&; \"',\n\t");
			if (m == 2) /* the whole token body up to whitespace or quote */
				vl = strcspn(v, " \"'\n\t");
			if (vl == 0 || (vl == sizeof repl - 1 && !strncmp(v, repl, vl))) {
				p = v;
				continue;
			}
			size_t rl = sizeof repl - 1;
			if (rl > vl) {
				/* Only shrink: keep as many chars of the marker
				 * text as fit, padding with '*'. */
				memset(v, '*', vl);
			} else {
				memcpy(v, repl, rl);
				memmove(v + rl, v + vl, strlen(v + vl) + 1);
			}
			p = v + (rl > vl ? vl : rl);
		}
	}
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	char ts[32];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	log_redact(line);
	clock_iso8601(clock_now_ms(), ts);
	fprintf(stderr, "%s %-5s %s\n", ts, level_names[level], line);
}
