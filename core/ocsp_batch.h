/* ocsp_batch.h - checking many OCSP responses against cached certificates,
 * on helper threads.
 *
 * The OCSP pass checks the stored staple of every certificate due (100,000
 * at start-up).  One cm_ocsp_response_parse each on the loop's thread is
 * ~25 us of CPU apiece; here the responses of a batch are checked on worker
 * threads while the loop runs, each issuer decoded and its trust store built
 * once a batch (the same intermediate signs thousands of leaves).
 *
 * Each item names a cache entry (its leaf and, as the first certificate of
 * the rest of its chain, its issuer) and a response: DER bytes, or a file
 * to read it from (read on the worker threads).  The outcome of an item is
 * exactly what cm_ocsp_response_parse(der, leaf, issuer, now, skew) gives
 * (the same checks in the same order, ocsp_ssl.h), or one of these before
 * it: "absent" (no such entry), "chain" (the entry has no issuer), the file
 * read's failure ("ENOENT", "toobig" past max_bytes, "EISDIR", errno names).
 *
 * Threads: cm_ocsp_batch_start reads the cache in the calling thread and
 * copies what the workers need (leaf DER, the decoded issuers), so the
 * workers never touch the cache, which may change while they run;
 * attaching happens in cm_ocsp_batch_finish, in the calling thread.
 */
#ifndef CM_OCSP_BATCH_H
#define CM_OCSP_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "ocsp.h"
#include "ocsp_memo.h"
#include "result.h"

#define CM_OCSP_BATCH_MAX_THREADS 16u

/* One response to check: what the caller fills in, then the outcome.
 * Inputs are borrowed until the batch is finished or freed. */
struct cm_ocsp_batch_item {
    struct cm_cache_id id;
    const unsigned char *der; /* the response; or NULL and path: */
    size_t der_len;
    const char *path;         /* a file holding it (at most opts->max_bytes) */
    /* outcome */
    int ok;                   /* 1: info holds what the verified response says */
    struct cm_ocsp_info info;
    int attached;             /* opts->attach: it is now the entry's staple */
    int attach_failed;        /* opts->attach: it was to be attached and cm_cache_set
                               * failed (res says why; ok stays 1) */
    double refresh_at;        /* when ok: refresh time of it as a staple (below) */
    unsigned char *file_der;  /* with path and opts->keep_der, when ok: the bytes
                               * read (malloc'd; cm_ocsp_batch_items_free frees) */
    size_t file_der_len;
    int memo_hit;             /* opts->memo: its signature was in the memo, not checked again */
    int memo_new;             /* opts->memo: its signature was checked good now (finish adds it) */
    unsigned char memo_key[CM_OCSP_MEMO_KEY];
    struct cm_result res;     /* when !ok (or attach_failed) */
};

/* Options.  Initialise with cm_ocsp_batch_opts_init. */
struct cm_ocsp_batch_opts {
    int64_t now;      /* > 0; 0 skips the time checks as cm_ocsp_response_parse does */
    int64_t skew;     /* default CM_OCSP_DEFAULT_SKEW */
    unsigned threads; /* worker threads (default 2, at most 16); 0: all work in finish */
    size_t max_bytes; /* bound on a file read (default and at most CM_OCSP_MAX_INPUT) */
    int verify;       /* 1 (default): verify signatures; 0: parse-only (decode, CertID,
                       * times; no signature), for measuring, never for trusting */
    int attach;       /* 0 (default); 1: finish attaches usable responses (below) */
    int attach_good_only; /* 0 (default); 1: attach only status good (start-up's first
                           * staples: a revoked one is left to the OCSP pass, which acts on it) */
    int keep_der;     /* 0 (default); 1: items read from a file keep the bytes */
    struct cm_ocsp_memo *memo; /* NULL (default); else signatures found in it are not checked
                                * again, and those checked good are added (finish) */
};

void cm_ocsp_batch_opts_init(struct cm_ocsp_batch_opts *o);

/* The refresh time of a staple: half-way through this_update..next_update,
 * the span ending at not_after when that comes first (engine/ocsp.lua's
 * refresh_time). */
double cm_ocsp_refresh_time(double this_update, double next_update, double not_after);

/* Attaching (opts->attach, verify 1, now > 0), in finish, per ok item whose
 * entry is still cached: the response becomes the entry's staple (as
 * cm_cache_set with CM_CACHE_SET_OCSP, refresh_at as above) when it is what
 * the OCSP pass takes from storage: status good or revoked, a nextUpdate,
 * refresh_at > now, and the entry has no staple or one with an older
 * thisUpdate (status good only, with attach_good_only). */

struct cm_ocsp_batch;

/* Start checking items[0..n) (n < 2^19) against the entries of c: reads c now, starts
 * the threads and returns.  Until finish or free, the items belong to the
 * batch.  Fails (*out NULL) with "ENOMEM" or "invalid" (opts out of range);
 * every other failure is an item's.  n == 0 is a batch with nothing to do. */
int cm_ocsp_batch_start(struct cm_ocsp_batch **out, struct cm_cache *c,
                        struct cm_ocsp_batch_item *items, size_t n,
                        const struct cm_ocsp_batch_opts *opts, struct cm_result *res);

/* 1 when finish will not wait for the threads (all items checked, or no
 * threads: finish then checks them itself); never blocks. */
int cm_ocsp_batch_ready(struct cm_ocsp_batch *b);

/* Wait for the threads (or check the items inline), attach (opts->attach)
 * into c, the cache the batch was started on, and free the batch. */
void cm_ocsp_batch_finish(struct cm_cache *c, struct cm_ocsp_batch *b);

/* Drop a batch unfinished: the threads stop after their current item and
 * are joined; nothing is attached.  NULL is fine. */
void cm_ocsp_batch_free(struct cm_ocsp_batch *b);

/* Free what the outcome of items[0..n) holds (file_der). */
void cm_ocsp_batch_items_free(struct cm_ocsp_batch_item *items, size_t n);

/* Start and finish in one call. */
int cm_ocsp_verify_many(struct cm_cache *c, struct cm_ocsp_batch_item *items, size_t n,
                        const struct cm_ocsp_batch_opts *opts, struct cm_result *res);

#endif
