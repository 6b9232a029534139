// SPDX-License-Identifier: Apache-2.0
// ReadBuffers of a large trace by a consumer that does not read for a
// while: the service paces its replies on the consumer's socket instead of
// queueing the whole trace (which would exceed the connection's send bound
// and cut the consumer off), and every packet arrives.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_harness.h"

#define PACKETS 60000u		/* ~40 MB of 700-byte packets */
#define PAD 680u

struct reader {
	struct th_cons *c;	/* the consumer */
	bool done;		/* final reply seen */
	int status;		/* its status */
};

static void on_reply(void *arg, struct ipc_client_reply *rep)
{
	struct reader *r = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0) {
		r->done = true;
		r->status = rep->status;
		return;
	}
	for (size_t i = 0; i < rb->n_slices; i++)
		if (rb->slices[i]->last_slice_for_packet)
			r->c->packets++;
	if (!rep->has_more)
		r->done = true;
}

static void run(unsigned lanes)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	struct reader r = { .c = &c };
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	uint32_t chunk_id = 0;
	unsigned written = 0;

	th_svc_start(&t, lanes);
	th_prod_connect(&p, &t, "big", "big.ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 65536, "big.ds");
	while (th_prod_wait_cmd(&p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	while (written < PACKETS) {
		written += th_prod_write(&p, 1, &chunk_id, written,
					 PACKETS - written, PAD, 0,
					 p.smb.num_pages);
		assert_true(th_prod_fence(&p));
	}
	assert_int_equal(th_cons_call(&c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	assert_int_equal(ipc_client_invoke(c.port, "ReadBuffers", &req.base,
					   -1, 0, on_reply, &r, NULL),
			 0);
	ipc_loop_run_once(ipc_sync_loop(c.sync), 0);
	/* Not reading: the service must wait for us, not give up on us. */
	sleep(1);
	for (int i = 0; i < 3000 && !r.done; i++)
		ipc_loop_run_once(ipc_sync_loop(c.sync), 10);
	assert_true(r.done);
	assert_int_equal(r.status, 0);
	/* Every producer packet plus the service's own. */
	assert_true(c.packets >= PACKETS);
	assert_true(c.packets < PACKETS + 100);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

struct first_reply {
	bool seen;	/* a reply came */
};

static void on_first(void *arg, struct ipc_client_reply *rep)
{
	struct first_reply *f = arg;
	(void)rep;
	f->seen = true;
}

/* A consumer that goes away in the middle of a long ReadBuffers: the
 * service drops the read and the session, keeps running, and the next
 * consumer traces normally. */
static void test_disconnect_mid_read(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c, c2;
	struct first_reply f = { 0 };
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	uint32_t chunk_id = 0;
	unsigned written = 0;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "big", "big.ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 65536, "big.ds");
	while (th_prod_wait_cmd(&p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	while (written < PACKETS / 2) {
		written += th_prod_write(&p, 1, &chunk_id, written,
					 PACKETS / 2 - written, PAD, 0,
					 p.smb.num_pages);
		assert_true(th_prod_fence(&p));
	}
	assert_int_equal(th_cons_call(&c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c, 5000);
	assert_int_equal(ipc_client_invoke(c.port, "ReadBuffers", &req.base,
					   -1, 0, on_first, &f, NULL),
			 0);
	for (int i = 0; i < 500 && !f.seen; i++)
		ipc_loop_run_once(ipc_sync_loop(c.sync), 10);
	assert_true(f.seen);
	th_cons_close(&c);	/* gone, with most of the trace unread */
	usleep(200000);
	th_cons_connect(&c2, &t);
	th_cons_enable(&c2, 1024, "big.ds");
	while (th_prod_wait_cmd(&p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	chunk_id = 0;
	assert_int_equal(th_prod_write(&p, 2, &chunk_id, 0, 100, 0, 0, 8), 100);
	assert_true(th_prod_fence(&p));
	assert_int_equal(th_cons_call(&c2, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c2, 5000);
	th_cons_read(&c2);
	assert_int_equal(c2.nts, 100);
	th_cons_close(&c2);
	th_prod_close(&p);
	th_svc_stop(&t);
}

static void test_paced_read_one_lane(void **state)
{
	(void)state;
	run(1);
}

static void test_paced_read_two_lanes(void **state)
{
	(void)state;
	run(2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paced_read_one_lane),
		cmocka_unit_test(test_paced_read_two_lanes),
		cmocka_unit_test(test_disconnect_mid_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
