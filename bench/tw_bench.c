// SPDX-License-Identifier: Apache-2.0
// Benchmark of the SDK trace writer's hot path: nanoseconds per raw packet (a small TrackEvent-shaped one and a 1 KiB one), 1 and 2 writer threads, median / p99 / p99.9, beside a bare rdtsc pair and a clock_gettime read timed the same way.
//
// Each packet is timed on its own with rdtsc (lfence before each read), so
// every sample includes one rdtsc pair: the "rdtsc" row is that pair with
// nothing between, the floor of the method; "clock_gettime" is one
// CLOCK_MONOTONIC read timed the same way. Every other burst is not timed
// per packet but as a whole: the "mean ns" column is that burst time per
// packet, without the rdtsc pairs. A drainer thread plays the SDK's
// I/O thread and the service (smb_arbiter_drain, then take, copy and free
// each chunk). Writers work in bursts that fit in the SMB and wait for the
// drainer between bursts (not timed), so the numbers are the producer's
// cost, chunk switches included, without the SMB ever filling. Direct SMB
// patching is on (spindled allows it). "seq_cst" rows run the writers
// without membarrier (a seq_cst store per packet instead of a compiler
// barrier).
//
// Usage: tw_bench [samples per case and thread, default 200000]
#if !defined(__x86_64__)
#include <stdio.h>
int main(void)
{
	fprintf(stderr, "tw_bench: needs x86-64 (rdtsc)\n");
	return 0;
}
#else
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

#include "bench_smb.h"
#include "smb/shm.h"
#include "spindle/trace_writer.h"

#define BENCH_SMB_SIZE (4u << 20)   /* 4 MiB: a burst of 1 KiB packets fits */
#define BENCH_BURST_SMALL 4096u	     /* packets per burst */
#define BENCH_BURST_1K 1024u
#define BENCH_MAX_THREADS 2

/* One case. */
struct bench_case {
	const char *name;	/* "small", "1k", "rdtsc", "clock_gettime" */
	int threads;		/* writer threads */
	bool heavy;		/* writers without membarrier */
};

/* One writer thread. */
struct bench_writer {
	const struct bench_case *bc;	/* what to run */
	struct smb_arbiter *arb;	/* where */
	struct bench_drainer *d;	/* to wait for between bursts */
	pthread_barrier_t *start;	/* all threads start together */
	uint32_t samples;		/* packets to time */
	uint32_t *ticks;		/* per-packet TSC ticks */
	uint64_t busy_ns;		/* wall time inside untimed bursts */
	uint64_t busy_packets;		/* packets in untimed bursts */
	uint64_t dropped;		/* packets the writer dropped */
	int err;			/* 0 or -errno */
	uint8_t blob[1024];		/* 1 KiB payload source */
};

/* A TrackEvent-shaped packet: timestamp, track_event {type, track_uuid,
 * name_iid, category_iids}, sequence_flags: 25 bytes. */
static inline void bench_small(struct spn_tw *tw, uint64_t i)
{
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 8, 1700000000000000000ull + i * 1000u);
	spn_tw_begin_nested(tw, 11);
	spn_tw_varint(tw, 9, 1);
	spn_tw_varint(tw, 11, 0x123456789ull);
	spn_tw_varint(tw, 10, 7);
	spn_tw_varint(tw, 3, 2);
	spn_tw_end_nested(tw);
	spn_tw_varint(tw, 13, 2);
	spn_tw_end_packet(tw);
}

/* A 1 KiB packet: timestamp and a nested message around 1000 bytes. */
static inline void bench_1k(struct spn_tw *tw, uint64_t i, const uint8_t *blob)
{
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 8, 1700000000000000000ull + i * 1000u);
	spn_tw_begin_nested(tw, 11);
	spn_tw_bytes(tw, 23, blob, 1000);
	spn_tw_end_nested(tw);
	spn_tw_end_packet(tw);
}

static void *writer_main(void *arg)
{
	struct bench_writer *w = arg;
	struct spn_tw *tw = NULL;
	bool small = w->bc->name[0] == 's';
	uint32_t burst = small ? BENCH_BURST_SMALL : BENCH_BURST_1K, i = 0, b = 0;

	w->err = smb_arbiter_create_writer(w->arb, 1, &tw);
	pthread_barrier_wait(w->start);
	if (w->err)
		return NULL;
	while (i < w->samples) {
		uint64_t t0 = bench_now_ns(), chunks0 = tw->stats.chunks;
		uint32_t end = i + burst < w->samples ? i + burst : w->samples;

		if (b++ % 2) {
			/* Untimed burst: whole-burst time only. */
			for (uint32_t k = 0; k < burst; k++) {
				if (small)
					bench_small(tw, k);
				else
					bench_1k(tw, k, w->blob);
			}
			w->busy_ns += bench_now_ns() - t0;
			w->busy_packets += burst;
		} else {
			for (; i < end; i++) {
				uint64_t c0 = bench_tsc(), c1;

				if (small)
					bench_small(tw, i);
				else
					bench_1k(tw, i, w->blob);
				c1 = bench_tsc();
				w->ticks[i] = (uint32_t)(c1 - c0);
			}
		}
		/* Let the drainer free what the burst filled (all but the
		 * chunk we hold), untimed. */
		while (atomic_load_explicit(&w->d->freed[tw->writer_id], memory_order_acquire) <
		       tw->stats.chunks - 1 && tw->stats.chunks > chunks0)
			sched_yield();
	}
	w->dropped = tw->stats.packets_dropped;
	spn_tw_destroy(tw);
	return NULL;
}

