/* name.c - name normalisation and storage keys. */
#include "name.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdio.h>
#include <string.h>

#include "crypto.h"
#include "encoding.h"

/* The input as it may appear inside an error message: printable ASCII kept,
 * other bytes as \xNN, cut to about 80 bytes so the message stays readable. */
static const char *show(const char *name, size_t len, char *buf, size_t size)
{
    size_t i, o = 0;
    for (i = 0; i < len && o + 8 < size; i++) {
        unsigned char c = (unsigned char)name[i];
        if (o > 80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            buf[o++] = (char)c;
        } else {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        }
    }
    buf[o] = '\0';
    return buf;
}

static int fail_name(struct cm_result *res, const char *name, size_t len, const char *why)
{
    char shown[128];
    return cm_fail(res, "invalid", "name \"%s\": %s", show(name, len, shown, sizeof shown), why);
}

static int is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* Check one lower-case ASCII label; fills why on failure. */
static int check_label(const char *label, size_t len, char *why, size_t why_size)
{
    size_t i;
    char shown[128];
    if (len == 0) {
        snprintf(why, why_size, "empty label");
        return CM_ERR;
    }
    show(label, len, shown, sizeof shown);
    if (len > 63) {
        snprintf(why, why_size, "label \"%s\" is longer than 63 octets", shown);
        return CM_ERR;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)label[i];
        if (is_ldh(c)) continue;
        if (c == '_')
            snprintf(why, why_size, "label \"%s\" contains '_', which host names may not", shown);
        else if (c == '*')
            snprintf(why, why_size, "'*' is allowed only as the whole leftmost label");
        else if (c >= 0x20 && c < 0x7f)
            snprintf(why, why_size, "label \"%s\" contains '%c' (only letters, digits and '-')",
                     shown, c);
        else
            snprintf(why, why_size,
                     "label \"%s\" contains byte 0x%02x (only letters, digits and '-')", shown, c);
        return CM_ERR;
    }
    if (label[0] == '-' || label[len - 1] == '-') {
        snprintf(why, why_size, "label \"%s\" starts or ends with '-'", shown);
        return CM_ERR;
    }
    /* RFC 5891 4.2.3.1: "??--" is reserved for IDNA ("xn--"); any other such
     * label is no valid host name, and CAs refuse it. */
    if (len >= 4 && label[2] == '-' && label[3] == '-' && !(label[0] == 'x' && label[1] == 'n')) {
        snprintf(why, why_size, "label \"%s\" has \"--\" in the third and fourth positions",
                 shown);
        return CM_ERR;
    }
    return CM_OK;
}

/* An A-label ("xn--...") must decode, and re-encode to itself: otherwise two
 * spellings of one name would get two storage keys. */
static int check_alabel(const char *label, size_t len, char *why, size_t why_size)
{
    char copy[64], shown[128], *uni = NULL, *back = NULL;
    int rc = CM_ERR, irc;
    memcpy(copy, label, len);
    copy[len] = '\0';
    show(label, len, shown, sizeof shown);
    irc = idn2_to_unicode_8z8z(copy, &uni, 0);
    if (irc != IDN2_OK) {
        snprintf(why, why_size, "label \"%s\" is not a valid A-label: %s", shown,
                 idn2_strerror(irc));
        goto out;
    }
    irc = idn2_to_ascii_8z(uni, &back, IDN2_NONTRANSITIONAL);
    if (irc != IDN2_OK || strcmp(back, copy) != 0) {
        snprintf(why, why_size, "label \"%s\" is not a valid A-label: %s", shown,
                 irc != IDN2_OK ? idn2_strerror(irc) : "it does not round-trip");
        goto out;
    }
    rc = CM_OK;
out:
    idn2_free(uni); uni = NULL;
    idn2_free(back); back = NULL;
    return rc;
}

