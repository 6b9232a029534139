// SPDX-License-Identifier: Apache-2.0
// Unit tests of the SMB ABI: layouts and chunk sizes for every page size, the geometry rules, and every allowed and forbidden chunk state transition.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "spindle/smb_abi.h"

/* Allocates a zeroed, page-aligned SMB of `pages` pages and sets up *smb. */
static void smb_alloc(struct spn_smb *smb, uint32_t page_size, uint32_t pages)
{
	size_t size = (size_t)page_size * pages;
	void *base = aligned_alloc(4096, size);

	assert_non_null(base);
	memset(base, 0, size);
	assert_int_equal(spn_smb_init(smb, base, size, page_size), 0);
}

static void smb_release(struct spn_smb *smb)
{
	free(smb->base);
}

static uint32_t word_of(struct spn_smb *smb, uint32_t page)
{
	return spn_smb_page_load(smb, page, memory_order_relaxed);
}

static void set_word(struct spn_smb *smb, uint32_t page, uint32_t w)
{
	atomic_store_explicit(&spn_smb_page(smb, page)->header_bitmap, w,
			      memory_order_relaxed);
}

/* ---- Layouts and sizes --------------------------------------------------- */

static void test_layout_chunks(void **state)
{
	static const uint32_t want[8] = { 0, 1, 2, 4, 7, 14, 0, 0 };
	uint32_t l;

	(void)state;
	for (l = 0; l < 8; l++)
		assert_int_equal(spn_smb_layout_chunks(l), want[l]);
}

/* The table of spec/smb-abi.md §3.1, verbatim. */
static void test_chunk_size_table(void **state)
{
	static const struct {
		uint32_t page;
		uint32_t size[5]; /* Div1, Div2, Div4, Div7, Div14 */
	} rows[] = {
		{ 4096, { 4088, 2044, 1020, 584, 292 } },
		{ 8192, { 8184, 4092, 2044, 1168, 584 } },
		{ 16384, { 16376, 8188, 4092, 2336, 1168 } },
		{ 32768, { 32760, 16380, 8188, 4680, 2340 } },
		{ 65536, { 65528, 32764, 16380, 9360, 4680 } },
	};
	size_t r;
	uint32_t l;

	(void)state;
	for (r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		struct spn_smb smb;

		smb_alloc(&smb, rows[r].page, 1);
		for (l = 1; l <= 5; l++) {
			assert_int_equal(spn_smb_chunk_size_for(rows[r].page, l),
					 rows[r].size[l - 1]);
			assert_int_equal(smb.chunk_size[l], rows[r].size[l - 1]);
		}
		assert_int_equal(smb.chunk_size[0], 0);
		assert_int_equal(smb.chunk_size[6], 0);
		assert_int_equal(smb.chunk_size[7], 0);
		smb_release(&smb);
	}
}

/* Every ABI page size (multiples of 4 KiB up to 64 KiB), every layout:
 * chunks are 4-aligned, fit the page, waste less than 4 bytes per chunk,
 * and sit where the spec says. */
static void test_chunk_geometry_all_page_sizes(void **state)
{
	uint32_t ps, l, i;

	(void)state;
	for (ps = 4096; ps <= 65536; ps += 4096) {
		struct spn_smb smb;

		smb_alloc(&smb, ps, 3);
		for (l = 1; l <= 5; l++) {
			uint32_t n = spn_smb_layout_chunks(l);
			uint32_t cs = smb.chunk_size[l];

			assert_int_equal(cs, ((ps - 8) / n) & ~3u);
			assert_int_equal(cs % 4, 0);
			assert_true(cs <= SPN_SMB_MAX_CHUNK_SIZE);
			assert_true(8 + n * cs <= ps);
			assert_true(ps - 8 - n * cs < 4 * n);
			for (i = 0; i < n; i++) {
				uint8_t *c = (uint8_t *)spn_smb_chunk(&smb, 2, l, i);

				assert_ptr_equal(c, smb.base + 2 * (size_t)ps + 8 + (size_t)i * cs);
				assert_ptr_equal(spn_smb_chunk_payload(
							 (struct spn_smb_chunk_header *)(void *)c),
						 c + 8);
			}
		}
		smb_release(&smb);
	}
}

