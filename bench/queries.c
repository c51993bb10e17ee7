/* The load generator's twin queries (see queries.h).
 *
 * Per connection, one query at a time:
 *
 *   IDLE --queries_send: page 1 written--> BUSY
 *   BUSY --200, rows right, x-ms-continuation--> BUSY (next page written)
 *   BUSY --200, rows right, no continuation, count right--> IDLE (done, ok)
 *   BUSY --other status, wrong rows or count--> IDLE (done, failed)
 *   BUSY --closed, or a page unanswered for the timeout--> lost
 *
 * Twin pages are checked without building a JSON tree: scan_rows walks
 * the array once, skipping strings with memchr, counts the rows (objects
 * at depth 1) and hands each row's top-level "deviceId" to check_id. A
 * bitmap of the seeded devices per connection catches a row given twice,
 * also across pages. GROUP BY pages are small and parsed with jansson. */
#include "queries.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/mem.h"
#include "devices.h"
#include "httpc.h"
#include "twinset.h"

#define API_VERSION "2021-04-12"
/* The hub ends a page at 1,000 rows or 4 MiB of them; this leaves room. */
#define MAX_PAGE_BYTES (32u << 20)
#define MAX_TOKEN 512
#define MAX_DEPTH 64

const char *const queries_kind_names[QUERIES_KINDS] = {"tag-eq", "reported-range", "group-count"};

struct qconn {
	struct httpc *c; /* NULL once closed */
	bool ready, busy;
	/* the query in progress */
	enum queries_kind kind;
	unsigned lo, hi; /* tag-eq: the plant in lo; reported-range: [lo, hi) hundredths */
	unsigned expected;
	char *body; /* {"query":"..."} */
	uint64_t t0_ns, t_page_ns;
	unsigned pages, rows;
	uint8_t *seen; /* seeded bits: rows given so far */
	uint64_t groups[TWINSET_FIRMWARES];
	bool group_seen[TWINSET_FIRMWARES];
	char error[320];
};

static struct {
	struct queries_config cfg;
	const struct queries_hooks *hooks;
	struct qconn *conns;
	struct twinset set;
	unsigned connecting, ready, open;
	uint64_t outstanding;
	uint64_t issued[QUERIES_KINDS];
	char *auth; /* "Authorization: SharedAccessSignature ..." */
	struct buf out;
	void (*closed)(void);
} q;

unsigned queries_connecting(void)
{
	return q.connecting;
}

unsigned queries_ready(void)
{
	return q.ready;
}

uint64_t queries_outstanding(void)
{
	return q.outstanding;
}

/* ---- checking ------------------------------------------------------------------ */

