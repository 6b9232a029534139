// SPDX-License-Identifier: Apache-2.0
// Reading test data files (tests/data) whole; shared by the unit and the integration tests.
#ifndef SPN_TESTS_TESTDATA_H
#define SPN_TESTS_TESTDATA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* The byte streams of the captured Perfetto v14 session 1 (uds_proxy). */
#define SPN_PROXY_DIR SPN_TESTDATA_DIR "/perfetto_v14/session1/proxy/"

/* A file read whole into memory. */
struct blob {
	uint8_t *data; /* malloc'd contents */
	size_t len;    /* bytes in data */
};

static inline struct blob read_blob(const char *path)
{
	struct blob b = { NULL, 0 };
	FILE *f = fopen(path, "rb");
	long n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	b.len = (size_t)n;
	b.data = malloc(b.len ? b.len : 1);
	assert_non_null(b.data);
	assert_int_equal(fread(b.data, 1, b.len, f), b.len);
	fclose(f);
	return b;
}

/* Capture file `name` of SPN_PROXY_DIR (none is empty) read whole: its
 * bytes (the caller frees them), its size in *len. */
static inline uint8_t *read_proxy_file(const char *name, size_t *len)
{
	char path[512];
	struct blob b;

	snprintf(path, sizeof(path), "%s%s", SPN_PROXY_DIR, name);
	b = read_blob(path);
	assert_true(b.len > 0);
	*len = b.len;
	return b.data;
}

#endif
