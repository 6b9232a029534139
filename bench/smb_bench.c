// SPDX-License-Identifier: Apache-2.0
// Benchmark of the SMB chunk state machine: acquire-write, complete, acquire-read, free cycles per second for 1 and 2 threads per layout, beside a plain 4 KiB memcpy loop.
//
// Each cycle takes one chunk through its whole life in one thread: (partition
// the page if it is free,) acquire for writing, complete, acquire for
// reading, free (un-partitioning the page when it empties). Two variants:
// "state" moves only the chunk header and page word (the ABI's own cost);
// "payload" also writes the payload in and copies the whole chunk out, as
// the SDK and the service do. With 2 threads both work on the same pages
// (thread t takes chunks t, t+2, ...), so they contend on page words. The
// baseline is memcpy of 4 KiB in a loop with the same thread count; the
// ratio column is cycles/s divided by the baseline's copies/s. Last, the
// service's validation of a copied 4 KiB chunk full of 20-byte and of
// 210-byte packets, ns per chunk and per fragment: alone ("validate",
// smb_chunk_validate) and two side by side as the lanes check them
// ("validate2", smb_chunk_check_two).
//
// Usage: smb_bench [milliseconds per case, default 300]
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "smb/chunk_validate.h"
#include "spindle/smb_abi.h"

#define BENCH_PAGES 16u	      /* 64 KiB SMB: stays in cache like a hot SMB */
#define BENCH_PAGE_SIZE 4096u
#define BENCH_BATCH 1024u     /* cycles between clock reads */

/* One benchmark case. */
struct bench_case {
	const char *name;  /* "memcpy4k", "state" or "payload" */
	uint32_t layout;   /* SPN_SMB_PAGE_DIV*, 0 for memcpy */
	int threads;	   /* 1 or 2 */
	uint64_t ms;	   /* how long to run */
};

/* Per-thread state of a run. */
struct bench_thread {
	const struct bench_case *bc; /* what to run */
	struct spn_smb *smb;	     /* shared SMB (NULL for memcpy) */
	pthread_barrier_t *start;    /* all threads start together */
	int tid;		     /* 0 or 1 */
	uint64_t ops;		     /* cycles (or copies) done */
	uint64_t ns;		     /* time it took */
	int err;		     /* 0, or an unexpected state machine result */
	uint8_t src[65536];	     /* payload source */
	uint8_t dst[65536];	     /* copy-out destination */
};

