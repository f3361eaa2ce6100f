/* failpoint.c - named fault injection points (see failpoint.h). */
#include "failpoint.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The one list of points.  Keep names stable: tests and operators use them. */
const struct cm_failpoint_info cm_failpoints[] = {
    /* core/fileio.c: every file the daemon writes */
    {"file.write.tmp", "atomic write: create, fill and fsync the temp file"},
    {"file.write.rename", "atomic write: rename the temp file over the target"},
    {"file.write.dirsync", "atomic write: fsync the target's directory"},
    {"file.create_exclusive", "exclusive creation of a file (lock files)"},
    {"file.replace", "compare-and-swap replace of a file (stale lock takeover)"},
    {"file.rename", "rename of a file into place"},
    {"file.remove", "unlink of a file (lock release, clean-up)"},
    {"file.mkdir", "creation of a directory"},
    {"file.rmdir", "removal of an empty directory"},
    {"file.fsync_dir", "fsync of a directory after renames"},
    /* core/commit.c: the file storage's journal commit */
    {"commit.stage", "commit: stage one value in the journal"},
    {"commit.manifest", "commit: write the manifest (the commit point)"},
    {"commit.apply.rename", "commit: rename one staged value into place"},
    {"commit.apply.fsync", "commit: fsync the target directories"},
    {"commit.apply.delete", "commit: apply one delete"},
    {"commit.cleanup", "commit: remove the transaction from the journal"},
    /* lua/certmaint/storage/common.lua: every backend's locks */
    {"lock.acquire", "storage lock: one attempt to take a lock"},
    {"lock.release", "storage lock: release"},
    {"lock.refresh", "storage lock: heartbeat refresh of a held lock"},
    /* lua/certmaint/storage/etcd.lua: requests to etcd */
    {"etcd.txn", "etcd: a transaction (every write, delete, commit, lock)"},
    {"etcd.range", "etcd: a read"},
    {"etcd.lease.grant", "etcd: grant the instance's lock lease"},
    {"etcd.lease.keepalive", "etcd: keep the lock lease alive"},
    {"etcd.lease.revoke", "etcd: revoke the lock lease at close"},
    /* lua/certmaint/acme/: requests to the ACME CA */
    {"acme.directory", "ACME: fetch the directory"},
    {"acme.nonce", "ACME: newNonce"},
    {"acme.account", "ACME: newAccount"},
    {"acme.order", "ACME: newOrder"},
    {"acme.authz", "ACME: fetch an authorization"},
    {"acme.challenge", "ACME: respond to a challenge"},
    {"acme.poll", "ACME: poll an authorization or order (and resume a stored order)"},
    {"acme.finalize", "ACME: finalize an order"},
    {"acme.certificate", "ACME: download the certificate chain"},
    /* lua/certmaint/responder.lua */
    {"ocsp.fetch", "OCSP: fetch a response from the responder"},
    {NULL, NULL},
};

#define MAX_ARMED 32
#define MAX_POINTS 64

/* hits of each declared point so far, over all threads */
static atomic_long point_hits[MAX_POINTS];
static int tracing;

struct armed {
    size_t point;        /* index into cm_failpoints */
    enum cm_failpoint_action action;
    long at;             /* trigger at this hit (1 = the first) */
    long sleep_ms;
};

int cm_failpoints_active = 0;
static struct armed armed[MAX_ARMED];
static size_t narmed;
static int initialised;

static long point_index(const char *name, size_t len)
{
    size_t i;
    for (i = 0; cm_failpoints[i].name; i++)
        if (strlen(cm_failpoints[i].name) == len && memcmp(cm_failpoints[i].name, name, len) == 0)
            return (long)i;
    return -1;
}

int cm_failpoint_declared(const char *name)
{
    return name && point_index(name, strlen(name)) >= 0;
}

