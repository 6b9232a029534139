// SPDX-License-Identifier: Apache-2.0
// Two threads acquire, complete, read and free chunks of the same SMB pages concurrently: no chunk is ever owned twice, none is lost, every payload arrives intact (run under ThreadSanitizer in CI).
//
// The ownership tracker below uses relaxed atomics on purpose: its RMWs
// detect two owners at once, but it must not add happens-before edges of
// its own, or ThreadSanitizer could no longer see a missing acquire or
// release in the state machine (payload writes and reads are plain, and
// only the page word orders them).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smb/chunk_validate.h"
#include "spindle/smb_abi.h"

#define NPAGES 3u	     /* few pages: both threads fight over them */
#define PAGE_SIZE 4096u
#define CYCLES 250000u	     /* per thread: 10^6 acquisitions in all (half for
				reading), and as many releases */
#define PATTERN 0x5EEDF00Du  /* mixed into the payload check word */

/* Who owns what, as the threads believe (relaxed, see above). */
static struct {
	/* per page: layout << 16 | chunks of the page owned right now */
	_Atomic uint32_t page_use[NPAGES];
	/* per page, layout, chunk: owners right now (must stay 0 or 1) */
	_Atomic uint32_t owners[NPAGES][8][SPN_SMB_MAX_CHUNKS_PER_PAGE];
	_Atomic uint64_t written; /* chunks completed */
	_Atomic uint64_t read;	  /* chunks read and freed */
	_Atomic uint64_t cross;	  /* of those, read by the thread that did not write */
	_Atomic uint64_t lost;	  /* attempts that got -EAGAIN (page word moved) */
	_Atomic uint32_t errors;  /* violations seen by any thread */
	char first_error[160];	  /* the first one, for the report */
	_Atomic uint32_t error_claimed; /* who writes first_error */
} tr;

static struct spn_smb g_smb;

__attribute__((format(printf, 1, 2)))
static void violation(const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add_explicit(&tr.errors, 1, memory_order_relaxed);
	if (atomic_exchange_explicit(&tr.error_claimed, 1, memory_order_acq_rel))
		return;
	va_start(ap, fmt);
	vsnprintf(tr.first_error, sizeof(tr.first_error), fmt, ap);
	va_end(ap);
}

/* A chunk was just won for writing: nobody else may own it or any chunk
 * of the page in another layout. */
static void own_take(uint32_t page, uint32_t layout, uint32_t chunk)
{
	_Atomic uint32_t *pu = &tr.page_use[page];
	uint32_t v = atomic_load_explicit(pu, memory_order_relaxed), nv;

	do {
		if ((v & 0xFFFF) != 0 && (v >> 16) != layout) {
			violation("page %u owned in layouts %u and %u at once", page,
				  v >> 16, layout);
			return;
		}
		nv = (v & 0xFFFF) ? v + 1 : (layout << 16 | 1u);
	} while (!atomic_compare_exchange_weak_explicit(pu, &v, nv, memory_order_relaxed,
							memory_order_relaxed));
	if (atomic_fetch_add_explicit(&tr.owners[page][layout][chunk], 1,
				      memory_order_relaxed) != 0)
		violation("chunk %u/%u/%u owned twice", page, layout, chunk);
}

/* A chunk is about to be freed by its reader. */
static void own_drop(uint32_t page, uint32_t layout, uint32_t chunk)
{
	if (atomic_fetch_sub_explicit(&tr.owners[page][layout][chunk], 1,
				      memory_order_relaxed) != 1)
		violation("chunk %u/%u/%u freed without one owner", page, layout, chunk);
	atomic_fetch_sub_explicit(&tr.page_use[page], 1, memory_order_relaxed);
}

static uint32_t xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* The check word a writer puts at both ends of the payload. */
static uint32_t check_word(uint16_t writer, uint32_t id)
{
	return (id * 2654435761u) ^ writer ^ PATTERN;
}

