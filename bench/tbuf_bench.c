// SPDX-License-Identifier: Apache-2.0
// Benchmark of the central trace buffers: commit throughput per lane (1 and 2 lanes, 4 KiB and 32 KiB chunks) beside a plain memcpy of the same chunks, and read throughput of a full buffer.
//
// "commit": each thread is a lane committing chunks of 8 writers into one
// 64 MiB ring buffer (it laps the buffer, so segment recycling is in the
// numbers). The source is a 256 KiB area cycled through, like a hot SMB.
// Chunks are committed as a CommitData's are: deferred, and published
// once per BENCH_COMMIT of them (one store fence for their streaming
// stores).
// "memcpy": the same threads copy the same chunks from the same kind of
// source into a private 64 MiB ring: the cost of the copy alone. The ratio
// column is commit MB/s over memcpy MB/s of the same run and thread count.
// "read": one reader drains a buffer filled with 4 KiB chunks of ten
// ~400-byte packets (validation, trailer, Trace framing), 1 MiB batches.
//
// Usage: tbuf_bench [milliseconds per case, default 400]
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "core/tbuf.h"
#include "spindle/pb.h"

#define BENCH_BUF (64u << 20)	/* trace buffer / memcpy ring bytes */
#define BENCH_SRC (256u << 10)	/* source area ("SMB") bytes */
#define BENCH_WRITERS 8u	/* writers per lane */
#define BENCH_BATCH 256u	/* chunks between clock reads */
#define BENCH_COMMIT 32u	/* chunks per publication (a CommitData) */

/* One benchmark case. */
struct bench_case {
	const char *name;	/* "memcpy" or "commit" */
	int threads;		/* 1 or 2 */
	uint32_t chunk;		/* payload bytes per chunk */
	uint64_t ms;		/* how long to run */
};

/* Per-thread state of a run. */
struct bench_thread {
	const struct bench_case *bc; /* what to run */
	struct svc_tbuf *b;	     /* shared buffer (commit) */
	pthread_barrier_t *start;    /* all threads start together */
	int tid;		     /* lane index */
	uint8_t *src;		     /* source area */
	uint8_t *dst;		     /* memcpy ring (memcpy case) */
	uint64_t bytes;		     /* payload bytes moved */
	uint64_t ns;		     /* time it took */
	int err;		     /* first unexpected commit result */
};

/* Fills a payload with fragments of ~400-byte packets (valid protobuf). */
static void bench_fill(uint8_t *p, uint32_t len, uint16_t *nfrags)
{
	uint32_t off = 0;

	*nfrags = 0;
	while (len - off >= 4 + 64) {
		uint32_t size = len - off - 4 < 400 ? len - off - 4 : 400;
		uint8_t *d = p + off + 4;
		uint8_t *q = spn_pb_field_varint(d, 8, 123456789);

		q = spn_pb_put_key(q, 2, SPN_PB_LEN);
		q = spn_pb_put_varint(q, size - (uint32_t)(q - d) - 2);
		memset(q, 0xAB, size - (uint32_t)(q - d));
		spn_pb_put_varint4(p + off, size);
		off += 4 + size;
		(*nfrags)++;
	}
	memset(p + off, 0, len - off);
}

