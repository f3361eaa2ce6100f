/* tlsalpn.c - the in-loop tls-alpn-01 responder (RFC 8737, RFC 8738 §6).
 *
 * A connection is one non-blocking server handshake: SSL_do_handshake on
 * each readiness, the epoll interest following WANT_READ / WANT_WRITE, one
 * deadline.  The ClientHello callback refuses a client without ALPN, the ALPN
 * callback accepts "acme-tls/1" only, the certificate callback picks the
 * challenge certificate by SNI.  A completed handshake
 * is the whole exchange: close_notify is sent once and the connection
 * closed.
 */
#include "tlsalpn.h"
#include "listen.h"
#include "loop_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "crypto.h"
#include "x509_ssl.h"

#define ACCEPT_BATCH 64
#define ACME_IDENTIFIER_OID "1.3.6.1.5.5.7.1.31"
#define SNI_MAX 80 /* an ip6.arpa name is 72 characters */
#define NAME_MAX_LEN (CM_TLSALPN_MAX_NAME > SNI_MAX ? CM_TLSALPN_MAX_NAME : SNI_MAX)

/* One identifier's challenge: the SNI it answers and its certificate. */
struct entry {
    char sni[NAME_MAX_LEN + 1];
    char identifier[CM_TLSALPN_MAX_NAME + 1];
    X509 *cert;
    struct entry *next;
};

struct conn;

struct server {
    uint64_t id;
    int fd;
    struct cm_watch *w;
    struct cm_itimer retry; /* accept again after running out of fds */
    SSL_CTX *ctx;
    EVP_PKEY *key;
    struct entry **buckets;
    size_t nbuckets;
    struct conn *conns;
    size_t max_conns;
    double timeout;
    struct cm_tlsalpn_stats stats;
    struct server *prev, *next;
};

struct conn {
    struct server *srv;
    int fd;
    SSL *ssl;
    struct cm_watch *w;
    struct cm_itimer timer;
    struct conn *prev, *next;
};

struct cm_tlsalpn_state {
    struct server *list;
    size_t count;
};

static struct cm_tlsalpn_state *state(struct cm_loop *loop) { return *cm_loop_tlsalpn_slot(loop); }

void cm_tlsalpn_opts_init(struct cm_tlsalpn_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->timeout = 10;
    opts->max_connections = 1024;
}

size_t cm_tlsalpn_count(struct cm_loop *loop) { return state(loop) ? state(loop)->count : 0; }

int cm_tlsalpn_init(struct cm_loop *loop, struct cm_result *res)
{
    struct cm_tlsalpn_state *st = calloc(1, sizeof *st);
    if (!st) return cm_fail(res, "ENOMEM", "out of memory");
    *cm_loop_tlsalpn_slot(loop) = st;
    return CM_OK;
}

/* --- names ------------------------------------------------------------------ */

static size_t name_hash(const char *p)
{
    size_t h = 1469598103934665603ULL & SIZE_MAX;
    for (; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL & SIZE_MAX;
    }
    return h;
}

static struct entry **entry_slot(struct server *s, const char *sni)
{
    struct entry **e = &s->buckets[name_hash(sni) & (s->nbuckets - 1)];
    while (*e && strcmp((*e)->sni, sni) != 0) e = &(*e)->next;
    return e;
}

