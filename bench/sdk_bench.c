// SPDX-License-Identifier: Apache-2.0
// The SDK's benchmark, through the track-event layer: nanoseconds per event (disabled category, slice begin/end with an interned static name, a counter, an instant with two debug annotations, a raw 1 KiB packet) for 1 and 2 threads, median / p99 / p99.9, beside a bare TSC read and clock_gettime(CLOCK_BOOTTIME) measured the same way.
//
// Three measures per case:
//   - per event: each event between two lfence;rdtsc reads, less the
//     median cost of that pair alone (the "pair" row, reported raw). The
//     tails (p99, p99.9) come from here and include chunk changes, the
//     periodic ClockSnapshot and whatever the machine did. On AMD the TSC
//     advances in steps of about 10 ns, so these are 10 ns-grained.
//   - median: groups of SPN_GROUP events between one pair, less the pair,
//     divided by SPN_GROUP: the median of those per-event costs, fine
//     grained where single events are not. The ratio column is this
//     median over the "tsc" row's (one bare rdtsc, measured the same way),
//     which is the SDK target (median slice event <= 1.6x a TSC read).
//   - mean: whole bursts timed once, divided by their events: the cost of
//     an event with nothing around it.
// The per-event samples are also split by whether the event changed the
// writer's chunk (its chunks counter moved): "chg %" is how many did,
// "chg med" / "chg p90" their cost, "rest p99.9" the tail of all others.
// Chunk changes are the slow path every event pays for in turn, so these
// say whether a tail comes from them or from the rest.
// Events go into a real SMB through real trace writers, made by the host
// callback the way the producer does (one per thread); a drainer thread
// plays the SDK's I/O thread and the service (smb_arbiter_drain, then take,
// copy and free each chunk). Writers wait for the drainer between bursts
// (not timed), so the SMB never fills. The layer picks its clock as it
// would in an app (the TSC where safe). Writers pay the SDK's wake check
// (bench_wake) where the SDK's would. Unlike the SDK's I/O thread, which
// drains when woken and then once per commit period (1 ms) while there is
// more, the drainer polls by default: each writer finds a standby chunk
// (arbiter.h) parked at nearly every chunk change. --drain-us N makes it
// sleep N us after each pass instead; with 1000 (the commit period) a
// writer meets what it would in an app: each drain parks as many standby
// chunks as it listed of the writer (up to its ring, SPN_TW_RING), so a
// writer whose rate holds finds one at nearly every chunk change (one run:
// 98% of slice and counter chunk changes, 85% of args2's, whose bursts
// fill 37 chunks; raw1k's bursts fill ~290, and 13% of its changes find
// one). The others search the SMB at the soft end before (a CAS on a page
// word the drainer wrote last) and queue the full chunk (two more CASes),
// and those are then the largest share of the slow events, so the tail
// shows in "rest p99.9" more than in the chunk changes. The JSON goes to
// sdk_bench[_smbN]_drainN.json.
//
// "raw16" is the trace writer alone writing a packet of the size of a
// slice event (begin, one 16-byte append, end): the floor under every event.
//
// Usage: sdk_bench [samples per case and thread, default 200000]
//                  [--smb-kb N] [--drain-us N]
// --smb-kb sets the SMB size; bursts shrink to fit and the JSON goes to
// bench/results/sdk_bench_smbN.json. The default, 8192 KiB, never fills:
// every chunk a writer takes was last touched long ago, so its lines come
// from memory, streamed by the prefetcher. 256 is the SDK's default SMB:
// chunks come round again while the drainer's core (the service's, in an
// app) still shares the lines it copied, and each store into such a line
// waits for the other copy to go (measured here: raw16 ~10.6 ns instead of
// ~3.5, slice ~15-16.9 instead of ~14.4; a service that flushed the lines
// after copying gave the 8 MiB figures back but halved its commit rate).
// The tails go the other way: at 8 MiB each chunk a writer takes is a 4
// KiB page its TLB no longer holds, and the first store into it waits for
// a page walk (nested, in a VM), which the soft end pays now (arbiter.c,
// smb_warm_standby). 1 thread, slice p99.9: ~100 ns at 8 MiB, 60-90 at
// 1024 KiB, 60-70 at 8 MiB with the SMB on transparent huge pages (shmem
// THP switched on for the test; this machine ships with it off).
#if !defined(__x86_64__)
#include <stdio.h>
int main(void)
{
	fprintf(stderr, "sdk_bench: needs x86-64 (rdtsc)\n");
	return 0;
}
#else
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "bench_smb.h"
#include "smb/shm.h"
#include "spindle/track_event.h"

