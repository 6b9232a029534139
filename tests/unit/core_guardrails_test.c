// SPDX-License-Identifier: Apache-2.0
// Unit tests of the EnableTracing guardrails: each check's exact error text and its boundary values, the order of the checks, the side effects (lockdown, exclusive aborts, rate-limit history), the output file, buffer sizes, the BufferID allocator and every allocation failing.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/guardrails.h"
#include "core/mem_hooks.h"

#define MAX_BUF 200
#define MAX_TRIG 64
#define MAX_DS 4
#define MAX_SEM 8
#define MAX_SESS 32

#define NOW_MS 1000000000 /* 1e6 s of uptime */

typedef Perfetto__Protos__TraceConfig cfg_t;
typedef Perfetto__Protos__TraceConfig__BufferConfig bufcfg_t;
typedef Perfetto__Protos__TraceConfig__TriggerConfig trigcfg_t;
typedef Perfetto__Protos__TraceConfig__TriggerConfig__Trigger trig_t;
typedef Perfetto__Protos__TraceConfig__DataSource ds_t;
typedef Perfetto__Protos__TraceConfig__SessionSemaphore sem_t;
typedef Perfetto__Protos__TraceConfig__TraceFilter filter_t;
typedef Perfetto__Protos__TraceConfig__TraceFilter__StringFilterChain chain_t;
typedef Perfetto__Protos__TraceConfig__TraceFilter__StringFilterRule rule_t;

/* One request, the service state it meets, and the outputs. */
static struct fixture {
	cfg_t cfg;			/* the request's config */
	bufcfg_t buf[MAX_BUF];		/* its buffers */
	bufcfg_t *bufp[MAX_BUF];	/* cfg.buffers */
	trigcfg_t tc;			/* its trigger_config (when linked) */
	trig_t trig[MAX_TRIG];		/* its triggers */
	trig_t *trigp[MAX_TRIG];	/* tc.triggers */
	ds_t ds[MAX_DS];		/* its data sources */
	ds_t *dsp[MAX_DS];		/* cfg.data_sources */
	Perfetto__Protos__DataSourceConfig dsc[MAX_DS]; /* ds[i].config */
	Perfetto__Protos__TraceConfig__GuardrailOverrides go; /* overrides */
	sem_t sem[MAX_SEM];		/* its semaphores */
	sem_t *semp[MAX_SEM];		/* cfg.session_semaphores */
	filter_t filt;			/* its trace_filter (when linked) */
	chain_t chain;			/* filt.string_filter_chain */
	rule_t rule;			/* chain's one rule */
	rule_t *rulep;			/* chain.rules */
	Perfetto__Protos__PriorityBoostConfig boost; /* its priority_boost */
	struct svc_session_view sess[MAX_SESS]; /* existing sessions */
	sem_t ssem[MAX_SESS];		/* one semaphore per existing session */
	sem_t *ssemp[MAX_SESS];		/* sess[i].semaphores */
	struct svc_guard_history hist;	/* step-18 history */
	bool lockdown;			/* the service's lockdown flag */
	uint64_t abort_ids[MAX_SESS];	/* res.abort_ids */
	struct svc_guard_ctx ctx;	/* the inputs */
	struct svc_guard_result res;	/* the outputs */
	char err[SVC_GUARD_ERR_LEN];	/* the error text */
} F;

static int filter_calls;  /* times filter_hook ran */
static int filter_rc;	  /* what filter_hook returns */

static int filter_hook(void *opaque, const filter_t *f)
{
	assert_ptr_equal(opaque, &F);
	assert_ptr_equal(f, &F.filt);
	filter_calls++;
	return filter_rc;
}

/* Sets `n` buffers of `kb` KiB, unnamed. */
static void set_buffers(size_t n, uint32_t kb)
{
	assert_true(n <= MAX_BUF);
	for (size_t i = 0; i < n; i++) {
		F.buf[i] = (bufcfg_t)PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
		F.buf[i].has_size_kb = 1;
		F.buf[i].size_kb = kb;
		F.bufp[i] = &F.buf[i];
	}
	F.cfg.n_buffers = n;
	F.cfg.buffers = F.bufp;
}

/* Links the trigger config with `mode`, `timeout` and `n` triggers named
 * from names[]. */
static void set_triggers(int mode, uint32_t timeout, size_t n,
			 const char *const *names)
{
	assert_true(n <= MAX_TRIG);
	F.tc = (trigcfg_t)PERFETTO__PROTOS__TRACE_CONFIG__TRIGGER_CONFIG__INIT;
	F.tc.has_trigger_mode = 1;
	F.tc.trigger_mode = (Perfetto__Protos__TraceConfig__TriggerConfig__TriggerMode)mode;
	F.tc.has_trigger_timeout_ms = 1;
	F.tc.trigger_timeout_ms = timeout;
	for (size_t i = 0; i < n; i++) {
		F.trig[i] = (trig_t)PERFETTO__PROTOS__TRACE_CONFIG__TRIGGER_CONFIG__TRIGGER__INIT;
		F.trig[i].name = (char *)names[i];
		F.trigp[i] = &F.trig[i];
	}
	F.tc.n_triggers = n;
	F.tc.triggers = F.trigp;
	F.cfg.trigger_config = &F.tc;
}

/* Sets data source `i` (and the count to i + 1). */
static void set_ds(size_t i, const char *name, uint32_t target,
		   const char *target_name)
{
	F.dsc[i] = (Perfetto__Protos__DataSourceConfig)PERFETTO__PROTOS__DATA_SOURCE_CONFIG__INIT;
	F.dsc[i].name = (char *)name;
	F.dsc[i].has_target_buffer = 1;
	F.dsc[i].target_buffer = target;
	F.dsc[i].target_buffer_name = (char *)target_name;
	F.ds[i] = (ds_t)PERFETTO__PROTOS__TRACE_CONFIG__DATA_SOURCE__INIT;
	F.ds[i].config = &F.dsc[i];
	F.dsp[i] = &F.ds[i];
	F.cfg.n_data_sources = i + 1;
	F.cfg.data_sources = F.dsp;
}

/* Adds a semaphore to the request. */
static void add_sem(const char *name, uint64_t max_others)
{
	size_t i = F.cfg.n_session_semaphores;

	assert_true(i < MAX_SEM);
	F.sem[i] = (sem_t)PERFETTO__PROTOS__TRACE_CONFIG__SESSION_SEMAPHORE__INIT;
	F.sem[i].name = (char *)name;
	F.sem[i].has_max_other_session_count = 1;
	F.sem[i].max_other_session_count = max_others;
	F.semp[i] = &F.sem[i];
	F.cfg.session_semaphores = F.semp;
	F.cfg.n_session_semaphores = i + 1;
}

/* Adds an existing session (id = 100 + index) and returns it. */
static struct svc_session_view *add_session(uid_t uid,
					    enum svc_session_state state,
					    uint32_t prio, const char *name)
{
	size_t i = F.ctx.n_sessions++;

	assert_true(i < MAX_SESS);
	F.sess[i] = (struct svc_session_view){
		.id = 100 + i,
		.consumer_uid = uid,
		.state = state,
		.exclusive_prio = prio,
		.unique_session_name = name,
	};
	return &F.sess[i];
}

/* Gives existing session `i` one semaphore. */
static void session_sem(size_t i, const char *name, uint64_t max_others)
{
	F.ssem[i] = (sem_t)PERFETTO__PROTOS__TRACE_CONFIG__SESSION_SEMAPHORE__INIT;
	F.ssem[i].name = (char *)name;
	F.ssem[i].has_max_other_session_count = 1;
	F.ssem[i].max_other_session_count = max_others;
	F.ssemp[i] = &F.ssem[i];
	F.sess[i].semaphores = &F.ssemp[i];
	F.sess[i].n_semaphores = 1;
}

