/* test_renewal.c - the default renewal rule (core/renewal.c): the cases of
 * spec/unit/renewal_spec.lua, straight against the C. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "renewal.h"

#define DAY 86400.0
#define HOUR 3600.0
#define T0 1767225600.0 /* 2026-01-01T00:00:00Z */
#define SERIAL "0a1b2c3d4e5f60718293a4b5c6d7e8f9"

static double at_of(double life, double ari, const struct cm_renewal_opts *o,
                    enum cm_renewal_layer *layer)
{
    return cm_renewal_at(T0, T0 + life, ari, o, layer);
}

static int due_at(double life, double ari, const struct cm_renewal_opts *o, double now,
                  enum cm_renewal_layer *reason)
{
    return cm_renewal_due(T0, T0 + life, ari, o, now, reason, NULL);
}

static void test_fnv(void)
{
    CHECK(cm_fnv1a32("", 0) == 0x811c9dc5u);
    CHECK(cm_fnv1a32("a", 1) == 0xe40c292cu);
    CHECK(cm_fnv1a32("foobar", 6) == 0xbf9cf968u);
    CHECK(cm_fnv1a32("a\0b", 3) == 0x10f3abd2u);
}

static void test_ratio(void)
{
    struct cm_renewal_opts o;
    enum cm_renewal_layer l = CM_RENEWAL_ARI, r = CM_RENEWAL_ARI;
    double at = at_of(90 * DAY, NAN, NULL, &l), when = 0;

    CHECK(at == T0 + 60 * DAY && l == CM_RENEWAL_WINDOW);
    CHECK(!due_at(90 * DAY, NAN, NULL, at, &r));
    CHECK(cm_renewal_due(T0, T0 + 90 * DAY, NAN, NULL, at + 1, &r, &when) == 1);
    CHECK(r == CM_RENEWAL_WINDOW && when == at);
    /* 1/2 under ten days, 1/3 at ten */
    CHECK(at_of(6 * DAY, NAN, NULL, &l) == T0 + 3 * DAY && l == CM_RENEWAL_WINDOW);
    {
        double d = at_of(10 * DAY, NAN, NULL, NULL) - (T0 + 10 * DAY * 2 / 3);
        CHECK(d < 1e-6 && d > -1e-6);
    }
    cm_renewal_opts_init(&o);
    o.ratio = 0.25;
    CHECK(at_of(90 * DAY, NAN, &o, NULL) == T0 + 90 * DAY - 0.25 * 90 * DAY);
    o.ratio = 0.2;
    CHECK(at_of(6 * DAY, NAN, &o, NULL) == T0 + 6 * DAY - 0.2 * 6 * DAY);
}

static void test_ari(void)
{
    struct cm_renewal_opts o;
    enum cm_renewal_layer l = CM_RENEWAL_WINDOW, r = CM_RENEWAL_WINDOW;
    double s = T0 + 50 * DAY, e = T0 + 52 * DAY;
    double p = cm_renewal_ari_point(s, e, SERIAL, strlen(SERIAL));
    int buckets[10] = {0}, i;

    CHECK(p >= s && p < e && p == (double)(int64_t)p);
    CHECK(at_of(90 * DAY, p, NULL, &l) == p && l == CM_RENEWAL_ARI);
    CHECK(!due_at(90 * DAY, p, NULL, p, &r));
    CHECK(due_at(90 * DAY, p, NULL, p + 1, &r) && r == CM_RENEWAL_ARI);
    /* case and separators do not count; no serial or no hex digit: the start */
    CHECK(cm_renewal_ari_point(s, e, "0A:1B:2C", 8) == cm_renewal_ari_point(s, e, "0a1b2c", 6));
    CHECK(cm_renewal_ari_point(s, e, NULL, 0) == s);
    CHECK(cm_renewal_ari_point(s, e, "::", 2) == s);
    /* the fraction is the hash over 2^32 */
    CHECK(cm_renewal_ari_point(0, 4294967296.0, "0a", 2) == (double)cm_fnv1a32("0a", 2));
    /* unusable windows */
    CHECK(isnan(cm_renewal_ari_point(e, s, "0a", 2)));
    CHECK(isnan(cm_renewal_ari_point(NAN, e, "0a", 2)));
    CHECK(isnan(cm_renewal_ari_point(s, NAN, "0a", 2)));
    /* a fleet spreads */
    for (i = 1; i <= 2000; i++) {
        char serial[40];
        double q;
        snprintf(serial, sizeof serial, "%032x", i * 7919);
        q = cm_renewal_ari_point(s, e, serial, strlen(serial));
        CHECK(q >= s && q < e);
        buckets[(int)((q - s) / (e - s) * 10)]++;
    }
    for (i = 0; i < 10; i++) CHECK(buckets[i] > 120);
    /* a later window replaces the default ratio, not an explicit one */
    p = cm_renewal_ari_point(T0 + 70 * DAY, T0 + 72 * DAY, SERIAL, strlen(SERIAL));
    CHECK(!due_at(90 * DAY, p, NULL, T0 + 61 * DAY, &r));
    cm_renewal_opts_init(&o);
    o.ratio = 1.0 / 3.0;
    CHECK(due_at(90 * DAY, p, &o, T0 + 61 * DAY, &r) && r == CM_RENEWAL_WINDOW);
    CHECK(at_of(90 * DAY, p, &o, &l) == T0 + 60 * DAY && l == CM_RENEWAL_WINDOW);
    o.explicit_ratio = 0;
    CHECK(!due_at(90 * DAY, p, &o, T0 + 61 * DAY, &r));
    /* the emergency floor */
    p = cm_renewal_ari_point(T0 + 89 * DAY, T0 + 89 * DAY + 12 * HOUR, SERIAL, strlen(SERIAL));
    CHECK(at_of(90 * DAY, p, NULL, &l) == T0 + 90 * DAY - 90 * DAY / 20 && l == CM_RENEWAL_EMERGENCY);
    CHECK(due_at(90 * DAY, p, NULL, T0 + 90 * DAY - 90 * DAY / 20 + 1, &r) &&
          r == CM_RENEWAL_EMERGENCY);
    /* a window past expiry: the floor; once expired, "expired" */
    p = cm_renewal_ari_point(T0 + 100 * DAY, T0 + 101 * DAY, SERIAL, strlen(SERIAL));
    CHECK(at_of(90 * DAY, p, NULL, &l) == T0 + 90 * DAY - 4.5 * DAY && l == CM_RENEWAL_EMERGENCY);
    CHECK(due_at(90 * DAY, p, NULL, T0 + 91 * DAY, &r) && r == CM_RENEWAL_EXPIRED);
    /* the first layer in order that passed, not the earliest: a late ARI
     * point passed after the floor gives "ari" */
    p = T0 + 89 * DAY;
    CHECK(due_at(90 * DAY, p, NULL, T0 + 89.5 * DAY, &r) && r == CM_RENEWAL_ARI);
}

