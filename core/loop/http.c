/* http.c - libcurl multi on the loop (curl's multi-uv.c, on epoll).
 *
 * libcurl's callbacks (socket, timer, write, header) only touch C state:
 * they register fds, arm the one internal timer, or append to bounded
 * buffers.  Finished transfers are collected after curl_multi_socket_action
 * returns and queued as events, so nothing re-enters libcurl.
 */
#include "http.h"
#include "loop_impl.h"

#include <ctype.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "clock.h"

#define MAX_URL 8192
#define MAX_REQ_HEADERS 100
#define MAX_REQ_HEADER_LEN 8192
#define MAX_SECONDS 86400.0

struct xfer {
    uint64_t id;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body_copy;
    struct cm_buf body;
    size_t max_bytes;
    struct cm_header *headers;
    size_t nh, hcap;
    size_t header_bytes;
    int toobig;       /* 1 body, 2 headers */
    int oom;
    char method[16];
    char errbuf[CURL_ERROR_SIZE];
    struct xfer *prev, *next;
};

struct cm_http_state {
    CURLM *multi;
    struct cm_itimer timer;
    struct xfer *list;
    size_t count;
    int closing;
};

static struct cm_http_state *state(struct cm_loop *loop) { return *cm_loop_http_slot(loop); }

void cm_http_req_init(struct cm_http_req *req)
{
    memset(req, 0, sizeof *req);
    req->method = "GET";
    req->timeout = 30;
    req->connect_timeout = 10;
    req->stall_timeout = 15;
    req->max_bytes = 1024 * 1024;
    req->protocols = "http,https";
}

size_t cm_http_count(struct cm_loop *loop) { return state(loop) ? state(loop)->count : 0; }

/* --- transfers ------------------------------------------------------------ */

static void clear_headers(struct xfer *x)
{
    size_t i;
    for (i = 0; i < x->nh; i++) {
        free(x->headers[i].name); x->headers[i].name = NULL;
        free(x->headers[i].value); x->headers[i].value = NULL;
    }
    x->nh = 0;
}

static void xfer_free(struct cm_loop *loop, struct xfer *x)
{
    struct cm_http_state *st = state(loop);
    if (x->easy) {
        (void)curl_multi_remove_handle(st->multi, x->easy);
        curl_easy_cleanup(x->easy); x->easy = NULL;
    }
    if (x->prev) x->prev->next = x->next;
    else if (st->list == x) st->list = x->next;
    if (x->next) x->next->prev = x->prev;
    cm_loop_id_del(loop, x->id);
    st->count--;
    curl_slist_free_all(x->hdrs); x->hdrs = NULL;
    free(x->body_copy); x->body_copy = NULL;
    cm_buf_free(&x->body);
    clear_headers(x);
    free(x->headers); x->headers = NULL;
    free(x);
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    if (len > x->max_bytes - x->body.len) {
        x->toobig = 1;
        return 0; /* anything but len aborts with CURLE_WRITE_ERROR */
    }
    if (cm_buf_append(&x->body, p, len) != CM_OK) {
        x->oom = 1;
        return 0;
    }
    return len;
}