/* Links a trace filter whose one string rule has `policy`. */
static void set_filter(int policy)
{
	F.filt = (filter_t)PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__INIT;
	F.chain = (chain_t)PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__STRING_FILTER_CHAIN__INIT;
	F.rule = (rule_t)PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__STRING_FILTER_RULE__INIT;
	F.rule.has_policy = 1;
	F.rule.policy = (Perfetto__Protos__TraceConfig__TraceFilter__StringFilterPolicy)policy;
	F.rulep = &F.rule;
	F.chain.n_rules = 1;
	F.chain.rules = &F.rulep;
	F.filt.string_filter_chain = &F.chain;
	F.cfg.trace_filter = &F.filt;
}

/* Links a priority boost. */
static void set_boost(int policy, uint32_t prio)
{
	F.boost = (Perfetto__Protos__PriorityBoostConfig)PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__INIT;
	F.boost.has_policy = 1;
	F.boost.policy = (Perfetto__Protos__PriorityBoostConfig__BoostPolicy)policy;
	F.boost.has_priority = 1;
	F.boost.priority = prio;
	F.cfg.priority_boost = &F.boost;
}

static int setup(void **state)
{
	(void)state;
	memset(&F, 0, sizeof(F));
	F.cfg = (cfg_t)PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	set_buffers(1, 1024);
	svc_guard_history_init(&F.hist);
	F.ctx = (struct svc_guard_ctx){
		.cfg = &F.cfg,
		.uid = 1000,
		.sessions = F.sess,
		.history = &F.hist,
		.now_ms = NOW_MS,
		.lockdown = &F.lockdown,
		.filter_opaque = &F,
	};
	F.res.abort_ids = F.abort_ids;
	filter_calls = 0;
	filter_rc = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	svc_guard_history_free(&F.hist);
	svc_mem_set_hooks(NULL);
	return 0;
}

static int run(void)
{
	memset(F.err, 0x55, sizeof(F.err));
	return svc_guard_check(&F.ctx, &F.res, F.err, sizeof(F.err));
}

static void expect_ok(void)
{
	int rc = run();

	if (rc != 0)
		fail_msg("expected success, got %d: %s", rc, F.err);
	assert_string_equal(F.err, "");
}

static void expect_fail(int rc, const char *text)
{
	int got = run();

	if (got != rc)
		fail_msg("expected %d, got %d (%s)", rc, got, got ? F.err : "");
	assert_string_equal(F.err, text);
}

/* Records a guardrailed start of `name` at `now_ms` through the public API,
 * with no sessions around. */
static void seed_history(const char *name, int64_t now_ms)
{
	cfg_t c = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	bool lock = false;
	struct svc_guard_ctx ctx = { .cfg = &c, .history = &F.hist,
				     .now_ms = now_ms, .lockdown = &lock };
	struct svc_guard_result res = { 0 };
	char err[SVC_GUARD_ERR_LEN];

	c.enable_extra_guardrails = 1;
	c.unique_session_name = (char *)name;
	assert_int_equal(svc_guard_check(&ctx, &res, err, sizeof(err)), 0);
}

/* ---- steps 1-2 ---- */

static void test_default_config_passes(void **state)
{
	(void)state;
	expect_ok();
	assert_int_equal(F.res.n_abort, 0);
	assert_int_equal(F.res.trigger_mode, SVC_TRIGGER_UNSPECIFIED);
	assert_int_equal(F.res.boost.policy, SVC_BOOST_NONE);
	assert_false(F.lockdown);
	assert_int_equal(F.hist.len, 0); /* no guardrails: nothing recorded */
}

static void test_lockdown_applies_even_on_failure(void **state)
{
	(void)state;
	F.ctx.has_session = true;
	F.cfg.lockdown_mode = PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET;
	assert_int_equal(run(), -EBUSY);
	assert_true(F.lockdown);
	F.cfg.lockdown_mode = PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_UNCHANGED;
	assert_int_equal(run(), -EBUSY);
	assert_true(F.lockdown);
	F.cfg.lockdown_mode = PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_CLEAR;
	assert_int_equal(run(), -EBUSY);
	assert_false(F.lockdown);
	/* And on success too. */
	F.ctx.has_session = false;
	F.cfg.lockdown_mode = PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET;
	expect_ok();
	assert_true(F.lockdown);
}

static void test_connection_has_session(void **state)
{
	(void)state;
	F.ctx.has_session = true;
	expect_fail(-EBUSY,
		    "A Consumer is trying to EnableTracing() but another tracing "
		    "session is already active (forgot a call to FreeBuffers() ?)");
}

/* ---- steps 3-9 ---- */

static void test_duration_limits(void **state)
{
	(void)state;
	F.cfg.duration_ms = 604800000; /* exactly 7 days */
	expect_ok();
	F.cfg.duration_ms = 604800001;
	expect_fail(-EINVAL,
		    "Requested too long trace (604800001ms  > 604800000 ms)");
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.duration_ms = 86400000; /* exactly 24 h */
	expect_ok();
	F.ctx.now_ms += 301000; /* step 18 recorded that start */
	F.cfg.duration_ms = 86400001;
	expect_fail(-EINVAL, "Requested too long trace (86400001ms  > 86400000 ms)");
}

static void test_trigger_timeout(void **state)
{
	(void)state;
	set_triggers(SVC_TRIGGER_START_TRACING, 0, 0, NULL);
	expect_fail(-EINVAL,
		    "Traces with START_TRACING triggers must provide a positive "
		    "trigger_timeout_ms < 7 days (received 0ms)");
	F.tc.trigger_timeout_ms = 604800000;
	expect_ok();
	assert_int_equal(F.res.trigger_mode, SVC_TRIGGER_START_TRACING);
	F.tc.trigger_timeout_ms = 604800001;
	expect_fail(-EINVAL,
		    "Traces with START_TRACING triggers must provide a positive "
		    "trigger_timeout_ms < 7 days (received 604800001ms)");
	/* Guardrails lower the limit but not the text. */
	F.cfg.enable_extra_guardrails = 1;
	F.tc.trigger_timeout_ms = 86400001;
	expect_fail(-EINVAL,
		    "Traces with START_TRACING triggers must provide a positive "
		    "trigger_timeout_ms < 7 days (received 86400001ms)");
	F.tc.trigger_timeout_ms = 86400000;
	expect_ok();
	/* No mode: the timeout is not looked at. */
	F.cfg.enable_extra_guardrails = 0;
	F.tc.trigger_mode = SVC_TRIGGER_UNSPECIFIED;
	F.tc.trigger_timeout_ms = 0;
	expect_ok();
	/* use_clone_snapshot_if_available makes a mode even without one. */
	F.tc.use_clone_snapshot_if_available = 1;
	F.tc.trigger_mode = SVC_TRIGGER_STOP_TRACING;
	expect_fail(-EINVAL,
		    "Traces with START_TRACING triggers must provide a positive "
		    "trigger_timeout_ms < 7 days (received 0ms)");
}

static void test_trigger_mode_values(void **state)
{
	(void)state;
	set_triggers(5, 1000, 0, NULL);
	expect_fail(-EINVAL, "The trace config specified an invalid trigger_mode");
	F.tc.trigger_mode = 4; /* CLONE_SNAPSHOT */
	expect_ok();
	assert_int_equal(F.res.trigger_mode, SVC_TRIGGER_CLONE_SNAPSHOT);
	F.tc.trigger_mode = 3; /* reserved, but not above the max: passes */
	expect_ok();
	assert_int_equal(F.res.trigger_mode, 3);
}

