/* test_name.c - name normalisation and storage keys (DESIGN.md "Storage"). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "name.h"

struct good {
    const char *in;
    const char *norm;
    enum cm_name_kind kind;
    const char *key;
};

static const struct good GOOD[] = {
    {"example.com", "example.com", CM_NAME_DNS, "example.com"},
    {"Example.COM", "example.com", CM_NAME_DNS, "example.com"},
    {"example.com.", "example.com", CM_NAME_DNS, "example.com"},
    {"WWW.Example.Com.", "www.example.com", CM_NAME_DNS, "www.example.com"},
    {"localhost", "localhost", CM_NAME_DNS, "localhost"},
    {"a-b.c-d.example", "a-b.c-d.example", CM_NAME_DNS, "a-b.c-d.example"},
    {"123.example.com", "123.example.com", CM_NAME_DNS, "123.example.com"},
    {"xn--bcher-kva.example", "xn--bcher-kva.example", CM_NAME_DNS, "xn--bcher-kva.example"},
    /* IDN: U-labels become A-labels, upper-case folded first. */
    {"b\xc3\xbc" "cher.example", "xn--bcher-kva.example", CM_NAME_DNS, "xn--bcher-kva.example"},
    {"B\xc3\x9c" "CHER.Example.", "xn--bcher-kva.example", CM_NAME_DNS, "xn--bcher-kva.example"},
    {"\xe4\xbe\x8b\xe3\x81\x88.\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88", "xn--r8jz45g.xn--zckzah",
     CM_NAME_DNS, "xn--r8jz45g.xn--zckzah"},
    /* Non-transitional: German sharp s stays (not "ss"). */
    {"fa\xc3\x9f.de", "xn--fa-hia.de", CM_NAME_DNS, "xn--fa-hia.de"},
    /* Wildcards: only the whole leftmost label. */
    {"*.example.com", "*.example.com", CM_NAME_WILDCARD, "wildcard_.example.com"},
    {"*.EXAMPLE.com.", "*.example.com", CM_NAME_WILDCARD, "wildcard_.example.com"},
    {"*.b\xc3\xbc" "cher.example", "*.xn--bcher-kva.example", CM_NAME_WILDCARD,
     "wildcard_.xn--bcher-kva.example"},
    {"*.localhost", "*.localhost", CM_NAME_WILDCARD, "wildcard_.localhost"},
    /* IP addresses in canonical form. */
    {"192.0.2.1", "192.0.2.1", CM_NAME_IPV4, "192.0.2.1"},
    {"127.0.0.1", "127.0.0.1", CM_NAME_IPV4, "127.0.0.1"},
    {"2001:DB8:0:0:0:0:0:1", "2001:db8::1", CM_NAME_IPV6, "2001-db8--1"},
    {"2001:db8::1", "2001:db8::1", CM_NAME_IPV6, "2001-db8--1"},
    {"::1", "::1", CM_NAME_IPV6, "--1"},
    {"0:0:0:0:0:0:0:1", "::1", CM_NAME_IPV6, "--1"},
    {"::", "::", CM_NAME_IPV6, "--"},
    {"fe80:0:0:0:1:0:0:1", "fe80::1:0:0:1", CM_NAME_IPV6, "fe80--1-0-0-1"},
    {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6", CM_NAME_IPV6, "2001-db8-1-2-3-4-5-6"},
    {"::ffff:192.0.2.1", "::ffff:192.0.2.1", CM_NAME_IPV6, "--ffff-192.0.2.1"},
};

struct bad {
    const char *in;
    const char *why; /* a piece of the message */
};