static char *dup_range(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n, nlen, vlen, i;
    const char *colon, *v;
    char *name = NULL, *value = NULL;

    x->header_bytes += len;
    if (x->header_bytes > CM_HTTP_MAX_HEADER_BYTES) {
        x->toobig = 2;
        return 0;
    }
    /* a new status line (1xx, then the final one) starts a new header set */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        clear_headers(x);
        return len;
    }
    while (len && (p[len - 1] == '\r' || p[len - 1] == '\n')) len--;
    if (!len) return size * n;
    if (p[0] == ' ' || p[0] == '\t') {
        /* obsolete line folding: continue the previous value */
        if (x->nh) {
            struct cm_buf b = {x->headers[x->nh - 1].value, 0, 0};
            b.len = strlen(b.data);
            b.cap = b.len + 1;
            while (len && (*p == ' ' || *p == '\t')) { p++; len--; }
            if (cm_buf_append(&b, " ", 1) != CM_OK || cm_buf_append(&b, p, len) != CM_OK) {
                x->headers[x->nh - 1].value = b.data;
                x->oom = 1;
                return 0;
            }
            x->headers[x->nh - 1].value = b.data;
        }
        return size * n;
    }
    colon = memchr(p, ':', len);
    if (!colon || colon == p) return size * n; /* not a header: ignore */
    nlen = (size_t)(colon - p);
    while (nlen && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t')) nlen--;
    v = colon + 1;
    vlen = len - (size_t)(v - p);
    while (vlen && (*v == ' ' || *v == '\t')) { v++; vlen--; }
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    name = dup_range(p, nlen);
    value = dup_range(v, vlen);
    if (!name || !value) goto oom;
    for (i = 0; i < nlen; i++) name[i] = (char)tolower((unsigned char)name[i]);
    for (i = 0; i < x->nh; i++) {
        if (strcmp(x->headers[i].name, name) != 0) continue;
        if (strcmp(name, "link") == 0) {
            /* Link is a list (RFC 8288): ACME's alternate chains come as several
             * Link headers, so they are joined with ", " rather than replaced */
            struct cm_buf b = {x->headers[i].value, strlen(x->headers[i].value), 0};
            b.cap = b.len + 1;
            if (cm_buf_append(&b, ", ", 2) != CM_OK || cm_buf_append(&b, value, vlen) != CM_OK) {
                x->headers[i].value = b.data;
                goto oom;
            }
            x->headers[i].value = b.data;
            free(value);
        } else { /* last wins */
            free(x->headers[i].value);
            x->headers[i].value = value;
        }
        free(name);
        return size * n;
    }
    if (x->nh == x->hcap) {
        size_t cap = x->hcap ? x->hcap * 2 : 16;
        struct cm_header *grown = realloc(x->headers, cap * sizeof *grown);
        if (!grown) goto oom;
        x->headers = grown;
        x->hcap = cap;
    }
    x->headers[x->nh].name = name;
    x->headers[x->nh].value = value;
    x->nh++;
    return size * n;
oom:
    free(name);
    free(value);
    x->oom = 1;
    return 0;
}

static const char *code_of(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_COULDNT_CONNECT: return "connect";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return "resolve";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED: return "tls";
    case CURLE_UNSUPPORTED_PROTOCOL: return "protocol";
    case CURLE_URL_MALFORMAT: return "url";
    case CURLE_FILESIZE_EXCEEDED: return "toobig";
    case CURLE_OUT_OF_MEMORY: return "ENOMEM";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3: return "network";
    default: return "http";
    }
}

/* Turn a finished transfer into its event and free it. */
static void finish(struct cm_loop *loop, struct xfer *x, CURLcode rc)
{
    struct cm_event *ev = cm_event_new(CM_EVENT_HTTP, x->id);
    char *url = NULL;
    long status = 0;
    if (!ev) {
        /* cannot report it: drop it rather than leave the transfer dangling */
        xfer_free(loop, x);
        return;
    }
    (void)curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    (void)curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
    ev->http_status = status;
    if (x->toobig == 1 || (rc == CURLE_FILESIZE_EXCEEDED)) {
        ev->failed = 1;
        cm_fail(&ev->res, "toobig", "%s %s: response body larger than %zu bytes", x->method,
                url ? url : "?", x->max_bytes);
    } else if (x->toobig == 2) {
        ev->failed = 1;
        cm_fail(&ev->res, "toobig", "%s %s: response headers larger than %zu bytes", x->method,
                url ? url : "?", CM_HTTP_MAX_HEADER_BYTES);
    } else if (x->oom) {
        ev->failed = 1;
        cm_fail(&ev->res, "ENOMEM", "%s %s: out of memory", x->method, url ? url : "?");
    } else if (rc != CURLE_OK) {
        ev->failed = 1;
        cm_fail(&ev->res, code_of(rc), "%s %s: %s", x->method, url ? url : "?",
                x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    } else {
        ev->headers = x->headers;
        ev->header_count = x->nh;
        x->headers = NULL;
        x->nh = x->hcap = 0;
        if (!x->body.data && cm_buf_append(&x->body, "", 0) != CM_OK) {
            ev->failed = 1;
            cm_fail(&ev->res, "ENOMEM", "out of memory");
        }
        ev->body = x->body.data;
        ev->body_len = x->body.len;
        x->body.data = NULL;
        x->body.len = x->body.cap = 0;
    }
    xfer_free(loop, x);
    cm_loop_post(loop, ev);
}

/* Collect finished transfers; called after curl_multi_socket_action returns. */
static void check_done(struct cm_loop *loop)
{
    struct cm_http_state *st = state(loop);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(st->multi, &left)) != NULL) {
        char *priv = NULL;
        CURLcode rc;
        if (msg->msg != CURLMSG_DONE) continue;
        rc = msg->data.result;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv)
            continue;
        finish(loop, (struct xfer *)(void *)priv, rc);
    }
}