static void test_trigger_mode_from_decoded_bytes(void **state)
{
	/* buffers {size_kb: 1024} trigger_config {trigger_mode: 7
	 * trigger_timeout_ms: 1000}: protobuf-c keeps the unknown enum value. */
	static const uint8_t bytes[] = { 0x0a, 0x03, 0x08, 0x80, 0x08,
					 0x8a, 0x01, 0x05, 0x08, 0x07,
					 0x18, 0xe8, 0x07 };
	cfg_t *c = perfetto__protos__trace_config__unpack(NULL, sizeof(bytes),
							  bytes);

	(void)state;
	assert_non_null(c);
	assert_int_equal(svc_guard_trigger_mode(c), 7);
	F.ctx.cfg = c;
	expect_fail(-EINVAL, "The trace config specified an invalid trigger_mode");
	perfetto__protos__trace_config__free_unpacked(c, NULL);
}

static void test_clone_snapshot_needs_stop_tracing(void **state)
{
	(void)state;
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 0, NULL);
	F.tc.use_clone_snapshot_if_available = 1;
	expect_fail(-EINVAL,
		    "trigger_mode must be STOP_TRACING when "
		    "use_clone_snapshot_if_available=true");
	F.tc.trigger_mode = SVC_TRIGGER_STOP_TRACING;
	expect_ok();
	assert_int_equal(F.res.trigger_mode, SVC_TRIGGER_CLONE_SNAPSHOT);
	assert_int_equal(svc_guard_trigger_mode(&F.cfg), SVC_TRIGGER_CLONE_SNAPSHOT);
}

static void test_duration_with_triggers(void **state)
{
	(void)state;
	set_triggers(SVC_TRIGGER_STOP_TRACING, 1000, 0, NULL);
	F.cfg.duration_ms = 1;
	expect_fail(-EINVAL,
		    "duration_ms was set, this must not be set for traces with "
		    "triggers.");
	F.cfg.duration_ms = 0;
	expect_ok();
	/* Triggers listed without a mode do not count. */
	F.tc.trigger_mode = SVC_TRIGGER_UNSPECIFIED;
	F.cfg.duration_ms = 1;
	expect_ok();
}

static void test_bugreport_filename(void **state)
{
	static const char *const bad[] = { "a/b", "a b", "..\\x", "x~", "\xc3\xa9" };
	static const char bad_text[] =
		"bugreport_filename contains invalid chars. Use [a-zA-Z0-9-_.]+";

	(void)state;
	F.cfg.bugreport_filename = "Systrace-01_abc.z.pftrace";
	expect_ok();
	F.cfg.bugreport_filename = "";
	expect_ok();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		F.cfg.bugreport_filename = (char *)bad[i];
		expect_fail(-EINVAL, bad_text);
	}
}

static void test_write_into_file_with_stop_or_clone(void **state)
{
	static const char text[] = "Specifying trigger mode STOP_TRACING/"
				   "CLONE_SNAPSHOT and write_into_file together "
				   "is unsupported";

	(void)state;
	F.cfg.write_into_file = 1;
	set_triggers(SVC_TRIGGER_STOP_TRACING, 1000, 0, NULL);
	expect_fail(-EINVAL, text);
	F.tc.trigger_mode = SVC_TRIGGER_CLONE_SNAPSHOT;
	expect_fail(-EINVAL, text);
	F.tc.trigger_mode = SVC_TRIGGER_STOP_TRACING;
	F.tc.use_clone_snapshot_if_available = 1;
	expect_fail(-EINVAL, text);
	F.tc.use_clone_snapshot_if_available = 0;
	F.tc.trigger_mode = SVC_TRIGGER_START_TRACING;
	expect_ok();
}

/* ---- step 10 ---- */

static void test_duplicate_trigger_names(void **state)
{
	static const char *const abc[] = { "a", "b", "a" };
	static const char *const xyyx[] = { "x", "y", "y", "x" };
	static const char *const xyxy[] = { "x", "y", "x", "y" };
	static const char *const empties[] = { "", "q", "" };

	(void)state;
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 3, abc);
	expect_fail(-EINVAL, "Duplicate trigger name: a");
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 4, xyyx);
	expect_fail(-EINVAL, "Duplicate trigger name: y");
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 4, xyxy);
	expect_fail(-EINVAL, "Duplicate trigger name: x");
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 3, empties);
	expect_fail(-EINVAL, "Duplicate trigger name: ");
	F.trig[2].name = NULL; /* absent name == "" */
	expect_fail(-EINVAL, "Duplicate trigger name: ");
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 2, abc);
	expect_ok();
}

static void test_many_triggers(void **state)
{
	enum { N = 50000 };
	trig_t *t = calloc(N, sizeof(*t));
	trig_t **tp = calloc(N, sizeof(*tp));
	char (*names)[16] = calloc(N, 16);

	(void)state;
	assert_non_null(t);
	assert_non_null(tp);
	assert_non_null(names);
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 0, NULL);
	for (size_t i = 0; i < N; i++) {
		t[i] = (trig_t)PERFETTO__PROTOS__TRACE_CONFIG__TRIGGER_CONFIG__TRIGGER__INIT;
		/* reverse order so sorting has work to do */
		snprintf(names[i], sizeof(names[i]), "t%zu", (size_t)(N - i));
		t[i].name = names[i];
		tp[i] = &t[i];
	}
	F.tc.triggers = tp;
	F.tc.n_triggers = N;
	expect_ok();
	/* The last one repeats an early one; an earlier pair repeats later. */
	t[N - 1].name = names[10];
	expect_fail(-EINVAL, "Duplicate trigger name: t49990");
	t[40000].name = names[30000];
	expect_fail(-EINVAL, "Duplicate trigger name: t20000");
	free(names);
	free(tp);
	free(t);
}

/* ---- step 11 ---- */

static void test_guardrails_deferred_start(void **state)
{
	(void)state;
	F.cfg.deferred_start = 1;
	expect_ok(); /* allowed without guardrails */
	F.cfg.enable_extra_guardrails = 1;
	expect_fail(-EINVAL,
		    "deferred_start=true is not supported in unsupervised traces");
}

static void test_guardrails_buffer_multiple_of_4(void **state)
{
	(void)state;
	set_buffers(2, 1024);
	F.buf[1].size_kb = 1026;
	expect_ok(); /* allowed without guardrails */
	F.cfg.enable_extra_guardrails = 1;
	expect_fail(-EINVAL, "buffers.size_kb must be a multiple of 4, got 1026");
	F.buf[1].size_kb = 1028;
	expect_ok();
}

static void test_guardrails_total_buffer_size(void **state)
{
	(void)state;
	F.cfg.enable_extra_guardrails = 1;
	set_buffers(2, 65536); /* exactly 131072 KiB */
	expect_ok();
	F.buf[1].size_kb = 65540;
	F.ctx.now_ms += 301000;
	expect_fail(-EINVAL, "Requested too large trace buffer (131076kB  > 131072 kB)");
	/* An override raises the limit... */
	F.go = (Perfetto__Protos__TraceConfig__GuardrailOverrides)PERFETTO__PROTOS__TRACE_CONFIG__GUARDRAIL_OVERRIDES__INIT;
	F.go.has_max_tracing_buffer_size_kb = 1;
	F.go.max_tracing_buffer_size_kb = 131076;
	F.cfg.guardrail_overrides = &F.go;
	expect_ok();
	F.ctx.now_ms += 301000;
	F.buf[1].size_kb = 65544;
	expect_fail(-EINVAL, "Requested too large trace buffer (131080kB  > 131076 kB)");
	/* ...but never lowers it. */
	F.go.max_tracing_buffer_size_kb = 4;
	set_buffers(2, 65536);
	expect_ok();
	F.ctx.now_ms += 301000;
	F.buf[1].size_kb = 65540;
	expect_fail(-EINVAL, "Requested too large trace buffer (131076kB  > 131072 kB)");
	/* The sum does not wrap in 32 bits. */
	F.go.max_tracing_buffer_size_kb = 0xFFFFFFFCu;
	set_buffers(2, 0xFFFFFFFCu);
	expect_fail(-EINVAL, "Requested too large trace buffer (8589934584kB  > "
			     "4294967292 kB)");
}

