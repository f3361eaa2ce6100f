/* httpd.c - the in-loop HTTP server for challenge files.
 *
 * One state machine a connection: READ (collect one request head, bounded),
 * WRITE (send the whole answer), then READ again (keep-alive) or close.  Each
 * connection has one monotonic deadline, re-armed after each answer; a
 * client that is too slow, or sends too much, or sends garbage, loses its
 * connection and nothing else.  In event mode two more states: BODY (read
 * Content-Length bytes into the event being built) and HOST (the event is
 * posted; nothing is read until cm_httpd_respond or the deadline).
 */
#include "httpd.h"
#include "listen.h"
#include "loop_impl.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"

#define ACCEPT_BATCH 64
#define MAX_CONTENT_TYPE 128

struct route {
    char *path;
    char *body;
    size_t len;
    char *ctype;
    struct route *next;
};

struct conn;

struct server {
    uint64_t id;
    int fd;
    int port;
    struct cm_watch *w;
    struct cm_itimer retry;     /* re-enable accept after EMFILE */
    struct route **buckets;
    size_t nbuckets;
    struct conn *conns;
    size_t max_conns;
    double timeout;
    int events;
    size_t max_body;
    size_t max_response;        /* bytes of a host answer's body, at most */
    struct cm_httpd_stats stats;
    struct server *prev, *next;
};

struct conn {
    struct server *srv;
    int fd;
    struct cm_watch *w;
    struct cm_itimer timer;
    char in[CM_HTTPD_MAX_REQUEST];
    size_t in_len;
    char *out;
    size_t out_len, out_off;
    int writing;
    int close_after;
    int eof;                    /* the peer shut down its side */
    /* event mode */
    struct cm_event *ev;        /* the request being read (BODY), owned here */
    size_t body_need, body_have;
    int body_wait;              /* BODY: reading ev's body */
    int host_wait;              /* HOST: ev posted as req_id, waiting for the answer */
    int head_only;              /* the request the host answers is a HEAD */
    uint64_t req_id;
    struct conn *prev, *next;
};

struct cm_httpd_state {
    struct server *list;
    size_t count;
};

static struct cm_httpd_state *state(struct cm_loop *loop) { return *cm_loop_httpd_slot(loop); }

void cm_httpd_opts_init(struct cm_httpd_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->timeout = 10;
    opts->max_connections = 1024;
    opts->events = 0;
    opts->max_body = CM_HTTPD_DEFAULT_BODY;
    opts->max_response = CM_HTTPD_MAX_BODY;
}

size_t cm_httpd_count(struct cm_loop *loop) { return state(loop) ? state(loop)->count : 0; }

int cm_httpd_init(struct cm_loop *loop, struct cm_result *res)
{
    struct cm_httpd_state *st = calloc(1, sizeof *st);
    if (!st) return cm_fail(res, "ENOMEM", "out of memory");
    *cm_loop_httpd_slot(loop) = st;
    return CM_OK;
}

/* --- routes ---------------------------------------------------------------- */

static size_t path_hash(const char *p, size_t n)
{
    size_t h = 1469598103934665603ULL & SIZE_MAX, i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL & SIZE_MAX;
    }
    return h;
}

static struct route **route_slot(struct server *s, const char *path, size_t n)
{
    struct route **r;
    if (!s->nbuckets) return NULL;
    r = &s->buckets[path_hash(path, n) & (s->nbuckets - 1)];
    while (*r && !(strlen((*r)->path) == n && memcmp((*r)->path, path, n) == 0)) r = &(*r)->next;
    return r;
}

static void route_free(struct route *r)
{
    free(r->path); r->path = NULL;
    free(r->body); r->body = NULL;
    free(r->ctype); r->ctype = NULL;
    free(r);
}

static int routes_grow(struct server *s)
{
    size_t cap = s->nbuckets ? s->nbuckets * 2 : 64, i;
    struct route **fresh = calloc(cap, sizeof *fresh);
    if (!fresh) return CM_ERR;
    for (i = 0; i < s->nbuckets; i++) {
        struct route *r = s->buckets[i];
        while (r) {
            struct route *next = r->next;
            size_t b = path_hash(r->path, strlen(r->path)) & (cap - 1);
            r->next = fresh[b];
            fresh[b] = r;
            r = next;
        }
    }
    free(s->buckets);
    s->buckets = fresh;
    s->nbuckets = cap;
    return CM_OK;
}

