/* replay.c - a plain main() for the fuzz harnesses: feeds every regular file
 * of the directories (or the files) named on the command line to
 * LLVMFuzzerTestOneInput once, so the committed corpus runs under ctest with
 * the normal compiler and no libFuzzer.  A broken harness property aborts;
 * an unreadable input fails the run.  Prints how many inputs it ran. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Largest input replayed: the -max_len scripts/fuzz.sh gives libFuzzer. */
#define REPLAY_MAX (64 * 1024)

static int run_file(const char *path)
{
    unsigned char *buf = NULL;
    FILE *f = NULL;
    size_t n;
    int ret = -1;

    if (!(f = fopen(path, "rb"))) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto out;
    }
    /* one byte more than allowed tells an oversized input from a full one */
    if (!(buf = malloc(REPLAY_MAX + 1))) {
        fprintf(stderr, "replay: out of memory\n");
        goto out;
    }
    n = fread(buf, 1, REPLAY_MAX + 1, f);
    if (ferror(f)) {
        fprintf(stderr, "replay: %s: read error\n", path);
        goto out;
    }
    if (n > REPLAY_MAX) {
        fprintf(stderr, "replay: %s: larger than %d bytes\n", path, REPLAY_MAX);
        goto out;
    }
    /* an exact-size copy, so ASan sees reads past the end of the input */
    {
        unsigned char *exact = malloc(n ? n : 1);
        if (!exact) {
            fprintf(stderr, "replay: out of memory\n");
            goto out;
        }
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact); exact = NULL;
    }
    ret = 0;
out:
    free(buf); buf = NULL;
    if (f) fclose(f);
    f = NULL;
    return ret;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every regular file of dir, in name order so failures reproduce. */
static int run_dir(const char *dir, size_t *count)
{
    DIR *d = NULL;
    struct dirent *e;
    char **names = NULL, **grown, path[4096];
    size_t n = 0, cap = 0, i;
    struct stat st;
    int ret = -1;

    if (!(d = opendir(dir))) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        goto out;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            if (!(grown = realloc(names, cap * sizeof *names))) goto oom;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) goto oom;
        n++;
    }
    qsort(names, n, sizeof *names, cmp_names);
    for (i = 0; i < n; i++) {
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) {
            fprintf(stderr, "replay: %s/%s: path too long\n", dir, names[i]);
            goto out;
        }
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (run_file(path) != 0) goto out;
        (*count)++;
    }
    ret = 0;
    goto out;
oom:
    fprintf(stderr, "replay: out of memory\n");
out:
    for (i = 0; i < n; i++) {
        free(names[i]); names[i] = NULL;
    }
    free(names); names = NULL;
    if (d) closedir(d);
    d = NULL;
    return ret;
}

int main(int argc, char **argv)
{
    struct stat st;
    size_t count = 0;
    int i;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (i = 1; i < argc; i++) {
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) != 0 : run_file(argv[i]) != 0)
            return 1;
        if (!S_ISDIR(st.st_mode)) count++;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    printf("replay: %zu inputs ran\n", count);
    return 0;
}