const char *cm_failpoint_action_name(enum cm_failpoint_action action)
{
    switch (action) {
    case CM_FP_CRASH_BEFORE: return "crash-before";
    case CM_FP_CRASH_AFTER: return "crash-after";
    case CM_FP_ENOSPC: return "enospc";
    case CM_FP_EIO: return "eio";
    case CM_FP_SLEEP: return "sleep";
    default: return "none";
    }
}

/* One entry "name=action[@N]" of len bytes. */
static int parse_entry(const char *s, size_t len, struct cm_result *res)
{
    const char *eq = memchr(s, '=', len), *act, *at;
    size_t alen;
    long idx;
    struct armed *a;
    char *end;
    if (!eq) return cm_fail(res, "invalid", "CERTMAINT_FAILPOINTS: \"%.*s\" is not name=action", (int)len, s);
    if ((idx = point_index(s, (size_t)(eq - s))) < 0)
        return cm_fail(res, "invalid", "CERTMAINT_FAILPOINTS: unknown point \"%.*s\" (certmaint --failpoints lists them)",
                       (int)(eq - s), s);
    if (narmed == MAX_ARMED) return cm_fail(res, "invalid", "CERTMAINT_FAILPOINTS: more than %d points", MAX_ARMED);
    a = &armed[narmed];
    a->point = (size_t)idx;
    a->at = 1;
    a->sleep_ms = 0;
    act = eq + 1;
    alen = len - (size_t)(act - s);
    if ((at = memchr(act, '@', alen)) != NULL) {
        char num[24];
        size_t nlen = alen - (size_t)(at - act) - 1;
        if (nlen == 0 || nlen >= sizeof num) goto bad_count;
        memcpy(num, at + 1, nlen);
        num[nlen] = '\0';
        errno = 0;
        a->at = strtol(num, &end, 10);
        if (errno || *end || a->at < 1) goto bad_count;
        alen = (size_t)(at - act);
    }
#define IS(lit) (alen == sizeof lit - 1 && memcmp(act, lit, alen) == 0)
    if (IS("crash-before")) a->action = CM_FP_CRASH_BEFORE;
    else if (IS("crash-after")) a->action = CM_FP_CRASH_AFTER;
    else if (IS("enospc")) a->action = CM_FP_ENOSPC;
    else if (IS("eio")) a->action = CM_FP_EIO;
    else if (alen > 6 && memcmp(act, "sleep:", 6) == 0) {
        char num[24];
        if (alen - 6 >= sizeof num) goto bad_action;
        memcpy(num, act + 6, alen - 6);
        num[alen - 6] = '\0';
        errno = 0;
        a->sleep_ms = strtol(num, &end, 10);
        if (errno || *end || a->sleep_ms < 0 || a->sleep_ms > 3600000) goto bad_action;
        a->action = CM_FP_SLEEP;
    } else goto bad_action;
#undef IS
    narmed++;
    return CM_OK;
bad_action:
    return cm_fail(res, "invalid", "CERTMAINT_FAILPOINTS: \"%.*s\": the action must be crash-before, "
                   "crash-after, enospc, eio or sleep:MS (0..3600000)", (int)len, s);
bad_count:
    return cm_fail(res, "invalid", "CERTMAINT_FAILPOINTS: \"%.*s\": @N must be a hit number >= 1", (int)len, s);
}

int cm_failpoint_init(const char *spec, struct cm_result *res)
{
    const char *p;
    const char *trace = getenv("CERTMAINT_FAILPOINTS_TRACE");
    size_t n;
    if (initialised) return CM_OK;
    initialised = 1;
    for (n = 0; cm_failpoints[n].name; n++) {}
    if (n > MAX_POINTS) {
        fprintf(stderr, "certmaint: core/failpoint.c declares %zu points, MAX_POINTS is %d\n", n, MAX_POINTS);
        abort();
    }
    tracing = trace && strcmp(trace, "1") == 0;
    cm_failpoints_active = tracing;
    if (!spec || !*spec) return CM_OK;
    for (p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0 && parse_entry(p, len, res) != CM_OK) {
            narmed = 0;
            return CM_ERR;
        }
        p += len;
        if (*p == ',') p++;
    }
    cm_failpoints_active = narmed > 0 || tracing;
    return CM_OK;
}