static int all_digits(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

int cm_name_normalize(const char *name, size_t len, char out[CM_NAME_BUF],
                      enum cm_name_kind *kind, struct cm_result *res)
{
    char buf[CM_NAME_INPUT_MAX + 1], why[256];
    char *host, *ascii = NULL;
    const char *label;
    unsigned char addr[16];
    size_t hlen, i, prefix;
    int wildcard = 0, non_ascii = 0, rc = CM_ERR, irc;
    enum cm_name_kind k;

    out[0] = '\0';
    if (len == 0) return fail_name(res, name, len, "the name is empty");
    if (len > CM_NAME_INPUT_MAX) return fail_name(res, name, len, "longer than 1024 bytes");
    if (memchr(name, '\0', len)) return fail_name(res, name, len, "contains a NUL byte");
    memcpy(buf, name, len);
    buf[len] = '\0';

    /* IP addresses first, exactly as written: "1.2.3.4." is not an address. */
    if (strchr(buf, ':')) {
        if (inet_pton(AF_INET6, buf, addr) != 1)
            return fail_name(res, name, len, "contains ':' but is not an IPv6 address");
        if (!inet_ntop(AF_INET6, addr, out, CM_NAME_BUF))
            return fail_name(res, name, len, "cannot format the IPv6 address");
        if (kind) *kind = CM_NAME_IPV6;
        return CM_OK;
    }
    if (inet_pton(AF_INET, buf, addr) == 1) {
        if (!inet_ntop(AF_INET, addr, out, CM_NAME_BUF))
            return fail_name(res, name, len, "cannot format the IPv4 address");
        if (kind) *kind = CM_NAME_IPV4;
        return CM_OK;
    }

    /* One trailing dot: the absolute form names the same host. */
    hlen = len;
    if (buf[hlen - 1] == '.') buf[--hlen] = '\0';
    if (hlen == 0) return fail_name(res, name, len, "the name is only a dot");

    host = buf;
    if (hlen >= 2 && host[0] == '*' && host[1] == '.') {
        wildcard = 1;
        host += 2;
        hlen -= 2;
    } else if (hlen == 1 && host[0] == '*') {
        return fail_name(res, name, len, "a wildcard needs a domain after \"*.\"");
    }
    if (memchr(host, '*', hlen))
        return fail_name(res, name, len, "'*' is allowed only as the whole leftmost label");

    for (i = 0; i < hlen; i++)
        if ((unsigned char)host[i] >= 0x80) non_ascii = 1;
    if (non_ascii) {
        /* U-labels to A-labels; this also case-folds and NFC-normalises. */
        irc = idn2_to_ascii_8z(host, &ascii, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
        if (irc != IDN2_OK) {
            snprintf(why, sizeof why, "not a valid internationalised name: %s",
                     idn2_strerror(irc));
            fail_name(res, name, len, why);
            goto out;
        }
        hlen = strlen(ascii);
        if (hlen > CM_NAME_MAX) {
            fail_name(res, name, len, "longer than 253 octets once converted to A-labels");
            goto out;
        }
        memcpy(host, ascii, hlen + 1);
    }
    for (i = 0; i < hlen; i++)
        if (host[i] >= 'A' && host[i] <= 'Z') host[i] = (char)(host[i] - 'A' + 'a');

    prefix = wildcard ? 2 : 0;
    if (hlen + prefix > CM_NAME_MAX) {
        fail_name(res, name, len, "longer than 253 octets");
        goto out;
    }
    label = host;
    for (;;) {
        const char *dot = memchr(label, '.', hlen - (size_t)(label - host));
        size_t llen = dot ? (size_t)(dot - label) : hlen - (size_t)(label - host);
        if (check_label(label, llen, why, sizeof why) != CM_OK) {
            fail_name(res, name, len, why);
            goto out;
        }
        if (llen >= 4 && memcmp(label, "xn--", 4) == 0 &&
            check_alabel(label, llen, why, sizeof why) != CM_OK) {
            fail_name(res, name, len, why);
            goto out;
        }
        if (!dot) {
            /* RFC 3696 section 2: a top-level label is never all digits.
             * Refusing those keeps "1.2.3.04" or "1.2.3.4." from passing as
             * host names that look like, but are not, IP addresses. */
            if (all_digits(label, llen)) {
                fail_name(res, name, len,
                          "the last label is all digits (an IP address is written "
                          "without a trailing dot or leading zeros)");
                goto out;
            }
            break;
        }
        label = dot + 1;
    }
    k = wildcard ? CM_NAME_WILDCARD : CM_NAME_DNS;
    /* hlen + prefix <= 253 was checked above, so this fits CM_NAME_BUF. */
    memcpy(out, "*.", prefix);
    memcpy(out + prefix, host, hlen + 1);
    if (kind) *kind = k;
    rc = CM_OK;
out:
    idn2_free(ascii); ascii = NULL;
    if (rc != CM_OK) out[0] = '\0';
    return rc;
}

int cm_name_storage_key(const char *name, size_t len, char out[CM_NAME_BUF],
                        struct cm_result *res)
{
    /* "wildcard_" makes a key up to 8 bytes longer than its name. */
    char norm[CM_NAME_BUF], probe[CM_NAME_BUF], canon[CM_NAME_BUF], key[CM_NAME_BUF + 16];
    unsigned char addr[16], md[CM_SHA256_LEN];
    char hex[2 * CM_SHA256_LEN + 1];
    enum cm_name_kind kind = CM_NAME_DNS;
    size_t i, klen;

    out[0] = '\0';
    if (cm_name_normalize(name, len, norm, &kind, res) != CM_OK) return CM_ERR;
    switch (kind) {
    case CM_NAME_IPV6:
        /* ':' cannot appear in a path component on every system, and Caddy
         * (certmagic's Safe) writes it as '-': keep its layout. */
        for (i = 0; norm[i]; i++) key[i] = norm[i] == ':' ? '-' : norm[i];
        key[i] = '\0';
        break;
    case CM_NAME_WILDCARD:
        /* No host name contains '_', so "wildcard_" cannot collide. */
        snprintf(key, sizeof key, "wildcard_%s", norm + 1);
        break;
    case CM_NAME_DNS:
        /* The IPv6 mapping above is unambiguous only if no host name spells
         * an IPv6 key.  Such a name is a single label made of hex groups and
         * hyphens ("2001-db8--1", "cafe--1"; canonical IPv6 text with '.' in
         * it always starts with "::", i.e. a label starting with '-').  It is
         * no real host name, so it is refused rather than given a key that
         * Caddy would read as the address. */
        if (!strchr(norm, '.') && strchr(norm, '-')) {
            for (i = 0; norm[i]; i++) probe[i] = norm[i] == '-' ? ':' : norm[i];
            probe[i] = '\0';
            if (inet_pton(AF_INET6, probe, addr) == 1 &&
                inet_ntop(AF_INET6, addr, canon, sizeof canon) && strcmp(canon, probe) == 0)
                return cm_fail(res, "invalid",
                               "name \"%s\": would share its storage key with the IPv6 "
                               "address %s",
                               norm, canon);
        }
        /* fall through */
    case CM_NAME_IPV4:
        /* Host names never end in an all-digit label (see cm_name_normalize),
         * so an IPv4 address and a host name cannot share a key. */
        snprintf(key, sizeof key, "%s", norm);
        break;
    }
    klen = strlen(key);
    if (klen > CM_NAME_KEY_MAX) {
        /* Too long for one path component with its suffixes: hash it.  '_'
         * again keeps these apart from every host-name key. */
        if (cm_crypto_sha256(norm, strlen(norm), md, res) != CM_OK) return CM_ERR;
        cm_hex_encode(md, sizeof md, hex);
        snprintf(out, CM_NAME_BUF, "h_%.32s", hex);
    } else {
        memcpy(out, key, klen + 1);
    }
    return CM_OK;
}
