/* test_tlsalpn.c - the in-loop tls-alpn-01 responder against a real OpenSSL
 * client with ALPN (a thread, blocking; the loop runs on the main thread).
 * Only 127.0.0.1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "clock.h"
#include "crypto.h"
#include "loop/loop.h"
#include "loop/tlsalpn.h"

static struct cm_loop *loop;
static uint64_t server;
static int port;

/* One client attempt and what it saw. */
struct attempt {
    const char *sni;        /* NULL: no SNI */
    const char *alpn;       /* wire form, NULL: no ALPN */
    size_t alpn_len;
    int max_version;        /* 0: any */
    atomic_int done;
    int handshake_ok;
    char alpn_selected[32];
    X509 *peer;
};

static int tcp_connect(void)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *client(void *arg)
{
    struct attempt *a = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = tcp_connect();
    if (!ctx || fd < 0) goto out;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the validator checks the extension */
    if (a->max_version) SSL_CTX_set_max_proto_version(ctx, a->max_version);
    if (a->max_version && a->max_version < TLS1_2_VERSION)
        SSL_CTX_set_security_level(ctx, 0);
    if (a->alpn && SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)a->alpn,
                                           (unsigned)a->alpn_len) != 0)
        goto out;
    if (!(ssl = SSL_new(ctx)) || SSL_set_fd(ssl, fd) != 1) goto out;
    if (a->sni) SSL_set_tlsext_host_name(ssl, a->sni);
    if (SSL_connect(ssl) == 1) {
        const unsigned char *sel = NULL;
        unsigned sel_len = 0;
        a->handshake_ok = 1;
        SSL_get0_alpn_selected(ssl, &sel, &sel_len);
        if (sel_len < sizeof a->alpn_selected) {
            memcpy(a->alpn_selected, sel, sel_len);
            a->alpn_selected[sel_len] = '\0';
        }
        a->peer = SSL_get1_peer_certificate(ssl);
    }
out:
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) close(fd);
    atomic_store(&a->done, 1);
    return NULL;
}

/* Run one attempt while the loop serves it. */
static void run(struct attempt *a)
{
    pthread_t t;
    struct cm_result res;
    double end = cm_clock_monotonic() + 10;
    atomic_init(&a->done, 0);
    CHECK(pthread_create(&t, NULL, client, a) == 0);
    while (!atomic_load(&a->done) && cm_clock_monotonic() < end)
        CHECK(cm_loop_step(loop, 0.01, &res) == CM_OK);
    CHECK(atomic_load(&a->done));
    pthread_join(t, NULL);
    /* let the server notice the close */
    for (int i = 0; i < 5; i++) (void)cm_loop_step(loop, 0.005, &res);
}

static const char ALPN_ACME[] = "\x0a" "acme-tls/1";

static struct attempt acme(const char *sni)
{
    struct attempt a;
    memset(&a, 0, sizeof a);
    a.sni = sni;
    a.alpn = ALPN_ACME;
    a.alpn_len = sizeof ALPN_ACME - 1;
    return a;
}

/* The peer certificate is a challenge certificate for exactly one SAN
 * (DNS name `dns` or IP address `ip`), with the critical acmeIdentifier
 * holding SHA-256(key_auth). */
static void check_challenge_cert(X509 *x, const char *dns, const char *ip, const char *key_auth)
{
    GENERAL_NAMES *gens;
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int idx, crit = -1;
    unsigned char want[2 + CM_SHA256_LEN];
    X509_EXTENSION *ext;
    const ASN1_OCTET_STRING *data;
    struct cm_result res;

    CHECK(x != NULL);
    if (!x) {
        ASN1_OBJECT_free(oid);
        return;
    }
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    CHECK(gens && sk_GENERAL_NAME_num(gens) == 1);
    if (gens && sk_GENERAL_NAME_num(gens) == 1) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);
        if (dns) {
            CHECK(gn->type == GEN_DNS);
            if (gn->type == GEN_DNS)
                CHECK_STR((const char *)ASN1_STRING_get0_data(gn->d.dNSName), dns);
        } else {
            unsigned char addr[16];
            int fam = strchr(ip, ':') ? AF_INET6 : AF_INET, n = fam == AF_INET ? 4 : 16;
            CHECK(inet_pton(fam, ip, addr) == 1);
            CHECK(gn->type == GEN_IPADD);
            if (gn->type == GEN_IPADD)
                CHECK(ASN1_STRING_length(gn->d.iPAddress) == n &&
                      memcmp(ASN1_STRING_get0_data(gn->d.iPAddress), addr, (size_t)n) == 0);
        }
    }
    GENERAL_NAMES_free(gens);
    idx = X509_get_ext_by_OBJ(x, oid, -1);
    CHECK(idx >= 0);
    CHECK(X509_get_ext_by_OBJ(x, oid, idx) < 0); /* exactly one */
    ext = idx >= 0 ? X509_get_ext(x, idx) : NULL;
    if (ext) {
        CHECK(X509_EXTENSION_get_critical(ext) == 1);
        data = X509_EXTENSION_get_data(ext);
        want[0] = 0x04;
        want[1] = CM_SHA256_LEN;
        CHECK(cm_crypto_sha256(key_auth, strlen(key_auth), want + 2, &res) == CM_OK);
        CHECK(ASN1_STRING_length(data) == (int)sizeof want &&
              memcmp(ASN1_STRING_get0_data(data), want, sizeof want) == 0);
    }
    ASN1_OBJECT_free(oid);
}