static void test_geometry_rules(void **state)
{
	const char *why = NULL;
	uint32_t size, page;

	(void)state;
	assert_int_equal(spn_smb_check_geometry(262144, 4096, &why), 0);
	assert_null(why);
	assert_int_equal(spn_smb_check_geometry(65536, 65536, NULL), 0);
	assert_int_equal(spn_smb_check_geometry(3 * 12288, 12288, NULL), 0);
	assert_int_equal(spn_smb_check_geometry(33554432, 4096, NULL), 0);
	assert_int_equal(spn_smb_check_geometry(262144, 2048, &why), -EINVAL);
	assert_non_null(why);
	assert_int_equal(spn_smb_check_geometry(262144, 131072, &why), -EINVAL);
	assert_int_equal(spn_smb_check_geometry(262144, 6000, &why), -EINVAL);
	assert_int_equal(spn_smb_check_geometry(4096, 8192, &why), -EINVAL);
	assert_int_equal(spn_smb_check_geometry(33554432 + 4096, 4096, &why), -EINVAL);
	assert_int_equal(spn_smb_check_geometry(4096 * 3 + 100, 4096, &why), -EINVAL);
	assert_int_equal(spn_smb_check_geometry(0, 4096, &why), -EINVAL);

	/* producer-port.md §7. */
	assert_true(spn_smb_service_sizes(0, 0, &size, &page));
	assert_int_equal(size, 262144);
	assert_int_equal(page, 4096);
	assert_true(spn_smb_service_sizes(1048576, 8192, &size, &page));
	assert_int_equal(size, 1048576);
	assert_int_equal(page, 8192);
	assert_true(spn_smb_service_sizes(3 * 16384, 16384, &size, &page));
	assert_int_equal(size, 3 * 16384);
	assert_int_equal(page, 16384);
	/* Clamped, then valid. */
	assert_true(spn_smb_service_sizes(64u << 20, 4096, &size, &page));
	assert_int_equal(size, 33554432);
	assert_int_equal(page, 4096);
	assert_true(spn_smb_service_sizes(262144, 65536, &size, &page));
	assert_int_equal(size, 262144);
	assert_int_equal(page, 32768);
	/* Invalid: both defaults, not just the broken one. */
	assert_false(spn_smb_service_sizes(1048576, 12288, &size, &page));
	assert_int_equal(size, 262144);
	assert_int_equal(page, 4096);
	assert_false(spn_smb_service_sizes(1048576, 2048, &size, &page));
	assert_int_equal(page, 4096);
	assert_false(spn_smb_service_sizes(5000, 4096, &size, &page));
	assert_int_equal(size, 262144);
	assert_false(spn_smb_service_sizes(4096, 8192, &size, &page));
	assert_int_equal(size, 262144);
	assert_int_equal(page, 4096);
	assert_false(spn_smb_service_sizes(1048576, 4096 + 1, &size, &page));
}

static void test_init_refuses(void **state)
{
	struct spn_smb smb;
	void *base = aligned_alloc(4096, 8192);

	(void)state;
	assert_non_null(base);
	assert_int_equal(spn_smb_init(&smb, NULL, 8192, 4096), -EINVAL);
	assert_int_equal(spn_smb_init(&smb, (uint8_t *)base + 4, 4096, 4096), -EINVAL);
	assert_int_equal(spn_smb_init(&smb, base, 8192, 3000), -EINVAL);
	assert_int_equal(spn_smb_init(&smb, base, 6000, 4096), -EINVAL);
	assert_int_equal(spn_smb_init(&smb, base, 8192, 4096), 0);
	assert_int_equal(smb.num_pages, 2);
	assert_int_equal(smb.size, 8192);
	free(base);
}