/* Tries to write one chunk somewhere. Returns true if it did. */
static bool try_write(uint32_t *rng, uint16_t writer, uint32_t seq)
{
	struct spn_smb_chunk_header *h;
	uint32_t page = xorshift(rng) % NPAGES, w, layout, chunk, cw, size;
	uint8_t *pl;
	int r;

	w = spn_smb_page_load(&g_smb, page, memory_order_relaxed);
	if (w == 0) {
		/* Layouts 1..5, all of them in turn over the run. */
		(void)spn_smb_try_partition(&g_smb, page, 1 + xorshift(rng) % 5);
		w = spn_smb_page_load(&g_smb, page, memory_order_relaxed);
	}
	layout = spn_smb_word_layout(w);
	if (spn_smb_layout_chunks(layout) == 0)
		return false;
	chunk = xorshift(rng) % spn_smb_layout_chunks(layout);
	r = spn_smb_try_acquire_write(&g_smb, page, layout, chunk, writer, seq,
				      spn_smb_packets(1, 0), &h);
	if (r != 0) {
		if (r == -EAGAIN)
			atomic_fetch_add_explicit(&tr.lost, 1, memory_order_relaxed);
		else if (r != -EBUSY)
			violation("acquire_write: %d", r);
		return false;
	}
	own_take(page, layout, chunk);
	/* Plain payload writes, published only by the Complete CAS. */
	size = g_smb.chunk_size[layout] - SPN_SMB_CHUNK_HEADER_SIZE;
	pl = spn_smb_chunk_payload(h);
	cw = check_word(writer, seq);
	memcpy(pl, &cw, 4);
	memset(pl + 4, (uint8_t)seq, 16);
	memcpy(pl + size - 4, &cw, 4);
	/* Only the page word can move under us; never the chunk's state. */
	while ((r = spn_smb_try_complete(&g_smb, page, layout, chunk)) == -EAGAIN)
		;
	if (r != 0)
		violation("complete: %d", r);
	atomic_fetch_add_explicit(&tr.written, 1, memory_order_relaxed);
	return true;
}

/* Tries to read and free one chunk somewhere, as thread `self`. */
static void try_read(uint32_t *rng, uint16_t self)
{
	uint32_t page = xorshift(rng) % NPAGES, chunk = xorshift(rng) % 14;
	uint32_t layout, id, cw, a, b, size;
	struct spn_smb_chunk_header *h;
	uint16_t writer;
	uint8_t *pl;
	int r;

	r = spn_smb_try_acquire_read(&g_smb, page, chunk, &layout);
	if (r != 0) {
		if (r == -EAGAIN)
			atomic_fetch_add_explicit(&tr.lost, 1, memory_order_relaxed);
		else if (r != -EBUSY && r != -EINVAL)
			violation("acquire_read: %d", r);
		return;
	}
	if (atomic_load_explicit(&tr.owners[page][layout][chunk],
				 memory_order_relaxed) != 1)
		violation("read chunk %u/%u/%u that nobody wrote", page, layout, chunk);
	h = spn_smb_chunk(&g_smb, page, layout, chunk);
	id = atomic_load_explicit(&h->chunk_id, memory_order_relaxed);
	writer = atomic_load_explicit(&h->writer_id, memory_order_relaxed);
	size = g_smb.chunk_size[layout] - SPN_SMB_CHUNK_HEADER_SIZE;
	pl = spn_smb_chunk_payload(h);
	cw = check_word(writer, id);
	memcpy(&a, pl, 4);
	memcpy(&b, pl + size - 4, 4);
	if ((writer != 1 && writer != 2) || a != cw || b != cw || pl[4] != (uint8_t)id ||
	    pl[19] != (uint8_t)id)
		violation("chunk %u/%u/%u: writer %u id %u does not match its payload",
			  page, layout, chunk, writer, id);
	if (writer != self)
		atomic_fetch_add_explicit(&tr.cross, 1, memory_order_relaxed);
	own_drop(page, layout, chunk);
	while ((r = spn_smb_try_free(&g_smb, page, layout, chunk,
				     SPN_SMB_BEING_READ)) == -EAGAIN)
		;
	if (r != 0)
		violation("free: %d", r);
	atomic_fetch_add_explicit(&tr.read, 1, memory_order_relaxed);
}

