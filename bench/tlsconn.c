/* TLS connections for the load generator (see tlsconn.h).
 *
 * Data path:
 *   socket --uv_read--> rbio --SSL_read--> on_data (the owner frames it)
 *   tlsconn_send --SSL_write--> wbio --uv_try_write, else uv_write--> socket
 *
 * Invariants: every SSL call is preceded by ERR_clear_error() and followed
 * by flush_wbio() (TLS 1.3 session tickets and alerts appear as output of
 * SSL_read too); the read buffer and the plaintext buffer are shared by all
 * connections of the loop, which is safe because BIO_write copies and the
 * owner consumes the plaintext before the next read; the struct is freed
 * only in the close callback of its last handle, after libuv has cancelled
 * (and called back) every pending write, shutdown and connect request. */
#include "tlsconn.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

#define READ_CHUNK (64 * 1024)
#define PLAIN_CHUNK (16 * 1024)
#define DRAIN_MS 2000 /* how long a graceful close waits for the peer's EOF */

enum state { ST_TCP, ST_TLS, ST_OPEN, ST_DRAINING, ST_CLOSED };

struct tlsconn {
	uv_tcp_t tcp;
	uv_timer_t timer; /* the deadline, the tick or the drain deadline */
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	enum state state;
	enum tlsconn_error err;
	char detail[160];
	const struct tlsconn_handler *h;
	void *app;
	int handles_open;
	bool blocked;  /* the queue went above HIGH_WATER; on_drain is owed */
	bool deadline; /* the timer is a deadline, not a tick */
	uint64_t deadline_ms;
	size_t queued; /* bytes handed to uv_write, not yet written */
};

const char *tlsconn_strerror(enum tlsconn_error e)
{
	switch (e) {
	case TLSCONN_OK: return "ok";
	case TLSCONN_ECONNECT: return "TCP connect failed";
	case TLSCONN_ETLS: return "TLS failure";
	case TLSCONN_EREFUSED: return "refused";
	case TLSCONN_ETIMEOUT: return "timed out";
	case TLSCONN_EPROTO: return "protocol error";
	case TLSCONN_ECLOSED: return "closed by the peer";
	case TLSCONN_EIO: return "socket error";
	}
	return "?";
}

/* ---- TLS contexts --------------------------------------------------------- */

static SSL_CTX *new_ctx(const SSL_METHOD *m, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(m);
	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

static SSL_CTX *ctx_error(SSL_CTX *ctx, char *err, size_t errlen, const char *what,
                          const char *file)
{
	snprintf(err, errlen, "cannot load %s %s: %s", what, file,
	         ERR_reason_error_string(ERR_get_error()));
	SSL_CTX_free(ctx);
	return NULL;
}

/* The generator's verification cache: one run dials one or two names and
 * gets the same certificate thousands of times, and OpenSSL 3.0's chain
 * verification cost the generator more than the server spent on the whole
 * handshake. A certificate chain is verified in full (chain, expiry, name)
 * the first time; later the same leaf bytes presented for the same name
 * are accepted without rebuilding the chain. The handshake itself, and the
 * server's proof that it holds the key (CertificateVerify), are unchanged.
 * Loop thread only. */
#define VERIFIED_MAX 8
static struct {
	unsigned char digest[EVP_MAX_MD_SIZE];
	char name[256];
} verified[VERIFIED_MAX];
static unsigned nverified;

/* The name the connection must match (host name or IP), "" when none. */
static void expected_name(X509_STORE_CTX *xs, char *out, size_t outlen)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	X509_VERIFY_PARAM *param = ssl ? SSL_get0_param(ssl) : NULL;
	const char *host = param ? X509_VERIFY_PARAM_get0_host(param, 0) : NULL;
	char *ip = param && !host ? X509_VERIFY_PARAM_get1_ip_asc(param) : NULL;
	snprintf(out, outlen, "%s", host ? host : ip ? ip : "");
	OPENSSL_free(ip);
}

