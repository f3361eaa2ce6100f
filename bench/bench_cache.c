/* bench_cache.c - how fast and how small the certificate cache is at scale.
 *
 *   bench_cache [N]      (N certificates, default 100000)
 *
 * Generates N distinct small EC certificates in memory (one leaf key, distinct
 * names and serials, signed by a throwaway CA, each PEM chain = leaf + CA;
 * generation is not timed), then prints one `figure=value unit` line each:
 *
 *   load_us_per_cert      cm_x509_parse_chain from PEM + cm_cache_add   (target <= 30)
 *   parse_us_per_cert     cm_x509_parse_chain alone (a parse-only pass)
 *   add_us_per_cert       cm_cache_add alone, into a fresh cache (chains parsed
 *                         beforehand, a batch at a time, outside the timing)
 *   bytes_per_cert_malloc heap growth (mallinfo2) over the load, minus DER, per cert (<= 2048)
 *   bytes_per_cert_cache  the cache's own accounting, minus DER, per cert
 *   der_bytes_per_cert    leaf + chain DER per cert
 *   renew_scan_ns_per_cert  cm_cache_scan_due with nothing due    (target <= 50)
 *   staple_scan_ns_per_cert cm_cache_scan_staples with nothing due
 *   expired_scan_ns_per_cert cm_cache_scan_expired with nothing expired
 *   lookup_exact_ns / lookup_wildcard_ns / lookup_miss_ns   cm_cache_lookup
 *   get_ns                cm_cache_get + cm_cache_cert_free (copy-out)
 *   remove_ns             cm_cache_remove, every certificate in turn
 *   reload_add_us_per_cert  cm_cache_add alone again, into the emptied cache, on
 *                         a heap whose pages are already mapped (a daemon that has
 *                         run a while): the cache's own work without page faults
 *   many_wall_us_per_cert_threads0/2  cm_cache_add_many, wall clock, 0 or 2 parse threads
 *   page_fault_ns         what first-touching one fresh 4 KiB page costs here:
 *                         the cold load maps ~0.3 pages a certificate
 *
 * Build it in a Release build for meaningful figures.  It is not a test.
 */
#include <malloc.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cache.h"
#include "x509.h"

#define T0 1767225600 /* 2026-01-01T00:00:00Z: certificates are valid from here */
#define DAY 86400

/* Figures are in this thread's CPU time (kernel time on its behalf, such as
 * page faults, included), so other work on a shared machine does not inflate
 * them; it can still slow us through shared caches. */
static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_cache: %s failed\n", what);
    exit(1);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return 0;
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static X509 *make_cert(EVP_PKEY *pub, EVP_PKEY *signer, X509 *issuer, const char *cn,
                       uint64_t serial, int64_t not_after, const char *san, int ca)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    if (!x || !name || !sn) die("X509_new");
    if (!X509_set_version(x, 2) || !ASN1_INTEGER_set_uint64(sn, serial) ||
        !X509_set_serialNumber(x, sn))
        die("serial");
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) ||
        !X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name))
        die("names");
    if (!ASN1_TIME_set(X509_getm_notBefore(x), T0) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after))
        die("validity");
    if (!X509_set_pubkey(x, pub)) die("pubkey");
    if (ca) {
        if (!add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE")) die("bc");
    } else {
        if (!add_ext(x, issuer, NID_subject_alt_name, san)) die("san");
        if (!add_ext(x, issuer, NID_info_access, "OCSP;URI:http://ocsp.bench.test"))
            die("aia");
    }
    if (!X509_sign(x, signer, EVP_sha256())) die("X509_sign");
    X509_NAME_free(name);
    ASN1_INTEGER_free(sn);
    return x;
}

/* Cost of first-touching a fresh anonymous page (the kernel's zero-fill). */
static double page_fault_ns(void)
{
    size_t len = 64u << 20, i;
    double t;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    t = mono();
    for (i = 0; i < len; i += 4096) p[i] = 1;
    t = mono() - t;
    munmap(p, len);
    return t * 1e9 / (double)(len / 4096);
}

/* Seconds to parse (and free) every chain, without adding. */
static double parse_all(char **pem_at, const size_t *pem_len, size_t n)
{
    struct cm_result res;
    size_t i;
    double t = mono();
    for (i = 0; i < n; i++) {
        struct cm_cert_facts f;
        if (cm_x509_parse_chain(pem_at[i], pem_len[i], &f, &res) != CM_OK) die("parse");
        cm_cert_facts_free(&f);
    }
    return mono() - t;
}

/* Seconds spent in cm_cache_add alone: chains are parsed a batch at a time
 * outside the timed part, then the batch is added. */
