/* The unit tests' HTTP/1.1 server (see test_web.h).
 *
 *   accept --> [TLS: rbio --SSL_do_handshake/SSL_read--> plaintext] --> k->in
 *   k->in complete (head + Content-Length bytes) --> recorded in struct web,
 *   k->index = requests++ --> answered now, or on web_release when held
 *   answer --> [TLS: SSL_write + close_notify --> wbio] --> uv_write --> close
 *
 * Invariants: a connection is on w->conns from accept until its close
 * callback, which alone frees it (and its SSL with the BIOs). Every OpenSSL
 * call here starts and ends with a clean error queue, since the client
 * under test uses OpenSSL on the same thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_web.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct web_conn {
	uv_tcp_t tcp;
	struct web *w;
	SSL *ssl; /* NULL on a plain server; it owns rbio and wbio */
	BIO *rbio, *wbio;
	struct buf in; /* the request as received (decrypted under TLS) */
	bool done;     /* complete or refused: later bytes are ignored */
	int index;     /* which request of the server this is, from 0; -1 until complete */
	bool answered;
	struct web_conn *next;
};

static void conn_closed(uv_handle_t *h)
{
	struct web_conn *k = h->data;
	for (struct web_conn **p = &k->w->conns; *p; p = &(*p)->next)
		if (*p == k) {
			*p = k->next;
			break;
		}
	SSL_free(k->ssl);
	buf_free(&k->in);
	free(k);
}

static void conn_close(struct web_conn *k)
{
	if (!uv_is_closing((uv_handle_t *)&k->tcp))
		uv_close((uv_handle_t *)&k->tcp, conn_closed);
}

struct web_write {
	uv_write_t req;
	char *data;
	bool close_after;
};

static void on_written(uv_write_t *req, int status)
{
	struct web_write *ww = (struct web_write *)req;
	if (ww->close_after)
		conn_close(req->data);
	free(ww->data);
	free(ww);
}

/* Writes n bytes of data (transferred) to the socket, then closes the
 * connection when close_after is set. */
static void conn_write(struct web_conn *k, char *data, size_t n, bool close_after)
{
	if (uv_is_closing((uv_handle_t *)&k->tcp) || n == 0) {
		free(data);
		if (close_after)
			conn_close(k);
		return;
	}
	struct web_write *ww = calloc(1, sizeof *ww);
	ww->data = data;
	ww->close_after = close_after;
	ww->req.data = k;
	uv_buf_t b = uv_buf_init(data, (unsigned)n);
	assert_int_equal(uv_write(&ww->req, (uv_stream_t *)&k->tcp, &b, 1, on_written), 0);
}

/* Sends what OpenSSL has queued in wbio (a handshake flight, an alert, an
 * answer). */
static void tls_flush(struct web_conn *k, bool close_after)
{
	size_t n = BIO_ctrl_pending(k->wbio);
	char *p = n ? malloc(n) : NULL;
	if (n)
		assert_int_equal(BIO_read(k->wbio, p, (int)n), (int)n);
	conn_write(k, p, n, close_after);
}

/* Sends n bytes of plaintext (borrowed), encrypted under TLS. */
static void conn_send(struct web_conn *k, const char *data, size_t n, bool close_after)
{
	if (!k->ssl) {
		char *copy = malloc(n);
		memcpy(copy, data, n);
		conn_write(k, copy, n, close_after);
		return;
	}
	ERR_clear_error();
	assert_int_equal(SSL_write(k->ssl, data, (int)n), (int)n);
	if (close_after)
		SSL_shutdown(k->ssl);
	tls_flush(k, close_after);
	ERR_clear_error();
}

static void conn_reply(struct web_conn *k, const struct web_answer *a)
{
	const char *body = a->body ? a->body : "";
	struct buf b = BUF_INIT;
	buf_printf(&b, "HTTP/1.1 %d X\r\n", a->status);
	if (k->w->content_type)
		buf_printf(&b, "Content-Type: %s\r\n", k->w->content_type);
	if (!a->until_close)
		buf_printf(&b, "Content-Length: %zu\r\n", strlen(body));
	buf_printf(&b, "Connection: close\r\n%s\r\n", a->headers ? a->headers : "");
	buf_appends(&b, body);
	conn_send(k, b.data, b.len, true);
	buf_free(&b);
}

static void conn_answer(struct web_conn *k)
{
	struct web *w = k->w;
	const struct web_answer *a = &w->ans[k->index < w->nans ? k->index : w->nans - 1];
	k->answered = true;
	if (a->status != 0)
		conn_reply(k, a);
}

/* Records and answers the request once it is complete. */
static void conn_took(struct web_conn *k)
{
	struct web *w = k->w;
	if (k->in.len == 0)
		return;
	if (!k->ssl && (unsigned char)k->in.data[0] == 0x16) {
		/* A TLS ClientHello on the plain port. */
		k->done = true;
		conn_reply(k, &(struct web_answer){.status = 400, .body = "not TLS here"});
		return;
	}
	const char *eoh = strstr(k->in.data, "\r\n\r\n");
	if (!eoh)
		return;
	size_t clen = 0;
	const char *cl = strcasestr(k->in.data, "\r\nContent-Length:");
	if (cl && cl < eoh)
		clen = strtoul(cl + 17, NULL, 10);
	if (k->in.len - (size_t)(eoh + 4 - k->in.data) < clen)
		return;
	w->method[0] = w->target[0] = '\0';
	sscanf(k->in.data, "%15s %511s", w->method, w->target);
	const char *line_end = strstr(k->in.data, "\r\n");
	buf_reset(&w->head);
	if (line_end < eoh)
		buf_append(&w->head, line_end + 2, (size_t)(eoh - (line_end + 2)));
	buf_reset(&w->body);
	buf_append(&w->body, eoh + 4, clen);
	k->done = true;
	k->index = w->requests++;
	if (!w->hold)
		conn_answer(k);
}

