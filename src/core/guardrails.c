// SPDX-License-Identifier: Apache-2.0
// EnableTracing guardrails and the pure helpers of session creation (see
// guardrails.h). The error texts are the reference service's, byte for byte:
// consumers and tools match on them.
#include "core/guardrails.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem_hooks.h"

typedef Perfetto__Protos__TraceConfig trace_config_t;
typedef Perfetto__Protos__TraceConfig__TriggerConfig trigger_config_t;
typedef Perfetto__Protos__TraceConfig__SessionSemaphore semaphore_t;
typedef Perfetto__Protos__TraceConfig__TraceFilter__StringFilterChain
	filter_chain_t;

/* One svc_guard_check() call. */
struct guard_run {
	const struct svc_guard_ctx *ctx; /* the caller's inputs */
	const trace_config_t *cfg;	 /* ctx->cfg */
	struct svc_guard_result *res;	 /* the caller's outputs */
	char *err;			 /* error text buffer (may be NULL) */
	size_t errlen;			 /* its size */
	uint32_t max_duration_ms;	 /* step 3 limit, also used by step 4 */
	bool sessions_gone;		 /* step 15 aborted every session: later
					  * steps see none */
};

/* Writes the formatted text into err (if any) and returns rc. */
__attribute__((format(printf, 4, 5))) static int
guard_errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

#define FAIL(r, rc, ...) guard_errf((r)->err, (r)->errlen, (rc), __VA_ARGS__)

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static int fail_oom(struct guard_run *r)
{
	return FAIL(r, -ENOMEM, "Out of memory");
}

/* Sessions the later steps must consider (none once step 15 aborted all). */
static size_t live_sessions(const struct guard_run *r)
{
	return r->sessions_gone ? 0 : r->ctx->n_sessions;
}

int svc_guard_trigger_mode(const trace_config_t *cfg)
{
	const trigger_config_t *tc = cfg->trigger_config;

	if (!tc)
		return SVC_TRIGGER_UNSPECIFIED;
	if (tc->use_clone_snapshot_if_available)
		return SVC_TRIGGER_CLONE_SNAPSHOT;
	return (int)tc->trigger_mode;
}

/* Step 1: the lockdown operation applies before any check can fail. */
static void step_lockdown(struct guard_run *r)
{
	if (r->cfg->lockdown_mode ==
	    PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET)
		*r->ctx->lockdown = true;
	else if (r->cfg->lockdown_mode ==
		 PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_CLEAR)
		*r->ctx->lockdown = false;
}

/* Steps 2-9: the connection, durations, trigger mode and file name. */
static int step_basic(struct guard_run *r)
{
	const trace_config_t *cfg = r->cfg;
	const trigger_config_t *tc = cfg->trigger_config;
	uint32_t timeout = tc ? tc->trigger_timeout_ms : 0;
	int raw_mode = tc ? (int)tc->trigger_mode : SVC_TRIGGER_UNSPECIFIED;
	int mode = r->res->trigger_mode;
	bool has_trigger = mode != SVC_TRIGGER_UNSPECIFIED;

	if (r->ctx->has_session)
		return FAIL(r, -EBUSY,
			    "A Consumer is trying to EnableTracing() but another "
			    "tracing session is already active (forgot a call to "
			    "FreeBuffers() ?)");
	if (cfg->duration_ms > r->max_duration_ms)
		return FAIL(r, -EINVAL,
			    "Requested too long trace (%" PRIu32 "ms  > %" PRIu32
			    " ms)",
			    cfg->duration_ms, r->max_duration_ms);
	if (has_trigger && (timeout == 0 || timeout > r->max_duration_ms))
		return FAIL(r, -EINVAL,
			    "Traces with START_TRACING triggers must provide a "
			    "positive trigger_timeout_ms < 7 days (received %" PRIu32
			    "ms)",
			    timeout);
	if (raw_mode > SVC_TRIGGER_MODE_MAX)
		return FAIL(r, -EINVAL,
			    "The trace config specified an invalid trigger_mode");
	if (tc && tc->use_clone_snapshot_if_available &&
	    raw_mode != SVC_TRIGGER_STOP_TRACING)
		return FAIL(r, -EINVAL,
			    "trigger_mode must be STOP_TRACING when "
			    "use_clone_snapshot_if_available=true");
	if (has_trigger && cfg->duration_ms != 0)
		return FAIL(r, -EINVAL,
			    "duration_ms was set, this must not be set for traces "
			    "with triggers.");
	for (const char *c = str_or_empty(cfg->bugreport_filename); *c; c++) {
		bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
			  *c == '.';
		if (!ok)
			return FAIL(r, -EINVAL,
				    "bugreport_filename contains invalid chars. "
				    "Use [a-zA-Z0-9-_.]+");
	}
	if ((mode == SVC_TRIGGER_STOP_TRACING ||
	     mode == SVC_TRIGGER_CLONE_SNAPSHOT) &&
	    cfg->write_into_file)
		return FAIL(r, -EINVAL,
			    "Specifying trigger mode STOP_TRACING/CLONE_SNAPSHOT "
			    "and write_into_file together is unsupported");
	return 0;
}