static double add_batches(struct cm_cache *c, char **pem_at, const size_t *pem_len, size_t n,
                          struct cm_cache_id *ids)
{
    enum { BATCH = 1000 };
    static struct cm_cert_facts f[BATCH];
    struct cm_cache_add_opts o;
    struct cm_result res;
    size_t i, j, m;
    double t = 0, t0;
    cm_cache_add_opts_init(&o);
    o.managed = 1;
    o.next_attempt = 0;
    for (i = 0; i < n; i += m) {
        m = n - i < BATCH ? n - i : BATCH;
        for (j = 0; j < m; j++)
            if (cm_x509_parse_chain(pem_at[i + j], pem_len[i + j], &f[j], &res) != CM_OK)
                die("parse");
        t0 = mono();
        for (j = 0; j < m; j++) {
            int existed = 0;
            o.renew_at = (double)f[j].not_after - 30.0 * DAY;
            if (cm_cache_add(c, &f[j], &o, &ids[i + j], &existed, &res) != CM_OK || existed)
                die("cm_cache_add");
        }
        t += mono() - t0;
        for (j = 0; j < m; j++) cm_cert_facts_free(&f[j]);
    }
    return t;
}

/* Parse and add every chain: the load as a daemon does it.  Returns seconds;
 * *der_total receives the DER bytes added. */
static double load_all(struct cm_cache *c, char **pem_at, const size_t *pem_len, size_t n,
                       struct cm_cache_id *ids, size_t *der_total)
{
    struct cm_result res;
    size_t i;
    double t = mono();
    *der_total = 0;
    for (i = 0; i < n; i++) {
        struct cm_cert_facts f;
        struct cm_cache_add_opts o;
        int existed = 0;
        if (cm_x509_parse_chain(pem_at[i], pem_len[i], &f, &res) != CM_OK) {
            fprintf(stderr, "parse: %s\n", res.message);
            die("cm_x509_parse_chain");
        }
        cm_cache_add_opts_init(&o);
        o.managed = 1;
        o.renew_at = (double)f.not_after - 30.0 * DAY;
        o.next_attempt = 0;
        *der_total += f.der_len + f.chain_der_len;
        if (cm_cache_add(c, &f, &o, &ids[i], &existed, &res) != CM_OK || existed)
            die("cm_cache_add");
        cm_cert_facts_free(&f);
    }
    return mono() - t;
}

/* cm_cache_add_many over all n PEMs into a fresh cache, in batches of 2048
 * as the Lua binding hands them over, with `threads` parse threads; wall
 * seconds (CLOCK_MONOTONIC: the parse threads' time is what is saved). */