static int buckets_grow(struct server *s)
{
    size_t cap = s->nbuckets ? s->nbuckets * 2 : 64, i;
    struct entry **fresh = calloc(cap, sizeof *fresh);
    if (!fresh) return CM_ERR;
    for (i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i];
        while (e) {
            struct entry *next = e->next;
            size_t b = name_hash(e->sni) & (cap - 1);
            e->next = fresh[b];
            fresh[b] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = fresh;
    s->nbuckets = cap;
    return CM_OK;
}

static void entry_free(struct entry *e)
{
    X509_free(e->cert);
    free(e);
}

/* The SNI a validator sends for identifier (RFC 8738 §6 for IPs), lower
 * case, and the identifier in the form the SAN takes; CM_ERR (res
 * "invalid") for anything that is not a DNS name or IP address. */
static int identifier_sni(const char *identifier, char *sni, char *canon, struct cm_result *res)
{
    unsigned char ip[16];
    size_t n = identifier ? strlen(identifier) : 0, i;
    char *p = sni;
    if (n == 0 || n > CM_TLSALPN_MAX_NAME)
        return cm_fail(res, "invalid", "tls-alpn-01: identifier must be 1 to %d characters",
                       CM_TLSALPN_MAX_NAME);
    if (inet_pton(AF_INET, identifier, ip) == 1) {
        snprintf(sni, SNI_MAX + 1, "%u.%u.%u.%u.in-addr.arpa", ip[3], ip[2], ip[1], ip[0]);
        snprintf(canon, CM_TLSALPN_MAX_NAME + 1, "%s", identifier);
        return CM_OK;
    }
    if (inet_pton(AF_INET6, identifier, ip) == 1) {
        static const char hex[] = "0123456789abcdef";
        for (i = 16; i-- > 0;) {
            *p++ = hex[ip[i] & 0xf];
            *p++ = '.';
            *p++ = hex[ip[i] >> 4];
            *p++ = '.';
        }
        memcpy(p, "ip6.arpa", sizeof "ip6.arpa");
        if (!inet_ntop(AF_INET6, ip, canon, CM_TLSALPN_MAX_NAME + 1))
            return cm_fail(res, "invalid", "tls-alpn-01: bad IPv6 identifier");
        return CM_OK;
    }
    for (i = 0; i < n; i++) {
        char c = identifier[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return cm_fail(res, "invalid",
                           "tls-alpn-01: identifier \"%.80s\" is not a DNS name or IP address "
                           "(character %zu; wildcards need dns-01)", identifier, i + 1);
        sni[i] = canon[i] = c;
    }
    sni[n] = canon[n] = '\0';
    if (sni[0] == '.' || sni[n - 1] == '.' || strstr(sni, ".."))
        return cm_fail(res, "invalid", "tls-alpn-01: identifier \"%.80s\" has an empty label",
                       identifier);
    return CM_OK;
}

/* The challenge certificate for identifier (canonical form) under key. */
static X509 *challenge_cert(const char *identifier, const unsigned char digest[CM_SHA256_LEN],
                            EVP_PKEY *key, struct cm_result *res)
{
    X509 *x = NULL;
    X509_NAME *subj = NULL;
    GENERAL_NAMES *gens = NULL;
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *value = NULL;
    X509_EXTENSION *ext = NULL;
    BIGNUM *serial = NULL;
    unsigned char rnd[16], inner[2 + CM_SHA256_LEN];

    if (cm_crypto_random_bytes(rnd, sizeof rnd, res) != CM_OK) return NULL;
    rnd[0] &= 0x7f; /* a positive serial */
    /* extnValue: the DER of an OCTET STRING holding the digest (RFC 8737 §3) */
    inner[0] = 0x04;
    inner[1] = CM_SHA256_LEN;
    memcpy(inner + 2, digest, CM_SHA256_LEN);
    if (!(x = X509_new()) || X509_set_version(x, 2) != 1 ||
        !(serial = BN_bin2bn(rnd, sizeof rnd, NULL)) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400) || !(subj = X509_NAME_new()) ||
        X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_ASC,
                                   (const unsigned char *)"ACME tls-alpn-01 challenge", -1, -1,
                                   0) != 1 ||
        X509_set_subject_name(x, subj) != 1 || X509_set_issuer_name(x, subj) != 1 ||
        X509_set_pubkey(x, key) != 1) {
        cm_fail_ssl(res, "crypto", "tls-alpn-01: building the certificate for %s failed",
                    identifier);
        goto fail;
    }
    if (!(gens = cm_ssl_general_names(&identifier, 1, GEN_DNS, res))) goto fail;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) != 1 ||
        !(oid = OBJ_txt2obj(ACME_IDENTIFIER_OID, 1)) || !(value = ASN1_OCTET_STRING_new()) ||
        ASN1_OCTET_STRING_set(value, inner, sizeof inner) != 1 ||
        !(ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value)) ||
        X509_add_ext(x, ext, -1) != 1 || X509_sign(x, key, EVP_sha256()) <= 0) {
        cm_fail_ssl(res, "crypto", "tls-alpn-01: building the certificate for %s failed",
                    identifier);
        goto fail;
    }
    goto out;