/* ---- steps 12-14 ---- */

static void test_buffer_count(void **state)
{
	(void)state;
	set_buffers(128, 4);
	expect_ok();
	set_buffers(129, 4);
	expect_fail(-EINVAL, "Too many buffers configured (129)");
	set_buffers(0, 4); /* no buffers and no data sources is fine */
	expect_ok();
}

static void test_duplicate_buffer_names(void **state)
{
	(void)state;
	set_buffers(4, 4);
	F.buf[0].name = "a";
	F.buf[1].name = "b";
	F.buf[3].name = "a";
	expect_fail(-EINVAL,
		    "Duplicate buffer name \"a\" at index 3 (first occurrence at "
		    "index 0)");
	F.buf[3].name = ""; /* unnamed buffers never clash */
	F.buf[2].name = "";
	expect_ok();
	F.buf[2].name = "b";
	expect_fail(-EINVAL,
		    "Duplicate buffer name \"b\" at index 2 (first occurrence at "
		    "index 1)");
}

static void test_data_source_targets(void **state)
{
	(void)state;
	set_buffers(3, 4);
	F.buf[0].name = "main";
	F.buf[2].name = "side";
	set_ds(0, "ds", 0, "nope");
	expect_fail(-EINVAL,
		    "Data source \"ds\" specified target_buffer_name \"nope\" which "
		    "does not match any buffer");
	set_ds(0, "ds", 1, "side");
	expect_fail(-EINVAL,
		    "Data source \"ds\" specified both target_buffer=1 and "
		    "target_buffer_name=\"side\" (index 2) but they don't match");
	set_ds(0, "ds", 2, "side"); /* agreeing */
	expect_ok();
	set_ds(0, "ds", 0, "side"); /* 0 = unset: the name wins */
	expect_ok();
	set_ds(0, "ds", 2, NULL); /* last index */
	expect_ok();
	set_ds(1, "ds2", 3, "");
	expect_fail(-EINVAL,
		    "Data source \"ds2\" specified an out of bounds target_buffer "
		    "(3 >= 3)");
	/* A data source without config targets buffer 0, named "". */
	set_buffers(0, 4);
	F.cfg.n_data_sources = 1;
	F.ds[0].config = NULL;
	expect_fail(-EINVAL,
		    "Data source \"\" specified an out of bounds target_buffer "
		    "(0 >= 0)");
}

/* ---- step 15 ---- */

static void test_exclusive_rejected_by_higher_or_equal(void **state)
{
	(void)state;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	add_session(1001, SVC_SESSION_STARTED, 5, NULL);
	expect_fail(-EBUSY,
		    "An exclusive session with priority 5 >= requested priority 0 "
		    "is already active.");
	F.cfg.exclusive_prio = 5;
	expect_fail(-EBUSY,
		    "An exclusive session with priority 5 >= requested priority 5 "
		    "is already active.");
	assert_int_equal(F.res.n_abort, 0);
	/* Even a disabled or cloned session's priority counts. */
	F.sess[1].state = SVC_SESSION_CLONED_READ_ONLY;
	expect_fail(-EBUSY,
		    "An exclusive session with priority 5 >= requested priority 5 "
		    "is already active.");
}

static void test_exclusive_aborts_all(void **state)
{
	(void)state;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	add_session(1001, SVC_SESSION_CLONED_READ_ONLY, 2, NULL);
	add_session(1002, SVC_SESSION_DISABLED, 0, NULL);
	F.cfg.exclusive_prio = 3;
	expect_ok();
	assert_int_equal(F.res.n_abort, 3);
	assert_int_equal(F.res.abort_ids[0], 100);
	assert_int_equal(F.res.abort_ids[1], 101);
	assert_int_equal(F.res.abort_ids[2], 102);
	assert_string_equal(F.res.abort_reason,
			    "Aborted due to user requested higher-priority (3) "
			    "exclusive session.");
	/* Non-exclusive requests abort nothing. */
	F.cfg.exclusive_prio = 0;
	F.sess[1].exclusive_prio = 0;
	expect_ok();
	assert_int_equal(F.res.n_abort, 0);
	assert_string_equal(F.res.abort_reason, "");
	/* Largest prio formats fully. */
	F.cfg.exclusive_prio = 4294967295u;
	expect_ok();
	assert_string_equal(F.res.abort_reason,
			    "Aborted due to user requested higher-priority "
			    "(4294967295) exclusive session.");
}

static void test_exclusive_aborted_sessions_are_gone_for_later_steps(void **state)
{
	(void)state;
	/* 15 sessions of this uid, same name, same semaphore: each would fail a
	 * later step, but they are all being aborted. */
	for (size_t i = 0; i < 15; i++) {
		add_session(1000, SVC_SESSION_STARTED, 0, "n");
		session_sem(i, "s", 0);
	}
	F.cfg.unique_session_name = "n";
	add_sem("s", 0);
	F.cfg.exclusive_prio = 1;
	expect_ok();
	assert_int_equal(F.res.n_abort, 15);
	/* The abort list stays valid when a later step fails. */
	F.cfg.enable_extra_guardrails = 1;
	seed_history("n", NOW_MS - 1000);
	expect_fail(-EAGAIN,
		    "A trace with unique session name \"n\" began less than 300s "
		    "ago (1s)");
	assert_int_equal(F.res.n_abort, 15);
	assert_int_equal(F.res.abort_ids[14], 114);
}

static void test_exclusive_android_uids(void **state)
{
	(void)state;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	F.cfg.exclusive_prio = 1;
	F.ctx.android_uids = true;
	expect_fail(-EPERM,
		    "On android, exclusive mode can only be requested by root or "
		    "shell.");
	assert_int_equal(F.res.n_abort, 0); /* refused before aborting */
	F.ctx.uid = 2000;
	expect_ok();
	assert_int_equal(F.res.n_abort, 1);
	F.ctx.uid = 0;
	expect_ok();
	F.ctx.uid = 1000;
	F.ctx.android_uids = false; /* Linux: any uid */
	expect_ok();
	assert_int_equal(F.res.n_abort, 1);
}

/* ---- steps 16-17 ---- */

static void test_unique_session_name(void **state)
{
	(void)state;
	add_session(1000, SVC_SESSION_STARTED, 0, "other");
	add_session(1000, SVC_SESSION_CLONED_READ_ONLY, 0, "mine");
	F.cfg.unique_session_name = "mine";
	expect_ok(); /* the clone does not count */
	add_session(1001, SVC_SESSION_DISABLED, 0, "mine");
	expect_fail(-EBUSY, "A trace with this unique session name (mine) already "
			    "exists");
	/* No name: never clashes, even with unnamed sessions. */
	F.cfg.unique_session_name = "";
	F.sess[0].unique_session_name = "";
	expect_ok();
	F.cfg.unique_session_name = NULL;
	expect_ok();
}