/* A string with its position in the config, for duplicate searches. */
struct named_idx {
	const char *name; /* never NULL */
	size_t idx;	  /* position in the config's list */
};

static int named_idx_cmp(const void *a, const void *b)
{
	const struct named_idx *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Step 10: the first trigger (in config order) whose name appeared before.
 * Sorting keeps this O(n log n): the trigger list is unbounded. */
static int step_trigger_names(struct guard_run *r)
{
	const trigger_config_t *tc = r->cfg->trigger_config;
	struct named_idx *v;
	size_t n = tc ? tc->n_triggers : 0, dup = SIZE_MAX;

	if (n < 2)
		return 0;
	v = svc_mem_malloc(n * sizeof(*v));
	if (!v)
		return fail_oom(r);
	for (size_t i = 0; i < n; i++) {
		v[i].name = str_or_empty(tc->triggers[i]->name);
		v[i].idx = i;
	}
	qsort(v, n, sizeof(*v), named_idx_cmp);
	/* Every entry but the first of a run of equal names is a repeat; the
	 * repeat with the smallest index is the first one in config order. */
	for (size_t i = 1; i < n; i++) {
		if (v[i].idx < dup && !strcmp(v[i].name, v[i - 1].name))
			dup = v[i].idx;
	}
	svc_mem_free(v);
	if (dup == SIZE_MAX)
		return 0;
	return FAIL(r, -EINVAL, "Duplicate trigger name: %s",
		    str_or_empty(tc->triggers[dup]->name));
}

/* Step 11: the extra guardrails on deferred start and buffer sizes. */
static int step_extra_guardrails(struct guard_run *r)
{
	const trace_config_t *cfg = r->cfg;
	uint64_t sum_kb = 0;
	uint32_t max_kb = SVC_GUARDRAILS_MAX_TRACING_BUFFER_SIZE_KB;

	if (!cfg->enable_extra_guardrails)
		return 0;
	if (cfg->deferred_start)
		return FAIL(r, -EINVAL,
			    "deferred_start=true is not supported in unsupervised "
			    "traces");
	for (size_t i = 0; i < cfg->n_buffers; i++) {
		uint32_t kb = cfg->buffers[i]->size_kb;

		if (kb % SVC_GUARDRAILS_BUFFER_SIZE_KB_MULTIPLE != 0)
			return FAIL(r, -EINVAL,
				    "buffers.size_kb must be a multiple of 4, "
				    "got %" PRIu32,
				    kb);
		sum_kb += kb;
	}
	if (cfg->guardrail_overrides &&
	    cfg->guardrail_overrides->max_tracing_buffer_size_kb > max_kb)
		max_kb = cfg->guardrail_overrides->max_tracing_buffer_size_kb;
	if (sum_kb > max_kb)
		return FAIL(r, -EINVAL,
			    "Requested too large trace buffer (%" PRIu64
			    "kB  > %" PRIu32 " kB)",
			    sum_kb, max_kb);
	return 0;
}

/* Index of the first buffer named `name`, or SIZE_MAX. */
static size_t buffer_by_name(const trace_config_t *cfg, const char *name,
			     size_t limit)
{
	for (size_t i = 0; i < limit; i++) {
		if (!strcmp(str_or_empty(cfg->buffers[i]->name), name))
			return i;
	}
	return SIZE_MAX;
}

/* Steps 12-14: buffer count, buffer names, data-source targets. */
static int step_buffers(struct guard_run *r)
{
	const trace_config_t *cfg = r->cfg;
	size_t nbuf = cfg->n_buffers;

	if (nbuf > SVC_MAX_BUFFERS_PER_CONSUMER)
		return FAIL(r, -EINVAL, "Too many buffers configured (%zu)", nbuf);
	/* At most 128 buffers from here on: quadratic search is fine. */
	for (size_t i = 0; i < nbuf; i++) {
		const char *name = str_or_empty(cfg->buffers[i]->name);
		size_t first;

		if (!*name)
			continue;
		first = buffer_by_name(cfg, name, i);
		if (first != SIZE_MAX)
			return FAIL(r, -EINVAL,
				    "Duplicate buffer name \"%s\" at index %zu "
				    "(first occurrence at index %zu)",
				    name, i, first);
	}
	for (size_t i = 0; i < cfg->n_data_sources; i++) {
		const Perfetto__Protos__DataSourceConfig *dsc =
			cfg->data_sources[i]->config;
		const char *ds_name = str_or_empty(dsc ? dsc->name : NULL);
		const char *tb_name =
			str_or_empty(dsc ? dsc->target_buffer_name : NULL);
		size_t target = dsc ? dsc->target_buffer : 0;

		if (*tb_name) {
			size_t resolved = buffer_by_name(cfg, tb_name, nbuf);

			if (resolved == SIZE_MAX)
				return FAIL(r, -EINVAL,
					    "Data source \"%s\" specified "
					    "target_buffer_name \"%s\" which does "
					    "not match any buffer",
					    ds_name, tb_name);
			/* target_buffer 0 is indistinguishable from unset. */
			if (target > 0 && target != resolved)
				return FAIL(r, -EINVAL,
					    "Data source \"%s\" specified both "
					    "target_buffer=%zu and "
					    "target_buffer_name=\"%s\" (index %zu) "
					    "but they don't match",
					    ds_name, target, tb_name, resolved);
			target = resolved;
		}
		if (target >= nbuf)
			return FAIL(r, -EINVAL,
				    "Data source \"%s\" specified an out of "
				    "bounds target_buffer (%zu >= %zu)",
				    ds_name, target, nbuf);
	}
	return 0;
}

/* Step 15: exclusive sessions. An exclusive request aborts every session. */
static int step_exclusive(struct guard_run *r)
{
	const struct svc_guard_ctx *ctx = r->ctx;
	uint32_t prio = r->cfg->exclusive_prio, cur = 0;

	for (size_t i = 0; i < ctx->n_sessions; i++) {
		if (ctx->sessions[i].exclusive_prio > cur)
			cur = ctx->sessions[i].exclusive_prio;
	}
	if (cur > 0 && cur >= prio)
		return FAIL(r, -EBUSY,
			    "An exclusive session with priority %" PRIu32
			    " >= requested priority %" PRIu32
			    " is already active.",
			    cur, prio);
	if (prio == 0)
		return 0;
	if (ctx->android_uids && ctx->uid != SVC_AID_ROOT &&
	    ctx->uid != SVC_AID_SHELL)
		return FAIL(r, -EPERM,
			    "On android, exclusive mode can only be requested by "
			    "root or shell.");
	snprintf(r->res->abort_reason, sizeof(r->res->abort_reason),
		 "Aborted due to user requested higher-priority (%" PRIu32
		 ") exclusive session.",
		 prio);
	for (size_t i = 0; i < ctx->n_sessions; i++)
		r->res->abort_ids[i] = ctx->sessions[i].id;
	r->res->n_abort = ctx->n_sessions;
	r->sessions_gone = true;
	return 0;
}

/* Step 16: one live (non-cloned) session per unique_session_name. */
static int step_unique_name(struct guard_run *r)
{
	const char *name = str_or_empty(r->cfg->unique_session_name);

	if (!*name)
		return 0;
	for (size_t i = 0; i < live_sessions(r); i++) {
		const struct svc_session_view *s = &r->ctx->sessions[i];

		if (s->state == SVC_SESSION_CLONED_READ_ONLY)
			continue;
		if (!strcmp(str_or_empty(s->unique_session_name), name))
			return FAIL(r, -EBUSY,
				    "A trace with this unique session name (%s) "
				    "already exists",
				    name);
	}
	return 0;
}

/* Step 17 aggregate of one semaphore name over the existing sessions. */
struct sem_state {
	const char *name;	  /* semaphore name, never NULL */
	uint64_t count;		  /* declarations by sessions that count */
	uint64_t min_max_others;  /* smallest max_other_session_count among them */
};

static int sem_state_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sem_state *)a)->name,
		      ((const struct sem_state *)b)->name);
}

