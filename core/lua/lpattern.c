/* lpattern.c - Lua 5.4 patterns with a work bound, for policy code.
 *
 * One call of string.find / match / gmatch / gsub with a backtracking pattern
 * can run for minutes inside C, where no count hook fires
 * (string.find(("a"):rep(3e4), ("a*"):rep(30) .. "b")).  This file is our own
 * matcher for the patterns of the Lua 5.4 reference manual (§6.4.1), written
 * from the manual and checked against the stock library case by case
 * (spec/unit/core/pattern_spec.lua compares results and error messages).
 *
 * It reads the pattern as it matches (no compile step), so a malformed part
 * is reported only when matching reaches it, as the stock library does.  The
 * matcher recurses only where it must choose (a capture, a repetition that
 * matched once), at most MATCH_DEPTH_MAX calls deep ("pattern too complex").
 * Each call counts its steps (matcher calls, repetitions and characters
 * scanned), fails with a clear error past core.PATTERN_STEPS_MAX steps, and
 * every WATCH_EVERY steps asks the watchdog (lwatch.c), so a hook's time limit
 * and a pending SIGTERM stop a long match too.  Each call of a gmatch
 * iterator is bounded on its own.  certmaint.sandbox gives these to policies
 * as string.find/match/gmatch/gsub, and the watchdog puts them behind the
 * string metatable ("x"):find while a policy call runs; the engine's own
 * calls use the stock library.
 */
#include "lcore.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

#define PATTERN_STEPS_MAX 20000000ULL /* a few tenths of a second of matching */
#define WATCH_EVERY 16384
#define MATCH_DEPTH_MAX 200 /* nested matcher calls, as the stock library allows */
#define CAPTURES_MAX 32     /* LUA_MAXCAPTURES of a stock build */
#define PATTERN_ESCAPE '%'

/* A capture's length while it is open, and the length that marks "()". */
#define CAPTURE_OPEN ((ptrdiff_t)-1)
#define CAPTURE_POSITION ((ptrdiff_t)-2)

struct pattern_state {
    lua_State *L;
    const char *subject;     /* the whole subject */
    const char *subject_end;
    const char *pattern_end;
    int depth_left;          /* matcher calls that may still nest */
    int ncaptures;
    unsigned long long steps;
    unsigned long long next_check; /* steps at which charge() looks again */
    struct {
        const char *start;
        ptrdiff_t len; /* or CAPTURE_OPEN / CAPTURE_POSITION */
    } capture[CAPTURES_MAX];
};

/* ---- the work bound --------------------------------------------------------- */

static void charge_check(struct pattern_state *st)
{
    if (st->steps > PATTERN_STEPS_MAX)
        luaL_error(st->L, "pattern too complex for this subject: more than %d million matching steps "
                   "(a policy's pattern calls are bounded; simplify the pattern or split the text)",
                   (int)(PATTERN_STEPS_MAX / 1000000));
    if (cm_lua_watch_check()) luaL_error(st->L, "%s", cm_lua_watch_why());
    st->next_check = (st->steps / WATCH_EVERY + 1) * WATCH_EVERY;
    if (st->next_check > PATTERN_STEPS_MAX + 1) st->next_check = PATTERN_STEPS_MAX + 1;
}

/* Count n steps of work; raises past the bound or when the watchdog has tripped. */
static inline void charge(struct pattern_state *st, size_t n)
{
    st->steps += n;
    if (st->steps >= st->next_check) charge_check(st);
}

static void state_init(struct pattern_state *st, lua_State *L, const char *s, size_t slen,
                       const char *p_end)
{
    st->L = L;
    st->subject = s;
    st->subject_end = s + slen;
    st->pattern_end = p_end;
    st->steps = 0;
    st->next_check = WATCH_EVERY;
    st->ncaptures = 0;
    st->depth_left = MATCH_DEPTH_MAX;
}

/* Before each attempt at a new subject position: no captures, full depth. */
static void state_restart(struct pattern_state *st)
{
    st->ncaptures = 0;
    st->depth_left = MATCH_DEPTH_MAX;
}

/* ---- single-character classes ------------------------------------------------ */

