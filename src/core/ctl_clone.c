// SPDX-License-Identifier: Apache-2.0
// CloneSession on the control plane (spec/consumer-port.md §12): selects the
// source session and checks the caller may clone it, copies the source's
// trace file when it writes into one, empties its clear_before_clone
// buffers, flushes it in two groups (transfer_on_clone buffers, the others),
// snapshots each group when its flush ends (a read-only copy, or the buffer
// itself moved into the clone with an empty one left to the source), then
// makes a CLONED_READ_ONLY session attached to the caller. That clone is
// read with ReadBuffers, or, for a write_into_file source, written whole
// into the fd that came with the request after the source file's copy
// (was_write_into_file). Every failure is an answer,
// CloneSessionResponse{success:false, error}, as in the reference.
//
// Where the work runs. Control thread 0 (ctl) owns the job and every
// decision. The heavy parts run on a control worker (ctl_work_submit,
// ctl_alloc.c; SCHED_IDLE): making the empty buffers that replace cleared
// and moved ones, copying the source file into the caller's fd, and the
// buffer copies (svc_tbuf_clone), so a large copy never stalls the other
// sessions' control work. With --control 1 there is no worker: the same
// work runs on thread 0, which is no worse than a periodic file drain and
// still never blocks a lane (a copy takes no lock a lane waits for).
// Writing the clone itself into the caller's fd stays on thread 0: it
// builds the service packets and the stats, thread 0's state.
//
// Replacing a buffer under the producers' feet. Producers name a buffer by
// its BufferID, and that id must keep working for the source. So the
// source keeps its struct svc_buf (id and reference count) and only its
// storage (svc_buf.tb) is swapped on thread 0. Lanes never read svc_buf.tb:
// each producer's allow entry carries the storage it writes into, changed
// by a retarget message to the lane of every producer with an instance on
// that buffer; each lane acks, and after the last ack no lane touches the
// old storage, which is then sealed for the clone (transfer) or freed
// (clear). Until then the job keeps it. Commits in flight meanwhile land in
// the old storage: before a transfer they go with the clone, before a clear
// they go away with what was cleared (they came before the clone).
//
// Consistency with the source's reads. The copies keep the source's read
// progress (svc_tbuf_clone), so what the source already handed out is not
// in the clone. For a write_into_file source, the periodic drains into its
// file are held (ctl_file_hold) from the step-2 drain until every buffer
// is snapshotted: then the copied prefix of the file plus the clone hold
// every packet once, whatever the file timer does meanwhile.
//
// Jobs on one source run one after the other (a second CloneSession of the
// same session waits for the first): a job's swaps and copies assume no
// other job changes the source's storages under it.
//
// Differences from the reference:
//  - skip_trace_filter is moot: spindled applies no trace_filter;
//  - a clone is refused when SVC_MAX_CONCURRENT_TRACING_SESSIONS live
//    sessions exist (clones count toward that limit, constants.md);
//  - a write_into_file source whose file is already closed (DISABLED, or
//    max_file_size_bytes reached) is refused: there is no file to copy.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ctl_int.h"
#include "core/limits.h"
#include "ipc/log.h"

/* session_id selecting the bugreport session (§12). */
#define CLONE_BUGREPORT_SESSION_ID UINT64_MAX

/* FlushFlags of the clone flush (producer-port.md §6.3); the bugreport
 * target (SPN_FLUSH_CLONE_TARGET_BUGREPORT) is added when asked. */
#define CLONE_FLUSH_FLAGS (SPN_FLUSH_REASON_TRACE_CLONE | SPN_FLUSH_INITIATOR_TRACED)

/* Bytes per pread/write when the kernel cannot copy_file_range. */
#define CLONE_COPY_STEP (1u << 20)

#define CLONE_ERR_NOT_FOUND "Tracing session not found"
#define CLONE_ERR_UID "Not allowed to clone a session from another UID"
#define CLONE_ERR_ENDED "Original session ended"
#define CLONE_ERR_ATTACHED \
	"The consumer is already attached to another tracing session"
#define CLONE_ERR_NO_FD \
	"The session writes into a file: CloneSession needs a file " \
	"descriptor to write the clone into"
#define CLONE_ERR_FILE_CLOSED \
	"The trace file of the session to clone is already closed"
#define CLONE_ERR_FILE_READ "Cannot read the trace file of the session to clone"
#define CLONE_ERR_FILE_COPY "Failed to copy the trace file of the session " \
	"into the clone's file"
#define CLONE_ERR_FILE_WRITE "Failed to write the clone into its file"
#define CLONE_ERR_NOT_READY "The session's buffers are not allocated yet"
#define CLONE_ERR_NOMEM "Out of memory while cloning the session"
#define CLONE_ERR_TOO_MANY "Too many concurrent tracing sesions (%u)"

/* Where a job is. */
enum clone_phase {
	CLONE_QUEUED = 0,	/* an earlier clone of the same source runs */
	CLONE_PREPARING,	/* a worker copies the file, makes empty buffers */
	CLONE_FLUSHING,		/* flush groups running */
	CLONE_SNAPSHOT,		/* groups done: copies and lane acks in flight */
};

