// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's value parsers: durations ("500ms", "10s", "2m"), buffer
// sizes ("32mb"), session ids, and the byte formatter of its messages.
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cmd/spindle_cli.h"

/* Parses the leading decimal digits of s into *v; *end after them.
 * Returns 0, or -EINVAL without digits or on overflow. */
static int cli_digits(const char *s, uint64_t *v, const char **end)
{
	uint64_t n = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (n > (UINT64_MAX - d) / 10)
			return -EINVAL;
		n = n * 10 + d;
	}
	*v = n;
	*end = p;
	return 0;
}

int cli_parse_u64(const char *s, uint64_t *v)
{
	const char *end;

	if (cli_digits(s, v, &end) || *end)
		return -EINVAL;
	return 0;
}

int cli_parse_duration(const char *s, uint32_t *ms)
{
	static const struct {
		const char *unit;	/* suffix */
		uint64_t ms;		/* milliseconds per unit */
	} units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "h", 3600000 },
	};
	const char *end;
	uint64_t n;

	if (cli_digits(s, &n, &end))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit))
			continue;
		if (n > UINT32_MAX / units[i].ms)
			return -EINVAL;
		*ms = (uint32_t)(n * units[i].ms);
		return 0;
	}
	return -EINVAL;
}

int cli_parse_size_kb(const char *s, uint32_t *kb)
{
	static const struct {
		const char *unit;	/* suffix, matched case-insensitively */
		uint64_t kb;		/* KiB per unit */
	} units[] = {
		{ "", 1 },	      { "k", 1 },	     { "kb", 1 },
		{ "m", 1024 },	      { "mb", 1024 },	     { "g", 1048576 },
		{ "gb", 1048576 },
	};
	const char *end;
	uint64_t n;

	if (cli_digits(s, &n, &end))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].unit))
			continue;
		if (n == 0)
			return -EINVAL;
		if (n > CLI_MAX_BUFFER_KB / units[i].kb)
			return -ERANGE;
		*kb = (uint32_t)(n * units[i].kb);
		return 0;
	}
	return -EINVAL;
}

const char *cli_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *units[] = { "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return buf;
	}
	while (v >= 1024.0 && u < 3) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}