/* Is c in the class written %cls?  A letter not naming a class stands for itself. */
static int in_class(int c, int cls)
{
    int yes;
    switch (tolower(cls)) {
    case 'a': yes = isalpha(c); break;
    case 'c': yes = iscntrl(c); break;
    case 'd': yes = isdigit(c); break;
    case 'g': yes = isgraph(c); break;
    case 'l': yes = islower(c); break;
    case 'p': yes = ispunct(c); break;
    case 's': yes = isspace(c); break;
    case 'u': yes = isupper(c); break;
    case 'w': yes = isalnum(c); break;
    case 'x': yes = isxdigit(c); break;
    case 'z': yes = c == 0; break; /* not in the 5.4 manual, kept by the stock library */
    default: return cls == c;
    }
    yes = yes != 0;
    return isupper(cls) ? !yes : yes;
}

/* Is c in the set from `open` ('[') to `close` (its ']')? */
static int in_set(int c, const char *open, const char *close)
{
    const unsigned char *q = (const unsigned char *)open + 1;
    const unsigned char *end = (const unsigned char *)close;
    int found = 1;
    if (*q == '^') {
        found = 0;
        q++;
    }
    while (q < end) {
        if (*q == PATTERN_ESCAPE) {
            if (in_class(c, q[1])) return found;
            q += 2;
        } else if (q + 2 < end && q[1] == '-') {
            if (q[0] <= c && c <= q[2]) return found;
            q += 3;
        } else {
            if (*q == c) return found;
            q++;
        }
    }
    return !found;
}

/* The end of the single-character class starting at p (p < pattern_end). */
static const char *class_end(struct pattern_state *st, const char *p)
{
    const char *end = st->pattern_end;
    if (*p == PATTERN_ESCAPE) {
        if (p + 1 >= end) luaL_error(st->L, "malformed pattern (ends with '%%')");
        return p + 2;
    }
    if (*p != '[') return p + 1;
    p++;
    if (p < end && *p == '^') p++;
    /* the set's first character is a member even when it is ']' */
    for (;;) {
        if (p >= end) break;
        if (*p == PATTERN_ESCAPE) p++;
        p++;
        if (p >= end) break;
        if (*p == ']') return p + 1;
    }
    luaL_error(st->L, "malformed pattern (missing ']')");
    return NULL;
}

