/* test_work.c - the loop's worker pool (loop/work.h) and the file storage's
 * journal commit job (commit.h), alone and on the pool. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "commit.h"
#include "loop/loop.h"
#include "loop/work.h"

/* --- the pool ------------------------------------------------------------- */

#define MANY 300

struct counted {
    int value, result, done_calls, ran;
    pthread_t thread;
};

static void square(void *arg)
{
    struct counted *c = arg;
    c->result = c->value * c->value;
    c->thread = pthread_self();
}

static void counted_done(void *arg, int ran)
{
    struct counted *c = arg;
    c->done_calls++;
    c->ran = ran;
}

/* Step until `want` work events arrived (ids in order of arrival) or 30 s. */
static size_t collect(struct cm_loop *loop, uint64_t *ids, size_t want)
{
    size_t got = 0;
    double end = cm_clock_monotonic() + 30;
    struct cm_result res;
    while (got < want && cm_clock_monotonic() < end) {
        struct cm_event *ev;
        CHECK(cm_loop_step(loop, 1, &res) == CM_OK);
        ev = cm_loop_take_events(loop);
        while (ev) {
            struct cm_event *next = ev->next;
            if (ev->kind == CM_EVENT_WORK && got < want) ids[got++] = ev->id;
            cm_event_free(ev);
            ev = next;
        }
    }
    return got;
}

static void test_pool_many(void)
{
    struct cm_result res;
    struct cm_loop *loop = cm_loop_get(&res);
    static struct counted jobs[MANY];
    static uint64_t ids[MANY], seen[MANY];
    struct cm_loop_counts counts;
    size_t i, j, got, matched = 0;
    int right = 1, on_main = 0;
    CHECK(loop != NULL);
    CHECK(cm_work_threads(loop) == 0); /* started lazily */
    for (i = 0; i < MANY; i++) {
        jobs[i].value = (int)i;
        ids[i] = cm_work_submit(loop, square, counted_done, &jobs[i], &res);
        CHECK(ids[i] != 0);
    }
    cm_loop_pending(loop, &counts);
    CHECK(counts.work <= MANY && cm_work_count(loop) == counts.work);
    got = collect(loop, seen, MANY);
    CHECK(got == MANY);
    for (i = 0; i < MANY; i++) {
        if (jobs[i].result != (int)(i * i) || jobs[i].done_calls != 1 || jobs[i].ran != 1) right = 0;
        if (pthread_equal(jobs[i].thread, pthread_self())) on_main = 1;
        for (j = 0; j < got; j++)
            if (seen[j] == ids[i]) { matched++; break; }
    }
    CHECK(right);
    CHECK(!on_main);          /* every job ran on a worker */
    CHECK(matched == MANY);   /* one event per job, under its id */
    CHECK(cm_work_threads(loop) >= 1 && cm_work_threads(loop) <= CM_WORK_THREADS);
    CHECK(cm_work_count(loop) == 0);
    cm_loop_shutdown();
}

/* Shutdown with jobs queued: the running ones finish, the queued ones are
 * dropped (done(arg, 0)) and never run, and nothing runs after. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_started, gate_open;

struct gated {
    int started, finished, done_calls, ran;
};

static void gated_run(void *arg)
{
    struct gated *g = arg;
    pthread_mutex_lock(&gate_mu);
    g->started = 1;
    gate_started++;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    usleep(20000); /* still busy when the shutdown begins to wait */
    g->finished = 1;
}

static void gated_done(void *arg, int ran)
{
    struct gated *g = arg;
    g->done_calls++;
    g->ran = ran;
    /* a dropped job opens the gate: the shutdown has taken the queue */
    if (!ran) {
        pthread_mutex_lock(&gate_mu);
        gate_open = 1;
        pthread_cond_broadcast(&gate_cv);
        pthread_mutex_unlock(&gate_mu);
    }
}

