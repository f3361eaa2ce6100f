/* der.c - the strict DER reader of der.h. */
#include "der.h"

struct cm_der cm_der_init(const unsigned char *buf, size_t len)
{
    struct cm_der d;
    d.p = buf;
    d.end = buf ? buf + len : buf;
    return d;
}

struct cm_der cm_der_inside(const struct cm_der_elem *e)
{
    return cm_der_init(e->body, e->len);
}

int cm_der_done(const struct cm_der *d)
{
    return d->p == d->end;
}

int cm_der_peek(const struct cm_der *d)
{
    return d->p < d->end ? d->p[0] : -1;
}

int cm_der_next(struct cm_der *d, struct cm_der_elem *e)
{
    const unsigned char *p = d->p;
    size_t avail = (size_t)(d->end - p), len, i, nbytes;

    if (avail < 2) return CM_ERR;
    /* 0x1f in the low bits: a high tag number, never used in certificates;
     * tag 0 is end-of-contents, which only indefinite lengths use. */
    if ((p[0] & 0x1f) == 0x1f || p[0] == 0) return CM_ERR;
    if (p[1] < 0x80) {
        len = p[1];
        p += 2;
        avail -= 2;
    } else {
        /* 0x80 is an indefinite length (BER), 0xff is reserved; a
         * certificate is at most CM_X509_MAX_INPUT, so 3 length bytes do. */
        nbytes = p[1] & 0x7f;
        if (nbytes == 0 || nbytes > 3 || avail - 2 < nbytes) return CM_ERR;
        if (p[2] == 0) return CM_ERR; /* a leading zero byte: not minimal */
        for (len = 0, i = 0; i < nbytes; i++) len = (len << 8) | p[2 + i];
        if (len < 0x80) return CM_ERR; /* the short form was required */
        p += 2 + nbytes;
        avail -= 2 + nbytes;
    }
    if (len > avail) return CM_ERR;
    e->tag = d->p[0];
    e->body = p;
    e->len = len;
    d->p = p + len;
    return CM_OK;
}

int cm_der_expect(struct cm_der *d, unsigned tag, struct cm_der_elem *e)
{
    if (cm_der_peek(d) != (int)tag) return CM_ERR;
    return cm_der_next(d, e);
}

int cm_der_optional(struct cm_der *d, unsigned tag, struct cm_der_elem *e, int *present)
{
    *present = 0;
    if (cm_der_peek(d) != (int)tag) return CM_OK;
    if (cm_der_next(d, e) != CM_OK) return CM_ERR;
    *present = 1;
    return CM_OK;
}

int cm_der_integer_ok(const unsigned char *body, size_t len)
{
    if (len == 0) return CM_ERR;
    if (len > 1 && ((body[0] == 0x00 && !(body[1] & 0x80)) ||
                    (body[0] == 0xff && (body[1] & 0x80))))
        return CM_ERR;
    return CM_OK;
}

int cm_der_oid_ok(const unsigned char *body, size_t len)
{
    size_t i;
    if (len == 0 || (body[len - 1] & 0x80)) return CM_ERR;
    /* 0x80 opening a sub-identifier is a redundant leading zero */
    for (i = 0; i < len; i++)
        if (body[i] == 0x80 && (i == 0 || !(body[i - 1] & 0x80))) return CM_ERR;
    return CM_OK;
}

int cm_der_bit_string_ok(const unsigned char *body, size_t len)
{
    unsigned unused;
    if (len == 0) return CM_ERR;
    unused = body[0];
    if (unused > 7 || (len == 1 && unused != 0)) return CM_ERR;
    /* DER: the unused bits of the last octet are zero */
    if (unused && (body[len - 1] & ((1u << unused) - 1))) return CM_ERR;
    return CM_OK;
}

/* Two decimal digits at p, or -1. */
static int two_digits(const unsigned char *p)
{
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9') return -1;
    return (p[0] - '0') * 10 + (p[1] - '0');
}

static int leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil), for 0 <= y <= 9999. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int cm_der_time(const struct cm_der_elem *e, int64_t *unix_seconds)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const unsigned char *p = e->body;
    int64_t year;
    int f[5], i, hi, lo, md;

    if (e->tag == CM_DER_UTCTIME && e->len == 13) {
        if ((lo = two_digits(p)) < 0) return CM_ERR;
        year = lo < 50 ? 2000 + lo : 1900 + lo;
        p += 2;
    } else if (e->tag == CM_DER_GENERALIZEDTIME && e->len == 15) {
        if ((hi = two_digits(p)) < 0 || (lo = two_digits(p + 2)) < 0) return CM_ERR;
        year = hi * 100 + lo;
        p += 4;
    } else {
        return CM_ERR;
    }
    for (i = 0; i < 5; i++, p += 2)
        if ((f[i] = two_digits(p)) < 0) return CM_ERR;
    if (p[0] != 'Z') return CM_ERR;
    /* f: month, day, hour, minute, second */
    if (f[0] < 1 || f[0] > 12) return CM_ERR;
    md = mdays[f[0] - 1] + (f[0] == 2 && leap(year));
    if (f[1] < 1 || f[1] > md || f[2] > 23 || f[3] > 59 || f[4] > 59) return CM_ERR;
    *unix_seconds = days_from_civil(year, f[0], f[1]) * 86400 + f[2] * 3600 + f[3] * 60 + f[4];
    return CM_OK;
}
