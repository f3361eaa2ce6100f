/* test_loop.c - the event loop: timers, the fake clock, HTTP client against
 * the in-loop server, exec, signals, reset.  Only 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "loop/http.h"
#include "loop/httpd.h"
#include "loop/loop.h"
#include "loop/proc.h"

static struct cm_loop *loop;
static struct cm_event *stash; /* events taken from the loop, not yet claimed */

static void stash_events(void)
{
    struct cm_event *ev = cm_loop_take_events(loop), **tail = &stash;
    while (*tail) tail = &(*tail)->next;
    *tail = ev;
}

static struct cm_event *claim(uint64_t id)
{
    struct cm_event **p = &stash;
    while (*p) {
        if ((*p)->id == id || (id == 0 && (*p)->kind == CM_EVENT_SIGNAL)) {
            struct cm_event *ev = *p;
            *p = ev->next;
            ev->next = NULL;
            return ev;
        }
        p = &(*p)->next;
    }
    return NULL;
}

static void step(double t)
{
    struct cm_result res;
    int rc = cm_loop_step(loop, t, &res);
    CHECK(rc == CM_OK);
    stash_events();
}

/* Step until the event for id arrives (id 0: a signal event) or max_s pass. */
static struct cm_event *wait_for(uint64_t id, double max_s)
{
    double end = cm_clock_monotonic() + max_s;
    for (;;) {
        struct cm_event *ev = claim(id);
        if (ev) return ev;
        if (cm_clock_monotonic() > end) return NULL;
        step(0.05);
    }
}

static void drop_stash(void)
{
    while (stash) {
        struct cm_event *next = stash->next;
        cm_event_free(stash);
        stash = next;
    }
}

static const char *header(const struct cm_event *ev, const char *name)
{
    size_t i;
    for (i = 0; i < ev->header_count; i++)
        if (strcmp(ev->headers[i].name, name) == 0) return ev->headers[i].value;
    return NULL;
}

static uint64_t request(const char *url, const char *method, size_t max_bytes, double timeout)
{
    struct cm_http_req req;
    struct cm_result res;
    uint64_t id = 0;
    cm_http_req_init(&req);
    req.url = url;
    if (method) req.method = method;
    if (max_bytes) req.max_bytes = max_bytes;
    if (timeout > 0) req.timeout = timeout;
    req.protocols = "http";
    if (cm_http_request(loop, &req, &id, &res) != CM_OK) {
        fprintf(stderr, "request %s: %s\n", url, res.message);
        return 0;
    }
    return id;
}

static int all_idle(void)
{
    struct cm_loop_counts c;
    cm_loop_pending(loop, &c);
    return c.timers == 0 && c.http == 0 && c.exec == 0;
}

/* --- timers ------------------------------------------------------------------ */

static void test_timers(void)
{
    struct cm_result res;
    double now = cm_clock_now();
    uint64_t t3 = cm_loop_timer_add(loop, now + 0.06, &res);
    uint64_t t1 = cm_loop_timer_add(loop, now + 0.02, &res);
    uint64_t t2 = cm_loop_timer_add(loop, now + 0.04, &res);
    uint64_t tc = cm_loop_timer_add(loop, now + 0.03, &res);
    uint64_t order[3];
    int n = 0;
    double end = cm_clock_monotonic() + 2;
    struct cm_event *ev;

    CHECK(t1 && t2 && t3 && tc);
    CHECK(cm_loop_timer_cancel(loop, tc) == 1);
    CHECK(cm_loop_timer_cancel(loop, tc) == 0);
    while (n < 3 && cm_clock_monotonic() < end) {
        step(1);
        while (stash && n < 3) {
            ev = stash;
            stash = ev->next;
            CHECK(ev->kind == CM_EVENT_TIMER);
            order[n++] = ev->id;
            cm_event_free(ev);
        }
    }
    CHECK(n == 3);
    CHECK(order[0] == t1 && order[1] == t2 && order[2] == t3);
    CHECK(cm_clock_now() >= now + 0.06);
    CHECK(all_idle());

    /* a timer in the past fires on the next step, without waiting */
    t1 = cm_loop_timer_add(loop, now - 100, &res);
    {
        double t0 = cm_clock_monotonic();
        step(5);
        CHECK(cm_clock_monotonic() - t0 < 1);
        ev = claim(t1);
        CHECK(ev != NULL);
        cm_event_free(ev);
    }
    /* non-finite times are refused */
    CHECK(cm_loop_timer_add(loop, 1.0 / 0.0, &res) == 0);
    CHECK_STR(res.code, "invalid");
}

static void test_fake_clock(void)
{
    struct cm_result res;
    uint64_t far, near_id, dl;
    struct cm_event *ev;
    double t0;

    cm_clock_set_fake(1000);
    far = cm_loop_timer_add(loop, 2000, &res);
    near_id = cm_loop_timer_add(loop, 1010, &res);
    /* nothing is due: a poll returns nothing and a bounded step waits only its timeout */
    step(0);
    CHECK(stash == NULL);
    t0 = cm_clock_monotonic();
    step(0.1);
    CHECK(cm_clock_monotonic() - t0 < 1.0);
    CHECK(stash == NULL);
    /* advance: the near one fires, in one step, without blocking */
    cm_clock_advance(10);
    t0 = cm_clock_monotonic();
    step(5);
    CHECK(cm_clock_monotonic() - t0 < 1.0);
    ev = claim(near_id);
    CHECK(ev != NULL && ev->kind == CM_EVENT_TIMER);
    cm_event_free(ev);
    CHECK(claim(far) == NULL);
    /* a deadline is real time even when the clock is fake */
    dl = cm_loop_timer_after(loop, 0.05, &res);
    CHECK(dl != 0);
    ev = wait_for(dl, 2);
    CHECK(ev != NULL);
    cm_event_free(ev);
    CHECK(claim(far) == NULL);
    cm_clock_advance(990);
    step(0);
    ev = claim(far);
    CHECK(ev != NULL);
    cm_event_free(ev);

    /* switching back to the real clock re-keys pending timers */
    far = cm_loop_timer_add(loop, 1000000, &res); /* fake-far */
    cm_clock_set_real();
    near_id = cm_loop_timer_add(loop, cm_clock_now() + 0.02, &res);
    ev = wait_for(near_id, 2);
    CHECK(ev != NULL);
    cm_event_free(ev);
    CHECK(cm_loop_timer_cancel(loop, far) == 1);
    CHECK(all_idle());
}

