/* Encodings: base64 (RFC 4648, with padding), percent-encoding, hex. Pure. */
#ifndef FH_BASE_ENC_H
#define FH_BASE_ENC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Length of the base64 text for n bytes, without NUL. */
#define B64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)
/* Upper bound of the decoded length of n base64 characters. */
#define B64_DECODED_MAX(n) ((((n) + 3) / 4) * 3)

/* Writes B64_ENCODED_LEN(n) characters plus a NUL to out; returns the length. */
size_t b64_encode(const uint8_t *in, size_t n, char *out);
/* Appends the base64 text of in to b. */
void b64_encode_buf(struct buf *b, const uint8_t *in, size_t n);
/* Strict decode (padding required, no whitespace). out needs
 * B64_DECODED_MAX(n) bytes. Returns 0 and *outlen, or FH_EINVAL. */
int b64_decode(const char *in, size_t n, uint8_t *out, size_t *outlen);

/* Percent-decodes in[0..n) into out (which needs n+1 bytes, NUL-terminated).
 * Hex digits are case-insensitive; '+' is not special. A malformed escape or
 * a decoded NUL byte is FH_EINVAL. */
int pct_decode(const char *in, size_t n, char *out, size_t *outlen);
/* Appends in, percent-encoded like JavaScript's encodeURIComponent with
 * !'()* escaped too, uppercase hex. */
void pct_encode(struct buf *b, const char *in, size_t n);

/* The value of hex digit c (either case), or -1. */
int hex_value(char c);
void hex_encode(const uint8_t *in, size_t n, char *out); /* 2n chars + NUL, lowercase */
/* v in decimal + NUL into out (at most 20 digits); returns the digit count. */
size_t dec_u64(uint64_t v, char out[21]);

/* 1 when s[0..n) is well-formed UTF-8 with no NUL and no surrogates. */
int utf8_valid(const char *s, size_t n);

#endif