/* One of the two threads: writes CYCLES chunks, reads whatever is complete,
 * and keeps reading until every chunk written by anyone has been read. */
static void *worker(void *arg)
{
	uint16_t writer = (uint16_t)(uintptr_t)arg;
	uint32_t rng = 0x9E3779B9u * writer, done = 0;

	while (atomic_load_explicit(&tr.errors, memory_order_relaxed) == 0) {
		if (done < CYCLES && try_write(&rng, writer, done))
			done++;
		try_read(&rng, writer);
		if (done == CYCLES &&
		    atomic_load_explicit(&tr.read, memory_order_relaxed) == 2ull * CYCLES)
			break;
	}
	return NULL;
}

static void test_two_threads_same_pages(void **state)
{
	pthread_t t[2];
	uint32_t p, l, c;
	void *base = aligned_alloc(4096, NPAGES * PAGE_SIZE);

	(void)state;
	assert_non_null(base);
	memset(base, 0, NPAGES * PAGE_SIZE);
	assert_int_equal(spn_smb_init(&g_smb, base, NPAGES * PAGE_SIZE, PAGE_SIZE), 0);
	memset(&tr, 0, sizeof(tr));
	assert_int_equal(pthread_create(&t[0], NULL, worker, (void *)1), 0);
	assert_int_equal(pthread_create(&t[1], NULL, worker, (void *)2), 0);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	if (atomic_load(&tr.errors))
		fail_msg("%u violations, first: %s", atomic_load(&tr.errors), tr.first_error);
	print_message("%llu chunks read by the other thread, %llu CAS attempts lost "
		      "to a moving page word\n", (unsigned long long)atomic_load(&tr.cross),
		      (unsigned long long)atomic_load(&tr.lost));
	/* None lost: every chunk written was read, all pages back to 0. */
	assert_int_equal(atomic_load(&tr.written), 2ull * CYCLES);
	assert_int_equal(atomic_load(&tr.read), 2ull * CYCLES);
	for (p = 0; p < NPAGES; p++) {
		assert_int_equal(spn_smb_page_load(&g_smb, p, memory_order_acquire), 0);
		assert_int_equal(atomic_load(&tr.page_use[p]) & 0xFFFF, 0);
		for (l = 0; l < 8; l++)
			for (c = 0; c < SPN_SMB_MAX_CHUNKS_PER_PAGE; c++)
				assert_int_equal(atomic_load(&tr.owners[p][l][c]), 0);
	}
	free(base);
}

/* ---- Producer thread and service thread, through the commit copy -------- */

#define PIPE_CHUNKS 40000u /* chunks the producer writes */

static _Atomic uint32_t pipe_errors; /* failures either side saw */
static uint32_t pipe_layout;	     /* SPN_SMB_PAGE_DIV1 or DIV4 */

/* Producer: pages in pipe_layout, one chunk per packet-ish: 3 fragments
 * whose bytes derive from the chunk id. With DIV1 the service reads the
 * pages in place (no BeingRead) and frees them with plain stores, while
 * this thread CASes the same words to partition and take them. */