/* --- http against the in-loop server ------------------------------------------ */

static uint64_t server;
static int port;
static char base[64];

static void url(char *buf, size_t n, const char *path) { snprintf(buf, n, "%s%s", base, path); }

static void test_http_basic(void)
{
    struct cm_httpd_opts o;
    struct cm_result res;
    struct cm_event *ev;
    char u[256];
    uint64_t id;
    static char big[100000];

    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    CHECK(cm_httpd_serve(loop, &o, &server, &port, &res) == CM_OK);
    CHECK(port > 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    CHECK(cm_httpd_set(loop, server, "/hello", "world", 5, NULL, &res) == CM_OK);
    memset(big, 'x', sizeof big);
    CHECK(cm_httpd_set(loop, server, "/big", big, sizeof big, "application/octet-stream", &res) == CM_OK);
    CHECK(cm_httpd_set(loop, server, "bad", "x", 1, NULL, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_httpd_set(loop, 999999, "/x", "x", 1, NULL, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");

    url(u, sizeof u, "/hello");
    id = request(u, NULL, 0, 0);
    ev = wait_for(id, 5);
    CHECK(ev && ev->kind == CM_EVENT_HTTP && !ev->failed);
    if (ev) {
        CHECK(ev->http_status == 200);
        CHECK(ev->body_len == 5 && strcmp(ev->body, "world") == 0);
        CHECK_STR(header(ev, "content-type"), "text/plain");
        CHECK_STR(header(ev, "content-length"), "5");
    }
    cm_event_free(ev);

    url(u, sizeof u, "/hello?query=1");
    ev = wait_for(request(u, "HEAD", 0, 0), 5);
    CHECK(ev && !ev->failed && ev->http_status == 200 && ev->body_len == 0);
    if (ev) CHECK_STR(header(ev, "content-length"), "5");
    cm_event_free(ev);

    url(u, sizeof u, "/missing");
    ev = wait_for(request(u, NULL, 0, 0), 5);
    CHECK(ev && !ev->failed && ev->http_status == 404);
    cm_event_free(ev);

    url(u, sizeof u, "/hello");
    ev = wait_for(request(u, "DELETE", 0, 0), 5);
    CHECK(ev && !ev->failed && ev->http_status == 405);
    if (ev) CHECK_STR(header(ev, "allow"), "GET, HEAD");
    cm_event_free(ev);

    /* body limit: the transfer aborts with "toobig" */
    url(u, sizeof u, "/big");
    ev = wait_for(request(u, NULL, 1000, 0), 5);
    CHECK(ev && ev->failed);
    if (ev) CHECK_STR(ev->res.code, "toobig");
    cm_event_free(ev);
    ev = wait_for(request(u, NULL, sizeof big, 0), 5);
    CHECK(ev && !ev->failed && ev->body_len == sizeof big);
    cm_event_free(ev);

    /* unset: gone */
    CHECK(cm_httpd_unset(loop, server, "/big") == 1);
    CHECK(cm_httpd_unset(loop, server, "/big") == 0);
    ev = wait_for(request(u, NULL, 0, 0), 5);
    CHECK(ev && ev->http_status == 404);
    cm_event_free(ev);

    /* bad requests are refused before anything is sent */
    {
        struct cm_http_req req;
        const char *hdrs[] = {"X-Evil: a\r\nInjected: b"};
        cm_http_req_init(&req);
        req.url = u;
        req.headers = hdrs;
        req.header_count = 1;
        CHECK(cm_http_request(loop, &req, &id, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
        cm_http_req_init(&req);
        req.url = u;
        req.protocols = "ftp";
        CHECK(cm_http_request(loop, &req, &id, &res) == CM_ERR);
        cm_http_req_init(&req);
        req.url = u;
        req.method = "get";
        CHECK(cm_http_request(loop, &req, &id, &res) == CM_ERR);
    }
    /* protocols: an https-only request to an http URL fails */
    {
        struct cm_http_req req;
        cm_http_req_init(&req);
        req.url = u;
        req.protocols = "https";
        CHECK(cm_http_request(loop, &req, &id, &res) == CM_OK);
        ev = wait_for(id, 5);
        CHECK(ev && ev->failed);
        if (ev) CHECK_STR(ev->res.code, "protocol");
        cm_event_free(ev);
    }
    /* POST with a body and headers */
    {
        struct cm_http_req req;
        const char *hdrs[] = {"Content-Type: application/jose+json", "X-A: 1"};
        cm_http_req_init(&req);
        req.url = u;
        req.method = "POST";
        req.body = "{}";
        req.body_len = 2;
        req.headers = hdrs;
        req.header_count = 2;
        CHECK(cm_http_request(loop, &req, &id, &res) == CM_OK);
        ev = wait_for(id, 5);
        CHECK(ev && !ev->failed && ev->http_status == 405);
        cm_event_free(ev);
    }
    CHECK(all_idle());
}

static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), p;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        close(fd);
        return 0;
    }
    p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* A socket that accepts (the kernel does, via the backlog) but never answers. */
static int silent_listener(int *p)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        close(fd);
        return -1;
    }
    *p = ntohs(a.sin_port);
    return fd;
}

static void test_http_failures(void)
{
    struct cm_event *ev;
    char u[128];
    int p = closed_port(), sfd;
    double t0;

    snprintf(u, sizeof u, "http://127.0.0.1:%d/", p);
    ev = wait_for(request(u, NULL, 0, 0), 5);
    CHECK(ev && ev->failed && ev->http_status == 0);
    if (ev) CHECK_STR(ev->res.code, "connect");
    cm_event_free(ev);

    sfd = silent_listener(&p);
    CHECK(sfd >= 0);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", p);
    t0 = cm_clock_monotonic();
    ev = wait_for(request(u, NULL, 0, 0.5), 5);
    CHECK(ev && ev->failed);
    if (ev) CHECK_STR(ev->res.code, "timeout");
    CHECK(cm_clock_monotonic() - t0 >= 0.45 && cm_clock_monotonic() - t0 < 3);
    cm_event_free(ev);

    /* cancel: no event ever */
    {
        uint64_t id = request(u, NULL, 0, 5);
        step(0);
        CHECK(cm_http_cancel(loop, id) == 1);
        CHECK(cm_http_cancel(loop, id) == 0);
        step(0.1);
        CHECK(claim(id) == NULL);
    }
    close(sfd);
    CHECK(all_idle());
}

/* --- responses from a hand-written server ------------------------------------- */

/* Accept one connection on lfd (non-blocking), read the request head, send
 * resp (resp_len bytes), and close unless keep_open.  Drives the loop while
 * it waits.  Returns the connection fd when kept open, else -1. */
static int hand_serve(int lfd, const char *resp, size_t resp_len, int keep_open)
{
    char buf[8192];
    size_t got = 0, off = 0;
    int cfd = -1;
    double end = cm_clock_monotonic() + 5;
    while (cfd < 0 && cm_clock_monotonic() < end) {
        cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (cfd < 0) step(0.01);
    }
    if (cfd < 0) return -1;
    while (cm_clock_monotonic() < end) {
        ssize_t r = recv(cfd, buf + got, sizeof buf - 1 - got, 0);
        if (r > 0) {
            got += (size_t)r;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n")) break;
            continue;
        }
        if (r == 0) break;
        step(0.01);
    }
    while (off < resp_len && cm_clock_monotonic() < end) {
        ssize_t r = send(cfd, resp + off, resp_len - off, MSG_NOSIGNAL);
        if (r > 0) off += (size_t)r;
        else if (errno == EAGAIN || errno == EWOULDBLOCK) step(0.01);
        else break; /* the client gave up: fine */
    }
    if (keep_open) return cfd;
    close(cfd);
    return -1;
}

static struct cm_event *hand_request(int lfd, int p, const char *resp, size_t len, double timeout)
{
    char u[128];
    uint64_t id;
    int kept;
    struct cm_event *ev;
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", p);
    id = request(u, NULL, 0, timeout);
    kept = hand_serve(lfd, resp, len, timeout > 0);
    ev = wait_for(id, 10);
    if (kept >= 0) close(kept);
    return ev;
}

static void test_http_responses(void)
{
    int p, lfd = silent_listener(&p);
    struct cm_event *ev;
    char *flood;
    size_t i, n = 0, cap = 200000;
    const char *dup = "HTTP/1.1 200 OK\r\nX-Dup: one\r\nx-dup:  two \r\nContent-Length: 2\r\n\r\nok";
    const char *links = "HTTP/1.1 200 OK\r\nLink: <https://a/1>;rel=\"alternate\"\r\n"
                        "link: <https://a/up>;rel=\"up\"\r\nContent-Length: 0\r\n\r\n";
    const char *info = "HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\nHTTP/1.1 201 Created\r\n"
                       "Content-Length: 0\r\n\r\n";
    const char *partial = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";
    const char *garbage = "NOT HTTP AT ALL\r\n\r\n";

    CHECK(lfd >= 0);
    CHECK(fcntl(lfd, F_SETFL, O_NONBLOCK) == 0);

    ev = hand_request(lfd, p, dup, strlen(dup), 0);
    CHECK(ev && !ev->failed && ev->http_status == 200);
    if (ev) {
        CHECK_STR(header(ev, "x-dup"), "two");
        CHECK_STR(ev->body, "ok");
    }
    cm_event_free(ev);

    /* Link is a list: repeated headers are joined, not replaced (ACME alternates) */
    ev = hand_request(lfd, p, links, strlen(links), 0);
    CHECK(ev && !ev->failed && ev->http_status == 200);
    if (ev) CHECK_STR(header(ev, "link"), "<https://a/1>;rel=\"alternate\", <https://a/up>;rel=\"up\"");
    cm_event_free(ev);

    ev = hand_request(lfd, p, info, strlen(info), 0);
    CHECK(ev && !ev->failed && ev->http_status == 201);
    if (ev) CHECK(header(ev, "x-early") == NULL);
    cm_event_free(ev);

    /* a header flood past the bound: "toobig" */
    flood = malloc(cap);
    n += (size_t)snprintf(flood + n, cap - n, "HTTP/1.1 200 OK\r\n");
    for (i = 0; n + 100 < cap; i++)
        n += (size_t)snprintf(flood + n, cap - n, "X-Pad-%zu: %s\r\n", i,
                              "0123456789012345678901234567890123456789");
    n += (size_t)snprintf(flood + n, cap - n, "\r\n");
    ev = hand_request(lfd, p, flood, n, 0);
    CHECK(ev && ev->failed);
    if (ev) CHECK_STR(ev->res.code, "toobig");
    cm_event_free(ev);
    free(flood);

    /* the body stops half-way and the connection closes */
    ev = hand_request(lfd, p, partial, strlen(partial), 0);
    CHECK(ev && ev->failed);
    if (ev) CHECK_STR(ev->res.code, "network");
    cm_event_free(ev);

    /* the body stops half-way and the connection stays open: timeout */
    ev = hand_request(lfd, p, partial, strlen(partial), 0.5);
    CHECK(ev && ev->failed);
    if (ev) CHECK_STR(ev->res.code, "timeout");
    cm_event_free(ev);

    /* not HTTP at all */
    ev = hand_request(lfd, p, garbage, strlen(garbage), 0);
    CHECK(ev && ev->failed && ev->http_status == 0);
    cm_event_free(ev);

    close(lfd);
    CHECK(all_idle());
}

static void test_http_concurrent(void)
{
    enum { N = 200 };
    uint64_t ids[N];
    int i, ok = 0, got = 0;
    char u[128];
    double end = cm_clock_monotonic() + 30;
    struct cm_result res;
    struct cm_httpd_stats st;
    url(u, sizeof u, "/hello");
    for (i = 0; i < N; i++) ids[i] = request(u, NULL, 0, 20);
    while (got < N && cm_clock_monotonic() < end) {
        step(0.1);
        for (i = 0; i < N; i++) {
            struct cm_event *ev = ids[i] ? claim(ids[i]) : NULL;
            if (!ev) continue;
            got++;
            if (!ev->failed && ev->http_status == 200 && strcmp(ev->body, "world") == 0) ok++;
            else fprintf(stderr, "transfer %d: %s\n", i, ev->res.message);
            ids[i] = 0;
            cm_event_free(ev);
        }
    }
    CHECK(got == N);
    CHECK(ok == N);
    CHECK(all_idle());
    CHECK(cm_httpd_stats(loop, server, &st, &res) == CM_OK);
    CHECK(st.ok >= N);
}

/* --- the server against raw, badly behaved clients ------------------------------ */

static int raw_connect(int p)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)p);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Drive the loop while reading from a raw client until EOF or max_s;
 * returns bytes read into buf (NUL-terminated), *closed = 1 on EOF. */
