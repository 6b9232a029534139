// SPDX-License-Identifier: Apache-2.0
// EnableTracing over the real consumer socket (spec/consumer-port.md §2):
// one test per guardrail step asserting the exact error text, no session,
// no fd and no buffer left behind; then the steps that involve other
// sessions (2, 15-19), exclusive-session preemption of another consumer,
// and the session lifecycle calls: detach/attach, write_into_file (fd and
// output_path, periodic drains, size limit), flush, disable, free,
// consumer disconnect, deferred start, START_TRACING timeout, GetTraceStats.
// Every test runs on a fresh spindled, with --lanes 1 and with --lanes 2.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_consumer_util.h"

/* --- guardrail steps that need nothing but the config --- */

/* What one config-only case sets up. */
struct gctx {
	struct env *e;		/* the service */
	struct tc t;		/* the config */
	int fd;			/* fd passed with EnableTracing, or -1 */
	char path[256];		/* a file path in the env dir */
	char expect[512];	/* the exact error text */
	bool check_buffers;	/* a valid session with 2 buffers must follow */
	Perfetto__Protos__TraceConfig__BufferConfig *many; /* > 4 buffers */
	Perfetto__Protos__TraceConfig__BufferConfig **manyp;
	Perfetto__Protos__TraceConfig__TraceFilter filter;
	Perfetto__Protos__TraceConfig__TraceFilter__StringFilterChain chain;
	Perfetto__Protos__TraceConfig__TraceFilter__StringFilterRule rule;
	Perfetto__Protos__TraceConfig__TraceFilter__StringFilterRule *rulep[1];
	Perfetto__Protos__PriorityBoostConfig boost;
	Perfetto__Protos__TraceConfig__GuardrailOverrides ovr;
};

/* One config-only guardrail case. */
struct gcase {
	const char *name;		/* test name */
	void (*build)(struct gctx *g);	/* sets g->t, g->fd, g->expect */
};

static void g_duration(struct gctx *g)
{
	g->t.cfg.has_duration_ms = true;
	g->t.cfg.duration_ms = 604800001;
	strcpy(g->expect, "Requested too long trace (604800001ms  > 604800000 ms)");
}

static void g_duration_guardrails(struct gctx *g)
{
	g->t.cfg.has_enable_extra_guardrails = true;
	g->t.cfg.enable_extra_guardrails = true;
	g->t.cfg.has_duration_ms = true;
	g->t.cfg.duration_ms = 86400001;
	strcpy(g->expect, "Requested too long trace (86400001ms  > 86400000 ms)");
}

static void g_trigger_timeout_zero(struct gctx *g)
{
	tc_trigger(&g->t, 1 /* START_TRACING */, 0, "t");
	strcpy(g->expect, "Traces with START_TRACING triggers must provide a "
			  "positive trigger_timeout_ms < 7 days (received 0ms)");
}

static void g_trigger_timeout_long(struct gctx *g)
{
	tc_trigger(&g->t, 2 /* STOP_TRACING */, 604800001, "t");
	strcpy(g->expect, "Traces with START_TRACING triggers must provide a "
			  "positive trigger_timeout_ms < 7 days (received "
			  "604800001ms)");
}

static void g_trigger_mode(struct gctx *g)
{
	tc_trigger(&g->t, 5, 1000, "t");
	strcpy(g->expect, "The trace config specified an invalid trigger_mode");
}

static void g_clone_if_available(struct gctx *g)
{
	tc_trigger(&g->t, 1 /* START_TRACING */, 1000, "t");
	g->t.trig.has_use_clone_snapshot_if_available = true;
	g->t.trig.use_clone_snapshot_if_available = true;
	strcpy(g->expect, "trigger_mode must be STOP_TRACING when "
			  "use_clone_snapshot_if_available=true");
}

static void g_duration_with_triggers(struct gctx *g)
{
	tc_trigger(&g->t, 2, 1000, "t");
	g->t.cfg.has_duration_ms = true;
	g->t.cfg.duration_ms = 1000;
	strcpy(g->expect, "duration_ms was set, this must not be set for traces "
			  "with triggers.");
}

static void g_bugreport_filename(struct gctx *g)
{
	g->t.cfg.bugreport_filename = "a/b.pftrace";
	strcpy(g->expect, "bugreport_filename contains invalid chars. Use "
			  "[a-zA-Z0-9-_.]+");
}

static void g_stop_with_file(struct gctx *g)
{
	tc_trigger(&g->t, 2, 1000, "t");
	g->t.cfg.has_write_into_file = true;
	g->t.cfg.write_into_file = true;
	strcpy(g->expect, "Specifying trigger mode STOP_TRACING/CLONE_SNAPSHOT "
			  "and write_into_file together is unsupported");
}

static void g_duplicate_trigger(struct gctx *g)
{
	tc_trigger(&g->t, 2, 1000, "dup");
	g->t.tr[1] = g->t.tr[0];
	g->t.trp[1] = &g->t.tr[1];
	g->t.trig.n_triggers = 2;
	strcpy(g->expect, "Duplicate trigger name: dup");
}

static void g_deferred_guardrails(struct gctx *g)
{
	g->t.cfg.has_enable_extra_guardrails = true;
	g->t.cfg.enable_extra_guardrails = true;
	g->t.cfg.has_deferred_start = true;
	g->t.cfg.deferred_start = true;
	strcpy(g->expect,
	       "deferred_start=true is not supported in unsupervised traces");
}