static int valid_path(const char *p)
{
    size_t i, n = strlen(p);
    if (n == 0 || n > CM_HTTPD_MAX_PATH || p[0] != '/') return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f || p[i] == '?' || p[i] == '#') return 0;
    return 1;
}

int cm_httpd_set(struct cm_loop *loop, uint64_t id, const char *path, const char *body,
                 size_t len, const char *content_type, struct cm_result *res)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_SERVER);
    struct route *r = NULL, **slot;
    const char *ct = content_type ? content_type : "text/plain";
    size_t i;
    if (!s) return cm_fail(res, "ENOENT", "no HTTP server %llu", (unsigned long long)id);
    if (!valid_path(path))
        return cm_fail(res, "invalid", "bad path \"%.60s\" (want /..., at most %d bytes, no query)", path,
                       CM_HTTPD_MAX_PATH);
    if (len > CM_HTTPD_MAX_BODY)
        return cm_fail(res, "invalid", "body of %zu bytes is larger than %zu", len, CM_HTTPD_MAX_BODY);
    if (strlen(ct) == 0 || strlen(ct) > MAX_CONTENT_TYPE)
        return cm_fail(res, "invalid", "bad content type");
    for (i = 0; ct[i]; i++)
        if ((unsigned char)ct[i] < 0x20 || ct[i] == 0x7f) return cm_fail(res, "invalid", "bad content type");
    slot = route_slot(s, path, strlen(path));
    if (slot && *slot) {
        char *nb = malloc(len + 1), *nc = strdup(ct);
        r = *slot;
        if (!nb || !nc) {
            free(nb);
            free(nc);
            return cm_fail(res, "ENOMEM", "out of memory");
        }
        if (len) memcpy(nb, body, len);
        free(r->body);
        free(r->ctype);
        r->body = nb;
        r->ctype = nc;
        r->len = len;
        return CM_OK;
    }
    if (s->stats.paths >= CM_HTTPD_MAX_PATHS)
        return cm_fail(res, "invalid", "server already serves %d paths", CM_HTTPD_MAX_PATHS);
    if (s->stats.paths + 1 > s->nbuckets && routes_grow(s) != CM_OK)
        return cm_fail(res, "ENOMEM", "out of memory");
    r = calloc(1, sizeof *r);
    if (!r) return cm_fail(res, "ENOMEM", "out of memory");
    r->path = strdup(path);
    r->body = malloc(len + 1);
    r->ctype = strdup(ct);
    if (!r->path || !r->body || !r->ctype) {
        route_free(r);
        return cm_fail(res, "ENOMEM", "out of memory");
    }
    if (len) memcpy(r->body, body, len);
    r->len = len;
    slot = route_slot(s, path, strlen(path));
    *slot = r;
    s->stats.paths++;
    return CM_OK;
}

int cm_httpd_unset(struct cm_loop *loop, uint64_t id, const char *path)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_SERVER);
    struct route **slot, *r;
    if (!s || !path) return 0;
    slot = route_slot(s, path, strlen(path));
    if (!slot || !*slot) return 0;
    r = *slot;
    *slot = r->next;
    route_free(r);
    s->stats.paths--;
    return 1;
}

/* --- connections ------------------------------------------------------------ */

static void conn_close(struct cm_loop *loop, struct conn *c)
{
    struct server *s = c->srv;
    cm_loop_itimer_stop(loop, &c->timer);
    cm_loop_watch_del(loop, c->w); c->w = NULL;
    if (c->fd >= 0) { close(c->fd); c->fd = -1; }
    cm_event_free(c->ev); c->ev = NULL;
    if (c->req_id) { cm_loop_id_del(loop, c->req_id); c->req_id = 0; }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->stats.connections--;
    free(c->out); c->out = NULL;
    free(c);
}