static void test_semaphores(void **state)
{
	(void)state;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	session_sem(0, "s", 1);
	add_sem("s", 1);
	expect_ok(); /* 1 other <= min(1, 1) */
	add_session(1000, SVC_SESSION_CONFIGURED, 0, NULL);
	session_sem(1, "s", 1);
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(1, 1))");
	/* The smaller limit wins, from either side. */
	F.sem[0].max_other_session_count = 5;
	F.ssem[1].max_other_session_count = 9;
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(5, 1))");
	F.ssem[0].max_other_session_count = 2;
	expect_ok(); /* 2 <= min(5, 2) */
	F.sem[0].max_other_session_count = 1;
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(1, 2))");
	/* Disabled and cloned sessions do not count. */
	F.sess[1].state = SVC_SESSION_DISABLED;
	expect_ok();
	F.sess[1].state = SVC_SESSION_CLONED_READ_ONLY;
	expect_ok();
	F.sess[1].state = SVC_SESSION_STOP_WAIT;
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(1, 2))");
	/* max 0 = exclusive with respect to that semaphore. */
	F.sess[1].state = SVC_SESSION_DISABLED;
	F.sem[0].max_other_session_count = 0;
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (1 > min(0, 2))");
	/* Other names do not interact; the first failing one (config order)
	 * is reported. */
	F.sem[0].name = "t";
	expect_ok();
	add_sem("u", 7);
	session_sem(1, "u", 0);
	F.sess[1].state = SVC_SESSION_STARTED;
	add_sem("s", 0);
	expect_fail(-EBUSY, "Semaphore \"u\" exceeds maximum allowed other session "
			    "count (1 > min(7, 0))");
}

static void test_semaphore_declared_twice_counts_twice(void **state)
{
	sem_t a = PERFETTO__PROTOS__TRACE_CONFIG__SESSION_SEMAPHORE__INIT;
	sem_t *two[2] = { &a, &a };

	(void)state;
	a.name = "s";
	a.max_other_session_count = 1;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL)->semaphores = two;
	F.sess[0].n_semaphores = 2;
	add_sem("s", 10);
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(10, 1))");
}

/* ---- step 18 ---- */

static void test_rate_limit_timing(void **state)
{
	(void)state;
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.unique_session_name = "n";
	expect_ok();
	assert_int_equal(F.hist.len, 1);
	F.ctx.now_ms = NOW_MS + 299999; /* 299 s */
	expect_fail(-EAGAIN,
		    "A trace with unique session name \"n\" began less than 300s ago "
		    "(299s)");
	F.ctx.now_ms = NOW_MS + 300000; /* exactly 300 s: still refused */
	expect_fail(-EAGAIN,
		    "A trace with unique session name \"n\" began less than 300s ago "
		    "(300s)");
	F.ctx.now_ms = NOW_MS + 300999; /* whole seconds only */
	expect_fail(-EAGAIN,
		    "A trace with unique session name \"n\" began less than 300s ago "
		    "(300s)");
	F.ctx.now_ms = NOW_MS + 301000;
	expect_ok();
	assert_int_equal(F.hist.len, 1); /* the old record was replaced */
	assert_int_equal(F.hist.v[0].start_s, NOW_MS / 1000 + 301);
}

static void test_rate_limit_names(void **state)
{
	(void)state;
	F.cfg.enable_extra_guardrails = 1;
	expect_ok(); /* "" is a name too */
	expect_fail(-EAGAIN, "A trace with unique session name \"\" began less than "
			     "300s ago (0s)");
	F.cfg.unique_session_name = "a";
	expect_ok();
	F.cfg.unique_session_name = "b";
	expect_ok();
	assert_int_equal(F.hist.len, 3);
	/* Without guardrails the history is neither read nor written. */
	F.cfg.enable_extra_guardrails = 0;
	expect_ok();
	assert_int_equal(F.hist.len, 3);
	/* Old entries are dropped on the next guardrailed request. */
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.unique_session_name = "c";
	F.ctx.now_ms += 400000;
	expect_ok();
	assert_int_equal(F.hist.len, 1);
	assert_string_equal(F.hist.v[0].name, "c");
}

static void test_rate_limit_recorded_when_later_step_fails(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++)
		add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.unique_session_name = "n";
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (5) for uid 1000 "
			     "limit is 5");
	assert_int_equal(F.hist.len, 1);
	F.ctx.n_sessions = 0;
	F.ctx.now_ms += 1000;
	expect_fail(-EAGAIN,
		    "A trace with unique session name \"n\" began less than 300s ago "
		    "(1s)");
}

/* ---- steps 19-20 ---- */

static void test_sessions_per_uid(void **state)
{
	(void)state;
	for (int i = 0; i < 4; i++)
		add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	add_session(1001, SVC_SESSION_STARTED, 0, NULL);
	add_session(0, SVC_SESSION_STARTED, 0, NULL);
	expect_ok(); /* the 5th of uid 1000 */
	add_session(1000, SVC_SESSION_CLONED_READ_ONLY, 0, NULL); /* clones count */
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (5) for uid 1000 "
			     "limit is 5");
	F.ctx.uid = 1001;
	expect_ok();
	/* uids print as int */
	F.ctx.uid = (uid_t)-1;
	for (int i = 0; i < 5; i++)
		add_session((uid_t)-1, SVC_SESSION_DISABLED, 0, NULL);
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (5) for uid -1 "
			     "limit is 5");
}

static void test_sessions_statsd_uid(void **state)
{
	(void)state;
	F.ctx.uid = SVC_AID_STATSD;
	for (int i = 0; i < 5; i++)
		add_session(SVC_AID_STATSD, SVC_SESSION_STARTED, 0, NULL);
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (5) for uid 1066 "
			     "limit is 5");
	F.ctx.android_uids = true;
	for (int i = 0; i < 4; i++)
		add_session(SVC_AID_STATSD, SVC_SESSION_STARTED, 0, NULL);
	expect_ok(); /* the 10th */
	add_session(SVC_AID_STATSD, SVC_SESSION_STARTED, 0, NULL);
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (10) for uid 1066 "
			     "limit is 10");
}

static void test_sessions_total(void **state)
{
	(void)state;
	for (uid_t u = 0; u < 14; u++)
		add_session(2000 + u, SVC_SESSION_STARTED, 0, NULL);
	expect_ok(); /* the 15th */
	add_session(3000, SVC_SESSION_DISABLED, 0, NULL);
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (15)");
}

/* ---- steps 21-22 ---- */

static void test_trace_filter(void **state)
{
	(void)state;
	set_filter(1);
	expect_fail(-EINVAL, "Trace filter bytecode invalid, aborting");
	F.ctx.check_filter = filter_hook;
	expect_ok();
	assert_int_equal(filter_calls, 1);
	filter_rc = -EINVAL;
	expect_fail(-EINVAL, "Trace filter bytecode invalid, aborting");
	filter_rc = -ENOENT;
	expect_fail(-EINVAL, "Failed to set filter root.");
	filter_rc = 0;
	F.rule.policy = 0; /* SFP_UNSPECIFIED */
	filter_calls = 0;
	expect_fail(-EINVAL, "Trace filter has invalid string filtering rules, "
			     "aborting");
	F.rule.policy = 6;
	expect_fail(-EINVAL, "Trace filter has invalid string filtering rules, "
			     "aborting");
	assert_int_equal(filter_calls, 0); /* rules are checked first */
	F.rule.policy = 5;
	expect_ok();
	/* The v54 chain is checked the same way. */
	F.filt.string_filter_chain = NULL;
	F.filt.string_filter_chain_v54 = &F.chain;
	F.rule.policy = 0;
	expect_fail(-EINVAL, "Trace filter has invalid string filtering rules, "
			     "aborting");
}

