/* Logging. Until log_start_async() lines go straight to stderr (the CLI,
 * start-up, tests). After it, a line is formatted by the caller into a
 * bounded ring (LOG_RING_BYTES) and written by a thread of its own, so no
 * thread that logs (the event loop, the store writer) ever waits for
 * stderr: a terminal, pipe or journal that is slow or never read cannot
 * stop the server. A line that does not fit is dropped and counted; when
 * room returns the writer says how many were lost. log_stop() writes what
 * is queued and stops the thread (giving up after LOG_STOP_WAIT_S when the
 * output does not move).
 *
 *   caller: format, lock, fits? copy : dropped++, signal, unlock
 *   writer: wait; take a run of bytes; unlock; write(2) all; lock; free it;
 *           dropped? write "N log lines dropped" once there is room */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define LOG_RING_BYTES (1u << 20)
#define LOG_STOP_WAIT_S 2

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

/* ---- the asynchronous sink ---- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stopping;
	int fd;
	char *ring; /* LOG_RING_BYTES */
	size_t head, tail, used; /* bytes in [tail, head) modulo the size */
	unsigned long dropped, dropped_total;
} sink = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .fd = 2};

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to write: the line is lost */
		p += w;
		n -= (size_t)w;
	}
}

static void ring_put(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sink.ring[(sink.head + i) % LOG_RING_BYTES] = p[i];
	sink.head = (sink.head + n) % LOG_RING_BYTES;
	sink.used += n;
}

static void *sink_main(void *arg)
{
	pthread_mutex_lock(&sink.mu);
	for (;;) {
		while (sink.used == 0 && !sink.dropped && !sink.stopping)
			pthread_cond_wait(&sink.cond, &sink.mu);
		if (sink.used == 0 && !sink.dropped && sink.stopping)
			break;
		size_t n = sink.used;
		if (sink.tail + n > LOG_RING_BYTES)
			n = LOG_RING_BYTES - sink.tail; /* the run up to the end */
		const char *p = sink.ring + sink.tail;
		unsigned long dropped = sink.dropped;
		sink.dropped = 0;
		pthread_mutex_unlock(&sink.mu);
		write_all(sink.fd, p, n);
		if (dropped) {
			char note[160], ts[32];
			clock_iso8601(clock_now_ms(), ts);
			int k = snprintf(note, sizeof note,
					 "%s warn  log: %lu lines dropped: the log output was slower "
					 "than the server\n",
					 ts, dropped);
			write_all(sink.fd, note, (size_t)k);
		}
		pthread_mutex_lock(&sink.mu);
		sink.tail = (sink.tail + n) % LOG_RING_BYTES;
		sink.used -= n;
	}
	pthread_mutex_unlock(&sink.mu);
	return NULL;
}

int log_start_async(int fd)
{
	static char ring[LOG_RING_BYTES];
	pthread_mutex_lock(&sink.mu);
	if (sink.running) {
		pthread_mutex_unlock(&sink.mu);
		return 0;
	}
	sink.ring = ring;
	sink.fd = fd;
	sink.head = sink.tail = sink.used = 0;
	sink.dropped = sink.dropped_total = 0;
	sink.stopping = false;
	int rc = pthread_create(&sink.thread, NULL, sink_main, NULL);
	sink.running = rc == 0;
	pthread_mutex_unlock(&sink.mu);
	return rc == 0 ? 0 : -1;
}

void log_stop(void)
{
	pthread_mutex_lock(&sink.mu);
	if (!sink.running) {
		pthread_mutex_unlock(&sink.mu);
		return;
	}
	sink.stopping = true;
	pthread_cond_signal(&sink.cond);
	pthread_mutex_unlock(&sink.mu);
	/* An output nobody reads must not hold the process at exit: wait for
	 * what is queued at most LOG_STOP_WAIT_S, then leave it. */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += LOG_STOP_WAIT_S;
	if (pthread_timedjoin_np(sink.thread, NULL, &until) != 0) {
		pthread_detach(sink.thread);
		return; /* still "running": later lines go to the ring and are lost */
	}
	pthread_mutex_lock(&sink.mu);
	sink.running = false;
	pthread_mutex_unlock(&sink.mu);
}

unsigned long log_dropped(void)
{
	pthread_mutex_lock(&sink.mu);
	unsigned long n = sink.dropped_total;
	pthread_mutex_unlock(&sink.mu);
	return n;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char line[2048], out[2100];
	char ts[32];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	log_redact(line);
	clock_iso8601(clock_now_ms(), ts);
	int n = snprintf(out, sizeof out, "%s %-5s %s\n", ts, level_names[level], line);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof out) {
		n = (int)sizeof out - 1;
		out[n - 1] = '\n';
	}
	pthread_mutex_lock(&sink.mu);
	if (!sink.running) {
		pthread_mutex_unlock(&sink.mu);
		write_all(2, out, (size_t)n); /* before the sink starts: at once */
		return;
	}
	if (sink.used + (size_t)n <= LOG_RING_BYTES) {
		ring_put(out, (size_t)n);
	} else {
		sink.dropped++;
		sink.dropped_total++;
	}
	pthread_cond_signal(&sink.cond);
	pthread_mutex_unlock(&sink.mu);
}