/* Does the subject character c match the class from p to ep? */
static int class_matches(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.': return 1;
    case PATTERN_ESCAPE: return in_class(c, (unsigned char)p[1]);
    case '[': return in_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* ---- the matcher --------------------------------------------------------------- */

static const char *match_here(struct pattern_state *st, const char *s, const char *p);

static int at_class(struct pattern_state *st, const char *s, const char *p, const char *ep)
{
    return s < st->subject_end && class_matches((unsigned char)*s, p, ep);
}

/* Longest run of the class p..ep from s first, then shorter ones, down to none. */
static const char *repeat_longest(struct pattern_state *st, const char *s, const char *p,
                                  const char *ep)
{
    size_t n = 0;
    while (at_class(st, s + n, p, ep)) n++;
    charge(st, n);
    for (;;) {
        const char *res = match_here(st, s + n, ep + 1);
        if (res) return res;
        if (n == 0) return NULL;
        n--;
    }
}

/* Shortest run of the class p..ep from s first, one more each time the rest fails. */
static const char *repeat_shortest(struct pattern_state *st, const char *s, const char *p,
                                   const char *ep)
{
    for (;;) {
        const char *res = match_here(st, s, ep + 1);
        if (res) return res;
        if (!at_class(st, s, p, ep)) return NULL;
        s++;
    }
}

static const char *capture_open(struct pattern_state *st, const char *s, const char *p,
                                ptrdiff_t kind)
{
    const char *res;
    int i = st->ncaptures;
    if (i >= CAPTURES_MAX) luaL_error(st->L, "too many captures");
    st->capture[i].start = s;
    st->capture[i].len = kind;
    st->ncaptures = i + 1;
    res = match_here(st, s, p);
    if (!res) st->ncaptures = i;
    return res;
}

static const char *capture_close(struct pattern_state *st, const char *s, const char *p)
{
    const char *res;
    int i = st->ncaptures - 1;
    while (i >= 0 && st->capture[i].len != CAPTURE_OPEN) i--;
    if (i < 0) luaL_error(st->L, "invalid pattern capture");
    st->capture[i].len = s - st->capture[i].start;
    res = match_here(st, s, p);
    if (!res) st->capture[i].len = CAPTURE_OPEN;
    return res;
}

/* %bxy at s: the end of the balanced text, or NULL. */
static const char *match_balance(struct pattern_state *st, const char *s, const char *p)
{
    const char *q;
    int open, close, level = 1;
    if (p + 1 >= st->pattern_end) luaL_error(st->L, "malformed pattern (missing arguments to '%%b')");
    open = (unsigned char)p[0];
    close = (unsigned char)p[1];
    if (s >= st->subject_end || (unsigned char)*s != open) return NULL;
    for (q = s + 1; q < st->subject_end; q++) {
        int c = (unsigned char)*q;
        if (c == close) {
            if (--level == 0) break;
        } else if (c == open) {
            level++;
        }
    }
    charge(st, (size_t)(q - s));
    return q < st->subject_end ? q + 1 : NULL;
}

/* %1..%9 at s: the end of a repeat of that capture's text, or NULL. */
static const char *match_backref(struct pattern_state *st, const char *s, int digit)
{
    int i = digit - '1';
    ptrdiff_t len;
    if (i < 0 || i >= st->ncaptures || st->capture[i].len == CAPTURE_OPEN)
        luaL_error(st->L, "invalid capture index %%%d", i + 1);
    len = st->capture[i].len;
    if (len == CAPTURE_POSITION) return NULL; /* a position is no text to repeat */
    if (st->subject_end - s < len || memcmp(s, st->capture[i].start, (size_t)len) != 0) return NULL;
    charge(st, (size_t)len);
    return s + len;
}

/* Match the pattern from p against the subject from s: the end of the match, or NULL. */
static const char *match_here(struct pattern_state *st, const char *s, const char *p)
{
    const char *res = NULL;
    const char *end = st->pattern_end;
    if (st->depth_left == 0) luaL_error(st->L, "pattern too complex");
    st->depth_left--;
    charge(st, 1);
    while (p < end) {
        const char *ep;
        int matched, suffix;
        switch (*p) {
        case '(':
            if (p + 1 < end && p[1] == ')') res = capture_open(st, s, p + 2, CAPTURE_POSITION);
            else res = capture_open(st, s, p + 1, CAPTURE_OPEN);
            goto out;
        case ')':
            res = capture_close(st, s, p + 1);
            goto out;
        case '$':
            if (p + 1 == end) {
                res = s == st->subject_end ? s : NULL;
                goto out;
            }
            break;
        case PATTERN_ESCAPE:
            if (p + 1 >= end) break;
            if (p[1] == 'b') {
                s = match_balance(st, s, p + 2);
                if (!s) goto out;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                int before, here;
                p += 2;
                if (p >= end || *p != '[') luaL_error(st->L, "missing '[' after '%%f' in pattern");
                ep = class_end(st, p);
                before = s == st->subject ? '\0' : (unsigned char)s[-1];
                here = s < st->subject_end ? (unsigned char)*s : '\0';
                if (in_set(before, p, ep - 1) || !in_set(here, p, ep - 1)) goto out;
                p = ep;
                continue;
            }
            if (isdigit((unsigned char)p[1])) {
                s = match_backref(st, s, (unsigned char)p[1]);
                if (!s) goto out;
                p += 2;
                continue;
            }
            break;
        default:
            break;
        }
        /* a single-character class, maybe followed by a repetition */
        ep = class_end(st, p);
        matched = at_class(st, s, p, ep);
        suffix = ep < end ? *ep : '\0';
        if (!matched) {
            if (suffix == '*' || suffix == '?' || suffix == '-') {
                p = ep + 1; /* none of it: go on with the rest */
                continue;
            }
            goto out;
        }
        switch (suffix) {
        case '?':
            res = match_here(st, s + 1, ep + 1);
            if (res) goto out;
            p = ep + 1;
            continue;
        case '+': res = repeat_longest(st, s + 1, p, ep); goto out;
        case '*': res = repeat_longest(st, s, p, ep); goto out;
        case '-': res = repeat_shortest(st, s, p, ep); goto out;
        default:
            s++;
            p = ep;
            continue;
        }
    }
    res = s;
out:
    st->depth_left++;
    return res;
}

/* ---- results ----------------------------------------------------------------------- */

/* Push capture i of a match from s to e (i == 0 with no captures: the whole match). */
static void push_capture(struct pattern_state *st, int i, const char *s, const char *e)
{
    if (i >= st->ncaptures) {
        if (i != 0) luaL_error(st->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(st->L, s, (size_t)(e - s));
        return;
    }
    if (st->capture[i].len == CAPTURE_OPEN) luaL_error(st->L, "unfinished capture");
    if (st->capture[i].len == CAPTURE_POSITION)
        lua_pushinteger(st->L, (lua_Integer)(st->capture[i].start - st->subject) + 1);
    else
        lua_pushlstring(st->L, st->capture[i].start, (size_t)st->capture[i].len);
}

/* Push every capture (or, with none and whole_if_none, the whole match); returns the count. */
static int push_captures(struct pattern_state *st, const char *s, const char *e, int whole_if_none)
{
    int i, n = st->ncaptures == 0 && whole_if_none ? 1 : st->ncaptures;
    luaL_checkstack(st->L, n, "too many captures");
    for (i = 0; i < n; i++) push_capture(st, i, s, e);
    return n;
}

/* A 1-based start position from a Lua init argument (negative: from the end). */
static size_t start_position(lua_Integer init, size_t len)
{
    if (init > 0) return (size_t)init;
    if (init == 0 || init < -(lua_Integer)len) return 1;
    return len - (size_t)(-init) + 1;
}

#define SPECIALS "^$*+?.([%-"

static int has_specials(const char *p, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (memchr(SPECIALS, p[i], sizeof SPECIALS - 1)) return 1;
    return 0;
}

/* Plain search of needle in hay; counts a step for each candidate position. */
static const char *find_plain(struct pattern_state *st, const char *hay, size_t hay_len,
                              const char *needle, size_t needle_len)
{
    const char *at = hay, *last;
    if (needle_len == 0) return hay;
    if (needle_len > hay_len) return NULL;
    last = hay + (hay_len - needle_len);
    while (at <= last) {
        at = memchr(at, needle[0], (size_t)(last - at) + 1);
        if (!at) return NULL;
        charge(st, 1);
        if (memcmp(at + 1, needle + 1, needle_len - 1) == 0) return at;
        at++;
    }
    return NULL;
}

static int find_or_match(lua_State *L, int is_find)
{
    size_t slen, plen;
    const char *s = luaL_checklstring(L, 1, &slen);
    const char *p = luaL_checklstring(L, 2, &plen);
    size_t init = start_position(luaL_optinteger(L, 3, 1), slen);
    struct pattern_state st;
    const char *from;
    int anchored;
    if (init > slen + 1) {
        luaL_pushfail(L);
        return 1;
    }
    state_init(&st, L, s, slen, p + plen);
    if (is_find && (lua_toboolean(L, 4) || !has_specials(p, plen))) {
        const char *at = find_plain(&st, s + init - 1, slen - (init - 1), p, plen);
        if (!at) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(at - s) + 1);
        lua_pushinteger(L, (lua_Integer)(at - s) + (lua_Integer)plen);
        return 2;
    }
    anchored = plen > 0 && *p == '^';
    if (anchored) p++;
    for (from = s + init - 1;; from++) {
        const char *e;
        state_restart(&st);
        e = match_here(&st, from, p);
        if (e) {
            if (!is_find) return push_captures(&st, from, e, 1);
            lua_pushinteger(L, (lua_Integer)(from - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return 2 + push_captures(&st, NULL, NULL, 0);
        }
        if (anchored || from >= st.subject_end) break;
    }
    luaL_pushfail(L);
    return 1;
}

static int pattern_find(lua_State *L)
{
    return find_or_match(L, 1);
}

static int pattern_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* ---- gmatch ------------------------------------------------------------------------ */

/* The iterator's state, a full userdata upvalue next to the subject and pattern
 * strings (upvalues too, so the pointers into them stay valid). */
struct gmatch_state {
    size_t next;       /* offset where the next search starts; slen + 1: done */
    size_t last_end;   /* offset where the last match ended, or SIZE_MAX */
};

static int gmatch_step(lua_State *L)
{
    size_t slen, plen;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &slen);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &plen);
    struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
    struct pattern_state st;
    const char *from;
    if (gm->next > slen) return 0;
    state_init(&st, L, s, slen, p + plen);
    for (from = s + gm->next; from <= st.subject_end; from++) {
        const char *e;
        state_restart(&st);
        e = match_here(&st, from, p);
        /* an empty match right where the last one ended is no new match */
        if (e && (size_t)(e - s) != gm->last_end) {
            gm->next = gm->last_end = (size_t)(e - s);
            return push_captures(&st, from, e, 1);
        }
    }
    gm->next = slen + 1;
    return 0;
}

static int pattern_gmatch(lua_State *L)
{
    size_t slen;
    struct gmatch_state *gm;
    size_t init;
    luaL_checklstring(L, 1, &slen);
    luaL_checkstring(L, 2);
    init = start_position(luaL_optinteger(L, 3, 1), slen);
    lua_settop(L, 2);
    gm = lua_newuserdatauv(L, sizeof *gm, 0);
    gm->next = init > slen + 1 ? slen + 1 : init - 1; /* past the end: nothing to find */
    gm->last_end = SIZE_MAX;
    lua_pushcclosure(L, gmatch_step, 3);
    return 1;
}

/* ---- gsub -------------------------------------------------------------------------- */

/* Append the replacement string (arg 3) for the match s..e, with %0-%9 and %%. */
static void add_replacement_string(struct pattern_state *st, luaL_Buffer *b, const char *s,
                                   const char *e)
{
    size_t len;
    const char *r = lua_tolstring(st->L, 3, &len);
    const char *r_end = r + len;
    while (r < r_end) {
        const char *esc = memchr(r, PATTERN_ESCAPE, (size_t)(r_end - r));
        if (!esc) {
            luaL_addlstring(b, r, (size_t)(r_end - r));
            return;
        }
        luaL_addlstring(b, r, (size_t)(esc - r));
        r = esc + 1;
        if (r < r_end && *r == PATTERN_ESCAPE) {
            luaL_addchar(b, PATTERN_ESCAPE);
        } else if (r < r_end && isdigit((unsigned char)*r)) {
            if (*r == '0') luaL_addlstring(b, s, (size_t)(e - s));
            else {
                push_capture(st, *r - '1', s, e);
                luaL_addvalue(b); /* a position capture is a number: tostring'd */
            }
        } else {
            luaL_error(st->L, "invalid use of '%c' in replacement string", PATTERN_ESCAPE);
        }
        r++;
    }
}

/* Append the replacement of the match s..e from the table or function at arg 3;
 * false or nil keeps the matched text. */
static void add_replacement_value(struct pattern_state *st, luaL_Buffer *b, const char *s,
                                  const char *e, int type)
{
    lua_State *L = st->L;
    if (type == LUA_TFUNCTION) {
        int n;
        lua_pushvalue(L, 3);
        n = push_captures(st, s, e, 1);
        lua_call(L, n, 1);
    } else {
        push_capture(st, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int pattern_gsub(lua_State *L)
{
    size_t slen, plen;
    const char *s = luaL_checklstring(L, 1, &slen);
    const char *p = luaL_checklstring(L, 2, &plen);
    int type = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)slen + 1);
    lua_Integer n = 0;
    const char *p_end = p + plen;
    const char *from, *last_end = NULL;
    int anchored;
    struct pattern_state st;
    luaL_Buffer b;
    luaL_argexpected(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
                     type == LUA_TTABLE, 3, "string/function/table");
    anchored = plen > 0 && *p == '^';
    if (anchored) p++;
    state_init(&st, L, s, slen, p_end);
    luaL_buffinit(L, &b);
    from = s;
    while (n < max_n) {
        const char *e;
        state_restart(&st);
        e = match_here(&st, from, p);
        if (e && e != last_end) {
            n++;
            if (type == LUA_TSTRING || type == LUA_TNUMBER) add_replacement_string(&st, &b, from, e);
            else add_replacement_value(&st, &b, from, e, type);
            from = last_end = e;
        } else if (from < st.subject_end) {
            luaL_addchar(&b, *from);
            from++;
        } else {
            break;
        }
        if (anchored) break;
    }
    luaL_addlstring(&b, from, (size_t)(st.subject_end - from));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

/* ---- registration ---------------------------------------------------------------------- */

int cm_lua_open_pattern(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"pattern_find", pattern_find},
        {"pattern_match", pattern_match},
        {"pattern_gmatch", pattern_gmatch},
        {"pattern_gsub", pattern_gsub},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    lua_pushinteger(L, (lua_Integer)PATTERN_STEPS_MAX);
    lua_setfield(L, -2, "PATTERN_STEPS_MAX");
    return 0;
}
