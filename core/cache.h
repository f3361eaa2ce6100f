/* cache.h - the certificate cache: every certificate the daemon keeps alive.
 *
 * An entry is keyed by the SHA-256 of its leaf DER and found by any of its
 * names (exact, or through a `*.example.com` wildcard).  It holds the DER
 * (leaf + rest of the chain) and the facts the maintenance loop needs, never
 * OpenSSL objects, so 100k certificates stay small and a tick never re-parses.
 *
 * Layout (this is why it is fast): the facts a scan reads each tick live in
 * dense parallel arrays ("hot": the time an entry is due for renewal, the time
 * its staple needs refreshing, not_after, flags), scanned linearly; everything
 * else ("cold": names, serial, DNs, URLs, DER, staple, last error) lives in one
 * packed allocation per entry plus the staple and error strings.  Two
 * open-addressing tables (linear probing, backward-shift deletion, no
 * tombstones) map ids and lower-cased names to slots.  Removal swap-removes the
 * last slot into the hole and fixes both tables, so arrays stay dense and scans
 * never see dead entries.
 *
 * Threads: the cache has no lock.  One thread (the loop's, which runs Lua)
 * owns it; nothing multi-threaded uses it.  cm_cache_add_many (and a
 * cm_cache_batch) parses on helper threads of its own, but those touch only
 * their items, never the cache: every change to it happens in the calling
 * thread.  What scans and
 * cm_cache_get hand out is a copy; a cm_cache_view borrows and is valid only
 * until the cache next changes.
 *
 * Times are Unix seconds as doubles (what cm_clock_now() returns).
 */
#ifndef CM_CACHE_H
#define CM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ocsp.h"
#include "renewal.h"
#include "result.h"
#include "x509.h"

struct cm_cache;

/* The id of an entry: SHA-256 of its leaf DER. */
struct cm_cache_id {
    unsigned char sha256[32];
};

/* Entry flags, as reported in struct cm_cache_cert.flags. */
#define CM_CACHE_MANAGED 0x01u   /* the daemon renews it */
#define CM_CACHE_ON_DEMAND 0x02u /* obtained on demand (dropped if renewal fails) */
#define CM_CACHE_HAS_STAPLE 0x04u
#define CM_CACHE_MUST_STAPLE 0x08u /* TLS Feature status_request (cm_cert_facts.must_staple) */
#define CM_CACHE_CRL_ONLY 0x10u    /* names a CRL distribution point and no OCSP responder */

/* Bounds on what one entry may carry; larger input fails with "toobig". */
#define CM_CACHE_MAX_LIST 4096              /* names, OCSP URLs or CRL URLs */
#define CM_CACHE_MAX_ERROR 4096             /* last_error is truncated to this */
#define CM_CACHE_MAX_STAPLE CM_OCSP_MAX_INPUT /* staple DER */

/* A staple as stored on an entry.  der is borrowed when passed in (copied). */
struct cm_cache_staple {
    enum cm_ocsp_cert_status status; /* ocsp.h: good, revoked, unknown */
    double this_update, next_update;
    double refresh_at; /* when the staple stops being fresh */
    const unsigned char *der;
    size_t der_len;
};

/* Options of cm_cache_add.  Fields left "unset" keep an existing entry's value
 * and take the default on a new entry.  Initialise with cm_cache_add_opts_init. */
struct cm_cache_add_opts {
    int managed;         /* 1, 0, or -1 = unset (new entry: 0) */
    int on_demand;       /* 1, 0, or -1 = unset (new entry: 0) */
    double renew_at;     /* NAN = unset (new entry: not_after, i.e. at the latest at expiry) */
    double next_attempt; /* NAN = unset (new entry: 0, no back-off) */
};

/* Fields of cm_cache_set (bits of struct cm_cache_update.fields). */
#define CM_CACHE_SET_MANAGED 0x01u
#define CM_CACHE_SET_ON_DEMAND 0x02u
#define CM_CACHE_SET_RENEW_AT 0x04u
#define CM_CACHE_SET_NEXT_ATTEMPT 0x08u
#define CM_CACHE_SET_ATTEMPTS 0x10u
#define CM_CACHE_SET_LAST_ERROR 0x20u
#define CM_CACHE_SET_OCSP 0x40u

/* A change to one entry; only the fields named in `fields` are applied. */
struct cm_cache_update {
    unsigned fields;
    int managed, on_demand;
    double renew_at, next_attempt;
    unsigned attempts;
    const char *last_error;             /* NULL clears; copied, truncated to CM_CACHE_MAX_ERROR */
    const struct cm_cache_staple *ocsp; /* NULL clears; copied */
};

