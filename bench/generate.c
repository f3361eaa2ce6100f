/* generate.c - the benchmark tree generator (generate.h), and its Lua
 * binding certmaint.benchgen at the end of the file.
 *
 * Work is split over opts.threads workers that take certificates in chunks
 * from one atomic counter; each worker has its own copy of the intermediate
 * (certificate and key), a keygen context and the extensions every leaf
 * shares, so nothing OpenSSL-side is shared between threads while they run.
 * Whatever depends on the seed (roles, serials, validity offsets) is a pure
 * function of (seed, index), so the tree does not depend on the scheduling.
 */
#include "generate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "fileio.h"
#include "key.h"
#include "localca.h"
#include "renewal.h"

#define DAY 86400LL
#define LIFETIME (90 * DAY)
#define CHUNK 64                     /* certificates a worker takes at a time */
#define OCSP_URL "http://127.0.0.1:4002/ocsp"
#define DEFAULT_ISSUER_KEY "acme-v02.api.letsencrypt.org-directory"
#define PATH_BUF 4096

enum role { ROLE_FRESH = 0, ROLE_DUE = 1, ROLE_EXPIRED = 2 };
#define ROLE_MASK 3
#define STALE_STAPLE 4               /* flag beside the role */

/* Streams of the seeded generator, so roles, serials and offsets differ. */
enum { STREAM_EXPIRED = 1, STREAM_DUE = 2, STREAM_STALE = 3, STREAM_SERIAL = 4, STREAM_OFFSET = 5 };

/* What the option checks say a value must be (the binding uses them too). */
static const char EXPECT_DIR[] = "a non-empty string (a directory)";
static const char EXPECT_N[] = "an integer from 1 to 10000000";
static const char EXPECT_FRACTION[] = "a number between 0 and 1";
static const char EXPECT_SEED[] = "an integer";
static const char EXPECT_CA_KEY_TYPE[] = "\"p256\", \"p384\" or \"rsa2048\"";
static const char EXPECT_ISSUER[] =
    "a storage key as certmagic's KeyBuilder.Safe makes it (lower-case letters, digits, "
    "'_', '@', '.', '-'; not empty, no '..')";
static const char EXPECT_THREADS[] = "an integer from 1 to 64";
static const char EXPECT_BOOL[] = "a boolean";
static const char EXPECT_NOW[] = "an integer (Unix seconds; 0: the clock)";

void cm_bench_gen_opts_init(struct cm_bench_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->due = 0.05;
    o->expired = 0.01;
    o->stale_staples = 0.05;
    o->seed = 1;
    o->issuer_key = DEFAULT_ISSUER_KEY;
    o->ca_key_type = "p256";
    o->threads = 2;
}

/* ---- the seeded generator: splitmix64 ----------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A generator state for (seed, stream, index): one pure function of the three. */
static uint64_t stream_state(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t s = seed ^ (stream * 0xd1b54a32d192ed03ULL);
    s = splitmix64(&s) ^ index;
    (void)splitmix64(&s);
    return s;
}

/* Mark the first `count` certificates of a seeded permutation of 0..n-1 with
 * `flag` (or the role, when flag is a role), skipping those already holding
 * a role when skip_roles is set. */