static void test_pool_shutdown_with_queue(void)
{
    struct cm_result res;
    struct cm_loop *loop = cm_loop_get(&res);
    enum { N = CM_WORK_THREADS + 10 };
    static struct gated jobs[N];
    size_t i, ran = 0, dropped = 0;
    int ok = 1;
    CHECK(loop != NULL);
    /* one job per thread first, each blocking until the gate opens */
    for (i = 0; i < CM_WORK_THREADS; i++) CHECK(cm_work_submit(loop, gated_run, gated_done, &jobs[i], &res) != 0);
    pthread_mutex_lock(&gate_mu);
    while (gate_started < CM_WORK_THREADS) pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    CHECK(cm_work_threads(loop) == CM_WORK_THREADS);
    /* every thread busy: these stay queued */
    for (i = CM_WORK_THREADS; i < N; i++) CHECK(cm_work_submit(loop, gated_run, gated_done, &jobs[i], &res) != 0);
    cm_loop_shutdown();
    for (i = 0; i < N; i++) {
        if (jobs[i].done_calls != 1) ok = 0;
        if (jobs[i].ran) {
            ran++;
            if (!jobs[i].finished) ok = 0; /* never abandoned halfway */
        } else {
            dropped++;
            if (jobs[i].started) ok = 0;
        }
    }
    CHECK(ok);
    CHECK(ran == CM_WORK_THREADS);
    CHECK(dropped == N - CM_WORK_THREADS);
    /* a fresh loop gets a fresh pool */
    loop = cm_loop_get(&res);
    CHECK(loop != NULL && cm_work_threads(loop) == 0);
    cm_loop_shutdown();
}

/* --- the commit job ---------------------------------------------------------- */

static char root[256];

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

static char *slurp(const char *rel, size_t *len)
{
    char p[512];
    FILE *fp;
    char *buf;
    long n;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    if (!(fp = fopen(p, "rb"))) return NULL;
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(fp);
    if (len) *len = (size_t)n;
    return buf;
}

static int holds(const char *rel, const char *want)
{
    size_t len = 0;
    char *got = slurp(rel, &len);
    int ok = got && len == strlen(want) && memcmp(got, want, len) == 0;
    free(got);
    return ok;
}

static int perms(const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    if (lstat(p, &st) != 0) return -1;
    return (int)(st.st_mode & 0777);
}

static int exists(const char *rel) { return perms(rel) >= 0; }

static void put(struct cm_commit *c, const char *key, const char *value, mode_t mode)
{
    struct cm_commit_put *grown = realloc(c->puts, (c->nput + 1) * sizeof *grown);
    if (!grown) abort();
    c->puts = grown;
    grown[c->nput].key = strdup(key);
    grown[c->nput].data = strdup(value);
    grown[c->nput].len = strlen(value);
    grown[c->nput].mode = mode;
    c->nput++;
}

static void del(struct cm_commit *c, const char *key)
{
    char **grown = realloc(c->deletes, (c->ndelete + 1) * sizeof *grown);
    if (!grown) abort();
    c->deletes = grown;
    grown[c->ndelete++] = strdup(key);
}

static void start(struct cm_commit *c, const char *txn)
{
    cm_commit_init(c);
    c->root = strdup(root);
    c->txn = txn ? strdup(txn) : NULL;
    c->manifest = strdup("{\"version\":1}");
    c->manifest_len = strlen(c->manifest);
}