/* Baselines: the rdtsc pair alone, and one clock_gettime. */
static void bench_baseline(const struct bench_case *bc, uint32_t *ticks, uint32_t n)
{
	struct timespec ts;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t c0 = bench_tsc(), c1;

		if (bc->name[0] == 'c')
			clock_gettime(CLOCK_MONOTONIC, &ts);
		c1 = bench_tsc();
		ticks[i] = (uint32_t)(c1 - c0);
	}
}

/* Percentile p (0..1) of sorted ticks, in ns. */
static double pct_ns(const uint32_t *sorted, uint32_t n, double p)
{
	uint32_t k = (uint32_t)(p * (n - 1));

	return sorted[k] / g_tsc_per_ns;
}

/* Runs one case; fills the sorted samples and returns the mean ns per
 * packet of the untimed bursts (0 for baselines). */
static double bench_run(const struct bench_case *bc, uint32_t samples, uint32_t *all,
			uint32_t *n_all, uint64_t *dropped)
{
	struct smb_arbiter_opts o = { .direct_patching = true, .wake = bench_wake,
				      .force_heavy_fence = bc->heavy };
	struct bench_writer *w;
	struct bench_drainer *d;
	pthread_t th[BENCH_MAX_THREADS], dt;
	pthread_barrier_t start;
	struct smb_arbiter arb;
	struct smb_shm shm;
	double ns = 0;
	int i;

	*dropped = 0;
	if (bc->threads == 0) {
		bench_baseline(bc, all, samples);
		*n_all = samples;
		qsort(all, samples, sizeof(*all), bench_cmp_u32);
		return 0;
	}
	smb_shm_init(&shm);
	d = calloc(1, sizeof(*d));
	w = calloc((size_t)bc->threads, sizeof(*w));
	if (!d || !w || smb_shm_create(&shm, BENCH_SMB_SIZE, SPN_SMB_DEFAULT_PAGE_SIZE) ||
	    smb_arbiter_init(&arb, &shm.smb, &o) || smb_commit_init(&d->commit)) {
		fprintf(stderr, "tw_bench: set-up failed\n");
		exit(1);
	}
	d->arb = &arb;
	d->who = "tw_bench";
	pthread_barrier_init(&start, NULL, (unsigned)bc->threads);
	pthread_create(&dt, NULL, bench_drainer_main, d);
	for (i = 0; i < bc->threads; i++) {
		w[i].bc = bc;
		w[i].arb = &arb;
		w[i].d = d;
		w[i].start = &start;
		w[i].samples = samples;
		w[i].ticks = all + (size_t)i * samples;
		memset(w[i].blob, 0x5A, sizeof(w[i].blob));
		pthread_create(&th[i], NULL, writer_main, &w[i]);
	}
	for (i = 0; i < bc->threads; i++) {
		pthread_join(th[i], NULL);
		if (w[i].err) {
			fprintf(stderr, "tw_bench: writer: %s\n", strerror(-w[i].err));
			exit(1);
		}
		ns += (double)w[i].busy_ns / (double)w[i].busy_packets;
		*dropped += w[i].dropped;
	}
	atomic_store_explicit(&d->stop, 1, memory_order_release);
	pthread_join(dt, NULL);
	pthread_barrier_destroy(&start);
	*n_all = samples * (uint32_t)bc->threads;
	qsort(all, *n_all, sizeof(*all), bench_cmp_u32);
	smb_commit_fini(&d->commit);
	smb_arbiter_destroy(&arb);
	smb_shm_close(&shm);
	free(d);
	free(w);
	return ns / bc->threads;
}

int main(int argc, char **argv)
{
	static const struct bench_case cases[] = {
		{ "rdtsc", 0, false },	       { "clock_gettime", 0, false },
		{ "small", 1, false },	       { "small", 2, false },
		{ "1k", 1, false },	       { "1k", 2, false },
		{ "small seq_cst", 1, true },  { "small seq_cst", 2, true },
	};
	uint32_t samples = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 200000u;
	uint32_t *all;
	struct bench_json j;

	if (samples < 1000)
		samples = 1000;
	all = malloc(sizeof(*all) * samples * BENCH_MAX_THREADS);
	if (!all)
		return 1;
	bench_calibrate();
	if (bench_json_open(&j, SPN_BENCH_RESULTS_DIR, "tw_bench") != 0)
		fprintf(stderr, "tw_bench: cannot write %s/tw_bench.json: %s\n",
			SPN_BENCH_RESULTS_DIR, strerror(errno));
	printf("tw_bench: %ld cores, TSC %.3f GHz, %u samples per thread, "
	       "%u KiB SMB, drainer thread on\n",
	       bench_cores(), g_tsc_per_ns, samples, BENCH_SMB_SIZE / 1024);
	printf("%-14s %7s %9s %9s %9s %8s %8s\n", "case", "threads", "p50 ns", "p99 ns",
	       "p99.9 ns", "mean ns", "dropped");
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct bench_case *bc = &cases[c];
		uint64_t dropped;
		uint32_t n;
		double mean = bench_run(bc, samples, all, &n, &dropped);
		double p50 = pct_ns(all, n, 0.5), p99 = pct_ns(all, n, 0.99),
		       p999 = pct_ns(all, n, 0.999);

		printf("%-14s %7d %9.1f %9.1f %9.1f %8.1f %8llu\n", bc->name, bc->threads,
		       p50, p99, p999, mean, (unsigned long long)dropped);
		bench_json_result(&j, "\"case\": \"%s\", \"threads\": %d, \"p50_ns\": %.1f, "
				  "\"p99_ns\": %.1f, \"p999_ns\": %.1f, "
				  "\"mean_ns_untimed\": %.1f, \"dropped\": %llu",
				  bc->name, bc->threads, p50, p99, p999, mean,
				  (unsigned long long)dropped);
	}
	free(all);
	return bench_json_close(&j) != 0;
}
#endif
