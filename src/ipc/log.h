// SPDX-License-Identifier: Apache-2.0
// One-line diagnostics to stderr with a process-wide level, shared by the
// IPC library, the service and the commands.
#ifndef SPN_IPC_LOG_H
#define SPN_IPC_LOG_H

#include <stdatomic.h>

/* Severity, most severe first. A message is printed when level <= the
 * process-wide threshold. */
enum spn_log_level {
	SPN_LOG_ERROR = 0,	/* the operation or the connection failed */
	SPN_LOG_WARN = 1,	/* a peer misbehaved or a limit was hit */
	SPN_LOG_INFO = 2,	/* lifecycle: listening, connected, closed */
	SPN_LOG_DEBUG = 3,	/* per frame; off unless asked for */
};

/* Threshold; relaxed loads and stores: a stale level only changes which
 * lines are printed. Set from SPN_LOG_LEVEL (0..3 or error/warn/info/debug)
 * by the first spn_log_init() call, or by spn_log_set_level(). */
extern _Atomic int spn_log_threshold;

/* Reads SPN_LOG_LEVEL from the environment once. Safe from any thread. */
void spn_log_init(void);

/* Sets the threshold (clamped to ERROR..DEBUG). Any thread. */
void spn_log_set_level(enum spn_log_level level);

/* Prints "spindle <lvl> <tag>: <message>\n" to stderr as one write(2) so
 * lines from threads do not interleave. Any thread. */
__attribute__((format(printf, 3, 4)))
void spn_log_write(enum spn_log_level level, const char *tag,
		   const char *fmt, ...);

/* Logs when enabled; the arguments are not evaluated otherwise. */
#define spn_log(level, tag, ...)                                         \
	do {                                                             \
		if ((int)(level) <= atomic_load_explicit(                \
			    &spn_log_threshold, memory_order_relaxed))   \
			spn_log_write((level), (tag), __VA_ARGS__);      \
	} while (0)

#define spn_log_error(tag, ...) spn_log(SPN_LOG_ERROR, tag, __VA_ARGS__)
#define spn_log_warn(tag, ...) spn_log(SPN_LOG_WARN, tag, __VA_ARGS__)
#define spn_log_info(tag, ...) spn_log(SPN_LOG_INFO, tag, __VA_ARGS__)
#define spn_log_debug(tag, ...) spn_log(SPN_LOG_DEBUG, tag, __VA_ARGS__)

#endif
