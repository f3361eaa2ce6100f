/* fuzz_http_request.c - the challenge server (core/loop/httpd.c) on
 * untrusted bytes: whatever a client on the network sends to the http-01
 * port, over a real TCP connection on 127.0.0.1 to the real server in the
 * real loop.
 *
 * The first byte picks the server: even, the table-only server (challenge
 * paths answered in C, 404/405/400 otherwise: `challenges.http01`
 * standalone); odd, the event-mode server (what the table cannot answer goes
 * to the host: the distributed-challenge responder), whose requests the
 * harness answers as the host does.  The rest is written to the connection,
 * then the write side is shut.
 *
 * Properties (httpd.h): the server closes the connection within its
 * deadline; what it sends is a sequence of complete HTTP/1.1 responses, each
 * with a 3-digit status and a Content-Length its body has exactly (HEAD
 * aside); a request handed to the host has a method of A-Z, a path starting
 * "/", and a body of at most max_body bytes. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "fuzz.h"
#include "loop/httpd.h"
#include "loop/loop.h"

#define TOKEN_PATH "/.well-known/acme-challenge/tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
#define MAX_OUT (256 * 1024)
#define MAX_BODY 4096
#define DEADLINE 5.0 /* seconds: the server's timeout (2 s) and some */

static struct cm_loop *loop;
static int ports[2];

static void start(void)
{
    struct cm_result res;
    struct cm_httpd_opts o;
    uint64_t id;
    int i;
    signal(SIGPIPE, SIG_IGN);
    if (!(loop = cm_loop_get(&res))) {
        fprintf(stderr, "fuzz_http_request: no loop: %s\n", res.message);
        abort();
    }
    for (i = 0; i < 2; i++) {
        cm_httpd_opts_init(&o);
        o.listen = "127.0.0.1:0";
        o.timeout = 2;
        o.events = i;
        o.max_body = MAX_BODY;
        if (cm_httpd_serve(loop, &o, &id, &ports[i], &res) != CM_OK ||
            cm_httpd_set(loop, id, TOKEN_PATH, "tok.thumb", 9, "application/octet-stream", &res) != CM_OK) {
            fprintf(stderr, "fuzz_http_request: server: %s\n", res.message);
            abort();
        }
    }
}

/* A connect() interrupted by a signal (libFuzzer's alarm) goes on in the
 * background: wait for it and say whether it worked. */
static int connected(int fd)
{
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    while (poll(&p, 1, -1) < 0)
        if (errno != EINTR) return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return 0;
    errno = err;
    return err == 0;
}

static int connect_to(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    FUZZ_CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* blocking connect: the listener's backlog takes it before accept() */
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && !(errno == EINTR && connected(fd))) {
        fprintf(stderr, "fuzz_http_request: connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        abort();
    }
    FUZZ_CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
    return fd;
}

/* The host's side of event mode: check the request and answer it. */
static void answer_events(void)
{
    struct cm_event *ev = cm_loop_take_events(loop), *next;
    struct cm_result res;
    static const char *const hdrs[] = {"Content-Type: text/plain"};
    for (; ev; ev = next) {
        size_t i;
        next = ev->next;
        if (ev->kind == CM_EVENT_HTTPD_REQUEST) {
            FUZZ_CHECK(ev->method && ev->method[0] && ev->path && ev->path[0] == '/');
            for (i = 0; ev->method[i]; i++) FUZZ_CHECK(ev->method[i] >= 'A' && ev->method[i] <= 'Z');
            FUZZ_CHECK(ev->body && ev->body_len <= MAX_BODY && ev->body[ev->body_len] == '\0');
            for (i = 0; i < ev->header_count; i++) FUZZ_CHECK(ev->headers[i].name && ev->headers[i].value);
            /* "gone" when the client left meanwhile: fine */
            (void)cm_httpd_respond(loop, ev->id, 404, hdrs, 1, "not here\n", 9, &res);
        }
        cm_event_free(ev);
    }
}

/* The responses in out[0..n): complete, each framed by its Content-Length. */
static void check_responses(const char *out, size_t n)
{
    size_t off = 0;
    while (off < n) {
        const char *p = out + off, *end = out + n, *head_end, *cl;
        long long len = -1;
        FUZZ_CHECK(n - off > 13 && memcmp(p, "HTTP/1.1 ", 9) == 0);
        FUZZ_CHECK(p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9');
        head_end = NULL;
        {
            const char *q;
            for (q = p; q + 3 < end; q++)
                if (memcmp(q, "\r\n\r\n", 4) == 0) { head_end = q + 4; break; }
        }
        FUZZ_CHECK(head_end != NULL);
        for (cl = p; cl < head_end - 16; cl++)
            if (strncasecmp(cl, "\r\nContent-Length:", 17) == 0) {
                len = strtoll(cl + 17, NULL, 10);
                break;
            }
        /* 204/304 have no body, nor does a HEAD answer: then the next response
         * follows at once (no body the server sends starts "HTTP/1.1 ") */
        {
            size_t rest = (size_t)(end - head_end);
            int next_follows = rest >= 9 && memcmp(head_end, "HTTP/1.1 ", 9) == 0;
            if (len > 0 && !next_follows && rest > 0) {
                FUZZ_CHECK(rest >= (size_t)len); /* never shorter than its Content-Length */
                off = (size_t)(head_end - out) + (size_t)len;
            } else {
                off = (size_t)(head_end - out);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cm_result res;
    char *out = NULL;
    size_t out_len = 0, sent = 0;
    int fd, shut = 0, closed = 0;
    double deadline;

    if (size == 0) return 0;
    if (!loop) start();
    fd = connect_to(ports[data[0] & 1]);
    data++, size--;
    out = malloc(MAX_OUT);
    FUZZ_CHECK(out != NULL);
    deadline = cm_clock_monotonic() + DEADLINE;
    while (!closed) {
        ssize_t n;
        if (sent < size) {
            n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0) sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                sent = size; /* the server closed */
        }
        if (sent == size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = 1;
        }
        FUZZ_CHECK(cm_loop_step(loop, 0.002, &res) == CM_OK);
        answer_events();
        for (;;) {
            n = recv(fd, out + out_len, MAX_OUT - out_len, 0);
            if (n > 0) {
                out_len += (size_t)n;
                FUZZ_CHECK(out_len < MAX_OUT); /* a few short answers, never this much */
            } else {
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) closed = 1;
                break;
            }
        }
        /* the connection's deadline closes even a request that never ends */
        FUZZ_CHECK(closed || cm_clock_monotonic() < deadline);
    }
    check_responses(out, out_len);
    {
        /* the server has closed: reset instead of FIN, so no TIME_WAIT is
         * left for each input to exhaust the ephemeral ports */
        struct linger lg = {1, 0};
        FUZZ_CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    }
    close(fd);
    free(out); out = NULL;
    /* let the server see the close and free the connection */
    FUZZ_CHECK(cm_loop_step(loop, 0, &res) == CM_OK);
    answer_events();
    return 0;
}
