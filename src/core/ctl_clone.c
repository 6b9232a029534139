// SPDX-License-Identifier: Apache-2.0
// CloneSession on the control plane (spec/consumer-port.md §12): selects the
// source session and checks the caller may clone it, flushes the source,
// then snapshots its buffers (svc_tbuf_clone: read-only copies that leave
// the source's data to its own consumer) into a new CLONED_READ_ONLY
// session attached to the calling connection, which reads it with
// ReadBuffers and frees it with FreeBuffers. Every failure is an answer,
// CloneSessionResponse{success:false, error}, as in the reference.
//
// Differences from the reference, all refusals or simplifications:
//  - a source that writes into a file is refused (the file copy of step 2
//    is not implemented), so was_write_into_file is never set;
//  - transfer_on_clone buffers are copied like the others (the source
//    keeps its data) and clear_before_clone is not acted on: both are
//    newer fields an older service ignores; the flush is one group;
//  - skip_trace_filter is moot: spindled applies no trace_filter;
//  - a clone is refused when SVC_MAX_CONCURRENT_TRACING_SESSIONS live
//    sessions exist (clones count toward that limit, constants.md).
//
// Control thread only. A request waiting for its flush is a job owned by
// that flush (its done callback runs exactly once: flush over, or source
// freed); the list in ctl->clones only lets a closing connection disown
// its jobs.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl_int.h"
#include "core/limits.h"
#include "ipc/log.h"

/* session_id selecting the bugreport session (§12). */
#define CLONE_BUGREPORT_SESSION_ID UINT64_MAX

/* FlushFlags of the clone flush (producer-port.md §6.3): initiator traced,
 * reason trace clone; target bugreport when asked. */
#define CLONE_FLUSH_FLAGS 0x13u
#define CLONE_FLUSH_BUGREPORT 0x100u

#define CLONE_ERR_NOT_FOUND "Tracing session not found"
#define CLONE_ERR_UID "Not allowed to clone a session from another UID"
#define CLONE_ERR_ENDED "Original session ended"
#define CLONE_ERR_ATTACHED \
	"The consumer is already attached to another tracing session"
#define CLONE_ERR_FILE \
	"Cloning a session that writes into a file is not supported by " \
	"this service"
#define CLONE_ERR_NOT_READY "The session's buffers are not allocated yet"
#define CLONE_ERR_NOMEM "Out of memory while cloning the session"
#define CLONE_ERR_TOO_MANY "Too many concurrent tracing sesions (%u)"

/* A CloneSession call waiting for the source's flush. */
struct ctl_clone_job {
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
	struct ctl_clone_job *next; /* ctl->clones */
};

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

static void clone_fail(struct ipc_reply *reply, const char *err)
{
	Perfetto__Protos__CloneSessionResponse resp =
		PERFETTO__PROTOS__CLONE_SESSION_RESPONSE__INIT;

	resp.has_success = true;
	resp.success = false;
	resp.error = (char *)err;
	ipc_reply_send(reply, &resp.base, -1, false);
}

static void clone_job_free(struct ctl *ctl, struct ctl_clone_job *j)
{
	for (struct ctl_clone_job **pp = &ctl->clones; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	free(j->trig_name);
	free(j->trig_producer);
	free(j);
}

static unsigned clone_live_sessions(const struct ctl *ctl)
{
	unsigned n = 0;

	for (const struct ctl_session *s = ctl->sessions; s; s = s->next)
		n += !s->dead;
	return n;
}

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
	free(c->cfg_bytes);
	free(c->bufs);
	free(c);
}

/* Snapshots src's buffers into c->bufs (config order). 0 or -errno. */
static int clone_buffers(struct ctl *ctl, struct ctl_session *src,
			 struct ctl_session *c)
{
	c->bufs = calloc(src->nbufs ? src->nbufs : 1, sizeof(*c->bufs));
	if (!c->bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < src->nbufs; i++) {
		struct svc_buf *b;
		int id, rc;

		if (!src->bufs[i])
			return -EINVAL;
		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		rc = svc_tbuf_clone(src->bufs[i]->tb, &b->tb);
		id = rc < 0 ? rc : svc_bufid_alloc(&ctl->bufids);
		if (id <= 0) {
			svc_tbuf_destroy(b->tb);
			free(b);
			return id < 0 ? id : -ENOSPC;
		}
		b->id = (uint16_t)id;
		b->svc = ctl->svc;
		atomic_init(&b->refs, 1);
		c->bufs[c->nbufs++] = b;
	}
	return 0;
}

/*
 * Builds the CLONED_READ_ONLY session from src (§12 step 6). Returns it
 * linked into ctl->sessions, or NULL with *err set.
 */