static const struct bad BAD[] = {
    {"", "empty"},
    {".", "only a dot"},
    {"example.com..", "empty label"},
    {".example.com", "empty label"},
    {"a..example.com", "empty label"},
    {"a_b.example.com", "'_'"},
    {"_acme-challenge.example.com", "'_'"},
    {"ex ample.com", "' '"},
    {"exa/mple.com", "'/'"},
    {"-example.com", "starts or ends with '-'"},
    {"example-.com", "starts or ends with '-'"},
    {"ab--cd.example.com", "third and fourth"},
    {"xn--zz.example", "not a valid A-label"},
    {"*", "needs a domain"},
    {"*.", "needs a domain"},
    {"*.*.example.com", "whole leftmost label"},
    {"a.*.example.com", "whole leftmost label"},
    {"*a.example.com", "whole leftmost label"},
    {"a*.example.com", "whole leftmost label"},
    {"example.*", "whole leftmost label"},
    {"**.example.com", "whole leftmost label"},
    {"1.2.3.4.", "all digits"},
    {"1.2.3.04", "all digits"},
    {"256.1.1.1", "all digits"},
    {"example.123", "all digits"},
    {"fe80::1%eth0", "not an IPv6 address"},
    {"[::1]", "not an IPv6 address"},
    {"1:2:3:4:5:6:7:8:9", "not an IPv6 address"},
    {"example.com:443", "not an IPv6 address"},
    {"\xff\xfe.example", "internationalised"},
};

static void test_good(void)
{
    size_t i;
    for (i = 0; i < sizeof GOOD / sizeof GOOD[0]; i++) {
        char out[CM_NAME_BUF], key[CM_NAME_BUF];
        enum cm_name_kind kind = (enum cm_name_kind)-1;
        struct cm_result res;
        int rc = cm_name_normalize(GOOD[i].in, strlen(GOOD[i].in), out, &kind, &res);
        if (rc != CM_OK) fprintf(stderr, "  %s: %s\n", GOOD[i].in, res.message);
        CHECK(rc == CM_OK);
        CHECK_STR(out, GOOD[i].norm);
        CHECK(kind == GOOD[i].kind);
        CHECK(cm_name_storage_key(GOOD[i].in, strlen(GOOD[i].in), key, &res) == CM_OK);
        CHECK_STR(key, GOOD[i].key);
        CHECK(strchr(key, ':') == NULL && strchr(key, '/') == NULL && strchr(key, '*') == NULL);
        /* Normalising is idempotent. */
        CHECK(cm_name_normalize(out, strlen(out), key, NULL, &res) == CM_OK);
        CHECK_STR(key, out);
    }
}

static void test_bad(void)
{
    size_t i;
    for (i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char out[CM_NAME_BUF] = "unchanged";
        struct cm_result res;
        int rc = cm_name_normalize(BAD[i].in, strlen(BAD[i].in), out, NULL, &res);
        CHECK(rc == CM_ERR);
        if (rc == CM_ERR) {
            CHECK_STR(res.code, "invalid");
            /* The message names the input (up to its first byte) and the fault. */
            CHECK(strncmp(res.message, "name \"", 6) == 0);
            if (!strstr(res.message, BAD[i].why))
                fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", BAD[i].in, res.message,
                        BAD[i].why);
            CHECK(strstr(res.message, BAD[i].why) != NULL);
            CHECK(out[0] == '\0');
        } else {
            fprintf(stderr, "  %s: accepted as %s\n", BAD[i].in, out);
        }
    }
}

/* A valid host name of exactly len octets: labels of up to 63 'a'..'z'
 * separated by dots, ending in a letter. */
static void build_name(char *out, size_t len)
{
    size_t i, in_label = 0;
    for (i = 0; i < len; i++) {
        /* a dot after 63 octets, never first, last or twice in a row */
        if (in_label == 63 && i + 1 < len) {
            out[i] = '.';
            in_label = 0;
        } else {
            out[i] = (char)('a' + i % 26);
            in_label++;
        }
    }
    out[len] = '\0';
}