static void test_word_valid(void **state)
{
	(void)state;
	assert_true(spn_smb_word_valid(0));
	assert_true(spn_smb_word_valid(0x10000003));		/* Div1, chunk 0 complete */
	assert_false(spn_smb_word_valid(0x1000000C));		/* Div1, chunk 1 set */
	assert_true(spn_smb_word_valid(0x5FFFFFFF));		/* Div14, all complete */
	assert_true(spn_smb_word_valid(0x40003FFF));		/* Div7, 7 chunks */
	assert_false(spn_smb_word_valid(0x4000C000));		/* Div7, chunk 7 */
	assert_false(spn_smb_word_valid(0x00000001));		/* unpartitioned, state set */
	assert_true(spn_smb_word_valid(0x60000000));		/* reserved layout, no states */
	assert_false(spn_smb_word_valid(0x70000001));
	assert_false(spn_smb_word_valid(0x90000000));		/* bit 31 */
	assert_string_equal(spn_smb_state_name(SPN_SMB_BEING_READ), "being_read");
	assert_string_equal(spn_smb_layout_name(SPN_SMB_PAGE_DIV14), "div14");
	assert_string_equal(spn_smb_layout_name(7), "reserved");
}

/* The packets word: count in bits 0-9, flags in 10-15; byte 6 = count & 0xFF,
 * byte 7 = (count >> 8) | (flags << 2) (spec §4). */
static void test_packets_encoding(void **state)
{
	struct spn_smb smb;
	struct spn_smb_chunk_header *h = NULL;
	uint8_t *raw;

	(void)state;
	smb_alloc(&smb, 4096, 1);
	assert_int_equal(spn_smb_try_partition(&smb, 0, SPN_SMB_PAGE_DIV1), 0);
	assert_int_equal(spn_smb_try_acquire_write(&smb, 0, SPN_SMB_PAGE_DIV1, 0, 0x1234,
						   0xA1B2C3D4,
						   spn_smb_packets(0x2AB, 0x05), &h),
			 0);
	raw = (uint8_t *)h;
	assert_int_equal(raw[0], 0xD4);
	assert_int_equal(raw[3], 0xA1);
	assert_int_equal(raw[4], 0x34);
	assert_int_equal(raw[5], 0x12);
	assert_int_equal(raw[6], 0xAB);
	assert_int_equal(raw[7], 0x02 | (0x05 << 2));
	assert_int_equal(spn_smb_packets_count(spn_smb_packets(0x2AB, 5)), 0x2AB);
	assert_int_equal(spn_smb_packets_flags(spn_smb_packets(0x2AB, 5)), 5);
	/* Bit masks of byte 7 for each flag. */
	assert_int_equal(spn_smb_packets(0, SPN_SMB_FIRST_CONTINUES) >> 8, 0x04);
	assert_int_equal(spn_smb_packets(0, SPN_SMB_LAST_CONTINUES) >> 8, 0x08);
	assert_int_equal(spn_smb_packets(0, SPN_SMB_NEEDS_PATCHING) >> 8, 0x10);
	assert_int_equal(spn_smb_packets(1023, 0x3F), 0xFFFF);

	/* Producer updates while writing. */
	spn_smb_chunk_set_packets(h, spn_smb_packets(1, SPN_SMB_FIRST_CONTINUES));
	assert_int_equal(spn_smb_chunk_inc_count(h), 2);
	assert_int_equal(spn_smb_chunk_inc_count(h), 3);
	spn_smb_chunk_set_flags(h, SPN_SMB_LAST_CONTINUES | SPN_SMB_NEEDS_PATCHING);
	assert_int_equal(atomic_load(&h->packets), spn_smb_packets(3, 0x07));
	spn_smb_chunk_clear_flags(h, SPN_SMB_NEEDS_PATCHING);
	assert_int_equal(atomic_load(&h->packets), spn_smb_packets(3, 0x03));
	assert_int_equal(raw[6], 3);
	assert_int_equal(raw[7], 0x0C);
	smb_release(&smb);
}

/* ---- Transitions ----------------------------------------------------------- */

/* The six chunk transitions, as (operation, from state, to state). */
enum op {
	OP_WRITE, OP_COMPLETE, OP_READ, OP_FREE_READ, OP_FREE_COMPLETE,
	OP_FREE_WRITTEN, OP_N
};
static const uint32_t op_from[OP_N] = {
	SPN_SMB_FREE, SPN_SMB_BEING_WRITTEN, SPN_SMB_COMPLETE,
	SPN_SMB_BEING_READ, SPN_SMB_COMPLETE, SPN_SMB_BEING_WRITTEN,
};
static const uint32_t op_to[OP_N] = {
	SPN_SMB_BEING_WRITTEN, SPN_SMB_COMPLETE, SPN_SMB_BEING_READ,
	SPN_SMB_FREE, SPN_SMB_FREE, SPN_SMB_FREE,
};