#define BENCH_SMB_KB 8192u		/* default SMB: 8 MiB */
#define BENCH_BURST 4096u		/* events per burst */
#define BENCH_BURST_1K 1024u		/* 1 KiB packets per burst */
#define BENCH_MAX_THREADS 2
#define BENCH_GROUP 16u			/* events per group sample */
#define BENCH_CHG 0x80000000u		/* sample flag: the event changed chunk */

static struct spn_te_category cat_on = SPN_TE_CATEGORY("bench", "Benchmark events");
static struct spn_te_category cat_off = SPN_TE_CATEGORY("bench.off", "Never enabled");
static struct spn_te_category *const cats[] = { &cat_on, &cat_off };

/* Cases. */
enum bench_kind {
	K_PAIR,		/* the lfence;rdtsc pair alone */
	K_TSC,		/* one rdtsc */
	K_CLOCK,	/* clock_gettime(CLOCK_BOOTTIME) */
	K_DISABLED,	/* SPN_TRACE_BEGIN on a disabled category */
	K_SLICE,	/* SPN_TRACE_BEGIN / SPN_TRACE_END, alternating */
	K_COUNTER,	/* SPN_TRACE_COUNTER */
	K_ARGS2,	/* SPN_TRACE_INSTANT with two annotations */
	K_RAW1K,	/* a 1 KiB packet on the thread's writer */
	K_RAW16,	/* a 16-byte packet on the thread's writer: the floor a
			 * slice event sits on (begin, one append, end) */
};

struct bench_case {
	const char *name;
	enum bench_kind kind;
	int threads;	/* 0: baseline on the main thread */
};

/* ---- Host: one writer per thread, as the producer makes them ------------ */

struct bench_env {
	struct smb_shm shm;
	struct smb_arbiter arb;
	struct spn_te *te;
};

static _Thread_local struct spn_tw *my_tw;

static struct spn_tw *bench_writer(void *ctx, uint32_t inst)
{
	struct bench_env *e = ctx;

	if (inst != 0)
		return NULL;
	if (!my_tw && smb_arbiter_create_writer(&e->arb, 1, &my_tw) != 0)
		return NULL;
	return my_tw;
}

/* ---- Writers ------------------------------------------------------------------ */

struct bench_writer {
	const struct bench_case *bc;
	struct bench_drainer *d;
	pthread_barrier_t *start;
	uint32_t samples;	/* events to time one by one */
	uint32_t *ticks;	/* their TSC ticks */
	uint32_t *gticks;	/* TSC ticks of samples / BENCH_GROUP groups */
	uint32_t ngroups;	/* gticks filled */
	uint64_t burst_ns;	/* wall time of the untimed bursts */
	uint64_t burst_events;	/* events in them */
	uint64_t dropped;	/* packets the writer lost */
	uint8_t blob[1024];	/* raw payload */
};

static uint64_t g_sink;
static uint32_t g_smb_kb = BENCH_SMB_KB;	/* --smb-kb */
static uint32_t g_drain_us;			/* --drain-us (0: the drainer polls) */

/* Events per burst of kind k: at most 4096 (1024 1 KiB packets), and few
 * enough that the bursts of all threads fill at most half the SMB. */
static uint32_t bench_burst(enum bench_kind k)
{
	uint32_t base = k == K_RAW1K ? BENCH_BURST_1K : BENCH_BURST;
	uint32_t size = k == K_RAW1K ? 1040u : 64u; /* bytes per event, at most */
	uint64_t fit = (uint64_t)g_smb_kb * 1024u / 2u / BENCH_MAX_THREADS / size;

	if (fit < base)
		base = fit < BENCH_GROUP ? BENCH_GROUP : (uint32_t)fit / BENCH_GROUP * BENCH_GROUP;
	return base;
}

