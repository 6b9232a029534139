// SPDX-License-Identifier: Apache-2.0
// Concurrency tests of the SDK trace writer and arbiter (also run under ThreadSanitizer): 1,000 threads on the default SMB, writers racing the drain, direct patching and reclaim, and stall mode, all read back byte-exact and in order through an in-process service thread.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sdk_test_gen.h"
#include "sdk_test_service.h"
#include "smb/arbiter.h"
#include "smb/shm.h"
#include "spindle/trace_writer.h"

#if defined(__SANITIZE_THREAD__)
#define SPN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPN_TSAN 1
#endif
#endif
#ifndef SPN_TSAN
#define SPN_TSAN 0
#endif

#define MAX_STREAMS 1024u

/* One run: an SMB, its arbiter, the service thread and what it verified. */
struct run {
	struct smb_shm shm;
	struct smb_arbiter arb;
	struct test_service ts;
	pthread_t svc;			/* the service (and I/O) thread */
	_Atomic int stop;		/* main -> service: writers are done */
	uint32_t sweep_us;		/* reclaim every this often (0: only on
					 * pressure) */
	uint32_t pump_sleep_us;		/* pause between pumps */
	/* verified by the service thread only */
	uint32_t next_seq[MAX_STREAMS];	/* next expected seq per stream */
	uint64_t bad;			/* packets that did not match, or a
					 * gap with no loss signal */
	uint64_t signalled;		/* packets missing before a packet that
					 * says previous_packet_dropped */
	uint64_t losses;		/* packets after a loss */
	uint64_t lost_field;		/* packets with previous_packet_dropped */
	uint64_t packets;		/* packets read back */
	uint64_t sweeps;		/* periodic reclaim rounds */
};

