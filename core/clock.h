/* clock.h - the one clock of the process, replaceable by tests.
 *
 * Everything that asks "what time is it" for a decision (renewal windows,
 * staple freshness, lock staleness, timers) asks cm_clock_now(), so a spec can
 * move a certificate through its whole life in milliseconds by faking it.
 */
#ifndef CM_CLOCK_H
#define CM_CLOCK_H

/* Unix time in seconds (fractional): the fake time when set, else the wall clock. */
double cm_clock_now(void);

/* Monotonic seconds for measuring real elapsed time; never faked. */
double cm_clock_monotonic(void);

/* Fake the clock at t (Unix seconds). */
void cm_clock_set_fake(double t);

/* Return to the wall clock. */
void cm_clock_set_real(void);

/* 1 when the clock is fake. */
int cm_clock_is_fake(void);

/* Move a fake clock forward by dt seconds (dt >= 0); no effect when real. */
void cm_clock_advance(double dt);

#endif
