/* clock.c - wall, monotonic and fake time. */
#include "clock.h"

#include <time.h>

static int fake_on;
static double fake_now;
static double fake_elapsed;
static double elapsed_offset; /* real elapsed = boot time + this: no jump when a fake clock ends */

double cm_clock_now(void)
{
    struct timespec ts;
    if (fake_on) return fake_now;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (double)time(NULL);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double cm_clock_monotonic(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double real_elapsed(void)
{
    struct timespec ts;
#ifdef CLOCK_BOOTTIME
    if (clock_gettime(CLOCK_BOOTTIME, &ts) == 0) return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
    return cm_clock_monotonic();
}

double cm_clock_elapsed(void) { return fake_on ? fake_elapsed : real_elapsed() + elapsed_offset; }

void cm_clock_set_fake(double t)
{
    if (!fake_on) fake_elapsed = real_elapsed() + elapsed_offset; /* continues from the real one */
    fake_on = 1;
    fake_now = t;
}

void cm_clock_set_real(void)
{
    /* the elapsed clock goes on from where the fake one was: never backwards */
    if (fake_on) elapsed_offset = fake_elapsed - real_elapsed();
    fake_on = 0;
}

int cm_clock_is_fake(void) { return fake_on; }

void cm_clock_advance(double dt)
{
    if (fake_on && dt > 0) {
        fake_now += dt;
        fake_elapsed += dt;
    }
}

void cm_clock_jump(double dt)
{
    if (fake_on) fake_now += dt;
}