static int verify_cached(X509_STORE_CTX *xs, void *arg)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned dl = 0;
	char name[256];
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	expected_name(xs, name, sizeof name);
	if (leaf && X509_digest(leaf, EVP_sha256(), digest, &dl) == 1) {
		for (unsigned i = 0; i < nverified; i++)
			if (memcmp(verified[i].digest, digest, dl) == 0 &&
			    strcmp(verified[i].name, name) == 0)
				return 1;
	}
	int ok = X509_verify_cert(xs);
	if (ok == 1 && dl > 0 && nverified < VERIFIED_MAX) {
		memcpy(verified[nverified].digest, digest, dl);
		snprintf(verified[nverified].name, sizeof verified[nverified].name, "%s", name);
		nverified++;
	}
	return ok;
}

SSL_CTX *tlsconn_client_ctx(const char *ca_file, bool insecure, char *err, size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_client_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
		return ctx_error(ctx, err, errlen, "CA file", ca_file);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_cert_verify_callback(ctx, verify_cached, NULL);
	return ctx;
}

SSL_CTX *tlsconn_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_server_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
		return ctx_error(ctx, err, errlen, "certificate", cert_file);
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
		return ctx_error(ctx, err, errlen, "key", key_file);
	return ctx;
}

/* ---- closing -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *hd)
{
	struct tlsconn *c = hd->data;
	if (--c->handles_open > 0)
		return;
	c->state = ST_CLOSED;
	c->h->on_close(c, c->err, c->detail[0] ? c->detail : tlsconn_strerror(c->err));
	SSL_free(c->ssl);
	free(c);
}

/* Closes both handles now; pending requests are cancelled by libuv. */
static void close_now(struct tlsconn *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	c->state = ST_CLOSED;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void vfail(struct tlsconn *c, enum tlsconn_error e, const char *fmt, va_list ap)
{
	if (c->state == ST_CLOSED)
		return;
	if (c->err == TLSCONN_OK && c->state != ST_DRAINING) {
		c->err = e;
		vsnprintf(c->detail, sizeof c->detail, fmt, ap);
	}
	close_now(c);
}

/* Records the first failure and closes. Later failures (often consequences
 * of the first) are not recorded. */
void tlsconn_fail(struct tlsconn *c, enum tlsconn_error e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(c, e, fmt, ap);
	va_end(ap);
}

/* ---- writing -------------------------------------------------------------- */

struct write_req {
	uv_write_t req;
	struct tlsconn *c;
	size_t n;
	char data[];
};

static void on_written(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct tlsconn *c = w->c;
	c->queued -= w->n;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			tlsconn_fail(c, TLSCONN_EIO, "write: %s", uv_strerror(status));
		return;
	}
	if (c->blocked && c->queued <= TLSCONN_LOW_WATER) {
		c->blocked = false;
		if (c->state == ST_OPEN && c->h->on_drain)
			c->h->on_drain(c);
	}
}

/* Hands n bytes to the kernel: directly when nothing is queued ahead of
 * them, the rest through a copied uv_write. */
static void write_out(struct tlsconn *c, const char *p, size_t n)
{
	if (c->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		int k = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (k >= 0) {
			p += k;
			n -= (size_t)k;
			if (n == 0)
				return;
		} else if (k != UV_EAGAIN) {
			tlsconn_fail(c, TLSCONN_EIO, "write: %s", uv_strerror(k));
			return;
		}
	}
	struct write_req *w = xmalloc(sizeof *w + n);
	memcpy(w->data, p, n);
	w->c = c;
	w->n = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
	if (rc != 0) {
		free(w);
		tlsconn_fail(c, TLSCONN_EIO, "write: %s", uv_strerror(rc));
		return;
	}
	c->queued += n;
	if (c->queued > TLSCONN_HIGH_WATER)
		c->blocked = true;
}

/* Moves what OpenSSL produced into the socket. */
static void flush_wbio(struct tlsconn *c)
{
	static char chunk[READ_CHUNK]; /* loop thread only; written out before reuse */
	size_t pending;
	while ((pending = BIO_ctrl_pending(c->wbio)) > 0) {
		if (c->state == ST_CLOSED) {
			(void)BIO_reset(c->wbio);
			return;
		}
		int n = BIO_read(c->wbio, chunk,
		                 pending < sizeof chunk ? (int)pending : (int)sizeof chunk);
		if (n <= 0)
			return;
		write_out(c, chunk, (size_t)n);
	}
}

