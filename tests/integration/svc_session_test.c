// SPDX-License-Identifier: Apache-2.0
// Session lifecycle of spindled that involves producers and time
// (consumer-port.md §2.2-§5, trace-config.md §1.3): START_TRACING and
// STOP_TRACING triggers with their delays and timeouts, max_per_24_h and
// skip_probability, periodic flushes and incremental-state clears, a
// producer joining running sessions, and the per-uid session limit.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bench_util.h"
#include "svc_harness.h"

#define CMD(x) PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_##x

/* A config with one 1 MiB buffer and data source "ds". */
struct cfg {
	struct th_cfg b;	/* the buffer, the data source, b.cfg */
	Perfetto__Protos__TraceConfig__TriggerConfig trig;
	Perfetto__Protos__TraceConfig__TriggerConfig__Trigger t;
	Perfetto__Protos__TraceConfig__TriggerConfig__Trigger *ts[1];
	Perfetto__Protos__TraceConfig__IncrementalStateConfig inc;
};

static void cfg_init(struct cfg *c)
{
	th_cfg_init(&c->b, 1024, "ds");
	c->b.cfg.has_flush_timeout_ms = true;
	c->b.cfg.flush_timeout_ms = 200;
}

/* Adds a trigger config: mode, timeout, one trigger named name. */
static void cfg_trigger(struct cfg *c, int mode, uint32_t timeout_ms,
			const char *name, uint32_t delay_ms)
{
	perfetto__protos__trace_config__trigger_config__init(&c->trig);
	perfetto__protos__trace_config__trigger_config__trigger__init(&c->t);
	c->trig.has_trigger_mode = c->trig.has_trigger_timeout_ms = true;
	c->trig.trigger_mode = mode;
	c->trig.trigger_timeout_ms = timeout_ms;
	c->t.name = (char *)name;
	c->t.has_stop_delay_ms = true;
	c->t.stop_delay_ms = delay_ms;
	c->ts[0] = &c->t;
	c->trig.n_triggers = 1;
	c->trig.triggers = c->ts;
	c->b.cfg.trigger_config = &c->trig;
}

static void activate(struct th_prod *p, const char *name)
{
	Perfetto__Protos__ActivateTriggersRequest r =
		PERFETTO__PROTOS__ACTIVATE_TRIGGERS_REQUEST__INIT;
	char *names[] = { (char *)name };

	r.n_trigger_names = 1;
	r.trigger_names = names;
	th_prod_invoke(p, TH_TRIGGERS, &r.base, true);
	assert_true(th_prod_fence(p));
}

static int next_cmd(struct th_prod *p)
{
	return th_prod_wait_cmd(p);
}

/* START_TRACING: set up but not started until the trigger; then the
 * session lasts stop_delay_ms. */
static void test_start_trigger(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	struct cfg cf;
	uint64_t t0;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "prod", "ds");
	th_cons_connect(&c, &t);
	cfg_init(&cf);
	cfg_trigger(&cf, 1, 10000, "go", 300);
	th_cons_enable_cfg(&c, &cf.b.cfg);
	assert_int_equal(next_cmd(&p), CMD(SETUP_TRACING));
	assert_int_equal(next_cmd(&p), CMD(SETUP_DATA_SOURCE));
	activate(&p, "other");	/* not ours: nothing happens */
	activate(&p, "go");
	t0 = bench_now_ns();
	assert_int_equal(next_cmd(&p), CMD(START_DATA_SOURCE));
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	/* stop_delay_ms (300) + flush timeout (200), give or take. */
	assert_true(bench_now_ns() - t0 >= 250000000ull);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* START_TRACING without a trigger: the session ends at the timeout and
 * a read returns nothing at all. */