/* One event of the case; i counts events. */
static inline __attribute__((always_inline)) void bench_event(enum bench_kind k, uint64_t i,
							      const uint8_t *blob)
{
	struct timespec ts;

	switch (k) {
	case K_PAIR:
		break;
	case K_TSC:
		g_sink += __rdtsc();
		break;
	case K_CLOCK:
		clock_gettime(CLOCK_BOOTTIME, &ts);
		g_sink += (uint64_t)ts.tv_nsec;
		break;
	case K_DISABLED:
		SPN_TRACE_BEGIN(cat_off, "Disabled", SPN_ARG("i", i));
		break;
	case K_SLICE:
		if (i & 1)
			SPN_TRACE_END(cat_on);
		else
			SPN_TRACE_BEGIN(cat_on, "Slice");
		break;
	case K_COUNTER:
		SPN_TRACE_COUNTER(cat_on, "counter", (int64_t)i);
		break;
	case K_ARGS2:
		SPN_TRACE_INSTANT(cat_on, "Args", SPN_ARG("count", i), SPN_ARG("ratio", 0.5));
		break;
	case K_RAW16:
		spn_tw_begin_packet(my_tw);
		spn_tw_append(my_tw, blob, 16);
		spn_tw_end_packet(my_tw);
		break;
	case K_RAW1K:
		spn_tw_begin_packet(my_tw);
		spn_tw_varint(my_tw, 8, i);
		spn_tw_bytes(my_tw, 11, blob, 1000);
		spn_tw_end_packet(my_tw);
		break;
	}
}

/* Waits (untimed) until the drainer freed every chunk the writer filled. */
static void bench_wait(struct bench_drainer *d)
{
	const struct spn_tw_stats *st;

	if (!my_tw)
		return;
	st = spn_tw_stats(my_tw);
	while (atomic_load_explicit(&d->freed[spn_tw_writer_id(my_tw)], memory_order_acquire) +
		       1 < st->chunks)
		sched_yield();
}

static void *writer_main(void *arg)
{
	struct bench_writer *w = arg;
	enum bench_kind k = w->bc->kind;
	uint32_t burst = bench_burst(k), i = 0;
	uint64_t ev = 0;

	/* Warm up: the thread's writer, sequence, interning, descriptors. */
	SPN_TRACE_INSTANT(cat_on, "Warmup");
	for (uint32_t n = 0; n < 64; n++)
		bench_event(k, ev++, w->blob);
	bench_wait(w->d);
	pthread_barrier_wait(w->start);
	for (uint32_t b = 0, g = 0; i < w->samples; b++) {
		if (b % 3 == 2) {
			/* groups: as many as fit in one burst */
			for (uint32_t n = 0; n < burst / BENCH_GROUP &&
					     g < w->samples / BENCH_GROUP; n++, g++) {
				uint64_t c0 = bench_tsc();

				for (uint32_t k2 = 0; k2 < BENCH_GROUP; k2++)
					bench_event(k, ev++, w->blob);
				w->gticks[g] = (uint32_t)(bench_tsc() - c0);
			}
			w->ngroups = g;
		} else if (b % 3 == 1) {
			uint64_t t0 = bench_now_ns();

			for (uint32_t n = 0; n < burst; n++)
				bench_event(k, ev++, w->blob);
			w->burst_ns += bench_now_ns() - t0;
			w->burst_events += burst;
		} else {
			uint32_t end = i + burst < w->samples ? i + burst : w->samples;

			for (; i < end; i++) {
				uint64_t chunks = my_tw ? my_tw->stats.chunks : 0;
				uint64_t c0 = bench_tsc(), c1;

				bench_event(k, ev++, w->blob);
				c1 = bench_tsc();
				w->ticks[i] = (uint32_t)(c1 - c0) & ~BENCH_CHG;
				if (my_tw && my_tw->stats.chunks != chunks)
					w->ticks[i] |= BENCH_CHG;
			}
		}
		bench_wait(w->d);
	}
	if (my_tw) {
		w->dropped = spn_tw_stats(my_tw)->packets_dropped;
		spn_tw_destroy(my_tw);
		my_tw = NULL;
	}
	return NULL;
}

/* Percentile p of n sorted samples less `base` ticks, in ns per event for
 * samples of `per` events each; never below 0. */
static double pct_ns(const uint32_t *v, uint32_t n, double p, double base, uint32_t per)
{
	double t;

	if (n == 0)
		return 0;
	t = (double)v[(uint32_t)(p * (n - 1))] - base;
	return t > 0 ? t / g_tsc_per_ns / per : 0;
}

/* Chunk-change figures of one case (see the top). */
struct bench_chg {
	double share;	/* of the events, in % */
	double med;	/* median ns of the events that changed chunk */
	double p90;	/* their p90 */
	double rest999;	/* p99.9 ns of the other events */
};

