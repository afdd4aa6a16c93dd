/*
 * clockshift.c — a clock-step shim for schakeld (LD_PRELOAD, tests only).
 *
 * Wraps clock_gettime and time (what schakeld reads the time of day
 * with; gettimeofday is left alone): the system clock
 * (CLOCK_REALTIME and its coarse variant) reads as many seconds later as
 * the file named by SCHAKEL_TEST_CLOCK_SHIFT says (a signed decimal; no
 * file or no number: 0), as a clock stepped by an administrator or a
 * wrong time server would. Every other clock (CLOCK_MONOTONIC,
 * CLOCK_BOOTTIME) is left alone. The file is read again at most every
 * 10 ms. Trusts the environment it is given; never fails otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The shim's own entry points; the process calls them in place of libc's. */
int clock_gettime(clockid_t which, struct timespec *ts);
time_t time(time_t *out);

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime(void)
{
    static _Atomic(clock_gettime_fn) real;
    clock_gettime_fn fn = atomic_load(&real);
    if (fn == NULL) {
        fn = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&real, fn);
    }
    return fn;
}

static _Atomic long long shift_s;
static _Atomic long long shift_read_ms = -1000000;

/* The shift in seconds, read from its file at most every 10 ms. */
static long long clockshift_seconds(void)
{
    struct timespec mono;
    if (real_clock_gettime()(CLOCK_MONOTONIC, &mono) != 0)
        return atomic_load(&shift_s);
    long long now_ms = (long long)mono.tv_sec * 1000 + mono.tv_nsec / 1000000;
    if (now_ms - atomic_load(&shift_read_ms) < 10)
        return atomic_load(&shift_s);
    atomic_store(&shift_read_ms, now_ms);
    const char *path = getenv("SCHAKEL_TEST_CLOCK_SHIFT");
    long long value = 0;
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        char text[32];
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        if (n > 0) {
            text[n] = '\0';
            value = strtoll(text, NULL, 10);
        }
    }
    atomic_store(&shift_s, value);
    return value;
}

int clock_gettime(clockid_t which, struct timespec *ts)
{
    int rc = real_clock_gettime()(which, ts);
    if (rc == 0 && (which == CLOCK_REALTIME || which == CLOCK_REALTIME_COARSE))
        ts->tv_sec += (time_t)clockshift_seconds();
    return rc;
}

time_t time(time_t *out)
{
    struct timespec ts;
    time_t now = clock_gettime(CLOCK_REALTIME, &ts) == 0 ? ts.tv_sec : (time_t)-1;
    if (out != NULL)
        *out = now;
    return now;
}
