/* rfc3339.c - Unix seconds to "YYYY-MM-DDTHH:MM:SSZ" (see rfc3339.h). */
#include "rfc3339.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* Howard Hinnant's civil_from_days: the proleptic Gregorian date of day z
 * (days since 1970-01-01), exact for every z in range; the inverse of
 * rfc3339.lua's days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static char *two(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

size_t cm_rfc3339_iso(double t, char *out)
{
    int64_t s, days, secs, year;
    int month, day;
    char *p = out;

    out[0] = '\0';
    if (!(t >= -CM_RFC3339_LIMIT && t <= CM_RFC3339_LIMIT)) return 0; /* NaN fails both */
    s = (int64_t)floor(t);
    days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
    secs = s - days * 86400;
    civil_from_days(days, &year, &month, &day);
    if (year >= 0 && year <= 9999) {
        int y = (int)year;
        p = two(p, y / 100);
        p = two(p, y % 100);
    } else {
        p += snprintf(p, CM_RFC3339_ISO_MAX, "%lld", (long long)year);
    }
    *p++ = '-';
    p = two(p, month);
    *p++ = '-';
    p = two(p, day);
    *p++ = 'T';
    p = two(p, (int)(secs / 3600));
    *p++ = ':';
    p = two(p, (int)(secs / 60 % 60));
    *p++ = ':';
    p = two(p, (int)(secs % 60));
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}