/* Splits the n samples of `all` by their BENCH_CHG flag into `tmp` (same
 * size), fills *out from the two sides, and clears the flags in `all`. */
static void bench_split_chg(uint32_t *all, uint32_t n, uint32_t *tmp, double base,
			    struct bench_chg *out)
{
	uint32_t nc = 0, nr = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (all[i] & BENCH_CHG)
			tmp[n - 1 - nc++] = all[i] & ~BENCH_CHG;
		else
			tmp[nr++] = all[i];
		all[i] &= ~BENCH_CHG;
	}
	qsort(tmp, nr, sizeof(*tmp), bench_cmp_u32);
	qsort(tmp + nr, nc, sizeof(*tmp), bench_cmp_u32);
	out->share = n ? 100.0 * nc / n : 0;
	out->med = pct_ns(tmp + nr, nc, 0.5, base, 1);
	out->p90 = pct_ns(tmp + nr, nc, 0.9, base, 1);
	out->rest999 = pct_ns(tmp, nr, 0.999, base, 1);
}

/* Baselines on the main thread: per-op and group samples, and the
 * untimed mean. */
static double bench_baseline(enum bench_kind k, uint32_t *ticks, uint32_t n,
			     uint32_t *gticks, uint32_t *ng)
{
	static const uint8_t blob[1024];
	uint64_t t0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t c0 = bench_tsc(), c1;

		bench_event(k, i, blob);
		c1 = bench_tsc();
		ticks[i] = (uint32_t)(c1 - c0);
	}
	*ng = n / BENCH_GROUP;
	for (uint32_t g = 0; g < *ng; g++) {
		uint64_t c0 = bench_tsc();

		for (uint32_t i = 0; i < BENCH_GROUP; i++)
			bench_event(k, i, blob);
		gticks[g] = (uint32_t)(bench_tsc() - c0);
	}
	t0 = bench_now_ns();
	for (uint32_t i = 0; i < n; i++)
		bench_event(k, i, blob);
	return (double)(bench_now_ns() - t0) / n;
}

/* Runs one threaded case; fills the samples (per event and per group),
 * returns the mean. */
static double bench_run(const struct bench_case *bc, uint32_t samples, uint32_t *all,
			uint32_t *n_all, uint32_t *gall, uint32_t *n_gall, uint64_t *dropped,
			enum spn_te_clock *clock)
{
	struct spn_te_opts o = { .categories = cats, .ncategories = 2, .writer = bench_writer };
	struct bench_env *e = calloc(1, sizeof(*e));
	struct bench_drainer *d = calloc(1, sizeof(*d));
	struct bench_writer *w = calloc(BENCH_MAX_THREADS, sizeof(*w));
	struct smb_arbiter_opts ao = { .direct_patching = true, .wake = bench_wake };
	pthread_t th[BENCH_MAX_THREADS], dt;
	pthread_barrier_t start;
	double mean = 0;

	*dropped = 0;
	o.ctx = e;
	smb_shm_init(&e->shm);
	if (!e || !d || !w || smb_shm_create(&e->shm, (size_t)g_smb_kb * 1024u, SPN_SMB_DEFAULT_PAGE_SIZE) ||
	    smb_arbiter_init(&e->arb, &e->shm.smb, &ao) || smb_commit_init(&d->commit) ||
	    spn_te_create(&o, &e->te) ||
	    spn_te_start(e->te, 0, (const uint8_t *)"\x12\x05\x62\x65\x6e\x63\x68\x0a\x01\x2a",
			 10)) {
		fprintf(stderr, "sdk_bench: set-up failed\n");
		exit(1);
	}
	/* The config above: enabled_categories "bench", disabled "*". */
	if (!SPN_TE_ENABLED(cat_on) || SPN_TE_ENABLED(cat_off)) {
		fprintf(stderr, "sdk_bench: category config not applied\n");
		exit(1);
	}
	*clock = spn_te_clock_used(e->te);
	d->arb = &e->arb;
	d->who = "sdk_bench";
	d->period_ns = (long)g_drain_us * 1000L;
	pthread_barrier_init(&start, NULL, (unsigned)bc->threads);
	pthread_create(&dt, NULL, bench_drainer_main, d);
	for (int i = 0; i < bc->threads; i++) {
		w[i].bc = bc;
		w[i].d = d;
		w[i].start = &start;
		w[i].samples = samples;
		w[i].ticks = all + (size_t)i * samples;
		w[i].gticks = gall + (size_t)i * (samples / BENCH_GROUP);
		memset(w[i].blob, 0x5A, sizeof(w[i].blob));
		pthread_create(&th[i], NULL, writer_main, &w[i]);
	}
	*n_gall = 0;
	for (int i = 0; i < bc->threads; i++) {
		pthread_join(th[i], NULL);
		/* close the gaps of threads that filled fewer groups */
		memmove(gall + *n_gall, w[i].gticks, w[i].ngroups * sizeof(*gall));
		*n_gall += w[i].ngroups;
		mean += (double)w[i].burst_ns / (double)w[i].burst_events;
		*dropped += w[i].dropped;
	}
	atomic_store_explicit(&d->stop, 1, memory_order_release);
	pthread_join(dt, NULL);
	pthread_barrier_destroy(&start);
	*n_all = samples * (uint32_t)bc->threads;
	spn_te_destroy(e->te);
	smb_commit_fini(&d->commit);
	smb_arbiter_destroy(&e->arb);
	smb_shm_close(&e->shm);
	free(e);
	free(d);
	free(w);
	return mean / bc->threads;
}