static void conn_timeout(struct cm_loop *loop, struct cm_itimer *t)
{
    struct conn *c = (struct conn *)(void *)((char *)t - offsetof(struct conn, timer));
    c->srv->stats.timeouts++;
    conn_close(loop, c);
}

/* Find the end of the head ("\r\n\r\n" or a bare "\n\n"); 0 when incomplete. */
static size_t head_end(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] != '\n') continue;
        if (i + 1 < n && p[i + 1] == '\n') return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* Prepare the answer in c->out.  ctype NULL: extra carries Content-Type.
 * 204 and 304 have neither a body nor a Content-Length. */
static int set_out(struct conn *c, int code, const char *reason, const char *ctype,
                   const char *body, size_t len, int head_only, const char *extra)
{
    static const char fmt[] = "HTTP/1.1 %d %s\r\nServer: certmaint\r\n%s%s%s%s%sConnection: %s\r\n\r\n";
    char clen[48] = "";
    int no_length = code == 204 || code == 304, n, m;
    size_t blen = head_only || no_length ? 0 : len;
    if (!no_length) snprintf(clen, sizeof clen, "Content-Length: %zu\r\n", len);
    n = snprintf(NULL, 0, fmt, code, reason, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                 ctype ? "\r\n" : "", clen, extra ? extra : "", c->close_after ? "close" : "keep-alive");
    if (n < 0) return CM_ERR;
    free(c->out);
    c->out = malloc((size_t)n + 1 + blen);
    if (!c->out) return CM_ERR;
    m = snprintf(c->out, (size_t)n + 1, fmt, code, reason, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                 ctype ? "\r\n" : "", clen, extra ? extra : "", c->close_after ? "close" : "keep-alive");
    if (m != n) return CM_ERR;
    if (blen) memcpy(c->out + n, body, blen);
    c->out_len = (size_t)n + blen;
    c->out_off = 0;
    return CM_OK;
}

static int simple(struct conn *c, int code, const char *reason, int head_only)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", code, reason);
    return set_out(c, code, reason, "text/plain", body, (size_t)n, head_only,
                   code == 405 ? "Allow: GET, HEAD\r\n" : NULL);
}

static int ieq(const char *a, size_t an, const char *b)
{
    return strlen(b) == an && strncasecmp(a, b, an) == 0;
}

static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i;
    for (i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0) return 1;
    return 0;
}

#define ASKED 2 /* answer(): the request goes to the host */

/* Content-Length's value: digits only (optional whitespace around), at most
 * 18 of them; -1 when malformed. */
static long long parse_length(const char *v, size_t n)
{
    long long x = 0;
    size_t i = 0, digits = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
        if (++digits > 18) return -1;
        x = x * 10 + (v[i] - '0');
    }
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    return i == n && digits ? x : -1;
}