static void run_cb(void *ctx, uint16_t wid, const uint8_t *d, size_t len, bool loss)
{
	struct run *r = ctx;
	struct gen_found f;

	(void)wid;
	r->packets++;
	if (!gen_check(d, len, &f) || f.stream >= MAX_STREAMS ||
	    f.seq < r->next_seq[f.stream] ||
	    (f.seq > r->next_seq[f.stream] && !f.lost)) {
		r->bad++;
		return;
	}
	r->signalled += f.seq - r->next_seq[f.stream];
	r->next_seq[f.stream] = f.seq + 1;
	r->losses += loss;
	r->lost_field += f.lost != 0;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_us(uint32_t us)
{
	struct timespec ts = { us / 1000000u, (long)(us % 1000000u) * 1000L };

	nanosleep(&ts, NULL);
}

/* The I/O thread + service: pump, reclaim periodically, until stopped;
 * then a last pump after every writer is gone. */
static void *svc_main(void *arg)
{
	struct run *r = arg;
	uint64_t last = now_us();

	while (!atomic_load_explicit(&r->stop, memory_order_acquire)) {
		uint64_t n = ts_pump(&r->ts, 0);

		if (r->sweep_us && now_us() - last >= r->sweep_us) {
			smb_arbiter_reclaim(&r->arb);
			r->sweeps++;
			last = now_us();
		}
		/* Like an I/O thread: busy while there is work, else a nap
		 * (the SDK's would wait on its wake-up fd). */
		if (n == 0 && r->pump_sleep_us)
			sleep_us(r->pump_sleep_us);
	}
	ts_pump(&r->ts, 0);
	return NULL;
}

static struct run *run_start(size_t size, uint32_t page, const struct smb_arbiter_opts *o,
			     uint32_t sweep_us, uint32_t pump_sleep_us)
{
	struct run *r = calloc(1, sizeof(*r));
	struct smb_arbiter_opts opts = { 0 };

	assert_non_null(r);
	if (o)
		opts = *o;
	smb_shm_init(&r->shm);
	assert_int_equal(smb_shm_create(&r->shm, size, page), 0);
	assert_int_equal(ts_init(&r->ts, &r->arb, run_cb, r), 0);
	assert_int_equal(smb_arbiter_init(&r->arb, &r->shm.smb, &opts), 0);
	r->sweep_us = sweep_us;
	r->pump_sleep_us = pump_sleep_us;
	assert_int_equal(pthread_create(&r->svc, NULL, svc_main, r), 0);
	return r;
}

/* Stops the service thread (after the writers are joined) and checks that
 * streams [0, nstreams) each came back complete: `per_stream` packets, in
 * order, byte-exact, without loss. */
static void run_finish(struct run *r, uint32_t nstreams, uint32_t per_stream)
{
	uint32_t i;

	atomic_store_explicit(&r->stop, 1, memory_order_release);
	assert_int_equal(pthread_join(r->svc, NULL), 0);
	if (r->ts.errors)
		fail_msg("service: %llu errors, first: %s",
			 (unsigned long long)r->ts.errors, r->ts.first_error);
	if (r->bad)
		fail_msg("%llu packets wrong or missing without a loss signal",
			 (unsigned long long)r->bad);
	if (r->arb.stats.packets_dropped || r->signalled || r->losses || r->lost_field)
		fail_msg("%llu packets dropped (SMB full %llu times), %llu signalled "
			 "missing, %llu after a service-seen loss",
			 (unsigned long long)r->arb.stats.packets_dropped,
			 (unsigned long long)r->arb.stats.smb_full,
			 (unsigned long long)r->signalled, (unsigned long long)r->losses);
	assert_int_equal(r->arb.stats.abi_errors, 0);
	for (i = 0; i < nstreams; i++)
		if (r->next_seq[i] != per_stream)
			fail_msg("stream %u: %u of %u packets", i, r->next_seq[i],
				 per_stream);
	assert_int_equal(r->packets, (uint64_t)nstreams * per_stream);
	assert_false(smb_arbiter_pending(&r->arb));
}

static void run_free(struct run *r)
{
	ts_fini(&r->ts);
	smb_arbiter_destroy(&r->arb);
	smb_shm_close(&r->shm);
	free(r);
}

/* One writer thread's job. */
struct job {
	struct run *r;		/* the run */
	uint32_t stream;	/* stream id (thread index) */
	uint32_t packets;	/* packets to write */
	uint32_t min_size;	/* packet target sizes: min_size + rng % span */
	uint32_t span;
	uint32_t depth;		/* max nesting */
	uint32_t sleep_min_us;	/* pause after each packet: min + rng % range */
	uint32_t sleep_range_us;
	int err;		/* first failure (creation) */
	struct spn_tw_stats stats; /* the writer's counters at the end */
};

static void *writer_main(void *arg)
{
	struct job *j = arg;
	struct spn_tw *tw = NULL;
	uint64_t x = j->stream * 7919u + 1;
	uint32_t k;

	j->err = smb_arbiter_create_writer(&j->r->arb, 1, &tw);
	if (j->err)
		return NULL;
	for (k = 0; k < j->packets; k++) {
		uint64_t v = gen_rng(&x);

		gen_write(tw, j->stream, k, j->min_size + (uint32_t)(v % j->span), j->depth,
			  NULL, NULL);
		if (j->sleep_range_us)
			sleep_us(j->sleep_min_us + (uint32_t)((v >> 32) % j->sleep_range_us));
		else if (j->sleep_min_us)
			sleep_us(j->sleep_min_us);
	}
	j->stats = tw->stats;
	spn_tw_destroy(tw);
	return NULL;
}

/* Starts n writers with the given job template, joins them. */
static void run_writers(struct run *r, uint32_t n, const struct job *tmpl,
			size_t stack, struct job **out)
{
	pthread_t *th = calloc(n, sizeof(*th));
	struct job *jobs = calloc(n, sizeof(*jobs));
	pthread_attr_t attr;
	uint32_t i;

	assert_non_null(th);
	assert_non_null(jobs);
	pthread_attr_init(&attr);
	if (stack)
		pthread_attr_setstacksize(&attr, stack);
	for (i = 0; i < n; i++) {
		jobs[i] = *tmpl;
		jobs[i].r = r;
		jobs[i].stream = i;
		assert_int_equal(pthread_create(&th[i], &attr, writer_main, &jobs[i]), 0);
	}
	for (i = 0; i < n; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(jobs[i].err, 0);
	}
	pthread_attr_destroy(&attr);
	free(th);
	*out = jobs;
}

/*
 * 1,000 threads, the default 256 KiB SMB (4 KiB pages, 256 chunks of
 * 1020 bytes), drop mode: each thread writes small packets at a modest
 * rate and sleeps in between. More threads than chunks, so idle threads'
 * partial chunks must come back (reclaim under pressure, and a periodic
 * sweep as the SDK's I/O thread does): nothing may be lost.
 */
static void test_thousand_threads(void **state)
{
	struct run *r = run_start(SPN_SMB_DEFAULT_SIZE, SPN_SMB_DEFAULT_PAGE_SIZE, NULL,
				  100000, 200);
	struct job tmpl = {
		.packets = SPN_TSAN ? 4 : 10, .min_size = 40, .span = 200, .depth = 2,
		.sleep_min_us = 50000, .sleep_range_us = 100000,
	};
	struct job *jobs;
	uint64_t t0 = now_us();
	uint32_t i;

	(void)state;
	assert_int_equal(r->arb.total_chunks, 64);
	run_writers(r, 1000, &tmpl, 256 * 1024, &jobs);
	run_finish(r, 1000, tmpl.packets);
	for (i = 0; i < 1000; i++)
		assert_int_equal(jobs[i].stats.packets_dropped, 0);
	print_message("1000 threads x %u packets: %.2f s, %llu pressure rounds, "
		      "%llu reclaims, %llu chunks stolen, %llu smb_full, "
		      "%llu pages Div14\n",
		      tmpl.packets, (double)(now_us() - t0) / 1e6,
		      (unsigned long long)r->arb.stats.pressure_rounds,
		      (unsigned long long)(r->ts.reclaims + r->sweeps),
		      (unsigned long long)r->arb.stats.stolen,
		      (unsigned long long)r->arb.stats.smb_full,
		      (unsigned long long)r->arb.stats.pages_fine);
	assert_true(r->arb.stats.pages_fine > 0);
	free(jobs);
	run_free(r);
}

/*
 * Large nested packets (up to ~4 chunks of 292 bytes) from 4 threads into a
 * small SMB while the service drains as fast as it can and reclaims every
 * millisecond: chunk switches, patches (direct and through CommitData, as
 * the drain takes chunks from under the writers), steals and stalls all
 * race. Stall mode keeps the SMB from dropping.
 */
static void test_writers_race_drain(void **state)
{
	(void)state;
	for (int direct = 0; direct < 2; direct++) {
		struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14,
					      .direct_patching = direct,
					      .stall_max_us = 10000000 };
		struct run *r = run_start(64 * 1024, 4096, &o, 1000, 0);
		struct job tmpl = {
			.packets = SPN_TSAN ? 150 : 600, .min_size = 20, .span = 1100,
			.depth = 5,
		};
		struct job *jobs;
		uint64_t direct_p = 0, ipc_p = 0;

		run_writers(r, 4, &tmpl, 0, &jobs);
		run_finish(r, 4, tmpl.packets);
		for (int i = 0; i < 4; i++) {
			direct_p += jobs[i].stats.patches_direct;
			ipc_p += jobs[i].stats.patches_ipc;
		}
		if (direct)
			assert_true(direct_p > 0);
		else
			assert_int_equal(direct_p, 0);
		assert_true(direct_p + ipc_p > 0);
		assert_int_equal(r->ts.patches, ipc_p);
		free(jobs);
		run_free(r);
	}
}