/* Whether an existing session's semaphores count in step 17. */
static bool sem_session_counts(const struct svc_session_view *s)
{
	return s->state != SVC_SESSION_CLONED_READ_ONLY &&
	       s->state != SVC_SESSION_DISABLED;
}

/*
 * Collects the semaphore declarations of the sessions that count, merged per
 * name and sorted by name, into *out (svc_mem_free it; NULL when none).
 * A session declaring a name twice counts twice, as in the reference.
 * Returns the number of names, or -ENOMEM.
 */
static ssize_t sem_collect(const struct guard_run *r, struct sem_state **out)
{
	const struct svc_guard_ctx *ctx = r->ctx;
	struct sem_state *v;
	size_t n = 0, m = 0;

	*out = NULL;
	for (size_t i = 0; i < live_sessions(r); i++) {
		if (sem_session_counts(&ctx->sessions[i]))
			n += ctx->sessions[i].n_semaphores;
	}
	if (n == 0)
		return 0;
	v = svc_mem_malloc(n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < live_sessions(r); i++) {
		const struct svc_session_view *s = &ctx->sessions[i];

		if (!sem_session_counts(s))
			continue;
		for (size_t j = 0; j < s->n_semaphores; j++) {
			v[m].name = str_or_empty(s->semaphores[j]->name);
			v[m].count = 1;
			v[m].min_max_others =
				s->semaphores[j]->max_other_session_count;
			m++;
		}
	}
	qsort(v, n, sizeof(*v), sem_state_cmp);
	m = 0; /* merge each run of one name into v[m - 1] */
	for (size_t i = 0; i < n; i++) {
		if (m > 0 && !strcmp(v[m - 1].name, v[i].name)) {
			v[m - 1].count++;
			if (v[i].min_max_others < v[m - 1].min_max_others)
				v[m - 1].min_max_others = v[i].min_max_others;
		} else {
			v[m++] = v[i];
		}
	}
	*out = v;
	return (ssize_t)m;
}