/* Ciphertext arrived: handshake, then decrypt into k->in. */
static void tls_read(struct web_conn *k, const char *p, size_t n)
{
	ERR_clear_error();
	BIO_write(k->rbio, p, (int)n);
	if (!SSL_is_init_finished(k->ssl)) {
		int r = SSL_do_handshake(k->ssl);
		if (r != 1) {
			int e = SSL_get_error(k->ssl, r);
			/* The next flight, or the alert of a failed handshake. */
			tls_flush(k, e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE);
			ERR_clear_error();
			return;
		}
		k->w->handshakes++;
	}
	char plain[16384];
	int got;
	while ((got = SSL_read(k->ssl, plain, sizeof plain)) > 0)
		buf_append(&k->in, plain, (size_t)got);
	bool failed = SSL_get_error(k->ssl, got) != SSL_ERROR_WANT_READ;
	tls_flush(k, failed); /* session tickets; an alert */
	ERR_clear_error();
	if (!failed)
		conn_took(k);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
	static char chunk[65536];
	*b = uv_buf_init(chunk, sizeof chunk);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct web_conn *k = st->data;
	if (n < 0) {
		conn_close(k);
		return;
	}
	if (k->done || n == 0)
		return;
	if (k->ssl) {
		tls_read(k, b->base, (size_t)n);
		return;
	}
	buf_append(&k->in, b->base, (size_t)n);
	conn_took(k);
}

static void on_accept(uv_stream_t *l, int status)
{
	struct web *w = l->data;
	if (status < 0)
		return;
	struct web_conn *k = calloc(1, sizeof *k);
	k->w = w;
	k->index = -1;
	buf_init(&k->in);
	uv_tcp_init(l->loop, &k->tcp);
	k->tcp.data = k;
	k->next = w->conns;
	w->conns = k;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&k->tcp), 0);
	if (w->tls) {
		k->ssl = SSL_new(w->tls);
		assert_non_null(k->ssl);
		k->rbio = BIO_new(BIO_s_mem());
		k->wbio = BIO_new(BIO_s_mem());
		SSL_set_bio(k->ssl, k->rbio, k->wbio);
		SSL_set_accept_state(k->ssl);
	}
	uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
}

void web_start(struct web *w, uv_loop_t *loop)
{
	const char *proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY",
	                         "all_proxy"};
	for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
		unsetenv(proxies[i]);
	memset(w, 0, sizeof *w);
	buf_init(&w->head);
	buf_init(&w->body);
	w->ans[0] = (struct web_answer){.status = 200, .body = ""};
	w->nans = 1;
	struct sockaddr_in a;
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(loop, &w->listener);
	w->listener.data = w;
	assert_int_equal(uv_tcp_bind(&w->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&w->listener, 64, on_accept), 0);
	struct sockaddr_in got;
	int len = sizeof got;
	uv_tcp_getsockname(&w->listener, (struct sockaddr *)&got, &len);
	w->port = ntohs(got.sin_port);
}

/* A self-signed P-256 certificate for IP 127.0.0.1 and the name
 * hub.fleethub.invalid, written as PEM to ca_path; the key and certificate
 * also go into the server's context. */
static SSL_CTX *make_tls_ctx(const char *ca_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	assert_non_null(key);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fleethub test",
	                           -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
	                         {"keyUsage", "critical,digitalSignature,keyCertSign"},
	                         {"subjectAltName", "IP:127.0.0.1,DNS:hub.fleethub.invalid"},
	                         {"subjectKeyIdentifier", "hash"}};
	for (size_t i = 0; i < 4; i++) {
		X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
		assert_non_null(e);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	FILE *fp = fopen(ca_path, "w");
	assert_non_null(fp);
	PEM_write_X509(fp, x);
	fclose(fp);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return ctx;
}

void web_start_tls(struct web *w, uv_loop_t *loop, const char *ca_path)
{
	web_start(w, loop);
	w->tls = make_tls_ctx(ca_path);
}

void web_release(struct web *w)
{
	w->hold = false;
	for (struct web_conn *k = w->conns; k; k = k->next)
		if (k->index >= 0 && !k->answered && !uv_is_closing((uv_handle_t *)&k->tcp))
			conn_answer(k);
}

void web_stop(struct web *w)
{
	for (struct web_conn *k = w->conns; k; k = k->next)
		conn_close(k);
	uv_close((uv_handle_t *)&w->listener, NULL);
	SSL_CTX_free(w->tls); /* each SSL keeps its own reference */
	w->tls = NULL;
	buf_free(&w->head);
	buf_free(&w->body);
}

bool web_head_has(const struct web *w, const char *line)
{
	/* The header block starts after the request line's CRLF. */
	char want[256];
	snprintf(want, sizeof want, "\r\n%s\r\n", line);
	struct buf b = BUF_INIT;
	buf_printf(&b, "\r\n%s\r\n", w->head.data ? w->head.data : "");
	bool found = strcasestr(b.data, want) != NULL;
	buf_free(&b);
	return found;
}

int web_closed_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t len = sizeof a;
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
	close(s);
	return ntohs(a.sin_port);
}
