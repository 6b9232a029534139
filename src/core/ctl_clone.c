// SPDX-License-Identifier: Apache-2.0
// CloneSession on the control plane (spec/consumer-port.md §12): selects
// the source session and checks the caller may clone it, then refuses the
// clone itself, because the trace buffers offer no snapshot of their
// contents yet (a read-only copy needs a tbuf API that copies segments and
// read progress without consuming them; reading the source would take its
// data away from its own consumer). The refusal is an answer, not a
// rejection: CloneSessionResponse{success:false, error}, as the reference
// reports every clone failure, and QueryCapabilities does not announce
// has_clone_session.
//
// Control thread only.
#include <stdint.h>
#include <string.h>

#include "core/ctl_int.h"
#include "ipc/log.h"

/* session_id selecting the bugreport session (§12). */
#define CLONE_BUGREPORT_SESSION_ID UINT64_MAX

#define CLONE_ERR_NOT_FOUND "Tracing session not found"
#define CLONE_ERR_UID "Not allowed to clone a session from another UID"
#define CLONE_ERR_UNSUPPORTED \
	"CloneSession is not supported by this service: trace buffers " \
	"cannot be snapshotted"

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

void ctl_clone_session(struct ctl *ctl, struct ctl_session *cur,
		       struct ctl_msg *m)
{
	Perfetto__Protos__CloneSessionRequest *r =
		perfetto__protos__clone_session_request__unpack(NULL, m->len,
								m->bytes);
	struct ctl_session *src;
	(void)cur;

	if (!r) {
		ipc_reply_reject(&m->reply);
		return;
	}
	src = clone_select(ctl, r);
	if (!src || src->dead) {
		clone_fail(&m->reply, CLONE_ERR_NOT_FOUND);
	} else if (m->cred.uid != 0 && m->cred.uid != src->uid) {
		clone_fail(&m->reply, CLONE_ERR_UID);
	} else {
		spn_log_warn("ctl", "CloneSession of session %llu refused: not "
			     "supported", (unsigned long long)src->id);
		clone_fail(&m->reply, CLONE_ERR_UNSUPPORTED);
	}
	perfetto__protos__clone_session_request__free_unpacked(r, NULL);
}