static void set_error(struct qconn *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the first thing wrong with the query. */
static void set_error(struct qconn *k, const char *fmt, ...)
{
	if (k->error[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(k->error, sizeof k->error, fmt, ap);
	va_end(ap);
}

/* Whether device i satisfies the query's condition. */
static bool matches(const struct qconn *k, unsigned i)
{
	switch (k->kind) {
	case QUERIES_TAG_EQ: return i % TWINSET_PLANTS == k->lo;
	case QUERIES_REPORTED_RANGE: {
		unsigned t = twinset_temp(i);
		return t >= k->lo && t < k->hi;
	}
	default: return false;
	}
}

/* A row's deviceId: a seeded device, matching, not given before. */
static void check_id(struct qconn *k, const char *id, size_t n)
{
	size_t pl = strlen(q.cfg.prefix);
	unsigned long i = 0;
	bool ok = n > pl && n - pl <= 9 && memcmp(id, q.cfg.prefix, pl) == 0;
	for (size_t j = pl; ok && j < n; j++) {
		ok = id[j] >= '0' && id[j] <= '9';
		i = i * 10 + (unsigned long)(id[j] - '0');
	}
	if (!ok || i >= q.cfg.seeded) {
		set_error(k, "page %u: row %.*s is not a seeded device", k->pages,
		          (int)(n > 100 ? 100 : n), id);
		return;
	}
	if (!matches(k, (unsigned)i)) {
		set_error(k, "page %u: row %.*s does not match the query", k->pages, (int)n, id);
		return;
	}
	if (k->seen[i / 8] & (1u << (i % 8))) {
		set_error(k, "page %u: row %.*s given twice", k->pages, (int)n, id);
		return;
	}
	k->seen[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* The end of the string whose opening quote is at p[i - 1]: the index of
 * its closing quote, or n when it has none. */
static size_t string_end(const char *p, size_t n, size_t i)
{
	for (;;) {
		const char *e = memchr(p + i, '"', n - i);
		if (!e)
			return n;
		size_t j = (size_t)(e - p), bs = 0;
		while (j - bs > i && p[j - bs - 1] == '\\')
			bs++;
		if (bs % 2 == 0)
			return j;
		i = j + 1;
	}
}

static size_t skip_blanks(const char *p, size_t n, size_t i)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	return i;
}

/* Walks a page of twins (a JSON array of objects): counts the rows and
 * checks each row's top-level "deviceId". Returns the row count, or -1
 * (the error recorded) when the page is not such an array or a row has
 * no deviceId. Strings are skipped, not validated: the hub's JSON is
 * trusted to be JSON, only its content is checked. */
static long scan_rows(struct qconn *k, const char *p, size_t n)
{
	static const char key[] = "deviceId";
	bool object[MAX_DEPTH];
	size_t i = skip_blanks(p, n, 0);
	unsigned depth = 0;
	long rows = 0, ids = 0;
	bool expect_key = false;
	if (i == n || p[i] != '[') {
		set_error(k, "page %u: not a JSON array: %.*s", k->pages,
		          (int)(n - i > 80 ? 80 : n - i), p + i);
		return -1;
	}
	object[depth++] = false;
	for (i++; i < n && depth > 0; i++) {
		char c = p[i];
		if (depth == 1 && c != '{' && c != ',' && c != ']' && c != ' ' && c != '\n' &&
		    c != '\r' && c != '\t') {
			set_error(k, "page %u: row %ld is not an object", k->pages, rows + 1);
			return -1;
		}
		switch (c) {
		case '"': {
			size_t e = string_end(p, n, i + 1); /* n: unterminated */
			if (depth == 2 && expect_key && e - i - 1 == sizeof key - 1 &&
			    memcmp(p + i + 1, key, sizeof key - 1) == 0) {
				size_t v = skip_blanks(p, n, e + 1);
				if (v < n && p[v] == ':')
					v = skip_blanks(p, n, v + 1);
				if (v < n && p[v] == '"') {
					size_t ve = string_end(p, n, v + 1);
					if (ve < n) {
						check_id(k, p + v + 1, ve - v - 1);
						ids++;
					}
				}
			}
			expect_key = false;
			i = e;
			break;
		}
		case '{':
		case '[':
			if (depth == MAX_DEPTH) {
				set_error(k, "page %u: nested deeper than %d", k->pages, MAX_DEPTH);
				return -1;
			}
			if (depth == 1)
				rows++;
			object[depth++] = c == '{';
			expect_key = c == '{';
			break;
		case '}':
		case ']': depth--; break;
		case ',': expect_key = object[depth - 1]; break;
		case ':': expect_key = false; break;
		default: break;
		}
	}
	if (depth > 0 || skip_blanks(p, n, i) != n) {
		set_error(k, "page %u: not a complete JSON array (%zu bytes)", k->pages, n);
		return -1;
	}
	if (ids != rows) {
		set_error(k, "page %u: %ld rows but %ld deviceIds", k->pages, rows, ids);
		return -1;
	}
	return rows;
}

/* A GROUP BY page: [{"firmware":"1.<m>.0","n":<count>}, ...]. Returns the
 * row count or -1 (the error recorded). */
static long check_groups(struct qconn *k, const char *p, size_t n)
{
	json_error_t je;
	json_t *a = json_loadb(p, n, 0, &je);
	long rows = -1;
	if (!json_is_array(a)) {
		set_error(k, "page %u: not a JSON array: %.*s", k->pages, (int)(n > 120 ? 120 : n),
		          p);
		goto out;
	}
	for (size_t r = 0; r < json_array_size(a); r++) {
		json_t *row = json_array_get(a, r);
		const char *fw = json_string_value(json_object_get(row, "firmware"));
		json_t *cnt = json_object_get(row, "n");
		if (!fw || strlen(fw) != 5 || fw[0] != '1' || fw[1] != '.' || fw[2] < '0' ||
		    fw[2] > '9' || strcmp(fw + 3, ".0") != 0 || !json_is_integer(cnt)) {
			char *text = json_dumps(row, JSON_COMPACT);
			set_error(k, "page %u: unexpected row %.120s", k->pages, text ? text : "?");
			free(text);
			goto out;
		}
		unsigned m = (unsigned)(fw[2] - '0');
		if (k->group_seen[m]) {
			set_error(k, "page %u: firmware %s given twice", k->pages, fw);
			goto out;
		}
		k->group_seen[m] = true;
		k->groups[m] = (uint64_t)json_integer_value(cnt);
	}
	rows = (long)json_array_size(a);
out:
	json_decref(a);
	return rows;
}

/* The last page came: whether the whole result was right. */
static void check_total(struct qconn *k)
{
	if (k->kind != QUERIES_GROUP_COUNT) {
		if (k->rows != k->expected)
			set_error(k, "%u rows, expected %u", k->rows, k->expected);
		return;
	}
	uint64_t sum = 0;
	for (unsigned m = 0; m < TWINSET_FIRMWARES; m++) {
		uint64_t want = twinset_count_firmware(&q.set, m);
		if (k->group_seen[m] != (want > 0) || k->groups[m] != want) {
			set_error(k, "firmware 1.%u.0: %s%llu, expected %llu", m,
			          k->group_seen[m] ? "n=" : "no row, ",
			          (unsigned long long)k->groups[m], (unsigned long long)want);
			return;
		}
		sum += k->groups[m];
	}
	if (sum != q.cfg.seeded)
		set_error(k, "the counts sum to %llu, expected %u", (unsigned long long)sum,
		          q.cfg.seeded);
}

/* ---- requests ---------------------------------------------------------------- */

static void send_page(struct qconn *k, const char *continuation)
{
	buf_reset(&q.out);
	buf_printf(&q.out,
	           "POST /devices/query?api-version=" API_VERSION " HTTP/1.1\r\n"
	           "Host: %s\r\n%s\r\nContent-Type: application/json\r\n"
	           "x-ms-max-item-count: %u\r\n",
	           q.cfg.hub, q.auth, QUERIES_PAGE);
	if (continuation)
		buf_printf(&q.out, "x-ms-continuation: %s\r\n", continuation);
	buf_printf(&q.out, "Content-Length: %zu\r\n\r\n%s", strlen(k->body), k->body);
	k->t_page_ns = uv_hrtime();
	httpc_send(k->c, q.out.data, q.out.len);
}

/* Builds the next query of kind into k: its text, its expected rows. */
static void plan(struct qconn *k, enum queries_kind kind)
{
	uint64_t n = q.issued[kind]++;
	struct buf b = BUF_INIT;
	k->kind = kind;
	buf_appends(&b, "{\"query\":\"");
	switch (kind) {
	case QUERIES_TAG_EQ:
		k->lo = (unsigned)(n * 389 % TWINSET_PLANTS);
		k->expected = twinset_count_plant(&q.set, k->lo);
		buf_printf(&b, "SELECT * FROM devices WHERE tags.plant = 'plant-%u'", k->lo);
		break;
	case QUERIES_REPORTED_RANGE:
		k->lo = (unsigned)(n * 3779 % 9001);
		k->hi = k->lo + 1000;
		k->expected = twinset_count_temp(&q.set, k->lo, k->hi);
		buf_appends(&b, "SELECT * FROM devices WHERE properties.reported.temperature >= ");
		twinset_decimal(&b, k->lo);
		buf_appends(&b, " AND properties.reported.temperature < ");
		twinset_decimal(&b, k->hi);
		break;
	default:
		k->expected = 0;
		buf_appends(&b, "SELECT properties.reported.firmware AS firmware, COUNT() AS n "
		                "FROM devices GROUP BY properties.reported.firmware");
		break;
	}
	buf_appends(&b, "\"}");
	free(k->body);
	k->body = buf_steal(&b);
}

bool queries_send(enum queries_kind kind)
{
	for (unsigned n = 0; n < q.cfg.connections; n++) {
		struct qconn *k = &q.conns[n];
		if (!k->c || !k->ready || k->busy || !httpc_writable(k->c))
			continue;
		plan(k, kind);
		k->busy = true;
		k->pages = k->rows = 0;
		k->error[0] = '\0';
		memset(k->seen, 0, (q.cfg.seeded + 7) / 8);
		memset(k->groups, 0, sizeof k->groups);
		memset(k->group_seen, 0, sizeof k->group_seen);
		q.outstanding++;
		k->t0_ns = uv_hrtime();
		send_page(k, NULL);
		return true;
	}
	return false;
}

/* BUSY --> IDLE: reports the query. */
static void finish(struct qconn *k, int status)
{
	k->busy = false;
	q.outstanding--;
	struct queries_outcome o = {
	    .kind = k->kind,
	    .t0_ns = k->t0_ns,
	    .status = status,
	    .error = k->error[0] ? k->error : NULL,
	    .rows = k->rows,
	    .pages = k->pages,
	};
	q.hooks->done(&o);
}

/* Whether s is a token fit to send back: base64, bounded. */
static bool token_ok(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n <= MAX_TOKEN &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789+/=") == n;
}

static void on_response(struct httpc *c, int status, const char *body, size_t len)
{
	struct qconn *k = httpc_app(c);
	if (!k->busy) {
		q.hooks->lost(0, "an HTTP response to no query");
		httpc_close(c, false);
		return;
	}
	k->pages++;
	if (status != 200) {
		set_error(k, "page %u: status %d: %.*s", k->pages, status,
		          (int)(len > 200 ? 200 : len), body);
		finish(k, status);
		return;
	}
	if (httpc_truncated(c)) {
		set_error(k, "page %u: larger than %u bytes", k->pages, MAX_PAGE_BYTES);
		finish(k, status);
		return;
	}
	long rows =
	    k->kind == QUERIES_GROUP_COUNT ? check_groups(k, body, len) : scan_rows(k, body, len);
	if (rows >= 0)
		k->rows += (unsigned)rows;
	const char *cont = httpc_header(c);
	if (!k->error[0] && cont && (rows == 0 || !token_ok(cont)))
		set_error(k, "page %u: %s continuation after %ld rows", k->pages,
		          token_ok(cont) ? "a" : "an unusable", rows);
	if (!k->error[0] && k->kind != QUERIES_GROUP_COUNT && k->rows > k->expected)
		set_error(k, "page %u: %u rows so far, expected %u in all", k->pages, k->rows,
		          k->expected);
	if (!k->error[0] && cont) {
		send_page(k, cont);
		return;
	}
	if (!k->error[0])
		check_total(k);
	finish(k, status);
}

/* ---- connections ------------------------------------------------------------- */

static void on_ready(struct httpc *c)
{
	struct qconn *k = httpc_app(c);
	k->ready = true;
	q.connecting--;
	q.ready++;
	q.hooks->connected(NULL);
}

static void on_close(struct httpc *c, enum tlsconn_error e, const char *detail)
{
	struct qconn *k = httpc_app(c);
	char d[256];
	snprintf(d, sizeof d, "query connection: %s", detail);
	k->c = NULL;
	q.open--;
	if (!k->ready) {
		q.connecting--;
		q.hooks->connected(d);
	} else {
		k->ready = false;
		q.ready--;
		unsigned n = k->busy ? 1 : 0;
		if (k->busy) {
			k->busy = false;
			q.outstanding--;
		}
		if (e != TLSCONN_OK || n > 0)
			q.hooks->lost(n, d);
	}
	if (q.open == 0 && q.closed)
		q.closed();
}

static const struct httpc_handler handler = {on_ready, on_response, NULL, NULL, on_close};

void queries_sweep(uint64_t now_ns)
{
	uint64_t limit = (uint64_t)(q.cfg.timeout_s * 1e9);
	for (unsigned n = 0; n < q.cfg.connections; n++) {
		struct qconn *k = &q.conns[n];
		if (!k->c || !k->busy || now_ns - k->t_page_ns <= limit)
			continue;
		char d[160];
		snprintf(d, sizeof d, "%s query: page %u unanswered after %.1f s",
		         queries_kind_names[k->kind], k->pages + 1, q.cfg.timeout_s);
		k->busy = false;
		q.outstanding--;
		q.hooks->lost(1, d);
		httpc_close(k->c, false);
	}
}

int queries_start(const struct queries_config *cfg, const struct queries_hooks *hooks)
{
	q.cfg = *cfg;
	q.hooks = hooks;
	buf_init(&q.out);
	q.auth = devices_owner_header(cfg->hub, cfg->owner_key);
	if (!q.auth)
		return -1;
	twinset_init(&q.set, cfg->seeded);
	q.conns = xcalloc(cfg->connections, sizeof *q.conns);
	for (unsigned n = 0; n < cfg->connections; n++) {
		struct qconn *k = &q.conns[n];
		k->seen = xcalloc((cfg->seeded + 7) / 8, 1);
		q.connecting++;
		q.open++;
		k->c = httpc_open(cfg->loop, cfg->tls, (const struct sockaddr *)&cfg->addr,
		                  cfg->hub, (uint64_t)(cfg->timeout_s * 1000), &handler, k);
		httpc_keep(k->c, MAX_PAGE_BYTES, "x-ms-continuation");
	}
	return 0;
}

void queries_close(bool graceful, void (*done)(void))
{
	q.closed = done;
	if (q.open == 0) {
		if (done)
			done();
		return;
	}
	for (unsigned n = 0; n < q.cfg.connections; n++)
		if (q.conns[n].c)
			httpc_close(q.conns[n].c, graceful);
}

void queries_free(void)
{
	for (unsigned n = 0; q.conns && n < q.cfg.connections; n++) {
		free(q.conns[n].seen);
		free(q.conns[n].body);
	}
	free(q.conns);
	free(q.auth);
	twinset_free(&q.set);
	buf_free(&q.out);
	memset(&q, 0, sizeof q);
}