/* Step 17: session semaphores. Existing declarations are sorted and merged
 * per name so that huge lists on either side cost O(n log n). For each of
 * the request's semaphores (in config order), the sessions declaring it must
 * be at most min(its limit, their smallest limit). */
static int step_semaphores(struct guard_run *r)
{
	const trace_config_t *cfg = r->cfg;
	struct sem_state *v;
	ssize_t m;
	int rc = 0;

	if (cfg->n_session_semaphores == 0)
		return 0;
	m = sem_collect(r, &v);
	if (m < 0)
		return fail_oom(r);
	for (size_t i = 0; i < cfg->n_session_semaphores && m > 0; i++) {
		const semaphore_t *sem = cfg->session_semaphores[i];
		struct sem_state key = { .name = str_or_empty(sem->name) };
		const struct sem_state *found =
			bsearch(&key, v, (size_t)m, sizeof(*v), sem_state_cmp);
		uint64_t limit;

		if (!found)
			continue;
		limit = sem->max_other_session_count;
		if (found->min_max_others < limit)
			limit = found->min_max_others;
		if (found->count > limit) {
			rc = FAIL(r, -EBUSY,
				  "Semaphore \"%s\" exceeds maximum allowed other "
				  "session count (%" PRIu64 " > min(%" PRIu64
				  ", %" PRIu64 "))",
				  key.name, found->count,
				  sem->max_other_session_count,
				  found->min_max_others);
			break;
		}
	}
	svc_mem_free(v);
	return rc;
}