/* --- the multi-uv glue ------------------------------------------------------ */

static void on_curl_io(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct cm_http_state *st = state(loop);
    int flags = 0, running = 0;
    if (revents & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) flags |= CURL_CSELECT_IN;
    if (revents & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (revents & EPOLLERR) flags |= CURL_CSELECT_ERR;
    (void)curl_multi_socket_action(st->multi, w->fd, flags, &running);
    check_done(loop);
}

static void on_curl_timer(struct cm_loop *loop, struct cm_itimer *t)
{
    struct cm_http_state *st = state(loop);
    int running = 0;
    (void)t;
    (void)curl_multi_socket_action(st->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(loop);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct cm_loop *loop = userp;
    struct cm_http_state *st = state(loop);
    struct cm_watch *w = socketp;
    struct cm_result res;
    uint32_t events = 0;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            cm_loop_watch_del(loop, w);
            if (!st->closing) (void)curl_multi_assign(st->multi, s, NULL);
        }
        return 0;
    }
    if (what & CURL_POLL_IN) events |= EPOLLIN;
    if (what & CURL_POLL_OUT) events |= EPOLLOUT;
    if (!w) {
        w = cm_loop_watch_add(loop, s, events, on_curl_io, NULL, &res);
        if (!w) return -1;
        (void)curl_multi_assign(st->multi, s, w);
        return 0;
    }
    return cm_loop_watch_mod(loop, w, events, &res) == CM_OK ? 0 : -1;
}

/* curl's own sockets, close-on-exec: a deploy command spawned while a
 * transfer runs must not inherit a connection to the CA. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)clientp;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Timeout 0 means "run on the next loop iteration" (multi-uv.c); never
 * call curl_multi_socket_action from here: libcurl is not re-entrant. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct cm_loop *loop = userp;
    struct cm_http_state *st = state(loop);
    (void)multi;
    if (timeout_ms < 0) {
        cm_loop_itimer_stop(loop, &st->timer);
        return 0;
    }
    return cm_loop_itimer_set(loop, &st->timer, cm_clock_monotonic() + (double)timeout_ms / 1000.0,
                              NULL) == CM_OK ? 0 : -1;
}

int cm_http_init(struct cm_loop *loop, struct cm_result *res)
{
    struct cm_http_state *st;
    /* Reference-counted by libcurl; the executable already called it before
     * any thread existed, a stock lua5.4 loading the module did not. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cm_fail(res, "http", "curl_global_init failed");
    st = calloc(1, sizeof *st);
    if (!st) {
        curl_global_cleanup();
        return cm_fail(res, "ENOMEM", "out of memory");
    }
    st->timer.fire = on_curl_timer;
    st->multi = curl_multi_init();
    if (!st->multi) {
        free(st);
        curl_global_cleanup();
        return cm_fail(res, "http", "curl_multi_init failed");
    }
    *cm_loop_http_slot(loop) = st;
    if (curl_multi_setopt(st->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
        curl_multi_setopt(st->multi, CURLMOPT_SOCKETDATA, loop) != CURLM_OK ||
        curl_multi_setopt(st->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
        curl_multi_setopt(st->multi, CURLMOPT_TIMERDATA, loop) != CURLM_OK) {
        cm_http_destroy(loop);
        return cm_fail(res, "http", "curl_multi_setopt failed");
    }
    return CM_OK;
}

void cm_http_reset(struct cm_loop *loop)
{
    struct cm_http_state *st = state(loop);
    if (!st) return;
    while (st->list) xfer_free(loop, st->list);
}

void cm_http_destroy(struct cm_loop *loop)
{
    struct cm_http_state *st = state(loop);
    if (!st) return;
    cm_http_reset(loop);
    st->closing = 1;
    (void)curl_multi_cleanup(st->multi); st->multi = NULL;
    cm_loop_itimer_stop(loop, &st->timer);
    free(st);
    *cm_loop_http_slot(loop) = NULL;
    curl_global_cleanup();
}

/* --- requests -------------------------------------------------------------- */