static void test_guard(void)
{
    struct cm_renewal_opts o;
    enum cm_renewal_layer l = CM_RENEWAL_ARI, r = CM_RENEWAL_ARI;
    cm_renewal_opts_init(&o);
    o.ratio = 0.001;
    CHECK(at_of(90 * DAY, NAN, &o, &l) == T0 + 90 * DAY - 90 * DAY / 50 && l == CM_RENEWAL_EXPIRING);
    cm_renewal_opts_init(&o);
    o.check_interval = DAY;
    CHECK(at_of(12 * DAY, NAN, &o, &l) == T0 + 7 * DAY && l == CM_RENEWAL_EXPIRING);
    CHECK(at_of(12 * DAY, NAN, NULL, &l) == T0 + 8 * DAY && l == CM_RENEWAL_WINDOW);
    /* never in the first half of the life */
    cm_renewal_opts_init(&o);
    o.ratio = 0.1;
    CHECK(at_of(30, NAN, &o, &l) == T0 + 15 && l == CM_RENEWAL_EXPIRING);
    CHECK(!due_at(30, NAN, &o, T0 + 1, &r));
    CHECK(due_at(30, NAN, &o, T0 + 16, &r) && r == CM_RENEWAL_EXPIRING);
    CHECK(at_of(30, NAN, NULL, &l) == T0 + 15 && l == CM_RENEWAL_WINDOW);
    /* the guard on its own, as status --check asks it: lifetime / 50, or
     * 5 check intervals (default 600 s), at most half the lifetime */
    CHECK(cm_renewal_guard(T0, T0 + 90 * DAY, NAN) == 90 * DAY / 50);
    CHECK(cm_renewal_guard(T0, T0 + 12 * DAY, DAY) == 5 * DAY);
    CHECK(cm_renewal_guard(T0, T0 + 3600, NAN) == 1800);
    CHECK(cm_renewal_guard(T0, T0 + 7200, NAN) == 3000);
    CHECK(cm_renewal_guard(T0 + 10, T0, NAN) == 0); /* no lifetime: no guard */
}

static void test_edges(void)
{
    struct cm_renewal_opts o;
    struct cm_result res;
    enum cm_renewal_layer r = CM_RENEWAL_ARI;
    /* zero and negative lifetimes divide by nothing */
    CHECK(cm_renewal_at(T0, T0, NAN, NULL, NULL) == T0);
    CHECK(cm_renewal_due(T0, T0, NAN, NULL, T0 + 1, &r, NULL) && r == CM_RENEWAL_EXPIRED);
    CHECK(cm_renewal_due(T0 + 10, T0, NAN, NULL, T0 + 1, &r, NULL) && r == CM_RENEWAL_EXPIRED);
    CHECK(cm_renewal_due(T0, T0 + 90 * DAY, NAN, NULL, T0 + 90 * DAY, &r, NULL) &&
          r == CM_RENEWAL_WINDOW);
    /* options */
    cm_renewal_opts_init(&o);
    CHECK(cm_renewal_opts_check(&o, &res) == CM_OK);
    o.ratio = 1;
    CHECK(cm_renewal_opts_check(&o, &res) == CM_ERR && strcmp(res.code, "invalid") == 0);
    o.ratio = 0;
    CHECK(cm_renewal_opts_check(&o, &res) == CM_ERR);
    o.ratio = 0.5;
    o.check_interval = -1;
    CHECK(cm_renewal_opts_check(&o, &res) == CM_ERR && strstr(res.message, "check_interval"));
    o.check_interval = 0;
    o.explicit_ratio = 2;
    CHECK(cm_renewal_opts_check(&o, &res) == CM_ERR);
    CHECK_STR(cm_renewal_layer_name(CM_RENEWAL_ARI), "ari");
    CHECK_STR(cm_renewal_layer_name(CM_RENEWAL_EMERGENCY), "emergency");
    CHECK_STR(cm_renewal_layer_name(CM_RENEWAL_WINDOW), "window");
    CHECK_STR(cm_renewal_layer_name(CM_RENEWAL_EXPIRING), "expiring");
    CHECK_STR(cm_renewal_layer_name(CM_RENEWAL_EXPIRED), "expired");
}

int main(void)
{
    test_fnv();
    test_ratio();
    test_ari();
    test_guard();
    test_edges();
    return CHECK_DONE();
}