static size_t raw_read(int fd, char *buf, size_t n, double max_s, int *closed, size_t want)
{
    size_t got = 0;
    double end = cm_clock_monotonic() + max_s;
    *closed = 0;
    while (cm_clock_monotonic() < end) {
        ssize_t r;
        step(0.02);
        r = recv(fd, buf + got, n - 1 - got, 0);
        if (r > 0) {
            got += (size_t)r;
            if (want && got >= want) break;
            continue;
        }
        if (r == 0) {
            *closed = 1;
            break;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *closed = 1;
            break;
        }
    }
    buf[got] = '\0';
    return got;
}

static void raw_send(int fd, const char *s, size_t n)
{
    size_t off = 0;
    double end = cm_clock_monotonic() + 5;
    while (off < n && cm_clock_monotonic() < end) {
        ssize_t r = send(fd, s + off, n - off, MSG_NOSIGNAL);
        if (r > 0) off += (size_t)r;
        else step(0.01);
    }
}

static void test_httpd_robust(void)
{
    struct cm_httpd_opts o;
    struct cm_result res;
    struct cm_httpd_stats st;
    uint64_t srv;
    int p, fd, closed, i;
    char buf[4096];
    static char huge[CM_HTTPD_MAX_REQUEST + 100];
    const char *pipelined = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n";

    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    o.timeout = 0.3;
    o.max_connections = 8;
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_OK);
    CHECK(cm_httpd_set(loop, srv, "/a", "AAA", 3, "text/x-a", &res) == CM_OK);

    /* garbage: 400 and close */
    fd = raw_connect(p);
    raw_send(fd, "BLAH\r\n\r\n", 8);
    raw_read(fd, buf, sizeof buf, 2, &closed, 0);
    CHECK(strncmp(buf, "HTTP/1.1 400 ", 13) == 0);
    CHECK(closed);
    close(fd);

    /* a head larger than the bound: 431 and close */
    fd = raw_connect(p);
    memcpy(huge, "GET /a HTTP/1.1\r\nX: ", 20);
    memset(huge + 20, 'y', sizeof huge - 20);
    raw_send(fd, huge, sizeof huge);
    raw_read(fd, buf, sizeof buf, 2, &closed, 0);
    CHECK(strncmp(buf, "HTTP/1.1 431 ", 13) == 0);
    CHECK(closed);
    close(fd);

    /* pipelining: three answers in order, then close */
    fd = raw_connect(p);
    raw_send(fd, pipelined, strlen(pipelined));
    raw_read(fd, buf, sizeof buf, 2, &closed, 0);
    CHECK(closed);
    {
        const char *a = strstr(buf, "HTTP/1.1 200 OK"), *b = a ? strstr(a + 1, "HTTP/1.1 200 OK") : NULL;
        const char *c = b ? strstr(b + 1, "HTTP/1.1 404 ") : NULL;
        CHECK(a && b && c);
        CHECK(strstr(buf, "Content-Type: text/x-a") != NULL);
        CHECK(strstr(buf, "\r\n\r\nAAA") != NULL);
    }
    close(fd);

    /* HTTP/1.0 with a body and a shut-down write side still gets its answer */
    fd = raw_connect(p);
    raw_send(fd, "GET /a HTTP/1.0\r\nContent-Length: 3\r\n\r\nxyz", 42);
    shutdown(fd, SHUT_WR);
    raw_read(fd, buf, sizeof buf, 2, &closed, 0);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK", 15) == 0 && closed);
    close(fd);

    /* slow loris: half a request, then silence: closed after the timeout */
    fd = raw_connect(p);
    raw_send(fd, "GET /a HTT", 10);
    {
        double t0 = cm_clock_monotonic();
        raw_read(fd, buf, sizeof buf, 3, &closed, 0);
        CHECK(closed && buf[0] == '\0');
        CHECK(cm_clock_monotonic() - t0 < 2);
    }
    close(fd);

    /* more connections than allowed: the extra ones are closed at once, the
     * server keeps serving */
    {
        int fds[12];
        for (i = 0; i < 12; i++) fds[i] = raw_connect(p);
        for (i = 0; i < 5; i++) step(0.02);
        CHECK(cm_httpd_stats(loop, srv, &st, &res) == CM_OK);
        CHECK(st.connections <= 8);
        CHECK(st.rejected >= 4);
        for (i = 0; i < 12; i++) close(fds[i]);
        for (i = 0; i < 5; i++) step(0.02);
    }
    fd = raw_connect(p);
    raw_send(fd, "GET /a HTTP/1.1\r\n\r\n", 19);
    raw_read(fd, buf, sizeof buf, 2, &closed, 60);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK", 15) == 0);
    close(fd);

    CHECK(cm_httpd_stats(loop, srv, &st, &res) == CM_OK);
    CHECK(st.timeouts >= 1);
    CHECK(st.bad >= 2);
    CHECK(cm_httpd_close(loop, srv) == 1);
    CHECK(cm_httpd_close(loop, srv) == 0);

    /* bad listen addresses */
    o.listen = "nonsense";
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    o.listen = "127.0.0.1:99999";
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_ERR);
    o.listen = base + 7; /* "127.0.0.1:<port of the main server>" */
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_ERR);
    CHECK_STR(res.code, "EADDRINUSE");
}

