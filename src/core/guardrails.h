// SPDX-License-Identifier: Apache-2.0
// EnableTracing guardrails (spec/consumer-port.md §2.1): the checks that
// decide whether a TraceConfig may become a session (steps 1-22), in the
// reference order and with the reference error texts, plus the pure helpers
// of the later steps (24 output file, 25 buffer sizes, 26 BufferIDs).
//
// Everything here is pure: it reads a view of the service's state that the
// caller (the control plane, which owns the session registry) builds, and
// writes only what the caller passes in (lockdown flag, step-18 history,
// result). It never aborts, frees or starts a session itself. Not
// thread-safe: the control plane serialises calls (one registry owner).
#ifndef SPN_CORE_GUARDRAILS_H
#define SPN_CORE_GUARDRAILS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/limits.h"
#include "core/session_state.h"
#include "trace_config.pb-c.h"

/* Texts of step 25/26 failures (the consumer sees them as is). */
#define SVC_GUARD_ERR_BUFFER_SIZES \
	"Failed to allocate tracing buffers: Invalid buffer sizes"
#define SVC_GUARD_ERR_BUFFER_OOM \
	"Failed to allocate tracing buffers: OOM or too many buffers"
/* Step 22: format of the error when applying a validated boost fails; %s is
 * the reason (e.g. "sched_setscheduler(...) failed ..."). */
#define SVC_GUARD_ERR_BOOST_FAILED_FMT "Failed to boost priority: %s"

/* A size that holds every error text of this module but the user-supplied
 * names embedded in some; longer texts are truncated to the buffer. */
#define SVC_GUARD_ERR_LEN 512

/* Room for the step-15 abort reason (prio is a uint32). */
#define SVC_GUARD_ABORT_REASON_LEN 96

/* Effective trigger modes (TraceConfig.TriggerConfig.TriggerMode values). */
#define SVC_TRIGGER_UNSPECIFIED 0
#define SVC_TRIGGER_START_TRACING 1
#define SVC_TRIGGER_STOP_TRACING 2
#define SVC_TRIGGER_CLONE_SNAPSHOT 4
/* Largest known mode; larger values fail step 5 (3 passes, as in the
 * reference, and then behaves as a mode with no action). */
#define SVC_TRIGGER_MODE_MAX 4

/* What one existing session looks like to the guardrails (read-only). */
struct svc_session_view {
	uint64_t id;			 /* TracingSessionID */
	uid_t consumer_uid;		 /* uid of the consumer that created it */
	enum svc_session_state state;	 /* current state; CLONED_READ_ONLY = a clone */
	uint32_t exclusive_prio;	 /* its TraceConfig.exclusive_prio (0 = none) */
	const char *unique_session_name; /* its TraceConfig.unique_session_name; NULL = "" */
	/* its TraceConfig.session_semaphores (may be NULL when n_semaphores is 0) */
	Perfetto__Protos__TraceConfig__SessionSemaphore *const *semaphores;
	size_t n_semaphores;		 /* entries in semaphores */
};

/* One step-18 record: when a guardrailed session of this name last began. */
struct svc_guard_history_entry {
	char *name;	 /* unique_session_name ("" for none); owned (malloc'd) */
	int64_t start_s; /* now_ms / 1000 at that EnableTracing */
};

/*
 * Step-18 history, owned by the caller and kept for the service's life.
 * svc_guard_check() prunes entries older than the guardrail window and adds
 * one for each guardrailed request that reaches step 18 without failing it
 * (even if a later step fails, as the reference does).
 */
struct svc_guard_history {
	struct svc_guard_history_entry *v; /* entries, no order */
	size_t len;			   /* entries in use */
	size_t cap;			   /* entries allocated */
};

/*
 * Step 21 hook: loads `filter` (the config's trace_filter; the bytecode to
 * use is bytecode_v2 when non-empty, else bytecode) and keeps nothing.
 * Returns 0 if the filter can be used, -EINVAL if its bytecode is invalid,
 * any other negative errno if the filter root cannot be set.
 */
typedef int (*svc_guard_filter_check_fn)(
	void *opaque, const Perfetto__Protos__TraceConfig__TraceFilter *filter);

/* Everything svc_guard_check() reads (and the two things it updates). */
struct svc_guard_ctx {
	const Perfetto__Protos__TraceConfig *cfg; /* the request's decoded config */
	uid_t uid;			  /* the consumer's uid (SO_PEERCRED) */
	bool has_session;		  /* the connection already has a session attached */
	const struct svc_session_view *sessions; /* every session alive (any state, any
						  * consumer, detached, clones) */
	size_t n_sessions;		  /* entries in sessions */
	struct svc_guard_history *history; /* in/out: step 18 records */
	int64_t now_ms;			  /* current time, monotonic ms (boot time in
					   * the reference); only its seconds are used */
	bool *lockdown;			  /* in/out: the service's lockdown flag (step 1) */
	bool android_uids;		  /* apply the Android-only uid rules: exclusive
					   * sessions only for root/shell, statsd limit 10 */
	svc_guard_filter_check_fn check_filter; /* step 21 loader; NULL = every
						 * filter bytecode is refused */
	void *filter_opaque;		  /* passed to check_filter */
};

/* A scheduling boost validated by step 22 (applied by the caller). */
enum svc_boost_policy {
	SVC_BOOST_NONE = 0,	   /* the config asks for no boost */
	SVC_BOOST_SCHED_OTHER = 1, /* nice -prio, prio 0..20 */
	SVC_BOOST_SCHED_FIFO = 2,  /* SCHED_FIFO, prio 1..99 */
};

struct svc_sched_boost {
	enum svc_boost_policy policy; /* what to apply */
	uint32_t prio;		      /* its priority, in the policy's range */
};