static void write_file(const char *rel, const char *text)
{
    char p[512];
    FILE *fp;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    fp = fopen(p, "wb");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

static void test_commit_contents_and_modes(void)
{
    struct cm_commit c;
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);
    {
        char old[512];
        snprintf(old, sizeof old, "%s/old", root);
        CHECK(mkdir(old, 0700) == 0);
    }
    write_file("old/gone.crt", "OLD");
    start(&c, "1700000000000-aaaaaaaa-00000001");
    put(&c, "certificates/ca/a/a.crt", "CRT", 0600);
    put(&c, "certificates/ca/a/a.json", "{}", 0644);
    put(&c, "certificates/ca/a/a.key", "KEY", 0600);
    del(&c, "old/gone.crt");
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_OK);
    CHECK(c.steps == 3);
    /* staged under the journal with their final modes; nothing in place yet */
    CHECK(holds("journal/1700000000000-aaaaaaaa-00000001/0", "CRT"));
    CHECK(perms("journal/1700000000000-aaaaaaaa-00000001/2") == 0600);
    CHECK(perms("journal/1700000000000-aaaaaaaa-00000001/1") == 0644);
    CHECK(perms("journal/1700000000000-aaaaaaaa-00000001") == 0700);
    CHECK(!exists("certificates"));
    CHECK(cm_commit_run(&c, CM_COMMIT_APPLY) == CM_OK);
    CHECK(c.committed == 1 && c.failed_step == NULL);
    CHECK(c.steps == 3 + 1 + 3 + 1 + 1 + 1);
    CHECK(holds("certificates/ca/a/a.crt", "CRT"));
    CHECK(holds("certificates/ca/a/a.key", "KEY"));
    CHECK(perms("certificates/ca/a/a.key") == 0600);
    CHECK(perms("certificates/ca/a/a.json") == 0644);
    CHECK(perms("certificates/ca/a") == 0700 && perms("certificates") == 0700);
    CHECK(!exists("old/gone.crt"));
    CHECK(!exists("journal/1700000000000-aaaaaaaa-00000001"));
    cm_commit_free(&c);

    /* a plain store: no journal */
    start(&c, NULL);
    put(&c, "acme/x/account.key", "AK", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_WRITE) == CM_OK);
    CHECK(holds("acme/x/account.key", "AK") && perms("acme/x/account.key") == 0600);
    CHECK(c.steps == 0);
    cm_commit_free(&c);
}

static void test_commit_failures(void)
{
    struct cm_commit c;
    char link_target[600], link_path[600];
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);

    /* after the commit point: a file where a target folder must be.  The
     * manifest and the value not yet moved stay for recover(). */
    write_file("blocked", "a file, not a folder");
    start(&c, "1700000000000-aaaaaaaa-00000002");
    put(&c, "a.crt", "A", 0600);
    put(&c, "blocked/b.key", "B", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_OK);
    CHECK(cm_commit_run(&c, CM_COMMIT_APPLY) == CM_ERR);
    CHECK(c.committed == 1 && !c.crashed);
    CHECK_STR(c.failed_step, "mkdir");
    CHECK_STR(c.failed_path, "blocked/b.key");
    CHECK_STR(c.res.code, "ENOTDIR");
    CHECK(strstr(c.res.message, "commit 1700000000000-aaaaaaaa-00000002: mkdir blocked/b.key:") != NULL);
    CHECK(holds("a.crt", "A"));
    CHECK(exists("journal/1700000000000-aaaaaaaa-00000002/manifest.json"));
    CHECK(holds("journal/1700000000000-aaaaaaaa-00000002/1", "B"));
    cm_commit_free(&c);
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);

    /* before the commit point: the journal cannot be made; nothing changes */
    write_file("journal", "in the way");
    start(&c, "1700000000000-aaaaaaaa-00000003");
    put(&c, "a.crt", "A", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_ERR);
    CHECK_STR(c.failed_step, "mkdir");
    CHECK(c.committed == 0);
    CHECK(!exists("a.crt"));
    cm_commit_free(&c);
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);

    /* a symbolic link on the way to a target is refused after the commit point */
    snprintf(link_target, sizeof link_target, "%s-elsewhere", root);
    snprintf(link_path, sizeof link_path, "%s/certificates", root);
    rm_rf(link_target);
    CHECK(mkdir(link_target, 0700) == 0);
    CHECK(symlink(link_target, link_path) == 0);
    start(&c, "1700000000000-aaaaaaaa-00000004");
    put(&c, "certificates/x.key", "K", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_OK);
    CHECK(cm_commit_run(&c, CM_COMMIT_APPLY) == CM_ERR);
    CHECK_STR(c.res.code, "ELOOP");
    CHECK_STR(c.failed_step, "rename");
    CHECK(strstr(c.res.message, "certificates in ") != NULL);
    {
        char p[700];
        snprintf(p, sizeof p, "%s/x.key", link_target);
        CHECK(access(p, F_OK) != 0); /* nothing written through the link */
    }
    cm_commit_free(&c);
    rm_rf(link_target);
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);

    /* the injector: two steps done, then it stops where a crash would */
    start(&c, "1700000000000-aaaaaaaa-00000005");
    c.crash_after = 2;
    put(&c, "a", "1", 0600);
    put(&c, "b", "2", 0600);
    put(&c, "c", "3", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_ERR);
    CHECK(c.crashed == 1 && c.steps == 2);
    CHECK_STR(c.res.code, "crash");
    CHECK(exists("journal/1700000000000-aaaaaaaa-00000005/1"));
    CHECK(!exists("journal/1700000000000-aaaaaaaa-00000005/2"));
    cm_commit_free(&c);
    /* and after the commit point: manifest and the first rename done */
    start(&c, "1700000000000-aaaaaaaa-00000006");
    c.crash_after = 4; /* 2 staged, the manifest, one rename */
    put(&c, "d", "4", 0600);
    put(&c, "e", "5", 0600);
    CHECK(cm_commit_run(&c, CM_COMMIT_STAGE) == CM_OK);
    CHECK(cm_commit_run(&c, CM_COMMIT_APPLY) == CM_ERR);
    CHECK(c.crashed == 1 && c.committed == 1);
    CHECK(holds("d", "4") && !exists("e"));
    CHECK(exists("journal/1700000000000-aaaaaaaa-00000006/manifest.json"));
    cm_commit_free(&c);
}