/* One buffer of the source, as its clone job sees it. Thread 0 only. */
struct clone_buf {
	struct svc_buf *src;	/* the source's buffer: the job holds a ref */
	bool transfer;		/* transfer_on_clone: moved into the clone */
	bool clear;		/* clear_before_clone and it held data */
	struct svc_tbuf *fresh_clear;	 /* empty storage for the clear */
	struct svc_tbuf *fresh_transfer; /* empty storage the source gets back
					  * when its storage moves */
	struct svc_tbuf *old;	/* storage the clear replaced: freed after
				 * the lanes' acks */
	struct svc_tbuf *snap;	/* the clone's storage (copy or moved) */
};

struct ctl_clone_job;

/* A flush group: the done callback's argument. */
struct clone_group {
	struct ctl_clone_job *job; /* its job */
	bool transfer;		/* the transfer_on_clone group */
	uint16_t *ids;		/* BufferIDs of the group */
	unsigned n;		/* entries in ids */
};

/* A CloneSession call, from the request to the reply. Thread 0 only. */
struct ctl_clone_job {
	struct ctl *ctl;	/* the control plane (timer callback) */
	struct ipc_reply reply;	/* the deferred CloneSession reply */
	unsigned lane;		/* caller's lane */
	uint64_t conn_id;	/* caller's connection; 0 once it is gone */
	struct ipc_peer_cred cred; /* caller's identity */
	bool has_trigger;	/* clone_trigger_* was given */
	uint64_t trig_ts;	/* clone_trigger_boot_time_ns */
	char *trig_name;	/* clone_trigger_name (owned) */
	char *trig_producer;	/* clone_trigger_producer_name (owned, or NULL) */
	int32_t trig_uid;	/* clone_trigger_trusted_producer_uid */
	uint64_t trig_delay;	/* clone_trigger_delay_ms */
	uint64_t src_id;	/* the source session (looked up at each step) */
	uint64_t flags;		/* FlushFlags of the clone flushes */
	enum clone_phase phase;	/* where it is */
	unsigned pending;	/* worker tasks, flush groups, lane acks out */
	unsigned groups_left;	/* flush groups not done yet */
	uint64_t token;		/* of its lane retargets */
	struct clone_buf *bufs;	/* one per source buffer, config order */
	unsigned nbufs;		/* entries in bufs */
	struct clone_group grp[2]; /* [0] copied buffers, [1] moved ones */
	bool flush_failed;	/* a group's flush timed out or failed */
	bool holds_file;	/* ctl_file_hold on the source is ours */
	int in_fd;		/* the source's file, read side; -1 none */
	int out_fd;		/* the caller's file; -1 none */
	uint64_t file_len;	/* bytes of the source file to copy */
	const char *err;	/* the failure to answer, or NULL */
	int err_rc;		/* errno detail of err (0: none) */
	struct ctl_clone_job *next; /* ctl->clones, in arrival order */
};

/* Work for a control worker (ctl_work_submit). The worker touches only
 * this, never the job. */
struct clone_work {
	struct ctl_clone_job *job; /* for thread 0, once back */
	unsigned nlanes;	/* lanes of new storages */
	unsigned n;		/* entries in the arrays */
	uint64_t *sizes;	/* make storage i of this size (0: none) */
	enum svc_tbuf_policy *pol; /* and this policy */
	struct svc_tbuf **in;	/* copy storage i (NULL: none) */
	struct svc_tbuf **out;	/* what was made or copied */
	int in_fd, out_fd;	/* copy the file from in_fd to out_fd (-1: no) */
	uint64_t file_len;	/* its bytes */
	int rc;			/* 0 or the first -errno of the storages */
	int file_rc;		/* 0 or -errno of the file copy */
};

static void clone_step_done(struct ctl *ctl, struct ctl_clone_job *j);
static void clone_begin(struct ctl *ctl, struct ctl_clone_job *j);

/* --- selection --- */

/* The STARTED session with the highest bugreport_score > 0. */
static struct ctl_session *clone_bugreport_session(struct ctl *ctl)
{
	struct ctl_session *best = NULL;

	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		int32_t score = s->cfg->bugreport_score;

		if (s->state != SVC_SESSION_STARTED || score <= 0)
			continue;
		if (!best || score > best->cfg->bugreport_score)
			best = s;
	}
	return best;
}

/* The session the request selects, or NULL. */
static struct ctl_session *clone_select(
	struct ctl *ctl, const Perfetto__Protos__CloneSessionRequest *r)
{
	if (r->selector_case ==
	    PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_UNIQUE_SESSION_NAME) {
		for (struct ctl_session *s = ctl->sessions; s; s = s->next)
			if (s->state != SVC_SESSION_CLONED_READ_ONLY &&
			    s->cfg->unique_session_name && r->unique_session_name &&
			    !strcmp(s->cfg->unique_session_name,
				    r->unique_session_name))
				return s;
		return NULL;
	}
	if (r->selector_case !=
	    PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID)
		return NULL;
	if (r->session_id == CLONE_BUGREPORT_SESSION_ID)
		return clone_bugreport_session(ctl);
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		if (s->id == r->session_id)
			return s;
	return NULL;
}

/* The job's source if it is still alive, else NULL (freed sessions leave
 * ctl->sessions at once; their memory goes at the next loop turn). */
static struct ctl_session *clone_src(struct ctl *ctl,
				     const struct ctl_clone_job *j)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		if (s->id == j->src_id && !s->dead)
			return s;
	return NULL;
}

