/* One line per event on stderr: time, level, message. The level is checked
 * before anything is formatted. A server starts the asynchronous sink
 * (log_start_async): lines then go through a bounded buffer and a thread
 * of their own, so logging never blocks the caller; lines that do not fit
 * are dropped, counted and reported. The log layer redacts secrets itself: any
 * SAS signature (sig=...), SharedAccessKey=... value or "SharedAccessSignature"
 * token body is replaced by "<redacted>" before the line is written, so a
 * careless caller cannot leak a key. */
#ifndef FH_BASE_LOG_H
#define FH_BASE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern enum log_level log_min_level;

#define log_at(level, ...)                                                     \
	do {                                                                   \
		if ((level) >= log_min_level)                                  \
			log_write((level), __VA_ARGS__);                       \
	} while (0)

void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Exposed for tests: redacts secrets in line (NUL-terminated) in place. */
void log_redact(char *line);
/* Starts writing lines to fd from a thread of their own (see log.c).
 * Returns 0 or -1 (then lines stay synchronous). */
int log_start_async(int fd);
/* Writes what is queued and stops the thread; later lines are synchronous. */
void log_stop(void);
/* Lines dropped since log_start_async because the buffer was full. */
unsigned long log_dropped(void);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *s);

#endif