int main(int argc, char **argv)
{
	static const struct bench_case cases[] = {
		{ "pair", K_PAIR, 0 },		{ "tsc", K_TSC, 0 },
		{ "clock_gettime", K_CLOCK, 0 }, { "disabled", K_DISABLED, 1 },
		{ "disabled", K_DISABLED, 2 },	{ "slice", K_SLICE, 1 },
		{ "slice", K_SLICE, 2 },	{ "counter", K_COUNTER, 1 },
		{ "counter", K_COUNTER, 2 },	{ "args2", K_ARGS2, 1 },
		{ "args2", K_ARGS2, 2 },	{ "raw1k", K_RAW1K, 1 },
		{ "raw1k", K_RAW1K, 2 },	{ "raw16", K_RAW16, 1 },
		{ "raw16", K_RAW16, 2 },
	};
	uint32_t samples = 200000u;
	char name[32] = "sdk_bench";
	double tsc_med = 0, pair_ticks = 0, pair_gticks = 0, mean1[16] = { 0 };
	enum spn_te_clock clock = SPN_TE_CLOCK_AUTO;
	struct bench_json j;
	uint32_t *all, *gall, *tmp;

	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--smb-kb") == 0 && a + 1 < argc) {
			g_smb_kb = (uint32_t)strtoul(argv[++a], NULL, 10);
			if (g_smb_kb < 64 || g_smb_kb > 32768 || g_smb_kb % 4) {
				fprintf(stderr, "sdk_bench: --smb-kb: 64..32768, a multiple of 4\n");
				return 2;
			}
		} else if (strcmp(argv[a], "--drain-us") == 0 && a + 1 < argc) {
			g_drain_us = (uint32_t)strtoul(argv[++a], NULL, 10);
			if (g_drain_us > 100000) {
				fprintf(stderr, "sdk_bench: --drain-us: 0..100000\n");
				return 2;
			}
		} else if (argv[a][0] >= '0' && argv[a][0] <= '9') {
			samples = (uint32_t)strtoul(argv[a], NULL, 10);
		} else {
			fprintf(stderr, "usage: sdk_bench [samples] [--smb-kb N] [--drain-us N]\n");
			return 2;
		}
	}
	if (g_smb_kb != BENCH_SMB_KB)
		snprintf(name, sizeof(name), "sdk_bench_smb%u", g_smb_kb);
	if (g_drain_us)
		snprintf(name + strlen(name), sizeof(name) - strlen(name), "_drain%u",
			 g_drain_us);
	/* Per-event samples come one burst at a time, with a timed burst and
	 * a burst of groups after each: fewer than two bursts' worth would
	 * leave those empty (a mean of 0/0, a median of nothing). */
	if (samples < 2u * BENCH_BURST + 1u)
		samples = 2u * BENCH_BURST + 1u;
	all = malloc(sizeof(*all) * samples * BENCH_MAX_THREADS);
	tmp = malloc(sizeof(*tmp) * samples * BENCH_MAX_THREADS);
	gall = malloc(sizeof(*gall) * (samples / BENCH_GROUP) * BENCH_MAX_THREADS);
	if (!all || !tmp || !gall)
		return 1;
	bench_calibrate();
	if (bench_json_open(&j, SPN_BENCH_RESULTS_DIR, name) != 0)
		fprintf(stderr, "sdk_bench: cannot write %s/%s.json: %s\n",
			SPN_BENCH_RESULTS_DIR, name, strerror(errno));
	printf("sdk_bench: %ld cores, TSC %.3f GHz, %u samples per thread, %u KiB SMB, "
	       "drainer thread %s", bench_cores(), g_tsc_per_ns, samples, g_smb_kb,
	       g_drain_us ? "every" : "polling\n");
	if (g_drain_us)
		printf(" %u us\n", g_drain_us);
	printf("%-14s %7s %8s %8s %8s %9s %8s %8s %8s %8s %6s %8s %8s %10s\n", "case",
	       "threads", "med ns", "/tsc med", "p99 ns", "p99.9 ns", "mean ns", "max ns",
	       "/1 thr", "dropped", "chg %", "chg med", "chg p90", "rest p99.9");
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct bench_case *bc = &cases[c];
		uint64_t dropped = 0;
		uint32_t n = samples, ng = 0;
		double mean, med, p99, p999, pmax, vs1 = 1.0;
		struct bench_chg chg = { 0 };

		if (bc->threads == 0)
			mean = bench_baseline(bc->kind, all, samples, gall, &ng);
		else
			mean = bench_run(bc, samples, all, &n, gall, &ng, &dropped, &clock);
		if (bc->threads > 0)
			bench_split_chg(all, n, tmp, pair_ticks, &chg);
		qsort(all, n, sizeof(*all), bench_cmp_u32);
		qsort(gall, ng, sizeof(*gall), bench_cmp_u32);
		if (bc->kind == K_PAIR) {
			/* the pair's own median, subtracted from every other row */
			pair_ticks = all[(n - 1) / 2];
			pair_gticks = gall[(ng - 1) / 2];
			med = pair_ticks / g_tsc_per_ns;
			p99 = p999 = pmax = med;
		} else {
			med = pct_ns(gall, ng, 0.5, pair_gticks, BENCH_GROUP);
			p99 = pct_ns(all, n, 0.99, pair_ticks, 1);
			p999 = pct_ns(all, n, 0.999, pair_ticks, 1);
			pmax = pct_ns(all, n, 1.0, pair_ticks, 1);
		}
		if (bc->kind == K_TSC)
			tsc_med = med;
		if (bc->threads == 1)
			mean1[bc->kind] = mean;
		if (bc->threads == 2 && mean1[bc->kind] > 0)
			vs1 = mean / mean1[bc->kind];
		printf("%-14s %7d %8.2f %8.2f %8.1f %9.1f %8.2f %8.0f %8.2f %8llu %6.2f %8.1f "
		       "%8.1f %10.1f\n",
		       bc->name, bc->threads, med, tsc_med > 0 ? med / tsc_med : 0, p99, p999,
		       mean, pmax, vs1, (unsigned long long)dropped, chg.share, chg.med, chg.p90,
		       chg.rest999);
		bench_json_result(&j, "\"case\": \"%s\", \"threads\": %d, \"median_ns\": %.2f, "
				  "\"median_over_tsc\": %.2f, \"p99_ns\": %.1f, \"p999_ns\": %.1f, "
				  "\"max_ns\": %.0f, \"mean_ns\": %.2f, "
				  "\"two_over_one_thread\": %.2f, \"dropped\": %llu, "
				  "\"chunk_change_pct\": %.2f, \"chunk_change_median_ns\": %.1f, "
				  "\"chunk_change_p90_ns\": %.1f, \"other_p999_ns\": %.1f, "
				  "\"smb_kb\": %u, \"drain_us\": %u",
				  bc->name, bc->threads, med, tsc_med > 0 ? med / tsc_med : 0, p99,
				  p999, pmax, mean, vs1, (unsigned long long)dropped, chg.share,
				  chg.med, chg.p90, chg.rest999, g_smb_kb, g_drain_us);
	}
	printf("clock: %s; \"pair\" is the lfence;rdtsc pair every sample is taken with "
	       "(its median is subtracted from the other rows); med = median of %u-event "
	       "groups per event\n",
	       clock == SPN_TE_CLOCK_TSC ? "TSC on clock 64" : "CLOCK_BOOTTIME", BENCH_GROUP);
	bench_json_result(&j, "\"case\": \"clock\", \"value\": \"%s\"",
			  clock == SPN_TE_CLOCK_TSC ? "tsc" : "boottime");
	free(all);
	free(tmp);
	free(gall);
	return bench_json_close(&j) != 0;
}
#endif