static void mark_chosen(unsigned char *roles, uint32_t *perm, int64_t n, int64_t count,
                        uint64_t seed, uint64_t stream, unsigned char flag, int skip_roles)
{
    uint64_t st = stream_state(seed, stream, 0);
    int64_t i, taken = 0;
    for (i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64(&st) % (uint64_t)(i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (i = 0; i < n && taken < count; i++) {
        if (skip_roles && (roles[perm[i]] & ROLE_MASK) != ROLE_FRESH) continue;
        roles[perm[i]] |= flag;
        taken++;
    }
}

/* ---- option checks ------------------------------------------------------ */

static int issuer_key_ok(const char *k)
{
    const char *p;
    if (!k || !*k || strstr(k, "..") || strcmp(k, ".") == 0) return 0;
    for (p = k; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '@' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int fraction_ok(double v) { return v >= 0.0 && v <= 1.0; } /* false for NaN */

static int check_opts(const struct cm_bench_gen_opts *o, struct cm_result *res)
{
    if (!o->dir || !*o->dir)
        return cm_fail(res, "invalid", "generate: option 'dir' must be %s", EXPECT_DIR);
    if (o->n < 1 || o->n > CM_BENCH_GEN_MAX_N)
        return cm_fail(res, "invalid", "generate: option 'n' must be %s, got %" PRId64, EXPECT_N,
                       o->n);
    if (!fraction_ok(o->due))
        return cm_fail(res, "invalid", "generate: option 'due' must be %s, got %g",
                       EXPECT_FRACTION, o->due);
    if (!fraction_ok(o->expired))
        return cm_fail(res, "invalid", "generate: option 'expired' must be %s, got %g",
                       EXPECT_FRACTION, o->expired);
    if (!fraction_ok(o->stale_staples))
        return cm_fail(res, "invalid", "generate: option 'stale_staples' must be %s, got %g",
                       EXPECT_FRACTION, o->stale_staples);
    if (o->due + o->expired > 1.0)
        return cm_fail(res, "invalid",
                       "generate: options 'due' and 'expired' together must not exceed 1, "
                       "got %g + %g", o->due, o->expired);
    if (!issuer_key_ok(o->issuer_key))
        return cm_fail(res, "invalid", "generate: option 'issuer_key' must be %s, got \"%s\"",
                       EXPECT_ISSUER, o->issuer_key ? o->issuer_key : "(null)");
    if (!o->ca_key_type || (strcmp(o->ca_key_type, "p256") != 0 && strcmp(o->ca_key_type, "p384") != 0 &&
                            strcmp(o->ca_key_type, "rsa2048") != 0))
        return cm_fail(res, "invalid", "generate: option 'ca_key_type' must be %s, got \"%s\"",
                       EXPECT_CA_KEY_TYPE, o->ca_key_type ? o->ca_key_type : "(null)");
    if (o->threads < 1 || o->threads > CM_BENCH_GEN_MAX_THREADS)
        return cm_fail(res, "invalid", "generate: option 'threads' must be %s, got %d",
                       EXPECT_THREADS, o->threads);
    if (o->now < 0)
        return cm_fail(res, "invalid", "generate: option 'now' must be %s, got %" PRId64,
                       EXPECT_NOW, o->now);
    return CM_OK;
}

/* ---- files -------------------------------------------------------------- */

static int fail_errno(struct cm_result *res, int err, const char *op, const char *path)
{
    char buf[256];
    /* GNU strerror_r (we build with _GNU_SOURCE): thread-safe, returns the text */
    return cm_fail(res, cm_errno_name(err), "generate: %s %s: %s", op, path,
                   strerror_r(err, buf, sizeof buf));
}

/* Write a whole file, 0600, creating or truncating it. */
static int write_file(const char *path, const void *data, size_t len, uint64_t *bytes,
                      struct cm_result *res)
{
    const char *p = data;
    size_t left = len;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return fail_errno(res, errno, "open", path);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            int e = errno;
            if (e == EINTR) continue;
            close(fd);
            return fail_errno(res, e, "write", path);
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd) != 0) return fail_errno(res, errno, "close", path);
    *bytes += len;
    return CM_OK;
}

static int path_join(char *out, const char *what, struct cm_result *res, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* snprintf into a PATH_BUF buffer; "toolong" instead of a cut path. */
static int path_join(char *out, const char *what, struct cm_result *res, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(out, PATH_BUF, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_BUF)
        return cm_fail(res, "toolong", "generate: the path of %s is longer than %d bytes", what,
                       PATH_BUF - 1);
    return CM_OK;
}

/* ---- the CA ------------------------------------------------------------- */

struct ca {
    char *root_key, *root_pem, *inter_key, *inter_pem;
    size_t inter_pem_len;
};

static void ca_free(struct ca *ca)
{
    free(ca->root_key); ca->root_key = NULL;
    free(ca->root_pem); ca->root_pem = NULL;
    free(ca->inter_key); ca->inter_key = NULL;
    free(ca->inter_pem); ca->inter_pem = NULL;
}

/* A root (10 years from a year ago) and an intermediate under it, both of
 * key_type, through the local CA the internal issuer uses. */
static int ca_make(struct ca *ca, const char *key_type, int64_t now, struct cm_result *res)
{
    struct cm_issue_opts io;
    char *serial = NULL;
    int rc = CM_ERR;

    memset(ca, 0, sizeof *ca);
    if (cm_key_generate(key_type, &ca->root_key, res) != CM_OK) goto out;
    if (cm_key_generate(key_type, &ca->inter_key, res) != CM_OK) goto out;
    memset(&io, 0, sizeof io);
    io.cn = "certmaint bench root";
    io.not_before = now - 365 * DAY;
    io.not_after = now + 3650 * DAY;
    io.is_ca = 1;
    io.path_len = 1;
    io.issuer_key = ca->root_key;
    if (cm_cert_issue(&io, &ca->root_pem, &serial, res) != CM_OK) goto out;
    free(serial); serial = NULL;
    io.cn = "certmaint bench intermediate";
    io.subject_key = ca->inter_key;
    io.path_len = 0;
    io.issuer_cert = ca->root_pem;
    if (cm_cert_issue(&io, &ca->inter_pem, &serial, res) != CM_OK) goto out;
    ca->inter_pem_len = strlen(ca->inter_pem);
    rc = CM_OK;
out:
    free(serial);
    if (rc != CM_OK) ca_free(ca);
    return rc;
}

/* ---- the workers -------------------------------------------------------- */

struct shared {
    const struct cm_bench_gen_opts *o;
    int64_t now;
    const unsigned char *roles;       /* by index - 1 */
    const struct ca *ca;
    char certs_dir[PATH_BUF];         /* DIR/certificates/<issuer_key> */
    char ocsp_dir[PATH_BUF];          /* DIR/ocsp */
    atomic_int_fast64_t next;         /* next index to hand out, from 1 */
    atomic_int_fast64_t done;
    atomic_int stop;                  /* set by the first worker that fails */
};

#define SHARED_EXTS 5

struct worker {
    struct shared *sh;
    pthread_t tid;
    int started;
    X509 *icert;
    EVP_PKEY *ikey;
    EVP_PKEY_CTX *keygen;
    X509_EXTENSION *ext[SHARED_EXTS]; /* basicConstraints, keyUsage, EKU, AKI, AIA */
    uint64_t bytes;
    int rc;
    struct cm_result res;
};

static void worker_free(struct worker *w)
{
    int i;
    X509_free(w->icert); w->icert = NULL;
    EVP_PKEY_free(w->ikey); w->ikey = NULL;
    EVP_PKEY_CTX_free(w->keygen); w->keygen = NULL;
    for (i = 0; i < SHARED_EXTS; i++) { X509_EXTENSION_free(w->ext[i]); w->ext[i] = NULL; }
}

static int worker_setup(struct worker *w, struct shared *sh, struct cm_result *res)
{
    static const struct { int nid; const char *value; } exts[SHARED_EXTS] = {
        {NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature"},
        {NID_ext_key_usage, "serverAuth,clientAuth"},
        {NID_authority_key_identifier, "keyid"},
        {NID_info_access, "OCSP;URI:" OCSP_URL},
    };
    BIO *bio = NULL;
    X509V3_CTX ctx;
    int i, rc = CM_ERR;

    memset(w, 0, sizeof *w);
    w->sh = sh;
    bio = BIO_new_mem_buf(sh->ca->inter_pem, (int)sh->ca->inter_pem_len);
    if (!bio || !(w->icert = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        cm_fail_ssl(res, "crypto", "generate: reading back the intermediate");
        goto out;
    }
    if (cm_key_load_private(sh->ca->inter_key, strlen(sh->ca->inter_key), &w->ikey, res) != CM_OK)
        goto out;
    if (!(w->keygen = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ||
        EVP_PKEY_keygen_init(w->keygen) <= 0 ||
        EVP_PKEY_CTX_set_group_name(w->keygen, "P-256") <= 0) {
        cm_fail_ssl(res, "crypto", "generate: P-256 key generation context");
        goto out;
    }
    X509V3_set_ctx(&ctx, w->icert, NULL, NULL, NULL, 0);
    for (i = 0; i < SHARED_EXTS; i++) {
        if (!(w->ext[i] = X509V3_EXT_conf_nid(NULL, &ctx, exts[i].nid, exts[i].value))) {
            cm_fail_ssl(res, "crypto", "generate: extension %s", exts[i].value);
            goto out;
        }
    }
    rc = CM_OK;
out:
    BIO_free(bio);
    if (rc != CM_OK) worker_free(w);
    return rc;
}

/* ---- P-256 keys without OpenSSL's encoders ------------------------------
 * OpenSSL 3's X509_set_pubkey and PEM key writers go through its encoder and
 * decoder machinery (a provider search per call), which cost more than the
 * key generation and both signatures together here.  A P-256 key has one
 * fixed shape, so the DER is written from its raw scalar and point. */

/* The private scalar (32 bytes) and uncompressed public point (65) of key. */
static int raw_p256(EVP_PKEY *key, unsigned char priv[32], unsigned char pub[65])
{
    BIGNUM *d = NULL;
    size_t pub_len = 0;
    int rc = CM_ERR;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 &&
        BN_bn2binpad(d, priv, 32) == 32 &&
        EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub, 65, &pub_len) == 1 &&
        pub_len == 65 && pub[0] == 0x04)
        rc = CM_OK;
    BN_clear_free(d);
    return rc;
}

/* The certificate's SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, the point. */
static int set_p256_pubkey(X509 *x, const unsigned char pub[65])
{
    X509_PUBKEY *spki = X509_get_X509_PUBKEY(x);
    unsigned char *bits = OPENSSL_malloc(65);
    if (!spki || !bits) {
        OPENSSL_free(bits);
        return CM_ERR;
    }
    memcpy(bits, pub, 65);
    /* the OIDs are OpenSSL's static objects; bits is the SPKI's from here on */
    if (X509_PUBKEY_set0_param(spki, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                               OBJ_nid2obj(NID_X9_62_prime256v1), bits, 65) != 1) {
        OPENSSL_free(bits);
        return CM_ERR;
    }
    return CM_OK;
}

/* "EC PRIVATE KEY" PEM (RFC 5915 ECPrivateKey, as certmagic writes an ECDSA
 * key): version 1, the scalar, [0] prime256v1, [1] the public point. */
static int sec1_pem(BIO *out, const unsigned char priv[32], const unsigned char pub[65])
{
    static const unsigned char head[] = {0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20};
    static const unsigned char curve[] = {0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                          0xce, 0x3d, 0x03, 0x01, 0x07, 0xa1, 0x44,
                                          0x03, 0x42, 0x00};
    unsigned char der[sizeof head + 32 + sizeof curve + 65];
    int rc;
    memcpy(der, head, sizeof head);
    memcpy(der + sizeof head, priv, 32);
    memcpy(der + sizeof head + 32, curve, sizeof curve);
    memcpy(der + sizeof head + 32 + sizeof curve, pub, 65);
    rc = PEM_write_bio(out, "EC PRIVATE KEY", "", der, (long)sizeof der) > 0 ? CM_OK : CM_ERR;
    OPENSSL_cleanse(der, sizeof der);
    return rc;
}

/* The contents of a BIO_s_mem as (pointer, length), borrowed from the BIO. */
static int bio_data(BIO *b, const char **p, size_t *len)
{
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    if (n <= 0 || !d) return CM_ERR;
    *p = d;
    *len = (size_t)n;
    return CM_OK;
}

/* One certificate: key, leaf, .crt/.key/.json and the staple. */
static int make_one(struct worker *w, int64_t index, struct cm_result *res)
{
    const struct shared *sh = w->sh;
    unsigned char role = sh->roles[index - 1];
    uint64_t st = stream_state(sh->o->seed, STREAM_SERIAL, (uint64_t)index);
    uint64_t offset_st = stream_state(sh->o->seed, STREAM_OFFSET, (uint64_t)index);
    unsigned char serial[16], priv[32], pub[65];
    char name[64], site[PATH_BUF], path[PATH_BUF], json[512], serial_hex[33];
    const char *crt = NULL, *keytext = NULL;
    size_t crt_len = 0, key_len = 0;
    int64_t not_before, offset;
    int64_t this_update = sh->now - 3600, next_update = sh->now + 7 * DAY;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_EXTENSION *san = NULL;
    BIGNUM *bn = NULL;
    BIO *crt_bio = NULL, *key_bio = NULL;
    OCSP_CERTID *id = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_RESPONSE *resp = NULL;
    ASN1_GENERALIZEDTIME *tu = NULL, *nu = NULL;
    unsigned char *der = NULL;
    int der_len, json_len, i, rc = CM_ERR;

    snprintf(name, sizeof name, "host%" PRId64 ".bench.test", index);
    for (i = 0; i < 16; i += 8) {
        uint64_t r = splitmix64(&st);
        memcpy(serial + i, &r, 8);
    }
    serial[0] = (unsigned char)((serial[0] & 0x3f) | 0x40); /* positive, always 32 hex digits */
    for (i = 0; i < 16; i++) snprintf(serial_hex + 2 * i, 3, "%02x", serial[i]);

    offset = (int64_t)(splitmix64(&offset_st) % (uint64_t)(5 * DAY));
    switch (role & ROLE_MASK) {
    case ROLE_DUE: not_before = sh->now - 70 * DAY - offset; break;     /* 15-20 days left */
    case ROLE_EXPIRED: not_before = sh->now - 100 * DAY - 2 * offset; break; /* over 10 days ago */
    default: not_before = sh->now - 3600 - 2 * offset; break;         /* 1 h to 10 days old */
    }
    if (role & STALE_STAPLE) {
        this_update = sh->now - 8 * DAY;
        next_update = sh->now - DAY;
    }

    if (EVP_PKEY_generate(w->keygen, &key) <= 0) {
        cm_fail_ssl(res, "crypto", "generate: key of %s", name);
        goto out;
    }
    if (!(x = X509_new()) || X509_set_version(x, 2) != 1 ||
        !(bn = BN_bin2bn(serial, sizeof serial, NULL)) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(not_before + LIFETIME)) ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)name, -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(w->icert)) != 1 ||
        raw_p256(key, priv, pub) != CM_OK || set_p256_pubkey(x, pub) != CM_OK) {
        cm_fail_ssl(res, "crypto", "generate: certificate of %s", name);
        goto out;
    }
    for (i = 0; i < SHARED_EXTS; i++) {
        if (X509_add_ext(x, w->ext[i], -1) != 1) {
            cm_fail_ssl(res, "crypto", "generate: extensions of %s", name);
            goto out;
        }
    }
    snprintf(path, sizeof path, "DNS:%s", name);
    if (!(san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, path)) ||
        X509_add_ext(x, san, -1) != 1 || X509_sign(x, w->ikey, EVP_sha256()) <= 0) {
        cm_fail_ssl(res, "crypto", "generate: signing the certificate of %s", name);
        goto out;
    }

    /* the chain as certmagic stores it: leaf, then the intermediate */
    if (!(crt_bio = BIO_new(BIO_s_mem())) || PEM_write_bio_X509(crt_bio, x) != 1 ||
        BIO_write(crt_bio, sh->ca->inter_pem, (int)sh->ca->inter_pem_len) !=
            (int)sh->ca->inter_pem_len ||
        bio_data(crt_bio, &crt, &crt_len) != CM_OK ||
        !(key_bio = BIO_new(BIO_s_mem())) || sec1_pem(key_bio, priv, pub) != CM_OK ||
        bio_data(key_bio, &keytext, &key_len) != CM_OK) {
        cm_fail_ssl(res, "crypto", "generate: PEM of %s", name);
        goto out;
    }

    /* the staple: signed by the issuer itself, responder ID by name, no certs;
     * OpenSSL stamps producedAt with the wall clock, whatever opts.now says */
    if (!(id = OCSP_cert_to_id(EVP_sha1(), x, w->icert)) || !(bs = OCSP_BASICRESP_new()) ||
        !(tu = ASN1_GENERALIZEDTIME_set(NULL, (time_t)this_update)) ||
        !(nu = ASN1_GENERALIZEDTIME_set(NULL, (time_t)next_update)) ||
        !OCSP_basic_add1_status(bs, id, V_OCSP_CERTSTATUS_GOOD, 0, NULL, tu, nu) ||
        OCSP_basic_sign(bs, w->icert, w->ikey, EVP_sha256(), NULL, OCSP_NOCERTS) != 1 ||
        !(resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs)) ||
        (der_len = i2d_OCSP_RESPONSE(resp, &der)) <= 0) {
        cm_fail_ssl(res, "crypto", "generate: OCSP response of %s", name);
        goto out;
    }

    json_len = snprintf(json, sizeof json,
                        "{\n  \"sans\": [\n    \"%s\"\n  ],\n  \"issuer_data\": {\n"
                        "    \"issuer\": \"%s\",\n    \"serial\": \"%s\"\n  }\n}\n",
                        name, sh->o->issuer_key, serial_hex);
    if (json_len < 0 || (size_t)json_len >= sizeof json) {
        cm_fail(res, "toolong", "generate: metadata of %s", name);
        goto out;
    }

    if (path_join(site, "a site", res, "%s/%s", sh->certs_dir, name) != CM_OK) goto out;
    if (mkdir(site, 0700) != 0 && errno != EEXIST) {
        fail_errno(res, errno, "mkdir", site);
        goto out;
    }
    if (path_join(path, "a certificate", res, "%s/%s.crt", site, name) != CM_OK ||
        write_file(path, crt, crt_len, &w->bytes, res) != CM_OK)
        goto out;
    if (path_join(path, "a key", res, "%s/%s.key", site, name) != CM_OK ||
        write_file(path, keytext, key_len, &w->bytes, res) != CM_OK)
        goto out;
    if (path_join(path, "metadata", res, "%s/%s.json", site, name) != CM_OK ||
        write_file(path, json, (size_t)json_len, &w->bytes, res) != CM_OK)
        goto out;
    /* certmagic's staple key: ocsp/<name key>-<fastHash(PEM bundle), %x> (keys.ocsp) */
    if (path_join(path, "a staple", res, "%s/%s-%" PRIx32, sh->ocsp_dir, name,
                  cm_fnv1a32(crt, crt_len)) != CM_OK ||
        write_file(path, der, (size_t)der_len, &w->bytes, res) != CM_OK)
        goto out;
    rc = CM_OK;