static char *dup_n(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* Build c->ev for the host: method, path, query and every header (names
 * lower-case, values trimmed) of the head at c->in; the body buffer for
 * body_len bytes.  CM_ERR when out of memory. */
static int build_request(struct conn *c, size_t mlen, const char *target, size_t tlen, const char *q,
                         size_t qlen, const char *hdrs, const char *end, size_t body_len)
{
    struct cm_event *ev = cm_event_new(CM_EVENT_HTTPD_REQUEST, 0);
    const char *p;
    size_t count = 0, i;
    if (!ev) return CM_ERR;
    c->ev = ev;
    for (p = hdrs; p < end; p++)
        if (*p == '\n') count++;
    ev->method = dup_n(c->in, mlen);
    ev->path = dup_n(target, tlen);
    ev->query = q ? dup_n(q, qlen) : NULL;
    ev->headers = calloc(count ? count : 1, sizeof *ev->headers);
    ev->body = malloc(body_len + 1);
    if (!ev->method || !ev->path || (q && !ev->query) || !ev->headers || !ev->body) return CM_ERR;
    ev->body_len = body_len;
    ev->body[body_len] = '\0';
    for (p = hdrs; p < end && ev->header_count < count;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon, *v, *ve;
        size_t ln;
        struct cm_header *h;
        if (!eol) break;
        ln = (size_t)(eol - p);
        if (ln && p[ln - 1] == '\r') ln--;
        if (ln == 0) break;
        colon = memchr(p, ':', ln); /* answer() checked there is one */
        v = colon + 1;
        ve = p + ln;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        h = &ev->headers[ev->header_count];
        h->name = dup_n(p, (size_t)(colon - p));
        h->value = dup_n(v, (size_t)(ve - v));
        if (!h->name || !h->value) {
            free(h->name); h->name = NULL;
            free(h->value); h->value = NULL;
            return CM_ERR;
        }
        for (i = 0; h->name[i]; i++)
            if (h->name[i] >= 'A' && h->name[i] <= 'Z') h->name[i] = (char)(h->name[i] - 'A' + 'a');
        ev->header_count++;
        p = eol + 1;
    }
    return CM_OK;
}

/* Parse one complete head of hlen bytes at c->in and prepare the answer:
 * CM_OK (c->out is ready), ASKED (c->ev is built, the host answers) or
 * CM_ERR (close the connection). */
static int answer(struct conn *c, size_t hlen)
{
    struct server *s = c->srv;
    const char *p = c->in, *end = c->in + hlen, *eol, *sp1, *sp2, *target, *q, *hdrs;
    size_t mlen, tlen, vlen, qlen = 0;
    int http10, head_only, is_get, keep = -1, has_body = 0, chunked = 0, base_close;
    long long clen = -1;
    struct route **slot;

    s->stats.requests++;
    eol = memchr(p, '\n', hlen);
    vlen = (size_t)(eol - p);
    if (vlen && p[vlen - 1] == '\r') vlen--;
    sp1 = memchr(p, ' ', vlen);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', vlen - (size_t)(sp1 + 1 - p)) : NULL;
    if (!sp1 || !sp2) goto bad;
    mlen = (size_t)(sp1 - p);
    target = sp1 + 1;
    tlen = (size_t)(sp2 - target);
    vlen -= (size_t)(sp2 + 1 - p);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1')) goto bad;
    http10 = sp2[8] == '0';
    if (mlen == 0 || mlen > 16 || tlen == 0) goto bad;
    {
        size_t i;
        for (i = 0; i < mlen; i++)
            if (p[i] < 'A' || p[i] > 'Z') goto bad;
    }
    /* absolute-form (a proxy-style request): keep the path only */
    if (tlen > 7 && strncasecmp(target, "http://", 7) == 0) {
        const char *slash = memchr(target + 7, '/', tlen - 7);
        if (!slash) goto bad;
        tlen -= (size_t)(slash - target);
        target = slash;
    }
    if (target[0] != '/') goto bad;
    q = memchr(target, '?', tlen);
    if (q) {
        qlen = tlen - (size_t)(q + 1 - target);
        tlen = (size_t)(q - target);
        q++;
    }
    /* headers: only what decides the connection's fate */
    p = hdrs = eol + 1;
    while (p < end) {
        const char *colon, *v;
        size_t ln, nl, vl;
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) break;
        ln = (size_t)(eol - p);
        if (ln && p[ln - 1] == '\r') ln--;
        if (ln == 0) break;
        colon = memchr(p, ':', ln);
        if (!colon || colon == p || p[0] == ' ' || p[0] == '\t') goto bad;
        nl = (size_t)(colon - p);
        v = colon + 1;
        vl = ln - nl - 1;
        if (ieq(p, nl, "connection")) {
            if (has_token(v, vl, "close")) keep = 0;
            else if (has_token(v, vl, "keep-alive")) keep = 1;
        } else if (ieq(p, nl, "content-length")) {
            long long n = parse_length(v, vl);
            size_t i;
            for (i = 0; i < vl; i++)
                if (v[i] >= '1' && v[i] <= '9') has_body = 1;
            if (s->events && (n < 0 || (clen >= 0 && n != clen))) goto bad;
            clen = n;
        } else if (ieq(p, nl, "transfer-encoding")) {
            has_body = 1;
            chunked = 1;
        }
        p = eol + 1;
    }
    base_close = keep == 0 || (http10 && keep != 1) || c->eof;
    c->close_after = base_close || has_body;
    head_only = mlen == 4 && memcmp(c->in, "HEAD", 4) == 0;
    is_get = mlen == 3 && memcmp(c->in, "GET", 3) == 0;
    if (!head_only && !is_get && !s->events) {
        s->stats.bad++;
        c->close_after = 1;
        return simple(c, 405, "Method Not Allowed", 0);
    }
    slot = head_only || is_get ? route_slot(s, target, tlen) : NULL;
    if (slot && *slot) {
        s->stats.ok++;
        return set_out(c, 200, "OK", (*slot)->ctype, (*slot)->body, (*slot)->len, head_only, NULL);
    }
    if (!s->events) {
        s->stats.not_found++;
        return simple(c, 404, "Not Found", head_only);
    }
    /* event mode: the host answers; the body is read here, so the connection lives on */
    if (chunked) {
        s->stats.bad++;
        c->close_after = 1;
        return simple(c, 411, "Length Required", 0);
    }
    if (clen > 0 && (unsigned long long)clen > s->max_body) {
        s->stats.bad++;
        c->close_after = 1;
        return simple(c, 413, "Content Too Large", 0);
    }
    c->close_after = base_close;
    c->head_only = head_only;
    if (build_request(c, mlen, target, tlen, q, qlen, hdrs, end, clen > 0 ? (size_t)clen : 0) != CM_OK)
        return CM_ERR;
    return ASKED;
bad:
    s->stats.bad++;
    c->close_after = 1;
    return simple(c, 400, "Bad Request", 0);
}