static void clone_fail(struct ipc_reply *reply, const char *err)
{
	Perfetto__Protos__CloneSessionResponse resp =
		PERFETTO__PROTOS__CLONE_SESSION_RESPONSE__INIT;

	resp.has_success = true;
	resp.success = false;
	resp.error = (char *)err;
	ipc_reply_send(reply, &resp.base, -1, false);
}

/* Records the first failure of a job; the rest of it is then skipped. */
static void clone_set_err(struct ctl_clone_job *j, const char *err, int rc)
{
	if (!j->err) {
		j->err = err;
		j->err_rc = rc < 0 ? -rc : rc;
	}
}

static unsigned clone_live_sessions(const struct ctl *ctl)
{
	unsigned n = 0;

	for (const struct ctl_session *s = ctl->sessions; s; s = s->next)
		n += !s->dead;
	return n;
}

/* --- worker tasks --- */

static void clone_work_free(struct clone_work *w)
{
	if (!w)
		return;
	free(w->sizes);
	free(w->pol);
	free(w->in);
	free(w->out);
	free(w);
}

/* A task of n storages; NULL when out of memory. */
static struct clone_work *clone_work_new(struct ctl *ctl,
					 struct ctl_clone_job *j, unsigned n)
{
	struct clone_work *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->job = j;
	w->nlanes = ctl->svc->opts.lanes;
	w->n = n;
	w->in_fd = w->out_fd = -1;
	w->sizes = calloc(n ? n : 1, sizeof(*w->sizes));
	w->pol = calloc(n ? n : 1, sizeof(*w->pol));
	w->in = calloc(n ? n : 1, sizeof(*w->in));
	w->out = calloc(n ? n : 1, sizeof(*w->out));
	if (!w->sizes || !w->pol || !w->in || !w->out) {
		clone_work_free(w);
		return NULL;
	}
	return w;
}

/* Copies bytes [0, len) of in to out at out's offset: copy_file_range, or
 * pread/write where the kernel or the files do not allow it. 0 or -errno;
 * a file found shorter than len is copied as it is. Worker (or thread 0
 * with --control 1). */
