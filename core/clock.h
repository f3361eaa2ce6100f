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

/* Seconds elapsed on a clock that never jumps and keeps counting while the
 * machine is suspended (CLOCK_BOOTTIME): what the loop's timers and the
 * engine's pass intervals and back-offs are measured on, so a wall-clock step
 * neither stretches nor shrinks them and a resume finds them due.  With a
 * fake clock it is fake too: cm_clock_advance moves it with the wall time,
 * cm_clock_jump and cm_clock_set_fake (while fake) move only the wall time. */
double cm_clock_elapsed(void);

/* Fake the clock at t (Unix seconds).  While the clock is fake already this
 * is a step of the wall clock only (the elapsed clock does not move). */
void cm_clock_set_fake(double t);

/* Return to the wall clock. */
void cm_clock_set_real(void);

/* 1 when the clock is fake. */
int cm_clock_is_fake(void);

/* Move a fake clock forward by dt seconds (dt >= 0); no effect when real. */
void cm_clock_advance(double dt);

/* Step a fake wall clock by dt seconds (either sign), the elapsed clock
 * unchanged: an NTP step or an operator's `date -s`.  No effect when real. */
void cm_clock_jump(double dt);

#endif