/* The body is complete: hand c->ev to the host and stop reading until it
 * answers (or the deadline).  -1 when the connection was closed. */
static int post_request(struct cm_loop *loop, struct conn *c)
{
    struct cm_result res;
    uint64_t id = cm_loop_new_id(loop);
    c->body_wait = 0;
    if (cm_loop_id_put(loop, id, CM_ID_HTTPD_REQUEST, c, &res) != CM_OK) {
        conn_close(loop, c);
        return -1;
    }
    c->req_id = id;
    c->host_wait = 1;
    c->ev->id = id;
    c->ev->server = c->srv->id;
    c->srv->stats.asked++;
    cm_loop_post(loop, c->ev);
    c->ev = NULL;
    /* epoll still reports errors and hang-ups: a client that resets is let go */
    if (cm_loop_watch_mod(loop, c->w, 0, &res) != CM_OK) {
        conn_close(loop, c);
        return -1;
    }
    return 0;
}

/* Read what the socket has of the body; -1 when the connection was closed. */
static int read_body(struct cm_loop *loop, struct conn *c)
{
    while (c->body_have < c->body_need) {
        ssize_t n = recv(c->fd, c->ev->body + c->body_have, c->body_need - c->body_have, 0);
        if (n > 0) {
            c->body_have += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        conn_close(loop, c); /* reset, or EOF with the body incomplete */
        return -1;
    }
    return post_request(loop, c);
}

static void conn_io(struct cm_loop *loop, struct cm_watch *w, uint32_t revents);

/* Send what is pending; 0 when done, 1 when waiting for EPOLLOUT, -1 when
 * the connection was closed. */
static int flush_out(struct cm_loop *loop, struct conn *c)
{
    struct cm_result res;
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writing = 1;
            if (cm_loop_watch_mod(loop, c->w, EPOLLOUT, &res) != CM_OK) {
                conn_close(loop, c);
                return -1;
            }
            return 1;
        }
        conn_close(loop, c);
        return -1;
    }
    free(c->out); c->out = NULL;
    c->out_len = c->out_off = 0;
    c->writing = 0;
    if (c->close_after) {
        conn_close(loop, c);
        return -1;
    }
    if (cm_loop_watch_mod(loop, c->w, EPOLLIN | EPOLLRDHUP, &res) != CM_OK ||
        cm_loop_itimer_set(loop, &c->timer, cm_clock_monotonic() + c->srv->timeout, &res) != CM_OK) {
        conn_close(loop, c);
        return -1;
    }
    return 0;
}