static void *bench_main(void *arg)
{
	struct bench_thread *t = arg;
	const struct bench_case *bc = t->bc;
	uint32_t ids[BENCH_WRITERS] = { 0 }, src_off = 0, dst_off = 0;
	uint16_t nfrags;
	uint64_t t0, end, n = 0;

	bench_fill(t->src, BENCH_SRC, &nfrags);
	nfrags = (uint16_t)(bc->chunk / 404);
	pthread_barrier_wait(t->start);
	t0 = bench_now_ns();
	end = t0 + bc->ms * 1000000ull;
	for (;;) {
		for (uint32_t i = 0; i < BENCH_BATCH; i++, n++) {
			const uint8_t *s = t->src + src_off;

			src_off += bc->chunk;
			if (src_off + bc->chunk > BENCH_SRC)
				src_off = 0;
			if (t->b) {
				uint32_t w = (uint32_t)(n % BENCH_WRITERS);
				struct svc_tbuf_chunk c = {
					.producer_id = (uint16_t)(t->tid + 1),
					.writer_id = (uint16_t)(w + 1),
					.chunk_id = ids[w]++, .uid = 1000,
					.pid = 1, .nfrags = nfrags,
					.complete = true, .payload = s,
					.len = bc->chunk, .defer = true,
				};
				int rc = svc_tbuf_lane_commit(t->b,
							      (unsigned)t->tid,
							      &c);

				if (rc != SVC_TBUF_STORED && !t->err)
					t->err = rc ? rc : -EIO;
				if (i % BENCH_COMMIT == BENCH_COMMIT - 1)
					svc_tbuf_lane_publish(t->b,
							      (unsigned)t->tid);
			} else {
				if (dst_off + bc->chunk > BENCH_BUF)
					dst_off = 0;
				memcpy(t->dst + dst_off, s, bc->chunk);
				__asm__ volatile("" : : "r"(t->dst) : "memory");
				dst_off += bc->chunk;
			}
		}
		if (bench_now_ns() >= end)
			break;
	}
	t->ns = bench_now_ns() - t0;
	t->bytes = n * bc->chunk;
	return NULL;
}

/* Runs one case; returns MB/s per thread (0 on error). */
static double bench_run(const struct bench_case *bc)
{
	struct bench_thread t[2];
	pthread_barrier_t start;
	pthread_t th[2];
	struct svc_tbuf *b = NULL;
	double mbps = 0;
	int err = 0;

	if (!strcmp(bc->name, "commit") &&
	    svc_tbuf_create(BENCH_BUF, SVC_TBUF_RING, (unsigned)bc->threads,
			    SVC_TBUF_PREFAULT, &b) != 0)
		return 0;
	pthread_barrier_init(&start, NULL, (unsigned)bc->threads);
	for (int i = 0; i < bc->threads; i++) {
		t[i] = (struct bench_thread){ .bc = bc, .b = b, .start = &start,
					      .tid = i };
		t[i].src = malloc(BENCH_SRC);
		t[i].dst = b ? NULL : malloc(BENCH_BUF);
		if (!t[i].src || (!b && !t[i].dst))
			abort();
		if (t[i].dst)
			memset(t[i].dst, 0, BENCH_BUF);	/* fault it in */
	}
	for (int i = 0; i < bc->threads; i++)
		pthread_create(&th[i], NULL, bench_main, &t[i]);
	for (int i = 0; i < bc->threads; i++) {
		pthread_join(th[i], NULL);
		mbps += (double)t[i].bytes / ((double)t[i].ns / 1e9) / 1e6;
		if (t[i].err)
			err = t[i].err;
		free(t[i].src);
		free(t[i].dst);
	}
	pthread_barrier_destroy(&start);
	svc_tbuf_destroy(b);
	if (err) {
		fprintf(stderr, "tbuf_bench: commit returned %d\n", err);
		return 0;
	}
	return mbps / bc->threads;
}

