/* tlsalpn.h - the tls-alpn-01 responder (RFC 8737) that lives in the loop.
 *
 * A TLS listener that completes a handshake only for a client offering the
 * ALPN protocol "acme-tls/1" and naming, by SNI, an identifier it holds a
 * challenge for; it then presents a self-signed certificate whose only SAN
 * is that identifier and which carries the critical id-pe-acmeIdentifier
 * extension (1.3.6.1.5.5.7.1.31) with the SHA-256 of the key authorization,
 * and closes the connection (section 3: no data follows the handshake).
 * Everything else (no ALPN, another protocol, an unknown or absent SNI) is
 * refused with a TLS alert.  Identifiers are DNS names or, per RFC 8738
 * section 6, IP addresses (their SNI is the reverse-DNS name,
 * "4.3.2.1.in-addr.arpa" / "…ip6.arpa"; the certificate's SAN is the
 * iPAddress).
 *
 * Non-blocking OpenSSL on the loop's epoll: one handshake state machine a
 * connection, one monotonic deadline a connection (timeout), a connection
 * cap; OpenSSL bounds the records.  All in C: no event reaches the host.
 * Like every server of the loop it is closed by cm_loop_reset and counted
 * in cm_loop_pending's servers.
 */
#ifndef CM_TLSALPN_H
#define CM_TLSALPN_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "result.h"

#define CM_TLSALPN_PROTOCOL "acme-tls/1"
#define CM_TLSALPN_MAX_NAMES 100000
#define CM_TLSALPN_MAX_NAME 253     /* a DNS name's longest text */
#define CM_TLSALPN_MAX_KEYAUTH 4096 /* token "." thumbprint, with room */

struct cm_tlsalpn_opts {
    const char *listen;     /* "127.0.0.1:5001", "[::1]:5001", ":443" */
    double timeout;         /* seconds a connection may take (default 10) */
    size_t max_connections; /* open connections (default 1024); more are closed at once */
};

struct cm_tlsalpn_stats {
    size_t connections;     /* open now */
    size_t names;           /* identifiers with a challenge */
    uint64_t accepted, rejected, timeouts;
    uint64_t handshakes;    /* completed: a validator saw a challenge certificate */
    uint64_t refused;       /* handshakes refused: no/other ALPN, unknown/absent SNI, bad TLS */
};

/* Fill opts with the defaults (listen NULL). */
void cm_tlsalpn_opts_init(struct cm_tlsalpn_opts *opts);

/* Bind and listen; *id is the server's id, *port the bound port.  Makes the
 * server's P-256 key (one for all its certificates).  CM_ERR with res
 * "invalid" (address, timeout, max_connections), "EADDRINUSE", "EACCES",
 * "crypto", "ENOMEM", another errno name. */
int cm_tlsalpn_serve(struct cm_loop *loop, const struct cm_tlsalpn_opts *opts, uint64_t *id,
                     int *port, struct cm_result *res);

/* Answer challenges for identifier (a DNS name, lower case, no "*.", or an
 * IP address) with the key authorization key_auth[0..len): the certificate
 * is made now.  Replaces an existing entry.  CM_ERR: "ENOENT" (no such
 * server), "invalid" (identifier or key authorization: the message says
 * which), "crypto", "ENOMEM". */
int cm_tlsalpn_set(struct cm_loop *loop, uint64_t id, const char *identifier,
                   const char *key_auth, size_t len, struct cm_result *res);

/* Stop answering for identifier; 1 if it was held, 0 otherwise. */
int cm_tlsalpn_unset(struct cm_loop *loop, uint64_t id, const char *identifier);

/* Close the server and its connections; 1 if it existed. */
int cm_tlsalpn_close(struct cm_loop *loop, uint64_t id);

/* Fill *st; CM_ERR ("ENOENT") when there is no such server. */
int cm_tlsalpn_stats(struct cm_loop *loop, uint64_t id, struct cm_tlsalpn_stats *st,
                     struct cm_result *res);

#endif
