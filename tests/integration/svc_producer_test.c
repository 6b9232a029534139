// SPDX-License-Identifier: Apache-2.0
// ProducerPort behaviour of spindled (producer-port.md): InitializeConnection
// with producer-provided SMBs adopted or refused, size hints, a second
// initialize, data-source (un)registration, trace writers bound to another
// buffer, scraping on disconnect, start/stop notifications and flush acks.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "smb/shm.h"
#include "spindle/pb.h"
#include "svc_harness.h"

#define CMD(x) PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_##x

static void wait_for(struct th_prod *p, int kind)
{
	int k;

	while ((k = th_prod_wait_cmd(p)) != kind)
		assert_true(k >= 0);
}

static const struct th_prod_opts no_opts = { .provided_fd = -1 };

/* Stops the session and reads it back into c. */
static void stop_and_read(struct th_cons *c)
{
	assert_int_equal(th_cons_call(c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(c, 5000);
	assert_true(c->enable_done);
	th_cons_read(c);
}

/* A sealed SMB the producer made itself is adopted: setup_tracing comes
 * without fd or page size, and commits from it reach the buffer. */
static void test_provided_smb_adopted(void **state)
{
	struct th_prod_opts o = no_opts;
	struct smb_shm shm;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	uint32_t chunk_id = 0;
	(void)state;

	smb_shm_init(&shm);
	assert_int_equal(smb_shm_create(&shm, 262144, 4096), 0);
	th_svc_start(&t, 2);
	o.provided_fd = shm.fd;
	o.provided_flag = true;
	o.page_hint = 4096;
	assert_int_equal(th_prod_connect_ex(&p, &t, "startup", "ds", &o), 1);
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(SETUP_TRACING));
	assert_null(p.smb_base); /* no fd came: the SMB is ours */
	p.smb = shm.smb;
	wait_for(&p, CMD(START_DATA_SOURCE));
	assert_int_equal(th_prod_write(&p, 1, &chunk_id, 5000, 50, 0, 0, 8), 50);
	assert_true(th_prod_fence(&p));
	stop_and_read(&c);
	assert_int_equal(c.nts, 50);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
	smb_shm_close(&shm);
}

/* An unsealed fd, and the flag without an fd: the service falls back to an
 * SMB of its own and sends it with setup_tracing. */
static void test_provided_smb_refused(void **state)
{
	struct th_svc t;
	(void)state;

	th_svc_start(&t, 1);
	for (int i = 0; i < 2; i++) {
		struct th_prod_opts o = no_opts;
		struct th_prod p;
		struct th_cons c;
		int fd = -1;

		o.provided_flag = true;
		o.page_hint = 4096;
		if (i == 0) {
			fd = memfd_create("unsealed", MFD_CLOEXEC);
			assert_true(fd >= 0);
			assert_int_equal(ftruncate(fd, 262144), 0);
			o.provided_fd = fd;
		}
		assert_int_equal(th_prod_connect_ex(&p, &t, "x", "ds", &o), 0);
		th_cons_connect(&c, &t);
		th_cons_enable(&c, 1024, "ds");
		wait_for(&p, CMD(SETUP_TRACING));
		assert_non_null(p.smb_base);
		assert_int_equal(p.smb_size, 262144);
		stop_and_read(&c);
		th_cons_close(&c);
		th_prod_close(&p);
		if (fd >= 0)
			close(fd);
	}
	th_svc_stop(&t);
}

/* Size and page hints are honoured when valid, replaced by the defaults
 * (both) when not (producer-port.md §7). */
static void test_smb_size_hints(void **state)
{
	static const struct {
		uint32_t size, page, want_size, want_page;
	} cases[] = {
		{ 1u << 20, 16384, 1u << 20, 16384 },
		{ 0, 0, 262144, 4096 },
		{ 1u << 20, 12288, 262144, 4096 },   /* 3 pages of 4 KiB: no */
		{ 64u << 20, 4096, 32u << 20, 4096 }, /* clamped to 32 MiB */
		{ 1u << 20, 65536, 1u << 20, 32768 }, /* page clamped */
	};
	struct th_svc t;
	(void)state;

	th_svc_start(&t, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct th_prod_opts o = no_opts;
		struct th_prod p;
		struct th_cons c;

		o.size_hint = cases[i].size;
		o.page_hint = cases[i].page;
		th_prod_connect_ex(&p, &t, "hints", "ds", &o);
		th_cons_connect(&c, &t);
		th_cons_enable(&c, 1024, "ds");
		wait_for(&p, CMD(SETUP_TRACING));
		assert_int_equal(p.smb_size, cases[i].want_size);
		assert_int_equal(p.smb.page_size, cases[i].want_page);
		stop_and_read(&c);
		th_cons_close(&c);
		th_prod_close(&p);
	}
	th_svc_stop(&t);
}

/* A producer with 32 KiB pages (as Perfetto's traced_probes uses) and a
 * 64 KiB buffer: its 32 KiB chunk is no bigger than the buffer, so it is
 * stored (trace-buffer.md §1), with 1 lane and with 2. */
static void test_big_pages_small_buffer(void **state)
{
	(void)state;
	th_layout = SPN_SMB_PAGE_DIV1;
	for (unsigned lanes = 1; lanes <= 2; lanes++) {
		struct th_prod_opts o = no_opts;
		uint32_t chunk_id = 0;
		struct th_svc t;
		struct th_prod p;
		struct th_cons c;

		th_svc_start(&t, lanes);
		o.size_hint = 1u << 20;
		o.page_hint = 32768;
		th_prod_connect_ex(&p, &t, "probes", "ds", &o);
		th_cons_connect(&c, &t);
		th_cons_enable(&c, 64, "ds");
		wait_for(&p, CMD(START_DATA_SOURCE));
		assert_int_equal(p.smb.page_size, 32768);
		/* 30 packets of ~1 KiB: one chunk of ~30 KiB. */
		assert_int_equal(th_prod_write(&p, 1, &chunk_id, 7000, 30, 1000, 0, 1),
				 30);
		assert_int_equal(chunk_id, 1);
		assert_true(th_prod_fence(&p));
		stop_and_read(&c);
		assert_int_equal(c.nts, 30);
		for (unsigned i = 0; i < 30; i++)
			assert_int_equal(c.ts[i], 7000 + i);
		th_cons_close(&c);
		th_prod_close(&p);
		th_svc_stop(&t);
	}
}

/* Teardown: back to th_prod_write()'s default layout, also after a
 * failure. */
static int reset_layout(void **state)
{
	(void)state;
	th_layout = SPN_SMB_PAGE_DIV4;
	return 0;
}

/* A second InitializeConnection on the same connection is rejected. */
static void test_second_initialize(void **state)
{
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	struct th_svc t;
	struct th_prod p;
	uint64_t id;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect(&p, &t, "twice", "ds");
	init.producer_name = "again";
	id = th_prod_invoke(&p, TH_INIT, &init.base, false);
	{
		IpcFrame *f = th_prod_wait_reply(&p, id);

		assert_non_null(f);
		assert_int_equal(f->msg_case,
				 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY);
		assert_false(f->msg_invoke_method_reply->success);
		ipc_frame_free(f);
	}
	/* The connection still works: the producer is still the first. */
	assert_true(th_prod_fence(&p));
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* UnregisterDataSource stops the running instance; the session goes on. */
static void test_unregister_stops_instance(void **state)
{
	Perfetto__Protos__UnregisterDataSourceRequest un =
		PERFETTO__PROTOS__UNREGISTER_DATA_SOURCE_REQUEST__INIT;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	uint64_t inst;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "u", "ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(START_DATA_SOURCE));
	inst = th_prod_last_id(&p);
	un.data_source_name = "ds";
	th_prod_invoke(&p, TH_UNREG_DS, &un.base, true);
	wait_for(&p, CMD(STOP_DATA_SOURCE));
	assert_int_equal(th_prod_last_id(&p), inst);
	assert_false(c.enable_done); /* still tracing */
	stop_and_read(&c);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* A writer registered to another buffer cannot commit into this one. */
static void test_writer_bound_elsewhere(void **state)
{
	Perfetto__Protos__RegisterTraceWriterRequest rw =
		PERFETTO__PROTOS__REGISTER_TRACE_WRITER_REQUEST__INIT;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	uint32_t chunk_a = 0, chunk_b = 0;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect(&p, &t, "w", "ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(START_DATA_SOURCE));
	rw.has_trace_writer_id = rw.has_target_buffer = true;
	rw.trace_writer_id = 1;
	rw.target_buffer = p.target_buffer + 7;
	th_prod_invoke(&p, TH_REG_WRITER, &rw.base, true);
	rw.trace_writer_id = 2;
	rw.target_buffer = p.target_buffer;
	th_prod_invoke(&p, TH_REG_WRITER, &rw.base, true);
	th_prod_write(&p, 1, &chunk_a, 100, 20, 0, 0, 4);  /* refused */
	th_prod_write(&p, 2, &chunk_b, 200, 20, 0, 8, 4);  /* stored */
	assert_true(th_prod_fence(&p));
	stop_and_read(&c);
	assert_int_equal(c.nts, 20);
	for (size_t i = 0; i < c.nts; i++)
		assert_true(c.ts[i] >= 200 && c.ts[i] < 220);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* A producer that disconnects with a chunk still being written: its
 * complete fragments are scraped into the buffer (smb-abi.md §9). */
static void test_scrape_on_disconnect(void **state)
{
	Perfetto__Protos__RegisterTraceWriterRequest rw =
		PERFETTO__PROTOS__REGISTER_TRACE_WRITER_REQUEST__INIT;
	struct spn_smb_chunk_header *h = NULL;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	uint8_t *q;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "s", "ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(START_DATA_SOURCE));
	rw.has_trace_writer_id = rw.has_target_buffer = true;
	rw.trace_writer_id = 3;
	rw.target_buffer = p.target_buffer;
	th_prod_invoke(&p, TH_REG_WRITER, &rw.base, true);
	assert_true(th_prod_fence(&p));
	spn_smb_try_partition(&p.smb, 5, SPN_SMB_PAGE_DIV1);
	assert_int_equal(spn_smb_try_acquire_write(&p.smb, 5, SPN_SMB_PAGE_DIV1,
						   0, 3, 0, 0, &h),
			 0);
	q = spn_smb_chunk_payload(h);
	for (int i = 0; i < 3; i++) {
		spn_pb_put_varint4(q, 3);
		q = spn_pb_field_varint(q + 4, 8, 700 + (uint64_t)i);
	}
	/* Three fragments, the last possibly still being written. */
	spn_smb_chunk_set_packets(h, spn_smb_packets(3, 0));
	th_prod_close(&p);
	/* Let the lane see the hang-up before the session stops. */
	usleep(100000);
	stop_and_read(&c);
	assert_int_equal(c.nts, 2);
	assert_int_equal(c.ts[0], 700);
	assert_int_equal(c.ts[1], 701);
	th_cons_close(&c);
	th_svc_stop(&t);
}

/* will_notify_on_stop: the session ends only after NotifyDataSourceStopped. */
static void test_notify_stop(void **state)
{
	Perfetto__Protos__NotifyDataSourceStoppedRequest ns =
		PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STOPPED_REQUEST__INIT;
	Perfetto__Protos__NotifyDataSourceStartedRequest nst =
		PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STARTED_REQUEST__INIT;
	struct th_prod_opts o = no_opts;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	(void)state;

	th_svc_start(&t, 1);
	o.notify_start = o.notify_stop = true;
	th_prod_connect_ex(&p, &t, "n", "ds", &o);
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(START_DATA_SOURCE));
	nst.has_data_source_id = true;
	nst.data_source_id = th_prod_last_id(&p);
	th_prod_invoke(&p, TH_DS_STARTED, &nst.base, true);
	assert_int_equal(th_cons_call(&c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	wait_for(&p, CMD(STOP_DATA_SOURCE));
	th_cons_wait_enable(&c, 300);
	assert_false(c.enable_done); /* waiting for the ack */
	ns.has_data_source_id = true;
	ns.data_source_id = th_prod_last_id(&p);
	th_prod_invoke(&p, TH_DS_STOPPED, &ns.base, true);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

struct flush_wait {
	bool done;	/* the Flush call ended */
	int status;	/* how */
};

static void on_flush(void *arg, struct ipc_client_reply *r)
{
	struct flush_wait *w = arg;

	w->done = true;
	w->status = r->status;
}

/* Flush completes on the producer's ack, and fails on its timeout. */
static void test_flush_ack_and_timeout(void **state)
{
	Perfetto__Protos__FlushRequest fr = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;
	Perfetto__Protos__CommitDataRequest ack =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "f", "ds");
	th_cons_connect(&c, &t);
	th_cons_enable(&c, 1024, "ds");
	wait_for(&p, CMD(START_DATA_SOURCE));
	fr.has_timeout_ms = true;
	fr.timeout_ms = 300;
	for (int round = 0; round < 2; round++) {
		struct flush_wait w = { 0 };

		assert_int_equal(ipc_client_invoke(c.port, "Flush", &fr.base,
						   -1, 0, on_flush, &w, NULL),
				 0);
		ipc_loop_run_once(ipc_sync_loop(c.sync), 0);
		wait_for(&p, CMD(FLUSH));
		if (round == 0) {
			ack.has_flush_request_id = true;
			ack.flush_request_id = th_prod_last_id(&p);
			th_prod_invoke(&p, TH_COMMIT, &ack.base, true);
		}
		for (int i = 0; i < 300 && !w.done; i++)
			ipc_loop_run_once(ipc_sync_loop(c.sync), 10);
		assert_true(w.done);
		if (round == 0)
			assert_int_equal(w.status, 0);
		else
			assert_int_not_equal(w.status, 0);
	}
	stop_and_read(&c);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_provided_smb_adopted),
		cmocka_unit_test(test_provided_smb_refused),
		cmocka_unit_test(test_smb_size_hints),
		cmocka_unit_test_teardown(test_big_pages_small_buffer, reset_layout),
		cmocka_unit_test(test_second_initialize),
		cmocka_unit_test(test_unregister_stops_instance),
		cmocka_unit_test(test_writer_bound_elsewhere),
		cmocka_unit_test(test_scrape_on_disconnect),
		cmocka_unit_test(test_notify_stop),
		cmocka_unit_test(test_flush_ack_and_timeout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