static void g_size_multiple(struct gctx *g)
{
	g->t.cfg.has_enable_extra_guardrails = true;
	g->t.cfg.enable_extra_guardrails = true;
	g->t.buf[0].size_kb = 5;
	strcpy(g->expect, "buffers.size_kb must be a multiple of 4, got 5");
}

static void g_total_size(struct gctx *g)
{
	g->t.cfg.has_enable_extra_guardrails = true;
	g->t.cfg.enable_extra_guardrails = true;
	g->t.buf[0].size_kb = 131072;
	tc_add_buffer(&g->t, 4, NULL);
	strcpy(g->expect,
	       "Requested too large trace buffer (131076kB  > 131072 kB)");
}

static void g_total_size_override(struct gctx *g)
{
	g->t.cfg.has_enable_extra_guardrails = true;
	g->t.cfg.enable_extra_guardrails = true;
	g->t.buf[0].size_kb = 262148;
	perfetto__protos__trace_config__guardrail_overrides__init(&g->ovr);
	g->ovr.has_max_tracing_buffer_size_kb = true;
	g->ovr.max_tracing_buffer_size_kb = 262144;
	g->t.cfg.guardrail_overrides = &g->ovr;
	strcpy(g->expect,
	       "Requested too large trace buffer (262148kB  > 262144 kB)");
}

static void g_too_many_buffers(struct gctx *g)
{
	g->many = calloc(129, sizeof(*g->many));
	g->manyp = calloc(129, sizeof(*g->manyp));
	assert_non_null(g->many);
	assert_non_null(g->manyp);
	for (int i = 0; i < 129; i++) {
		perfetto__protos__trace_config__buffer_config__init(&g->many[i]);
		g->many[i].has_size_kb = true;
		g->many[i].size_kb = 4;
		g->manyp[i] = &g->many[i];
	}
	g->t.cfg.n_buffers = 129;
	g->t.cfg.buffers = g->manyp;
	strcpy(g->expect, "Too many buffers configured (129)");
}

static void g_duplicate_buffer_name(struct gctx *g)
{
	g->t.buf[0].name = "b";
	tc_add_buffer(&g->t, 64, "b");
	strcpy(g->expect, "Duplicate buffer name \"b\" at index 1 (first "
			  "occurrence at index 0)");
}

static void g_target_name_unknown(struct gctx *g)
{
	tc_ds(&g->t, "d")->config->target_buffer_name = "nope";
	strcpy(g->expect, "Data source \"d\" specified target_buffer_name "
			  "\"nope\" which does not match any buffer");
}

static void g_target_mismatch(struct gctx *g)
{
	Perfetto__Protos__DataSourceConfig *c;

	g->t.buf[0].name = "a";
	tc_add_buffer(&g->t, 64, "b");
	c = tc_ds(&g->t, "d")->config;
	c->target_buffer_name = "a";
	c->has_target_buffer = true;
	c->target_buffer = 1;
	strcpy(g->expect, "Data source \"d\" specified both target_buffer=1 and "
			  "target_buffer_name=\"a\" (index 0) but they don't "
			  "match");
}

static void g_target_out_of_bounds(struct gctx *g)
{
	Perfetto__Protos__DataSourceConfig *c = tc_ds(&g->t, "d")->config;

	c->has_target_buffer = true;
	c->target_buffer = 1;
	strcpy(g->expect, "Data source \"d\" specified an out of bounds "
			  "target_buffer (1 >= 1)");
}

static void g_filter_rules(struct gctx *g)
{
	perfetto__protos__trace_config__trace_filter__init(&g->filter);
	perfetto__protos__trace_config__trace_filter__string_filter_chain__init(
		&g->chain);
	perfetto__protos__trace_config__trace_filter__string_filter_rule__init(
		&g->rule);
	g->rule.has_policy = true;
	g->rule.policy = 77;
	g->rulep[0] = &g->rule;
	g->chain.n_rules = 1;
	g->chain.rules = g->rulep;
	g->filter.string_filter_chain = &g->chain;
	g->t.cfg.trace_filter = &g->filter;
	strcpy(g->expect,
	       "Trace filter has invalid string filtering rules, aborting");
}

static void g_filter_bytecode(struct gctx *g)
{
	static uint8_t junk[] = { 0xff, 0xff, 0xff };

	perfetto__protos__trace_config__trace_filter__init(&g->filter);
	g->filter.has_bytecode = true;
	g->filter.bytecode.data = junk;
	g->filter.bytecode.len = sizeof(junk);
	g->t.cfg.trace_filter = &g->filter;
	strcpy(g->expect, "Trace filter bytecode invalid, aborting");
}

static void g_priority_boost(struct gctx *g)
{
	perfetto__protos__priority_boost_config__init(&g->boost);
	g->boost.has_policy = true;
	g->boost.policy =
		PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_SCHED_FIFO;
	g->boost.has_priority = true;
	g->boost.priority = 0;
	g->t.cfg.priority_boost = &g->boost;
	strcpy(g->expect, "Invalid priority boost config: For the "
			  "'POLICY_SCHED_FIFO' priority must be in the range "
			  "[1; 99]");
}

#define ERR_FD_OR_PATH                                                      \
	"When write_into_file==true either a FD needs to be passed or "      \
	"output_path must be populated (but not both)"

static void g_file_neither(struct gctx *g)
{
	g->t.cfg.has_write_into_file = true;
	g->t.cfg.write_into_file = true;
	strcpy(g->expect, ERR_FD_OR_PATH);
}

