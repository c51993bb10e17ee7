/* A growable byte buffer. data is always NUL-terminated when cap > 0 so it can
 * be used as a C string; len does not count that NUL. */
#ifndef FH_BASE_BUF_H
#define FH_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

#define BUF_INIT {NULL, 0, 0}

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Empties the buffer and keeps its memory. */
void buf_reset(struct buf *b);
/* Makes room for extra more bytes (plus the NUL). */
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_appends(struct buf *b, const char *s);
void buf_appendc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Stream framing for protocols read in pieces: consume(ctx, data, len)
 * gets everything not yet used (pending's bytes, then p's) and returns how
 * many bytes it used, or -1 to stop; the unused tail is kept in pending for
 * the next call. With nothing pending, p is handed over in place (no copy).
 * Returns -1 when consume did, else 0. */
int buf_feed(struct buf *pending, const void *p, size_t n,
	     long (*consume)(void *ctx, const unsigned char *data, size_t len), void *ctx);
/* Transfers the data out (caller frees); the buffer becomes empty. */
char *buf_steal(struct buf *b);

#endif
