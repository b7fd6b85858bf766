/* A test-only LD_PRELOAD shim: shifts the wall clock (CLOCK_REALTIME, gettimeofday, time)
 * by SECURECONF_FAKE_CLOCK_OFFSET seconds and leaves the monotonic clocks alone, so a
 * node's timers and sleeps still fire (shifting the monotonic clock too would stop them).
 * Built with cc by the cluster suite into its temp directory; never part of the product. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long offset_seconds(void) {
    static long cached = -1;
    static int ready = 0;
    if (!ready) {
        const char *v = getenv("SECURECONF_FAKE_CLOCK_OFFSET");
        cached = v ? atol(v) : 0;
        ready = 1;
    }
    return cached;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *) = NULL;
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset_seconds();
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *) = NULL;
    if (!real) real = dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += offset_seconds();
    return rc;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