static void g_file_both(struct gctx *g)
{
	snprintf(g->path, sizeof(g->path), "%s/both.pftrace", g->e->dir);
	g->fd = open(g->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(g->fd >= 0);
	g->t.cfg.has_write_into_file = true;
	g->t.cfg.write_into_file = true;
	g->t.cfg.output_path = g->path;
	strcpy(g->expect, ERR_FD_OR_PATH);
}

static void g_file_exists(struct gctx *g)
{
	int fd;

	snprintf(g->path, sizeof(g->path), "%s/exists.pftrace", g->e->dir);
	fd = open(g->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	g->t.cfg.has_write_into_file = true;
	g->t.cfg.write_into_file = true;
	g->t.cfg.output_path = g->path;
	snprintf(g->expect, sizeof(g->expect),
		 "Failed to create the trace file %s", g->path);
}

static void g_buffer_zero(struct gctx *g)
{
	tc_add_buffer(&g->t, 0, NULL);
	strcpy(g->expect,
	       "Failed to allocate tracing buffers: Invalid buffer sizes");
	g->check_buffers = true;
}

static void g_buffer_4gib(struct gctx *g)
{
	tc_add_buffer(&g->t, 4194304, NULL); /* 4 GiB: over uint32 */
	strcpy(g->expect,
	       "Failed to allocate tracing buffers: Invalid buffer sizes");
	g->check_buffers = true;
}

/* Step 25 after step 24 created the file: its fd must not leak. */
static void g_buffer_after_file(struct gctx *g)
{
	snprintf(g->path, sizeof(g->path), "%s/created.pftrace", g->e->dir);
	g->t.cfg.has_write_into_file = true;
	g->t.cfg.write_into_file = true;
	g->t.cfg.output_path = g->path;
	g->t.buf[0].size_kb = 0;
	strcpy(g->expect,
	       "Failed to allocate tracing buffers: Invalid buffer sizes");
	g->check_buffers = true;
}

static struct gcase gcases[] = {
	{ "step03_duration", g_duration },
	{ "step03_duration_guardrails", g_duration_guardrails },
	{ "step04_trigger_timeout_zero", g_trigger_timeout_zero },
	{ "step04_trigger_timeout_long", g_trigger_timeout_long },
	{ "step05_trigger_mode", g_trigger_mode },
	{ "step06_clone_if_available", g_clone_if_available },
	{ "step07_duration_with_triggers", g_duration_with_triggers },
	{ "step08_bugreport_filename", g_bugreport_filename },
	{ "step09_stop_trigger_with_file", g_stop_with_file },
	{ "step10_duplicate_trigger", g_duplicate_trigger },
	{ "step11_deferred_start_guardrails", g_deferred_guardrails },
	{ "step11_size_multiple_of_4", g_size_multiple },
	{ "step11_total_size", g_total_size },
	{ "step11_total_size_override", g_total_size_override },
	{ "step12_too_many_buffers", g_too_many_buffers },
	{ "step13_duplicate_buffer_name", g_duplicate_buffer_name },
	{ "step14_target_name_unknown", g_target_name_unknown },
	{ "step14_target_mismatch", g_target_mismatch },
	{ "step14_target_out_of_bounds", g_target_out_of_bounds },
	{ "step21_filter_rules", g_filter_rules },
	{ "step21_filter_bytecode", g_filter_bytecode },
	{ "step22_priority_boost", g_priority_boost },
	{ "step24_file_neither_fd_nor_path", g_file_neither },
	{ "step24_file_fd_and_path", g_file_both },
	{ "step24_file_exists", g_file_exists },
	{ "step25_buffer_zero", g_buffer_zero },
	{ "step25_buffer_4gib", g_buffer_4gib },
	{ "step25_after_file_created", g_buffer_after_file },
};

/* A valid 2-buffer session now: GetTraceStats counts only its buffers. */
static void check_buffers_freed(struct cons *c)
{
	Perfetto__Protos__GetTraceStatsResponse *r = NULL;
	struct enable_res res;
	struct tc t;

	tc_init(&t, 64);
	tc_add_buffer(&t, 64, NULL);
	enable(c, &t, -1, &res);
	assert_int_equal(call0(c, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       (ProtobufCMessage **)&r),
			 0);
	assert_int_equal(r->trace_stats->total_buffers, 2);
	assert_int_equal(r->trace_stats->tracing_sessions, 1);
	assert_int_equal(r->trace_stats->n_buffer_stats, 2);
	perfetto__protos__get_trace_stats_response__free_unpacked(r, NULL);
	assert_int_equal(free_buffers(c), 0);
	wait_flag(c, &res.done, CALL_MS);
	assert_true(res.done);
	assert_int_equal(num_sessions(c), 0);
}

static void test_guardrail_case(void **state)
{
	struct env *e = *state;
	const struct gcase *gc = e->arg;
	struct gctx g = { .e = e, .fd = -1 };
	struct enable_res res;
	struct cons c;
	int before, after;

	assert_non_null(gc);
	cons_open(e, &c);
	tc_init(&g.t, 64);
	gc->build(&g);
	assert_int_equal(num_sessions(&c), 0);
	before = count_fds();
	enable(&c, &g.t, g.fd, &res);
	wait_flag(&c, &res.done, CALL_MS);
	assert_true(res.done);
	assert_int_equal(res.status, 0);
	assert_true(res.disabled);
	assert_string_equal(res.error, g.expect);
	/* Nothing left: no session (this round trip also orders the
	 * service's fd close after the reply), no fd. */
	assert_int_equal(num_sessions(&c), 0);
	after = count_fds();
	assert_int_equal(after, before);
	if (g.check_buffers)
		check_buffers_freed(&c);
	if (g.fd >= 0)
		close(g.fd);
	free(g.many);
	free(g.manyp);
	cons_close(&c);
}

/* --- guardrail steps that involve other sessions --- */

#define ERR_STEP2                                                            \
	"A Consumer is trying to EnableTracing() but another tracing session " \
	"is already active (forgot a call to FreeBuffers() ?)"

/* Enables a running session (duration 0) named `name` on c. */
static void enable_named(struct cons *c, struct tc *t, const char *name,
			 struct enable_res *res)
{
	tc_init(t, 64);
	t->cfg.unique_session_name = (char *)name;
	enable(c, t, -1, res);
}

/* Enables and waits for the immediate refusal; returns its text. */
static const char *enable_refused(struct cons *c, struct tc *t,
				  struct enable_res *res)
{
	enable(c, t, -1, res);
	wait_flag(c, &res->done, CALL_MS);
	assert_true(res->done);
	assert_int_equal(res->status, 0);
	assert_true(res->disabled);
	return res->error;
}

/* Step 2: the refusal, and the older pending EnableTracing is rejected. */
static void test_step02_session_already_active(void **state)
{
	struct env *e = *state;
	struct enable_res ra, rb;
	struct tc a, b;
	struct cons c;

	cons_open(e, &c);
	enable_named(&c, &a, "first", &ra);
	assert_one_session(&c, "STARTED");
	tc_init(&b, 64);
	assert_string_equal(enable_refused(&c, &b, &rb), ERR_STEP2);
	wait_flag(&c, &ra.done, CALL_MS);
	assert_true(ra.done);
	assert_int_equal(ra.status, -EREMOTEIO);
	/* The first session is untouched. */
	assert_one_session(&c, "STARTED");
	assert_int_equal(free_buffers(&c), 0);
	assert_int_equal(num_sessions(&c), 0);
	cons_close(&c);
}

/* Step 15: a lower/equal priority is refused; a higher one aborts every
 * session and their consumers hear why. */
static void test_step15_exclusive(void **state)
{
	struct env *e = *state;
	struct enable_res ra, rb;
	struct cons c1, c2;
	struct tc a, b;
	Perfetto__Protos__TracingServiceState *st;

	cons_open(e, &c1);
	cons_open(e, &c2);
	tc_init(&a, 64);
	a.cfg.unique_session_name = "excl_a";
	a.cfg.has_exclusive_prio = true;
	a.cfg.exclusive_prio = 5;
	enable(&c1, &a, -1, &ra);
	assert_one_session(&c1, "STARTED");

	tc_init(&b, 64);
	b.cfg.has_exclusive_prio = true;
	b.cfg.exclusive_prio = 3;
	assert_string_equal(enable_refused(&c2, &b, &rb),
			    "An exclusive session with priority 5 >= requested "
			    "priority 3 is already active.");
	b.cfg.exclusive_prio = 5;
	assert_string_equal(enable_refused(&c2, &b, &rb),
			    "An exclusive session with priority 5 >= requested "
			    "priority 5 is already active.");
	assert_int_equal(num_sessions(&c2), 1);

	b.cfg.exclusive_prio = 7;
	b.cfg.unique_session_name = "excl_b";
	enable(&c2, &b, -1, &rb);
	assert_int_equal(num_sessions(&c2), 1); /* sends it, waits for it */
	wait_flag(&c1, &ra.done, CALL_MS);
	assert_true(ra.done);
	assert_int_equal(ra.status, 0);
	assert_true(ra.disabled);
	assert_string_equal(ra.error, "Aborted due to user requested "
				      "higher-priority (7) exclusive session.");
	st = qss(&c2, true, NULL);
	assert_int_equal(st->num_sessions, 1);
	assert_string_equal(st->tracing_sessions[0]->unique_session_name,
			    "excl_b");
	assert_string_equal(st->tracing_sessions[0]->state, "STARTED");
	qss_free(st);
	assert_false(rb.done);

	/* c1 lost its session: the next refusal is step 15, not step 2. */
	tc_init(&a, 64);
	assert_string_equal(enable_refused(&c1, &a, &ra),
			    "An exclusive session with priority 7 >= requested "
			    "priority 0 is already active.");
	assert_int_equal(free_buffers(&c2), 0);
	wait_flag(&c2, &rb.done, CALL_MS);
	assert_true(rb.done);
	assert_string_equal(rb.error, "");
	assert_int_equal(num_sessions(&c2), 0);
	cons_close(&c1);
	cons_close(&c2);
}

static void test_step16_unique_name(void **state)
{
	struct env *e = *state;
	struct enable_res ra, rb;
	struct cons c1, c2;
	struct tc a, b;

	cons_open(e, &c1);
	cons_open(e, &c2);
	enable_named(&c1, &a, "uniq", &ra);
	assert_one_session(&c1, "STARTED");
	tc_init(&b, 64);
	b.cfg.unique_session_name = "uniq";
	assert_string_equal(enable_refused(&c2, &b, &rb),
			    "A trace with this unique session name (uniq) "
			    "already exists");
	assert_int_equal(num_sessions(&c2), 1);
	assert_int_equal(free_buffers(&c1), 0);
	cons_close(&c1);
	cons_close(&c2);
}

static void test_step17_semaphore(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__TraceConfig__SessionSemaphore sa, sb;
	Perfetto__Protos__TraceConfig__SessionSemaphore *pa[] = { &sa };
	Perfetto__Protos__TraceConfig__SessionSemaphore *pb[] = { &sb };
	struct enable_res ra, rb;
	struct cons c1, c2;
	struct tc a, b;

	perfetto__protos__trace_config__session_semaphore__init(&sa);
	perfetto__protos__trace_config__session_semaphore__init(&sb);
	sa.name = "sem";
	sa.has_max_other_session_count = true;
	sa.max_other_session_count = 0;
	sb.name = "sem";
	sb.has_max_other_session_count = true;
	sb.max_other_session_count = 5;
	cons_open(e, &c1);
	cons_open(e, &c2);
	tc_init(&a, 64);
	a.cfg.n_session_semaphores = 1;
	a.cfg.session_semaphores = pa;
	enable(&c1, &a, -1, &ra);
	assert_one_session(&c1, "STARTED");
	tc_init(&b, 64);
	b.cfg.n_session_semaphores = 1;
	b.cfg.session_semaphores = pb;
	assert_string_equal(enable_refused(&c2, &b, &rb),
			    "Semaphore \"sem\" exceeds maximum allowed other "
			    "session count (1 > min(5, 0))");
	assert_int_equal(num_sessions(&c2), 1);
	assert_int_equal(free_buffers(&c1), 0);
	cons_close(&c1);
	cons_close(&c2);
}

static void test_step18_guardrail_rate(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c;
	struct tc t;
	const char *err;

	cons_open(e, &c);
	tc_init(&t, 64);
	t.cfg.unique_session_name = "rated";
	t.cfg.has_enable_extra_guardrails = true;
	t.cfg.enable_extra_guardrails = true;
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "STARTED");
	assert_int_equal(free_buffers(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	err = enable_refused(&c, &t, &r);
	/* The seconds since the first one: 0, or 1 across a boundary. */
	if (strcmp(err, "A trace with unique session name \"rated\" began less "
			"than 300s ago (0s)"))
		assert_string_equal(err, "A trace with unique session name "
					 "\"rated\" began less than 300s ago "
					 "(1s)");
	/* Without guardrails the name may be reused at once. */
	t.cfg.enable_extra_guardrails = false;
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "STARTED");
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
}

static void test_step19_sessions_per_uid(void **state)
{
	struct env *e = *state;
	struct enable_res r[6];
	struct cons c[6];
	struct tc t[6];
	char want[160];

	for (int i = 0; i < 6; i++)
		cons_open(e, &c[i]);
	for (int i = 0; i < 5; i++) {
		tc_init(&t[i], 64);
		enable(&c[i], &t[i], -1, &r[i]);
		assert_int_equal(num_sessions(&c[i]), i + 1);
	}
	assert_int_equal(num_sessions(&c[5]), 5);
	tc_init(&t[5], 64);
	snprintf(want, sizeof(want),
		 "Too many concurrent tracing sesions (5) for uid %d limit is 5",
		 (int)getuid());
	assert_string_equal(enable_refused(&c[5], &t[5], &r[5]), want);
	assert_int_equal(num_sessions(&c[5]), 5);
	for (int i = 0; i < 5; i++) {
		assert_false(r[i].done);
		assert_int_equal(free_buffers(&c[i]), 0);
	}
	assert_int_equal(num_sessions(&c[5]), 0);
	for (int i = 0; i < 6; i++)
		cons_close(&c[i]);
}

/* --- detach / attach --- */

static int detach(struct cons *c, const char *key)
{
	Perfetto__Protos__DetachRequest req = PERFETTO__PROTOS__DETACH_REQUEST__INIT;

	req.key = (char *)key;
	return ipc_sync_call(c->sync, c->port, "Detach", &req.base, -1, NULL,
			     NULL, CALL_MS);
}

static int attach(struct cons *c, const char *key,
		  Perfetto__Protos__AttachResponse **out)
{
	Perfetto__Protos__AttachRequest req = PERFETTO__PROTOS__ATTACH_REQUEST__INIT;

	req.key = (char *)key;
	return ipc_sync_call(c->sync, c->port, "Attach", &req.base, -1,
			     (ProtobufCMessage **)out, NULL, CALL_MS);
}

static void test_detach_attach(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__AttachResponse *ar = NULL;
	struct enable_res r1, r3, rn;
	struct cons c1, c2, c3;
	struct tc t1, t3;

	cons_open(e, &c1);
	cons_open(e, &c2);
	cons_open(e, &c3);
	tc_init(&t1, 64);
	t1.cfg.unique_session_name = "parked";
	t1.cfg.has_flush_timeout_ms = true;
	t1.cfg.flush_timeout_ms = 1234;
	enable(&c1, &t1, -1, &r1);
	assert_one_session(&c1, "STARTED");
	assert_int_equal(detach(&c1, "k1"), 0);
	/* The pending EnableTracing reply is dropped, not rejected: the
	 * perfetto CLI takes a rejection there for a lost service. */
	pump(&c1, 100);
	assert_false(r1.done);
	/* No session on c1 any more: a second Detach fails. */
	assert_int_equal(detach(&c1, "k1"), -EREMOTEIO);
	/* Disconnecting no longer frees it. */
	cons_close(&c1);
	pump(&c2, 100);
	assert_one_session(&c2, "STARTED");

	/* Another session cannot park under the taken key. */
	enable_named(&c3, &t3, "other", &r3);
	assert_int_equal(num_sessions(&c3), 2);
	assert_int_equal(detach(&c3, "k1"), -EREMOTEIO);
	assert_int_equal(call0(&c3, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       NULL),
			 0); /* c3 still has its session */

	assert_int_equal(attach(&c2, "nokey", &ar), -EREMOTEIO);
	assert_int_equal(attach(&c2, "k1", &ar), 0);
	assert_non_null(ar->trace_config);
	assert_string_equal(ar->trace_config->unique_session_name, "parked");
	assert_int_equal(ar->trace_config->n_buffers, 1);
	assert_int_equal(ar->trace_config->buffers[0]->size_kb, 64);
	assert_int_equal(ar->trace_config->flush_timeout_ms, 1234);
	perfetto__protos__attach_response__free_unpacked(ar, NULL);
	/* A connection with a session cannot attach; the key is gone. */
	assert_int_equal(attach(&c3, "k1", &ar), -EREMOTEIO);
	assert_int_equal(attach(&c2, "k1", &ar), -EREMOTEIO);

	/* The end-of-trace notification through attach_notification_only. */
	enable_notify(&c2, &rn);
	pump(&c2, 50);
	assert_false(rn.done);
	assert_int_equal(disable(&c2), 0);
	wait_flag(&c2, &rn.done, CALL_MS);
	assert_true(rn.done);
	assert_int_equal(rn.status, 0);
	assert_true(rn.disabled);
	assert_string_equal(rn.error, "");
	assert_int_equal(free_buffers(&c2), 0);
	assert_int_equal(free_buffers(&c3), 0);
	assert_int_equal(num_sessions(&c2), 0);
	cons_close(&c2);
	cons_close(&c3);
}

/* A detached session that ends by itself is freed after its final flush. */
static void test_detached_session_ends(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c1, c2;
	struct tc t;
	int64_t end;

	cons_open(e, &c1);
	cons_open(e, &c2);
	tc_init(&t, 64);
	t.cfg.has_duration_ms = true;
	t.cfg.duration_ms = 200;
	enable(&c1, &t, -1, &r);
	assert_int_equal(detach(&c1, "short"), 0);
	cons_close(&c1);
	end = now_ms() + CALL_MS;
	while (num_sessions(&c2) && now_ms() < end)
		pump(&c2, 50);
	assert_int_equal(num_sessions(&c2), 0);
	assert_int_equal(attach(&c2, "short", NULL), -EREMOTEIO);
	cons_close(&c2);
}

/* --- write_into_file --- */

/* Reads a whole file. */
static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* What a trace file holds. */
struct file_summary {
	size_t bytes;		/* file size */
	size_t packets;		/* Trace.packet entries */
	int configs;		/* trace_config packets */
	int stats;		/* trace_stats packets */
	int drains;		/* read_tracing_buffers_completed events */
	int disabled;		/* tracing_disabled events */
};

/* Decodes the file as a Trace (asserts it is one). */
static void summarize(const char *path, struct file_summary *fs)
{
	size_t len;
	uint8_t *b = slurp(path, &len);
	Perfetto__Protos__Trace *t =
		perfetto__protos__trace__unpack(NULL, len, b);

	memset(fs, 0, sizeof(*fs));
	assert_non_null(t);
	fs->bytes = len;
	fs->packets = t->n_packet;
	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *p = t->packet[i];

		fs->configs += p->data_case ==
			       PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG;
		fs->stats += p->data_case ==
			     PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS;
		if (p->data_case !=
		    PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT)
			continue;
		fs->drains += p->service_event->event_type_case ==
			      PERFETTO__PROTOS__TRACING_SERVICE_EVENT__EVENT_TYPE_READ_TRACING_BUFFERS_COMPLETED;
		fs->disabled += p->service_event->event_type_case ==
				PERFETTO__PROTOS__TRACING_SERVICE_EVENT__EVENT_TYPE_TRACING_DISABLED;
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
	free(b);
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Runs a write_into_file session for run_ms, then disables it. */
static void run_file_session(struct cons *c, struct tc *t, int fd,
			     const char *path, int run_ms)
{
	struct enable_res r;
	int64_t end;
	int before = count_fds();

	enable(c, t, fd, &r);
	assert_one_session(c, "STARTED");
	/* A drain while the session still runs. */
	end = now_ms() + CALL_MS;
	while (file_size(path) <= 0 && now_ms() < end)
		pump(c, 20);
	assert_true(file_size(path) > 0);
	assert_one_session(c, "STARTED");
	end = now_ms() + run_ms;
	while (now_ms() < end)
		pump(c, 20);
	assert_int_equal(disable(c), 0);
	wait_flag(c, &r.done, CALL_MS);
	assert_true(r.done);
	assert_int_equal(r.status, 0);
	assert_true(r.disabled);
	assert_string_equal(r.error, "");
	assert_int_equal(free_buffers(c), 0);
	/* The service closed its file (or its copy of ours). */
	assert_int_equal(num_sessions(c), 0);
	assert_int_equal(count_fds(), before);
}

static void test_file_fd(void **state)
{
	struct env *e = *state;
	struct file_summary fs;
	char path[256];
	struct cons c;
	struct tc t;
	int fd;

	snprintf(path, sizeof(path), "%s/fd.pftrace", e->dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	cons_open(e, &c);
	tc_init(&t, 256);
	t.cfg.has_write_into_file = true;
	t.cfg.write_into_file = true;
	t.cfg.has_file_write_period_ms = true;
	t.cfg.file_write_period_ms = 100;
	run_file_session(&c, &t, fd, path, 600);
	close(fd);
	summarize(path, &fs);
	assert_int_equal(fs.configs, 1);
	assert_int_equal(fs.disabled, 1);
	assert_true(fs.stats >= 1); /* forced at the end of a file session */
	/* Drains every 100 ms for 600+ ms, plus the final one. */
	assert_true(fs.drains >= 4);
	/* ReadBuffers returns nothing for a write_into_file session: checked
	 * before FreeBuffers in the next test. */
	cons_close(&c);
}

static void test_file_output_path(void **state)
{
	struct env *e = *state;
	struct file_summary fs;
	char path[256];
	struct stat st;
	struct cons c;
	struct tc t;

	snprintf(path, sizeof(path), "%s/out.pftrace", e->dir);
	cons_open(e, &c);
	tc_init(&t, 256);
	t.cfg.has_write_into_file = true;
	t.cfg.write_into_file = true;
	t.cfg.output_path = path;
	t.cfg.has_file_write_period_ms = true;
	t.cfg.file_write_period_ms = 1; /* raised to 100 */
	run_file_session(&c, &t, -1, path, 1000);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	summarize(path, &fs);
	assert_int_equal(fs.configs, 1);
	assert_int_equal(fs.disabled, 1);
	/* About 10 drains in ~1 s at the 100 ms minimum, not ~1000. */
	assert_true(fs.drains >= 4);
	assert_true(fs.drains <= 25);
	cons_close(&c);
}

static void on_read(void *arg, struct ipc_client_reply *r)
{
	size_t *slices = arg;

	if (r->status == 0)
		*slices += ((const Perfetto__Protos__ReadBuffersResponse *)r->msg)
				   ->n_slices;
}

/* ReadBuffers: the number of slices of the whole stream. */
static size_t read_slices(struct cons *c)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	size_t slices = 0;

	assert_int_equal(ipc_sync_stream(c->sync, c->port, "ReadBuffers",
					 &req.base, -1, on_read, &slices,
					 CALL_MS),
			 0);
	return slices;
}

/* max_file_size_bytes: the session stops by itself, the file stays below
 * the limit and is a valid Trace. */
static void test_file_max_size(void **state)
{
	struct env *e = *state;
	struct file_summary fs;
	struct enable_res r;
	char path[256];
	struct cons c;
	struct tc t;

	snprintf(path, sizeof(path), "%s/max.pftrace", e->dir);
	cons_open(e, &c);
	tc_init(&t, 256);
	t.cfg.has_write_into_file = true;
	t.cfg.write_into_file = true;
	t.cfg.output_path = path;
	t.cfg.has_file_write_period_ms = true;
	t.cfg.file_write_period_ms = 100;
	t.cfg.has_max_file_size_bytes = true;
	t.cfg.max_file_size_bytes = 400;
	enable(&c, &t, -1, &r);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	assert_int_equal(r.status, 0);
	assert_true(r.disabled);
	assert_string_equal(r.error, "");
	assert_one_session(&c, "DISABLED");
	assert_int_equal(read_slices(&c), 0);
	summarize(path, &fs);
	assert_true(fs.bytes > 0);
	assert_true(fs.bytes < 400);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
}

/* --- flush, disable, free, disconnect, start --- */

static void test_flush(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	/* No session: rejected (the reference never answers). */
	assert_int_equal(flush(&c, 100), -EREMOTEIO);
	/* Not started (deferred): rejected at once. */
	tc_init(&t, 64);
	t.cfg.has_deferred_start = true;
	t.cfg.deferred_start = true;
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "CONFIGURED");
	assert_int_equal(flush(&c, 1000), -EREMOTEIO);
	/* Started, no producers: succeeds at once. */
	assert_int_equal(start_tracing(&c), 0);
	assert_one_session(&c, "STARTED");
	assert_int_equal(flush(&c, 1000), 0);
	assert_int_equal(flush(&c, 0), 0);
	assert_false(r.done);
	assert_int_equal(free_buffers(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	cons_close(&c);
}

static void test_disable_without_session(void **state)
{
	struct env *e = *state;
	struct cons c;

	cons_open(e, &c);
	assert_int_equal(disable(&c), 0);
	assert_int_equal(start_tracing(&c), 0);
	assert_int_equal(free_buffers(&c), 0);
	assert_int_equal(read_slices(&c), 0);
	assert_int_equal(num_sessions(&c), 0);
	cons_close(&c);
}

/* FreeBuffers ends a running session at once: EnableTracing answers. */
static void test_free_buffers(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	tc_init(&t, 64);
	tc_add_buffer(&t, 128, NULL);
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "STARTED");
	assert_int_equal(free_buffers(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	assert_int_equal(r.status, 0);
	assert_true(r.disabled);
	assert_string_equal(r.error, "");
	assert_int_equal(num_sessions(&c), 0);
	assert_int_equal(read_slices(&c), 0);
	assert_int_equal(call0(&c, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       NULL),
			 -EREMOTEIO);
	cons_close(&c);
}

/* A consumer that goes away takes its session with it. */
static void test_consumer_disconnect(void **state)
{
	struct env *e = *state;
	struct enable_res r1, r2;
	struct cons c1, c2;
	struct tc t1, t2;
	int64_t end;

	cons_open(e, &c1);
	cons_open(e, &c2);
	enable_named(&c1, &t1, "gone", &r1);
	assert_one_session(&c1, "STARTED");
	cons_close(&c1);
	end = now_ms() + CALL_MS;
	while (num_sessions(&c2) && now_ms() < end)
		pump(&c2, 20);
	assert_int_equal(num_sessions(&c2), 0);
	/* Same unique name: accepted only because the first is gone. */
	enable_named(&c2, &t2, "gone", &r2);
	assert_one_session(&c2, "STARTED");
	assert_int_equal(free_buffers(&c2), 0);
	cons_close(&c2);
}

static void test_deferred_start(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	tc_init(&t, 64);
	t.cfg.has_deferred_start = true;
	t.cfg.deferred_start = true;
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "CONFIGURED");
	assert_int_equal(start_tracing(&c), 0);
	assert_one_session(&c, "STARTED");
	assert_int_equal(start_tracing(&c), 0); /* ignored */
	assert_one_session(&c, "STARTED");
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	assert_true(r.disabled);
	assert_string_equal(r.error, "");
	assert_one_session(&c, "DISABLED");
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
}

/* START_TRACING without the trigger: the session ends after the timeout
 * and yields nothing. */
static void test_start_trigger_timeout(void **state)
{
	struct env *e = *state;
	struct enable_res r;
	struct cons c;
	struct tc t;
	int64_t t0;

	cons_open(e, &c);
	tc_init(&t, 64);
	tc_trigger(&t, 1 /* START_TRACING */, 300, "go");
	t0 = now_ms();
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "CONFIGURED");
	assert_int_equal(start_tracing(&c), 0); /* waits for the trigger */
	assert_one_session(&c, "CONFIGURED");
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);
	assert_true(now_ms() - t0 >= 250);
	assert_int_equal(r.status, 0);
	assert_true(r.disabled);
	assert_string_equal(r.error, "");
	assert_one_session(&c, "DISABLED");
	assert_int_equal(read_slices(&c), 0);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
}

static void test_get_trace_stats(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__GetTraceStatsResponse *gr = NULL;
	const Perfetto__Protos__TraceStats *ts;
	struct enable_res r;
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	assert_int_equal(call0(&c, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       NULL),
			 -EREMOTEIO);
	tc_init(&t, 64);
	tc_add_buffer(&t, 128, NULL);
	enable(&c, &t, -1, &r);
	assert_int_equal(flush(&c, 1000), 0);
	assert_int_equal(call0(&c, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       (ProtobufCMessage **)&gr),
			 0);
	ts = gr->trace_stats;
	assert_non_null(ts);
	assert_int_equal(ts->n_buffer_stats, 2);
	assert_int_equal(ts->buffer_stats[0]->buffer_size, 64 * 1024);
	assert_int_equal(ts->buffer_stats[1]->buffer_size, 128 * 1024);
	assert_int_equal(ts->buffer_stats[0]->chunks_written, 0);
	assert_int_equal(ts->tracing_sessions, 1);
	assert_int_equal(ts->total_buffers, 2);
	assert_int_equal(ts->producers_connected, 0);
	assert_int_equal(ts->data_sources_registered, 0);
	assert_int_equal(ts->flushes_requested, 1);
	assert_int_equal(ts->flushes_succeeded, 1);
	assert_int_equal(ts->flushes_failed, 0);
	/* Only a flush with reason "trace stop" is the final one. */
	assert_false(ts->has_final_flush_outcome);
	perfetto__protos__get_trace_stats_response__free_unpacked(gr, NULL);
	/* The perfetto CLI's before DisableTracing: reason 2, initiator 2. */
	assert_int_equal(flush_flags(&c, 1000, 2 | 2 << 4), 0);
	assert_int_equal(call0(&c, "GetTraceStats",
			       &perfetto__protos__get_trace_stats_request__descriptor,
			       (ProtobufCMessage **)&gr),
			 0);
	assert_int_equal(gr->trace_stats->flushes_succeeded, 2);
	assert_true(gr->trace_stats->has_final_flush_outcome);
	assert_int_equal(gr->trace_stats->final_flush_outcome,
			 PERFETTO__PROTOS__TRACE_STATS__FINAL_FLUSH_OUTCOME__FINAL_FLUSH_SUCCEEDED);
	perfetto__protos__get_trace_stats_response__free_unpacked(gr, NULL);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
}

/* --- the table and main --- */

#define T(f) { #f, f, env_setup, env_teardown, NULL }

static const struct CMUnitTest session_tests[] = {
	T(test_step02_session_already_active),
	T(test_step15_exclusive),
	T(test_step16_unique_name),
	T(test_step17_semaphore),
	T(test_step18_guardrail_rate),
	T(test_step19_sessions_per_uid),
	T(test_detach_attach),
	T(test_detached_session_ends),
	T(test_file_fd),
	T(test_file_output_path),
	T(test_file_max_size),
	T(test_flush),
	T(test_disable_without_session),
	T(test_free_buffers),
	T(test_consumer_disconnect),
	T(test_deferred_start),
	T(test_start_trigger_timeout),
	T(test_get_trace_stats),
};

#define NGCASES (sizeof(gcases) / sizeof(gcases[0]))
#define NSESSION (sizeof(session_tests) / sizeof(session_tests[0]))

/* Runs every test with `lanes` lanes; returns the failures. */
static int run_all(unsigned lanes, const char *group)
{
	struct CMUnitTest tests[NGCASES + NSESSION];

	env_lanes = lanes;
	for (size_t i = 0; i < NGCASES; i++)
		tests[i] = (struct CMUnitTest){ gcases[i].name,
						test_guardrail_case, env_setup,
						env_teardown, &gcases[i] };
	for (size_t i = 0; i < NSESSION; i++)
		tests[NGCASES + i] = session_tests[i];
	return _cmocka_run_group_tests(group, tests, NGCASES + NSESSION, NULL,
				       NULL);
}

int main(void)
{
	int failed = run_all(1, "consumer_port_lanes_1");

	failed += run_all(2, "consumer_port_lanes_2");
	return failed ? 1 : 0;
}