int tlsconn_send(struct tlsconn *c, const void *p, size_t n)
{
	if (c->state != ST_OPEN)
		return -1;
	const char *q = p;
	while (n > 0) {
		ERR_clear_error();
		int k = SSL_write(c->ssl, q, n > INT32_MAX ? INT32_MAX : (int)n);
		if (k <= 0) {
			flush_wbio(c);
			tlsconn_fail(c, TLSCONN_ETLS, "SSL_write: %s",
			             ERR_reason_error_string(ERR_get_error()));
			return -1;
		}
		q += k;
		n -= (size_t)k;
	}
	flush_wbio(c);
	return 0;
}

bool tlsconn_writable(const struct tlsconn *c)
{
	return c->state == ST_OPEN && !c->blocked;
}

bool tlsconn_open(const struct tlsconn *c)
{
	return c->state == ST_OPEN;
}

void *tlsconn_app(const struct tlsconn *c)
{
	return c->app;
}

/* ---- the timer ------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
	struct tlsconn *c = t->data;
	if (c->state == ST_DRAINING) {
		close_now(c); /* DRAINING ends with the peer's EOF (on_read), or here */
		return;
	}
	if (c->deadline) {
		static const char *const names[] = {"TCP connect", "TLS handshake", "answer"};
		tlsconn_fail(c, TLSCONN_ETIMEOUT, "no %s within %llu ms",
		             names[c->state < ST_OPEN ? c->state : ST_OPEN],
		             (unsigned long long)c->deadline_ms);
		return;
	}
	if (c->state == ST_OPEN && c->h->on_tick)
		c->h->on_tick(c);
}

void tlsconn_deadline(struct tlsconn *c, uint64_t ms)
{
	if (c->state == ST_CLOSED || c->state == ST_DRAINING)
		return;
	c->deadline = ms > 0;
	c->deadline_ms = ms;
	if (ms)
		uv_timer_start(&c->timer, on_timer, ms, 0);
	else
		uv_timer_stop(&c->timer);
}

void tlsconn_every(struct tlsconn *c, uint64_t ms)
{
	if (c->state == ST_CLOSED || c->state == ST_DRAINING)
		return;
	c->deadline = false;
	if (ms)
		uv_timer_start(&c->timer, on_timer, ms, ms);
	else
		uv_timer_stop(&c->timer);
}

/* ---- reading -------------------------------------------------------------- */

static void read_plaintext(struct tlsconn *c)
{
	static uint8_t plain[PLAIN_CHUNK]; /* consumed before the next SSL_read */
	while (c->state == ST_OPEN || c->state == ST_DRAINING) {
		ERR_clear_error();
		int k = SSL_read(c->ssl, plain, sizeof plain);
		if (k > 0) {
			if (c->state == ST_OPEN)
				c->h->on_data(c, plain, (size_t)k);
			continue; /* while DRAINING nobody waits for answers */
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN)
			tlsconn_fail(c, TLSCONN_ECLOSED, "TLS close_notify from the peer");
		else
			tlsconn_fail(c, TLSCONN_ETLS, "SSL_read: %s",
			             e == SSL_ERROR_SSL ? ERR_reason_error_string(ERR_get_error())
			                                : "connection error");
		return;
	}
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
	static char chunk[READ_CHUNK]; /* copied into the rbio at once */
	*b = uv_buf_init(chunk, sizeof chunk);
}