/* Adds (name, start_s) to the history. Returns 0 or -ENOMEM. */
static int history_add(struct svc_guard_history *h, const char *name,
		       int64_t start_s)
{
	size_t len = strlen(name);
	char *copy;

	if (h->len == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 8;
		struct svc_guard_history_entry *v =
			svc_mem_realloc(h->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	copy = svc_mem_malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, name, len + 1);
	h->v[h->len].name = copy;
	h->v[h->len].start_s = start_s;
	h->len++;
	return 0;
}

/* Step 18: with guardrails, a name (even "") may begin at most once per
 * window. Entries strictly older than the window are forgotten first, so a
 * request exactly 300 s after the last one still fails (as the reference). */
static int step_rate_limit(struct guard_run *r)
{
	struct svc_guard_history *h = r->ctx->history;
	const char *name = str_or_empty(r->cfg->unique_session_name);
	int64_t now_s = r->ctx->now_ms / 1000;
	size_t i = 0;

	if (!r->cfg->enable_extra_guardrails)
		return 0;
	while (i < h->len) {
		if (now_s - h->v[i].start_s > SVC_MIN_SECONDS_BETWEEN_TRACES_GUARDRAIL) {
			svc_mem_free(h->v[i].name);
			h->v[i] = h->v[--h->len];
		} else {
			i++;
		}
	}
	for (i = 0; i < h->len; i++) {
		if (!strcmp(h->v[i].name, name))
			return FAIL(r, -EAGAIN,
				    "A trace with unique session name \"%s\" began "
				    "less than %" PRId64 "s ago (%" PRId64 "s)",
				    name,
				    (int64_t)SVC_MIN_SECONDS_BETWEEN_TRACES_GUARDRAIL,
				    now_s - h->v[i].start_s);
	}
	if (history_add(h, name, now_s))
		return fail_oom(r);
	return 0;
}

/* Steps 19-20: sessions per uid and in total. */
static int step_session_counts(struct guard_run *r)
{
	const struct svc_guard_ctx *ctx = r->ctx;
	size_t total = live_sessions(r);
	int for_uid = 0;
	int limit = SVC_MAX_CONCURRENT_TRACING_SESSIONS_PER_UID;

	for (size_t i = 0; i < total; i++) {
		if (ctx->sessions[i].consumer_uid == ctx->uid)
			for_uid++;
	}
	if (ctx->android_uids && ctx->uid == SVC_AID_STATSD)
		limit = SVC_MAX_CONCURRENT_TRACING_SESSIONS_FOR_STATSD_UID;
	if (for_uid >= limit)
		return FAIL(r, -EUSERS,
			    "Too many concurrent tracing sesions (%d) for uid %d "
			    "limit is %d",
			    for_uid, (int)ctx->uid, limit);
	if (total >= SVC_MAX_CONCURRENT_TRACING_SESSIONS)
		return FAIL(r, -EUSERS, "Too many concurrent tracing sesions (%zu)",
			    total);
	return 0;
}

/* The known string filter policies (SFP_UNSPECIFIED is not one). */
#define SFP_FIRST \
	PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__STRING_FILTER_POLICY__SFP_MATCH_REDACT_GROUPS
#define SFP_LAST \
	PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__STRING_FILTER_POLICY__SFP_ATRACE_REPEATED_SEARCH_REDACT_GROUPS

/* Whether every rule of `chain` names a known string filter policy. */
static bool filter_chain_valid(const filter_chain_t *chain)
{
	if (!chain)
		return true;
	for (size_t i = 0; i < chain->n_rules; i++) {
		int p = (int)chain->rules[i]->policy;

		if (p < SFP_FIRST || p > SFP_LAST)
			return false;
	}
	return true;
}

/* Step 21: a trace filter must load, else the session is refused rather
 * than traced unfiltered. */
static int step_trace_filter(struct guard_run *r)
{
	const Perfetto__Protos__TraceConfig__TraceFilter *f = r->cfg->trace_filter;
	int rc;

	if (!f)
		return 0;
	if (!filter_chain_valid(f->string_filter_chain) ||
	    !filter_chain_valid(f->string_filter_chain_v54))
		return FAIL(r, -EINVAL,
			    "Trace filter has invalid string filtering rules, "
			    "aborting");
	rc = r->ctx->check_filter ?
		     r->ctx->check_filter(r->ctx->filter_opaque, f) : -EINVAL;
	if (rc == -EINVAL)
		return FAIL(r, -EINVAL, "Trace filter bytecode invalid, aborting");
	if (rc < 0)
		return FAIL(r, -EINVAL, "Failed to set filter root.");
	return 0;
}

/* Step 22: validate the priority boost (the caller applies it). */
static int step_priority_boost(struct guard_run *r)
{
	const Perfetto__Protos__PriorityBoostConfig *pb = r->cfg->priority_boost;
	struct svc_sched_boost *out = &r->res->boost;

	if (!pb)
		return 0;
	switch ((int)pb->policy) {
	case PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_SCHED_OTHER:
		if (pb->priority > 20)
			return FAIL(r, -EINVAL,
				    "Invalid priority boost config: For the "
				    "'POLICY_SCHED_OTHER' priority must be in the "
				    "range [0; 20]");
		out->policy = SVC_BOOST_SCHED_OTHER;
		break;
	case PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_SCHED_FIFO:
		if (pb->priority < 1 || pb->priority > 99)
			return FAIL(r, -EINVAL,
				    "Invalid priority boost config: For the "
				    "'POLICY_SCHED_FIFO' priority must be in the "
				    "range [1; 99]");
		out->policy = SVC_BOOST_SCHED_FIFO;
		break;
	case PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_UNSPECIFIED:
		return FAIL(r, -EINVAL,
			    "Invalid priority boost config: Policy must not be "
			    "'POLICY_UNSPECIFIED'");
	default:
		return FAIL(r, -EINVAL,
			    "Invalid priority boost config: Unknown policy %d",
			    (int)pb->policy);
	}
	out->prio = pb->priority;
	return 0;
}

int svc_guard_check(const struct svc_guard_ctx *ctx,
		    struct svc_guard_result *res, char *err, size_t errlen)
{
	struct guard_run r = { .ctx = ctx, .res = res, .err = err,
			       .errlen = errlen };
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!ctx || !ctx->cfg || !ctx->lockdown || !ctx->history || !res ||
	    (ctx->n_sessions && (!ctx->sessions || !res->abort_ids)))
		return guard_errf(err, errlen, -EFAULT, "Invalid arguments");
	r.cfg = ctx->cfg;
	res->n_abort = 0;
	res->abort_reason[0] = '\0';
	res->boost = (struct svc_sched_boost){ .policy = SVC_BOOST_NONE };
	res->trigger_mode = svc_guard_trigger_mode(r.cfg);
	r.max_duration_ms = r.cfg->enable_extra_guardrails ?
				    SVC_GUARDRAILS_MAX_TRACING_DURATION_MS :
				    SVC_MAX_TRACING_DURATION_MS;

	step_lockdown(&r);
	if ((rc = step_basic(&r)) || (rc = step_trigger_names(&r)) ||
	    (rc = step_extra_guardrails(&r)) || (rc = step_buffers(&r)) ||
	    (rc = step_exclusive(&r)) || (rc = step_unique_name(&r)) ||
	    (rc = step_semaphores(&r)) || (rc = step_rate_limit(&r)) ||
	    (rc = step_session_counts(&r)) || (rc = step_trace_filter(&r)) ||
	    (rc = step_priority_boost(&r)))
		return rc;
	return 0;
}