/* A caller-owned copy of one entry (cm_cache_get); free with cm_cache_cert_free.
 * All pointers point into memory the struct owns. */
struct cm_cache_cert {
    struct cm_cache_id id;
    unsigned flags; /* CM_CACHE_MANAGED | ON_DEMAND | HAS_STAPLE | MUST_STAPLE | CRL_ONLY */
    int64_t not_before, not_after;
    double renew_at, next_attempt;
    unsigned attempts;
    struct cm_strlist names; /* lower-case, duplicates dropped, in certificate order */
    struct cm_strlist ocsp_urls, crl_urls;
    const char *serial_hex, *issuer, *subject;
    const char *last_error; /* NULL when there is none */
    const unsigned char *der; /* leaf */
    size_t der_len;
    const unsigned char *chain_der; /* rest of the chain, back to back */
    size_t chain_der_len, chain_count;
    struct cm_cache_staple staple; /* meaningful when flags has CM_CACHE_HAS_STAPLE */
    void *mem_;                     /* the one allocation behind all of the above */
};

/* Make an empty cache.  Returns NULL (and fills res, code "ENOMEM") on failure.
 * The caller owns it and frees it with cm_cache_free. */
struct cm_cache *cm_cache_new(struct cm_result *res);

/* Free the cache and everything it holds; NULL is fine.  No other thread may
 * use the cache any more. */
void cm_cache_free(struct cm_cache *c);

/* Set every field of *o to "unset". */
void cm_cache_add_opts_init(struct cm_cache_add_opts *o);

/* Add the certificate described by *f (facts are copied; the caller keeps f).
 * If an entry with the same leaf hash exists, only the fields set in opts are
 * applied to it and *existed is 1; otherwise a new entry is made and *existed
 * is 0.  opts may be NULL (all unset).  id (may be NULL) receives the entry's
 * id.  Fails with "ENOMEM", "toobig" (a list longer than CM_CACHE_MAX_LIST, or
 * DER over 4 GiB) or "invalid" (no DER); on failure the cache is unchanged. */
int cm_cache_add(struct cm_cache *c, const struct cm_cert_facts *f,
                 const struct cm_cache_add_opts *opts, struct cm_cache_id *id,
                 int *existed, struct cm_result *res);

/* Remove an entry.  Returns 1 if it was there, 0 if not. */
int cm_cache_remove(struct cm_cache *c, const struct cm_cache_id *id);

/* 1 if the cache holds the id, else 0. */
int cm_cache_has(struct cm_cache *c, const struct cm_cache_id *id);

/* Copy an entry out into *out (caller frees with cm_cache_cert_free).  Fails
 * with "ENOENT" (no such id; *out zeroed) or "ENOMEM". */
int cm_cache_get(struct cm_cache *c, const struct cm_cache_id *id,
                 struct cm_cache_cert *out, struct cm_result *res);

/* Free what cm_cache_get put in *cert and zero it; safe on a zeroed struct. */
void cm_cache_cert_free(struct cm_cache_cert *cert);

/* The copied chain as PEM, leaf first, into *pem (NUL-terminated, caller
 * frees; *len without the NUL): cm_x509_chain_pem on the copy's DER.  Fails
 * as that does ("parse" if the DER does not split into certificates). */
int cm_cache_cert_pem(const struct cm_cache_cert *cert, char **pem, size_t *len,
                      struct cm_result *res);

/* A borrowed look at one entry (cm_cache_view): no copy, no PEM.  Pointers
 * point into the cache and stay valid only until the next call that changes
 * it (add, add_many, set, remove, free).  Lists are read with
 * cm_cache_view_item. */
struct cm_cache_view {
    struct cm_cache_id id;
    unsigned flags;
    int64_t not_before, not_after;
    double renew_at, next_attempt;
    unsigned attempts;
    size_t names_count, ocsp_count, crl_count;
    const char *serial_hex, *issuer, *subject;
    const char *last_error; /* NULL when there is none */
    const unsigned char *der, *chain_der; /* leaf; rest of the chain (NULL if none) */
    size_t der_len, chain_der_len, chain_count;
    struct cm_cache_staple staple; /* meaningful when flags has CM_CACHE_HAS_STAPLE */
    int pem_fnv_ok;                /* 1: pem_fnv is FNV-1a 32 of the chain's PEM (cm_x509_chain_pem) */
    uint32_t pem_fnv;
    const unsigned char *blob_;    /* private */
    const uint32_t *off_;
};

enum cm_cache_list { CM_CACHE_NAMES, CM_CACHE_OCSP_URLS, CM_CACHE_CRL_URLS };