/* What svc_guard_check() tells the caller to do. */
struct svc_guard_result {
	/* in: room for ctx->n_sessions ids (NULL allowed when there are no
	 * sessions). out: the sessions to abort (step 15), in view order. */
	uint64_t *abort_ids;
	size_t n_abort;			/* out: ids written to abort_ids */
	char abort_reason[SVC_GUARD_ABORT_REASON_LEN]; /* out: error text to free
							* them with (n_abort > 0) */
	struct svc_sched_boost boost;	/* out: boost to apply (step 22), on success */
	int trigger_mode;		/* out: effective trigger mode */
};

/*
 * Runs steps 1-22 of EnableTracing on ctx->cfg, in order, stopping at the
 * first failure.
 * Side effects, which hold even when a later step fails (as in the
 * reference): step 1 sets *ctx->lockdown for LOCKDOWN_SET/CLEAR; step 15
 * fills res->abort_ids (every existing session) when the config is exclusive
 * and the caller must abort them with res->abort_reason whatever the
 * return value; step 18 prunes and extends ctx->history. Sessions listed in
 * res->abort_ids are treated as already gone by steps 16-20.
 * Step 22 only validates the boost; the caller applies res->boost and on
 * failure reports SVC_GUARD_ERR_BOOST_FAILED_FMT.
 * Returns 0 if the session may be created, else a negative errno with the
 * consumer-visible text in err (NUL-terminated, truncated to errlen):
 *   -EINVAL  the config is invalid (steps 3-14, 21, 22)
 *   -EBUSY   it conflicts with a session: the connection has one (2), a
 *            higher exclusive session (15), same name (16), semaphore (17)
 *   -EPERM   exclusive session asked by a uid other than root/shell (15,
 *            Android rules only)
 *   -EAGAIN  same name began less than 300 s ago (18)
 *   -EUSERS  too many sessions for the uid (19) or in total (20)
 *   -ENOMEM  out of memory (text "Out of memory")
 * The arguments (ctx, ctx->cfg, ctx->lockdown, ctx->history, res) must not
 * be NULL; if they are, -EFAULT.
 */
int svc_guard_check(const struct svc_guard_ctx *ctx,
		    struct svc_guard_result *res, char *err, size_t errlen);

/* The effective trigger mode of `cfg`: CLONE_SNAPSHOT when
 * use_clone_snapshot_if_available, else trigger_mode (UNSPECIFIED without a
 * trigger_config). May be an unknown value (step 5 rejects > 4). */
int svc_guard_trigger_mode(const Perfetto__Protos__TraceConfig *cfg);

/* Initialises an empty step-18 history. */
void svc_guard_history_init(struct svc_guard_history *h);
/* Frees every entry; `h` is empty (and reusable) afterwards. */
void svc_guard_history_free(struct svc_guard_history *h);

/*
 * Step 24, first half: with write_into_file, exactly one of an fd passed
 * with the request (have_fd) and a non-empty output_path must be given.
 * Returns 0 (also when write_into_file is off) or -EINVAL with the text.
 */
int svc_guard_check_output(const Perfetto__Protos__TraceConfig *cfg,
			   bool have_fd, char *err, size_t errlen);

/*
 * Step 24, second half: creates the trace file `path`, which must not exist
 * (O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC), with mode 0644 whatever the umask.
 * Returns the fd (the caller owns it), or a negative errno with the text
 * "Failed to create the trace file <path>" in err.
 */
int svc_guard_create_output_file(const char *path, char *err, size_t errlen);

/*
 * Step 25 for one buffer: *bytes = size_kb * 1024 if that is > 0 and fits
 * 32 bits. Returns 0, or -EINVAL (the caller reports
 * SVC_GUARD_ERR_BUFFER_SIZES).
 */
int svc_guard_buffer_bytes(uint32_t size_kb, uint32_t *bytes);

/*
 * BufferID allocator (step 26): ids 1..65535, each allocation takes the first
 * free id after the last one allocated, wrapping past 65535 to 1. A freed id
 * is reused only when the search comes round to it again.
 */
struct svc_bufid_alloc {
	uint64_t used[(SVC_MAX_TRACE_BUFFER_ID + 1) / 64]; /* bit i: id i taken (bit 0 never) */
	uint32_t last;	  /* id of the last allocation (0 before the first) */
	uint32_t n_used;  /* ids taken */
};

/* Makes `a` empty (the first id it gives is 1). */
void svc_bufid_init(struct svc_bufid_alloc *a);
/* Returns a free id (1..65535), or -ENOSPC when all are taken. */
int svc_bufid_alloc(struct svc_bufid_alloc *a);
/* Releases `id`. Returns 0, -EINVAL (0 or > 65535) or -ENOENT (not taken). */
int svc_bufid_free(struct svc_bufid_alloc *a, uint32_t id);
/* Whether `id` is currently taken. */
bool svc_bufid_in_use(const struct svc_bufid_alloc *a, uint32_t id);

/*
 * Steps 25-26 for a whole config, in the reference's per-buffer order (take
 * an id, then check that buffer's size): ids[i] gets the BufferID of
 * cfg->buffers[i] and sizes[i] (if non-NULL) its size in bytes. On failure
 * every id taken here is released again and err holds
 * SVC_GUARD_ERR_BUFFER_OOM (ids ran out: -ENOSPC) or
 * SVC_GUARD_ERR_BUFFER_SIZES (-EINVAL). `ids` has room for cfg->n_buffers.
 */
int svc_guard_assign_buffer_ids(struct svc_bufid_alloc *a,
				const Perfetto__Protos__TraceConfig *cfg,
				uint16_t *ids, uint32_t *sizes, char *err,
				size_t errlen);

#endif
