/* listen.h - a non-blocking TCP listening socket from "HOST:PORT" text, for
 * the servers that live in the loop (tlsalpn.c; httpd.c has its own copy
 * until it moves here).
 */
#ifndef CM_LISTEN_H
#define CM_LISTEN_H

#include "result.h"

/* Listen on `addr`: "127.0.0.1:5001", "[::1]:5001", "localhost:5001"
 * (127.0.0.1), ":5001" or "*:5001" (all IPv4); numeric hosts only, port
 * 0 picks one.  *fd gets the socket (non-blocking, close-on-exec,
 * SO_REUSEADDR), *port the bound port.  CM_ERR with res "invalid" (bad
 * text), "EADDRINUSE", "EACCES", "EADDRNOTAVAIL", "EMFILE", "ENFILE",
 * "ENOMEM" or "listen"; *fd is then -1. */
int cm_listen_tcp(const char *addr, int *fd, int *port, struct cm_result *res);

#endif