out:
    OPENSSL_cleanse(priv, sizeof priv);
    OPENSSL_free(der);
    OCSP_RESPONSE_free(resp);
    ASN1_GENERALIZEDTIME_free(nu);
    ASN1_GENERALIZEDTIME_free(tu);
    OCSP_BASICRESP_free(bs);
    OCSP_CERTID_free(id);
    BIO_free(key_bio);
    BIO_free(crt_bio);
    BN_free(bn);
    X509_EXTENSION_free(san);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    int64_t n = sh->o->n;

    w->rc = CM_OK;
    while (!atomic_load(&sh->stop)) {
        int64_t first = atomic_fetch_add(&sh->next, CHUNK), i;
        if (first > n) break;
        for (i = first; i < first + CHUNK && i <= n; i++) {
            int64_t done;
            if (make_one(w, i, &w->res) != CM_OK) {
                w->rc = CM_ERR;
                atomic_store(&sh->stop, 1);
                return NULL;
            }
            done = atomic_fetch_add(&sh->done, 1) + 1;
            if (sh->o->progress && done * 10 / n != (done - 1) * 10 / n)
                fprintf(stderr, "generate: %" PRId64 "/%" PRId64 " certificates (%" PRId64 "%%)\n",
                        done, n, done * 100 / n);
        }
    }
    return NULL;
}