static int valid_protocols(const char *p)
{
    /* a comma-separated subset of http,https: nothing else may be reached */
    while (*p) {
        size_t n = strcspn(p, ",");
        if (!((n == 4 && strncmp(p, "http", 4) == 0) || (n == 5 && strncmp(p, "https", 5) == 0)))
            return 0;
        p += n;
        if (*p == ',') {
            p++;
            if (!*p) return 0;
        }
    }
    return 1;
}

/* Seconds to whole units (scale 1000: ms), rounded up; the core links no libm. */
static long round_up(double s, double scale)
{
    double v = s * scale;
    long whole = (long)v;
    return (double)whole < v ? whole + 1 : whole;
}

static int valid_seconds(double s) { return isfinite(s) && s > 0 && s <= MAX_SECONDS; }

static int check_request(const struct cm_http_req *req, struct cm_result *res)
{
    size_t i, n;
    const char *m = req->method ? req->method : "GET";
    if (!req->url || !req->url[0]) return cm_fail(res, "invalid", "http request without url");
    n = strlen(req->url);
    if (n > MAX_URL) return cm_fail(res, "invalid", "url longer than %d bytes", MAX_URL);
    for (i = 0; i < n; i++)
        if ((unsigned char)req->url[i] <= 0x20 || req->url[i] == 0x7f)
            return cm_fail(res, "invalid", "url contains a space or control character");
    n = strlen(m);
    if (n == 0 || n >= sizeof ((struct xfer *)0)->method)
        return cm_fail(res, "invalid", "bad http method \"%.20s\"", m);
    for (i = 0; i < n; i++)
        if (!(m[i] >= 'A' && m[i] <= 'Z'))
            return cm_fail(res, "invalid", "bad http method \"%.20s\" (upper-case letters only)", m);
    if (!valid_seconds(req->timeout) || !valid_seconds(req->connect_timeout) ||
        !valid_seconds(req->stall_timeout))
        return cm_fail(res, "invalid", "timeouts must be > 0 and at most %g seconds", MAX_SECONDS);
    if (req->max_bytes == 0 || req->max_bytes > CM_HTTP_MAX_BYTES_LIMIT)
        return cm_fail(res, "invalid", "max_bytes must be between 1 and %zu", CM_HTTP_MAX_BYTES_LIMIT);
    if (!req->protocols || !valid_protocols(req->protocols))
        return cm_fail(res, "invalid", "protocols must be \"http\", \"https\" or \"http,https\"");
    if (req->header_count > MAX_REQ_HEADERS)
        return cm_fail(res, "invalid", "more than %d request headers", MAX_REQ_HEADERS);
    for (i = 0; i < req->header_count; i++) {
        const char *h = req->headers[i], *c;
        size_t j, hl;
        if (!h) return cm_fail(res, "invalid", "request header %zu is missing", i + 1);
        hl = strlen(h);
        c = strchr(h, ':');
        if (!c || c == h || hl > MAX_REQ_HEADER_LEN)
            return cm_fail(res, "invalid", "bad request header \"%.40s\" (want \"Name: value\")", h);
        for (j = 0; j < hl; j++) {
            unsigned char ch = (unsigned char)h[j];
            if (ch == '\r' || ch == '\n' || ch == 0x7f || (ch < 0x20 && ch != '\t'))
                return cm_fail(res, "invalid", "request header \"%.40s\" contains a control character", h);
            if (h + j < c && (ch <= 0x20 || ch == '(' || ch == ')' || ch == '"' || ch == '/'))
                return cm_fail(res, "invalid", "bad request header name in \"%.40s\"", h);
        }
    }
    return CM_OK;
}