/* CERTMAINT_FAILPOINTS_TRACE=1: every hit on stderr, so a test can aim @N. */
static void trace_hit(const char *name, long hit, const char *what)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "level=debug event=failpoint_hit name=%s hit=%ld what=%s\n", name, hit,
                     what ? what : "-");
    if (n > 0 && (size_t)n < sizeof line) {
        ssize_t w = write(2, line, (size_t)n);
        (void)w;
    }
}

static enum cm_failpoint_action hit_at(const char *name, const char *what, long *sleep_ms)
{
    size_t i;
    long idx, hit;
    if (!cm_failpoints_active) return CM_FP_NONE;
    if ((idx = point_index(name, strlen(name))) < 0) {
        fprintf(stderr, "certmaint: failpoint \"%s\" is not declared in core/failpoint.c\n", name);
        abort();
    }
    hit = atomic_fetch_add(&point_hits[idx], 1) + 1;
    if (tracing) trace_hit(name, hit, what);
    for (i = 0; i < narmed; i++) {
        struct armed *a = &armed[i];
        if (a->point != (size_t)idx || hit != a->at) continue;
        if (sleep_ms) *sleep_ms = a->sleep_ms;
        return a->action;
    }
    return CM_FP_NONE;
}

enum cm_failpoint_action cm_failpoint_hit(const char *name, long *sleep_ms)
{
    return hit_at(name, NULL, sleep_ms);
}

void cm_failpoint_report(const char *name, enum cm_failpoint_action action)
{
    char line[256];
    /* one write(2): whole even from a worker thread, and before a SIGKILL */
    int n = snprintf(line, sizeof line, "level=warn event=failpoint_triggered name=%s action=%s\n", name,
                     cm_failpoint_action_name(action));
    if (n > 0 && (size_t)n < sizeof line) {
        ssize_t w = write(2, line, (size_t)n);
        (void)w;
    }
}

void cm_failpoint_crash(const char *name, enum cm_failpoint_action action)
{
    cm_failpoint_report(name, action);
    raise(SIGKILL);
    _exit(137); /* not reached */
}

static void sleep_ms_now(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

int cm_failpoint_before(const char *name, const char *what, struct cm_result *res)
{
    long ms = 0;
    enum cm_failpoint_action a;
    if (!cm_failpoints_active) return 0;
    a = hit_at(name, what, &ms);
    switch (a) {
    case CM_FP_NONE: return 0;
    case CM_FP_CRASH_BEFORE: cm_failpoint_crash(name, a); return 0;
    case CM_FP_CRASH_AFTER: return 1;
    case CM_FP_SLEEP:
        cm_failpoint_report(name, a);
        sleep_ms_now(ms);
        return 0;
    case CM_FP_ENOSPC:
    case CM_FP_EIO:
        cm_failpoint_report(name, a);
        cm_fail(res, a == CM_FP_ENOSPC ? "ENOSPC" : "EIO", "%s: %s (injected: failpoint %s)", what,
                a == CM_FP_ENOSPC ? "No space left on device" : "Input/output error", name);
        return -1;
    }
    return 0;
}

void cm_failpoint_after(const char *name, int state)
{
    if (state == 1) cm_failpoint_crash(name, CM_FP_CRASH_AFTER);
}

int cm_failpoint_main(int argc, char **argv, int *code)
{
    struct cm_result res;
    size_t i;
    if (argc == 2 && strcmp(argv[1], "--failpoints") == 0) {
        for (i = 0; cm_failpoints[i].name; i++)
            printf("%s\t%s\n", cm_failpoints[i].name, cm_failpoints[i].description);
        *code = fflush(stdout) == 0 ? 0 : 1;
        return 1;
    }
    if (cm_failpoint_init(getenv("CERTMAINT_FAILPOINTS"), &res) != CM_OK) {
        fprintf(stderr, "certmaint: %s\n", res.message);
        *code = 2;
        return 1;
    }
    return 0;
}