static int run_op(struct spn_smb *smb, enum op op, uint32_t page, uint32_t layout,
		  uint32_t chunk, uint32_t *layout_out)
{
	struct spn_smb_chunk_header *h = NULL;

	switch (op) {
	case OP_WRITE:
		return spn_smb_try_acquire_write(smb, page, layout, chunk, 77,
						 1000 + chunk, spn_smb_packets(1, 1), &h);
	case OP_COMPLETE:
		return spn_smb_try_complete(smb, page, layout, chunk);
	case OP_READ:
		return spn_smb_try_acquire_read(smb, page, chunk, layout_out);
	case OP_FREE_READ:
		return spn_smb_try_free(smb, page, layout, chunk, SPN_SMB_BEING_READ);
	case OP_FREE_WRITTEN:
		return spn_smb_try_free(smb, page, layout, chunk, SPN_SMB_BEING_WRITTEN);
	default:
		return spn_smb_try_free(smb, page, layout, chunk, SPN_SMB_COMPLETE);
	}
}

static void put_header(struct spn_smb_chunk_header *h, uint32_t id, uint16_t w,
		       uint16_t p)
{
	atomic_store(&h->chunk_id, id);
	atomic_store(&h->writer_id, w);
	atomic_store(&h->packets, p);
}

/* One operation from one state, with the other chunks of the page in the
 * states `others` gives (chunk bits of `chunk` clear). */
static void check_one(struct spn_smb *smb, enum op op, uint32_t layout,
		      uint32_t chunk, uint32_t from, uint32_t others)
{
	const uint32_t page = 1;
	uint32_t w0 = (layout << 28) | others | (from << (2 * chunk));
	struct spn_smb_chunk_header *h = spn_smb_chunk(smb, page, layout, chunk);
	uint32_t got_layout = 99, want;
	int r;

	set_word(smb, page, w0);
	put_header(h, 0xCAFEF00D, 0x4242, 0x1111);
	r = run_op(smb, op, page, layout, chunk, &got_layout);
	if (from != op_from[op]) {
		/* Forbidden: nothing changes. */
		assert_int_equal(r, -EBUSY);
		assert_int_equal(word_of(smb, page), w0);
		assert_int_equal(atomic_load(&h->chunk_id), 0xCAFEF00D);
		assert_int_equal(atomic_load(&h->packets), 0x1111);
		return;
	}
	assert_int_equal(r, 0);
	want = (w0 & ~(3u << (2 * chunk))) | (op_to[op] << (2 * chunk));
	if (op_to[op] == SPN_SMB_FREE && (want & SPN_SMB_STATES_MASK) == 0)
		want = 0; /* un-partitioned */
	assert_int_equal(word_of(smb, page), want);
	switch (op) {
	case OP_WRITE:
		assert_int_equal(atomic_load(&h->chunk_id), 1000 + chunk);
		assert_int_equal(atomic_load(&h->writer_id), 77);
		assert_int_equal(atomic_load(&h->packets), spn_smb_packets(1, 1));
		break;
	case OP_READ:
		assert_int_equal(got_layout, layout);
		/* fallthrough */
	case OP_COMPLETE:
		assert_int_equal(atomic_load(&h->chunk_id), 0xCAFEF00D);
		break;
	default:
		assert_int_equal(atomic_load(&h->chunk_id), 0);
		assert_int_equal(atomic_load(&h->writer_id), 0);
		assert_int_equal(atomic_load(&h->packets), 0);
	}
}

/* Every operation from every state, for every chunk of every layout of the
 * spec's page sizes, with the rest of the page free and with it busy. */
static void test_every_transition(void **state)
{
	static const uint32_t sizes[] = { 4096, 8192, 16384, 32768, 65536 };
	size_t s;
	uint32_t l, c, j, from;
	int op;

	(void)state;
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct spn_smb smb;

		smb_alloc(&smb, sizes[s], 2);
		for (l = 1; l <= 5; l++) {
			uint32_t n = spn_smb_layout_chunks(l);

			for (c = 0; c < n; c++) {
				uint32_t busy = 0;

				for (j = 0; j < n; j++)
					if (j != c)
						busy |= ((j + 1) % 4) << (2 * j);
				for (from = 0; from < 4; from++)
					for (op = 0; op < OP_N; op++) {
						check_one(&smb, op, l, c, from, 0);
						check_one(&smb, op, l, c, from, busy);
					}
			}
		}
		smb_release(&smb);
	}
}

