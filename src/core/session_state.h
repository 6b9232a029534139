// SPDX-License-Identifier: Apache-2.0
// The states of a tracing session (spec/consumer-port.md §2.3) and their
// names as QueryServiceState reports them.
#ifndef SPN_CORE_SESSION_STATE_H
#define SPN_CORE_SESSION_STATE_H

/*
 * Values are those of ConcurrentSessionEvent.state (trace-config.md §4.3), so
 * a state can be written into that packet as is; 0 is not a state.
 */
enum svc_session_state {
	SVC_SESSION_DISABLED = 1,	/* not recording (final) */
	SVC_SESSION_CONFIGURED = 2,	/* buffers and data sources set up, not started */
	SVC_SESSION_STARTED = 3,	/* recording */
	SVC_SESSION_STOP_WAIT = 4,	/* DISABLING_WAITING_STOP_ACKS */
	SVC_SESSION_CLONED_READ_ONLY = 5, /* result of CloneSession */
};

/* TracingServiceState.TracingSession.state text of `s`; "UNKNOWN" for a
 * value outside the enum. */
static inline const char *svc_session_state_name(enum svc_session_state s)
{
	switch (s) {
	case SVC_SESSION_DISABLED:
		return "DISABLED";
	case SVC_SESSION_CONFIGURED:
		return "CONFIGURED";
	case SVC_SESSION_STARTED:
		return "STARTED";
	case SVC_SESSION_STOP_WAIT:
		return "STOP_WAIT";
	case SVC_SESSION_CLONED_READ_ONLY:
		return "CLONED_READ_ONLY";
	}
	return "UNKNOWN";
}

#endif