void svc_guard_history_init(struct svc_guard_history *h)
{
	h->v = NULL;
	h->len = 0;
	h->cap = 0;
}

void svc_guard_history_free(struct svc_guard_history *h)
{
	for (size_t i = 0; i < h->len; i++)
		svc_mem_free(h->v[i].name);
	svc_mem_free(h->v);
	svc_guard_history_init(h);
}

int svc_guard_check_output(const trace_config_t *cfg, bool have_fd, char *err,
			   size_t errlen)
{
	bool have_path = cfg->output_path && cfg->output_path[0];

	if (!cfg->write_into_file || have_fd != have_path)
		return 0;
	return guard_errf(err, errlen, -EINVAL,
			  "When write_into_file==true either a FD needs to be "
			  "passed or output_path must be populated (but not "
			  "both)");
}

int svc_guard_create_output_file(const char *path, char *err, size_t errlen)
{
	int fd, rc;

	if (!path || !*path)
		return guard_errf(err, errlen, -EINVAL,
				  "Failed to create the trace file %s",
				  str_or_empty(path));
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
		  SVC_OUTPUT_FILE_OPEN_MODE);
	if (fd < 0)
		return guard_errf(err, errlen, -errno,
				  "Failed to create the trace file %s", path);
	/* The open mode is narrowed by the umask; set the final mode now. */
	if (fchmod(fd, SVC_OUTPUT_FILE_MODE) != 0) {
		rc = -errno;
		close(fd);
		unlink(path); /* created by us just above (O_EXCL) */
		return guard_errf(err, errlen, rc,
				  "Failed to create the trace file %s", path);
	}
	return fd;
}