/* Keeps the compiler from dropping stores to p. */
static inline void bench_clobber(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static int bench_cycle(struct bench_thread *t, uint32_t g, bool payload)
{
	struct spn_smb *smb = t->smb;
	uint32_t layout = t->bc->layout, n = spn_smb_layout_chunks(layout);
	uint32_t page = g / n, chunk = g % n, got, size = smb->chunk_size[layout];
	struct spn_smb_chunk_header *h;
	int r;

	for (;;) {
		r = spn_smb_try_acquire_write(smb, page, layout, chunk, 1, g,
					      spn_smb_packets(1, 0), &h);
		if (r == 0)
			break;
		if (r == -EBUSY) /* page free (or just emptied): cut it */
			(void)spn_smb_try_partition(smb, page, layout);
		else if (r != -EAGAIN)
			return r;
	}
	if (payload) {
		memcpy(spn_smb_chunk_payload(h), t->src, size - SPN_SMB_CHUNK_HEADER_SIZE);
		bench_clobber(h);
	}
	/* Each call tries once; retry while the page word moves under it. */
	while ((r = spn_smb_try_complete(smb, page, layout, chunk)) == -EAGAIN)
		;
	if (r != 0)
		return r;
	while ((r = spn_smb_try_acquire_read(smb, page, chunk, &got)) == -EAGAIN)
		;
	if (r != 0)
		return r;
	if (payload) {
		memcpy(t->dst, spn_smb_chunk(smb, page, got, chunk), size);
		bench_clobber(t->dst);
	}
	while ((r = spn_smb_try_free(smb, page, got, chunk, SPN_SMB_BEING_READ)) == -EAGAIN)
		;
	return r;
}

static void *bench_thread_main(void *arg)
{
	struct bench_thread *t = arg;
	const struct bench_case *bc = t->bc;
	bool payload = strcmp(bc->name, "payload") == 0;
	uint32_t total = bc->layout ? BENCH_PAGES * spn_smb_layout_chunks(bc->layout) : 0;
	uint32_t g = (uint32_t)t->tid, i;
	uint64_t t0, deadline, now;

	pthread_barrier_wait(t->start);
	t0 = bench_now_ns();
	deadline = t0 + bc->ms * 1000000ull;
	do {
		for (i = 0; i < BENCH_BATCH; i++) {
			if (!bc->layout) {
				memcpy(t->dst, t->src, 4096);
				bench_clobber(t->dst);
				continue;
			}
			if ((t->err = bench_cycle(t, g, payload)) != 0)
				return NULL;
			g += (uint32_t)bc->threads;
			if (g >= total)
				g = (uint32_t)t->tid;
		}
		t->ops += BENCH_BATCH;
		now = bench_now_ns();
	} while (now < deadline);
	t->ns = now - t0;
	return NULL;
}

/* Runs one case; returns operations per second (all threads), or -1. */
static double bench_run(const struct bench_case *bc)
{
	static struct bench_thread th[2];
	pthread_t pt[2];
	pthread_barrier_t start;
	struct spn_smb smb;
	void *base = aligned_alloc(4096, BENCH_PAGES * BENCH_PAGE_SIZE);
	double rate = 0;
	int i;

	if (!base || spn_smb_init(&smb, base, BENCH_PAGES * BENCH_PAGE_SIZE,
				  BENCH_PAGE_SIZE) != 0) {
		free(base);
		return -1;
	}
	memset(base, 0, BENCH_PAGES * BENCH_PAGE_SIZE);
	pthread_barrier_init(&start, NULL, (unsigned)bc->threads);
	for (i = 0; i < bc->threads; i++) {
		th[i].bc = bc;
		th[i].smb = &smb;
		th[i].start = &start;
		th[i].tid = i;
		th[i].ops = 0;
		th[i].ns = 0;
		th[i].err = 0;
		memset(th[i].src, 0xA5, sizeof(th[i].src));
		pthread_create(&pt[i], NULL, bench_thread_main, &th[i]);
	}
	for (i = 0; i < bc->threads; i++) {
		pthread_join(pt[i], NULL);
		if (th[i].err || !th[i].ns) {
			fprintf(stderr, "smb_bench: %s: state machine returned %d\n",
				bc->name, th[i].err);
			rate = -1;
			break;
		}
		rate += (double)th[i].ops * 1e9 / (double)th[i].ns;
	}
	pthread_barrier_destroy(&start);
	free(base);
	return rate;
}

/* Fills chunk (Div1 of a 4 KiB page) with packets of pkt bytes in the
 * writers' 4-byte prefix form; returns the fragment count. */
static uint32_t bench_fill_chunk(uint8_t *chunk, uint32_t size, uint32_t pkt)
{
	uint32_t pos = SPN_SMB_CHUNK_HEADER_SIZE, n = 0;
	uint16_t packets;

	memset(chunk, 0xA5, size);
	for (; pos + 4 + pkt <= size; pos += 4 + pkt, n++) {
		chunk[pos] = (uint8_t)((pkt & 0x7F) | 0x80);
		chunk[pos + 1] = (uint8_t)(((pkt >> 7) & 0x7F) | 0x80);
		chunk[pos + 2] = (uint8_t)(((pkt >> 14) & 0x7F) | 0x80);
		chunk[pos + 3] = (uint8_t)(pkt >> 21);
	}
	memset(chunk, 0, SPN_SMB_CHUNK_HEADER_SIZE);
	chunk[4] = 1; /* writer 1 */
	packets = spn_smb_packets(n, 0);
	memcpy(chunk + 6, &packets, 2);
	return n;
}

/* One validation of chunk (size bytes, frags fragments), alone (two =
 * false: smb_chunk_validate) or beside a copy of itself (two = true:
 * smb_chunk_check_two, as the lane checks pairs). False if it did not
 * validate. */
static bool bench_validate_once(uint8_t *chunk, uint8_t *copy, uint32_t size,
				uint32_t frags, bool two)
{
	struct smb_chunk_info info[2];
	struct smb_chunk_copy c[2];

	if (!two)
		return smb_chunk_validate(chunk, size, &info[0]) == 0 &&
		       info[0].nfrags == frags;
	for (int k = 0; k < 2; k++) {
		uint8_t *h = k ? copy : chunk;

		c[k] = (struct smb_chunk_copy){ h, h + SPN_SMB_CHUNK_HEADER_SIZE,
						size - SPN_SMB_CHUNK_HEADER_SIZE,
						&info[k], 0 };
	}
	smb_chunk_check_two(&c[0], &c[1]);
	return c[0].rc == 0 && c[1].rc == 0 && info[0].nfrags == frags &&
	       info[1].nfrags == frags;
}

/* ns per chunk of validating chunks of pkt-byte packets (best of 10 rounds
 * within ms), alone or two side by side (see bench_validate_once), or -1
 * if one did not validate; *frags: fragments per chunk. */
static double bench_validate(uint32_t pkt, bool two, uint64_t ms, uint32_t *frags)
{
	static uint8_t chunk[4096] __attribute__((aligned(64)));
	static uint8_t copy[4096] __attribute__((aligned(64)));
	uint32_t size = spn_smb_chunk_size_for(BENCH_PAGE_SIZE, SPN_SMB_PAGE_DIV1);
	double best = -1;

	*frags = bench_fill_chunk(chunk, size, pkt);
	memcpy(copy, chunk, size);
	for (int round = 0; round < 10; round++) {
		uint64_t t0 = bench_now_ns(), n = 0;

		while (bench_now_ns() - t0 < ms * 100000ull) {
			for (int i = 0; i < 1000; i++, n += two ? 2 : 1) {
				if (!bench_validate_once(chunk, copy, size, *frags, two))
					return -1;
				bench_clobber(chunk);
				bench_clobber(copy);
			}
		}
		double ns = (double)(bench_now_ns() - t0) / (double)n;

		if (best < 0 || ns < best)
			best = ns;
	}
	return best;
}

int main(int argc, char **argv)
{
	uint64_t ms = argc > 1 ? strtoull(argv[1], NULL, 10) : 300;
	static const char *const variants[] = { "state", "payload" };
	struct bench_json j;
	double base[3] = { 0 };
	int threads, v, rc = 0;
	uint32_t layout;

	if (ms == 0)
		ms = 300;
	if (bench_json_open(&j, SPN_BENCH_RESULTS_DIR, "smb_bench") != 0)
		fprintf(stderr, "smb_bench: cannot write %s/smb_bench.json: %s\n",
			SPN_BENCH_RESULTS_DIR, strerror(errno));
	printf("smb_bench: %ld cores, %llu ms per case, %u pages of %u bytes\n",
	       bench_cores(), (unsigned long long)ms, BENCH_PAGES, BENCH_PAGE_SIZE);
	printf("%-9s %-7s %-6s %6s %14s %10s %12s\n", "case", "threads", "layout",
	       "chunk", "ops/s", "ns/op", "vs memcpy4k");
	for (threads = 1; threads <= 2; threads++) {
		struct bench_case bc = { "memcpy4k", 0, threads, ms };

		base[threads] = bench_run(&bc);
		printf("%-9s %-7d %-6s %6u %14.0f %10.1f %12.2f\n", bc.name, threads, "-",
		       4096u, base[threads], 1e9 * threads / base[threads], 1.0);
		bench_json_result(&j, "\"case\": \"memcpy4k\", \"threads\": %d, "
				  "\"bytes\": 4096, \"ops_per_s\": %.0f", threads,
				  base[threads]);
		for (v = 0; v < 2; v++) {
			for (layout = SPN_SMB_PAGE_DIV1; layout <= SPN_SMB_PAGE_DIV14; layout++) {
				struct bench_case c = { variants[v], layout, threads, ms };
				double rate = bench_run(&c);
				uint32_t cs = spn_smb_chunk_size_for(BENCH_PAGE_SIZE, layout);

				if (rate < 0) {
					rc = 1;
					continue;
				}
				printf("%-9s %-7d %-6s %6u %14.0f %10.1f %12.2f\n", c.name,
				       threads, spn_smb_layout_name(layout), cs, rate,
				       1e9 * threads / rate, rate / base[threads]);
				bench_json_result(&j, "\"case\": \"%s\", \"threads\": %d, "
						  "\"layout\": \"%s\", \"chunk_size\": %u, "
						  "\"cycles_per_s\": %.0f, "
						  "\"ratio_vs_memcpy4k\": %.3f",
						  c.name, threads, spn_smb_layout_name(layout),
						  cs, rate, rate / base[threads]);
			}
		}
	}
	printf("\n%-9s %-7s %6s %10s %12s\n", "case", "packet", "frags",
	       "ns/chunk", "ns/fragment");
	for (int two = 0; two < 2; two++) {
		const char *name = two ? "validate2" : "validate";

		for (uint32_t pkt = 20; pkt <= 210; pkt += 190) {
			uint32_t frags;
			double ns = bench_validate(pkt, two, ms, &frags);

			if (ns < 0) {
				fprintf(stderr, "smb_bench: %s: chunk did not validate\n",
					name);
				rc = 1;
				continue;
			}
			printf("%-9s %-7u %6u %10.1f %12.2f\n", name, pkt, frags, ns,
			       ns / frags);
			bench_json_result(&j, "\"case\": \"%s\", \"threads\": 1, "
					  "\"chunk_size\": 4088, \"packet_bytes\": %u, "
					  "\"fragments\": %u, \"ns_per_chunk\": %.1f, "
					  "\"ns_per_fragment\": %.2f", name, pkt, frags,
					  ns, ns / frags);
		}
	}
	if (bench_json_close(&j) != 0)
		rc = 1;
	return rc;
}