static int clone_copy_file(int in, int out, uint64_t len)
{
	off_t off = 0;
	uint8_t *buf = NULL;
	int rc = 0;

	while (rc == 0 && (uint64_t)off < len) {
		size_t want = len - (uint64_t)off > CLONE_COPY_STEP
				      ? CLONE_COPY_STEP
				      : (size_t)(len - (uint64_t)off);
		ssize_t n, w;

		if (!buf) {
			n = copy_file_range(in, &off, out, NULL, want, 0);
			if (n > 0)
				continue;
			if (n == 0)
				break;
			if (errno == EINTR)
				continue;
			if (errno != EXDEV && errno != EINVAL &&
			    errno != ENOSYS && errno != EOPNOTSUPP &&
			    errno != EBADF) {
				rc = -errno;
				break;
			}
			buf = malloc(CLONE_COPY_STEP);
			if (!buf)
				rc = -ENOMEM;
			continue;
		}
		n = pread(in, buf, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		for (ssize_t done = 0; done < n && rc == 0; done += w) {
			w = write(out, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				w = 0;
			else if (w <= 0)
				rc = w < 0 ? -errno : -EIO;
		}
		off += n;
	}
	free(buf);
	return rc;
}

/* Worker: makes the storages asked for, copies those asked for, then the
 * file. */
static void clone_work_run(struct ctl *ctl, void *arg)
{
	struct clone_work *w = arg;
	(void)ctl;

	for (unsigned i = 0; i < w->n && w->rc == 0; i++) {
		if (w->sizes[i])
			w->rc = svc_tbuf_create(w->sizes[i], w->pol[i],
						w->nlanes, SVC_TBUF_PREFAULT,
						&w->out[i]);
		else if (w->in[i])
			w->rc = svc_tbuf_clone(w->in[i], &w->out[i]);
	}
	if (w->in_fd >= 0)
		w->file_rc = clone_copy_file(w->in_fd, w->out_fd, w->file_len);
}

/* Worker: thread 0 cannot take the task back (shutdown wedged). */
static void clone_work_lost(struct ctl *ctl, void *arg)
{
	struct clone_work *w = arg;
	(void)ctl;

	for (unsigned i = 0; i < w->n; i++)
		svc_tbuf_destroy(w->out[i]);
	clone_work_free(w);
}

/* --- swapping storages --- */

/*
 * Points every producer writing into b (an instance of src on it) at tb,
 * counting the acks the job then waits for. Thread 0, right after the
 * swap of b->tb.
 */
static void clone_retarget(struct ctl *ctl, struct ctl_clone_job *j,
			   const struct ctl_session *src,
			   const struct svc_buf *b)
{
	for (unsigned i = 0; i < src->ninst; i++) {
		const struct ctl_inst *in = &src->inst[i];
		struct ctl_producer *p;
		bool dup = false;

		if (in->buffer_id != b->id)
			continue;
		for (unsigned k = 0; k < i; k++)
			dup |= src->inst[k].buffer_id == b->id &&
			       src->inst[k].producer_id == in->producer_id;
		p = dup ? NULL : ctl_producer_find(ctl, in->producer_id);
		if (p && lane_post_retarget(ctl->svc, p->lane, p->id, b->id,
					    b->tb, j->token) == 0)
			j->pending++;
	}
}

/*
 * Swaps the empty storages in: for the cleared buffers (transfer false,
 * §12 step 3) the old storage waits for the lanes' acks to be freed; for
 * the moved ones (transfer true, step 5) it becomes the clone's.
 */
static void clone_swap(struct ctl *ctl, struct ctl_clone_job *j,
		       const struct ctl_session *src, bool transfer)
{
	for (unsigned i = 0; i < j->nbufs; i++) {
		struct clone_buf *cb = &j->bufs[i];
		struct svc_tbuf **fresh = transfer ? &cb->fresh_transfer
						   : &cb->fresh_clear;

		if (!(transfer ? cb->transfer : cb->clear) || !*fresh)
			continue;
		*(transfer ? &cb->snap : &cb->old) = cb->src->tb;
		cb->src->tb = *fresh;
		*fresh = NULL;
		clone_retarget(ctl, j, src, cb->src);
	}
}

/* --- the clone session --- */

/* Frees a clone that never got linked (ctl_session_release's work). */
static void clone_session_drop(struct ctl *ctl, struct ctl_session *c)
{
	for (unsigned i = 0; i < c->nbufs; i++) {
		if (!c->bufs[i])
			continue;
		svc_bufid_free(&ctl->bufids, c->bufs[i]->id);
		svc_tbuf_destroy(c->bufs[i]->tb);
		free(c->bufs[i]);
	}
	if (c->seqids)
		svc_seqids_destroy(c->seqids);
	svc_pkts_destroy(&c->pkts);
	if (c->cfg)
		perfetto__protos__trace_config__free_unpacked(c->cfg, NULL);
	if (c->file_fd >= 0)
		close(c->file_fd);
	free(c->cfg_bytes);
	free(c->bufs);
	free(c);
}

/* The snapshots become the clone's buffers (config order): each adopted
 * one leaves the job. 0 or -errno. */
static int clone_buffers(struct ctl *ctl, struct ctl_clone_job *j,
			 struct ctl_session *c)
{
	c->bufs = calloc(j->nbufs ? j->nbufs : 1, sizeof(*c->bufs));
	if (!c->bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < j->nbufs; i++) {
		struct svc_buf *b;
		int id;

		if (!j->bufs[i].snap)
			return -EINVAL;
		b = calloc(1, sizeof(*b));
		id = b ? svc_bufid_alloc(&ctl->bufids) : -ENOMEM;
		if (id <= 0) {
			free(b);
			return id < 0 ? id : -ENOSPC;
		}
		b->id = (uint16_t)id;
		b->tb = j->bufs[i].snap;
		j->bufs[i].snap = NULL;
		b->svc = ctl->svc;
		atomic_init(&b->refs, 1);
		c->bufs[c->nbufs++] = b;
	}
	return 0;
}

/*
 * Builds the CLONED_READ_ONLY session from src (§12 step 6). Returns it
 * linked into ctl->sessions, or NULL with j->err set.
 */
static struct ctl_session *clone_make(struct ctl *ctl, struct ctl_session *src,
				      struct ctl_clone_job *j)
{
	struct ctl_session *c = calloc(1, sizeof(*c));

	if (!c)
		goto nomem;
	c->ctl = ctl;
	c->file_fd = -1;
	c->cfg_bytes = malloc(src->cfg_len ? src->cfg_len : 1);
	if (c->cfg_bytes)
		memcpy(c->cfg_bytes, src->cfg_bytes, src->cfg_len);
	c->cfg_len = src->cfg_len;
	c->cfg = c->cfg_bytes ? perfetto__protos__trace_config__unpack(
					NULL, c->cfg_len, c->cfg_bytes)
			      : NULL;
	if (!c->cfg || svc_seqids_create(&c->seqids) < 0 ||
	    svc_pkts_clone(&c->pkts, &src->pkts) < 0 ||
	    clone_buffers(ctl, j, c) < 0 ||
	    (j->has_trigger &&
	     svc_pkts_set_clone_trigger(&c->pkts, j->trig_ts, j->trig_name,
					j->trig_producer, j->trig_uid,
					j->trig_delay) < 0)) {
		clone_session_drop(ctl, c);
		goto nomem;
	}
	c->id = ctl->next_session_id++;
	c->lane = j->lane;
	c->conn_id = j->conn_id;
	c->uid = j->cred.uid;
	c->pid = j->cred.pid;
	c->state = SVC_SESSION_CLONED_READ_ONLY;
	c->duration_ms = src->duration_ms;
	c->trigger_mode = src->trigger_mode;
	c->triggered = src->triggered;
	c->started_once = src->started_once;
	c->all_started_sent = src->all_started_sent;
	c->flushes_requested = src->flushes_requested;
	c->flushes_succeeded = src->flushes_succeeded;
	c->flushes_failed = src->flushes_failed;
	/* §12 step 4: a failed clone flush is recorded, not fatal. */
	c->final_flush_outcome = j->flush_failed ? 2 : 0;
	svc_pkts_record_event(&c->pkts, SVC_EV_CLONE_STARTED, 0);
	for (unsigned i = 0; i < c->nbufs; i++)
		svc_pkts_record_event(&c->pkts, SVC_EV_BUFFER_CLONED, i);
	svc_pkts_record_event(&c->pkts, SVC_EV_TRACING_DISABLED, 0);
	c->next = ctl->sessions;
	ctl->sessions = c;
	return c;
nomem:
	clone_set_err(j, CLONE_ERR_NOMEM, 0);
	return NULL;
}

/* Unlinks and frees a linked clone nobody saw yet. */
static void clone_unlink_drop(struct ctl *ctl, struct ctl_session *c)
{
	for (struct ctl_session **pp = &ctl->sessions; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	clone_session_drop(ctl, c);
}

/* §12 step 6's end: the whole clone after the source file's copy in the
 * caller's fd. 0, or -errno with the clone gone. */
static int clone_write_out(struct ctl *ctl, struct ctl_session *src,
			   struct ctl_clone_job *j, struct ctl_session *c)
{
	int rc;

	c->file_fd = j->out_fd;
	j->out_fd = -1;
	c->file_bytes = j->file_len;
	c->max_file_bytes = src->max_file_bytes;
	rc = ctl_write_file(ctl, c);
	if (c->file_fd >= 0)
		close(c->file_fd);
	c->file_fd = -1;
	if (rc < 0) {
		clone_set_err(j, CLONE_ERR_FILE_WRITE, rc);
		clone_unlink_drop(ctl, c);
	}
	return rc < 0 ? rc : 0;
}

/* Answers the caller: the clone made from src, or the job's error. */
static void clone_answer(struct ctl *ctl, struct ctl_session *src,
			 struct ctl_clone_job *j)
{
	Perfetto__Protos__CloneSessionResponse resp =
		PERFETTO__PROTOS__CLONE_SESSION_RESPONSE__INIT;
	struct ctl_session *c = NULL;
	char msg[256];

	if (!j->err && !src)
		clone_set_err(j, CLONE_ERR_ENDED, 0);
	if (!j->err && ctl_session_of(ctl, j->lane, j->conn_id))
		clone_set_err(j, CLONE_ERR_ATTACHED, 0);
	if (!j->err &&
	    clone_live_sessions(ctl) >= SVC_MAX_CONCURRENT_TRACING_SESSIONS) {
		snprintf(msg, sizeof(msg), CLONE_ERR_TOO_MANY,
			 clone_live_sessions(ctl));
		clone_fail(&j->reply, msg);
		return;
	}
	if (!j->err)
		c = clone_make(ctl, src, j);
	if (c && j->out_fd >= 0 && clone_write_out(ctl, src, j, c) < 0)
		c = NULL;
	if (!c) {
		if (j->err_rc)
			snprintf(msg, sizeof(msg), "%s: %s", j->err,
				 strerror(j->err_rc));
		else
			snprintf(msg, sizeof(msg), "%s", j->err);
		spn_log_warn("ctl", "clone of session %llu failed: %s",
			     (unsigned long long)j->src_id, msg);
		clone_fail(&j->reply, msg);
		return;
	}
	spn_log_info("ctl", "session %llu cloned into session %llu "
		     "(%u buffers%s)", (unsigned long long)j->src_id,
		     (unsigned long long)c->id, c->nbufs,
		     c->cfg->write_into_file ? ", written into the caller's file"
					     : "");
	resp.has_success = true;
	resp.success = true;
	resp.has_uuid_msb = true;
	resp.uuid_msb = c->pkts.uuid_msb;
	resp.has_uuid_lsb = true;
	resp.uuid_lsb = c->pkts.uuid_lsb;
	if (c->cfg->write_into_file) {
		resp.has_was_write_into_file = true;
		resp.was_write_into_file = true;
	}
	ipc_reply_send(&j->reply, &resp.base, -1, false);
}

/* --- the job --- */

/* Frees a job and everything it still owns; the source buffers' references
 * go through ctl_buf_put (thread 0, or ctl_destroy). */
static void clone_job_free(struct ctl *ctl, struct ctl_clone_job *j)
{
	for (struct ctl_clone_job **pp = &ctl->clones; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	for (unsigned i = 0; i < j->nbufs; i++) {
		struct clone_buf *cb = &j->bufs[i];

		svc_tbuf_destroy(cb->fresh_clear);
		svc_tbuf_destroy(cb->fresh_transfer);
		svc_tbuf_destroy(cb->old);
		svc_tbuf_destroy(cb->snap);
		if (cb->src)
			ctl_buf_put(ctl, cb->src);
	}
	if (j->in_fd >= 0)
		close(j->in_fd);
	if (j->out_fd >= 0)
		close(j->out_fd);
	free(j->grp[0].ids);
	free(j->grp[1].ids);
	free(j->bufs);
	free(j->trig_name);
	free(j->trig_producer);
	free(j);
}

/* Starts the oldest clone waiting for source src_id, if any. */
static void clone_next(struct ctl *ctl, uint64_t src_id)
{
	for (struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		if (j->src_id == src_id && j->phase == CLONE_QUEUED) {
			clone_begin(ctl, j);
			return;
		}
}

/* Every snapshot is taken and every lane let go: answer, clean up. */
static void clone_finish(struct ctl *ctl, struct ctl_clone_job *j)
{
	struct ctl_session *src = clone_src(ctl, j);
	uint64_t src_id = j->src_id;

	/* No lane writes into the moved storages any more. */
	for (unsigned i = 0; i < j->nbufs; i++)
		if (j->bufs[i].transfer && j->bufs[i].snap)
			svc_tbuf_seal(j->bufs[i].snap);
	if (j->conn_id)
		clone_answer(ctl, src, j);
	/* Last: the release may run a final drain and free the source. */
	if (src && j->holds_file)
		ctl_file_release(ctl, src);
	clone_job_free(ctl, j);
	clone_next(ctl, src_id);
}

static void clone_finish_cb(struct ipc_loop *loop, void *arg)
{
	struct ctl_clone_job *j = arg;
	(void)loop;

	clone_finish(j->ctl, j);
}

/*
 * One outstanding part of j is over; the job ends when nothing is left, at
 * the next turn of the loop: the last part often ends deep inside a
 * session's own code (a flush ending, a session being freed), and the end
 * of a job may free the source or start the next job on it.
 */
static void clone_step_done(struct ctl *ctl, struct ctl_clone_job *j)
{
	if (--j->pending || j->phase != CLONE_SNAPSHOT)
		return;
	if (ipc_loop_timer_add(ctl->loop, 0, clone_finish_cb, j, NULL) < 0)
		clone_finish(ctl, j);
}

/* Thread 0: a worker's copies of the copy group are back. */
static void clone_copied(struct ctl *ctl, void *arg)
{
	struct clone_work *w = arg;
	struct ctl_clone_job *j = w->job;

	for (unsigned i = 0; i < w->n; i++)
		if (w->in[i])
			j->bufs[i].snap = w->out[i];
	if (w->rc < 0)
		clone_set_err(j, CLONE_ERR_NOMEM, w->rc);
	clone_work_free(w);
	clone_step_done(ctl, j);
}

/* §12 step 5 for the copy group: the worker copies its buffers. */
static void clone_copy_group(struct ctl *ctl, struct ctl_clone_job *j)
{
	struct clone_work *w = clone_work_new(ctl, j, j->nbufs);

	if (!w) {
		clone_set_err(j, CLONE_ERR_NOMEM, 0);
		return;
	}
	/* The job's references keep these storages alive, and no other job
	 * of this source swaps them meanwhile (jobs run one at a time). */
	for (unsigned i = 0; i < j->nbufs; i++)
		if (!j->bufs[i].transfer)
			w->in[i] = j->bufs[i].src->tb;
	j->pending++;
	ctl_work_submit(ctl, j->src_id, clone_work_run, clone_copied,
			clone_work_lost, w);
}

/* A flush group ended (outcome as ctl_flush_done_fn). */
static void clone_group_flushed(struct ctl *ctl, struct ctl_session *s,
				int outcome, void *arg)
{
	struct clone_group *g = arg;
	struct ctl_clone_job *j = g->job;

	if (outcome == 0)
		j->flush_failed = true;
	/* j->pending holds a guard while the groups are being started. */
	j->pending++;
	if (--j->groups_left == 0)
		j->phase = CLONE_SNAPSHOT;
	s = outcome < 0 ? NULL : clone_src(ctl, j);
	if (!s)
		clone_set_err(j, CLONE_ERR_ENDED, 0);
	else if (!j->err && g->transfer)
		clone_swap(ctl, j, s, true);
	else if (!j->err)
		clone_copy_group(ctl, j);
	clone_step_done(ctl, j);	/* the guard */
	clone_step_done(ctl, j);	/* the group */
}

/* §12 step 4: the two flush groups (only those with buffers). */
static void clone_flush(struct ctl *ctl, struct ctl_clone_job *j,
			struct ctl_session *src)
{
	bool started = src->state == SVC_SESSION_STARTED;

	j->phase = CLONE_FLUSHING;
	j->pending++;	/* guard: a group may end before this returns */
	for (int g = 0; g < 2; g++)
		j->groups_left += j->grp[g].n > 0;
	if (!j->groups_left)
		j->phase = CLONE_SNAPSHOT;
	for (int g = 0; g < 2; g++) {
		if (!j->grp[g].n)
			continue;
		j->pending++;
		/* Only a STARTED session has producers to flush. */
		if (started && clone_src(ctl, j))
			ctl_flush_then(ctl, src, j->flags, j->grp[g].ids,
				       j->grp[g].n, clone_group_flushed,
				       &j->grp[g]);
		else
			clone_group_flushed(ctl, src, 1, &j->grp[g]);
	}
	clone_step_done(ctl, j);
}

/* Thread 0: the worker made the empty storages and copied the file. */
static void clone_prepared(struct ctl *ctl, void *arg)
{
	struct clone_work *w = arg;
	struct ctl_clone_job *j = w->job;
	struct ctl_session *src = clone_src(ctl, j);

	for (unsigned i = 0; w->n && i < j->nbufs; i++) {
		j->bufs[i].fresh_clear = w->out[2 * i];
		j->bufs[i].fresh_transfer = w->out[2 * i + 1];
	}
	if (w->rc < 0)
		clone_set_err(j, CLONE_ERR_NOMEM, w->rc);
	if (w->file_rc < 0)
		clone_set_err(j, CLONE_ERR_FILE_COPY, w->file_rc);
	clone_work_free(w);
	if (!src)
		clone_set_err(j, CLONE_ERR_ENDED, 0);
	/* The preparation's count in j->pending is held until the end. */
	if (j->err || !j->conn_id) {
		j->phase = CLONE_SNAPSHOT;
	} else {
		clone_swap(ctl, j, src, false);
		clone_flush(ctl, j, src);
	}
	clone_step_done(ctl, j);
}

/*
 * §12 step 2 for a write_into_file source: the caller's fd, the source
 * file drained and opened for reading, its length, and the hold on its
 * drains. Returns the source (it may have been freed by the drain: NULL)
 * with j->err set on failure.
 */
static struct ctl_session *clone_file_start(struct ctl *ctl,
					    struct ctl_clone_job *j,
					    struct ctl_session *src)
{
	struct stat st;
	char path[64];
	int mode;

	if (src->file_fd < 0) {
		clone_set_err(j, CLONE_ERR_FILE_CLOSED, 0);
		return src;
	}
	/* A read side of the file that outlives the source's own fd. */
	mode = fcntl(src->file_fd, F_GETFL);
	if (fstat(src->file_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		clone_set_err(j, CLONE_ERR_FILE_READ, EINVAL);
		return src;
	}
	if (mode >= 0 && (mode & O_ACCMODE) != O_WRONLY) {
		j->in_fd = fcntl(src->file_fd, F_DUPFD_CLOEXEC, 0);
	} else {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", src->file_fd);
		j->in_fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (j->in_fd < 0) {
		clone_set_err(j, CLONE_ERR_FILE_READ, errno);
		return src;
	}
	/* Everything read so far goes into the file now; from here on the
	 * rest goes into the clone. */
	if (src->started_once) {
		ctl_file_drain(ctl, src);
		src = clone_src(ctl, j);
		if (!src) {
			clone_set_err(j, CLONE_ERR_ENDED, 0);
			return NULL;
		}
	}
	if (fstat(j->in_fd, &st) < 0) {
		clone_set_err(j, CLONE_ERR_FILE_READ, errno);
		return src;
	}
	j->file_len = (uint64_t)st.st_size;
	ctl_file_hold(src);
	j->holds_file = true;
	return src;
}

/* The job's view of src's buffers and the two groups. 0, -ENOMEM, or
 * -EINVAL for a buffer missing. */
static int clone_plan(struct ctl_clone_job *j, const struct ctl_session *src)
{
	j->bufs = calloc(src->nbufs ? src->nbufs : 1, sizeof(*j->bufs));
	j->grp[0].ids = calloc(src->nbufs ? src->nbufs : 1, sizeof(uint16_t));
	j->grp[1].ids = calloc(src->nbufs ? src->nbufs : 1, sizeof(uint16_t));
	if (!j->bufs || !j->grp[0].ids || !j->grp[1].ids)
		return -ENOMEM;
	for (unsigned i = 0; i < src->nbufs; i++) {
		const Perfetto__Protos__TraceConfig__BufferConfig *bc =
			i < src->cfg->n_buffers ? src->cfg->buffers[i] : NULL;
		struct clone_buf *cb = &j->bufs[i];
		struct svc_tbuf_stats st;
		struct clone_group *g;

		if (!src->bufs[i])
			return -EINVAL;
		cb->src = src->bufs[i];
		svc_buf_ref(cb->src);
		j->nbufs = i + 1;
		svc_tbuf_get_stats(cb->src->tb, &st);
		cb->transfer = bc && bc->transfer_on_clone;
		cb->clear = bc && bc->clear_before_clone &&
			    st.chunks_written > 0;
		g = &j->grp[cb->transfer];
		g->ids[g->n++] = cb->src->id;
	}
	return 0;
}

/* Thread 0: the job's turn on its source came. */
static void clone_begin(struct ctl *ctl, struct ctl_clone_job *j)
{
	struct ctl_session *src = clone_src(ctl, j);
	struct clone_work *w;
	bool work = false;
	int rc;

	j->phase = CLONE_PREPARING;
	j->pending = 1;	/* the preparation */
	j->token = ctl->next_token++;
	if (!j->conn_id) {
		/* The caller left while queued. */
	} else if (!src) {
		clone_set_err(j, CLONE_ERR_ENDED, 0);
	} else if (src->allocating) {
		clone_set_err(j, CLONE_ERR_NOT_READY, 0);
	} else if ((rc = clone_plan(j, src)) < 0) {
		clone_set_err(j, rc == -ENOMEM ? CLONE_ERR_NOMEM
					       : CLONE_ERR_NOT_READY, 0);
	} else if (src->cfg->write_into_file) {
		src = clone_file_start(ctl, j, src);
		work = true;
	}
	for (unsigned i = 0; i < j->nbufs; i++)
		work |= j->bufs[i].clear || j->bufs[i].transfer;
	/* Nothing for a worker (or no point going on): on at once, with an
	 * empty task. */
	work = work && !j->err && j->conn_id;
	w = clone_work_new(ctl, j, work ? 2 * j->nbufs : 0);
	if (!w) {
		clone_set_err(j, CLONE_ERR_NOMEM, 0);
		j->phase = CLONE_SNAPSHOT;
		clone_step_done(ctl, j);
		return;
	}
	if (!work) {
		clone_prepared(ctl, w);
		return;
	}
	for (unsigned i = 0; i < j->nbufs; i++) {
		const struct clone_buf *cb = &j->bufs[i];
		struct svc_tbuf_stats st;
		enum svc_tbuf_policy pol =
			ctl_buffer_policy(src->cfg->buffers[i]);

		svc_tbuf_get_stats(cb->src->tb, &st);
		if (cb->clear) {
			w->sizes[2 * i] = st.buffer_size;
			w->pol[2 * i] = pol;
		}
		if (cb->transfer) {
			w->sizes[2 * i + 1] = st.buffer_size;
			w->pol[2 * i + 1] = pol;
		}
	}
	w->in_fd = j->in_fd;
	w->out_fd = j->out_fd;
	w->file_len = j->file_len;
	ctl_work_submit(ctl, j->src_id, clone_work_run, clone_prepared,
			clone_work_lost, w);
}

/* A job for request r from m's connection (its fd taken); NULL when out
 * of memory. */
static struct ctl_clone_job *clone_job_new(
	struct ctl *ctl, struct ctl_msg *m, const struct ctl_session *src,
	const Perfetto__Protos__CloneSessionRequest *r)
{
	struct ctl_clone_job *j = calloc(1, sizeof(*j));
	struct ctl_clone_job **pp = &ctl->clones;

	if (!j)
		return NULL;
	j->ctl = ctl;
	j->reply = m->reply;
	j->lane = m->lane;
	j->conn_id = m->conn_id;
	j->cred = m->cred;
	j->src_id = src->id;
	j->in_fd = j->out_fd = -1;
	j->grp[0].job = j->grp[1].job = j;
	j->grp[1].transfer = true;
	j->flags = CLONE_FLUSH_FLAGS;
	if (r->for_bugreport ||
	    (r->selector_case ==
		     PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID &&
	     r->session_id == CLONE_BUGREPORT_SESSION_ID))
		j->flags |= SPN_FLUSH_CLONE_TARGET_BUGREPORT;
	if (r->clone_trigger_name && r->clone_trigger_name[0]) {
		j->has_trigger = true;
		j->trig_name = strdup(r->clone_trigger_name);
		j->trig_producer = r->clone_trigger_producer_name
					   ? strdup(r->clone_trigger_producer_name)
					   : NULL;
		j->trig_uid = r->clone_trigger_trusted_producer_uid;
		j->trig_ts = r->clone_trigger_boot_time_ns;
		j->trig_delay = r->clone_trigger_delay_ms;
		if (!j->trig_name || (r->clone_trigger_producer_name &&
				      !j->trig_producer)) {
			free(j->trig_name);
			free(j->trig_producer);
			free(j);
			return NULL;
		}
	}
	/* The fd matters only for a source that writes into a file. */
	if (src->cfg->write_into_file) {
		j->out_fd = m->fd;
		m->fd = -1;
	}
	while (*pp)
		pp = &(*pp)->next;
	*pp = j;
	return j;
}

/* Whether a clone of source src_id is under way. */
static bool clone_busy(const struct ctl *ctl, uint64_t src_id)
{
	for (const struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		if (j->src_id == src_id && j->phase != CLONE_QUEUED)
			return true;
	return false;
}

void ctl_clone_session(struct ctl *ctl, struct ctl_session *cur,
		       struct ctl_msg *m)
{
	Perfetto__Protos__CloneSessionRequest *r =
		perfetto__protos__clone_session_request__unpack(NULL, m->len,
								m->bytes);
	struct ctl_clone_job *j;
	struct ctl_session *src;

	if (!r) {
		ipc_reply_reject(&m->reply);
		return;
	}
	src = clone_select(ctl, r);
	if (!src || src->dead) {
		clone_fail(&m->reply, CLONE_ERR_NOT_FOUND);
	} else if (m->cred.uid != 0 && m->cred.uid != src->uid) {
		clone_fail(&m->reply, CLONE_ERR_UID);
	} else if (cur) {
		clone_fail(&m->reply, CLONE_ERR_ATTACHED);
	} else if (src->cfg->write_into_file && m->fd < 0) {
		clone_fail(&m->reply, CLONE_ERR_NO_FD);
	} else if (src->allocating) {
		clone_fail(&m->reply, CLONE_ERR_NOT_READY);
	} else if (!(j = clone_job_new(ctl, m, src, r))) {
		clone_fail(&m->reply, CLONE_ERR_NOMEM);
	} else if (!clone_busy(ctl, j->src_id)) {
		clone_begin(ctl, j);
	}
	perfetto__protos__clone_session_request__free_unpacked(r, NULL);
}

void ctl_clone_on_retargeted(struct ctl *ctl, uint64_t token)
{
	for (struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		if (j->token == token && j->phase != CLONE_QUEUED) {
			clone_step_done(ctl, j);
			return;
		}
}

void ctl_clone_conn_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id)
{
	for (struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		if (j->lane == lane && j->conn_id == conn_id)
			j->conn_id = 0;
}

void ctl_clone_lanes_gone(struct ctl *ctl)
{
	for (struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		j->conn_id = 0;
}

void ctl_clone_destroy(struct ctl *ctl)
{
	/* Jobs left wait for what can no longer come (a flush of a session
	 * the shutdown left, an ack of a lost message): nothing runs any
	 * more, so their storages go with them. */
	while (ctl->clones)
		clone_job_free(ctl, ctl->clones);
}