/* Requests that are wrong in themselves, or name a chunk in another layout. */
static void test_bad_requests(void **state)
{
	struct spn_smb smb;
	struct spn_smb_chunk_header *h = NULL;
	uint32_t layout, l;

	(void)state;
	smb_alloc(&smb, 4096, 2);
	/* Page out of range. */
	assert_int_equal(spn_smb_try_partition(&smb, 2, SPN_SMB_PAGE_DIV1), -EINVAL);
	assert_int_equal(spn_smb_try_acquire_write(&smb, 2, 1, 0, 1, 0, 0, &h), -EINVAL);
	assert_int_equal(spn_smb_try_complete(&smb, 2, 1, 0), -EINVAL);
	assert_int_equal(spn_smb_try_acquire_read(&smb, 2, 0, &layout), -EINVAL);
	assert_int_equal(spn_smb_try_free(&smb, 2, 1, 0, SPN_SMB_BEING_READ), -EINVAL);
	assert_int_equal(spn_smb_try_acquire_read(&smb, UINT32_MAX, 0, &layout), -EINVAL);
	/* Layouts without chunks. */
	for (l = 0; l < 8; l++) {
		if (spn_smb_layout_chunks(l))
			continue;
		assert_int_equal(spn_smb_try_partition(&smb, 0, l), -EINVAL);
		assert_int_equal(spn_smb_try_acquire_write(&smb, 0, l, 0, 1, 0, 0, &h),
				 -EINVAL);
		assert_int_equal(spn_smb_try_complete(&smb, 0, l, 0), -EINVAL);
		assert_int_equal(spn_smb_try_free(&smb, 0, l, 0, SPN_SMB_BEING_READ),
				 -EINVAL);
		/* A page word claiming that layout has no chunk to read. */
		set_word(&smb, 0, (l << 28) | 3);
		assert_int_equal(spn_smb_try_acquire_read(&smb, 0, 0, &layout), -EINVAL);
		assert_int_equal(word_of(&smb, 0), (l << 28) | 3);
	}
	set_word(&smb, 0, 0);
	/* Chunk index past the layout. */
	assert_int_equal(spn_smb_try_acquire_write(&smb, 0, SPN_SMB_PAGE_DIV7, 7, 1, 0, 0, &h),
			 -EINVAL);
	assert_int_equal(spn_smb_try_complete(&smb, 0, SPN_SMB_PAGE_DIV4, 4), -EINVAL);
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV2, 2, SPN_SMB_COMPLETE),
			 -EINVAL);
	set_word(&smb, 0, (SPN_SMB_PAGE_DIV4 << 28) | 0xFF);
	assert_int_equal(spn_smb_try_acquire_read(&smb, 0, 4, &layout), -EINVAL);
	assert_int_equal(spn_smb_try_acquire_read(&smb, 0, 14, &layout), -EINVAL);
	/* Free only from BeingRead, Complete or BeingWritten. */
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV4, 0, SPN_SMB_FREE), -EINVAL);
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV4, 0, 7), -EINVAL);
	/* The page has another layout than the caller thinks. */
	set_word(&smb, 0, (SPN_SMB_PAGE_DIV4 << 28) | (1 << 2) | (2 << 4) | (3 << 6));
	assert_int_equal(spn_smb_try_acquire_write(&smb, 0, SPN_SMB_PAGE_DIV2, 0, 1, 0, 0, &h),
			 -EBUSY);
	assert_int_equal(spn_smb_try_complete(&smb, 0, SPN_SMB_PAGE_DIV14, 1), -EBUSY);
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV7, 2, SPN_SMB_BEING_READ),
			 -EBUSY);
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV7, 3, SPN_SMB_COMPLETE),
			 -EBUSY);
	/* Writing into a page nobody partitioned. */
	assert_int_equal(spn_smb_try_acquire_write(&smb, 1, SPN_SMB_PAGE_DIV1, 0, 1, 0, 0, &h),
			 -EBUSY);
	assert_int_equal(word_of(&smb, 1), 0);
	smb_release(&smb);
}