/* Many commits on the pool at once, each its own transaction. */
static void commit_work(void *arg)
{
    struct cm_commit *c = arg;
    if (cm_commit_run(c, CM_COMMIT_STAGE) == CM_OK) (void)cm_commit_run(c, CM_COMMIT_APPLY);
}

static void test_commit_on_pool(void)
{
    enum { N = 40 };
    static struct cm_commit cs[N];
    static uint64_t ids[N];
    struct cm_result res;
    struct cm_loop *loop;
    size_t i;
    int ok = 1;
    rm_rf(root);
    CHECK(mkdir(root, 0700) == 0);
    loop = cm_loop_get(&res);
    CHECK(loop != NULL);
    for (i = 0; i < N; i++) {
        char txn[64], key[64];
        snprintf(txn, sizeof txn, "1700000000000-aaaaaaaa-%08zx", i);
        start(&cs[i], txn);
        snprintf(key, sizeof key, "certificates/s%zu/s%zu.crt", i, i);
        put(&cs[i], key, txn, 0600);
        snprintf(key, sizeof key, "certificates/s%zu/s%zu.key", i, i);
        put(&cs[i], key, "KEY", 0600);
        CHECK(cm_work_submit(loop, commit_work, NULL, &cs[i], &res) != 0);
    }
    CHECK(collect(loop, ids, N) == N);
    for (i = 0; i < N; i++) {
        char key[64];
        snprintf(key, sizeof key, "certificates/s%zu/s%zu.crt", i, i);
        if (cs[i].failed_step || !holds(key, cs[i].txn)) ok = 0;
        cm_commit_free(&cs[i]);
    }
    CHECK(ok);
    CHECK(!exists("journal/1700000000000-aaaaaaaa-00000000"));
    cm_loop_shutdown();
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/certmaint-test-work-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    test_pool_many();
    test_pool_shutdown_with_queue();
    test_commit_contents_and_modes();
    test_commit_failures();
    test_commit_on_pool();
    rm_rf(root);
    return CHECK_DONE();
}
