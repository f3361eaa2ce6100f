/* http.h - the HTTP client: libcurl easy handles on the loop's one multi.
 *
 * Driven exactly like curl's docs/examples/multi-uv.c: CURLMOPT_SOCKETFUNCTION
 * registers curl's sockets with the loop's epoll, CURLMOPT_TIMERFUNCTION arms
 * one internal timer, and curl_multi_socket_action runs from the loop's
 * callbacks.  Finished transfers are drained with curl_multi_info_read and
 * become CM_EVENT_HTTP events; nothing calls back into the host.
 *
 * Every transfer: CURLOPT_PRIVATE, CURLOPT_PROTOCOLS_STR (redirects are not
 * followed), connect + overall timeouts, a low-speed stall limit, body and
 * header buffers bounded (past max_bytes the transfer aborts with code
 * "toobig"), CURLOPT_NOSIGNAL.  One shared multi handle reuses connections
 * and TLS sessions.
 */
#ifndef CM_HTTP_H
#define CM_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "result.h"

#define CM_HTTP_MAX_BYTES_LIMIT ((size_t)256 * 1024 * 1024)
#define CM_HTTP_MAX_HEADER_BYTES ((size_t)64 * 1024)

/* A request.  Strings are borrowed for the duration of cm_http_request only
 * (everything is copied). */
struct cm_http_req {
    const char *url;
    const char *method;             /* "GET" (default), "POST", "HEAD", "PUT", ... */
    const char *const *headers;     /* "Name: value" lines */
    size_t header_count;
    const char *body;               /* NULL: no body */
    size_t body_len;
    double timeout;                 /* overall seconds (default 30) */
    double connect_timeout;         /* seconds (default 10) */
    double stall_timeout;           /* abort below 1 byte/s for this long (default 15) */
    size_t max_bytes;               /* response body cap (default 1 MiB) */
    const char *ca_file;            /* PEM bundle to trust; NULL: system store */
    const char *cert_file;          /* PEM client certificate (TLS client auth); NULL: none */
    const char *key_file;           /* PEM private key of cert_file; NULL: in cert_file */
    const char *protocols;          /* "http,https" (default) or "https" or "http" */
    int insecure;                   /* 1: skip certificate and host checks */
};

/* Fill req with the defaults above (url NULL). */
void cm_http_req_init(struct cm_http_req *req);

/* Start a transfer on the loop; *id receives its id, and its completion
 * arrives as a CM_EVENT_HTTP with that id: http_status, headers (lower-case
 * names, last wins), body; or failed=1 and res.code "timeout", "toobig",
 * "connect", "resolve", "tls", "protocol", "url", "network" or "http".
 * CM_ERR (res "invalid" or "ENOMEM") when the request itself is wrong. */
int cm_http_request(struct cm_loop *loop, const struct cm_http_req *req, uint64_t *id,
                    struct cm_result *res);

/* Abort a transfer in flight; it produces no event.  Returns 1 if it was
 * running, 0 if unknown or finished. */
int cm_http_cancel(struct cm_loop *loop, uint64_t id);

#endif