/* Answer every complete request in the buffer (pipelining), one at a time.
 * Returns -1 when the connection was closed. */
static int process(struct cm_loop *loop, struct conn *c)
{
    for (;;) {
        if (c->body_wait || c->host_wait) return 0;
        size_t hlen = head_end(c->in, c->in_len);
        int r;
        if (!hlen) {
            if (c->in_len == sizeof c->in) {
                c->srv->stats.requests++;
                c->srv->stats.bad++;
                c->close_after = 1;
                c->in_len = 0;
                if (simple(c, 431, "Request Header Fields Too Large", 0) != CM_OK) {
                    conn_close(loop, c);
                    return -1;
                }
                return flush_out(loop, c) < 0 ? -1 : 0;
            }
            if (c->eof) { /* half a request and no more coming */
                conn_close(loop, c);
                return -1;
            }
            return 0;
        }
        r = answer(c, hlen);
        if (r == CM_ERR) {
            conn_close(loop, c);
            return -1;
        }
        memmove(c->in, c->in + hlen, c->in_len - hlen);
        c->in_len -= hlen;
        if (r == ASKED) {
            /* the body's first bytes may have come with the head */
            size_t take = c->in_len < c->ev->body_len ? c->in_len : c->ev->body_len;
            if (take) memcpy(c->ev->body, c->in, take);
            memmove(c->in, c->in + take, c->in_len - take);
            c->in_len -= take;
            c->body_have = take;
            c->body_need = c->ev->body_len;
            c->body_wait = 1;
            return read_body(loop, c) < 0 ? -1 : 0;
        }
        r = flush_out(loop, c);
        if (r != 0) return r < 0 ? -1 : 0; /* closed, or waiting to write */
    }
}

static void conn_io(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct conn *c = w->owner;
    if (c->host_wait) {
        if (revents & (EPOLLERR | EPOLLHUP)) conn_close(loop, c);
        return;
    }
    if (c->body_wait) {
        (void)read_body(loop, c);
        return;
    }
    if (c->writing) {
        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            if (flush_out(loop, c) == 0) (void)process(loop, c);
        }
        return;
    }
    while (!c->eof && c->in_len < sizeof c->in) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) { /* reset: nobody to answer */
            conn_close(loop, c);
            return;
        }
        /* EOF: answer what is complete (a client may shut down its write
         * side after the request), then close */
        c->eof = 1;
        if (cm_loop_watch_mod(loop, c->w, 0, NULL) != CM_OK) {
            conn_close(loop, c);
            return;
        }
    }
    (void)process(loop, c);
}

static void server_pause_end(struct cm_loop *loop, struct cm_itimer *t)
{
    struct server *s = (struct server *)(void *)((char *)t - offsetof(struct server, retry));
    struct cm_result res;
    if (cm_loop_watch_mod(loop, s->w, EPOLLIN, &res) != CM_OK)
        (void)cm_loop_itimer_set(loop, &s->retry, cm_clock_monotonic() + 0.1, &res);
}

static void server_io(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct server *s = w->owner;
    struct cm_result res;
    int i;
    (void)revents;
    for (i = 0; i < ACCEPT_BATCH; i++) {
        struct conn *c;
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of fds: stop accepting for a moment instead of spinning */
                if (cm_loop_watch_mod(loop, s->w, 0, &res) == CM_OK)
                    (void)cm_loop_itimer_set(loop, &s->retry, cm_clock_monotonic() + 0.1, &res);
            }
            return; /* EAGAIN: all accepted */
        }
        if (s->stats.connections >= s->max_conns) {
            s->stats.rejected++;
            close(fd);
            continue;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        c->timer.fire = conn_timeout;
        c->w = cm_loop_watch_add(loop, fd, EPOLLIN | EPOLLRDHUP, conn_io, c, &res);
        if (!c->w || cm_loop_itimer_set(loop, &c->timer, cm_clock_monotonic() + s->timeout, &res) != CM_OK) {
            cm_loop_watch_del(loop, c->w);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->stats.connections++;
        s->stats.accepted++;
    }
}