static void test_priority_boost(void **state)
{
	(void)state;
	set_boost(1, 0);
	expect_ok();
	assert_int_equal(F.res.boost.policy, SVC_BOOST_SCHED_OTHER);
	assert_int_equal(F.res.boost.prio, 0);
	set_boost(1, 20);
	expect_ok();
	assert_int_equal(F.res.boost.prio, 20);
	set_boost(1, 21);
	expect_fail(-EINVAL, "Invalid priority boost config: For the "
			     "'POLICY_SCHED_OTHER' priority must be in the range "
			     "[0; 20]");
	set_boost(2, 1);
	expect_ok();
	assert_int_equal(F.res.boost.policy, SVC_BOOST_SCHED_FIFO);
	assert_int_equal(F.res.boost.prio, 1);
	set_boost(2, 99);
	expect_ok();
	set_boost(2, 0);
	expect_fail(-EINVAL, "Invalid priority boost config: For the "
			     "'POLICY_SCHED_FIFO' priority must be in the range "
			     "[1; 99]");
	set_boost(2, 100);
	expect_fail(-EINVAL, "Invalid priority boost config: For the "
			     "'POLICY_SCHED_FIFO' priority must be in the range "
			     "[1; 99]");
	set_boost(0, 1);
	expect_fail(-EINVAL, "Invalid priority boost config: Policy must not be "
			     "'POLICY_UNSPECIFIED'");
	set_boost(9, 1);
	expect_fail(-EINVAL, "Invalid priority boost config: Unknown policy 9");
}

/* ---- order ---- */

/* Starts from a config that breaks every check and repairs one at a time:
 * each run must report the earliest remaining failure. */
static void test_order_of_checks(void **state)
{
	static const char *const tt[] = { "t", "t" };

	(void)state;
	/* The request... */
	F.cfg.lockdown_mode = PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET;
	F.ctx.has_session = true;
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.duration_ms = 86400001;
	set_triggers(7, 0, 2, tt);
	F.tc.use_clone_snapshot_if_available = 1;
	F.cfg.bugreport_filename = "a/b";
	F.cfg.write_into_file = 1;
	F.cfg.deferred_start = 1;
	set_buffers(129, 1026);
	F.buf[0].name = "x";
	F.buf[1].name = "x";
	set_ds(0, "ds", 0, "z");
	F.cfg.unique_session_name = "n";
	add_sem("s", 5);
	set_filter(1);
	set_boost(2, 0);
	/* ...and the service it meets. */
	for (size_t i = 0; i < 15; i++)
		add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	F.sess[0].exclusive_prio = 3;
	F.sess[1].unique_session_name = "n";
	session_sem(2, "s", 0);
	session_sem(3, "s", 0);
	seed_history("n", NOW_MS - 10000);

	expect_fail(-EBUSY, "A Consumer is trying to EnableTracing() but another "
			    "tracing session is already active (forgot a call to "
			    "FreeBuffers() ?)");
	assert_true(F.lockdown);
	F.ctx.has_session = false;
	expect_fail(-EINVAL, "Requested too long trace (86400001ms  > 86400000 ms)");
	F.cfg.duration_ms = 1;
	expect_fail(-EINVAL, "Traces with START_TRACING triggers must provide a "
			     "positive trigger_timeout_ms < 7 days (received 0ms)");
	F.tc.trigger_timeout_ms = 1000;
	expect_fail(-EINVAL, "The trace config specified an invalid trigger_mode");
	F.tc.trigger_mode = SVC_TRIGGER_START_TRACING;
	expect_fail(-EINVAL, "trigger_mode must be STOP_TRACING when "
			     "use_clone_snapshot_if_available=true");
	F.tc.trigger_mode = SVC_TRIGGER_STOP_TRACING;
	expect_fail(-EINVAL, "duration_ms was set, this must not be set for traces "
			     "with triggers.");
	F.cfg.duration_ms = 0;
	expect_fail(-EINVAL, "bugreport_filename contains invalid chars. Use "
			     "[a-zA-Z0-9-_.]+");
	F.cfg.bugreport_filename = "ab";
	expect_fail(-EINVAL, "Specifying trigger mode STOP_TRACING/CLONE_SNAPSHOT "
			     "and write_into_file together is unsupported");
	F.cfg.write_into_file = 0;
	expect_fail(-EINVAL, "Duplicate trigger name: t");
	F.trig[1].name = "u";
	expect_fail(-EINVAL, "deferred_start=true is not supported in unsupervised "
			     "traces");
	F.cfg.deferred_start = 0;
	expect_fail(-EINVAL, "buffers.size_kb must be a multiple of 4, got 1026");
	for (size_t i = 0; i < 129; i++)
		F.buf[i].size_kb = 1024;
	expect_fail(-EINVAL, "Requested too large trace buffer (132096kB  > "
			     "131072 kB)");
	for (size_t i = 0; i < 129; i++)
		F.buf[i].size_kb = 4;
	expect_fail(-EINVAL, "Too many buffers configured (129)");
	F.cfg.n_buffers = 2;
	expect_fail(-EINVAL, "Duplicate buffer name \"x\" at index 1 (first "
			     "occurrence at index 0)");
	F.buf[1].name = "y";
	expect_fail(-EINVAL, "Data source \"ds\" specified target_buffer_name \"z\" "
			     "which does not match any buffer");
	set_ds(0, "ds", 2, "y");
	expect_fail(-EINVAL, "Data source \"ds\" specified both target_buffer=2 and "
			     "target_buffer_name=\"y\" (index 1) but they don't "
			     "match");
	set_ds(0, "ds", 2, NULL);
	expect_fail(-EINVAL, "Data source \"ds\" specified an out of bounds "
			     "target_buffer (2 >= 2)");
	set_ds(0, "ds", 1, NULL);
	expect_fail(-EBUSY, "An exclusive session with priority 3 >= requested "
			    "priority 0 is already active.");
	F.sess[0].exclusive_prio = 0;
	expect_fail(-EBUSY, "A trace with this unique session name (n) already "
			    "exists");
	F.sess[1].state = SVC_SESSION_CLONED_READ_ONLY;
	expect_fail(-EBUSY, "Semaphore \"s\" exceeds maximum allowed other session "
			    "count (2 > min(5, 0))");
	F.sess[2].n_semaphores = 0;
	F.sess[3].n_semaphores = 0;
	assert_int_equal(F.hist.len, 1);
	expect_fail(-EAGAIN, "A trace with unique session name \"n\" began less "
			     "than 300s ago (10s)");
	/* From here each run records "n" again: step past the window. */
	F.ctx.now_ms += 301000;
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (15) for uid 1000 "
			     "limit is 5");
	for (size_t i = 0; i < 15; i++)
		F.sess[i].consumer_uid = 2000;
	F.ctx.now_ms += 301000;
	expect_fail(-EUSERS, "Too many concurrent tracing sesions (15)");
	F.ctx.n_sessions = 14;
	F.ctx.now_ms += 301000;
	expect_fail(-EINVAL, "Trace filter bytecode invalid, aborting");
	F.ctx.check_filter = filter_hook;
	F.ctx.now_ms += 301000;
	expect_fail(-EINVAL, "Invalid priority boost config: For the "
			     "'POLICY_SCHED_FIFO' priority must be in the range "
			     "[1; 99]");
	F.boost.priority = 50;
	F.ctx.now_ms += 301000;
	expect_ok();
	assert_int_equal(F.res.trigger_mode, SVC_TRIGGER_CLONE_SNAPSHOT);
	assert_int_equal(F.res.boost.policy, SVC_BOOST_SCHED_FIFO);
	assert_int_equal(F.res.boost.prio, 50);
	assert_int_equal(F.res.n_abort, 0);
	assert_true(F.lockdown);
}

/* ---- arguments and error buffer ---- */

