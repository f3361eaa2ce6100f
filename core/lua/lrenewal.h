/* lrenewal.h - what other binding units use of lrenewal.c. */
#ifndef CM_LRENEWAL_H
#define CM_LRENEWAL_H

#include "lcore.h"

#include "../renewal.h"

/* Read the renewal options in the table at idx (ratio, explicit_ratio,
 * check_interval; any other key raises, naming it, as does a value out of
 * range) into *o, after cm_renewal_opts_init.  `what` names the caller
 * ("cache:add_many: renew").  Raises only; nothing is allocated. */
void cm_lua_renewal_opts(lua_State *L, int idx, const char *what, struct cm_renewal_opts *o);

/* Push a time: whole seconds as an integer (they print and serialise
 * cleanly), anything else (fractions, infinities) as a float. */
void cm_lua_push_time(lua_State *L, double t);

#endif