/* --- answers from the host (event mode) -------------------------------------- */

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static int tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Check one "Name: value" header; *is_ctype set for Content-Type. */
static int check_header(const char *h, int *is_ctype, struct cm_result *res)
{
    const char *colon = strchr(h, ':'), *v;
    size_t nl, i;
    if (!colon || colon == h) return cm_fail(res, "invalid", "header \"%.60s\" is not \"Name: value\"", h);
    nl = (size_t)(colon - h);
    for (i = 0; i < nl; i++)
        if (!tchar((unsigned char)h[i])) return cm_fail(res, "invalid", "bad header name \"%.*s\"", (int)(nl > 60 ? 60 : nl), h);
    if (ieq(h, nl, "content-length") || ieq(h, nl, "connection") || ieq(h, nl, "transfer-encoding"))
        return cm_fail(res, "invalid", "header %.*s is the server's own", (int)nl, h);
    for (v = colon + 1; *v; v++)
        if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
            return cm_fail(res, "invalid", "header %.*s: control character in the value", (int)(nl > 60 ? 60 : nl), h);
    *is_ctype = ieq(h, nl, "content-type");
    return CM_OK;
}

int cm_httpd_respond(struct cm_loop *loop, uint64_t request_id, int status, const char *const *headers,
                     size_t n, const char *body, size_t len, struct cm_result *res)
{
    struct conn *c = cm_loop_id_get(loop, request_id, CM_ID_HTTPD_REQUEST);
    struct cm_buf extra = {0};
    int has_ctype = 0, rc;
    size_t i;
    if (!c) return cm_fail(res, "ENOENT", "no request %llu waiting (answered already, or its client left)",
                           (unsigned long long)request_id);
    if (status < 200 || status > 599) return cm_fail(res, "invalid", "status %d is not between 200 and 599", status);
    if (len > c->srv->max_response)
        return cm_fail(res, "invalid", "body of %zu bytes is larger than %zu", len, c->srv->max_response);
    if ((status == 204 || status == 304) && len)
        return cm_fail(res, "invalid", "a %d answer has no body", status);
    for (i = 0; i < n; i++) {
        int is_ctype = 0;
        if (check_header(headers[i], &is_ctype, res) != CM_OK) {
            cm_buf_free(&extra);
            return CM_ERR;
        }
        has_ctype |= is_ctype;
        if (extra.len + strlen(headers[i]) + 2 > CM_HTTPD_MAX_RESPONSE_HEADERS) {
            cm_buf_free(&extra);
            return cm_fail(res, "invalid", "headers longer than %d bytes", CM_HTTPD_MAX_RESPONSE_HEADERS);
        }
        if (cm_buf_append(&extra, headers[i], strlen(headers[i])) != CM_OK ||
            cm_buf_append(&extra, "\r\n", 2) != CM_OK) {
            cm_buf_free(&extra);
            return cm_fail(res, "ENOMEM", "out of memory");
        }
    }
    rc = set_out(c, status, reason_phrase(status), has_ctype ? NULL : "text/plain", body, len, c->head_only,
                 extra.data);
    cm_buf_free(&extra);
    if (rc != CM_OK) {
        conn_close(loop, c); /* out of memory: the request dies with its connection */
        return cm_fail(res, "ENOMEM", "out of memory");
    }
    cm_loop_id_del(loop, request_id);
    c->req_id = 0;
    c->host_wait = 0;
    c->srv->stats.answered++;
    if (status >= 200 && status < 300) c->srv->stats.ok++;
    else if (status == 404) c->srv->stats.not_found++;
    if (flush_out(loop, c) == 0) (void)process(loop, c);
    return CM_OK;
}

/* --- servers ------------------------------------------------------------------ */

