/* httpd.h - a tiny HTTP/1.x server that lives inside the loop.
 *
 * It answers GET and HEAD for exact paths from a table held in C (the ACME
 * http-01 challenges, /.well-known/acme-challenge/TOKEN), 404 for any other
 * path and 405 for any other method, entirely in C: no event reaches the
 * host.  Built to shrug off slow or garbage clients: non-blocking accept,
 * request heads bounded to CM_HTTPD_MAX_REQUEST bytes, one deadline per
 * connection (a slow-loris holds a slot for `timeout` seconds at most), a
 * connection cap, request bodies never read (such connections are closed
 * after the answer), keep-alive and pipelining for well-behaved clients.
 *
 * Event mode (opts.events): what the table cannot answer -- a path not in
 * it, or a method other than GET/HEAD -- becomes a CM_EVENT_HTTPD_REQUEST for
 * the host (method, path, query, headers, body of at most opts.max_body
 * bytes, read with Content-Length only), and the connection waits, reading
 * nothing more, until cm_httpd_respond() answers that request id.  The same
 * deadline covers reading the request and waiting for the answer: a request
 * the host never answers costs its connection `timeout` seconds, no more.
 * Answers from the table stay in C, never reaching the host.
 */
#ifndef CM_HTTPD_H
#define CM_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "result.h"

#define CM_HTTPD_MAX_REQUEST 8192          /* request line + headers */
#define CM_HTTPD_MAX_PATH 2048
#define CM_HTTPD_MAX_BODY ((size_t)1024 * 1024)
#define CM_HTTPD_MAX_PATHS 100000
#define CM_HTTPD_DEFAULT_BODY ((size_t)64 * 1024)
#define CM_HTTPD_MAX_RESPONSE ((size_t)512 * 1024 * 1024) /* a host answer's body (metrics of 100k certificates) */
#define CM_HTTPD_MAX_RESPONSE_HEADERS 4096 /* bytes of headers a host answer may add */

struct cm_httpd_opts {
    const char *listen;        /* "127.0.0.1:0", "[::1]:5002", ":5002" (all IPv4) */
    double timeout;            /* seconds a connection may take per request, idle included (default 10) */
    size_t max_connections;    /* open connections per server (default 1024); more are closed at once */
    int events;                /* 1: ask the host about what the table cannot answer (see above) */
    size_t max_body;           /* event mode: request body bytes read at most (default 64 KiB,
                                  at most CM_HTTPD_MAX_BODY); a larger one gets 413 */
    size_t max_response;       /* event mode: body bytes of a host answer, at most (default
                                  CM_HTTPD_MAX_BODY, at most CM_HTTPD_MAX_RESPONSE) */
};

/* What a server has done (for tests and status). */
struct cm_httpd_stats {
    size_t connections;        /* open now */
    size_t paths;              /* paths served */
    uint64_t accepted, rejected, timeouts;
    uint64_t requests, ok, not_found, bad;
    uint64_t asked, answered;  /* event mode: requests handed to the host, answers it gave */
};

/* Fill opts with the defaults (listen NULL). */
void cm_httpd_opts_init(struct cm_httpd_opts *opts);

/* Bind and listen; *id is the server's id and *port the bound port (useful
 * with port 0).  CM_ERR with res "invalid" (bad address), "EADDRINUSE",
 * "EACCES" or another errno name. */
int cm_httpd_serve(struct cm_loop *loop, const struct cm_httpd_opts *opts, uint64_t *id,
                   int *port, struct cm_result *res);

/* Serve body (copied, len bytes) at the exact path (which starts with "/";
 * a query string in a request is ignored when matching).  content_type NULL
 * means "text/plain".  Replaces an existing entry.  CM_ERR: "ENOENT" (no
 * such server), "invalid" (path, size or content type), "ENOMEM". */
int cm_httpd_set(struct cm_loop *loop, uint64_t id, const char *path, const char *body,
                 size_t len, const char *content_type, struct cm_result *res);

/* Stop serving path; returns 1 if it was served, 0 otherwise. */
int cm_httpd_unset(struct cm_loop *loop, uint64_t id, const char *path);

/* Answer the event-mode request `request_id` (the event's id): status
 * 200..599, headers as "Name: value" strings (n of them; Content-Length,
 * Connection and Transfer-Encoding are the server's own and refused;
 * Content-Type defaults to text/plain), body copied.  HEAD gets the headers
 * only.  CM_ERR: "ENOENT" (no such request: answered already, or its client
 * left or timed out), "invalid" (status, header or size), "ENOMEM". */
int cm_httpd_respond(struct cm_loop *loop, uint64_t request_id, int status, const char *const *headers,
                     size_t n, const char *body, size_t len, struct cm_result *res);

/* Close the server and all its connections; 1 if it existed. */
int cm_httpd_close(struct cm_loop *loop, uint64_t id);

/* Fill *st; CM_ERR ("ENOENT") when there is no such server. */
int cm_httpd_stats(struct cm_loop *loop, uint64_t id, struct cm_httpd_stats *st,
                   struct cm_result *res);

#endif
