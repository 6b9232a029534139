// SPDX-License-Identifier: Apache-2.0
// Shared by the writer benchmarks (tw_bench, sdk_bench), x86-64 only: the
// lfence;rdtsc clock and its calibration, and the
// drainer thread that plays the SDK's I/O thread and the service at once
// (smb_arbiter_drain, then take, copy and free each chunk, counting chunks
// freed per writer so that writers can wait for it between bursts).
#ifndef SPN_BENCH_SMB_H
#define SPN_BENCH_SMB_H

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

#include "bench_util.h"
#include "smb/arbiter.h"
#include "smb/chunk_validate.h"

/* TSC ticks per nanosecond, set by bench_calibrate(). */
static double g_tsc_per_ns;

/* The TSC, after every earlier instruction. */
static inline uint64_t bench_tsc(void)
{
	_mm_lfence();
	return __rdtsc();
}

/* Measures g_tsc_per_ns against CLOCK_MONOTONIC over 200 ms. */
static inline void bench_calibrate(void)
{
	uint64_t t0 = bench_now_ns(), c0 = bench_tsc();
	struct timespec ts = { 0, 200000000 };

	nanosleep(&ts, NULL);
	g_tsc_per_ns = (double)(bench_tsc() - c0) / (double)(bench_now_ns() - t0);
}

/* Set when the drainer would sleep; it never does (it polls), so this
 * stays 0, as the SDK's `armed` does while its I/O thread is awake. */
static _Atomic int g_bench_armed;

/*
 * The arbiter's wake hook, as the SDK's (_spn_prod_arb_wake) costs a
 * writer while its I/O thread is awake: a seq_cst load of the flag that
 * would say it sleeps, right after the push's seq_cst CAS. Writers call
 * it when they push onto an empty commit queue, so the benchmark pays it
 * where the SDK does.
 */
static inline void bench_wake(void *ctx)
{
	(void)ctx;
	/* seq_cst: the SDK's load (ordered after the push's CAS). */
	(void)atomic_load_explicit(&g_bench_armed, memory_order_seq_cst);
}

/* The drainer: the I/O thread and the service in one. */
struct bench_drainer {
	struct smb_arbiter *arb;				/* the SMB's arbiter */
	struct smb_commit commit;				/* drain storage */
	const char *who;					/* benchmark name, for errors */
	_Atomic int stop;					/* main -> drainer */
	long period_ns;						/* 0: poll; else sleep this
								 * long after each pass (the
								 * SDK's commit period) */
	_Atomic uint64_t freed[SPN_SMB_MAX_WRITER_ID + 1];	/* chunks freed per writer */
	uint8_t copy[SPN_SMB_MAX_CHUNK_SIZE];			/* where chunks are copied to */
};

/* Drainer thread body (arg: struct bench_drainer *), until stop is set. */
static inline void *bench_drainer_main(void *arg)
{
	struct bench_drainer *d = arg;

	while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
		int n = smb_arbiter_drain(d->arb, &d->commit, 0);

		for (size_t i = 0; i < d->commit.req.n_chunks_to_move; i++) {
			const Perfetto__Protos__CommitDataRequest__ChunksToMove *m =
				d->commit.req.chunks_to_move[i];
			struct smb_chunk_info info;
			int r = -EAGAIN;

			for (int k = 0; k < 64 && r == -EAGAIN; k++)
				r = smb_chunk_commit_copy(&d->arb->smb, m->page, m->chunk, d->copy,
							  sizeof(d->copy), &info);
			if (r == 0 || r == -ENOMSG)
				/* Release: pairs with the writer's acquire wait. */
				atomic_fetch_add_explicit(&d->freed[info.writer_id], 1,
							  memory_order_release);
			else
				fprintf(stderr, "%s: chunk %u/%u: %d\n", d->who, m->page, m->chunk, r);
		}
		if (d->commit.pressure)
			smb_arbiter_reclaim(d->arb);
		if (d->period_ns) {
			struct timespec ts = { d->period_ns / 1000000000L,
					       d->period_ns % 1000000000L };

			nanosleep(&ts, NULL);
		} else if (n == 0) {
			sched_yield();
		}
	}
	return NULL;
}

#endif