static void test_bad_arguments_and_truncation(void **state)
{
	char small[16];

	(void)state;
	assert_int_equal(svc_guard_check(NULL, &F.res, F.err, sizeof(F.err)),
			 -EFAULT);
	F.ctx.lockdown = NULL;
	assert_int_equal(run(), -EFAULT);
	F.ctx.lockdown = &F.lockdown;
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	F.res.abort_ids = NULL;
	assert_int_equal(run(), -EFAULT);
	F.res.abort_ids = F.abort_ids;
	/* A long name is truncated to the buffer, NUL-terminated. */
	F.ctx.has_session = true;
	assert_int_equal(svc_guard_check(&F.ctx, &F.res, small, sizeof(small)),
			 -EBUSY);
	assert_string_equal(small, "A Consumer is t");
	/* No buffer at all is fine. */
	assert_int_equal(svc_guard_check(&F.ctx, &F.res, NULL, 0), -EBUSY);
}

/* ---- allocation failures ---- */

static int alloc_budget; /* allocations left before they fail; < 0: no limit */

static void *budget_malloc(size_t n)
{
	if (alloc_budget == 0)
		return NULL;
	if (alloc_budget > 0)
		alloc_budget--;
	return malloc(n);
}

static void *budget_realloc(void *p, size_t n)
{
	if (alloc_budget == 0)
		return NULL;
	if (alloc_budget > 0)
		alloc_budget--;
	return realloc(p, n);
}

static void test_every_allocation_fails(void **state)
{
	static const char *const ab[] = { "a", "b" };
	struct svc_mem_hooks hooks = { .malloc = budget_malloc,
				       .realloc = budget_realloc };
	int budget;

	(void)state;
	set_triggers(SVC_TRIGGER_START_TRACING, 1000, 2, ab);
	add_session(1000, SVC_SESSION_STARTED, 0, NULL);
	session_sem(0, "s", 5);
	add_sem("s", 5);
	F.cfg.enable_extra_guardrails = 1;
	F.cfg.unique_session_name = "n";
	svc_mem_set_hooks(&hooks);
	for (budget = 0;; budget++) {
		int rc;

		svc_guard_history_free(&F.hist); /* same work on every round */
		alloc_budget = budget;
		rc = run();
		if (rc == 0)
			break;
		assert_int_equal(rc, -ENOMEM);
		assert_string_equal(F.err, "Out of memory");
		assert_int_equal(F.hist.len, 0); /* nothing half-recorded */
		assert_true(budget < 10);
	}
	/* triggers, semaphores, history array, history name */
	assert_int_equal(budget, 4);
	assert_int_equal(F.hist.len, 1);
	svc_mem_set_hooks(NULL);
}

/* ---- step 24 ---- */

static void test_output_fd_or_path(void **state)
{
	static const char text[] = "When write_into_file==true either a FD needs to "
				   "be passed or output_path must be populated "
				   "(but not both)";

	(void)state;
	assert_int_equal(svc_guard_check_output(&F.cfg, false, F.err, sizeof(F.err)), 0);
	assert_int_equal(svc_guard_check_output(&F.cfg, true, F.err, sizeof(F.err)), 0);
	F.cfg.write_into_file = 1;
	assert_int_equal(svc_guard_check_output(&F.cfg, false, F.err, sizeof(F.err)),
			 -EINVAL);
	assert_string_equal(F.err, text);
	assert_int_equal(svc_guard_check_output(&F.cfg, true, F.err, sizeof(F.err)), 0);
	F.cfg.output_path = "";
	assert_int_equal(svc_guard_check_output(&F.cfg, true, F.err, sizeof(F.err)), 0);
	F.cfg.output_path = "/tmp/x";
	assert_int_equal(svc_guard_check_output(&F.cfg, false, F.err, sizeof(F.err)), 0);
	F.err[0] = '\0';
	assert_int_equal(svc_guard_check_output(&F.cfg, true, F.err, sizeof(F.err)),
			 -EINVAL);
	assert_string_equal(F.err, text);
}

static void test_output_file_creation(void **state)
{
	char dir[] = "/tmp/spn_guard_XXXXXX";
	char path[64], missing[80], expect[128];
	struct stat st;
	mode_t old_mask;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/trace.pftrace", dir);
	old_mask = umask(077);
	fd = svc_guard_create_output_file(path, F.err, sizeof(F.err));
	umask(old_mask);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	/* It must not exist yet. */
	assert_int_equal(svc_guard_create_output_file(path, F.err, sizeof(F.err)),
			 -EEXIST);
	snprintf(expect, sizeof(expect), "Failed to create the trace file %s", path);
	assert_string_equal(F.err, expect);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 1); /* untouched */
	snprintf(missing, sizeof(missing), "%s/no/such/dir", dir);
	assert_int_equal(svc_guard_create_output_file(missing, F.err, sizeof(F.err)),
			 -ENOENT);
	snprintf(expect, sizeof(expect), "Failed to create the trace file %s",
		 missing);
	assert_string_equal(F.err, expect);
	assert_int_equal(svc_guard_create_output_file("", F.err, sizeof(F.err)),
			 -EINVAL);
	assert_string_equal(F.err, "Failed to create the trace file ");
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* ---- steps 25-26 ---- */

static void test_buffer_bytes(void **state)
{
	uint32_t b = 7;

	(void)state;
	assert_int_equal(svc_guard_buffer_bytes(0, &b), -EINVAL);
	assert_int_equal(b, 7);
	assert_int_equal(svc_guard_buffer_bytes(1, &b), 0);
	assert_int_equal(b, 1024);
	assert_int_equal(svc_guard_buffer_bytes(4194303, &b), 0);
	assert_int_equal(b, 4294966272u);
	assert_int_equal(svc_guard_buffer_bytes(4194304, &b), -EINVAL); /* 4 GiB */
	assert_int_equal(svc_guard_buffer_bytes(UINT32_MAX, &b), -EINVAL);
}

static void test_bufid_sequence_and_reuse(void **state)
{
	struct svc_bufid_alloc *a = malloc(sizeof(*a));

	(void)state;
	assert_non_null(a);
	svc_bufid_init(a);
	assert_int_equal(svc_bufid_alloc(a), 1);
	assert_int_equal(svc_bufid_alloc(a), 2);
	assert_int_equal(svc_bufid_alloc(a), 3);
	assert_int_equal(svc_bufid_free(a, 2), 0);
	assert_false(svc_bufid_in_use(a, 2));
	assert_int_equal(svc_bufid_alloc(a), 4); /* after the last, not the hole */
	assert_int_equal(svc_bufid_free(a, 2), -ENOENT);
	assert_int_equal(svc_bufid_free(a, 0), -EINVAL);
	assert_int_equal(svc_bufid_free(a, 65536), -EINVAL);
	assert_false(svc_bufid_in_use(a, 0));
	assert_false(svc_bufid_in_use(a, 65536));
	assert_true(svc_bufid_in_use(a, 4));
	assert_int_equal(a->n_used, 3);
	free(a);
}

static void test_bufid_wraparound_and_exhaustion(void **state)
{
	struct svc_bufid_alloc *a = malloc(sizeof(*a));

	(void)state;
	assert_non_null(a);
	svc_bufid_init(a);
	for (int i = 1; i <= 65535; i++)
		assert_int_equal(svc_bufid_alloc(a), i);
	assert_int_equal(svc_bufid_alloc(a), -ENOSPC);
	assert_int_equal(a->n_used, 65535);
	/* Free a few; the search resumes after 65535, i.e. at 1. */
	assert_int_equal(svc_bufid_free(a, 700), 0);
	assert_int_equal(svc_bufid_free(a, 64), 0);
	assert_int_equal(svc_bufid_free(a, 65535), 0);
	assert_int_equal(svc_bufid_alloc(a), 64);
	assert_int_equal(svc_bufid_alloc(a), 700);
	assert_int_equal(svc_bufid_alloc(a), 65535);
	assert_int_equal(svc_bufid_alloc(a), -ENOSPC);
	/* A hole before the last one is found by wrapping. */
	assert_int_equal(svc_bufid_free(a, 63), 0);
	assert_int_equal(svc_bufid_free(a, 65000), 0);
	assert_int_equal(svc_bufid_alloc(a), 63);
	assert_int_equal(svc_bufid_alloc(a), 65000);
	assert_int_equal(svc_bufid_alloc(a), -ENOSPC);
	free(a);
}

