// SPDX-License-Identifier: Apache-2.0
// The track-event clock: picks the cheapest correct timestamp source (the TSC where the kernel itself trusts it, else CLOCK_BOOTTIME) and calibrates the TSC against BOOTTIME.
//
// Why the TSC is correct only sometimes: it must tick at a constant rate
// whatever the CPU's power state (CPUID "invariant TSC") and agree across
// CPUs. The kernel checks the second at boot and keeps using "tsc" as its
// clocksource only if it holds, so we require both the CPUID bit and the
// current clocksource being "tsc". Then BOOTTIME is a linear function of
// the TSC between NTP frequency adjustments, and the trace can convert it
// through ClockSnapshots (track-event.md §8.3): each sequence times events
// on clock 64 = base_ns + (tsc - base_tsc) * mult, continuous and
// monotonic, and pairs it with BOOTTIME when its state is cleared and
// every snapshot period. mult starts from a 2 ms calibration at creation
// and is refined from the anchor pair each time a sequence takes a
// snapshot, so its error shrinks as the process runs (a sequence picks the
// refined value up at its next snapshot, without a jump in clock 64).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "sdk/track_event_int.h"

/* Calibration window at creation. */
#define TE_CALIBRATE_NS 2000000ull
/* Refinement needs at least this much time since the anchor. */
#define TE_REFINE_MIN_NS 50000000ull
/* Readings taken by te_clock_pair(); the tightest one wins. */
#define TE_PAIR_TRIES 4

uint64_t te_boottime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t spn_te_boottime_ns(void)
{
	return te_boottime();
}

void te_clock_pair(uint64_t *tsc, uint64_t *ns)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < TE_PAIR_TRIES; i++) {
		uint64_t t1 = te_rdtsc();
		uint64_t b = te_boottime();
		uint64_t t2 = te_rdtsc();

		if (i == 0 || t2 - t1 < best) {
			best = t2 - t1;
			*tsc = t1 + (t2 - t1) / 2;
			*ns = b;
		}
	}
}

/* Is the kernel's current clocksource the TSC? */
static bool te_kernel_uses_tsc(void)
{
	char buf[32] = { 0 };
	int fd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource",
		      O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n >= 3 && strncmp(buf, "tsc", 3) == 0 && (n == 3 || buf[3] == '\n');
}

/* Does the CPU say its TSC is invariant? */
static bool te_tsc_invariant(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;

	if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
		return false;
	if (!__get_cpuid(0x80000007u, &a, &b, &c, &d))
		return false;
	return (d >> 8) & 1u;
#else
	return false;
#endif
}

/* 32.32 fixed-point ns per tick from two spans. */
static uint64_t te_mult(uint64_t dns, uint64_t dtsc)
{
	return (uint64_t)((double)dns / (double)dtsc * 4294967296.0);
}

void te_clock_refine(struct te_clock *c, uint64_t tsc, uint64_t ns)
{
	if (c->kind != SPN_TE_CLOCK_TSC || tsc <= c->tsc0 || ns < c->ns0 + TE_REFINE_MIN_NS)
		return;
	/* Relaxed: a self-contained estimate; readers take any recent one. */
	atomic_store_explicit(&c->mult, te_mult(ns - c->ns0, tsc - c->tsc0),
			      memory_order_relaxed);
}

int te_clock_init(struct te_clock *c, enum spn_te_clock want, uint32_t period_ms)
{
	uint64_t t1, n1;
	bool ok;

	memset(c, 0, sizeof(*c));
	c->period_ns = (uint64_t)(period_ms ? period_ms : TE_SNAPSHOT_PERIOD_MS) * 1000000ull;
	c->kind = SPN_TE_CLOCK_BOOTTIME;
	if (want == SPN_TE_CLOCK_BOOTTIME)
		return 0;
	ok = te_tsc_invariant() && te_kernel_uses_tsc();
	if (!ok)
		return want == SPN_TE_CLOCK_TSC ? -ENOTSUP : 0;
	te_clock_pair(&c->tsc0, &c->ns0);
	do {
		te_clock_pair(&t1, &n1);
	} while (n1 < c->ns0 + TE_CALIBRATE_NS);
	if (t1 <= c->tsc0)
		return want == SPN_TE_CLOCK_TSC ? -ENOTSUP : 0;
	atomic_init(&c->mult, te_mult(n1 - c->ns0, t1 - c->tsc0));
	c->kind = SPN_TE_CLOCK_TSC;
	return 0;
}
