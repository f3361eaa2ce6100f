/* clock.c - wall, monotonic and fake time. */
#include "clock.h"

#include <time.h>

static int fake_on;
static double fake_now;

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

void cm_clock_set_fake(double t)
{
    fake_on = 1;
    fake_now = t;
}

void cm_clock_set_real(void) { fake_on = 0; }

int cm_clock_is_fake(void) { return fake_on; }

void cm_clock_advance(double dt)
{
    if (fake_on && dt > 0) fake_now += dt;
}
