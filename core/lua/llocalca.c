/* llocalca.c - the local CA for Lua (the core's localca.h): core.cert_issue,
 * core.ocsp_response_build, core.crl_build.  Options are checked by cm_lua_check_options and
 * the cm_lua_opt_* readers; results the core mallocs are parked in a box
 * (lx509.h) made before the core call. */
#include "lcore.h"
#include "lx509.h"

#include <string.h>

#include "../localca.h"
#include "../ocsp.h"

/* core.cert_issue{...} -> cert_pem, serial_hex | nil, err, code */
static int l_cert_issue(lua_State *L)
{
    static const char *const keys[] = {
        "subject_key", "csr", "names", "cn", "not_before", "not_after", "is_ca", "path_len",
        "ocsp_signing", "issuer_cert", "issuer_key", "ocsp_url", "crl_url", "serial", "must_staple", NULL,
    };
    static const char fn[] = "core.cert_issue";
    struct cm_issue_opts o;
    struct cm_result res;
    struct cm_lua_x509_box *b;
    int t;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    b = cm_lua_x509_box_new(L);
    memset(&o, 0, sizeof o);
    o.subject_key = cm_lua_opt_string(L, 1, fn, "subject_key", 0, NULL);
    o.csr = cm_lua_opt_string(L, 1, fn, "csr", 0, &o.csr_len);
    o.cn = cm_lua_opt_string(L, 1, fn, "cn", 0, NULL);
    o.not_before = cm_lua_opt_time(L, 1, fn, "not_before", 1);
    o.not_after = cm_lua_opt_time(L, 1, fn, "not_after", 1);
    o.is_ca = cm_lua_opt_bool(L, 1, fn, "is_ca");
    o.ocsp_signing = cm_lua_opt_bool(L, 1, fn, "ocsp_signing");
    o.issuer_cert = cm_lua_opt_string(L, 1, fn, "issuer_cert", 0, NULL);
    o.issuer_key = cm_lua_opt_string(L, 1, fn, "issuer_key", 1, NULL);
    o.ocsp_url = cm_lua_opt_string(L, 1, fn, "ocsp_url", 0, NULL);
    o.crl_url = cm_lua_opt_string(L, 1, fn, "crl_url", 0, NULL);
    o.serial_hex = cm_lua_opt_string(L, 1, fn, "serial", 0, NULL);
    o.must_staple = cm_lua_opt_bool(L, 1, fn, "must_staple");
    t = lua_getfield(L, 1, "path_len");
    if (t == LUA_TNIL) o.path_len = -1;
    else if (t == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 &&
             lua_tointeger(L, -1) <= 1000)
        o.path_len = (int)lua_tointeger(L, -1);
    else cm_lua_opt_error(L, fn, "option '%s' must be a non-negative integer", "path_len");
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "names");
    if (t != LUA_TNIL) {
        if (t != LUA_TTABLE) cm_lua_opt_error(L, fn, "option '%s' must be an array of strings", "names");
        o.names_count = cm_lua_x509_names(L, lua_gettop(L), fn, b);
        o.names = b->names;
    }
    lua_pop(L, 1); /* names stay anchored by opts */
    if (cm_cert_issue(&o, &b->str[0], &b->str[1], &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    lua_pushstring(L, b->str[1]);
    cm_lua_x509_box_release(b);
    return 2;
}

static enum cm_ocsp_cert_status opt_status(lua_State *L, int idx, const char *fn)
{
    const char *s = cm_lua_opt_string(L, idx, fn, "status", 0, NULL);
    int st = s ? cm_ocsp_status_parse(s) : CM_OCSP_GOOD;
    if (st < 0) cm_lua_opt_error(L, fn, "status must be good, revoked or unknown, not '%s'", s);
    return (enum cm_ocsp_cert_status)st;
}

static int opt_reason(lua_State *L, int idx, const char *fn)
{
    int t = lua_getfield(L, idx, "reason"), r = -1;
    if (t == LUA_TSTRING) {
        if ((r = cm_ocsp_reason_parse(lua_tostring(L, -1))) < 0)
            cm_lua_opt_error(L, fn, "unknown revocation reason '%s'", lua_tostring(L, -1));
    } else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
        lua_Integer v = lua_tointeger(L, -1);
        if (!cm_ocsp_reason_name(v >= 0 && v <= 10 ? (int)v : -1))
            cm_lua_opt_error(L, fn, "revocation reason %s is not a CRLReason", lua_tostring(L, -1));
        r = (int)v;
    } else if (t != LUA_TNIL) {
        cm_lua_opt_error(L, fn, "option '%s' must be a reason name or number", "reason");
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
    struct cm_lua_x509_box *b;
    size_t der_len = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    b = cm_lua_x509_box_new(L);
    memset(&o, 0, sizeof o);
    o.issuer_cert = cm_lua_opt_string(L, 1, fn, "issuer_cert", 1, &o.issuer_cert_len);
    o.issuer_key = cm_lua_opt_string(L, 1, fn, "issuer_key", 0, &o.issuer_key_len);
    o.cert = cm_lua_opt_string(L, 1, fn, "cert", 1, &o.cert_len);
    o.responder_cert = cm_lua_opt_string(L, 1, fn, "responder_cert", 0, &o.responder_cert_len);
    o.responder_key = cm_lua_opt_string(L, 1, fn, "responder_key", 0, &o.responder_key_len);
    o.status = opt_status(L, 1, fn);
    o.this_update = cm_lua_opt_time(L, 1, fn, "this_update", 1);
    o.next_update = cm_lua_opt_time(L, 1, fn, "next_update", 0);
    o.produced_at = cm_lua_opt_time(L, 1, fn, "produced_at", 0);
    o.revoked_at = cm_lua_opt_time(L, 1, fn, "revoked_at", 0);
    o.reason = opt_reason(L, 1, fn);
    if (cm_ocsp_response_build(&o, &b->bin, &der_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    cm_lua_x509_box_release(b);
    return 1;
}

#define CRL_BUILD_MAX_ENTRIES 10000000 /* far past any test's, bounded all the same */

/* core.crl_build{issuer_cert=, issuer_key=, entries={{serial=, revoked_at=, reason=}, ...},
 * this_update=, next_update=, number=} -> der | nil, err, code */
static int l_crl_build(lua_State *L)
{
    static const char *const keys[] = {
        "issuer_cert", "issuer_key", "entries", "this_update", "next_update", "number", NULL,
    };
    static const char *const entry_keys[] = {"serial", "revoked_at", "reason", NULL};
    static const char fn[] = "core.crl_build";
    struct cm_crl_build_opts o;
    struct cm_crl_entry *entries = NULL;
    struct cm_result res;
    struct cm_lua_x509_box *b;
    size_t der_len = 0;
    lua_Integer i, n = 0;
    int t;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    memset(&o, 0, sizeof o);
    o.issuer_cert = cm_lua_opt_string(L, 1, fn, "issuer_cert", 1, &o.issuer_cert_len);
    o.issuer_key = cm_lua_opt_string(L, 1, fn, "issuer_key", 1, &o.issuer_key_len);
    o.this_update = cm_lua_opt_time(L, 1, fn, "this_update", 1);
    o.next_update = cm_lua_opt_time(L, 1, fn, "next_update", 0);
    o.crl_number_hex = cm_lua_opt_string(L, 1, fn, "number", 0, NULL);
    t = lua_getfield(L, 1, "entries"); /* stays at index 2: it anchors the serials */
    if (t != LUA_TNIL && t != LUA_TTABLE)
        cm_lua_opt_error(L, fn, "option '%s' must be an array of entries", "entries");
    if (t == LUA_TTABLE) n = luaL_len(L, 2);
    if (n < 0 || n > CRL_BUILD_MAX_ENTRIES)
        cm_lua_opt_error(L, fn, "too many entries (at most %d)", CRL_BUILD_MAX_ENTRIES);
    /* the entries live in a userdata (index 3): collected, never leaked, on a raise */
    entries = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *entries, 0);
    for (i = 1; i <= n; i++) {
        if (lua_geti(L, 2, i) != LUA_TTABLE)
            cm_lua_opt_error(L, fn, "entries[%d] must be a table", (int)i);
        cm_lua_check_options(L, -1, fn, entry_keys);
        entries[i - 1].serial_hex = cm_lua_opt_string(L, -1, fn, "serial", 1, NULL);
        entries[i - 1].revoked_at = cm_lua_opt_time(L, -1, fn, "revoked_at", 1);
        entries[i - 1].reason = opt_reason(L, lua_gettop(L), fn);
        lua_pop(L, 1);
    }
    o.entries = n ? entries : NULL;
    o.entry_count = (size_t)n;
    b = cm_lua_x509_box_new(L);
    if (cm_crl_build(&o, &b->bin, &der_len, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushlstring(L, (const char *)b->bin, der_len);
    cm_lua_x509_box_release(b);
    return 1;
}

int cm_lua_open_localca(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"cert_issue", l_cert_issue},
        {"ocsp_response_build", l_ocsp_response_build},
        {"crl_build", l_crl_build},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