/* ---- the tree ----------------------------------------------------------- */

static int write_ca(const char *dir, const struct ca *ca, uint64_t *bytes, struct cm_result *res)
{
    char path[PATH_BUF];
    const struct { const char *file; const char *text; } files[] = {
        {"root.pem", ca->root_pem},
        {"root.key", ca->root_key},
        {"intermediate.pem", ca->inter_pem},
        {"intermediate.key", ca->inter_key},
    };
    size_t i;
    if (path_join(path, "bench-ca/", res, "%s/bench-ca", dir) != CM_OK ||
        cm_fileio_mkdir_p(path, 0700, res) != CM_OK)
        return CM_ERR;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (path_join(path, files[i].file, res, "%s/bench-ca/%s", dir, files[i].file) != CM_OK ||
            write_file(path, files[i].text, strlen(files[i].text), bytes, res) != CM_OK)
            return CM_ERR;
    }
    return CM_OK;
}

static int64_t count_of(double fraction, int64_t n)
{
    return (int64_t)llround(fraction * (double)n);
}

int cm_bench_generate(const struct cm_bench_gen_opts *o, struct cm_bench_gen_summary *out,
                      struct cm_result *res)
{
    struct shared sh;
    struct ca ca;
    struct worker *workers = NULL;
    unsigned char *roles = NULL;
    uint32_t *perm = NULL;
    char path[PATH_BUF];
    struct stat stbuf;
    int64_t n_expired, n_due, n_stale;
    uint64_t bytes = 0;
    double t0 = cm_clock_monotonic();
    int i, rc = CM_ERR;