static void test_partition_and_unpartition(void **state)
{
	struct spn_smb smb;
	struct spn_smb_chunk_header *h = NULL;
	uint32_t l, c, layout, other;

	(void)state;
	smb_alloc(&smb, 8192, 1);
	for (l = 1; l <= 5; l++) {
		uint32_t n = spn_smb_layout_chunks(l);

		assert_int_equal(spn_smb_try_partition(&smb, 0, l), 0);
		assert_int_equal(word_of(&smb, 0), l << 28);
		for (other = 1; other <= 5; other++)
			assert_int_equal(spn_smb_try_partition(&smb, 0, other), -EBUSY);
		for (c = 0; c < n; c++) {
			assert_int_equal(spn_smb_try_acquire_write(&smb, 0, l, c, 3, c,
								   0, &h), 0);
			assert_ptr_equal(h, spn_smb_chunk(&smb, 0, l, c));
			assert_int_equal(spn_smb_try_complete(&smb, 0, l, c), 0);
		}
		assert_int_equal(word_of(&smb, 0),
				 (l << 28) | ((1u << (2 * n)) - 1));
		/* Read and free in reverse; the page stays partitioned until the
		 * last chunk is free, then its word is exactly 0. */
		for (c = n; c-- > 0;) {
			assert_int_equal(spn_smb_try_acquire_read(&smb, 0, c, &layout), 0);
			assert_int_equal(layout, l);
			assert_int_equal(spn_smb_try_free(&smb, 0, l, c, SPN_SMB_BEING_READ), 0);
			assert_int_equal(word_of(&smb, 0), c ? (l << 28) | ((1u << (2 * c)) - 1) : 0);
		}
		/* The un-partitioned page can be partitioned again. */
		assert_int_equal(spn_smb_try_partition(&smb, 0, l), 0);
		assert_int_equal(word_of(&smb, 0), l << 28);
		set_word(&smb, 0, 0);
	}
	/* Chunk 13's state lives in bits 27:26. */
	assert_int_equal(spn_smb_try_partition(&smb, 0, SPN_SMB_PAGE_DIV14), 0);
	assert_int_equal(spn_smb_try_acquire_write(&smb, 0, SPN_SMB_PAGE_DIV14, 13, 1, 0, 0, &h),
			 0);
	assert_int_equal(word_of(&smb, 0), 0x54000000);
	assert_int_equal(spn_smb_try_complete(&smb, 0, SPN_SMB_PAGE_DIV14, 13), 0);
	assert_int_equal(word_of(&smb, 0), 0x5C000000);
	/* Emulation: the producer frees a Complete chunk itself. */
	assert_int_equal(spn_smb_try_free(&smb, 0, SPN_SMB_PAGE_DIV14, 13, SPN_SMB_COMPLETE), 0);
	assert_int_equal(word_of(&smb, 0), 0);
	smb_release(&smb);
}

/* Partition and take chunk 0 in one CAS: the same word and header as
 * partition then acquire, and only from an un-partitioned page. */