fail:
    X509_free(x);
    x = NULL;
out:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    GENERAL_NAMES_free(gens);
    X509_NAME_free(subj);
    BN_free(serial);
    return x;
}

int cm_tlsalpn_set(struct cm_loop *loop, uint64_t id, const char *identifier,
                   const char *key_auth, size_t len, struct cm_result *res)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_TLS_SERVER);
    struct entry *e, **slot;
    unsigned char digest[CM_SHA256_LEN];
    char sni[NAME_MAX_LEN + 1], canon[CM_TLSALPN_MAX_NAME + 1];
    X509 *cert;
    size_t i;

    if (!s) return cm_fail(res, "ENOENT", "no tls-alpn-01 server %llu", (unsigned long long)id);
    if (identifier_sni(identifier, sni, canon, res) != CM_OK) return CM_ERR;
    if (!key_auth || len == 0 || len > CM_TLSALPN_MAX_KEYAUTH)
        return cm_fail(res, "invalid", "tls-alpn-01: key authorization must be 1 to %d bytes",
                       CM_TLSALPN_MAX_KEYAUTH);
    for (i = 0; i < len; i++)
        if ((unsigned char)key_auth[i] <= 0x20 || (unsigned char)key_auth[i] >= 0x7f)
            return cm_fail(res, "invalid", "tls-alpn-01: key authorization has a byte that is "
                                           "not printable ASCII at offset %zu", i);
    if (cm_crypto_sha256(key_auth, len, digest, res) != CM_OK) return CM_ERR;
    if (!(cert = challenge_cert(canon, digest, s->key, res))) return CM_ERR;
    slot = entry_slot(s, sni);
    if (*slot) {
        X509_free((*slot)->cert);
        (*slot)->cert = cert;
        return CM_OK;
    }
    if (s->stats.names >= CM_TLSALPN_MAX_NAMES) {
        X509_free(cert);
        return cm_fail(res, "invalid", "tls-alpn-01: server already holds %d names",
                       CM_TLSALPN_MAX_NAMES);
    }
    if (s->stats.names + 1 > s->nbuckets && buckets_grow(s) != CM_OK) {
        X509_free(cert);
        return cm_fail(res, "ENOMEM", "out of memory");
    }
    if (!(e = calloc(1, sizeof *e))) {
        X509_free(cert);
        return cm_fail(res, "ENOMEM", "out of memory");
    }
    memcpy(e->sni, sni, sizeof e->sni);
    memcpy(e->identifier, canon, sizeof e->identifier);
    e->cert = cert;
    slot = entry_slot(s, sni);
    *slot = e;
    s->stats.names++;
    return CM_OK;
}

int cm_tlsalpn_unset(struct cm_loop *loop, uint64_t id, const char *identifier)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_TLS_SERVER);
    char sni[NAME_MAX_LEN + 1], canon[CM_TLSALPN_MAX_NAME + 1];
    struct entry **slot, *e;
    if (!s || identifier_sni(identifier, sni, canon, NULL) != CM_OK) return 0;
    slot = entry_slot(s, sni);
    if (!(e = *slot)) return 0;
    *slot = e->next;
    entry_free(e);
    s->stats.names--;
    return 1;
}

/* --- TLS callbacks -------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x0a" CM_TLSALPN_PROTOCOL;
    unsigned char *chosen = NULL;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&chosen, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* Before anything else: a ClientHello without ALPN gets no handshake (the
 * ALPN callback only runs when the client sent the extension). */