int cm_httpd_serve(struct cm_loop *loop, const struct cm_httpd_opts *opts, uint64_t *id,
                   int *port, struct cm_result *res)
{
    struct cm_httpd_state *st = state(loop);
    struct server *s = NULL;
    int fd = -1, bound_port = 0, rc = CM_ERR;

    if (!isfinite(opts->timeout) || opts->timeout <= 0 || opts->timeout > 3600)
        return cm_fail(res, "invalid", "server timeout must be > 0 and at most 3600 seconds");
    if (opts->max_connections == 0 || opts->max_connections > 65536)
        return cm_fail(res, "invalid", "max_connections must be between 1 and 65536");
    if (opts->max_body > CM_HTTPD_MAX_BODY)
        return cm_fail(res, "invalid", "max_body must be at most %zu bytes", CM_HTTPD_MAX_BODY);
    if (opts->max_response == 0 || opts->max_response > CM_HTTPD_MAX_RESPONSE)
        return cm_fail(res, "invalid", "max_response must be between 1 and %zu bytes", CM_HTTPD_MAX_RESPONSE);
    if (cm_listen_tcp(opts->listen, &fd, &bound_port, res) != CM_OK) return CM_ERR;
    s = calloc(1, sizeof *s);
    if (!s) {
        cm_fail(res, "ENOMEM", "out of memory");
        goto out;
    }
    s->fd = fd;
    s->port = bound_port;
    s->timeout = opts->timeout;
    s->max_conns = opts->max_connections;
    s->events = opts->events != 0;
    s->max_body = opts->max_body;
    s->max_response = opts->max_response;
    s->retry.fire = server_pause_end;
    s->id = cm_loop_new_id(loop);
    if (routes_grow(s) != CM_OK) {
        cm_fail(res, "ENOMEM", "out of memory");
        goto out;
    }
    s->w = cm_loop_watch_add(loop, fd, EPOLLIN, server_io, s, res);
    if (!s->w) goto out;
    if (cm_loop_id_put(loop, s->id, CM_ID_SERVER, s, res) != CM_OK) {
        cm_loop_watch_del(loop, s->w); s->w = NULL;
        goto out;
    }
    s->next = st->list;
    if (st->list) st->list->prev = s;
    st->list = s;
    st->count++;
    *id = s->id;
    *port = s->port;
    s = NULL;
    fd = -1;
    rc = CM_OK;
out:
    if (s) {
        free(s->buckets); s->buckets = NULL;
        free(s);
    }
    if (fd >= 0) close(fd);
    return rc;
}

static void server_free(struct cm_loop *loop, struct server *s)
{
    struct cm_httpd_state *st = state(loop);
    size_t i;
    while (s->conns) conn_close(loop, s->conns);
    cm_loop_itimer_stop(loop, &s->retry);
    cm_loop_watch_del(loop, s->w); s->w = NULL;
    if (s->fd >= 0) { close(s->fd); s->fd = -1; }
    for (i = 0; i < s->nbuckets; i++) {
        while (s->buckets[i]) {
            struct route *r = s->buckets[i];
            s->buckets[i] = r->next;
            route_free(r);
        }
    }
    free(s->buckets); s->buckets = NULL;
    if (s->prev) s->prev->next = s->next;
    else st->list = s->next;
    if (s->next) s->next->prev = s->prev;
    st->count--;
    cm_loop_id_del(loop, s->id);
    free(s);
}

int cm_httpd_close(struct cm_loop *loop, uint64_t id)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_SERVER);
    if (!s) return 0;
    server_free(loop, s);
    return 1;
}

int cm_httpd_stats(struct cm_loop *loop, uint64_t id, struct cm_httpd_stats *out,
                   struct cm_result *res)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_SERVER);
    if (!s) return cm_fail(res, "ENOENT", "no HTTP server %llu", (unsigned long long)id);
    *out = s->stats;
    return CM_OK;
}

void cm_httpd_reset(struct cm_loop *loop)
{
    struct cm_httpd_state *st = state(loop);
    if (!st) return;
    while (st->list) server_free(loop, st->list);
}

void cm_httpd_destroy(struct cm_loop *loop)
{
    struct cm_httpd_state *st = state(loop);
    if (!st) return;
    cm_httpd_reset(loop);
    free(st);
    *cm_loop_httpd_slot(loop) = NULL;
}