static double many_wall(char **pem_at, const size_t *pem_len, size_t n, unsigned threads)
{
    enum { BATCH = 2048 };
    struct cm_cache_item *items = malloc(BATCH * sizeof *items);
    struct cm_cache_many_opts mo;
    struct cm_renewal_opts ro;
    struct cm_result res;
    struct cm_cache *c = cm_cache_new(&res);
    struct timespec a, b;
    size_t i, j;
    if (!items || !c) die("many_wall");
    cm_cache_many_opts_init(&mo);
    cm_renewal_opts_init(&ro);
    mo.renew = &ro;
    mo.threads = threads;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < n; i += BATCH) {
        size_t cnt = n - i < BATCH ? n - i : BATCH;
        for (j = 0; j < cnt; j++) {
            memset(&items[j], 0, sizeof items[j]);
            items[j].pem = pem_at[i + j];
            items[j].pem_len = pem_len[i + j];
        }
        if (cm_cache_add_many(c, items, cnt, &mo, &res) != CM_OK) die("cm_cache_add_many");
        for (j = 0; j < cnt; j++)
            if (items[j].state != CM_CACHE_ITEM_OK) die("add_many item");
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (cm_cache_count(c) != n) die("add_many count");
    cm_cache_free(c);
    free(items);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* ns per element of a scan, repeated until it has run long enough. */
static double time_scan(struct cm_cache *c, int kind, size_t n)
{
    struct cm_cache_id *ids = NULL;
    struct cm_result res;
    size_t count = 0, reps = 0, r, batch = 200000000 / (n ? n : 1) + 1;
    double t0 = mono(), t;
    do {
        for (r = 0; r < batch; r++) {
            int rc;
            if (kind == 0) rc = cm_cache_scan_due(c, T0 + 1, 0, &ids, &count, &res);
            else if (kind == 1) rc = cm_cache_scan_staples(c, T0 + 1, 0, &ids, &count, &res);
            else rc = cm_cache_scan_expired(c, T0 + 1, 0, 0, &ids, &count, &res);
            if (rc != CM_OK || count != 0) die("scan (something was due)");
        }
        reps += batch;
        t = mono() - t0;
    } while (t < 0.5);
    return t * 1e9 / ((double)reps * (double)n);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000, i, lookups;
    EVP_PKEY *ca_key = NULL, *leaf_key = NULL;
    X509 *ca = NULL;
    char *ca_pem = NULL, *pems = NULL, **pem_at = NULL;
    size_t *pem_len = NULL, ca_len, total_pem = 0, cap_pem;
    struct cm_cache *c = NULL;
    struct cm_cache_id *ids = NULL;
    struct cm_result res;
    double t, t_parse = 0, t_add = 0;
    size_t der_again = 0;
    size_t heap0, heap1, der_total = 0, der_cache = 0, mem_cache;
    char name[96];
    uint64_t rng = 88172645463325252ULL;

    if (n == 0) die("N must be positive");
    /* keep freed heap pages mapped, so the reload below measures the cache,
     * not the kernel (does not change the cold figures) */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    /* ---- generation (not timed) ---- */
    ca_key = EVP_EC_gen("P-256");
    leaf_key = EVP_EC_gen("P-256");
    if (!ca_key || !leaf_key) die("EVP_EC_gen");
    ca = make_cert(ca_key, ca_key, NULL, "Bench CA", 1, T0 + 3650LL * DAY, NULL, 1);
    {
        BIO *b = BIO_new(BIO_s_mem());
        char *p;
        if (!b || !PEM_write_bio_X509(b, ca)) die("CA PEM");
        ca_len = (size_t)BIO_get_mem_data(b, &p);
        ca_pem = malloc(ca_len);
        if (!ca_pem) die("malloc");
        memcpy(ca_pem, p, ca_len);
        BIO_free(b);
    }
    cap_pem = n * (1200 + ca_len);
    pems = malloc(cap_pem);
    pem_at = malloc(n * sizeof *pem_at);
    pem_len = malloc(n * sizeof *pem_len);
    ids = malloc(n * sizeof *ids);
    if (!pems || !pem_at || !pem_len || !ids) die("malloc");
    fprintf(stderr, "bench_cache: generating %zu certificates...\n", n);
    for (i = 0; i < n; i++) {
        char cn[64], san[160], *p;
        BIO *b = BIO_new(BIO_s_mem());
        X509 *x;
        size_t l;
        snprintf(cn, sizeof cn, "host%zu.bench.test", i);
        snprintf(san, sizeof san, "DNS:host%zu.bench.test,DNS:*.w%zu.bench.test", i, i);
        /* 90-day certificates whose renewal is far off at T0 + 1 */
        x = make_cert(leaf_key, ca_key, ca, cn, 1000 + i, T0 + 90LL * DAY + (int64_t)(i % 3600),
                      san, 0);
        if (!b || !PEM_write_bio_X509(b, x)) die("leaf PEM");
        l = (size_t)BIO_get_mem_data(b, &p);
        if (total_pem + l + ca_len > cap_pem) die("PEM buffer too small");
        pem_at[i] = pems + total_pem;
        memcpy(pems + total_pem, p, l);
        memcpy(pems + total_pem + l, ca_pem, ca_len);
        pem_len[i] = l + ca_len;
        total_pem += l + ca_len;
        BIO_free(b);
        X509_free(x);
    }
    printf("certs=%zu count\n", n);
    printf("pem_bytes_per_cert=%.0f bytes\n", (double)total_pem / (double)n);

    /* ---- load ---- */
    c = cm_cache_new(&res);
    if (!c) die("cm_cache_new");
    malloc_trim(0);
    t_parse = parse_all(pem_at, pem_len, n);
    heap0 = heap_in_use();
    t = load_all(c, pem_at, pem_len, n, ids, &der_total);
    heap1 = heap_in_use();
    {
        /* the add alone, into a second cold cache (the first keeps its pages) */
        struct cm_cache *c2 = cm_cache_new(&res);
        struct cm_cache_id *ids2 = malloc(n * sizeof *ids2);
        if (!c2 || !ids2) die("second cache");
        t_add = add_batches(c2, pem_at, pem_len, n, ids2);
        cm_cache_free(c2);
        free(ids2);
    }
    mem_cache = cm_cache_memory(c, &der_cache);
    if (der_cache != der_total || cm_cache_count(c) != n) die("accounting");
    printf("load_us_per_cert=%.2f us\n", t * 1e6 / (double)n);
    printf("parse_us_per_cert=%.2f us\n", t_parse * 1e6 / (double)n);
    printf("add_us_per_cert=%.3f us\n", t_add * 1e6 / (double)n);
    printf("der_bytes_per_cert=%.0f bytes\n", (double)der_total / (double)n);
    printf("bytes_per_cert_malloc=%.0f bytes\n",
           ((double)heap1 - (double)heap0 - (double)der_total) / (double)n);
    printf("bytes_per_cert_cache=%.0f bytes\n",
           ((double)mem_cache - (double)der_cache) / (double)n);

    /* ---- scans with nothing to do ---- */
    printf("renew_scan_ns_per_cert=%.3f ns\n", time_scan(c, 0, n));
    /* give every certificate a fresh staple so the staple scan finds nothing */
    for (i = 0; i < n; i++) {
        static const unsigned char der[] = {0x30, 0x03, 0x0a, 0x01, 0x00};
        struct cm_cache_staple st = {CM_OCSP_GOOD, T0, T0 + 7.0 * DAY, T0 + 3.5 * DAY,
                                     der, sizeof der};
        struct cm_cache_update u;
        memset(&u, 0, sizeof u);
        u.fields = CM_CACHE_SET_OCSP;
        u.ocsp = &st;
        if (cm_cache_set(c, &ids[i], &u, &res) != CM_OK) die("cm_cache_set");
    }
    printf("staple_scan_ns_per_cert=%.3f ns\n", time_scan(c, 1, n));
    printf("expired_scan_ns_per_cert=%.3f ns\n", time_scan(c, 2, n));

    /* ---- lookups, in random order ---- */
    lookups = n < 1000000 ? 1000000 : n;
    {
        size_t *order = malloc(lookups * sizeof *order), hit = 0;
        size_t *lens = malloc(lookups * sizeof *lens);
        char *names = malloc(lookups * 40);
        struct cm_cache_id id;
        int kind;
        static const char *const label[] = {"lookup_exact_ns", "lookup_wildcard_ns",
                                            "lookup_miss_ns"};
        if (!order || !lens || !names) die("malloc");
        for (kind = 0; kind < 3; kind++) {
            for (i = 0; i < lookups; i++) {
                size_t k;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                k = (size_t)(rng % n);
                if (kind == 0) snprintf(name, sizeof name, "host%zu.bench.test", k);
                else if (kind == 1) snprintf(name, sizeof name, "x.w%zu.bench.test", k);
                else snprintf(name, sizeof name, "nope%zu.bench.test", k);
                lens[i] = strlen(name);
                memcpy(names + i * 40, name, lens[i] + 1);
            }
            hit = 0;
            t = mono();
            for (i = 0; i < lookups; i++) hit += (size_t)cm_cache_lookup(c, names + i * 40, lens[i], &id);
            t = mono() - t;
            if (hit != (kind == 2 ? 0 : lookups)) die("lookup results");
            printf("%s=%.1f ns\n", label[kind], t * 1e9 / (double)lookups);
        }
        free(order);
        free(lens);
        free(names);
    }

    /* ---- copy-out ---- */
    {
        size_t reps = n < 200000 ? n : 200000;
        t = mono();
        for (i = 0; i < reps; i++) {
            struct cm_cache_cert cert;
            if (cm_cache_get(c, &ids[(i * 7919) % n], &cert, &res) != CM_OK) die("cm_cache_get");
            cm_cache_cert_free(&cert);
        }
        t = mono() - t;
        printf("get_ns=%.0f ns\n", t * 1e9 / (double)reps);
    }

    /* ---- removal of everything ---- */
    t = mono();
    for (i = 0; i < n; i++)
        if (!cm_cache_remove(c, &ids[i])) die("cm_cache_remove");
    t = mono() - t;
    printf("remove_ns=%.0f ns\n", t * 1e9 / (double)n);
    if (cm_cache_count(c) != 0) die("remove left entries");

    /* ---- reload into the emptied cache: heap pages already mapped ---- */
    t = add_batches(c, pem_at, pem_len, n, ids);
    if (cm_cache_memory(c, &der_again) == 0 || der_again != der_total || cm_cache_count(c) != n)
        die("reload");
    printf("reload_add_us_per_cert=%.3f us\n", t * 1e6 / (double)n);
    printf("page_fault_ns=%.0f ns\n", page_fault_ns());

    /* ---- the bulk path: parse threads, one parse per PEM, renew_at in C ---- */
    printf("many_wall_us_per_cert_threads0=%.2f us\n", many_wall(pem_at, pem_len, n, 0) * 1e6 / (double)n);
    printf("many_wall_us_per_cert_threads2=%.2f us\n", many_wall(pem_at, pem_len, n, 2) * 1e6 / (double)n);

    {
        /* a sanity figure: the distribution of PEM sizes */
        qsort(pem_len, n, sizeof *pem_len, cmp_size);
        printf("pem_bytes_median=%zu bytes\n", pem_len[n / 2]);
    }
    cm_cache_free(c);
    free(ids);
    free(pem_len);
    free(pem_at);
    free(pems);
    free(ca_pem);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    return 0;
}