/* --- event mode: the host answers what the table cannot ------------------------ */

/* The next CM_EVENT_HTTPD_REQUEST, stepping (and reading nothing) for max_s. */
static struct cm_event *wait_request(double max_s)
{
    double end = cm_clock_monotonic() + max_s;
    for (;;) {
        struct cm_event **p = &stash;
        while (*p) {
            if ((*p)->kind == CM_EVENT_HTTPD_REQUEST) {
                struct cm_event *ev = *p;
                *p = ev->next;
                ev->next = NULL;
                return ev;
            }
            p = &(*p)->next;
        }
        if (cm_clock_monotonic() > end) return NULL;
        step(0.02);
    }
}

static void test_httpd_events(void)
{
    struct cm_httpd_opts o;
    struct cm_result res;
    struct cm_httpd_stats st;
    struct cm_event *ev;
    uint64_t srv, gone;
    int p, fd, closed;
    char buf[8192];
    const char *hdrs[] = {"X-Stub: yes", "Content-Type: application/json"};
    const char *bad_len[] = {"Content-Length: 3"};
    const char *bad_name[] = {"Bad Name: x"};
    const char *bad_value[] = {"X-A: a\r\nInjected: 1"};

    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    o.timeout = 1.5;
    o.events = 1;
    o.max_body = 64;
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_OK);
    CHECK(cm_httpd_set(loop, srv, "/.well-known/acme-challenge/t", "t.k", 3, NULL, &res) == CM_OK);

    /* a path in the table is answered in C: no event */
    fd = raw_connect(p);
    raw_send(fd, "GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a\r\n\r\n", strlen("GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a\r\n\r\n"));
    raw_read(fd, buf, sizeof buf, 0.3, &closed, 0);
    CHECK(strstr(buf, "HTTP/1.1 200 OK") == buf && strstr(buf, "\r\n\r\nt.k") != NULL);
    CHECK(wait_request(0.05) == NULL);

    /* a miss is asked: method, path, query, headers (lower-case, trimmed) */
    raw_send(fd, "GET /other/x?a=1&b HTTP/1.1\r\nHost: A.example:5002\r\nX-Thing:  v  \r\n\r\n", strlen("GET /other/x?a=1&b HTTP/1.1\r\nHost: A.example:5002\r\nX-Thing:  v  \r\n\r\n"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    if (!ev) return;
    CHECK(ev->server == srv && ev->id != 0);
    CHECK_STR(ev->method, "GET");
    CHECK_STR(ev->path, "/other/x");
    CHECK(ev->query && strcmp(ev->query, "a=1&b") == 0);
    CHECK(header(ev, "host") && strcmp(header(ev, "host"), "A.example:5002") == 0);
    CHECK(header(ev, "x-thing") && strcmp(header(ev, "x-thing"), "v") == 0);
    CHECK(ev->body_len == 0);
    /* refused answers leave the request waiting */
    CHECK(cm_httpd_respond(loop, ev->id, 99, NULL, 0, "", 0, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_httpd_respond(loop, ev->id, 200, bad_len, 1, "", 0, &res) == CM_ERR);
    CHECK(cm_httpd_respond(loop, ev->id, 200, bad_name, 1, "", 0, &res) == CM_ERR);
    CHECK(cm_httpd_respond(loop, ev->id, 200, bad_value, 1, "", 0, &res) == CM_ERR);
    CHECK(cm_httpd_respond(loop, ev->id, 204, NULL, 0, "x", 1, &res) == CM_ERR);
    CHECK(cm_httpd_respond(loop, ev->id, 202, hdrs, 2, "{\"ok\":1}", 8, &res) == CM_OK);
    CHECK(cm_httpd_respond(loop, ev->id, 200, NULL, 0, "", 0, &res) == CM_ERR); /* once only */
    CHECK_STR(res.code, "ENOENT");
    cm_event_free(ev);
    raw_read(fd, buf, sizeof buf, 0.3, &closed, 0);
    CHECK(strstr(buf, "HTTP/1.1 202 Accepted\r\n") == buf);
    CHECK(strstr(buf, "X-Stub: yes\r\n") && strstr(buf, "Content-Type: application/json\r\n"));
    CHECK(strstr(buf, "text/plain") == NULL);
    CHECK(strstr(buf, "Content-Length: 8\r\n") && strstr(buf, "\r\n\r\n{\"ok\":1}"));
    CHECK(!closed); /* keep-alive */

    /* POST on the same connection, its body split over two sends */
    raw_send(fd, "POST /stub HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello", strlen("POST /stub HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello"));
    CHECK(wait_request(0.1) == NULL); /* not before the whole body */
    raw_send(fd, " world", strlen(" world"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    if (!ev) return;
    CHECK_STR(ev->method, "POST");
    CHECK(ev->body_len == 11 && memcmp(ev->body, "hello world", 11) == 0 && ev->body[11] == '\0');
    CHECK(ev->query == NULL);
    CHECK(cm_httpd_respond(loop, ev->id, 429, NULL, 0, "slow down", 9, &res) == CM_OK);
    cm_event_free(ev);
    raw_read(fd, buf, sizeof buf, 0.3, &closed, 0);
    CHECK(strstr(buf, "HTTP/1.1 429 Too Many Requests\r\n") == buf);
    CHECK(strstr(buf, "Content-Type: text/plain\r\n") != NULL);

    /* pipelined: the second waits for the first's answer, order kept; HEAD
     * gets the length and no body */
    raw_send(fd, "HEAD /h HTTP/1.1\r\n\r\nGET /.well-known/acme-challenge/t HTTP/1.1\r\n\r\n", strlen("HEAD /h HTTP/1.1\r\n\r\nGET /.well-known/acme-challenge/t HTTP/1.1\r\n\r\n"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    if (!ev) return;
    CHECK_STR(ev->method, "HEAD");
    raw_read(fd, buf, sizeof buf, 0.1, &closed, 0);
    CHECK(buf[0] == '\0'); /* nothing answered yet */
    CHECK(cm_httpd_respond(loop, ev->id, 200, NULL, 0, "abc", 3, &res) == CM_OK);
    cm_event_free(ev);
    raw_read(fd, buf, sizeof buf, 0.3, &closed, 0);
    {
        const char *first = strstr(buf, "Content-Length: 3\r\n");
        const char *second = first ? strstr(first, "HTTP/1.1 200 OK") : NULL;
        CHECK(first && second);
        CHECK(strstr(buf, "abc") == NULL);
        CHECK(second && strstr(second, "\r\n\r\nt.k") != NULL);
    }
    close(fd);

    /* bodies: too large -> 413, chunked -> 411, a malformed length -> 400; all closed */
    {
        const char *reqs[] = {"POST /x HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
                              "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                              "POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                              "POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab"};
        const char *want[] = {"HTTP/1.1 413 ", "HTTP/1.1 411 ", "HTTP/1.1 400 ", "HTTP/1.1 400 "};
        size_t i;
        for (i = 0; i < 4; i++) {
            fd = raw_connect(p);
            raw_send(fd, reqs[i], strlen(reqs[i]));
            raw_read(fd, buf, sizeof buf, 2, &closed, 0);
            CHECK(strncmp(buf, want[i], 13) == 0);
            CHECK(closed);
            close(fd);
        }
        CHECK(wait_request(0.05) == NULL);
    }

    /* a body that never comes, and a request never answered: the deadline
     * closes both; a late answer finds nothing */
    fd = raw_connect(p);
    raw_send(fd, "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", strlen("POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"));
    raw_read(fd, buf, sizeof buf, 4, &closed, 0);
    CHECK(closed && buf[0] == '\0');
    close(fd);
    fd = raw_connect(p);
    raw_send(fd, "GET /never HTTP/1.1\r\n\r\n", strlen("GET /never HTTP/1.1\r\n\r\n"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    if (!ev) return;
    gone = ev->id;
    cm_event_free(ev);
    {
        double t0 = cm_clock_monotonic();
        raw_read(fd, buf, sizeof buf, 4, &closed, 0);
        CHECK(closed && buf[0] == '\0');
        CHECK(cm_clock_monotonic() - t0 < 2.5);
    }
    close(fd);
    CHECK(cm_httpd_respond(loop, gone, 200, NULL, 0, "late", 4, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");

    /* a client that resets while its request waits: let go at once */
    fd = raw_connect(p);
    raw_send(fd, "GET /rst HTTP/1.1\r\n\r\n", strlen("GET /rst HTTP/1.1\r\n\r\n"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    if (!ev) return;
    {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    step(0.05);
    step(0.05);
    CHECK(cm_httpd_stats(loop, srv, &st, &res) == CM_OK);
    CHECK(st.connections == 0);
    CHECK(cm_httpd_respond(loop, ev->id, 200, NULL, 0, "", 0, &res) == CM_ERR);
    cm_event_free(ev);

    CHECK(cm_httpd_stats(loop, srv, &st, &res) == CM_OK);
    CHECK(st.asked == 5);
    CHECK(st.answered == 3);
    CHECK(st.timeouts >= 2);

    /* closing the server with a request waiting frees it; the id is gone */
    fd = raw_connect(p);
    raw_send(fd, "GET /w HTTP/1.1\r\n\r\n", strlen("GET /w HTTP/1.1\r\n\r\n"));
    ev = wait_request(2);
    CHECK(ev != NULL);
    CHECK(cm_httpd_close(loop, srv) == 1);
    if (ev) {
        CHECK(cm_httpd_respond(loop, ev->id, 200, NULL, 0, "", 0, &res) == CM_ERR);
        cm_event_free(ev);
    }
    close(fd);

    /* max_body is bounded; without event mode a POST is still 405 */
    o.max_body = CM_HTTPD_MAX_BODY + 1;
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_OK);
    fd = raw_connect(p);
    raw_send(fd, "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", strlen("POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"));
    raw_read(fd, buf, sizeof buf, 2, &closed, 0);
    CHECK(strncmp(buf, "HTTP/1.1 405 ", 13) == 0);
    CHECK(wait_request(0.05) == NULL);
    close(fd);
    CHECK(cm_httpd_close(loop, srv) == 1);
}

/* --- exec --------------------------------------------------------------------- */

static uint64_t sh(const char *script, double timeout, size_t max_output, const char *in, size_t in_len)
{
    const char *argv[] = {"/bin/sh", "-c", script};
    struct cm_exec_req req;
    struct cm_result res;
    uint64_t id = 0;
    cm_exec_req_init(&req);
    req.argv = argv;
    req.argc = 3;
    if (timeout > 0) req.timeout = timeout;
    if (max_output) req.max_output = max_output;
    req.stdin_data = in;
    req.stdin_len = in_len;
    req.kill_grace = 0.3;
    if (cm_proc_exec(loop, &req, &id, &res) != CM_OK) {
        fprintf(stderr, "exec: %s\n", res.message);
        return 0;
    }
    return id;
}

static void test_exec(void)
{
    struct cm_event *ev;
    struct cm_result res;
    uint64_t id;
    double t0;
    char *big;
    size_t big_len = 1024 * 1024, i;

    ev = wait_for(sh("exit 3", 0, 0, NULL, 0), 5);
    CHECK(ev && ev->kind == CM_EVENT_EXEC && !ev->failed && ev->exited && ev->exit_status == 3);
    cm_event_free(ev);

    ev = wait_for(sh("echo out; echo err >&2", 0, 0, NULL, 0), 5);
    CHECK(ev && ev->exited && ev->exit_status == 0);
    if (ev) {
        CHECK_STR(ev->out, "out\n");
        CHECK_STR(ev->err, "err\n");
        CHECK(!ev->out_truncated && !ev->err_truncated);
    }
    cm_event_free(ev);

    /* output bound: kept up to max_output, the rest read and dropped */
    ev = wait_for(sh("head -c 200000 /dev/zero", 0, 1000, NULL, 0), 5);
    CHECK(ev && ev->exited && ev->exit_status == 0 && ev->out_len == 1000 && ev->out_truncated);
    cm_event_free(ev);

    /* killed by a signal */
    ev = wait_for(sh("kill -9 $$", 0, 0, NULL, 0), 5);
    CHECK(ev && !ev->exited && ev->term_signal == SIGKILL);
    cm_event_free(ev);

    /* stdin, large enough to need several non-blocking writes */
    big = malloc(big_len);
    for (i = 0; i < big_len; i++) big[i] = (char)('a' + i % 26);
    ev = wait_for(sh("cat", 0, big_len, big, big_len), 10);
    CHECK(ev && ev->exited && ev->exit_status == 0 && ev->out_len == big_len);
    if (ev) CHECK(memcmp(ev->out, big, big_len) == 0);
    cm_event_free(ev);
    free(big);
    ev = wait_for(sh("wc -c", 0, 0, "", 0), 5);
    CHECK(ev && ev->exited && ev->out && atoi(ev->out) == 0);
    cm_event_free(ev);

    /* timeout: SIGTERM ends it */
    t0 = cm_clock_monotonic();
    ev = wait_for(sh("sleep 10", 0.3, 0, NULL, 0), 5);
    CHECK(ev && ev->failed && ev->term_signal == SIGTERM);
    if (ev) CHECK_STR(ev->res.code, "timeout");
    CHECK(cm_clock_monotonic() - t0 < 3);
    cm_event_free(ev);
    /* timeout, TERM ignored: SIGKILL after the grace */
    t0 = cm_clock_monotonic();
    ev = wait_for(sh("trap '' TERM; sleep 10; exit 0", 0.3, 0, NULL, 0), 5);
    CHECK(ev && ev->failed && ev->term_signal == SIGKILL);
    if (ev) CHECK_STR(ev->res.code, "timeout");
    CHECK(cm_clock_monotonic() - t0 >= 0.55 && cm_clock_monotonic() - t0 < 3);
    cm_event_free(ev);

    /* a grandchild keeping the pipes open does not hold the result back */
    t0 = cm_clock_monotonic();
    ev = wait_for(sh("sleep 3 & echo started", 0, 0, NULL, 0), 5);
    CHECK(ev && ev->exited && ev->exit_status == 0);
    if (ev) CHECK_STR(ev->out, "started\n");
    CHECK(cm_clock_monotonic() - t0 < 2);
    cm_event_free(ev);

    /* cannot execute */
    {
        const char *argv[] = {"/nonexistent/cmd"};
        const char *argv2[] = {"certmaint-no-such-command"};
        struct cm_exec_req req;
        cm_exec_req_init(&req);
        req.argv = argv;
        req.argc = 1;
        CHECK(cm_proc_exec(loop, &req, &id, &res) == CM_ERR);
        CHECK_STR(res.code, "ENOENT");
        req.argv = argv2;
        CHECK(cm_proc_exec(loop, &req, &id, &res) == CM_ERR);
        CHECK_STR(res.code, "ENOENT");
        req.argc = 0;
        CHECK(cm_proc_exec(loop, &req, &id, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
    }
    /* environment and cwd */
    {
        const char *argv[] = {"/bin/sh", "-c", "echo \"$FOO\"; pwd"};
        const char *envp[] = {"FOO=bar baz", "PATH=/usr/bin:/bin"};
        struct cm_exec_req req;
        cm_exec_req_init(&req);
        req.argv = argv;
        req.argc = 3;
        req.envp = envp;
        req.envc = 2;
        req.cwd = "/";
        CHECK(cm_proc_exec(loop, &req, &id, &res) == CM_OK);
        ev = wait_for(id, 5);
        CHECK(ev && ev->exited && ev->exit_status == 0);
        if (ev) CHECK_STR(ev->out, "bar baz\n/\n");
        cm_event_free(ev);
    }
    /* cancel: killed, never reported, not counted */
    id = sh("sleep 10", 0, 0, NULL, 0);
    step(0);
    CHECK(cm_proc_cancel(loop, id) == 1);
    CHECK(cm_proc_cancel(loop, id) == 0);
    CHECK(all_idle());
    step(0.2);
    CHECK(claim(id) == NULL);

    /* the SIGCHLD path, for kernels without pidfd */
    cm_proc_use_pidfd(0);
    ev = wait_for(sh("exit 5", 0, 0, NULL, 0), 5);
    CHECK(ev && ev->exited && ev->exit_status == 5);
    cm_event_free(ev);
    {
        uint64_t a = sh("sleep 0.2; exit 1", 0, 0, NULL, 0), b = sh("exit 2", 0, 0, NULL, 0);
        struct cm_event *ea = wait_for(a, 5), *eb = wait_for(b, 5);
        CHECK(ea && ea->exit_status == 1);
        CHECK(eb && eb->exit_status == 2);
        cm_event_free(ea);
        cm_event_free(eb);
    }
    cm_proc_use_pidfd(1);

    /* many at once */
    {
        uint64_t ids[50];
        int ok = 0;
        char script[32];
        for (i = 0; i < 50; i++) {
            snprintf(script, sizeof script, "exit %d", (int)i);
            ids[i] = sh(script, 0, 0, NULL, 0);
        }
        for (i = 0; i < 50; i++) {
            ev = wait_for(ids[i], 10);
            if (ev && ev->exited && ev->exit_status == (int)i) ok++;
            cm_event_free(ev);
        }
        CHECK(ok == 50);
    }
    CHECK(all_idle());
}

/* A child sees only its stdio: not curl's sockets, the server's, or ours. */
static void test_exec_fds(void)
{
    struct cm_httpd_opts o;
    struct cm_result res;
    struct cm_event *ev;
    uint64_t srv, req_id;
    int p, lp, sfd = silent_listener(&p), leaky = open("/dev/null", O_RDONLY); /* not O_CLOEXEC */
    char u[128];
    const char *argv[] = {"/bin/ls", "/proc/self/fd"};
    struct cm_exec_req req;
    uint64_t id;

    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    CHECK(cm_httpd_serve(loop, &o, &srv, &lp, &res) == CM_OK);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", p);
    req_id = request(u, NULL, 0, 10);
    step(0.05);
    step(0.05);
    cm_exec_req_init(&req);
    req.argv = argv;
    req.argc = 2;
    CHECK(cm_proc_exec(loop, &req, &id, &res) == CM_OK);
    ev = wait_for(id, 5);
    CHECK(ev && ev->exited && ev->exit_status == 0);
    if (ev) CHECK_STR(ev->out, "0\n1\n2\n3\n"); /* 3: ls's own directory handle */
    cm_event_free(ev);
    CHECK(cm_http_cancel(loop, req_id) == 1);
    CHECK(cm_httpd_close(loop, srv) == 1);
    close(sfd);
    close(leaky);
    CHECK(all_idle());
}

/* --- signals -------------------------------------------------------------------- */

static void test_signals(void)
{
    struct cm_result res;
    struct cm_event *ev;
    int hup = SIGHUP, bad = SIGSEGV, both[2] = {SIGUSR1, SIGHUP};

    CHECK(cm_loop_signal_watch(loop, &bad, 1, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_loop_signal_watch(loop, &hup, 1, &res) == CM_OK);
    CHECK(kill(getpid(), SIGHUP) == 0);
    ev = wait_for(0, 2);
    CHECK(ev && ev->kind == CM_EVENT_SIGNAL && ev->signo == SIGHUP);
    cm_event_free(ev);
    CHECK_STR(cm_loop_signal_name(SIGHUP), "HUP");
    CHECK(cm_loop_signal_number("TERM") == SIGTERM);
    CHECK(cm_loop_signal_number("SIGINT") == SIGINT);
    CHECK(cm_loop_signal_number("KILL") == 0);

    /* replacing the set; then a signal pending at unwatch is consumed, not fatal */
    CHECK(cm_loop_signal_watch(loop, both, 2, &res) == CM_OK);
    CHECK(kill(getpid(), SIGUSR1) == 0);
    ev = wait_for(0, 2);
    CHECK(ev && ev->signo == SIGUSR1);
    cm_event_free(ev);
    CHECK(kill(getpid(), SIGHUP) == 0);
    cm_loop_signal_unwatch(loop);
    step(0);
    CHECK(claim(0) == NULL);
    /* still alive: */
    CHECK(1);
}

/* --- reset -------------------------------------------------------------------- */

static void test_reset(void)
{
    struct cm_result res;
    struct cm_loop_counts c;
    struct cm_httpd_opts o;
    uint64_t srv;
    int p, sfd = silent_listener(&p);
    char u[128];

    snprintf(u, sizeof u, "http://127.0.0.1:%d/", p);
    CHECK(cm_loop_timer_add(loop, cm_clock_now() + 100, &res) != 0);
    CHECK(cm_loop_timer_after(loop, 100, &res) != 0);
    CHECK(request(u, NULL, 0, 10) != 0);
    CHECK(sh("sleep 10", 0, 0, NULL, 0) != 0);
    cm_httpd_opts_init(&o);
    o.listen = "127.0.0.1:0";
    CHECK(cm_httpd_serve(loop, &o, &srv, &p, &res) == CM_OK);
    step(0.05);
    cm_loop_pending(loop, &c);
    CHECK(c.timers == 2 && c.http == 1 && c.exec == 1 && c.servers >= 1);
    cm_loop_reset(loop);
    cm_loop_pending(loop, &c);
    CHECK(c.timers == 0 && c.http == 0 && c.exec == 0 && c.servers == 0);
    step(0.1);
    drop_stash();
    step(0);
    CHECK(stash == NULL);
    close(sfd);
}

int main(void)
{
    struct cm_result res;
    loop = cm_loop_get(&res);
    CHECK(loop != NULL);
    if (!loop) return CHECK_DONE();
    CHECK(cm_loop_get(&res) == loop);

    test_timers();
    test_fake_clock();
    test_http_basic();
    test_http_failures();
    test_http_responses();
    test_http_concurrent();
    test_httpd_robust();
    test_httpd_events();
    test_exec();
    test_exec_fds();
    test_signals();
    test_reset();

    drop_stash();
    cm_loop_shutdown();
    /* a fresh loop after shutdown works */
    loop = cm_loop_get(&res);
    CHECK(loop != NULL);
    if (loop) {
        uint64_t t = cm_loop_timer_add(loop, cm_clock_now() - 1, &res);
        struct cm_event *ev = wait_for(t, 1);
        CHECK(ev != NULL);
        cm_event_free(ev);
    }
    cm_loop_shutdown();
    return CHECK_DONE();
}
