/* ocsp_memo.h - the signatures this host checked already: a memo of OCSP
 * responses found signed by their issuer, so a restart does not check
 * 100,000 stored staples' signatures again.
 *
 * An entry is SHA-256(issuer key hash || digest of the signed data ||
 * signature): the ECDSA check of a response the issuer signed itself is a
 * function of exactly these, so an entry present means "this signature under
 * this key was checked good".  Everything else about a response (its
 * decoding, CertID, status, times, the issuer as signer) is checked again
 * each time.  Only the fast path's responses (the issuer's own signature,
 * ocsp_fast.h) are memoised: a delegated responder's certificate can expire
 * or change, which a memo of its signature would hide.
 *
 * The file (0600) is the magic line then 32-byte records, appended to as
 * staples are checked.  Damage costs time, never trust: a record is a hash,
 * so a torn or garbage one matches no response (finding one that does is
 * SHA-256's second preimage); a bad magic line is an empty memo, rewritten.
 * For that reason it is not fsynced.  When the file holds more than twice
 * the records used since it was opened (plus a margin), flush rewrites it
 * with those only.
 *
 * Threads: has() may run on many threads at once with add(); open, flush and
 * free on one.
 */
#ifndef CM_OCSP_MEMO_H
#define CM_OCSP_MEMO_H

#include <stddef.h>

#include "result.h"

#define CM_OCSP_MEMO_KEY 32
#define CM_OCSP_MEMO_MAGIC "certmaint ocsp-verified 1\n"
#define CM_OCSP_MEMO_MAX_RECORDS (1u << 22) /* 128 MiB of file; past it the rest is ignored */

struct cm_ocsp_memo;

struct cm_ocsp_memo_stats {
    size_t entries;  /* distinct records held */
    size_t file_records; /* records in the file (read plus appended) */
    size_t hits, added;  /* since open */
    int damaged;     /* the file's magic line was wrong, or a torn record at its end */
};

/* Open the memo kept at path (read now; a missing file is an empty memo).
 * Fails with the errno name (EACCES, EISDIR, ...) or ENOMEM. */
int cm_ocsp_memo_open(struct cm_ocsp_memo **out, const char *path, struct cm_result *res);

/* 1 when key is in the memo (counted as used: kept by compaction). */
int cm_ocsp_memo_has(struct cm_ocsp_memo *m, const unsigned char key[CM_OCSP_MEMO_KEY]);

/* Add key (a signature just checked good); CM_ERR only out of memory. */
int cm_ocsp_memo_add(struct cm_ocsp_memo *m, const unsigned char key[CM_OCSP_MEMO_KEY],
                     struct cm_result *res);

/* Write what was added since the last flush (appended, or the file rewritten
 * when compaction is due).  Fails with the errno name; the entries stay to
 * be written by the next flush. */
int cm_ocsp_memo_flush(struct cm_ocsp_memo *m, struct cm_result *res);

void cm_ocsp_memo_stats(struct cm_ocsp_memo *m, struct cm_ocsp_memo_stats *out);

void cm_ocsp_memo_free(struct cm_ocsp_memo *m);

/* The memo key of a signature sig over digest dgst under the issuer key
 * whose SHA-256 is key_sha256. */
void cm_ocsp_memo_key(const unsigned char key_sha256[32], const unsigned char *dgst, size_t dlen,
                      const unsigned char *sig, size_t siglen, unsigned char out[CM_OCSP_MEMO_KEY]);

#endif