static int has_header(const struct cm_http_req *req, const char *name)
{
    size_t i, n = strlen(name);
    for (i = 0; i < req->header_count; i++)
        if (strncasecmp(req->headers[i], name, n) == 0 && req->headers[i][n] == ':') return 1;
    return 0;
}

#define SETOPT(opt, val)                                                      \
    do {                                                                      \
        if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK) {                \
            cm_fail(res, "invalid", "curl_easy_setopt(%s) failed", #opt);     \
            goto out;                                                         \
        }                                                                     \
    } while (0)

int cm_http_request(struct cm_loop *loop, const struct cm_http_req *req, uint64_t *id,
                    struct cm_result *res)
{
    struct cm_http_state *st = state(loop);
    struct xfer *x = NULL;
    struct curl_slist *grown;
    const char *m = req->method ? req->method : "GET";
    size_t i;
    int rc = CM_ERR, linked = 0;

    if (check_request(req, res) != CM_OK) return CM_ERR;
    x = calloc(1, sizeof *x);
    if (!x) return cm_fail(res, "ENOMEM", "out of memory");
    snprintf(x->method, sizeof x->method, "%s", m);
    x->max_bytes = req->max_bytes;
    x->easy = curl_easy_init();
    if (!x->easy) {
        cm_fail(res, "ENOMEM", "curl_easy_init failed");
        goto out;
    }
    x->id = cm_loop_new_id(loop);
    for (i = 0; i < req->header_count; i++) {
        if (!(grown = curl_slist_append(x->hdrs, req->headers[i]))) goto oom;
        x->hdrs = grown;
    }
    /* no "Expect: 100-continue" round trip unless asked for */
    if (!has_header(req, "Expect")) {
        if (!(grown = curl_slist_append(x->hdrs, "Expect:"))) goto oom;
        x->hdrs = grown;
    }
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_PROTOCOLS_STR, req->protocols);
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, req->protocols);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TIMEOUT_MS, round_up(req->timeout, 1000.0));
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, round_up(req->connect_timeout, 1000.0));
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, round_up(req->stall_timeout, 1.0));
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_bytes);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, (void *)x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)x);
    SETOPT(CURLOPT_HTTPHEADER, x->hdrs);
    SETOPT(CURLOPT_USERAGENT, "certmaint/0.1");
    SETOPT(CURLOPT_PIPEWAIT, 1L);
    SETOPT(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    if (req->ca_file) SETOPT(CURLOPT_CAINFO, req->ca_file);
    if (req->cert_file) SETOPT(CURLOPT_SSLCERT, req->cert_file);
    if (req->key_file) SETOPT(CURLOPT_SSLKEY, req->key_file);
    if (req->insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(m, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") == 0 && !req->body) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(m, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, m);
        if (req->body || strcmp(m, "POST") == 0) {
            x->body_copy = malloc(req->body_len + 1);
            if (!x->body_copy) goto oom;
            if (req->body_len) memcpy(x->body_copy, req->body, req->body_len);
            x->body_copy[req->body_len] = '\0';
            SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            SETOPT(CURLOPT_POSTFIELDS, x->body_copy);
        }
    }
    if (cm_loop_id_put(loop, x->id, CM_ID_HTTP, x, res) != CM_OK) goto out;
    x->next = st->list;
    if (st->list) st->list->prev = x;
    st->list = x;
    st->count++;
    linked = 1;
    if (curl_multi_add_handle(st->multi, x->easy) != CURLM_OK) {
        cm_fail(res, "http", "curl_multi_add_handle failed");
        goto out;
    }
    *id = x->id;
    x = NULL;
    rc = CM_OK;
    goto out;
oom:
    cm_fail(res, "ENOMEM", "out of memory");
out:
    if (x) {
        if (linked) {
            xfer_free(loop, x);
        } else {
            curl_easy_cleanup(x->easy); x->easy = NULL;
            curl_slist_free_all(x->hdrs); x->hdrs = NULL;
            free(x->body_copy); x->body_copy = NULL;
            free(x);
        }
    }
    return rc;
}

int cm_http_cancel(struct cm_loop *loop, uint64_t id)
{
    struct xfer *x = cm_loop_id_get(loop, id, CM_ID_HTTP);
    if (!x) return 0;
    xfer_free(loop, x);
    return 1;
}