    memset(&ca, 0, sizeof ca);
    memset(&sh, 0, sizeof sh);
    if (check_opts(o, res) != CM_OK) return CM_ERR;
    sh.o = o;
    sh.now = o->now ? o->now : (int64_t)cm_clock_now();
    sh.ca = &ca;
    atomic_init(&sh.next, 1);
    atomic_init(&sh.done, 0);
    atomic_init(&sh.stop, 0);

    /* refuse to write over a store: certificates/ must not exist yet */
    if (path_join(path, "certificates/", res, "%s/certificates", o->dir) != CM_OK) goto out;
    if (lstat(path, &stbuf) == 0) {
        cm_fail(res, "exists", "generate: %s already holds certificates/ (generate into a new "
                "directory)", o->dir);
        goto out;
    }
    if (errno != ENOENT) {
        fail_errno(res, errno, "stat", path);
        goto out;
    }
    if (cm_fileio_mkdir_p(o->dir, 0700, res) != CM_OK) goto out;
    if (path_join(sh.certs_dir, "certificates/<issuer_key>", res, "%s/certificates/%s", o->dir,
                  o->issuer_key) != CM_OK ||
        path_join(sh.ocsp_dir, "ocsp/", res, "%s/ocsp", o->dir) != CM_OK ||
        cm_fileio_mkdir_p(sh.certs_dir, 0700, res) != CM_OK ||
        cm_fileio_mkdir_p(sh.ocsp_dir, 0700, res) != CM_OK)
        goto out;

