/* generate.h - the benchmark tree generator: a storage tree in certmagic's
 * file layout with N distinct certificates, their keys, metadata and OCSP
 * staples, for certmaint-bench (and the Lua module certmaint.benchgen).
 *
 * The tree, under opts.dir:
 *
 *   certificates/<issuer_key>/<name>/<name>.crt   leaf + intermediate, PEM
 *   certificates/<issuer_key>/<name>/<name>.key   the leaf's own P-256 key ("EC PRIVATE KEY")
 *   certificates/<issuer_key>/<name>/<name>.json  {"sans": [name], "issuer_data": {issuer, serial}}
 *   ocsp/<name>-<FNV-1a 32 of the .crt, %x>       DER OCSP response, good, signed by the intermediate
 *   bench-ca/root.pem|root.key|intermediate.pem|intermediate.key
 *
 * names are host<i>.bench.test, i = 1..n.  Every file is 0600 and every
 * directory made 0700, as certmagic's FileStorage writes them.  Which
 * certificates are due, expired or have a stale staple, and every serial,
 * follow from the seed alone; the keys are fresh randomness each run.
 *
 * A benchmark fixture, not storage the daemon wrote: files are complete when
 * it returns but neither fsynced nor renamed into place.
 */
#ifndef CM_BENCH_GENERATE_H
#define CM_BENCH_GENERATE_H

#include <stdint.h>

#include "result.h"

struct lua_State;

#define CM_BENCH_GEN_MAX_N 10000000LL  /* names and role tables stay small */
#define CM_BENCH_GEN_MAX_THREADS 64

/* Options of cm_bench_generate; strings borrowed for the call.
 * cm_bench_gen_opts_init fills the defaults below. */
struct cm_bench_gen_opts {
    const char *dir;          /* required; created if missing, refused if it holds certificates/ */
    int64_t n;                /* certificates, 1..CM_BENCH_GEN_MAX_N */
    double due;               /* fraction inside the renewal window (not expired), default 0.05 */
    double expired;           /* fraction already expired, default 0.01 */
    double stale_staples;     /* fraction whose staple's nextUpdate has passed, default 0.05 */
    uint64_t seed;            /* default 1 */
    const char *issuer_key;   /* certificates/<issuer_key>/, a certmagic Safe key,
                                 default "acme-v02.api.letsencrypt.org-directory" */
    const char *ca_key_type;  /* the root's and intermediate's key: "p256" (default), "p384" or
                                 "rsa2048" (what signs the leaves and the OCSP responses) */
    int threads;              /* worker threads, 1..CM_BENCH_GEN_MAX_THREADS, default 2 */
    int progress;             /* print a line to stderr at every 10% */
    int64_t now;              /* Unix seconds the tree is generated at; 0: the wall clock */
};

/* What cm_bench_generate wrote. */
struct cm_bench_gen_summary {
    int64_t n, due, expired, stale_staples;  /* counts */
    int64_t now;                             /* the time the tree was made for */
    double seconds;                          /* wall time of the generation */
    uint64_t bytes;                          /* file contents written, in bytes */
};

/* The defaults above, with dir NULL and n 0 (both must be set). */
void cm_bench_gen_opts_init(struct cm_bench_gen_opts *o);

/* Write the tree described above.  Counts are the fractions of n rounded to
 * the nearest integer (expired first; due is taken from the rest, so a
 * certificate is never both); "due" certificates were issued 70-75 days ago
 * (under the default 1/3 ratio of a 90-day lifetime, certainly due), the
 * others 1 hour to 10 days ago (certainly not due), expired ones 100-110
 * days ago.  Staples: thisUpdate now - 1h, nextUpdate now + 7d; stale ones
 * thisUpdate now - 8d, nextUpdate now - 1d.  Fills *out (may be NULL) on
 * success.  Fails with "invalid" (an option, named in the message), "exists"
 * (dir already holds certificates/), "toolong" (a path over 4095 bytes),
 * errno names from the file system ("ENOTDIR", "EACCES", "ENOSPC", ...),
 * "ENOMEM", "crypto"; what was written by then stays.  The staples'
 * producedAt is the wall clock (OpenSSL stamps it), even with opts.now. */
int cm_bench_generate(const struct cm_bench_gen_opts *o, struct cm_bench_gen_summary *out,
                      struct cm_result *res);

/* The Lua module certmaint.benchgen: { generate = function(opts) -> summary | nil, err, code }
 * (see the binding's comment in generate.c for the options and the summary). */
int luaopen_certmaint_benchgen(struct lua_State *L);

#endif