static void test_serve(void)
{
    struct cm_tlsalpn_opts o;
    struct cm_result res;
    struct cm_loop_counts c;
    cm_tlsalpn_opts_init(&o);
    o.listen = "127.0.0.1:0";
    o.timeout = 0.5;
    CHECK(cm_tlsalpn_serve(loop, &o, &server, &port, &res) == CM_OK);
    CHECK(port > 0);
    cm_loop_pending(loop, &c);
    CHECK(c.servers == 1);
    /* bad options */
    {
        uint64_t id2;
        int p2;
        struct cm_tlsalpn_opts bad = o;
        bad.listen = "nonsense";
        CHECK(cm_tlsalpn_serve(loop, &bad, &id2, &p2, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
        bad.listen = "127.0.0.1:0";
        bad.timeout = 0;
        CHECK(cm_tlsalpn_serve(loop, &bad, &id2, &p2, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
        cm_loop_pending(loop, &c);
        CHECK(c.servers == 1);
    }
}

static void test_handshakes(void)
{
    static const char ka1[] = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.thumb1";
    static const char ka2[] = "other-token.thumb2";
    struct cm_tlsalpn_stats st;
    struct cm_result res;
    struct attempt a;

    CHECK(cm_tlsalpn_set(loop, server, "a.example", ka1, strlen(ka1), &res) == CM_OK);
    CHECK(cm_tlsalpn_set(loop, server, "127.0.0.1", ka2, strlen(ka2), &res) == CM_OK);
    CHECK(cm_tlsalpn_set(loop, server, "2001:db8::1", ka2, strlen(ka2), &res) == CM_OK);

    a = acme("a.example");
    run(&a);
    CHECK(a.handshake_ok);
    CHECK_STR(a.alpn_selected, "acme-tls/1");
    check_challenge_cert(a.peer, "a.example", NULL, ka1);
    X509_free(a.peer);

    /* SNI is case-insensitive */
    a = acme("A.Example");
    run(&a);
    CHECK(a.handshake_ok);
    X509_free(a.peer);

    /* TLS 1.2 works too (RFC 8737: 1.2 or later) */
    a = acme("a.example");
    a.max_version = TLS1_2_VERSION;
    run(&a);
    CHECK(a.handshake_ok);
    check_challenge_cert(a.peer, "a.example", NULL, ka1);
    X509_free(a.peer);

    /* RFC 8738 section 6: an IP identifier's SNI is its reverse-DNS name */
    a = acme("1.0.0.127.in-addr.arpa");
    run(&a);
    CHECK(a.handshake_ok);
    check_challenge_cert(a.peer, NULL, "127.0.0.1", ka2);
    X509_free(a.peer);
    a = acme("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    run(&a);
    CHECK(a.handshake_ok);
    check_challenge_cert(a.peer, NULL, "2001:db8::1", ka2);
    X509_free(a.peer);

    /* replacing the key authorization changes the extension */
    CHECK(cm_tlsalpn_set(loop, server, "a.example", ka2, strlen(ka2), &res) == CM_OK);
    a = acme("a.example");
    run(&a);
    CHECK(a.handshake_ok);
    check_challenge_cert(a.peer, "a.example", NULL, ka2);
    X509_free(a.peer);

    CHECK(cm_tlsalpn_stats(loop, server, &st, &res) == CM_OK);
    CHECK(st.handshakes == 6);
    CHECK(st.refused == 0);
    CHECK(st.names == 3);
}

static void test_refusals(void)
{
    static const char http11[] = "\x08" "http/1.1";
    struct cm_tlsalpn_stats before, after;
    struct cm_result res;
    struct attempt a;

    CHECK(cm_tlsalpn_stats(loop, server, &before, &res) == CM_OK);
    /* no ALPN, another protocol, unknown SNI, no SNI, TLS 1.1 */
    a = acme("a.example");
    a.alpn = NULL;
    run(&a);
    CHECK(!a.handshake_ok && a.peer == NULL);
    a = acme("a.example");
    a.alpn = http11;
    a.alpn_len = sizeof http11 - 1;
    run(&a);
    CHECK(!a.handshake_ok);
    a = acme("b.example");
    run(&a);
    CHECK(!a.handshake_ok);
    a = acme(NULL);
    run(&a);
    CHECK(!a.handshake_ok);
    a = acme("a.example");
    a.max_version = TLS1_1_VERSION;
    run(&a);
    CHECK(!a.handshake_ok);
    /* a name no longer held */
    CHECK(cm_tlsalpn_unset(loop, server, "A.EXAMPLE") == 1);
    CHECK(cm_tlsalpn_unset(loop, server, "a.example") == 0);
    a = acme("a.example");
    run(&a);
    CHECK(!a.handshake_ok);
    CHECK(cm_tlsalpn_stats(loop, server, &after, &res) == CM_OK);
    CHECK(after.refused == before.refused + 6);
    CHECK(after.handshakes == before.handshakes);
    CHECK(after.names == before.names - 1);
    CHECK(after.connections == 0);

    /* what set refuses */
    CHECK(cm_tlsalpn_set(loop, server, "*.example", "k.t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(strstr(res.message, "wildcards need dns-01") != NULL);
    CHECK(cm_tlsalpn_set(loop, server, "", "k.t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_tlsalpn_set(loop, server, "a..example", "k.t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_tlsalpn_set(loop, server, "a.example", "", 0, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_tlsalpn_set(loop, server, "a.example", "k t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(strstr(res.message, "offset 1") != NULL);
    CHECK(cm_tlsalpn_set(loop, server + 1000, "a.example", "k.t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
}

/* A client that connects and says nothing loses its connection at the
 * deadline; a client that sends garbage is refused at once. */
static void test_slow_and_garbage(void)
{
    struct cm_tlsalpn_stats st;
    struct cm_result res;
    double end;
    int fd = tcp_connect(), junk = tcp_connect();
    char buf[16];
    CHECK(fd >= 0 && junk >= 0);
    CHECK(write(junk, "GET / HTTP/1.1\r\n\r\n", 18) == 18);
    end = cm_clock_monotonic() + 3;
    do {
        CHECK(cm_loop_step(loop, 0.05, &res) == CM_OK);
        CHECK(cm_tlsalpn_stats(loop, server, &st, &res) == CM_OK);
    } while (st.timeouts == 0 && cm_clock_monotonic() < end);
    CHECK(st.timeouts == 1);
    CHECK(st.connections == 0);
    {
        struct timeval tv = {2, 0}; /* never hang the test on a bug */
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    CHECK(read(fd, buf, sizeof buf) == 0); /* closed by the server */
    close(fd);
    close(junk);
}

/* Past max_connections a new connection is closed at once, and counted. */
static void test_connection_cap(void)
{
    struct cm_tlsalpn_opts o;
    struct cm_tlsalpn_stats st;
    struct cm_result res;
    uint64_t id2;
    int p2, saved = port, a, b;
    char buf[8];
    cm_tlsalpn_opts_init(&o);
    o.listen = "127.0.0.1:0";
    o.max_connections = 1;
    CHECK(cm_tlsalpn_serve(loop, &o, &id2, &p2, &res) == CM_OK);
    port = p2;
    a = tcp_connect();
    for (int i = 0; i < 5; i++) (void)cm_loop_step(loop, 0.01, &res);
    b = tcp_connect();
    for (int i = 0; i < 5; i++) (void)cm_loop_step(loop, 0.01, &res);
    CHECK(a >= 0 && b >= 0);
    {
        struct timeval tv = {2, 0}; /* never hang the test on a bug */
        (void)setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    CHECK(read(b, buf, sizeof buf) == 0); /* closed without a byte */
    CHECK(cm_tlsalpn_stats(loop, id2, &st, &res) == CM_OK);
    CHECK(st.accepted == 1 && st.rejected == 1 && st.connections == 1);
    close(a);
    close(b);
    CHECK(cm_tlsalpn_close(loop, id2) == 1);
    port = saved;
    /* max_connections 0 or over 65536 is refused */
    o.max_connections = 0;
    CHECK(cm_tlsalpn_serve(loop, &o, &id2, &p2, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
}

static void test_close_and_reset(void)
{
    struct cm_tlsalpn_opts o;
    struct cm_loop_counts c;
    struct cm_result res;
    uint64_t id2;
    int p2;
    CHECK(cm_tlsalpn_close(loop, server) == 1);
    CHECK(cm_tlsalpn_close(loop, server) == 0);
    cm_loop_pending(loop, &c);
    CHECK(c.servers == 0);
    CHECK(tcp_connect() < 0); /* the port is closed */
    cm_tlsalpn_opts_init(&o);
    o.listen = "127.0.0.1:0";
    CHECK(cm_tlsalpn_serve(loop, &o, &id2, &p2, &res) == CM_OK);
    CHECK(cm_tlsalpn_set(loop, id2, "c.example", "k.t", 3, &res) == CM_OK);
    cm_loop_reset(loop);
    cm_loop_pending(loop, &c);
    CHECK(c.servers == 0);
    CHECK(cm_tlsalpn_set(loop, id2, "c.example", "k.t", 3, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
}

int main(void)
{
    struct cm_result res;
    loop = cm_loop_get(&res);
    CHECK(loop != NULL);
    if (!loop) return CHECK_DONE();
    test_serve();
    test_handshakes();
    test_refusals();
    test_slow_and_garbage();
    test_connection_cap();
    test_close_and_reset();
    cm_loop_shutdown();
    return CHECK_DONE();
}