    n_expired = count_of(o->expired, o->n);
    n_due = count_of(o->due, o->n);
    if (n_due > o->n - n_expired) n_due = o->n - n_expired; /* rounding both up */
    n_stale = count_of(o->stale_staples, o->n);
    if (!(roles = calloc((size_t)o->n, 1)) || !(perm = malloc((size_t)o->n * sizeof *perm))) {
        cm_fail(res, "ENOMEM", "generate: role tables for %" PRId64 " certificates", o->n);
        goto out;
    }
    mark_chosen(roles, perm, o->n, n_expired, o->seed, STREAM_EXPIRED, ROLE_EXPIRED, 0);
    mark_chosen(roles, perm, o->n, n_due, o->seed, STREAM_DUE, ROLE_DUE, 1);
    mark_chosen(roles, perm, o->n, n_stale, o->seed, STREAM_STALE, STALE_STAPLE, 0);
    free(perm); perm = NULL;
    sh.roles = roles;

    if (ca_make(&ca, o->ca_key_type, sh.now, res) != CM_OK || write_ca(o->dir, &ca, &bytes, res) != CM_OK)
        goto out;

    if (!(workers = calloc((size_t)o->threads, sizeof *workers))) {
        cm_fail(res, "ENOMEM", "generate: %d workers", o->threads);
        goto out;
    }
    for (i = 0; i < o->threads; i++)
        if (worker_setup(&workers[i], &sh, res) != CM_OK) goto out;
    for (i = 0; i < o->threads; i++) {
        int e = pthread_create(&workers[i].tid, NULL, worker_run, &workers[i]);
        if (e != 0) {
            atomic_store(&sh.stop, 1);
            fail_errno(res, e, "pthread_create", "(a worker)");
            goto out;
        }
        workers[i].started = 1;
    }
    rc = CM_OK;
out:
    if (workers) {
        /* join every started worker before anything they use is freed */
        for (i = 0; i < o->threads; i++) {
            if (!workers[i].started) continue;
            pthread_join(workers[i].tid, NULL);
            bytes += workers[i].bytes;
            if (workers[i].rc != CM_OK && rc == CM_OK) {
                if (res) *res = workers[i].res;
                rc = CM_ERR;
            }
        }
        for (i = 0; i < o->threads; i++) worker_free(&workers[i]);
        free(workers); workers = NULL;
    }
    if (rc == CM_OK && out) {
        out->n = o->n;
        out->due = n_due;
        out->expired = n_expired;
        out->stale_staples = n_stale;
        out->now = sh.now;
        out->bytes = bytes;
        out->seconds = cm_clock_monotonic() - t0;
    }
    free(perm);
    free(roles);
    ca_free(&ca);
    return rc;
}

