// SPDX-License-Identifier: Apache-2.0
// Shared helpers for benchmarks: a monotonic clock, the core count, the
// sort order of samples, and a tiny JSON writer for
// bench/results/<name>.json.
#ifndef SPN_BENCH_UTIL_H
#define SPN_BENCH_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* qsort order of uint32_t samples (TSC ticks, nanoseconds). */
static inline int bench_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Online CPU count of this machine (always >= 1). */
static inline long bench_cores(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? n : 1;
}

/* A JSON results file being written: one object with a "results" array. */
struct bench_json {
	FILE *f;	/* open results file, NULL when it could not be opened */
	int nresults;	/* results written so far (for the comma) */
};

/*
 * Opens <dir>/<name>.json and writes the header fields: benchmark name,
 * core count, kernel release and the time. Returns 0, or -errno when the
 * file cannot be created (the caller still prints its table).
 */
static inline int bench_json_open(struct bench_json *j, const char *dir,
				  const char *name)
{
	char path[4096];
	struct utsname u;

	j->nresults = 0;
	snprintf(path, sizeof(path), "%s/%s.json", dir, name);
	j->f = fopen(path, "w");
	if (!j->f)
		return -errno;
	if (uname(&u) != 0)
		strcpy(u.release, "unknown");
	fprintf(j->f, "{\n  \"benchmark\": \"%s\",\n  \"cores\": %ld,\n"
		"  \"kernel\": \"%s\",\n  \"unix_time\": %ld,\n  \"results\": [",
		name, bench_cores(), u.release, (long)time(NULL));
	return 0;
}

/*
 * Appends one result object. fmt is the inside of the object, e.g.
 * "\"case\": \"%s\", \"ops_per_s\": %.0f".
 */
__attribute__((format(printf, 2, 3)))
static inline void bench_json_result(struct bench_json *j, const char *fmt, ...)
{
	va_list ap;

	if (!j->f)
		return;
	fprintf(j->f, "%s\n    {", j->nresults++ ? "," : "");
	va_start(ap, fmt);
	vfprintf(j->f, fmt, ap);
	va_end(ap);
	fputc('}', j->f);
}

/* Closes the array and the file. Returns 0 or -EIO. */
static inline int bench_json_close(struct bench_json *j)
{
	if (!j->f)
		return 0;
	fprintf(j->f, "\n  ]\n}\n");
	return fclose(j->f) == 0 ? 0 : -EIO;
}

#endif
