// SPDX-License-Identifier: Apache-2.0
// Compressed reads (trace-config.md §4.6) through a real service: a config
// asking for deflate (compression_type or compression.deflate) gets each
// read batch, ReadBuffers reply or write_into_file drain, as one
// compressed_packets packet that inflates to every packet of the batch;
// zstd alone (not supported here) and a deflate that runs out of memory
// both give the plain packets, with nothing lost.
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/mem_hooks.h"
#include "svc_harness.h"

#define PACKETS 20000u	/* producer packets per test */
#define PAD 200u	/* their padding: ~4 MB in all, read in several steps of
			 * RB_STEP_BATCHES batches (ctl_read.c) */

/* How a test's session compresses. */
enum how {
	HOW_TYPE,	/* compression_type = COMPRESSION_TYPE_DEFLATE */
	HOW_CONFIG,	/* compression { deflate {} } */
	HOW_ZSTD,	/* compression { zstd { level: 3 } } only */
};

/* Enables a session of one 8 MiB buffer with data source cmp.ds,
 * compressed as `how` says, into `path` when given. */
static void enable(struct th_cons *c, enum how how, const char *path)
{
	struct th_cfg t;
	Perfetto__Protos__TraceConfig *cfg = &t.cfg;
	Perfetto__Protos__TraceConfig__CompressionConfig cc =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__CompressionConfig__Deflate de =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__DEFLATE__INIT;
	Perfetto__Protos__TraceConfig__CompressionConfig__Zstd zs =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__ZSTD__INIT;

	th_cfg_init(&t, 8192, "cmp.ds");
	switch (how) {
	case HOW_TYPE:
		cfg->has_compression_type = true;
		cfg->compression_type =
			PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_TYPE__COMPRESSION_TYPE_DEFLATE;
		break;
	case HOW_CONFIG:
		cc.deflate = &de;
		cfg->compression = &cc;
		break;
	case HOW_ZSTD:
		zs.has_level = true;
		zs.level = 3;
		cc.zstd = &zs;
		cfg->compression = &cc;
		break;
	}
	if (path) {
		cfg->has_write_into_file = true;
		cfg->write_into_file = true;
		cfg->output_path = (char *)path;
		/* Only the end drains the session. */
		cfg->has_file_write_period_ms = true;
		cfg->file_write_period_ms = 3600 * 1000;
	}
	th_cons_enable_cfg(c, cfg);
}

/* Connects to service t, enables the session, writes PACKETS
 * packets (timestamps 0..PACKETS-1) and disables it. With a path, waits
 * for the session to end (its file is then complete). */
static void record(struct th_svc *t, struct th_prod *p, struct th_cons *c,
		   enum how how, const char *path)
{
	uint32_t chunk_id = 0;
	unsigned written = 0;

	th_prod_connect(p, t, "cmp", "cmp.ds");
	th_cons_connect(c, t);
	enable(c, how, path);
	while (th_prod_wait_cmd(p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	while (written < PACKETS) {
		written += th_prod_write(p, 1, &chunk_id, written, PACKETS - written, PAD,
					 0, p->smb.num_pages);
		assert_true(th_prod_fence(p));
	}
	assert_int_equal(th_cons_call(c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(c, 10000);
	assert_true(c->enable_done);
}

/* Every producer packet arrived once, in order, and the service's own
 * packets with them. */
static void expect_all(const struct th_cons *c)
{
	assert_int_equal(c->nts, PACKETS);
	for (size_t i = 0; i < c->nts; i++)
		assert_int_equal(c->ts[i], i);
	assert_true(c->packets > PACKETS);
}

/* Each batch came as one compressed packet, much smaller than what it
 * holds (the padding repeats one byte). */
static void expect_compressed(const struct th_cons *c)
{
	assert_true(c->compressed >= 2);
	assert_int_equal(c->top_packets, c->compressed);
	assert_true(c->inflated_bytes > (size_t)PACKETS * PAD);
	assert_true(c->read_bytes * 10 < c->inflated_bytes);
}

static void run_read(unsigned lanes, enum how how)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c;

	th_svc_start(&t, lanes);
	record(&t, &p, &c, how, NULL);
	th_cons_read(&c);
	expect_all(&c);
	if (how == HOW_ZSTD) {
		assert_int_equal(c.compressed, 0);
		assert_int_equal(c.top_packets, c.packets);
	} else {
		expect_compressed(&c);
	}
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

static void test_read_deflate_type_one_lane(void **state)
{
	(void)state;
	run_read(1, HOW_TYPE);
}

static void test_read_deflate_type_two_lanes(void **state)
{
	(void)state;
	run_read(2, HOW_TYPE);
}

static void test_read_deflate_config(void **state)
{
	(void)state;
	run_read(1, HOW_CONFIG);
}

static void test_read_zstd_only_is_plain(void **state)
{
	(void)state;
	run_read(1, HOW_ZSTD);
}

/* Reads the whole file at path. */
static uint8_t *slurp(const char *path, size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *d;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	d = malloc((size_t)st.st_size + 1);
	assert_non_null(d);
	assert_int_equal(read(fd, d, (size_t)st.st_size), st.st_size);
	close(fd);
	*n = (size_t)st.st_size;
	return d;
}

static void test_file_deflate(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c, f;
	char path[160];
	uint8_t *d;
	size_t n;
	(void)state;

	th_svc_start(&t, 2);
	snprintf(path, sizeof(path), "%s/cmp.pftrace", t.dir);
	record(&t, &p, &c, HOW_TYPE, path);
	d = slurp(path, &n);
	memset(&f, 0, sizeof(f));
	th_cons_count_trace(&f, d, n);
	expect_all(&f);
	/* 1 MiB drains: fewer, bigger batches than a ReadBuffers. */
	assert_int_equal(f.top_packets, f.compressed);
	assert_true(f.compressed >= 1);
	assert_true(f.read_bytes * 10 < f.inflated_bytes);
	free(d);
	free(f.ts);
	free(f.seq);
	unlink(path);
	th_cons_close(&c);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* calloc for zlib's 32 KiB window (32768 x 2 bytes) fails. */
static void *calloc_no_window(size_t nmemb, size_t size)
{
	if (nmemb == 32768 && size == 2)
		return NULL;
	return calloc(nmemb, size);
}

static void test_deflate_nomem_sends_plain(void **state)
{
	const struct svc_mem_hooks h = { .calloc = calloc_no_window };
	(void)state;

	/* Set before the service's threads start, restored after they end
	 * (mem_hooks.h). */
	svc_mem_set_hooks(&h);
	{
		struct th_svc t;
		struct th_prod p;
		struct th_cons c;

		th_svc_start(&t, 1);
		record(&t, &p, &c, HOW_TYPE, NULL);
		th_cons_read(&c);
		expect_all(&c);
		assert_int_equal(c.compressed, 0);
		assert_int_equal(c.top_packets, c.packets);
		th_cons_close(&c);
		th_prod_close(&p);
		th_svc_stop(&t);
	}
	svc_mem_set_hooks(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_deflate_type_one_lane),
		cmocka_unit_test(test_read_deflate_type_two_lanes),
		cmocka_unit_test(test_read_deflate_config),
		cmocka_unit_test(test_read_zstd_only_is_plain),
		cmocka_unit_test(test_file_deflate),
		cmocka_unit_test(test_deflate_nomem_sends_plain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