/* ---- Lua: certmaint.benchgen -------------------------------------------- */

/* benchgen.generate(opts) -> summary | nil, err, code
 *   opts = { dir = string (required), n = integer >= 1 (required), due = 0.05,
 *            expired = 0.01, stale_staples = 0.05, seed = 1,
 *            issuer_key = "acme-v02.api.letsencrypt.org-directory", threads = 2,
 *            progress = false, now = the clock (Unix seconds) }
 *   summary = { n, due, expired, stale_staples (counts), issuer_key, dir,
 *               seconds, bytes, now }
 * An unknown option raises (a caller's typo); a value of the wrong type or
 * out of range returns nil, "generate: option 'x' must be ..., got ...",
 * "invalid"; a dir that holds certificates/ returns "exists". */

static const char *const KNOWN[] = {"dir", "n", "due", "expired", "stale_staples", "seed",
                                    "issuer_key", "ca_key_type", "threads", "progress", "now", NULL};

/* Raise on a key of opts (at index 1) that is not an option; of several,
 * the smallest string is named so that the message is stable. */
static void check_known(lua_State *L)
{
    const char *bad = NULL;
    int non_string = 0, i;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            non_string = 1;
            continue;
        }
        for (i = 0; KNOWN[i]; i++)
            if (strcmp(lua_tostring(L, -1), KNOWN[i]) == 0) break;
        if (!KNOWN[i] && (!bad || strcmp(lua_tostring(L, -1), bad) < 0))
            bad = lua_tostring(L, -1); /* the key stays in the table, so the string lives */
    }
    if (bad)
        luaL_error(L, "generate: unknown option \"%s\" (known: ca_key_type, dir, due, expired, "
                   "issuer_key, n, now, progress, seed, stale_staples, threads)", bad);
    if (non_string)
        luaL_error(L, "generate: options are named (name = value); known: ca_key_type, dir, due, "
                   "expired, issuer_key, n, now, progress, seed, stale_staples, threads");
}

