// SPDX-License-Identifier: Apache-2.0
// Named limits of the service's sessions (spec/constants.md §3-§4 and §8),
// with the reference values; guardrails.c is their main user.
#ifndef SPN_CORE_LIMITS_H
#define SPN_CORE_LIMITS_H

/* Longest duration_ms / trigger_timeout_ms (7 days). */
#define SVC_MAX_TRACING_DURATION_MS 604800000u
/* Same, when TraceConfig.enable_extra_guardrails is set (24 h). */
#define SVC_GUARDRAILS_MAX_TRACING_DURATION_MS 86400000u
/* Largest sum of buffers[].size_kb with extra guardrails (128 MiB); raised,
 * never lowered, by guardrail_overrides.max_tracing_buffer_size_kb. */
#define SVC_GUARDRAILS_MAX_TRACING_BUFFER_SIZE_KB 131072u
/* With extra guardrails, each buffers[].size_kb must be a multiple of this. */
#define SVC_GUARDRAILS_BUFFER_SIZE_KB_MULTIPLE 4u
/* Buffers one session (one TraceConfig) may declare. */
#define SVC_MAX_BUFFERS_PER_CONSUMER 128u
/* Sessions alive at once, all consumers together (clones included). */
#define SVC_MAX_CONCURRENT_TRACING_SESSIONS 15u
/* Sessions alive at once per consumer uid. */
#define SVC_MAX_CONCURRENT_TRACING_SESSIONS_PER_UID 5u
/* Same, for the Android statsd uid (only with Android uid rules). */
#define SVC_MAX_CONCURRENT_TRACING_SESSIONS_FOR_STATSD_UID 10u
/* Minimum seconds between two guardrailed sessions of one
 * unique_session_name (an empty name counts as a name). */
#define SVC_MIN_SECONDS_BETWEEN_TRACES_GUARDRAIL 300
/* A buffer's size_kb * 1024 must be > 0 and at most this (fits uint32). */
#define SVC_MAX_TRACE_BUFFER_SIZE_BYTES 4294967295ull
/* Flush requests one session may have pending; more fail at once. */
#define SVC_MAX_PENDING_FLUSHES_PER_SESSION 1000u

/* BufferID: global across sessions, 1..65535, 0 never used. */
#define SVC_MAX_TRACE_BUFFER_ID 65535u

/* Android uids with special handling (constants.md §8). */
#define SVC_AID_ROOT 0u		/* may request exclusive sessions */
#define SVC_AID_SYSTEM 1000u	/* privileged trigger initiator */
#define SVC_AID_STATSD 1066u	/* gets the larger per-uid session limit */
#define SVC_AID_SHELL 2000u	/* may request exclusive sessions */

/* Mode of a trace file the service creates from output_path. It is opened
 * with this mode, then fchmod()ed to SVC_OUTPUT_FILE_MODE so that the umask
 * does not narrow it. */
#define SVC_OUTPUT_FILE_OPEN_MODE 0600
#define SVC_OUTPUT_FILE_MODE 0644

#endif