/*
 * Stall mode on a 4-chunk SMB: one writer outruns the service by far, waits
 * for chunks instead of dropping, and every packet arrives.
 */
static void test_stall_waits_for_service(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV4,
				      .stall_max_us = 5000000 };
	struct run *r = run_start(4096, 4096, &o, 0, 1000);
	struct job tmpl = { .packets = SPN_TSAN ? 100 : 300, .min_size = 1200,
			    .span = 400, .depth = 3 };
	struct job *jobs;

	(void)state;
	run_writers(r, 1, &tmpl, 0, &jobs);
	run_finish(r, 1, tmpl.packets);
	assert_true(jobs[0].stats.stalls > 0);
	assert_true(jobs[0].stats.smb_full > 0);
	assert_int_equal(jobs[0].stats.packets_dropped, 0);
	free(jobs);
	run_free(r);
}

/*
 * Reclaim in a tight loop against 8 writers that pause briefly between
 * bursts: chunks are stolen between packets and taken back at packet ends,
 * never inside a packet. With membarrier, and with seq_cst stores. Nearly
 * every packet then needs a fresh chunk, faster than the service frees
 * them, so stall mode keeps this about ownership rather than drops.
 */
static void test_reclaim_race(void **state)
{
	(void)state;
	for (int heavy = 0; heavy < 2; heavy++) {
		struct smb_arbiter_opts o = { .force_heavy_fence = heavy,
					      .stall_max_us = 10000000 };
		struct run *r = run_start(SPN_SMB_DEFAULT_SIZE, 4096, &o, 1, 0);
		struct job tmpl = { .packets = SPN_TSAN ? 300 : 2000, .min_size = 10,
				    .span = 300, .depth = 3, .sleep_min_us = 0,
				    .sleep_range_us = 50 };
		struct job *jobs;

		if (heavy)
			assert_false(r->arb.membarrier);
		run_writers(r, 8, &tmpl, 0, &jobs);
		run_finish(r, 8, tmpl.packets);
		assert_true(r->arb.stats.stolen > 0);
		free(jobs);
		run_free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thousand_threads),
		cmocka_unit_test(test_writers_race_drain),
		cmocka_unit_test(test_stall_waits_for_service),
		cmocka_unit_test(test_reclaim_race),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