static void test_start_trigger_timeout(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	struct cfg cf;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect(&p, &t, "prod", "ds");
	th_cons_connect(&c, &t);
	cfg_init(&cf);
	cfg_trigger(&cf, 1, 300, "go", 0);
	th_cons_enable_cfg(&c, &cf.b.cfg);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	th_cons_read(&c);
	assert_int_equal(c.packets, 0);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* STOP_TRACING: runs from the start; the first trigger ends it after its
 * delay, a second one does not push the end further. */
static void test_stop_trigger(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	struct cfg cf;
	uint32_t chunk_id = 0;
	uint64_t t0;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "prod", "ds");
	th_cons_connect(&c, &t);
	cfg_init(&cf);
	cfg_trigger(&cf, 2, 60000, "stop", 1000);
	th_cons_enable_cfg(&c, &cf.b.cfg);
	while (next_cmd(&p) != CMD(START_DATA_SOURCE))
		;
	th_prod_write(&p, 1, &chunk_id, 10, 30, 0, 0, 4);
	t0 = bench_now_ns();
	activate(&p, "stop");
	usleep(700000);
	activate(&p, "stop");
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	/* About 1000 ms + the 200 ms flush timeout; a second trigger that
	 * re-armed the stop would end it near 1900 ms. */
	assert_true(bench_now_ns() - t0 >= 950000000ull);
	assert_true(bench_now_ns() - t0 < 1600000000ull);
	th_cons_read(&c);
	assert_int_equal(c.nts, 30);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* max_per_24_h: the second session waiting for the same trigger is not
 * started by it, because the name already fired once today; a trigger
 * with skip_probability 1 never fires. */
static void test_trigger_limits(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons a, b, s;
	struct cfg ca, cb, cs;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect(&p, &t, "prod", "ds");
	th_cons_connect(&a, &t);
	th_cons_connect(&b, &t);
	th_cons_connect(&s, &t);
	cfg_init(&ca);
	cfg_trigger(&ca, 1, 10000, "once", 10000);
	ca.t.has_max_per_24_h = true;
	ca.t.max_per_24_h = 1;
	th_cons_enable_cfg(&a, &ca.b.cfg);
	assert_int_equal(next_cmd(&p), CMD(SETUP_TRACING));
	assert_int_equal(next_cmd(&p), CMD(SETUP_DATA_SOURCE));
	activate(&p, "once");
	assert_int_equal(next_cmd(&p), CMD(START_DATA_SOURCE));
	cfg_init(&cb);
	cfg_trigger(&cb, 1, 10000, "once", 10000);
	cb.t.has_max_per_24_h = true;
	cb.t.max_per_24_h = 1;
	th_cons_enable_cfg(&b, &cb.b.cfg);
	assert_int_equal(next_cmd(&p), CMD(SETUP_DATA_SOURCE));
	cfg_init(&cs);
	cfg_trigger(&cs, 1, 10000, "never", 10000);
	cs.t.has_skip_probability = true;
	cs.t.skip_probability = 1.0;
	th_cons_enable_cfg(&s, &cs.b.cfg);
	assert_int_equal(next_cmd(&p), CMD(SETUP_DATA_SOURCE));
	activate(&p, "once");
	activate(&p, "never");
	/* Neither b nor s started: the next command is a's stop. */
	assert_int_equal(th_cons_call(&a, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	assert_int_equal(next_cmd(&p), CMD(STOP_DATA_SOURCE));
	th_cons_close(&s);
	th_cons_close(&b);
	th_cons_close(&a);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* flush_period_ms and incremental_state_config.clear_period_ms. */
static void test_periodic_flush_and_clear(void **state)
{
	struct th_prod_opts o = { .provided_fd = -1, .clear_incr = true };
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;
	struct cfg cf;
	int flushes = 0, clears = 0;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect_ex(&p, &t, "prod", "ds", &o);
	th_cons_connect(&c, &t);
	cfg_init(&cf);
	cf.b.cfg.has_flush_period_ms = true;
	cf.b.cfg.flush_period_ms = 100;
	perfetto__protos__trace_config__incremental_state_config__init(&cf.inc);
	cf.inc.has_clear_period_ms = true;
	cf.inc.clear_period_ms = 100;
	cf.b.cfg.incremental_state_config = &cf.inc;
	th_cons_enable_cfg(&c, &cf.b.cfg);
	while (next_cmd(&p) != CMD(START_DATA_SOURCE))
		;
	while (flushes < 3 || clears < 3) {
		int k = next_cmd(&p);

		assert_true(k >= 0);
		flushes += k == CMD(FLUSH);
		clears += k == CMD(CLEAR_INCREMENTAL_STATE);
	}
	assert_int_equal(th_cons_call(&c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* A producer that joins running sessions gets each set up and started;
 * a uid may hold 5 sessions, the 6th is refused (step 19). */
static void test_late_producer_and_uid_limit(void **state)
{
	struct th_svc t;
	struct th_cons c[6];
	struct th_prod p;
	int starts = 0;
	(void)state;

	th_svc_start(&t, 2);
	for (int i = 0; i < 6; i++) {
		th_cons_connect(&c[i], &t);
		th_cons_enable(&c[i], 256, "ds");
		/* The connections may sit on different lanes, so the 6th
		 * EnableTracing could reach the control thread before the
		 * 5th: a stats call on the same connection answers only
		 * after its EnableTracing was taken, and answers at all only
		 * if that made a session. */
		if (i < 5)
			assert_int_equal(th_cons_call(&c[i], "GetTraceStats",
						      &perfetto__protos__get_trace_stats_request__descriptor),
					 0);
	}
	th_cons_wait_enable(&c[5], 5000);
	assert_true(c[5].enable_done);
	assert_non_null(strstr(c[5].enable_error,
			       "Too many concurrent tracing sesions (5) for uid"));
	th_prod_connect(&p, &t, "late", "ds");
	while (starts < 5) {
		int k = next_cmd(&p);

		assert_true(k >= 0);
		starts += k == CMD(START_DATA_SOURCE);
	}
	for (int i = 0; i < 5; i++) {
		assert_int_equal(th_cons_call(&c[i], "DisableTracing",
					      &perfetto__protos__disable_tracing_request__descriptor),
				 0);
		th_cons_wait_enable(&c[i], 5000);
		assert_true(c[i].enable_done);
		assert_string_equal(c[i].enable_error, "");
	}
	for (int i = 0; i < 6; i++)
		th_cons_close(&c[i]);
	th_prod_close(&p);
	th_svc_stop(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_trigger),
		cmocka_unit_test(test_start_trigger_timeout),
		cmocka_unit_test(test_stop_trigger),
		cmocka_unit_test(test_trigger_limits),
		cmocka_unit_test(test_periodic_flush_and_clear),
		cmocka_unit_test(test_late_producer_and_uid_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
