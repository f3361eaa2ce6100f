/* clean_scan.h - the clean pass's scan of a file storage tree: one walk
 * listing the stored certificates and the temp files a crash left, then the
 * certificates read on threads for their leaf's notAfter only.
 *
 * What the clean pass needs from 100k stored certificates is which few have
 * expired; reading and parsing them all into a cache, as the start-up load
 * does, cost it ~15 us a certificate, the walk for temp files a second walk.
 */
#ifndef CM_CLEAN_SCAN_H
#define CM_CLEAN_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

struct cm_clean_scan_opts {
    const char *crt_top;    /* the top-level folder of certificates ("certificates") */
    const char *skip_top;   /* a top-level entry never walked (the journal), or NULL */
    int64_t expired_before; /* a leaf with notAfter <= this is reported expired */
    int64_t temp_before;    /* a temp file last modified before this is reported */
    unsigned threads;       /* readers (1..64) */
    size_t max_bytes;       /* the largest certificate file read */
    size_t max_files;       /* the walk's bound */
    unsigned max_depth;
};

void cm_clean_scan_opts_init(struct cm_clean_scan_opts *o);

/* One certificate file the caller must look at: expired (id set: SHA-256 of
 * the leaf DER, as the cache's ids) or unreadable / unparseable (error set). */
struct cm_clean_scan_item {
    char *key;          /* relative to the root */
    int64_t not_after;  /* expired only */
    unsigned char id[32];
    char *error;        /* NULL when expired */
    char code[48];
};

struct cm_clean_scan {
    size_t certificates;           /* .crt files found */
    struct cm_clean_scan_item *items;
    size_t count;
    char **temp;                   /* old temp files, relative to the root */
    size_t temp_count;
};

/* Scan the tree at root.  Fails ("invalid", "ENOMEM", the walk's errors)
 * with *out empty; a file that cannot be read or parsed is an item, not a
 * failure.  Free *out with cm_clean_scan_free (also after failure). */
int cm_clean_scan(const char *root, const struct cm_clean_scan_opts *o, struct cm_clean_scan *out,
                  struct cm_result *res);
void cm_clean_scan_free(struct cm_clean_scan *s);

#endif