/* Fill *v for the entry id and return 1; 0 (and *v zeroed) when there is
 * none.  Allocates nothing, so it cannot fail otherwise. */
int cm_cache_view(const struct cm_cache *c, const struct cm_cache_id *id,
                  struct cm_cache_view *v);

/* Item i of a list of the viewed entry (names lower-case, in certificate
 * order), NUL-terminated, *len (may be NULL) its length; NULL past the end. */
const char *cm_cache_view_item(const struct cm_cache_view *v, enum cm_cache_list list,
                               size_t i, size_t *len);

/* ---- many at once --------------------------------------------------------- */

/* One certificate of a cm_cache_add_many batch: what the caller fills in,
 * then what happened to it.  Inputs are borrowed for the call. */
struct cm_cache_item {
    const char *pem; /* PEM chain, leaf first; or NULL and path: */
    size_t pem_len;
    const char *path;      /* a file holding the PEM chain, read on the parse threads
                            * (at most opts->max_bytes); a missing file gives MISSING */
    const char *companion; /* NULL, or a file that must exist beside it (the private
                            * key): missing, the item is an ERROR with code "ENOENT";
                            * a directory, "EISDIR" */
    const char *const *names; /* names the policy expects, or NULL: not compared */
    size_t names_count;
    int on_demand; /* 1 or 0 */
    /* outcome */
    enum {
        CM_CACHE_ITEM_OK,
        CM_CACHE_ITEM_NAMES_CHANGED,
        CM_CACHE_ITEM_ERROR,
        CM_CACHE_ITEM_MISSING /* path does not exist (res says so, code "ENOENT") */
    } state;
    int existed;               /* the cache held it already (or it came twice) */
    struct cm_cache_id id;     /* unless state is ERROR */
    int64_t not_before, not_after;
    double renew_at;           /* the entry's renew_at (NAN on error) */
    struct cm_result res;      /* when state is ERROR: "item N: ..." and the code */
};

/* Options of cm_cache_add_many.  Initialise with cm_cache_many_opts_init. */
struct cm_cache_many_opts {
    int managed;                         /* 1 (default) or 0 */
    const struct cm_renewal_opts *renew; /* NULL (default): renew_at = not_after, as
                                          * cm_cache_add; else cm_renewal_at's time */
    unsigned threads;                    /* parse threads (default 2, at most 16);
                                          * 0 or 1: parse in the calling thread */
    size_t first_index;                  /* the number "item N" gives items[0] (default 0) */
    size_t max_bytes;                    /* bound on a file read for an item's path
                                          * (default CM_CACHE_MAX_FILE) */
};

#define CM_CACHE_MAX_FILE (1024u * 1024u) /* what cm_x509_parse_chain accepts */

void cm_cache_many_opts_init(struct cm_cache_many_opts *o);

/* Add items[0..n) to the cache, each PEM parsed once.  Parsing (and packing
 * each entry) runs on up to opts->threads helper threads, at most a few
 * hundred items ahead; those threads touch only the items.  Insertion runs in
 * the calling thread, in item order.  A new entry gets managed, on_demand and
 * renew_at, next_attempt 0; an entry already held (also: the second of two
 * equal PEMs in the batch) gets managed, on_demand and (with opts->renew)
 * renew_at, and existed = 1.  state is NAMES_CHANGED when names is given and
 * differs from the certificate's names as a set (ASCII case-insensitive); the
 * certificate is cached all the same.  An item that fails (ERROR: "parse",
 * "toobig", "invalid", "ENOMEM") leaves the cache as it was.  opts may be NULL
 * (defaults).  Returns CM_OK whatever the items' outcomes; fails only with
 * "invalid" (opts->renew out of range; nothing done) or "ENOMEM" (before
 * anything was done).  The items array is the caller's; batches of a few
 * thousand keep it small (each item carries a struct cm_result). */
int cm_cache_add_many(struct cm_cache *c, struct cm_cache_item *items, size_t n,
                      const struct cm_cache_many_opts *opts, struct cm_result *res);

/* The same in two steps, so the parsing of one batch overlaps the caller's
 * own work (start-up binds batch k in Lua while batch k+1 is read and
 * parsed).  cm_cache_batch_start copies opts, starts the parse threads on
 * items[0..n) (all of them may be parsed ahead: keep n to a few thousand)
 * and returns; it touches no cache.  Until the batch is finished or freed,
 * items and everything they point to belong to it: the caller neither reads
 * nor changes nor frees them.  cm_cache_batch_finish inserts them into c in
 * the calling thread, in item order, with exactly cm_cache_add_many's
 * outcomes (a failure of the start, "invalid" or "ENOMEM", is reported on
 * every item, as "item N: ..."), joins the threads and frees the batch.
 * cm_cache_batch_free drops a batch unfinished: the threads stop after their
 * current item and are joined, nothing is inserted, the items' outcomes are
 * meaningless.  Start fails (*out NULL, "ENOMEM") only when the batch itself
 * cannot be made; n == 0 is a batch with nothing to do.  Batches are
 * independent: several may be in flight, finished in any order, each by one
 * thread at a time. */
