/* lx509.c - certificates, keys, CSRs, issuing and OCSP for Lua (the core's
 * x509.h, key.h, localca.h and ocsp.h; one file, because all of them park
 * results in the same box and read options with the same helpers):
 * core.cert_parse, core.cert_parse_der, core.chain_pem, core.key_generate,
 * core.key_matches, core.key_public_pem, core.csr_create, core.csr_parse,
 * core.cert_issue, core.ocsp_response_build, core.ocsp_response_parse.
 *
 * Whatever the core mallocs for us is parked in a "box" userdata made before
 * the core call, so a Lua error (out of memory while pushing a result) never
 * longjmps over live memory: the box's __gc frees it. */
#include "lcore.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../encoding.h"
#include "../key.h"
#include "../localca.h"
#include "../ocsp.h"
#include "../x509.h"

#define BOX_MT "certmaint.x509.box"
#define MAX_NAMES 4096 /* names in one CSR or certificate */

struct box {
    struct cm_cert_facts facts;
    struct cm_csr_info csr;
    char *str[2];
    unsigned char *bin;
    const char **names; /* array of borrowed Lua strings */
};

static void box_release(struct box *b)
{
    cm_cert_facts_free(&b->facts);
    cm_csr_info_free(&b->csr);
    free(b->str[0]); b->str[0] = NULL;
    free(b->str[1]); b->str[1] = NULL;
    free(b->bin); b->bin = NULL;
    free(b->names); b->names = NULL;
}