int svc_guard_buffer_bytes(uint32_t size_kb, uint32_t *bytes)
{
	uint64_t b = (uint64_t)size_kb * 1024u;

	if (b == 0 || b > SVC_MAX_TRACE_BUFFER_SIZE_BYTES)
		return -EINVAL;
	*bytes = (uint32_t)b;
	return 0;
}

void svc_bufid_init(struct svc_bufid_alloc *a)
{
	memset(a, 0, sizeof(*a));
}

/* First free id in [from, to] (1 <= from), or 0 if none. */
static uint32_t bufid_find_free(const struct svc_bufid_alloc *a,
				uint32_t from, uint32_t to)
{
	while (from <= to) {
		uint32_t w = from / 64;
		uint64_t free_bits = ~a->used[w] & (~0ull << (from % 64));

		if (free_bits) {
			uint32_t id = w * 64 + (uint32_t)__builtin_ctzll(free_bits);

			return id <= to ? id : 0;
		}
		from = (w + 1) * 64;
	}
	return 0;
}

int svc_bufid_alloc(struct svc_bufid_alloc *a)
{
	uint32_t start, id;

	if (a->n_used >= SVC_MAX_TRACE_BUFFER_ID)
		return -ENOSPC;
	start = a->last >= SVC_MAX_TRACE_BUFFER_ID ? 1 : a->last + 1;
	id = bufid_find_free(a, start, SVC_MAX_TRACE_BUFFER_ID);
	if (!id && start > 1)
		id = bufid_find_free(a, 1, start - 1);
	if (!id) /* n_used says there is a free id: the struct is corrupt */
		return -ENOSPC;
	a->used[id / 64] |= 1ull << (id % 64);
	a->n_used++;
	a->last = id;
	return (int)id;
}

bool svc_bufid_in_use(const struct svc_bufid_alloc *a, uint32_t id)
{
	if (id == 0 || id > SVC_MAX_TRACE_BUFFER_ID)
		return false;
	return a->used[id / 64] & (1ull << (id % 64));
}

int svc_bufid_free(struct svc_bufid_alloc *a, uint32_t id)
{
	if (id == 0 || id > SVC_MAX_TRACE_BUFFER_ID)
		return -EINVAL;
	if (!svc_bufid_in_use(a, id))
		return -ENOENT;
	a->used[id / 64] &= ~(1ull << (id % 64));
	a->n_used--;
	return 0;
}

int svc_guard_assign_buffer_ids(struct svc_bufid_alloc *a,
				const trace_config_t *cfg, uint16_t *ids,
				uint32_t *sizes, char *err, size_t errlen)
{
	size_t i;
	int id, rc;
	uint32_t bytes;

	for (i = 0; i < cfg->n_buffers; i++) {
		id = svc_bufid_alloc(a);
		if (id < 0) {
			rc = guard_errf(err, errlen, -ENOSPC, "%s",
					SVC_GUARD_ERR_BUFFER_OOM);
			goto undo;
		}
		ids[i] = (uint16_t)id;
		if (svc_guard_buffer_bytes(cfg->buffers[i]->size_kb, &bytes)) {
			i++; /* this buffer's id is released too */
			rc = guard_errf(err, errlen, -EINVAL, "%s",
					SVC_GUARD_ERR_BUFFER_SIZES);
			goto undo;
		}
		if (sizes)
			sizes[i] = bytes;
	}
	return 0;
undo:
	while (i > 0)
		svc_bufid_free(a, ids[--i]);
	return rc;
}
