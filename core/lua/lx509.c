/* lx509.c - certificates, CSRs and OCSP checks for Lua (the core's x509.h
 * and ocsp.h): core.cert_parse, core.cert_parse_der, core.chain_pem,
 * core.csr_create, core.csr_parse, core.ocsp_request, core.ocsp_response_parse,
 * core.ocsp_response_peek.  Keys are in lkey.c, the local CA in llocalca.c;
 * the three share the box of lx509.h, whose metatable is made here. */
#include "lcore.h"
#include "lx509.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../encoding.h"
#include "../ocsp.h"
#include "../x509.h"

#define BOX_MT CM_LUA_X509_BOX_MT
#define MAX_NAMES CM_LUA_X509_MAX_NAMES

void cm_lua_x509_box_release(struct cm_lua_x509_box *b)
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
    cm_lua_x509_box_release(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

struct cm_lua_x509_box *cm_lua_x509_box_new(lua_State *L)
{
    struct cm_lua_x509_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* The array of strings at stack index idx, into b->names (borrowed: the
 * table anchors the strings while it stays on the stack). */
size_t cm_lua_x509_names(lua_State *L, int idx, const char *fn, struct cm_lua_x509_box *b)
{
    lua_Integer n, i;
    luaL_checktype(L, idx, LUA_TTABLE);
    n = luaL_len(L, idx);
    if (n < 0 || n > MAX_NAMES) cm_lua_opt_error(L, fn, "too many names (at most %d)", MAX_NAMES);
    free(b->names);
    b->names = calloc((size_t)n + 1, sizeof *b->names);
    if (!b->names) luaL_error(L, "%s: out of memory", fn);
    for (i = 1; i <= n; i++) {
        if (lua_geti(L, idx, i) != LUA_TSTRING) cm_lua_opt_error(L, fn, "names must be strings");
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
    lua_pushboolean(L, f->must_staple);
    lua_setfield(L, -2, "must_staple");
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
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_x509_parse_chain(pem, len, &b->facts, &res) != CM_OK) return cm_lua_fail(L, &res);
    push_facts(L, &b->facts);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.cert_parse_der(der) -> facts | nil, err, code */
static int l_cert_parse_der(lua_State *L)
{
    size_t len;
    const char *der = luaL_checklstring(L, 1, &len);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_x509_parse_der_chain((const unsigned char *)der, len, &b->facts, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    push_facts(L, &b->facts);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.chain_pem(leaf_der [, rest]) -> pem | nil, err, code; rest is the
 * other certificates as one DER string (back to back) or an array of them. */
static int l_chain_pem(lua_State *L)
{
    size_t leaf_len, chain_len = 0, pem_len = 0;
    const char *leaf = luaL_checklstring(L, 1, &leaf_len), *chain = NULL;
    struct cm_lua_x509_box *b;
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
    b = cm_lua_x509_box_new(L);
    if (cm_x509_chain_pem((const unsigned char *)leaf, leaf_len, (const unsigned char *)chain,
                          chain_len, &b->str[0], &pem_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, b->str[0], pem_len);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.csr_create(key_pem, names) -> csr_pem, csr_der | nil, err, code */
static int l_csr_create(lua_State *L)
{
    size_t kl, n, der_len = 0;
    const char *key = luaL_checklstring(L, 1, &kl);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    n = cm_lua_x509_names(L, 2, "csr_create", b);
    if (cm_csr_create(key, kl, b->names, n, &b->str[0], &b->bin,
                      &der_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    cm_lua_x509_box_release(b);
    return 2;
}

/* core.csr_parse(pem_or_der) -> {names=, cn=, public_key_pem=} | nil, err, code */
static int l_csr_parse(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
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
    cm_lua_x509_box_release(b);
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

/* Argument arg as integer seconds (floored), def when absent; raises unless
 * finite and within +-1e15 (a time or a duration). */
static int64_t opt_seconds(lua_State *L, int arg, int64_t def)
{
    lua_Number n;
    if (lua_isnoneornil(L, arg)) return def;
    n = luaL_checknumber(L, arg);
    luaL_argcheck(L, n > -1e15 && n < 1e15, arg, "out of range");
    return (int64_t)floor(n);
}

/* core.ocsp_request(cert, issuer) -> der | nil, err, code */
static int l_ocsp_request(lua_State *L)
{
    size_t cl, il, der_len = 0;
    const char *cert = luaL_checklstring(L, 1, &cl);
    const char *issuer = luaL_checklstring(L, 2, &il);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;

    if (cm_ocsp_request_build(cert, cl, issuer, il, &b->bin, &der_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.ocsp_response_parse(der, cert, issuer [, now [, skew]]) -> info | nil, err, code */
static int l_ocsp_response_parse(lua_State *L)
{
    size_t dl, cl, il;
    const char *der = luaL_checklstring(L, 1, &dl);
    const char *cert = luaL_checklstring(L, 2, &cl);
    const char *issuer = luaL_checklstring(L, 3, &il);
    int64_t now = opt_seconds(L, 4, 0);
    int64_t skew = opt_seconds(L, 5, CM_OCSP_DEFAULT_SKEW);
    struct cm_ocsp_info info;
    struct cm_result res;

    luaL_argcheck(L, skew >= 0, 5, "skew must not be negative");
    if (cm_ocsp_response_parse((const unsigned char *)der, dl, cert, cl, issuer, il, now, skew,
                               &info, &res) != CM_OK)
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
        {"csr_create", l_csr_create},
        {"csr_parse", l_csr_parse},
        {"ocsp_request", l_ocsp_request},
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