static int box_gc(lua_State *L)
{
    box_release(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

static struct box *box_new(lua_State *L)
{
    struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* Raise "file:line: fn: message" naming the Lua caller (level 1). */
static int opt_error(lua_State *L, const char *fn, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, 1);
    lua_pushfstring(L, "%s: ", fn);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    return lua_error(L);
}

/* Field `key` of table idx as a string, or NULL when nil/absent (len may be NULL). */
static const char *opt_string(lua_State *L, int idx, const char *fn, const char *key,
                              int required, size_t *len)
{
    const char *s = NULL;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len);
    else if (t != LUA_TNIL) opt_error(L, fn, "option '%s' must be a string", key);
    else if (required) opt_error(L, fn, "option '%s' is required", key);
    lua_pop(L, 1); /* the string stays alive: the table holds it */
    if (!s && len) *len = 0;
    return s;
}

static int64_t opt_time(lua_State *L, int idx, const char *fn, const char *key, int required)
{
    int64_t v = 0;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (!(n > -1e15 && n < 1e15)) opt_error(L, fn, "option '%s' is out of range", key);
        v = (int64_t)floor(n);
    } else if (t != LUA_TNIL) {
        opt_error(L, fn, "option '%s' must be a number (Unix seconds)", key);
    } else if (required) {
        opt_error(L, fn, "option '%s' is required", key);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int idx, const char *fn, const char *key)
{
    int t = lua_getfield(L, idx, key), v;
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) opt_error(L, fn, "option '%s' must be a boolean", key);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The array of strings at stack index idx, into b->names (borrowed: the
 * table anchors the strings while it stays on the stack). */
static size_t names_array(lua_State *L, int idx, const char *fn, struct box *b)
{
    lua_Integer n, i;
    luaL_checktype(L, idx, LUA_TTABLE);
    n = luaL_len(L, idx);
    if (n < 0 || n > MAX_NAMES) opt_error(L, fn, "too many names (at most %d)", MAX_NAMES);
    free(b->names);
    b->names = calloc((size_t)n + 1, sizeof *b->names);
    if (!b->names) luaL_error(L, "%s: out of memory", fn);
    for (i = 1; i <= n; i++) {
        if (lua_geti(L, idx, i) != LUA_TSTRING) opt_error(L, fn, "names must be strings");
        b->names[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return (size_t)n;
}

static void push_facts(lua_State *L, const struct cm_cert_facts *f)
{
    char hex[2 * sizeof f->sha256 + 1];
    size_t i, off, len;
    struct cm_result res;

    cm_hex_encode(f->sha256, sizeof f->sha256, hex);
    lua_createtable(L, 0, 12);
    lua_pushstring(L, hex);
    lua_setfield(L, -2, "hash");
    cm_lua_push_strlist(L, &f->names);
    lua_setfield(L, -2, "names");
    lua_pushstring(L, f->serial_hex);
    lua_setfield(L, -2, "serial");
    lua_pushstring(L, f->issuer);
    lua_setfield(L, -2, "issuer");
    lua_pushstring(L, f->subject);
    lua_setfield(L, -2, "subject");
    lua_pushinteger(L, (lua_Integer)f->not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushinteger(L, (lua_Integer)f->not_after);
    lua_setfield(L, -2, "not_after");
    cm_lua_push_strlist(L, &f->ocsp_urls);
    lua_setfield(L, -2, "ocsp_urls");
    cm_lua_push_strlist(L, &f->crl_urls);
    lua_setfield(L, -2, "crl_urls");
    lua_pushboolean(L, f->is_ca);
    lua_setfield(L, -2, "is_ca");
    lua_pushlstring(L, (const char *)f->der, f->der_len);
    lua_setfield(L, -2, "der");
    lua_createtable(L, (int)f->chain_count, 0);
    for (i = 0, off = 0; off < f->chain_der_len; i++, off += len) {
        /* already validated by the parse: the split cannot fail */
        if (cm_x509_der_next(f->chain_der + off, f->chain_der_len - off, &len, &res) != CM_OK)
            break;
        lua_pushlstring(L, (const char *)f->chain_der + off, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "chain_der");
}

/* core.cert_parse(pem) -> facts | nil, err, code */
static int l_cert_parse(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    struct box *b = box_new(L);
    struct cm_result res;
    if (cm_x509_parse_chain(pem, len, &b->facts, &res) != CM_OK) return cm_lua_fail(L, &res);
    push_facts(L, &b->facts);
    box_release(b);
    return 1;
}

/* core.cert_parse_der(der) -> facts | nil, err, code */
static int l_cert_parse_der(lua_State *L)
{
    size_t len;
    const char *der = luaL_checklstring(L, 1, &len);
    struct box *b = box_new(L);
    struct cm_result res;
    if (cm_x509_parse_der_chain((const unsigned char *)der, len, &b->facts, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    push_facts(L, &b->facts);
    box_release(b);
    return 1;
}

/* core.chain_pem(leaf_der [, rest]) -> pem | nil, err, code; rest is the
 * other certificates as one DER string (back to back) or an array of them. */
static int l_chain_pem(lua_State *L)
{
    size_t leaf_len, chain_len = 0, pem_len = 0;
    const char *leaf = luaL_checklstring(L, 1, &leaf_len), *chain = NULL;
    struct box *b;
    struct cm_result res;

    if (lua_istable(L, 2)) {
        luaL_Buffer buf;
        lua_Integer i, n = luaL_len(L, 2);
        luaL_buffinit(L, &buf);
        for (i = 1; i <= n; i++) {
            if (lua_geti(L, 2, i) != LUA_TSTRING)
                return luaL_error(L, "chain_pem: chain entries must be DER strings");
            luaL_addvalue(&buf);
        }
        luaL_pushresult(&buf);
        lua_replace(L, 2);
    } else if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TSTRING);
    }
    if (lua_isstring(L, 2)) chain = lua_tolstring(L, 2, &chain_len);
    b = box_new(L);
    if (cm_x509_chain_pem((const unsigned char *)leaf, leaf_len, (const unsigned char *)chain,
                          chain_len, &b->str[0], &pem_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, b->str[0], pem_len);
    box_release(b);
    return 1;
}

/* core.key_generate([type]) -> pem | nil, err, code */
static int l_key_generate(lua_State *L)
{
    const char *type = luaL_optstring(L, 1, "p256");
    struct box *b = box_new(L);
    struct cm_result res;
    if (cm_key_generate(type, &b->str[0], &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    box_release(b);
    return 1;
}

/* core.key_matches(cert, key_pem) -> true | nil, err, "mismatch"/"parse" */
static int l_key_matches(lua_State *L)
{
    size_t cl, kl;
    const char *cert = luaL_checklstring(L, 1, &cl);
    const char *key = luaL_checklstring(L, 2, &kl);
    struct cm_result res;
    if (cm_key_matches_cert(cert, cl, key, kl, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.key_public_pem(key_pem) -> pem | nil, err, code */
static int l_key_public_pem(lua_State *L)
{
    size_t kl;
    const char *key = luaL_checklstring(L, 1, &kl);
    struct box *b = box_new(L);
    struct cm_result res;
    if (cm_key_public_pem(key, kl, &b->str[0], &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    box_release(b);
    return 1;
}

/* core.csr_create(key_pem, names) -> csr_pem, csr_der | nil, err, code */
static int l_csr_create(lua_State *L)
{
    size_t kl, n, der_len = 0;
    const char *key = luaL_checklstring(L, 1, &kl);
    struct box *b = box_new(L);
    struct cm_result res;
    n = names_array(L, 2, "csr_create", b);
    if (cm_csr_create(key, kl, b->names, n, &b->str[0], &b->bin,
                      &der_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    box_release(b);
    return 2;
}

/* core.csr_parse(pem_or_der) -> {names=, cn=, public_key_pem=} | nil, err, code */
static int l_csr_parse(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    struct box *b = box_new(L);
    struct cm_result res;
    if (cm_csr_parse((const unsigned char *)data, len, &b->csr, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_createtable(L, 0, 3);
    cm_lua_push_strlist(L, &b->csr.names);
    lua_setfield(L, -2, "names");
    if (b->csr.cn) {
        lua_pushstring(L, b->csr.cn);
        lua_setfield(L, -2, "cn");
    }
    lua_pushstring(L, b->csr.public_key_pem);
    lua_setfield(L, -2, "public_key_pem");
    box_release(b);
    return 1;
}

/* core.cert_issue{...} -> cert_pem, serial_hex | nil, err, code */
static int l_cert_issue(lua_State *L)
{
    static const char *const keys[] = {
        "subject_key", "csr", "names", "cn", "not_before", "not_after", "is_ca", "path_len",
        "ocsp_signing", "issuer_cert", "issuer_key", "ocsp_url", "crl_url", "serial", NULL,
    };
    static const char fn[] = "core.cert_issue";
    struct cm_issue_opts o;
    struct cm_result res;
    struct box *b;
    int t;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    b = box_new(L);
    memset(&o, 0, sizeof o);
    o.subject_key = opt_string(L, 1, fn, "subject_key", 0, NULL);
    o.csr = opt_string(L, 1, fn, "csr", 0, &o.csr_len);
    o.cn = opt_string(L, 1, fn, "cn", 0, NULL);
    o.not_before = opt_time(L, 1, fn, "not_before", 1);
    o.not_after = opt_time(L, 1, fn, "not_after", 1);
    o.is_ca = opt_bool(L, 1, fn, "is_ca");
    o.ocsp_signing = opt_bool(L, 1, fn, "ocsp_signing");
    o.issuer_cert = opt_string(L, 1, fn, "issuer_cert", 0, NULL);
    o.issuer_key = opt_string(L, 1, fn, "issuer_key", 1, NULL);
    o.ocsp_url = opt_string(L, 1, fn, "ocsp_url", 0, NULL);
    o.crl_url = opt_string(L, 1, fn, "crl_url", 0, NULL);
    o.serial_hex = opt_string(L, 1, fn, "serial", 0, NULL);
    t = lua_getfield(L, 1, "path_len");
    if (t == LUA_TNIL) o.path_len = -1;
    else if (t == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 &&
             lua_tointeger(L, -1) <= 1000)
        o.path_len = (int)lua_tointeger(L, -1);
    else opt_error(L, fn, "option '%s' must be a non-negative integer", "path_len");
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "names");
    if (t != LUA_TNIL) {
        if (t != LUA_TTABLE) opt_error(L, fn, "option '%s' must be an array of strings", "names");
        o.names_count = names_array(L, lua_gettop(L), fn, b);
        o.names = b->names;
    }
    lua_pop(L, 1); /* names stay anchored by opts */
    if (cm_cert_issue(&o, &b->str[0], &b->str[1], &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    lua_pushstring(L, b->str[1]);
    box_release(b);
    return 2;
}

static enum cm_ocsp_cert_status opt_status(lua_State *L, int idx, const char *fn)
{
    const char *s = opt_string(L, idx, fn, "status", 0, NULL);
    int st = s ? cm_ocsp_status_parse(s) : CM_OCSP_GOOD;
    if (st < 0) opt_error(L, fn, "status must be good, revoked or unknown, not '%s'", s);
    return (enum cm_ocsp_cert_status)st;
}

static int opt_reason(lua_State *L, int idx, const char *fn)
{
    int t = lua_getfield(L, idx, "reason"), r = -1;
    if (t == LUA_TSTRING) {
        if ((r = cm_ocsp_reason_parse(lua_tostring(L, -1))) < 0)
            opt_error(L, fn, "unknown revocation reason '%s'", lua_tostring(L, -1));
    } else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
        lua_Integer v = lua_tointeger(L, -1);
        if (!cm_ocsp_reason_name(v >= 0 && v <= 10 ? (int)v : -1))
            opt_error(L, fn, "revocation reason %s is not a CRLReason", lua_tostring(L, -1));
        r = (int)v;
    } else if (t != LUA_TNIL) {
        opt_error(L, fn, "option '%s' must be a reason name or number", "reason");
    }
    lua_pop(L, 1);
    return r;
}

/* core.ocsp_response_build{...} -> der | nil, err, code */
static int l_ocsp_response_build(lua_State *L)
{
    static const char *const keys[] = {
        "issuer_cert", "issuer_key", "cert", "responder_cert", "responder_key", "status",
        "this_update", "next_update", "produced_at", "revoked_at", "reason", NULL,
    };
    static const char fn[] = "core.ocsp_response_build";
    struct cm_ocsp_build_opts o;
    struct cm_result res;
    struct box *b;
    size_t der_len = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    b = box_new(L);
    memset(&o, 0, sizeof o);
    o.issuer_cert = opt_string(L, 1, fn, "issuer_cert", 1, &o.issuer_cert_len);
    o.issuer_key = opt_string(L, 1, fn, "issuer_key", 0, &o.issuer_key_len);
    o.cert = opt_string(L, 1, fn, "cert", 1, &o.cert_len);
    o.responder_cert = opt_string(L, 1, fn, "responder_cert", 0, &o.responder_cert_len);
    o.responder_key = opt_string(L, 1, fn, "responder_key", 0, &o.responder_key_len);
    o.status = opt_status(L, 1, fn);
    o.this_update = opt_time(L, 1, fn, "this_update", 1);
    o.next_update = opt_time(L, 1, fn, "next_update", 0);
    o.produced_at = opt_time(L, 1, fn, "produced_at", 0);
    o.revoked_at = opt_time(L, 1, fn, "revoked_at", 0);
    o.reason = opt_reason(L, 1, fn);
    if (cm_ocsp_response_build(&o, &b->bin, &der_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    box_release(b);
    return 1;
}

static void push_ocsp_info(lua_State *L, const struct cm_ocsp_info *info)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, cm_ocsp_status_name(info->status));
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)info->this_update);
    lua_setfield(L, -2, "this_update");
    if (info->next_update) {
        lua_pushinteger(L, (lua_Integer)info->next_update);
        lua_setfield(L, -2, "next_update");
    }
    lua_pushinteger(L, (lua_Integer)info->produced_at);
    lua_setfield(L, -2, "produced_at");
    if (info->status == CM_OCSP_REVOKED) {
        lua_pushinteger(L, (lua_Integer)info->revoked_at);
        lua_setfield(L, -2, "revoked_at");
        if (cm_ocsp_reason_name(info->reason)) {
            lua_pushstring(L, cm_ocsp_reason_name(info->reason));
            lua_setfield(L, -2, "reason");
        }
    }
}

/* core.ocsp_response_parse(der, cert, issuer [, now]) -> info | nil, err, code */
static int l_ocsp_response_parse(lua_State *L)
{
    size_t dl, cl, il;
    const char *der = luaL_checklstring(L, 1, &dl);
    const char *cert = luaL_checklstring(L, 2, &cl);
    const char *issuer = luaL_checklstring(L, 3, &il);
    int64_t now = (int64_t)floor(luaL_optnumber(L, 4, 0));
    struct cm_ocsp_info info;
    struct cm_result res;

    if (cm_ocsp_response_parse((const unsigned char *)der, dl, cert, cl, issuer, il, now, &info,
                               &res) != CM_OK)
        return cm_lua_fail(L, &res);
    push_ocsp_info(L, &info);
    return 1;
}

/* core.ocsp_response_peek(der) -> info | nil, err, code: what a response says,
 * NOT verified (cleaning decisions only). */
static int l_ocsp_response_peek(lua_State *L)
{
    size_t dl;
    const char *der = luaL_checklstring(L, 1, &dl);
    struct cm_ocsp_info info;
    struct cm_result res;

    if (cm_ocsp_response_peek((const unsigned char *)der, dl, &info, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    push_ocsp_info(L, &info);
    return 1;
}

int cm_lua_open_x509(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"cert_parse", l_cert_parse},
        {"cert_parse_der", l_cert_parse_der},
        {"chain_pem", l_chain_pem},
        {"key_generate", l_key_generate},
        {"key_matches", l_key_matches},
        {"key_public_pem", l_key_public_pem},
        {"csr_create", l_csr_create},
        {"csr_parse", l_csr_parse},
        {"cert_issue", l_cert_issue},
        {"ocsp_response_build", l_ocsp_response_build},
        {"ocsp_response_parse", l_ocsp_response_parse},
        {"ocsp_response_peek", l_ocsp_response_peek},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__close");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