static int require_alpn(SSL *ssl, int *alert, void *arg)
{
    const unsigned char *ext = NULL;
    size_t len = 0;
    (void)arg;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len) != 1 ||
        len == 0) {
        *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* After the ClientHello: the certificate for its SNI, or refuse. */
static int pick_cert(SSL *ssl, void *arg)
{
    struct server *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char sni[SNI_MAX + 1];
    struct entry *e;
    size_t i, n;
    if (!name || (n = strlen(name)) == 0 || n > SNI_MAX) return 0;
    for (i = 0; i <= n; i++)
        sni[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    if (!(e = *entry_slot(s, sni))) return 0;
    if (SSL_use_certificate(ssl, e->cert) != 1 || SSL_use_PrivateKey(ssl, s->key) != 1)
        return 0;
    return 1;
}

/* --- connections ---------------------------------------------------------------- */

static void conn_close(struct cm_loop *loop, struct conn *c)
{
    struct server *s = c->srv;
    cm_loop_itimer_stop(loop, &c->timer);
    cm_loop_watch_del(loop, c->w);
    c->w = NULL;
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->stats.connections--;
    free(c);
    ERR_clear_error(); /* a refused handshake leaves OpenSSL's queue filled */
}

static void conn_timeout(struct cm_loop *loop, struct cm_itimer *t)
{
    struct conn *c = (struct conn *)(void *)((char *)t - offsetof(struct conn, timer));
    c->srv->stats.timeouts++;
    conn_close(loop, c);
}

static void conn_io(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct conn *c = w->owner;
    int r, err;
    (void)revents;
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->srv->stats.handshakes++;
        (void)SSL_shutdown(c->ssl); /* one close_notify; the validator hangs up anyway */
        conn_close(loop, c);
        return;
    }
    err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        uint32_t ev = err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        if (w->events != ev && cm_loop_watch_mod(loop, w, ev, NULL) != CM_OK) conn_close(loop, c);
        return;
    }
    c->srv->stats.refused++;
    conn_close(loop, c);
}

static void server_pause_end(struct cm_loop *loop, struct cm_itimer *t)
{
    struct server *s = (struct server *)(void *)((char *)t - offsetof(struct server, retry));
    if (cm_loop_watch_mod(loop, s->w, EPOLLIN, NULL) != CM_OK)
        (void)cm_loop_itimer_set(loop, &s->retry, cm_clock_monotonic() + 0.1, NULL);
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
                if (cm_loop_watch_mod(loop, s->w, 0, &res) == CM_OK)
                    (void)cm_loop_itimer_set(loop, &s->retry, cm_clock_monotonic() + 0.1, &res);
            }
            return;
        }
        if (s->stats.connections >= s->max_conns) {
            s->stats.rejected++;
            close(fd);
            continue;
        }
        if (!(c = calloc(1, sizeof *c))) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        c->timer.fire = conn_timeout;
        if (!(c->ssl = SSL_new(s->ctx)) || SSL_set_fd(c->ssl, fd) != 1 ||
            !(c->w = cm_loop_watch_add(loop, fd, EPOLLIN, conn_io, c, &res)) ||
            cm_loop_itimer_set(loop, &c->timer, cm_clock_monotonic() + s->timeout, &res) !=
                CM_OK) {
            cm_loop_watch_del(loop, c->w);
            SSL_free(c->ssl);
            close(fd);
            free(c);
            ERR_clear_error();
            continue;
        }
        SSL_set_accept_state(c->ssl);
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->stats.connections++;
        s->stats.accepted++;
    }
}

/* --- servers --------------------------------------------------------------------- */