static struct ctl_session *clone_make(struct ctl *ctl, struct ctl_session *src,
				      struct ctl_clone_job *j, bool flush_ok,
				      const char **err)
{
	struct ctl_session *c = calloc(1, sizeof(*c));

	*err = CLONE_ERR_NOMEM;
	if (!c)
		return NULL;
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
	    svc_pkts_clone(&c->pkts, &src->pkts) < 0) {
		clone_session_drop(ctl, c);
		return NULL;
	}
	if (clone_buffers(ctl, src, c) < 0) {
		clone_session_drop(ctl, c);
		return NULL;
	}
	if (j->has_trigger &&
	    svc_pkts_set_clone_trigger(&c->pkts, j->trig_ts, j->trig_name,
				       j->trig_producer, j->trig_uid,
				       j->trig_delay) < 0) {
		clone_session_drop(ctl, c);
		return NULL;
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
	c->final_flush_outcome = flush_ok ? 0 : 2;
	svc_pkts_record_event(&c->pkts, SVC_EV_CLONE_STARTED, 0);
	for (unsigned i = 0; i < c->nbufs; i++)
		svc_pkts_record_event(&c->pkts, SVC_EV_BUFFER_CLONED, i);
	svc_pkts_record_event(&c->pkts, SVC_EV_TRACING_DISABLED, 0);
	c->next = ctl->sessions;
	ctl->sessions = c;
	return c;
}

/* The source's flush ended (or the source went): finish the clone. */
static void clone_flushed(struct ctl *ctl, struct ctl_session *src,
			  int outcome, void *arg)
{
	Perfetto__Protos__CloneSessionResponse resp =
		PERFETTO__PROTOS__CLONE_SESSION_RESPONSE__INIT;
	struct ctl_clone_job *j = arg;
	struct ctl_session *c;
	const char *err = NULL;
	char msg[96];

	if (!j->conn_id) {
		/* The caller left: nobody to attach the clone to. */
	} else if (outcome < 0 || src->dead) {
		clone_fail(&j->reply, CLONE_ERR_ENDED);
	} else if (ctl_session_of(ctl, j->lane, j->conn_id)) {
		clone_fail(&j->reply, CLONE_ERR_ATTACHED);
	} else if (clone_live_sessions(ctl) >=
		   SVC_MAX_CONCURRENT_TRACING_SESSIONS) {
		snprintf(msg, sizeof(msg), CLONE_ERR_TOO_MANY,
			 clone_live_sessions(ctl));
		clone_fail(&j->reply, msg);
	} else if (!(c = clone_make(ctl, src, j, outcome > 0, &err))) {
		spn_log_warn("ctl", "clone of session %llu failed: %s",
			     (unsigned long long)src->id, err);
		clone_fail(&j->reply, err);
	} else {
		spn_log_info("ctl", "session %llu cloned into session %llu "
			     "(%u buffers)", (unsigned long long)src->id,
			     (unsigned long long)c->id, c->nbufs);
		resp.has_success = true;
		resp.success = true;
		resp.has_uuid_msb = true;
		resp.uuid_msb = c->pkts.uuid_msb;
		resp.has_uuid_lsb = true;
		resp.uuid_lsb = c->pkts.uuid_lsb;
		ipc_reply_send(&j->reply, &resp.base, -1, false);
	}
	clone_job_free(ctl, j);
}

/* A job for request r from m's connection; NULL when out of memory. */
static struct ctl_clone_job *clone_job_new(
	struct ctl *ctl, struct ctl_msg *m,
	const Perfetto__Protos__CloneSessionRequest *r)
{
	struct ctl_clone_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->reply = m->reply;
	j->lane = m->lane;
	j->conn_id = m->conn_id;
	j->cred = m->cred;
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
	j->next = ctl->clones;
	ctl->clones = j;
	return j;
}

void ctl_clone_session(struct ctl *ctl, struct ctl_session *cur,
		       struct ctl_msg *m)
{
	Perfetto__Protos__CloneSessionRequest *r =
		perfetto__protos__clone_session_request__unpack(NULL, m->len,
								m->bytes);
	struct ctl_clone_job *j;
	struct ctl_session *src;
	uint64_t flags = CLONE_FLUSH_FLAGS;

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
	} else if (src->cfg->write_into_file) {
		clone_fail(&m->reply, CLONE_ERR_FILE);
	} else if (src->allocating) {
		clone_fail(&m->reply, CLONE_ERR_NOT_READY);
	} else if (!(j = clone_job_new(ctl, m, r))) {
		clone_fail(&m->reply, CLONE_ERR_NOMEM);
	} else {
		if (r->for_bugreport ||
		    (r->selector_case ==
			     PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID &&
		     r->session_id == CLONE_BUGREPORT_SESSION_ID))
			flags |= CLONE_FLUSH_BUGREPORT;
		/* Only a STARTED session has producers to flush (§5). */
		if (src->state == SVC_SESSION_STARTED)
			ctl_flush_then(ctl, src, flags, clone_flushed, j);
		else
			clone_flushed(ctl, src, 1, j);
	}
	perfetto__protos__clone_session_request__free_unpacked(r, NULL);
}

void ctl_clone_conn_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id)
{
	for (struct ctl_clone_job *j = ctl->clones; j; j = j->next)
		if (j->lane == lane && j->conn_id == conn_id)
			j->conn_id = 0;
}