static void handshake(struct tlsconn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	flush_wbio(c);
	if (r == 1) {
		/* TLS --handshake done--> OPEN */
		c->state = ST_OPEN;
		c->h->on_open(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	long v = SSL_get_verify_result(c->ssl);
	if (v != X509_V_OK)
		tlsconn_fail(c, TLSCONN_ETLS, "certificate verification failed: %s",
		             X509_verify_cert_error_string(v));
	else
		tlsconn_fail(c, TLSCONN_ETLS, "handshake failed: %s",
		             ERR_reason_error_string(ERR_get_error()));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct tlsconn *c = s->data;
	if (nread == 0 || c->state == ST_CLOSED)
		return;
	if (nread < 0) {
		if (c->state == ST_DRAINING)
			close_now(c);
		else if (nread == UV_EOF)
			tlsconn_fail(c, TLSCONN_ECLOSED, "connection closed by the peer");
		else
			tlsconn_fail(c, TLSCONN_EIO, "read: %s", uv_strerror((int)nread));
		return;
	}
	BIO_write(c->rbio, b->base, (int)nread);
	if (c->state == ST_TLS)
		handshake(c);
	if (c->state == ST_OPEN || c->state == ST_DRAINING) {
		read_plaintext(c);
		flush_wbio(c);
	}
	if (c->state == ST_OPEN && c->h->on_batch_end)
		c->h->on_batch_end(c);
}

/* TCP --connected / accepted--> TLS: reading starts, the client's
 * ClientHello goes out. */
static void start_tls(struct tlsconn *c)
{
	uv_tcp_nodelay(&c->tcp, 1);
	c->state = ST_TLS;
	int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
	if (rc != 0) {
		tlsconn_fail(c, TLSCONN_EIO, "read: %s", uv_strerror(rc));
		return;
	}
	handshake(c);
}

static void on_connected(uv_connect_t *req, int status)
{
	struct tlsconn *c = req->data;
	if (status == UV_ECANCELED || c->state == ST_CLOSED)
		return;
	if (status < 0) {
		tlsconn_fail(c, TLSCONN_ECONNECT, "connect: %s", uv_strerror(status));
		return;
	}
	start_tls(c);
}

/* ---- opening ---------------------------------------------------------------- */

static struct tlsconn *conn_new(uv_loop_t *loop, SSL_CTX *ctx, uint64_t timeout_ms,
                                const struct tlsconn_handler *h, void *app)
{
	struct tlsconn *c = xcalloc(1, sizeof *c);
	c->h = h;
	c->app = app;
	c->state = ST_TCP;
	c->ssl = SSL_new(ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		fprintf(stderr, "loadgen: out of memory (SSL_new)\n");
		abort();
	}
	BIO_set_mem_eof_return(c->rbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->connect_req.data = c;
	c->shutdown_req.data = c;
	c->handles_open = 2;
	tlsconn_deadline(c, timeout_ms);
	return c;
}

static bool is_ip(const char *s)
{
	unsigned char a[16];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

struct tlsconn *tlsconn_connect(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                                const char *tls_name, uint64_t timeout_ms,
                                const struct tlsconn_handler *h, void *app)
{
	struct tlsconn *c = conn_new(loop, ctx, timeout_ms, h, app);
	SSL_set_connect_state(c->ssl);
	if (is_ip(tls_name)) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), tls_name);
	} else {
		SSL_set_tlsext_host_name(c->ssl, tls_name);
		SSL_set1_host(c->ssl, tls_name);
	}
	int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected);
	if (rc != 0)
		tlsconn_fail(c, TLSCONN_ECONNECT, "connect: %s", uv_strerror(rc));
	return c;
}

void tlsconn_use_cert(struct tlsconn *c, X509 *cert, EVP_PKEY *key)
{
	if (SSL_use_certificate(c->ssl, cert) != 1 || SSL_use_PrivateKey(c->ssl, key) != 1) {
		fprintf(stderr, "loadgen: the client certificate cannot be used\n");
		abort();
	}
}

struct tlsconn *tlsconn_accept(uv_stream_t *server, SSL_CTX *ctx, uint64_t timeout_ms,
                               const struct tlsconn_handler *h, void *app)
{
	struct tlsconn *c = conn_new(server->loop, ctx, timeout_ms, h, app);
	SSL_set_accept_state(c->ssl);
	int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rc != 0)
		tlsconn_fail(c, TLSCONN_EIO, "accept: %s", uv_strerror(rc));
	else
		start_tls(c);
	return c;
}

/* ---- closing by the owner ----------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct tlsconn *c = req->data;
	if (status < 0)
		close_now(c);
}

void tlsconn_close(struct tlsconn *c, bool graceful)
{
	if (c->state == ST_CLOSED || c->state == ST_DRAINING)
		return;
	if (!graceful || c->state != ST_OPEN) {
		close_now(c);
		return;
	}
	/* OPEN --graceful close--> DRAINING */
	c->state = ST_DRAINING;
	uv_timer_start(&c->timer, on_timer, DRAIN_MS, 0);
	ERR_clear_error();
	SSL_shutdown(c->ssl);
	flush_wbio(c);
	if (c->state == ST_CLOSED)
		return;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		close_now(c);
}