static void server_free(struct cm_loop *loop, struct server *s, int linked)
{
    size_t i;
    while (s->conns) conn_close(loop, s->conns);
    cm_loop_itimer_stop(loop, &s->retry);
    cm_loop_watch_del(loop, s->w);
    s->w = NULL;
    if (s->fd >= 0) close(s->fd);
    for (i = 0; i < s->nbuckets; i++) {
        while (s->buckets[i]) {
            struct entry *e = s->buckets[i];
            s->buckets[i] = e->next;
            entry_free(e);
        }
    }
    free(s->buckets);
    SSL_CTX_free(s->ctx);
    EVP_PKEY_free(s->key);
    if (linked) {
        struct cm_tlsalpn_state *st = state(loop);
        if (s->prev) s->prev->next = s->next;
        else st->list = s->next;
        if (s->next) s->next->prev = s->prev;
        st->count--;
        cm_loop_id_del(loop, s->id);
    }
    free(s);
}

int cm_tlsalpn_serve(struct cm_loop *loop, const struct cm_tlsalpn_opts *opts, uint64_t *id,
                     int *port, struct cm_result *res)
{
    struct cm_tlsalpn_state *st = state(loop);
    struct server *s;

    if (!isfinite(opts->timeout) || opts->timeout <= 0 || opts->timeout > 3600)
        return cm_fail(res, "invalid", "tls-alpn-01 server timeout must be > 0 and at most "
                                       "3600 seconds");
    if (opts->max_connections == 0 || opts->max_connections > 65536)
        return cm_fail(res, "invalid", "max_connections must be between 1 and 65536");
    if (!(s = calloc(1, sizeof *s))) return cm_fail(res, "ENOMEM", "out of memory");
    s->fd = -1;
    s->timeout = opts->timeout;
    s->max_conns = opts->max_connections;
    s->retry.fire = server_pause_end;
    if (buckets_grow(s) != CM_OK) {
        cm_fail(res, "ENOMEM", "out of memory");
        goto fail;
    }
    /* RFC 8737 §3: TLS 1.2 or later; ALPN and SNI decide everything */
    if (!(s->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) ||
        !(s->ctx = SSL_CTX_new(TLS_server_method())) ||
        SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_num_tickets(s->ctx, 0) != 1) {
        cm_fail_ssl(res, "crypto", "tls-alpn-01: setting up TLS failed");
        goto fail;
    }
    SSL_CTX_set_options(s->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(s->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_client_hello_cb(s->ctx, require_alpn, s);
    SSL_CTX_set_alpn_select_cb(s->ctx, alpn_select, s);
    SSL_CTX_set_cert_cb(s->ctx, pick_cert, s);
    if (cm_listen_tcp(opts->listen, &s->fd, port, res) != CM_OK) goto fail;
    if (!(s->w = cm_loop_watch_add(loop, s->fd, EPOLLIN, server_io, s, res))) goto fail;
    s->id = cm_loop_new_id(loop);
    if (cm_loop_id_put(loop, s->id, CM_ID_TLS_SERVER, s, res) != CM_OK) goto fail;
    s->next = st->list;
    if (st->list) st->list->prev = s;
    st->list = s;
    st->count++;
    *id = s->id;
    return CM_OK;
fail:
    server_free(loop, s, 0);
    ERR_clear_error();
    return CM_ERR;
}

int cm_tlsalpn_close(struct cm_loop *loop, uint64_t id)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_TLS_SERVER);
    if (!s) return 0;
    server_free(loop, s, 1);
    return 1;
}

int cm_tlsalpn_stats(struct cm_loop *loop, uint64_t id, struct cm_tlsalpn_stats *out,
                     struct cm_result *res)
{
    struct server *s = cm_loop_id_get(loop, id, CM_ID_TLS_SERVER);
    if (!s) return cm_fail(res, "ENOENT", "no tls-alpn-01 server %llu", (unsigned long long)id);
    *out = s->stats;
    return CM_OK;
}

void cm_tlsalpn_reset(struct cm_loop *loop)
{
    struct cm_tlsalpn_state *st = state(loop);
    if (!st) return;
    while (st->list) server_free(loop, st->list, 1);
}

void cm_tlsalpn_destroy(struct cm_loop *loop)
{
    struct cm_tlsalpn_state *st = state(loop);
    if (!st) return;
    cm_tlsalpn_reset(loop);
    free(st);
    *cm_loop_tlsalpn_slot(loop) = NULL;
}