/* Push nil, "generate: option 'key' must be <expect>, got <what the value is>", "invalid". */
static int bad_option(lua_State *L, const char *key, const char *expect)
{
    int t = lua_getfield(L, 1, key);
    const char *got;
    if (t == LUA_TNUMBER) got = luaL_tolstring(L, -1, NULL);
    else if (t == LUA_TNIL) got = "nothing";
    else got = lua_pushfstring(L, "a %s", lua_typename(L, t));
    lua_pushnil(L);
    lua_pushfstring(L, "generate: option '%s' must be %s, got %s", key, expect, got);
    lua_pushliteral(L, "invalid");
    return 3;
}

/* Field key as an integer into *out (untouched when absent); 0 when the
 * value is not an integer (the caller then reports it). */
static int field_integer(lua_State *L, const char *key, int64_t *out)
{
    int ok = 1, isint = 0;
    if (lua_getfield(L, 1, key) != LUA_TNIL) {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (isint && lua_type(L, -1) == LUA_TNUMBER) *out = (int64_t)v;
        else ok = 0;
    }
    lua_pop(L, 1);
    return ok;
}

static int field_number(lua_State *L, const char *key, double *out)
{
    int ok = 1;
    int t = lua_getfield(L, 1, key);
    if (t == LUA_TNUMBER) *out = (double)lua_tonumber(L, -1);
    else if (t != LUA_TNIL) ok = 0;
    lua_pop(L, 1);
    return ok;
}

/* A string field, borrowed from opts (alive while opts is argument 1). */
static int field_string(lua_State *L, const char *key, const char **out)
{
    int ok = 1;
    int t = lua_getfield(L, 1, key);
    if (t == LUA_TSTRING) *out = lua_tostring(L, -1);
    else if (t != LUA_TNIL) ok = 0;
    lua_pop(L, 1);
    return ok;
}

static int l_generate(lua_State *L)
{
    struct cm_bench_gen_opts o;
    struct cm_bench_gen_summary s;
    struct cm_result res;
    int64_t threads = 2, seed = 1;
    int t;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    check_known(L);
    cm_bench_gen_opts_init(&o);
    if (!field_string(L, "dir", &o.dir) || !o.dir || !*o.dir)
        return bad_option(L, "dir", EXPECT_DIR);
    if (!field_integer(L, "n", &o.n) || o.n < 1 || o.n > CM_BENCH_GEN_MAX_N)
        return bad_option(L, "n", EXPECT_N);
    if (!field_number(L, "due", &o.due)) return bad_option(L, "due", EXPECT_FRACTION);
    if (!field_number(L, "expired", &o.expired)) return bad_option(L, "expired", EXPECT_FRACTION);
    if (!field_number(L, "stale_staples", &o.stale_staples))
        return bad_option(L, "stale_staples", EXPECT_FRACTION);
    if (!field_integer(L, "seed", &seed)) return bad_option(L, "seed", EXPECT_SEED);
    o.seed = (uint64_t)seed;
    if (!field_string(L, "issuer_key", &o.issuer_key))
        return bad_option(L, "issuer_key", EXPECT_ISSUER);
    if (!field_string(L, "ca_key_type", &o.ca_key_type))
        return bad_option(L, "ca_key_type", EXPECT_CA_KEY_TYPE);
    if (!field_integer(L, "threads", &threads) || threads < 1 ||
        threads > CM_BENCH_GEN_MAX_THREADS)
        return bad_option(L, "threads", EXPECT_THREADS);
    o.threads = (int)threads;
    t = lua_getfield(L, 1, "progress");
    o.progress = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) return bad_option(L, "progress", EXPECT_BOOL);
    if (!field_integer(L, "now", &o.now) || o.now < 0) return bad_option(L, "now", EXPECT_NOW);

    /* ranges and the rest are checked once, in C, with the same wording */
    if (cm_bench_generate(&o, &s, &res) != CM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, res.message);
        lua_pushstring(L, res.code);
        return 3;
    }
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, (lua_Integer)s.n);
    lua_setfield(L, -2, "n");
    lua_pushinteger(L, (lua_Integer)s.due);
    lua_setfield(L, -2, "due");
    lua_pushinteger(L, (lua_Integer)s.expired);
    lua_setfield(L, -2, "expired");
    lua_pushinteger(L, (lua_Integer)s.stale_staples);
    lua_setfield(L, -2, "stale_staples");
    lua_pushstring(L, o.issuer_key);
    lua_setfield(L, -2, "issuer_key");
    lua_pushstring(L, o.dir);
    lua_setfield(L, -2, "dir");
    lua_pushnumber(L, (lua_Number)s.seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushinteger(L, (lua_Integer)s.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)s.now);
    lua_setfield(L, -2, "now");
    return 1;
}

int luaopen_certmaint_benchgen(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"generate", l_generate},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
