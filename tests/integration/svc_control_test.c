// SPDX-License-Identifier: Apache-2.0
// The control plane's worker threads (--control 2): a session with a 1 GiB
// buffer is being allocated while another session's producer keeps
// committing and syncing; the Sync round trips (answered by control thread
// 0) stay fast because the allocation runs on a worker, and the big
// session comes up afterwards. With --control 1 the same allocation runs
// on thread 0 (the fallback path), which the test also exercises.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench_util.h"
#include "svc_harness.h"

#define BIG_KB (1024u * 1024u)	/* 1 GiB */

static void run(unsigned control, uint64_t *worst_sync_ns)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons small, big;
	uint32_t chunk_id = 0;
	unsigned written = 0;

	th_svc_start_ex(&t, 1, control);
	th_prod_connect(&p, &t, "busy", "ds");
	th_cons_connect(&small, &t);
	th_cons_enable(&small, 1024, "ds");
	while (th_prod_wait_cmd(&p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	th_cons_connect(&big, &t);
	th_cons_enable(&big, BIG_KB, "other.ds");
	*worst_sync_ns = 0;
	for (int i = 0; i < 40; i++) {
		uint64_t t0 = bench_now_ns(), dt;

		written += th_prod_write(&p, 1, &chunk_id, written, 10, 0, 0, 16);
		assert_true(th_prod_fence(&p));
		dt = bench_now_ns() - t0;
		if (dt > *worst_sync_ns)
			*worst_sync_ns = dt;
	}
	/* The big session exists: stopping it gets its end-of-trace reply. */
	assert_int_equal(th_cons_call(&big, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&big, 20000);
	assert_true(big.enable_done);
	assert_string_equal(big.enable_error, "");
	assert_int_equal(th_cons_call(&small, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&small, 5000);
	th_cons_read(&small);
	assert_int_equal(small.nts, written);
	th_cons_close(&big);
	th_cons_close(&small);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* A producer thread committing as fast as it can, counting packets. */
struct pumper {
	struct th_svc *t;	/* the service */
	struct th_prod p;	/* its connection */
	atomic_int stop;	/* set by the test */
	_Atomic uint64_t packets; /* written so far */
};

static void *pump(void *arg)
{
	struct pumper *u = arg;
	uint32_t chunk_id = 0;
	uint64_t n = 0;

	while (!atomic_load(&u->stop)) {
		n += th_prod_write(&u->p, 1, &chunk_id, n, 64, 200, 0,
				   u->p.smb.num_pages);
		atomic_store(&u->packets, n);
	}
	return NULL;
}

static uint64_t pumped(struct pumper *u, int n)
{
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		s += atomic_load(&u[i].packets);
	return s;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Median packets committed per 50 ms window over 7 windows. */
static uint64_t median_window(struct pumper *u)
{
	uint64_t w[7];

	for (int i = 0; i < 7; i++) {
		uint64_t last = pumped(u, 2);

		usleep(50000);
		w[i] = pumped(u, 2) - last;
	}
	qsort(w, 7, sizeof(w[0]), cmp_u64);
	return w[3];
}

/* Two producers commit flat out; a 1 GiB buffer is allocated meanwhile.
 * Their median commit rate over 50 ms windows is taken before and during
 * the allocation. The lanes never wait for the control plane, and the worker
 * that faults the buffer in runs at SCHED_IDLE, so the rate holds (93-99%
 * measured on 2 cores; 23% when the worker ran at normal priority). */
static void test_commits_during_allocation(void **state)
{
	struct pumper u[2];
	struct th_svc t;
	struct th_cons small, big;
	pthread_t th[2];
	uint64_t base, during;
	(void)state;

	th_svc_start_ex(&t, 2, 2);
	memset(u, 0, sizeof(u));
	th_cons_connect(&small, &t);
	for (int i = 0; i < 2; i++) {
		u[i].t = &t;
		th_prod_connect(&u[i].p, &t, "pump", "ds");
	}
	th_cons_enable(&small, 64 * 1024, "ds");
	for (int i = 0; i < 2; i++) {
		while (th_prod_wait_cmd(&u[i].p) !=
		       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
			;
		pthread_create(&th[i], NULL, pump, &u[i]);
	}
	usleep(100000);
	base = median_window(u);
	th_cons_connect(&big, &t);
	th_cons_enable(&big, BIG_KB, "other.ds");
	during = median_window(u);
	for (int i = 0; i < 2; i++) {
		atomic_store(&u[i].stop, 1);
		pthread_join(th[i], NULL);
	}
	printf("commit rate: median %llu packets per 50 ms before, %llu while "
	       "1 GiB was allocated (%.0f%%)\n",
	       (unsigned long long)base, (unsigned long long)during,
	       base ? 100.0 * (double)during / (double)base : 0.0);
	assert_true(base > 0);
	/* Noisy on a shared 2-core box, and more so in sanitizer builds (an
	 * ASan run in CI saw 25%): the check is that commits go on while the
	 * buffer is allocated (lanes that waited for the control plane would
	 * stall for the whole fault-in), not a ratio. */
	assert_true(during * 10 >= base);
	th_cons_call(&big, "DisableTracing",
		     &perfetto__protos__disable_tracing_request__descriptor);
	th_cons_wait_enable(&big, 20000);
	th_cons_call(&small, "DisableTracing",
		     &perfetto__protos__disable_tracing_request__descriptor);
	th_cons_wait_enable(&small, 5000);
	th_cons_close(&big);
	th_cons_close(&small);
	for (int i = 0; i < 2; i++)
		th_prod_close(&u[i].p);
	th_svc_stop(&t);
}

static void test_worker_allocates(void **state)
{
	uint64_t worst;
	(void)state;

	run(2, &worst);
	printf("worst Sync round trip while 1 GiB was allocated: %.2f ms\n",
	       worst / 1e6);
	/* Prefaulting 1 GiB takes 300+ ms; thread 0 must not wait for it
	 * (the bound leaves room for sanitizer builds on a loaded box). */
	assert_true(worst < 200000000ull);
}

static void test_inline_fallback(void **state)
{
	uint64_t worst;
	(void)state;

	run(1, &worst);
	/* For comparison: here thread 0 itself prefaults the buffer. */
	printf("worst Sync round trip with --control 1: %.2f ms\n",
	       worst / 1e6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_worker_allocates),
		cmocka_unit_test(test_inline_fallback),
		cmocka_unit_test(test_commits_during_allocation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
