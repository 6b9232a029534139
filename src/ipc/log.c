// SPDX-License-Identifier: Apache-2.0
// The process-wide log threshold and the one-line stderr writer.
#include "ipc/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic int spn_log_threshold = SPN_LOG_WARN;

static const char *const spn_log_names[] = {"error", "warn", "info", "debug"};

void spn_log_set_level(enum spn_log_level level)
{
	int l = (int)level;

	if (l < SPN_LOG_ERROR)
		l = SPN_LOG_ERROR;
	if (l > SPN_LOG_DEBUG)
		l = SPN_LOG_DEBUG;
	atomic_store_explicit(&spn_log_threshold, l, memory_order_relaxed);
}

void spn_log_init(void)
{
	const char *v = getenv("SPN_LOG_LEVEL");

	if (!v || !*v)
		return;
	for (int i = 0; i <= SPN_LOG_DEBUG; i++) {
		if (strcmp(v, spn_log_names[i]) == 0) {
			spn_log_set_level((enum spn_log_level)i);
			return;
		}
	}
	if (v[0] >= '0' && v[0] <= '3' && v[1] == '\0')
		spn_log_set_level((enum spn_log_level)(v[0] - '0'));
}

void spn_log_write(enum spn_log_level level, const char *tag,
		   const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n, m;

	if ((int)level < 0 || (int)level > SPN_LOG_DEBUG)
		level = SPN_LOG_ERROR;
	n = snprintf(line, sizeof(line), "spindle %s %s: ",
		     spn_log_names[level], tag);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;	/* truncated: keep the newline */
	line[n++] = '\n';
	/* One write: lines from several threads stay whole. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
