/* renewal.c - the default renewal rule (see renewal.h; the reasoning behind
 * each layer is in lua/certmaint/renewal.lua's header). */
#include "renewal.h"

#include <math.h>
#include <stdint.h>

/* floor() of a non-negative finite x without libm (the core does not link
 * it): below 2^53 every double with a fraction converts exactly to int64. */
static double floor_nonneg(double x)
{
    return x < 9007199254740992.0 ? (double)(int64_t)x : x;
}

void cm_renewal_opts_init(struct cm_renewal_opts *o)
{
    o->ratio = NAN;
    o->explicit_ratio = -1;
    o->check_interval = NAN;
}

int cm_renewal_opts_check(const struct cm_renewal_opts *o, struct cm_result *res)
{
    if (!isnan(o->ratio) && !(o->ratio > 0 && o->ratio < 1))
        return cm_fail(res, "invalid", "renewal: ratio must be a number in (0, 1)");
    if (!isnan(o->check_interval) && !(o->check_interval >= 0))
        return cm_fail(res, "invalid", "renewal: check_interval must be a non-negative number");
    if (o->explicit_ratio < -1 || o->explicit_ratio > 1)
        return cm_fail(res, "invalid", "renewal: explicit_ratio must be 1, 0 or -1");
    return CM_OK;
}

const char *cm_renewal_layer_name(enum cm_renewal_layer layer)
{
    switch (layer) {
    case CM_RENEWAL_ARI: return "ari";
    case CM_RENEWAL_EMERGENCY: return "emergency";
    case CM_RENEWAL_WINDOW: return "window";
    case CM_RENEWAL_EXPIRING: return "expiring";
    case CM_RENEWAL_EXPIRED: return "expired";
    }
    return "?";
}

uint32_t cm_fnv1a32(const void *data, size_t len)
{
    return cm_fnv1a32_update(CM_FNV1A32_BASIS, data, len);
}

uint32_t cm_fnv1a32_update(uint32_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static int hexdigit_lower(unsigned char ch, unsigned char *out)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')) {
        *out = ch;
        return 1;
    }
    if (ch >= 'A' && ch <= 'F') {
        *out = (unsigned char)(ch - 'A' + 'a');
        return 1;
    }
    return 0;
}

double cm_renewal_ari_point(double start, double end, const char *serial, size_t serial_len)
{
    uint32_t h = 2166136261u;
    size_t i, digits = 0;
    if (isnan(start) || isnan(end) || end < start) return NAN;
    if (!serial) return start;
    /* case and separators do not change the serial's identity: hash the
     * normalised serial without building it */
    for (i = 0; i < serial_len; i++) {
        unsigned char d;
        if (!hexdigit_lower((unsigned char)serial[i], &d)) continue;
        h ^= d;
        h *= 16777619u;
        digits++;
    }
    if (digits == 0) return start;
    return start + floor_nonneg((double)h / 4294967296.0 * (end - start));
}

struct layer_time {
    enum cm_renewal_layer layer;
    double at;
};

/* Every layer's time, in the order the layers are consulted; returns how many. */
double cm_renewal_guard(double not_before, double not_after, double check_interval)
{
    double lifetime = not_after - not_before, guard, cap;
    double interval = !isnan(check_interval) ? check_interval : CM_RENEWAL_DEFAULT_CHECK_INTERVAL;
    if (!(lifetime > 0)) lifetime = 0;
    guard = lifetime * CM_RENEWAL_IMMINENT_RATIO;
    if (CM_RENEWAL_IMMINENT_CHECKS * interval > guard) guard = CM_RENEWAL_IMMINENT_CHECKS * interval;
    cap = lifetime * CM_RENEWAL_IMMINENT_CAP;
    return guard < cap ? guard : cap;
}

static size_t layers(double nb, double na, double ari, const struct cm_renewal_opts *o,
                     struct layer_time out[4])
{
    struct cm_renewal_opts def;
    double lifetime = na - nb, ratio, interval;
    int explicit;
    size_t n = 0;

    if (!o) {
        cm_renewal_opts_init(&def);
        o = &def;
    }
    if (!(lifetime > 0)) lifetime = 0;
    explicit = o->explicit_ratio >= 0 ? o->explicit_ratio : !isnan(o->ratio);
    ratio = !isnan(o->ratio) ? o->ratio
            : lifetime < CM_RENEWAL_SHORT_LIVED ? CM_RENEWAL_SHORT_LIVED_RATIO
                                                : CM_RENEWAL_DEFAULT_RATIO;
    interval = !isnan(o->check_interval) ? o->check_interval : CM_RENEWAL_DEFAULT_CHECK_INTERVAL;
    if (!isnan(ari)) {
        out[n].layer = CM_RENEWAL_ARI;
        out[n++].at = ari;
        out[n].layer = CM_RENEWAL_EMERGENCY;
        out[n++].at = na - lifetime * CM_RENEWAL_EMERGENCY_RATIO;
    }
    if (isnan(ari) || explicit) {
        out[n].layer = CM_RENEWAL_WINDOW;
        out[n++].at = na - lifetime * ratio;
    }
    out[n].layer = CM_RENEWAL_EXPIRING;
    out[n++].at = na - cm_renewal_guard(nb, na, interval);
    return n;
}

double cm_renewal_at(double not_before, double not_after, double ari_point,
                     const struct cm_renewal_opts *o, enum cm_renewal_layer *layer)
{
    struct layer_time l[4];
    size_t n = layers(not_before, not_after, ari_point, o, l), i, best = 0;
    for (i = 1; i < n; i++)
        if (l[i].at < l[best].at) best = i;
    if (layer) *layer = l[best].layer;
    return l[best].at;
}

int cm_renewal_due(double not_before, double not_after, double ari_point,
                   const struct cm_renewal_opts *o, double now,
                   enum cm_renewal_layer *reason, double *renew_at)
{
    struct layer_time l[4];
    size_t n = layers(not_before, not_after, ari_point, o, l), i, best = 0;
    for (i = 1; i < n; i++)
        if (l[i].at < l[best].at) best = i;
    if (renew_at) *renew_at = l[best].at;
    if (now > not_after) {
        if (reason) *reason = CM_RENEWAL_EXPIRED;
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (now > l[i].at) {
            if (reason) *reason = l[i].layer;
            return 1;
        }
    }
    return 0;
}
