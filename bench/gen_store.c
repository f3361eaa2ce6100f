/* gen_store.c - a certificate store in certmagic's file layout, for startup.sh
 * (and ocsp_pass.sh).
 *
 *   gen_store init DIR                          CA key + certificate, one leaf key
 *   gen_store certs DIR ROOT ISSUER FIRST LAST  sites hostI.bench.test, FIRST <= I <= LAST
 *
 * Each site is certificates/ISSUER/<name>/<name>.crt (leaf + CA, PEM), .key
 * (the one shared P-256 leaf key, hard-linked to DIR/leaf.key when possible)
 * and .json (certmagic's metadata: sans, issuer_data).  Leaves live 90 days
 * from a day ago, with distinct random serials, a SAN, EKU serverAuth and an
 * OCSP URL (http://ocsp.bench.test, or $GEN_STORE_OCSP_URL), like an ACME CA's.
 * Standalone on purpose (only OpenSSL), so it builds for any certmaint binary
 * under test.  Not part of the product: it exits on the first error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static void die(const char *what)
{
    fprintf(stderr, "gen_store: %s (%s)\n", what, strerror(errno));
    exit(1);
}

static void need(int ok, const char *what)
{
    if (!ok) die(what);
}

static EVP_PKEY *p256(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    need(k != NULL, "EC key generation");
    return k;
}

static void write_key(const char *path, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    need(f != NULL, path);
    need(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1, "write key");
    need(fclose(f) == 0, path);
    need(chmod(path, 0600) == 0, path);
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k;
    need(f != NULL, path);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    need(k != NULL, path);
    return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    need(e != NULL, "extension");
    need(X509_add_ext(x, e, -1) == 1, "add extension");
    X509_EXTENSION_free(e);
}

/* A certificate for `key` signed by ca_key (self-signed when ca is NULL). */
static X509 *make(EVP_PKEY *key, const char *cn, const char *san, X509 *ca, EVP_PKEY *ca_key,
                  long from, long days)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    BIGNUM *bn;
    need(x != NULL, "X509_new");
    need(X509_set_version(x, 2) == 1, "version");
    need(RAND_bytes(serial, sizeof serial) == 1, "serial");
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    need(bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL, "serial");
    BN_free(bn);
    need(X509_gmtime_adj(X509_getm_notBefore(x), from) != NULL, "notBefore");
    need(X509_gmtime_adj(X509_getm_notAfter(x), from + days * 86400L) != NULL, "notAfter");
    need(X509_set_pubkey(x, key) == 1, "pubkey");
    if (cn)
        need(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                        (const unsigned char *)cn, -1, -1, 0) == 1, "CN");
    need(X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : X509_get_subject_name(x)) == 1,
         "issuer");
    if (!ca) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
        add_ext(x, x, NID_subject_key_identifier, "hash");
    } else {
        char buf[512];
        add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, ca, NID_key_usage, "critical,digitalSignature");
        add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth");
        add_ext(x, ca, NID_authority_key_identifier, "keyid");
        snprintf(buf, sizeof buf, "DNS:%s", san);
        add_ext(x, ca, NID_subject_alt_name, buf);
        /* GEN_STORE_OCSP_URL: bench/ocsp_pass.sh points the certificates at its local responder */
        snprintf(buf, sizeof buf, "OCSP;URI:%s",
                 getenv("GEN_STORE_OCSP_URL") ? getenv("GEN_STORE_OCSP_URL") : "http://ocsp.bench.test");
        add_ext(x, ca, NID_info_access, buf);
    }
    need(X509_sign(x, ca_key, EVP_sha256()) > 0, "sign");
    return x;
}

static void mkdirs(char *path)
{
    char *p;
    for (p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) die(path);
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) die(path);
}

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "w");
    need(f != NULL, path);
    need(fwrite(data, 1, len, f) == len, path);
    need(fclose(f) == 0, path);
    need(chmod(path, mode) == 0, path);
}