struct cm_cache_batch;
int cm_cache_batch_start(struct cm_cache_batch **out, struct cm_cache_item *items, size_t n,
                         const struct cm_cache_many_opts *opts, struct cm_result *res);
void cm_cache_batch_finish(struct cm_cache *c, struct cm_cache_batch *b);
void cm_cache_batch_free(struct cm_cache_batch *b);

/* Apply *u to an entry.  Fails with "ENOENT" (no such id), "toobig" (staple
 * over CM_CACHE_MAX_STAPLE), "invalid" (a NaN time) or "ENOMEM"; on failure the
 * entry is unchanged. */
int cm_cache_set(struct cm_cache *c, const struct cm_cache_id *id,
                 const struct cm_cache_update *u, struct cm_result *res);

/* The entry serving `name` (ASCII case-insensitive): among entries carrying
 * exactly that name, else among those carrying `*.` + name-minus-its-first-
 * label, the one with the latest not_after (ties: latest not_before).  A
 * wildcard covers exactly one label: `*.example.com` never serves
 * `example.com` nor `a.b.example.com`.  Returns 1 and fills *id, or 0. */
int cm_cache_lookup(struct cm_cache *c, const char *name, size_t len,
                    struct cm_cache_id *id);

/* All ids carrying exactly `name` (case-insensitive; no wildcard matching), latest
 * not_after first, into a malloc'ed array *ids (caller frees; NULL when none).
 * Fails with "ENOMEM". */
int cm_cache_find(struct cm_cache *c, const char *name, size_t len,
                  struct cm_cache_id **ids, size_t *count, struct cm_result *res);

/* Scans.  Each copies matching ids (in slot order, which is arbitrary) into a
 * malloc'ed array *ids (caller frees; NULL when none), at most `limit` of them
 * (0 = no limit).  Fail only with "ENOMEM".
 *
 * due:     managed, renew_at <= now and next_attempt <= now.
 * staples: names an OCSP responder, not expired (not_after > now), and has no
 *          staple or its staple's refresh_at <= now.
 * crl:     not expired (not_after > now), names a CRL distribution point and
 *          no OCSP responder (the CRL is the fallback where none is named).
 * expired: not_after + grace <= now.
 * ids:     every entry; managed = 1 or 0 keeps only managed / unmanaged ones,
 *          -1 keeps all. */
int cm_cache_scan_due(struct cm_cache *c, double now, size_t limit,
                      struct cm_cache_id **ids, size_t *count, struct cm_result *res);
int cm_cache_scan_staples(struct cm_cache *c, double now, size_t limit,
                          struct cm_cache_id **ids, size_t *count, struct cm_result *res);
int cm_cache_scan_crl(struct cm_cache *c, double now, size_t limit,
                      struct cm_cache_id **ids, size_t *count, struct cm_result *res);
int cm_cache_scan_expired(struct cm_cache *c, double now, double grace, size_t limit,
                          struct cm_cache_id **ids, size_t *count, struct cm_result *res);
int cm_cache_ids(struct cm_cache *c, int managed, struct cm_cache_id **ids,
                 size_t *count, struct cm_result *res);
/* The entries whose certificate asks for a staple (CM_CACHE_MUST_STAPLE). */
int cm_cache_scan_must_staple(struct cm_cache *c, struct cm_cache_id **ids, size_t *count,
                              struct cm_result *res);

/* Number of entries. */
size_t cm_cache_count(struct cm_cache *c);

/* Bytes the cache has allocated (its own accounting of requested sizes: the
 * arrays and tables at their capacity, the packed entries, staples, errors),
 * DER included.  *der_bytes (may be NULL) receives the certificate DER part
 * (leaf + chain; staples are not counted as DER). */
size_t cm_cache_memory(struct cm_cache *c, size_t *der_bytes);

/* Id <-> 64 lower-case hex digits.  cm_cache_id_hex writes 65 bytes (NUL
 * included).  cm_cache_id_parse accepts either case and returns CM_ERR unless
 * hex is exactly 64 hex digits. */
void cm_cache_id_hex(const struct cm_cache_id *id, char hex[65]);
int cm_cache_id_parse(const char *hex, size_t len, struct cm_cache_id *id);

#endif