/* Fills a buffer and times draining it. Returns MB/s of payload read. */
static double bench_read(double *pkts_per_s)
{
	struct svc_tbuf_out out = { 0 };
	struct svc_seqids *ids = NULL;
	struct svc_tbuf *b = NULL;
	uint8_t *src = malloc(4096);
	uint64_t bytes = 0, pkts = 0, t0, ns;
	uint32_t id = 0;
	uint16_t nfrags;
	bool drained = false;

	if (!src || svc_tbuf_create(BENCH_BUF, SVC_TBUF_RING, 1,
				    SVC_TBUF_PREFAULT, &b) != 0 ||
	    svc_seqids_create(&ids) != 0)
		abort();
	bench_fill(src, 4080, &nfrags);
	/* Fill to ~90% so that nothing is overwritten. */
	while ((uint64_t)(id + 1) * 4144 < BENCH_BUF * 9ull / 10) {
		struct svc_tbuf_chunk c = {
			.producer_id = 1, .writer_id = (uint16_t)(id % 8 + 1),
			.chunk_id = id / 8, .uid = 1000, .pid = 1,
			.nfrags = nfrags, .complete = true, .payload = src,
			.len = 4080,
		};

		if (svc_tbuf_lane_commit(b, 0, &c) != SVC_TBUF_STORED)
			abort();
		bytes += 4080;
		id++;
	}
	t0 = bench_now_ns();
	while (!drained) {
		int n;

		out.len = 0;
		n = svc_tbuf_read(b, ids, &out, 1u << 20, &drained);
		if (n < 0)
			abort();
		pkts += (uint64_t)n;
	}
	ns = bench_now_ns() - t0;
	if (pkts != (uint64_t)id * nfrags)
		fprintf(stderr, "tbuf_bench: read %llu packets of %llu\n",
			(unsigned long long)pkts,
			(unsigned long long)id * nfrags);
	svc_tbuf_out_free(&out);
	svc_seqids_destroy(ids);
	svc_tbuf_destroy(b);
	free(src);
	*pkts_per_s = (double)pkts / ((double)ns / 1e9);
	return (double)bytes / ((double)ns / 1e9) / 1e6;
}

int main(int argc, char **argv)
{
	static const uint32_t chunks[] = { 4080, 32752 };
	uint64_t ms = argc > 1 ? strtoull(argv[1], NULL, 10) : 400;
	struct bench_json j;
	double rd, pps;

	if (bench_json_open(&j, SPN_BENCH_RESULTS_DIR, "tbuf_bench") != 0)
		fprintf(stderr, "tbuf_bench: cannot write %s/tbuf_bench.json: %s\n",
			SPN_BENCH_RESULTS_DIR, strerror(errno));
	printf("tbuf_bench: %ld cores, %llu ms per case, %u MiB buffer\n",
	       bench_cores(), (unsigned long long)ms, BENCH_BUF >> 20);
	printf("%-7s %-7s %-7s %14s %14s %8s\n", "case", "threads", "chunk",
	       "MB/s/thread", "memcpy MB/s", "ratio");
	for (int threads = 1; threads <= 2; threads++) {
		for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
			struct bench_case base = { "memcpy", threads, chunks[k],
						   ms };
			struct bench_case com = { "commit", threads, chunks[k],
						  ms };
			double m = bench_run(&base), c = bench_run(&com);

			printf("%-7s %-7d %-7u %14.0f %14.0f %8.2f\n", "commit",
			       threads, chunks[k], c, m, m > 0 ? c / m : 0);
			bench_json_result(&j, "\"case\": \"commit\", "
					  "\"threads\": %d, \"chunk_bytes\": %u, "
					  "\"mb_per_s_per_thread\": %.0f, "
					  "\"memcpy_mb_per_s_per_thread\": %.0f, "
					  "\"ratio\": %.3f", threads, chunks[k],
					  c, m, m > 0 ? c / m : 0);
		}
	}
	rd = bench_read(&pps);
	printf("%-7s %-7d %-7u %14.0f %14s %8s   (%.1f M packets/s)\n", "read",
	       1, 4080u, rd, "-", "-", pps / 1e6);
	bench_json_result(&j, "\"case\": \"read\", \"threads\": 1, "
			  "\"chunk_bytes\": 4080, \"mb_per_s\": %.0f, "
			  "\"packets_per_s\": %.0f", rd, pps);
	if (bench_json_close(&j) != 0)
		fprintf(stderr, "tbuf_bench: writing the results failed\n");
	return 0;
}
