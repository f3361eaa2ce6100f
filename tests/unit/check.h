/* check.h - the tiny assertion kit of the C unit tests.
 * A test binary ends with CHECK_DONE(), which prints "N passed, N failed"
 * and returns non-zero when anything failed. */
#ifndef CM_CHECK_H
#define CM_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            check_passed++;                                                    \
        } else {                                                               \
            check_failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *check_a_ = (a), *check_b_ = (b);                           \
        if (check_a_ && check_b_ && strcmp(check_a_, check_b_) == 0) {         \
            check_passed++;                                                    \
        } else {                                                               \
            check_failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n",     \
                    __FILE__, __LINE__, check_a_ ? check_a_ : "(null)",        \
                    check_b_ ? check_b_ : "(null)");                           \
        }                                                                      \
    } while (0)

#define CHECK_DONE()                                                           \
    (printf("%d passed, %d failed\n", check_passed, check_failed),             \
     check_failed ? 1 : 0)


/* A committed fixture file, NUL-terminated after its len bytes:
 * $CERTMAINT_SOURCE_DIR/tests/fixtures/<dir>/<name> (the source tree's
 * parent of build/ when unset).  A fixture that cannot be read ends the test
 * binary with status 2: a test without its input proves nothing.  Leaked on
 * purpose: the binary exits soon after. */
struct blob {
    char *data;
    size_t len;
};

static inline struct blob check_fixture(const char *dir, const char *name)
{
    char path[1024];
    const char *src = getenv("CERTMAINT_SOURCE_DIR");
    struct blob b = {NULL, 0};
    FILE *fp;
    long n;
    snprintf(path, sizeof path, "%s/tests/fixtures/%s/%s", src ? src : "..", dir, name);
    if (!(fp = fopen(path, "rb"))) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        exit(2);
    }
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) exit(2);
    if (!(b.data = malloc((size_t)n + 1)) || fread(b.data, 1, (size_t)n, fp) != (size_t)n) exit(2);
    b.data[n] = '\0';
    b.len = (size_t)n;
    fclose(fp);
    return b;
}

/* m[0..len) = orig[0..len) with one to three bits flipped at random places
 * (pick: 8 random bytes), for tests that mutate a good input. */
static inline void check_mutate(unsigned char *m, const unsigned char *orig, size_t len,
                                const unsigned char pick[8])
{
    int k, changes = 1 + pick[0] % 3;
    memcpy(m, orig, len);
    for (k = 0; k < changes; k++) {
        size_t at = ((size_t)pick[1 + 2 * k] << 8 | pick[2 + 2 * k]) % len;
        m[at] ^= (unsigned char)(1u << (pick[7] % 8)) | (unsigned char)(k + 1);
    }
}

#endif