static void test_partition_acquire(void **state)
{
	struct spn_smb smb;
	struct spn_smb_chunk_header *h = NULL, *h2 = NULL;
	uint32_t l;

	(void)state;
	smb_alloc(&smb, 8192, 2);
	for (l = 1; l <= 5; l++) {
		assert_int_equal(spn_smb_try_partition_acquire(&smb, 0, l, 7, 42,
							       spn_smb_packets(1, SPN_SMB_FIRST_CONTINUES),
							       &h), 0);
		assert_ptr_equal(h, spn_smb_chunk(&smb, 0, l, 0));
		assert_int_equal(word_of(&smb, 0), (l << 28) | SPN_SMB_BEING_WRITTEN);
		assert_int_equal(atomic_load(&h->chunk_id), 42);
		assert_int_equal(atomic_load(&h->writer_id), 7);
		assert_int_equal(atomic_load(&h->packets),
				 spn_smb_packets(1, SPN_SMB_FIRST_CONTINUES));
		/* Partitioned now: neither way works again. */
		assert_int_equal(spn_smb_try_partition_acquire(&smb, 0, l, 7, 43, 0, &h2),
				 -EBUSY);
		assert_int_equal(spn_smb_try_partition(&smb, 0, l), -EBUSY);
		assert_null(h2);
		/* The rest of the page is Free for the usual acquire. */
		if (spn_smb_layout_chunks(l) > 1)
			assert_int_equal(spn_smb_try_acquire_write(&smb, 0, l, 1, 7, 43, 0,
								   &h2), 0);
		assert_int_equal(spn_smb_try_complete(&smb, 0, l, 0), 0);
		assert_int_equal(spn_smb_try_free(&smb, 0, l, 0, SPN_SMB_COMPLETE), 0);
		if (spn_smb_layout_chunks(l) > 1)
			assert_int_equal(spn_smb_try_free(&smb, 0, l, 1,
							  SPN_SMB_BEING_WRITTEN), 0);
		/* Last chunk out: un-partitioned, header zeroed. */
		assert_int_equal(word_of(&smb, 0), 0);
		assert_int_equal(atomic_load(&h->writer_id), 0);
		h2 = NULL;
	}
	assert_int_equal(spn_smb_try_partition_acquire(&smb, 2, 1, 7, 0, 0, &h), -EINVAL);
	assert_int_equal(spn_smb_try_partition_acquire(&smb, 0, 0, 7, 0, 0, &h), -EINVAL);
	assert_int_equal(spn_smb_try_partition_acquire(&smb, 0, 6, 7, 0, 0, &h), -EINVAL);
	assert_int_equal(word_of(&smb, 0), 0);
	assert_int_equal(word_of(&smb, 1), 0);
	smb_release(&smb);
}

static void test_scrape_header(void **state)
{
	struct spn_smb smb;
	struct spn_smb_chunk_header *h = NULL;
	struct spn_smb_scrape s;
	uint32_t layout;

	(void)state;
	smb_alloc(&smb, 4096, 1);
	assert_int_equal(spn_smb_scrape_header(&smb, 1, 0, &s), -EINVAL);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 0, &s), -ENOENT);
	assert_int_equal(spn_smb_try_partition(&smb, 0, SPN_SMB_PAGE_DIV2), 0);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), -ENOENT);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 2, &s), -ENOENT);
	assert_int_equal(spn_smb_try_acquire_write(&smb, 0, SPN_SMB_PAGE_DIV2, 1, 9, 44,
						   spn_smb_packets(0, 0), &h), 0);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), -ENODATA);
	spn_smb_chunk_inc_count(h);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), -ENODATA);
	spn_smb_chunk_inc_count(h);
	spn_smb_chunk_set_flags(h, SPN_SMB_LAST_CONTINUES);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), 0);
	assert_ptr_equal(s.hdr, h);
	assert_int_equal(s.layout, SPN_SMB_PAGE_DIV2);
	assert_int_equal(s.size, 2044);
	assert_int_equal(s.state, SPN_SMB_BEING_WRITTEN);
	assert_int_equal(s.chunk_id, 44);
	assert_int_equal(s.writer_id, 9);
	assert_int_equal(s.packets, spn_smb_packets(2, SPN_SMB_LAST_CONTINUES));
	/* Scraping takes nothing. */
	assert_int_equal(word_of(&smb, 0), (2u << 28) | (1u << 2));
	/* A Complete chunk is worth copying whatever its count. */
	spn_smb_chunk_set_packets(h, 0);
	assert_int_equal(spn_smb_try_complete(&smb, 0, SPN_SMB_PAGE_DIV2, 1), 0);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), 0);
	assert_int_equal(s.state, SPN_SMB_COMPLETE);
	/* Being read: the service's own, not scraped. */
	assert_int_equal(spn_smb_try_acquire_read(&smb, 0, 1, &layout), 0);
	assert_int_equal(spn_smb_scrape_header(&smb, 0, 1, &s), -ENOENT);
	smb_release(&smb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_chunks),
		cmocka_unit_test(test_chunk_size_table),
		cmocka_unit_test(test_chunk_geometry_all_page_sizes),
		cmocka_unit_test(test_geometry_rules),
		cmocka_unit_test(test_init_refuses),
		cmocka_unit_test(test_word_valid),
		cmocka_unit_test(test_packets_encoding),
		cmocka_unit_test(test_every_transition),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_partition_and_unpartition),
		cmocka_unit_test(test_partition_acquire),
		cmocka_unit_test(test_scrape_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
