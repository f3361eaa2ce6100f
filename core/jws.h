/* jws.h - JSON Web Keys and JSON Web Signatures for ACME (RFC 7515, 7517,
 * 7518, 7638; RFC 8555 section 6.2).
 *
 * A signer holds one private key (ES256 on P-256, ES384 on P-384, ES512 on
 * P-521, RS256 on RSA of 2048 bits or more), its public JWK in RFC 7638
 * canonical form (the required members only, sorted, no white space) and
 * that JWK's thumbprint, all made once when the signer is made.  Signatures
 * come out in the flattened JSON serialization ACME posts:
 *   {"protected":"<b64u>","payload":"<b64u>","signature":"<b64u>"}
 * with ECDSA signatures as the fixed-length r||s JWS wants (RFC 7518
 * section 3.4), not OpenSSL's DER.  The protected header is the caller's
 * JSON text, signed byte for byte as given.
 *
 * Every input is bounded (CM_JWS_MAX_INPUT; keys by CM_X509_MAX_INPUT) and
 * every OpenSSL return checked.  No OpenSSL type appears here.
 */
#ifndef CM_JWS_H
#define CM_JWS_H

#include <stddef.h>

#include "result.h"

struct evp_pkey_st; /* OpenSSL's EVP_PKEY (key.h) */
struct cm_jws_signer;

/* Largest protected header, payload or JWS text accepted (bytes). */
#define CM_JWS_MAX_INPUT (1024 * 1024)
/* A thumbprint: base64url of a SHA-256, 43 characters. */
#define CM_JWS_THUMBPRINT_LEN 43
/* Largest HS256 MAC key text accepted (base64url characters). */
#define CM_JWS_MAX_MAC_KEY 1024

/* A signer for the private key PEM in pem[0..len) into *out (free with
 * cm_jws_signer_free).  Fails with "parse" (not a private key, or an
 * encrypted one), "toobig", "invalid" (a key JWS/ACME cannot use: Ed25519,
 * another curve, RSA under 2048 bits), "crypto", "ENOMEM"; *out is then
 * NULL. */
int cm_jws_signer_new(const char *pem, size_t len, struct cm_jws_signer **out,
                      struct cm_result *res);

/* Free a signer (and its key); NULL is ignored. */
void cm_jws_signer_free(struct cm_jws_signer *s);

/* "ES256", "ES384", "ES512" or "RS256". */
const char *cm_jws_signer_alg(const struct cm_jws_signer *s);

/* The public JWK as RFC 7638 canonical JSON (NUL-terminated, *len bytes
 * when len is not NULL), owned by the signer. */
const char *cm_jws_signer_jwk(const struct cm_jws_signer *s, size_t *len);

/* The RFC 7638 SHA-256 thumbprint of that JWK, base64url (43 characters),
 * owned by the signer. */
const char *cm_jws_signer_thumbprint(const struct cm_jws_signer *s);

/* Sign protected[0..plen) (JSON text, used as given) and payload[0..len)
 * (an empty payload is ACME's POST-as-GET: "payload":"").  *out gets the
 * flattened JWS JSON, malloc'd and NUL-terminated (*out_len bytes when
 * out_len is not NULL).  Fails with "toobig" (an input over
 * CM_JWS_MAX_INPUT), "crypto", "ENOMEM"; *out is then NULL. */
int cm_jws_sign(const struct cm_jws_signer *s, const char *protected_json, size_t plen,
                const char *payload, size_t len, char **out, size_t *out_len,
                struct cm_result *res);

/* The same with HS256 under the MAC key whose base64url text (no padding,
 * as CAs hand out External Account Binding keys) is key_b64u[0..klen): the
 * EAB inner JWS of RFC 8555 section 7.3.4.  Fails with "invalid" (an empty
 * key, one over CM_JWS_MAX_MAC_KEY characters, or not base64url: the message
 * says which and where), "toobig", "crypto", "ENOMEM". */
int cm_jws_hmac_sign(const char *key_b64u, size_t klen, const char *protected_json, size_t plen,
                     const char *payload, size_t len, char **out, size_t *out_len,
                     struct cm_result *res);

/* The canonical public JWK of key (private or public) into *jwk (malloc'd,
 * NUL-terminated, *jwk_len bytes when not NULL) and its JWS algorithm into
 * *alg (static text; alg may be NULL).  Fails as cm_jws_signer_new ("invalid",
 * "crypto", "ENOMEM"); *jwk is then NULL. */
int cm_jws_jwk_of_key(const struct evp_pkey_st *key, char **jwk, size_t *jwk_len,
                      const char **alg, struct cm_result *res);

/* The RFC 7638 thumbprint of JWK text jwk[0..len) (hashed as given: pass the
 * canonical form) into out (CM_JWS_THUMBPRINT_LEN + 1 bytes). */
int cm_jws_thumbprint(const char *jwk, size_t len, char out[CM_JWS_THUMBPRINT_LEN + 1],
                      struct cm_result *res);

/* Verify a flattened JWS JSON text jws[0..len) against the public (or
 * private) key PEM key_pem[0..klen): the protected header's "alg" must be
 * the key's (ES256/ES384/ES512/RS256) and the signature must verify.  On
 * success *protected_json and *payload get the decoded header and payload
 * (malloc'd, NUL-terminated; lengths into the *_len when not NULL).  Fails
 * with "parse" (not a flattened JWS: the message names the member), "verify"
 * (wrong alg for the key, a bad signature), "toobig", "invalid" (a key JWS
 * cannot use), "crypto", "ENOMEM"; the outputs are then NULL.  What a CA
 * does; here for tests and stub servers. */
int cm_jws_verify(const char *key_pem, size_t klen, const char *jws, size_t len,
                  char **protected_json, size_t *protected_len, char **payload,
                  size_t *payload_len, struct cm_result *res);

#endif
