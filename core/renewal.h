/* renewal.h - the default renewal rule: when a certificate is renewed.
 *
 * The one implementation of the rule lua/certmaint/renewal.lua documents
 * (layers "ari", "emergency", "window", "expiring", "expired", after
 * certmagic's Config.certNeedsRenewal); renewal.lua delegates to it through
 * core.renew_at / core.needs_renewal / core.ari_point, and the cache's bulk
 * load (cm_cache_add_many) computes renew_at with it.  Pure functions of their
 * inputs: nothing here reads the clock.  Times are Unix seconds as doubles.
 */
#ifndef CM_RENEWAL_H
#define CM_RENEWAL_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

#define CM_RENEWAL_DEFAULT_RATIO (1.0 / 3.0)
#define CM_RENEWAL_SHORT_LIVED_RATIO (1.0 / 2.0)
#define CM_RENEWAL_SHORT_LIVED (10.0 * 86400.0) /* lifetimes under this use 1/2 */
#define CM_RENEWAL_EMERGENCY_RATIO (1.0 / 20.0)
#define CM_RENEWAL_IMMINENT_RATIO (1.0 / 50.0)
#define CM_RENEWAL_IMMINENT_CHECKS 5.0 /* renew passes left before expiry */
#define CM_RENEWAL_IMMINENT_CAP (1.0 / 2.0)
#define CM_RENEWAL_DEFAULT_CHECK_INTERVAL 600.0

/* Which layer decided.  cm_renewal_layer_name gives the Lua spelling. */
enum cm_renewal_layer {
    CM_RENEWAL_ARI,
    CM_RENEWAL_EMERGENCY,
    CM_RENEWAL_WINDOW,
    CM_RENEWAL_EXPIRING,
    CM_RENEWAL_EXPIRED,
};

/* Options of the rule.  Initialise with cm_renewal_opts_init. */
struct cm_renewal_opts {
    double ratio;          /* in (0, 1); NAN = default (1/3, or 1/2 under 10 days) */
    int explicit_ratio;    /* 1 or 0; -1 = "ratio was given" (!isnan(ratio)) */
    double check_interval; /* seconds between renew passes, >= 0; NAN = 600 */
};

/* Every field to its default ("not given"). */
void cm_renewal_opts_init(struct cm_renewal_opts *o);

/* CM_OK when *o is in range; else fails with "invalid" naming the field. */
int cm_renewal_opts_check(const struct cm_renewal_opts *o, struct cm_result *res);

/* "ari", "emergency", "window", "expiring" or "expired". */
const char *cm_renewal_layer_name(enum cm_renewal_layer layer);

/* FNV-1a, 32 bits (Go's hash/fnv New32a; certmagic's fastHash). */
uint32_t cm_fnv1a32(const void *data, size_t len);
/* The same over pieces: h starts at CM_FNV1A32_BASIS, each piece fed in order. */
#define CM_FNV1A32_BASIS 2166136261u
uint32_t cm_fnv1a32_update(uint32_t h, const void *data, size_t len);

/* The point inside the ARI window [start, end] at which a certificate with
 * this serial renews: start + floor(fraction * (end - start)), the fraction
 * being FNV-1a32 of the serial lower-cased with everything but hex digits
 * dropped, over 2^32.  No serial (NULL, or no hex digit in it): start.
 * Returns NAN when the window is unusable (end < start, or a NaN). */
double cm_renewal_ari_point(double start, double end, const char *serial, size_t serial_len);

/* The imminent-expiry guard (the EXPIRING layer): how long before not_after
 * the rule renews whatever the other layers say, max(lifetime / 50,
 * 5 check intervals), at most half the lifetime.  check_interval NAN means
 * the default.  `status --check` calls a certificate inside it "expiring". */
double cm_renewal_guard(double not_before, double not_after, double check_interval);

/* When the rule renews a certificate valid [not_before, not_after], with
 * ari_point (from cm_renewal_ari_point; NAN = no ARI window): the earliest
 * time of the layers that apply, the first layer in the order above on a tie.
 * *layer (may be NULL) gets that layer.  o may be NULL (all defaults) and is
 * assumed to pass cm_renewal_opts_check. */
double cm_renewal_at(double not_before, double not_after, double ari_point,
                     const struct cm_renewal_opts *o, enum cm_renewal_layer *layer);

/* Is renewal due at `now`?  Returns 1 with *reason the first layer (in the
 * order above) whose time is before now -- CM_RENEWAL_EXPIRED once
 * now > not_after -- or 0 (*reason untouched).  Boundaries are strict.
 * *renew_at (may be NULL) gets cm_renewal_at's result.  As cm_renewal_at for
 * the other arguments. */
int cm_renewal_due(double not_before, double not_after, double ari_point,
                   const struct cm_renewal_opts *o, double now,
                   enum cm_renewal_layer *reason, double *renew_at);

#endif