static void test_lengths(void)
{
    char name[1200], out[CM_NAME_BUF], key[CM_NAME_BUF];
    struct cm_result res;

    /* A 63-octet label is fine, 64 is not. */
    memset(name, 'a', 63);
    strcpy(name + 63, ".example.com");
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_OK);
    memset(name, 'a', 64);
    strcpy(name + 64, ".example.com");
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_ERR);
    CHECK(strstr(res.message, "longer than 63 octets") != NULL);

    /* 253 octets in all is fine (plus one trailing dot), 254 is not. */
    build_name(name, 253);
    CHECK(strlen(name) == 253);
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_OK);
    CHECK(strlen(out) == 253);
    strcat(name, ".");
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_OK);
    build_name(name, 254);
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_ERR);
    CHECK(strstr(res.message, "longer than 253 octets") != NULL);

    /* A name whose key would pass 200 bytes is hashed: stable, safe, short. */
    build_name(name, 253);
    CHECK(cm_name_storage_key(name, strlen(name), key, &res) == CM_OK);
    CHECK(strlen(key) == 34 && strncmp(key, "h_", 2) == 0);
    {
        char again[CM_NAME_BUF], upper[300];
        size_t j;
        for (j = 0; name[j]; j++)
            upper[j] = (char)(name[j] >= 'a' && name[j] <= 'z' ? name[j] - 32 : name[j]);
        upper[j] = '\0';
        CHECK(cm_name_storage_key(upper, strlen(upper), again, &res) == CM_OK);
        CHECK_STR(again, key); /* same name, same key */
    }
    /* A wildcard over a 195-octet name: "wildcard_." pushes its key past 200. */
    {
        char w[300];
        build_name(name, 195);
        if (snprintf(w, sizeof w, "*.%s", name) >= (int)sizeof w) return;
        CHECK(cm_name_storage_key(w, strlen(w), key, &res) == CM_OK);
        CHECK(strncmp(key, "h_", 2) == 0);
        build_name(name, 190); /* "wildcard_." + 190 = 200: kept */
        if (snprintf(w, sizeof w, "*.%s", name) >= (int)sizeof w) return;
        CHECK(cm_name_storage_key(w, strlen(w), key, &res) == CM_OK);
        CHECK(strncmp(key, "wildcard_", 9) == 0 && strlen(key) == 200);
    }
    /* 200 bytes exactly stays readable; 201 is hashed. */
    build_name(name, 200);
    CHECK(cm_name_storage_key(name, strlen(name), key, &res) == CM_OK);
    CHECK_STR(key, name);
    build_name(name, 201);
    CHECK(cm_name_storage_key(name, strlen(name), key, &res) == CM_OK);
    CHECK(strncmp(key, "h_", 2) == 0);

    /* Over-long input is refused before any parsing. */
    memset(name, 'a', 1100);
    name[1100] = '\0';
    CHECK(cm_name_normalize(name, strlen(name), out, NULL, &res) == CM_ERR);
    CHECK(strstr(res.message, "longer than 1024 bytes") != NULL);
    /* The message shows only the start of it. */
    CHECK(strlen(res.message) < 200);

    /* Embedded NUL. */
    CHECK(cm_name_normalize("a\0b.com", 7, out, NULL, &res) == CM_ERR);
    CHECK(strstr(res.message, "NUL") != NULL);
}

static void test_key_collisions(void)
{
    char key[CM_NAME_BUF];
    struct cm_result res;
    /* Host names that would spell an IPv6 address's key are refused... */
    CHECK(cm_name_storage_key("2001-db8--1", 11, key, &res) == CM_ERR);
    CHECK(strstr(res.message, "IPv6 address 2001:db8::1") != NULL);
    CHECK(cm_name_storage_key("cafe--1", 7, key, &res) == CM_ERR);
    CHECK(cm_name_storage_key("2001-db8-1-2-3-4-5-6", 20, key, &res) == CM_ERR);
    /* ...but only those: similar names are fine. */
    CHECK(cm_name_storage_key("cafe-1", 6, key, &res) == CM_OK); /* "cafe:1" is no address */
    CHECK_STR(key, "cafe-1");
    CHECK(cm_name_storage_key("cafe--1.example", 15, key, &res) == CM_OK);
    /* "0-0-0-0-0-0-0-1" reads as ::1 but is not its canonical key "--1". */
    CHECK(cm_name_storage_key("0-0-0-0-0-0-0-1", 15, key, &res) == CM_OK);
    CHECK_STR(key, "0-0-0-0-0-0-0-1");
}

int main(void)
{
    test_good();
    test_bad();
    test_lengths();
    test_key_collisions();
    return CHECK_DONE();
}