int main(int argc, char **argv)
{
    char path[8192], name[256], dir[4096];
    if (argc == 3 && strcmp(argv[1], "init") == 0) {
        EVP_PKEY *ca_key = p256(), *leaf = p256();
        X509 *ca = make(ca_key, "certmaint bench CA", NULL, NULL, ca_key, -86400L * 2, 3650);
        FILE *f;
        snprintf(path, sizeof path, "%s/ca.key", argv[2]);
        write_key(path, ca_key);
        snprintf(path, sizeof path, "%s/leaf.key", argv[2]);
        write_key(path, leaf);
        snprintf(path, sizeof path, "%s/ca.crt", argv[2]);
        need((f = fopen(path, "w")) != NULL, path);
        need(PEM_write_X509(f, ca) == 1, "write CA");
        need(fclose(f) == 0, path);
        return 0;
    }
    if (argc == 7 && strcmp(argv[1], "certs") == 0) {
        const char *d = argv[2], *root = argv[3], *issuer = argv[4];
        long first = atol(argv[5]), last = atol(argv[6]), i;
        EVP_PKEY *ca_key, *leaf;
        X509 *ca;
        FILE *f;
        char *ca_pem = NULL, leaf_key_path[8192];
        size_t ca_len = 0;
        snprintf(path, sizeof path, "%s/ca.key", d);
        ca_key = read_key(path);
        snprintf(leaf_key_path, sizeof leaf_key_path, "%s/leaf.key", d);
        leaf = read_key(leaf_key_path);
        snprintf(path, sizeof path, "%s/ca.crt", d);
        need((f = fopen(path, "r")) != NULL, path);
        ca = PEM_read_X509(f, NULL, NULL, NULL);
        need(ca != NULL, "read CA");
        fclose(f);
        {
            BIO *b = BIO_new(BIO_s_mem());
            char *p;
            need(b && PEM_write_bio_X509(b, ca) == 1, "CA PEM");
            ca_len = (size_t)BIO_get_mem_data(b, &p);
            need((ca_pem = malloc(ca_len)) != NULL, "malloc");
            memcpy(ca_pem, p, ca_len);
            BIO_free(b);
        }
        for (i = first; i <= last; i++) {
            X509 *x;
            BIO *b;
            char *p, json[1024], *serial_hex;
            size_t n;
            int jn;
            BIGNUM *bn;
            snprintf(name, sizeof name, "host%ld.bench.test", i);
            x = make(leaf, name, name, ca, ca_key, -86400L, 90);
            snprintf(dir, sizeof dir, "%s/certificates/%s/%s", root, issuer, name);
            mkdirs(dir);
            b = BIO_new(BIO_s_mem());
            need(b && PEM_write_bio_X509(b, x) == 1 && BIO_write(b, ca_pem, (int)ca_len) == (int)ca_len,
                 "leaf PEM");
            n = (size_t)BIO_get_mem_data(b, &p);
            snprintf(path, sizeof path, "%s/%s.crt", dir, name);
            write_file(path, p, n, 0600);
            BIO_free(b);
            snprintf(path, sizeof path, "%s/%s.key", dir, name);
            if (link(leaf_key_path, path) != 0) {
                if (errno == EEXIST) {
                    /* a rerun over an existing store: keep the key there */
                } else {
                    write_key(path, leaf);
                }
            }
            bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
            need(bn && (serial_hex = BN_bn2hex(bn)) != NULL, "serial hex");
            for (p = serial_hex; *p; p++)
                if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
            jn = snprintf(json, sizeof json,
                          "{\n  \"sans\": [\"%s\"],\n  \"issuer_data\": {\"issuer\": \"%s\", "
                          "\"serial\": \"%s\"}\n}\n", name, issuer, serial_hex);
            OPENSSL_free(serial_hex);
            BN_free(bn);
            snprintf(path, sizeof path, "%s/%s.json", dir, name);
            write_file(path, json, (size_t)jn, 0600);
            X509_free(x);
        }
        free(ca_pem);
        X509_free(ca);
        EVP_PKEY_free(leaf);
        EVP_PKEY_free(ca_key);
        return 0;
    }
    fprintf(stderr, "usage: gen_store init DIR | gen_store certs DIR ROOT ISSUER FIRST LAST\n");
    return 2;
}