static void *pipe_producer(void *arg)
{
	uint32_t id = 0, page = 0, chunk = 0, n = spn_smb_layout_chunks(pipe_layout);

	(void)arg;
	while (id < PIPE_CHUNKS && atomic_load(&pipe_errors) == 0) {
		struct spn_smb_chunk_header *h;
		uint8_t *pl;
		int r;

		(void)spn_smb_try_partition(&g_smb, page, pipe_layout);
		r = spn_smb_try_acquire_write(&g_smb, page, pipe_layout, chunk, 7, id,
					      spn_smb_packets(0, 0), &h);
		if (r == 0) {
			uint32_t k;

			pl = spn_smb_chunk_payload(h);
			for (k = 0; k < 3; k++) {
				spn_smb_chunk_inc_count(h);
				pl[k * 11] = 10; /* compact prefix: 10 bytes */
				memset(pl + k * 11 + 1, (uint8_t)(id + k), 10);
			}
			while ((r = spn_smb_try_complete(&g_smb, page, pipe_layout,
							  chunk)) == -EAGAIN)
				;
			if (r != 0)
				atomic_fetch_add(&pipe_errors, 1);
			id++;
		}
		if (++chunk == n) {
			chunk = 0;
			page = (page + 1) % NPAGES;
		}
	}
	return NULL;
}

/* Service: commit-copies every Complete chunk it finds; ids must arrive
 * each exactly once, with the right bytes. */
static void *pipe_service(void *arg)
{
	static uint8_t seen[PIPE_CHUNKS];
	static uint8_t copy[PAGE_SIZE];
	uint32_t got = 0, page = 0, chunk = 0, n = spn_smb_layout_chunks(pipe_layout);

	(void)arg;
	memset(seen, 0, sizeof(seen));
	while (got < PIPE_CHUNKS && atomic_load(&pipe_errors) == 0) {
		struct smb_chunk_info info;
		int r = smb_chunk_commit_copy(&g_smb, page, chunk, copy, sizeof(copy), &info);

		if (r == 0) {
			uint32_t k, j;
			bool ok = info.writer_id == 7 && info.count == 3 && info.nfrags == 3 &&
				  info.freed && info.chunk_id < PIPE_CHUNKS &&
				  !seen[info.chunk_id];

			for (k = 0; ok && k < 3; k++)
				for (j = 1; j <= 10; j++)
					ok = ok && copy[8 + k * 11 + j] ==
							   (uint8_t)(info.chunk_id + k);
			if (!ok)
				atomic_fetch_add(&pipe_errors, 1);
			else
				seen[info.chunk_id] = 1;
			got++;
		} else if (r != -EBUSY && r != -EAGAIN && r != -EINVAL) {
			atomic_fetch_add(&pipe_errors, 1);
		}
		if (++chunk == n) {
			chunk = 0;
			page = (page + 1) % NPAGES;
		}
	}
	return NULL;
}

static void run_pipeline(uint32_t layout)
{
	pthread_t t[2];
	uint32_t p;
	void *base = aligned_alloc(4096, NPAGES * PAGE_SIZE);

	pipe_layout = layout;
	assert_non_null(base);
	memset(base, 0, NPAGES * PAGE_SIZE);
	assert_int_equal(spn_smb_init(&g_smb, base, NPAGES * PAGE_SIZE, PAGE_SIZE), 0);
	atomic_store(&pipe_errors, 0);
	assert_int_equal(pthread_create(&t[0], NULL, pipe_producer, NULL), 0);
	assert_int_equal(pthread_create(&t[1], NULL, pipe_service, NULL), 0);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	assert_int_equal(atomic_load(&pipe_errors), 0);
	for (p = 0; p < NPAGES; p++)
		assert_int_equal(spn_smb_page_load(&g_smb, p, memory_order_acquire), 0);
	free(base);
}

static void test_producer_service_pipeline(void **state)
{
	(void)state;
	run_pipeline(SPN_SMB_PAGE_DIV4);
}

/* One-chunk pages: the service's lock-free read-in-place path. */
static void test_producer_service_pipeline_div1(void **state)
{
	(void)state;
	run_pipeline(SPN_SMB_PAGE_DIV1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_threads_same_pages),
		cmocka_unit_test(test_producer_service_pipeline),
		cmocka_unit_test(test_producer_service_pipeline_div1),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