/* Reference model of the allocator: a flag per id and a linear search. */
static struct bufid_model {
	bool used[65536];	/* id taken */
	uint32_t list[65536];	/* taken ids, no order */
	uint32_t pos[65536];	/* index of a taken id in list */
	uint32_t n;		/* taken ids */
	uint32_t last;		/* last id handed out */
} M;

static uint32_t model_alloc(void)
{
	for (uint32_t k = 1; k <= 65535 && M.n < 65535; k++) {
		uint32_t id = (M.last + k - 1) % 65535 + 1;

		if (!M.used[id]) {
			M.used[id] = true;
			M.pos[id] = M.n;
			M.list[M.n++] = id;
			M.last = id;
			return id;
		}
	}
	return 0;
}

static void model_free(uint32_t id)
{
	uint32_t moved = M.list[--M.n];

	M.list[M.pos[id]] = moved;
	M.pos[moved] = M.pos[id];
	M.used[id] = false;
}

/* Random allocations and frees around `fill` ids taken, checked against
 * the model step by step. */
static void bufid_random_walk(uint32_t fill, int ops, uint32_t seed)
{
	struct svc_bufid_alloc *a = malloc(sizeof(*a));

	assert_non_null(a);
	svc_bufid_init(a);
	memset(&M, 0, sizeof(M));
	for (uint32_t i = 0; i < fill; i++)
		assert_int_equal(svc_bufid_alloc(a), (int)model_alloc());
	for (int op = 0; op < ops; op++) {
		seed = seed * 1103515245u + 12345u;
		switch ((seed >> 16) % 5) {
		case 0:
		case 1: { /* allocate */
			uint32_t want = model_alloc();

			assert_int_equal(svc_bufid_alloc(a), want ? (int)want : -ENOSPC);
			break;
		}
		case 2:
		case 3: /* free a taken id */
			if (M.n) {
				uint32_t id = M.list[(seed >> 4) % M.n];

				assert_int_equal(svc_bufid_free(a, id), 0);
				model_free(id);
			}
			break;
		default: { /* free any id: refused unless taken */
			uint32_t id = (seed >> 8) % 65535 + 1;

			assert_int_equal(svc_bufid_free(a, id),
					 M.used[id] ? 0 : -ENOENT);
			if (M.used[id])
				model_free(id);
		}
		}
		assert_int_equal(a->n_used, M.n);
	}
	for (uint32_t id = 1; id <= 65535; id++)
		assert_int_equal(svc_bufid_in_use(a, id), M.used[id]);
	free(a);
}

static void test_bufid_matches_model(void **state)
{
	(void)state;
	bufid_random_walk(0, 100000, 1);	  /* nearly empty */
	bufid_random_walk(60000, 100000, 2); /* nearly full */
	bufid_random_walk(65500, 20000, 3);  /* at the edge of exhaustion */
}

static void test_assign_buffer_ids(void **state)
{
	struct svc_bufid_alloc *a = malloc(sizeof(*a));
	uint16_t ids[4];
	uint32_t sizes[4];

	(void)state;
	assert_non_null(a);
	svc_bufid_init(a);
	set_buffers(3, 4);
	F.buf[1].size_kb = 8;
	assert_int_equal(svc_guard_assign_buffer_ids(a, &F.cfg, ids, sizes, F.err,
						     sizeof(F.err)), 0);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 2);
	assert_int_equal(ids[2], 3);
	assert_int_equal(sizes[1], 8192);
	/* A bad size in the middle releases every id taken. */
	F.buf[1].size_kb = 4194304;
	assert_int_equal(svc_guard_assign_buffer_ids(a, &F.cfg, ids, NULL, F.err,
						     sizeof(F.err)), -EINVAL);
	assert_string_equal(F.err, SVC_GUARD_ERR_BUFFER_SIZES);
	assert_string_equal(F.err, "Failed to allocate tracing buffers: Invalid "
				   "buffer sizes");
	assert_int_equal(a->n_used, 3);
	assert_false(svc_bufid_in_use(a, 4));
	assert_false(svc_bufid_in_use(a, 5));
	/* Out of ids: the OOM text, and again nothing kept. */
	F.buf[1].size_kb = 4;
	while (a->n_used < 65534)
		assert_true(svc_bufid_alloc(a) > 0);
	assert_int_equal(svc_guard_assign_buffer_ids(a, &F.cfg, ids, sizes, F.err,
						     sizeof(F.err)), -ENOSPC);
	assert_string_equal(F.err, "Failed to allocate tracing buffers: OOM or too "
				   "many buffers");
	assert_int_equal(a->n_used, 65534);
	free(a);
}

static void test_session_state_names(void **state)
{
	(void)state;
	assert_string_equal(svc_session_state_name(SVC_SESSION_DISABLED), "DISABLED");
	assert_string_equal(svc_session_state_name(SVC_SESSION_CONFIGURED),
			    "CONFIGURED");
	assert_string_equal(svc_session_state_name(SVC_SESSION_STARTED), "STARTED");
	assert_string_equal(svc_session_state_name(SVC_SESSION_STOP_WAIT),
			    "STOP_WAIT");
	assert_string_equal(svc_session_state_name(SVC_SESSION_CLONED_READ_ONLY),
			    "CLONED_READ_ONLY");
	assert_string_equal(svc_session_state_name((enum svc_session_state)0),
			    "UNKNOWN");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_default_config_passes),
		T(test_lockdown_applies_even_on_failure),
		T(test_connection_has_session),
		T(test_duration_limits),
		T(test_trigger_timeout),
		T(test_trigger_mode_values),
		T(test_trigger_mode_from_decoded_bytes),
		T(test_clone_snapshot_needs_stop_tracing),
		T(test_duration_with_triggers),
		T(test_bugreport_filename),
		T(test_write_into_file_with_stop_or_clone),
		T(test_duplicate_trigger_names),
		T(test_many_triggers),
		T(test_guardrails_deferred_start),
		T(test_guardrails_buffer_multiple_of_4),
		T(test_guardrails_total_buffer_size),
		T(test_buffer_count),
		T(test_duplicate_buffer_names),
		T(test_data_source_targets),
		T(test_exclusive_rejected_by_higher_or_equal),
		T(test_exclusive_aborts_all),
		T(test_exclusive_aborted_sessions_are_gone_for_later_steps),
		T(test_exclusive_android_uids),
		T(test_unique_session_name),
		T(test_semaphores),
		T(test_semaphore_declared_twice_counts_twice),
		T(test_rate_limit_timing),
		T(test_rate_limit_names),
		T(test_rate_limit_recorded_when_later_step_fails),
		T(test_sessions_per_uid),
		T(test_sessions_statsd_uid),
		T(test_sessions_total),
		T(test_trace_filter),
		T(test_priority_boost),
		T(test_order_of_checks),
		T(test_bad_arguments_and_truncation),
		T(test_every_allocation_fails),
		T(test_output_fd_or_path),
		T(test_output_file_creation),
		T(test_buffer_bytes),
		T(test_bufid_sequence_and_reuse),
		T(test_bufid_wraparound_and_exhaustion),
		T(test_bufid_matches_model),
		T(test_assign_buffer_ids),
		T(test_session_state_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
