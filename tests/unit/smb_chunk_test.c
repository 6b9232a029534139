// SPDX-License-Identifier: Apache-2.0
// Unit tests of the service's chunk copy-out and validation: fragments, malformed and hostile chunks, inputs right before a PROT_NONE guard page.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "smb/chunk_validate.h"
#include "spindle/smb_abi.h"

/* ---- Building chunks ------------------------------------------------------- */

/* A chunk being assembled in a private buffer. */
struct cbuf {
	uint8_t b[65536]; /* header + payload */
	uint32_t len;	  /* bytes written so far */
};

static void cb_header(struct cbuf *c, uint32_t id, uint16_t writer, uint32_t count,
		      uint32_t flags)
{
	uint16_t p = spn_smb_packets(count, flags);

	memset(c->b, 0, sizeof(c->b));
	c->b[0] = (uint8_t)id;
	c->b[1] = (uint8_t)(id >> 8);
	c->b[2] = (uint8_t)(id >> 16);
	c->b[3] = (uint8_t)(id >> 24);
	c->b[4] = (uint8_t)writer;
	c->b[5] = (uint8_t)(writer >> 8);
	c->b[6] = (uint8_t)p;
	c->b[7] = (uint8_t)(p >> 8);
	c->len = 8;
}

static void cb_bytes(struct cbuf *c, const void *p, uint32_t n)
{
	memcpy(c->b + c->len, p, n);
	c->len += n;
}

/* A fragment of `size` bytes of `fill` with the writer's 4-byte redundant
 * size prefix. */
static void cb_frag4(struct cbuf *c, uint32_t size, uint8_t fill)
{
	uint8_t pre[4] = {
		(uint8_t)((size & 0x7F) | 0x80), (uint8_t)(((size >> 7) & 0x7F) | 0x80),
		(uint8_t)(((size >> 14) & 0x7F) | 0x80), (uint8_t)(size >> 21),
	};

	cb_bytes(c, pre, 4);
	memset(c->b + c->len, fill, size);
	c->len += size;
}

/* A fragment with a compact 1-byte prefix (newer writers, size < 127). */
static void cb_frag1(struct cbuf *c, uint8_t size, uint8_t fill)
{
	cb_bytes(c, &size, 1);
	memset(c->b + c->len, fill, size);
	c->len += size;
}

/* ---- Fragments ----------------------------------------------------------- */

static void test_frag_parse(void **state)
{
	static const uint8_t p300[] = { 0xAC, 0x82, 0x80, 0x00 };
	static const uint8_t p0[] = { 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t p2b[] = { 0xAC, 0x02 };
	static const uint8_t five[] = { 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0 };
	static const uint8_t drop[] = { 0xFF, 0xFF, 0xFF, 0x7F };
	static const uint8_t huge[] = { 0xFE, 0xFF, 0xFF, 0x7F, 1, 2, 3 };
	uint8_t buf[400];
	struct smb_frag f;

	(void)state;
	memset(buf, 0x11, sizeof(buf));
	/* 300 as the writers' redundant 4-byte varint (spec §6.1 example). */
	memcpy(buf, p300, 4);
	assert_int_equal(smb_frag_parse(buf, 304, 0, &f), 304);
	assert_int_equal(f.off, 4);
	assert_int_equal(f.size, 300);
	assert_int_equal(smb_frag_parse(buf, 303, 0, &f), -EBADMSG);
	/* Same size, minimal 2-byte varint. */
	memcpy(buf, p2b, 2);
	assert_int_equal(smb_frag_parse(buf, 302, 0, &f), 302);
	assert_int_equal(f.off, 2);
	/* Empty fragment, redundant and compact. */
	memcpy(buf + 10, p0, 4);
	assert_int_equal(smb_frag_parse(buf, 14, 10, &f), 4);
	assert_int_equal(f.size, 0);
	buf[20] = 0;
	assert_int_equal(smb_frag_parse(buf, 21, 20, &f), 1);
	assert_int_equal(f.off, 21);
	assert_int_equal(f.size, 0);
	/* Compact small size. */
	buf[30] = 5;
	assert_int_equal(smb_frag_parse(buf, 36, 30, &f), 6);
	assert_int_equal(smb_frag_parse(buf, 35, 30, &f), -EBADMSG);
	/* Varint longer than 4 bytes. */
	assert_int_equal(smb_frag_parse(five, sizeof(five), 0, &f), -EBADMSG);
	/* Varint cut by the payload end. */
	assert_int_equal(smb_frag_parse(p300, 3, 0, &f), -EBADMSG);
	assert_int_equal(smb_frag_parse(p300, 1, 0, &f), -EBADMSG);
	/* No room for a prefix at all. */
	assert_int_equal(smb_frag_parse(buf, 10, 10, &f), -EBADMSG);
	assert_int_equal(smb_frag_parse(buf, 10, 11, &f), -EBADMSG);
	assert_int_equal(smb_frag_parse(buf, 0, 0, &f), -EBADMSG);
	/* Drop marker, whatever follows. */
	assert_int_equal(smb_frag_parse(drop, 4, 0, &f), -ENOMSG);
	/* Largest size: far past the end, no overflow. */
	assert_int_equal(smb_frag_parse(huge, sizeof(huge), 0, &f), -EBADMSG);
}

/* The spec's fragment rule byte by byte (§6.1, §6.2), as a reference. */
static int ref_frag(const uint8_t *p, uint32_t len, uint32_t pos,
		    uint32_t *size)
{
	uint32_t sz = 0, n = 0;

	for (;;) {
		if (n == 4 || pos + n >= len)
			return -EBADMSG;
		sz |= (uint32_t)(p[pos + n] & 0x7F) << (7 * n);
		if (!(p[pos + n++] & 0x80))
			break;
	}
	if (sz == SPN_SMB_DROP_PACKET_SIZE)
		return -ENOMSG;
	if ((uint64_t)pos + n + sz > len)
		return -EBADMSG;
	*size = sz;
	return (int)(n + sz);
}

/* The prefix decoder agrees with the reference on every shape of prefix,
 * with 4 or more bytes left (one-load path) and fewer (byte path). */
static void test_frag_parse_differential(void **state)
{
	static const uint8_t shapes[] = { 0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF };
	uint8_t buf[64];
	uint32_t seed = 12345;

	(void)state;
	for (int k = 0; k < 6 * 6 * 6 * 6 * 6; k++) {
		int v = k;

		for (int i = 0; i < 5; i++, v /= 6)
			buf[i] = shapes[v % 6];
		for (int i = 5; i < 64; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = (uint8_t)(seed >> 16);
		}
		for (uint32_t len = 0; len <= 64; len++) {
			for (uint32_t pos = 0; pos < 3; pos++) {
				struct smb_frag f;
				uint32_t rsz = 0;
				int want = pos < len ? ref_frag(buf, len, pos, &rsz) :
						       -EBADMSG;
				int got = smb_frag_parse(buf, len, pos, &f);

				assert_int_equal(got, want);
				if (want >= 0) {
					assert_int_equal(f.size, rsz);
					assert_int_equal(f.off, pos + (uint32_t)want - rsz);
				}
			}
		}
	}
	/* Sizes of each prefix length near the payload end. */
	memset(buf, 0, sizeof(buf));
	buf[0] = 0x85;
	buf[1] = 0x80;
	buf[2] = 0x00; /* 5 in a 3-byte varint */
	{
		struct smb_frag f;

		assert_int_equal(smb_frag_parse(buf, 8, 0, &f), 8);
		assert_int_equal(f.off, 3);
		assert_int_equal(f.size, 5);
		assert_int_equal(smb_frag_parse(buf, 7, 0, &f), -EBADMSG);
	}
}

/* ---- Whole chunks ---------------------------------------------------------- */

static void test_validate_good(void **state)
{
	static struct cbuf c;
	struct smb_chunk_info info;

	(void)state;
	cb_header(&c, 0xFFFFFFFF, 32767, 5,
		  SPN_SMB_FIRST_CONTINUES | SPN_SMB_LAST_CONTINUES);
	cb_frag4(&c, 100, 0xA1);
	cb_frag4(&c, 0, 0);
	cb_frag1(&c, 7, 0xB2);
	c.b[c.len++] = 0; /* empty fragment closing a pre-counted packet */
	cb_frag4(&c, 300, 0xC3);
	assert_int_equal(smb_chunk_validate(c.b, 584, &info), 0);
	assert_int_equal(info.end, SMB_CHUNK_OK);
	assert_null(info.why);
	assert_int_equal(info.size, 584);
	assert_int_equal(info.chunk_id, 0xFFFFFFFF);
	assert_int_equal(info.writer_id, 32767);
	assert_int_equal(info.count, 5);
	assert_int_equal(info.flags, 3);
	assert_int_equal(info.nfrags, 5);
	assert_int_equal(info.used, c.len - 8);

	/* Filled to the last byte. */
	cb_header(&c, 1, 1, 1, 0);
	cb_frag4(&c, 292 - 8 - 4, 0xEE);
	assert_int_equal(c.len, 292);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), 0);
	assert_int_equal(info.used, 284);

	/* No fragments, header only. */
	cb_header(&c, 7, 1, 0, 0);
	assert_int_equal(smb_chunk_validate(c.b, 8, &info), 0);
	assert_int_equal(info.nfrags, 0);
	assert_int_equal(smb_chunk_validate(c.b, 65535, &info), 0);
}

static void test_validate_bad_header(void **state)
{
	static struct cbuf c;
	struct smb_chunk_info info;

	(void)state;
	cb_header(&c, 1, 0, 1, 0);
	cb_frag4(&c, 10, 1);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), -EBADMSG);
	assert_int_equal(info.end, SMB_CHUNK_BAD_HEADER);
	assert_int_equal(info.nfrags, 0);
	assert_non_null(info.why);
	c.b[4] = 0x00;
	c.b[5] = 0x80; /* 32768 */
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), -EBADMSG);
	assert_int_equal(info.end, SMB_CHUNK_BAD_HEADER);
	c.b[5] = 0x7F;
	c.b[4] = 0xFF; /* 32767 */
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), 0);
	/* Sizes a chunk cannot have. */
	assert_int_equal(smb_chunk_validate(c.b, 7, &info), -EINVAL);
	assert_int_equal(smb_chunk_validate(c.b, 0, &info), -EINVAL);
	assert_int_equal(smb_chunk_validate(c.b, 65536, &info), -EINVAL);
	assert_non_null(info.why);
}

static void test_validate_bad_fragments(void **state)
{
	static struct cbuf c;
	struct smb_chunk_info info;

	(void)state;
	/* More fragments counted than the payload holds. */
	cb_header(&c, 1, 1, 3, 0);
	cb_frag4(&c, 50, 1);
	cb_frag4(&c, 292 - 8 - 54 - 4, 2);
	assert_int_equal(c.len, 292);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), -EBADMSG);
	assert_int_equal(info.end, SMB_CHUNK_BAD_FRAGMENT);
	assert_int_equal(info.nfrags, 2);
	assert_int_equal(info.used, 284);
	assert_non_null(info.why);

	/* Second fragment claims more than is left. */
	cb_header(&c, 1, 1, 3, 0);
	cb_frag4(&c, 20, 1);
	cb_frag4(&c, 1000, 2);
	assert_int_equal(smb_chunk_validate(c.b, 584, &info), -EBADMSG);
	assert_int_equal(info.nfrags, 1);
	assert_int_equal(info.used, 24);

	/* Varint of 5 bytes. */
	cb_header(&c, 1, 1, 2, 0);
	cb_frag1(&c, 3, 1);
	cb_bytes(&c, "\x81\x80\x80\x80\x00", 5);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), -EBADMSG);
	assert_int_equal(info.end, SMB_CHUNK_BAD_FRAGMENT);
	assert_int_equal(info.nfrags, 1);

	/* Count at its 10-bit maximum, all empty fragments but one short. */
	cb_header(&c, 1, 1, 1023, 0);
	memset(c.b + 8, 0, 1022);
	assert_int_equal(smb_chunk_validate(c.b, 8 + 1022, &info), -EBADMSG);
	assert_int_equal(info.nfrags, 1022);
	assert_int_equal(smb_chunk_validate(c.b, 8 + 1023, &info), 0);
	assert_int_equal(info.nfrags, 1023);
}

/*
 * The whole-chunk walk (with its fast path for 4-byte prefixes) against a
 * walk fragment by fragment with smb_frag_parse(), on random chunks whose
 * fragment sizes sit at the room left: exactly, one byte short, one byte
 * over, the drop marker, and prefixes in other forms.
 */
static void expect_same_info(const struct smb_chunk_info *a,
			     const struct smb_chunk_info *b)
{
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->chunk_id, b->chunk_id);
	assert_int_equal(a->writer_id, b->writer_id);
	assert_int_equal(a->count, b->count);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->end, b->end);
	assert_int_equal(a->nfrags, b->nfrags);
	assert_int_equal(a->used, b->used);
	assert_ptr_equal(a->why, b->why);
}

/* smb_chunk_check_two() of chunk (b, size) beside `prev` (an earlier chunk,
 * or nothing yet), in both orders, gives what the single checks give:
 * want and *info for b. */
static void check_two_matches(const struct cbuf *prev, const uint8_t *b,
			      uint32_t size, int want,
			      const struct smb_chunk_info *info)
{
	static uint8_t pc[65536], bc[65536];
	struct smb_chunk_info pi, two[2];
	uint32_t plen = prev->len ? prev->len : 8;
	int prc;

	memcpy(pc, prev->b, plen);
	prc = smb_chunk_check(pc, pc + 8, plen - 8, &pi);
	for (int order = 0; order < 2; order++) {
		struct smb_chunk_copy c[2];

		memcpy(pc, prev->b, plen);
		memcpy(bc, b, size);
		c[order] = (struct smb_chunk_copy){ pc, pc + 8, plen - 8, &two[order], 1 };
		c[1 - order] = (struct smb_chunk_copy){ bc, bc + 8, size - 8,
							&two[1 - order], 1 };
		smb_chunk_check_two(&c[0], &c[1]);
		assert_int_equal(c[order].rc, prc);
		assert_int_equal(c[1 - order].rc, want);
		expect_same_info(&two[order], &pi);
		expect_same_info(&two[1 - order], info);
	}
}

static void test_validate_differential(void **state)
{
	static struct cbuf c, prev;
	uint32_t seed = 777;

	(void)state;
	for (int k = 0; k < 20000; k++) {
		uint32_t size = 8 + 4 * (k % 64), count, pos = 0, i;
		struct smb_chunk_info info;
		int want = 0, got;

		seed = seed * 1103515245u + 12345u;
		count = 1 + (seed >> 16) % 6;
		cb_header(&c, (uint32_t)k, 1, count, 0);
		while (c.len + 4 <= size) {
			uint32_t room = size - c.len - 4, pick, sz;
			uint8_t pre[4];

			seed = seed * 1103515245u + 12345u;
			pick = (seed >> 16) % 8;
			sz = pick == 0 ? room : pick == 1 ? room + 1 :
			     pick == 2 ? SPN_SMB_DROP_PACKET_SIZE :
			     pick == 3 && room ? room - 1 : (seed >> 20) % 16;
			pre[0] = (uint8_t)((sz & 0x7F) | 0x80);
			pre[1] = (uint8_t)(((sz >> 7) & 0x7F) | 0x80);
			pre[2] = (uint8_t)(((sz >> 14) & 0x7F) | 0x80);
			pre[3] = (uint8_t)(sz >> 21);
			if (pick == 4)
				pre[3] |= 0x80; /* a fifth prefix byte */
			if (pick == 5)
				pre[1] &= 0x7F; /* a 2-byte prefix */
			cb_bytes(&c, pre, 4);
			c.len += sz <= room ? sz : room;
		}
		for (i = 0; i < count; i++) {
			struct smb_frag f;
			int r = smb_frag_parse(c.b + 8, size - 8, pos, &f);

			if (r < 0) {
				want = r;
				break;
			}
			pos += (uint32_t)r;
		}
		got = smb_chunk_validate(c.b, size, &info);
		assert_int_equal(got, want);
		assert_int_equal(info.nfrags, i);
		assert_int_equal(info.used, pos);
		assert_int_equal(info.end, want == 0 ? SMB_CHUNK_OK :
				 want == -ENOMSG ? SMB_CHUNK_DROP :
						   SMB_CHUNK_BAD_FRAGMENT);
		/* Side by side with the chunk before, each way round. */
		check_two_matches(&prev, c.b, size, want, &info);
		memcpy(prev.b, c.b, size);
		prev.len = size;
	}
}

static void test_validate_drop_and_flags(void **state)
{
	static struct cbuf c;
	struct smb_chunk_info info;

	(void)state;
	/* A drop marker ends the chunk: not an ABI violation. */
	cb_header(&c, 5, 2, 3, SPN_SMB_FIRST_CONTINUES);
	cb_frag4(&c, 40, 1);
	cb_bytes(&c, "\xFF\xFF\xFF\x7F", 4);
	cb_frag4(&c, 10, 2);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), -ENOMSG);
	assert_int_equal(info.end, SMB_CHUNK_DROP);
	assert_int_equal(info.nfrags, 1);
	assert_int_equal(info.used, 44);

	/* Reserved flag bits are dropped, in the info and in the copy. */
	cb_header(&c, 5, 2, 1, 0x3F);
	cb_frag4(&c, 4, 1);
	assert_int_equal(c.b[7], 0xFC);
	assert_int_equal(smb_chunk_validate(c.b, 292, &info), 0);
	assert_int_equal(info.flags, 0x07);
	assert_int_equal(c.b[6], 1);
	assert_int_equal(c.b[7], 0x1C);
}

/* ---- Guard page ------------------------------------------------------------ */

/* Two pages; the second is PROT_NONE, so reading past the first faults. */
static uint8_t *guard_map(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	uint8_t *m = mmap(NULL, 2 * (size_t)ps, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + ps, (size_t)ps, PROT_NONE), 0);
	return m;
}

static void guard_unmap(uint8_t *m)
{
	munmap(m, 2 * (size_t)sysconf(_SC_PAGESIZE));
}

/* Validates `len` bytes of c placed so that they end at the guard page. */
static int at_guard(uint8_t *m, const uint8_t *c, uint32_t len,
		    struct smb_chunk_info *info)
{
	uint8_t *p = m + sysconf(_SC_PAGESIZE) - len;

	memcpy(p, c, len);
	return smb_chunk_validate(p, len, info);
}

static void test_guard_page(void **state)
{
	static struct cbuf c;
	struct smb_chunk_info info;
	struct smb_frag f;
	uint8_t *m = guard_map();
	uint8_t *end = m + sysconf(_SC_PAGESIZE);
	uint32_t i;

	(void)state;
	/* A varint whose continuation bit runs into the last byte. */
	cb_header(&c, 1, 1, 2, 0);
	cb_frag4(&c, 280 - 4 - 1, 1);
	c.b[c.len++] = 0x80;
	assert_int_equal(c.len, 288);
	assert_int_equal(at_guard(m, c.b, 288, &info), -EBADMSG);
	assert_int_equal(info.nfrags, 1);
	/* A size whose data would run into the guard page. */
	cb_header(&c, 1, 1, 1, 0);
	c.b[8] = 0xAC;
	c.b[9] = 0x02;
	assert_int_equal(at_guard(m, c.b, 292, &info), -EBADMSG);
	/* Counted fragments all the way to the last byte, then one more. */
	cb_header(&c, 1, 1, 285, 0);
	assert_int_equal(at_guard(m, c.b, 292, &info), -EBADMSG);
	assert_int_equal(info.nfrags, 284);
	/* A full valid chunk ending at the boundary. */
	cb_header(&c, 1, 1, 1, 0);
	cb_frag4(&c, 292 - 12, 3);
	assert_int_equal(at_guard(m, c.b, 292, &info), 0);
	/* The fragment parser right at the boundary. */
	end[-1] = 0x85;
	assert_int_equal(smb_frag_parse(end - 1, 1, 0, &f), -EBADMSG);
	assert_int_equal(smb_frag_parse(end - 1, 1, 1, &f), -EBADMSG);
	end[-1] = 0x00;
	assert_int_equal(smb_frag_parse(end - 1, 1, 0, &f), 1);
	/* Random garbage of every small size: never a byte past the end. */
	srand(12345);
	for (i = 0; i < 20000; i++) {
		uint32_t len = 8 + (uint32_t)rand() % 600, k;

		for (k = 0; k < len; k++)
			c.b[k] = (uint8_t)rand();
		if (i & 1) {
			c.b[4] = 1; /* a valid writer id */
			c.b[5] = 0;
		}
		(void)at_guard(m, c.b, len, &info);
		assert_true(info.nfrags <= info.count);
		assert_true(info.used <= len - 8);
	}
	guard_unmap(m);
}

/* ---- Copying out of an SMB ------------------------------------------------- */

/* An SMB of one 4 KiB page right before a PROT_NONE page. */
struct guarded_smb {
	uint8_t *map;	    /* the two mapped pages */
	struct spn_smb smb; /* over the first */
};

static void gsmb_open(struct guarded_smb *g)
{
	g->map = guard_map();
	assert_int_equal(spn_smb_init(&g->smb, g->map, 4096, 4096), 0);
}

/* Writes a chunk through the state machine: payload bytes from c. */
static void put_chunk(struct spn_smb *smb, uint32_t page, uint32_t layout,
		      uint32_t chunk, const struct cbuf *c, bool complete)
{
	struct spn_smb_chunk_header *h = NULL;
	uint16_t packets = (uint16_t)(c->b[6] | c->b[7] << 8);
	uint32_t id = (uint32_t)c->b[0] | (uint32_t)c->b[1] << 8 |
		      (uint32_t)c->b[2] << 16 | (uint32_t)c->b[3] << 24;

	assert_int_equal(spn_smb_try_acquire_write(smb, page, layout, chunk,
						   (uint16_t)(c->b[4] | c->b[5] << 8),
						   id, packets, &h), 0);
	memcpy(spn_smb_chunk_payload(h), c->b + 8, smb->chunk_size[layout] - 8);
	if (complete)
		assert_int_equal(spn_smb_try_complete(smb, page, layout, chunk), 0);
}

static void test_commit_copy(void **state)
{
	static struct cbuf c;
	static uint8_t dst[65536];
	struct guarded_smb g;
	struct smb_chunk_info info;
	uint32_t w;

	(void)state;
	gsmb_open(&g);
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV4), 0);
	/* Chunk 3 is the last of the page: it ends 8 bytes before the guard. */
	cb_header(&c, 42, 3, 2, SPN_SMB_LAST_CONTINUES);
	cb_frag4(&c, 100, 0x5A);
	cb_frag4(&c, 1020 - 8 - 104 - 4, 0x5B);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV4, 3, &c, true);
	cb_header(&c, 43, 3, 1, 0);
	cb_frag4(&c, 10, 0x11);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV4, 1, &c, false);

	/* Not complete: nothing taken. */
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 1, dst, sizeof(dst), &info),
			 -EBUSY);
	assert_non_null(info.why);
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 0, dst, sizeof(dst), &info),
			 -EBUSY);
	/* Outside the SMB or the layout. */
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 1, 0, dst, sizeof(dst), &info),
			 -EINVAL);
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 4, dst, sizeof(dst), &info),
			 -EINVAL);

	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 3, dst, sizeof(dst), &info), 0);
	assert_int_equal(info.size, 1020);
	assert_int_equal(info.chunk_id, 42);
	assert_int_equal(info.writer_id, 3);
	assert_int_equal(info.count, 2);
	assert_int_equal(info.flags, SPN_SMB_LAST_CONTINUES);
	assert_int_equal(info.nfrags, 2);
	assert_true(info.complete);
	assert_true(info.freed);
	assert_int_equal(dst[8 + 4], 0x5A);
	assert_int_equal(dst[1019], 0x5B);
	/* Freed with its header zeroed; chunk 1 still being written. */
	w = spn_smb_page_load(&g.smb, 0, memory_order_relaxed);
	assert_int_equal(w, (SPN_SMB_PAGE_DIV4 << 28) | (1u << 2));
	assert_int_equal(atomic_load(&spn_smb_chunk(&g.smb, 0, 3, 3)->chunk_id), 0);
	assert_int_equal(atomic_load(&spn_smb_chunk(&g.smb, 0, 3, 3)->packets), 0);
	/* Already taken. */
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 3, dst, sizeof(dst), &info),
			 -EBUSY);

	/* A malformed chunk is still freed; the last free un-partitions. */
	cb_header(&c, 44, 3, 5, 0);
	cb_frag4(&c, 2000, 0x33);
	memcpy(spn_smb_chunk_payload(spn_smb_chunk(&g.smb, 0, 3, 1)), c.b + 8, 1012);
	spn_smb_chunk_set_packets(spn_smb_chunk(&g.smb, 0, 3, 1), spn_smb_packets(5, 0));
	assert_int_equal(spn_smb_try_complete(&g.smb, 0, SPN_SMB_PAGE_DIV4, 1), 0);
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 1, dst, sizeof(dst), &info),
			 -EBADMSG);
	assert_int_equal(info.end, SMB_CHUNK_BAD_FRAGMENT);
	assert_int_equal(info.nfrags, 0);
	assert_true(info.freed);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), 0);

	/* A copy buffer too small: the chunk is still given back. */
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV1), 0);
	cb_header(&c, 45, 3, 1, 0);
	cb_frag4(&c, 10, 0x33);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV1, 0, &c, true);
	assert_int_equal(smb_chunk_commit_copy(&g.smb, 0, 0, dst, 4087, &info), -ENOSPC);
	assert_int_equal(info.size, 4088);
	assert_true(info.freed);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), 0);
	guard_unmap(g.map);
}

/* One-chunk pages are read in place: taking one leaves it Complete (no
 * locked instruction, nobody else may touch it), giving it back zeroes its
 * header and the page word; pages of several chunks still go through
 * BeingRead. */
static void test_commit_sole_page(void **state)
{
	static struct cbuf c;
	static uint8_t hdr[8], payload[4096];
	struct guarded_smb g;
	struct smb_chunk_info info;
	struct smb_chunk_taken t;
	uint32_t w;

	(void)state;
	gsmb_open(&g);
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV1), 0);
	cb_header(&c, 46, 5, 1, 0);
	cb_frag4(&c, 10, 0x44);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV1, 0, &c, false);
	assert_int_equal(spn_smb_peek_sole(&g.smb, 0), -EBUSY);
	assert_int_equal(spn_smb_peek_sole(&g.smb, 1), -EINVAL);
	assert_int_equal(smb_chunk_commit_take(&g.smb, 0, 0, &t, &info), -EBUSY);
	assert_int_equal(spn_smb_try_complete(&g.smb, 0, SPN_SMB_PAGE_DIV1, 0), 0);
	/* Chunk 1 is not in a one-chunk layout. */
	assert_int_equal(smb_chunk_commit_take(&g.smb, 0, 1, &t, &info), -EINVAL);
	w = spn_smb_page_load(&g.smb, 0, memory_order_relaxed);
	assert_int_equal(smb_chunk_commit_take(&g.smb, 0, 0, &t, &info), 0);
	assert_true(t.sole);
	assert_int_equal(t.size, 4088);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), w);
	assert_int_equal(smb_chunk_commit_copy_out(&g.smb, &t, hdr, payload,
						   sizeof(payload), &info), 0);
	assert_true(info.freed);
	assert_int_equal(payload[4], 0x44);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), 0);
	assert_int_equal(atomic_load(&spn_smb_chunk(&g.smb, 0, 1, 0)->chunk_id), 0);
	assert_int_equal(atomic_load(&spn_smb_chunk(&g.smb, 0, 1, 0)->writer_id), 0);
	assert_int_equal(atomic_load(&spn_smb_chunk(&g.smb, 0, 1, 0)->packets), 0);

	/* A producer that breaks the ABI and re-partitions the page during
	 * the copy loses that change; the page comes back free. */
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV1), 0);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV1, 0, &c, true);
	assert_int_equal(smb_chunk_commit_take(&g.smb, 0, 0, &t, &info), 0);
	atomic_store(&spn_smb_page(&g.smb, 0)->header_bitmap,
		     (uint32_t)SPN_SMB_PAGE_DIV2 << 28 | 1u);
	assert_int_equal(smb_chunk_commit_copy_out(&g.smb, &t, hdr, payload,
						   sizeof(payload), &info), 0);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), 0);

	/* Two chunks in the page: taken through BeingRead, as before. */
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV2), 0);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV2, 0, &c, true);
	assert_int_equal(spn_smb_peek_sole(&g.smb, 0), -ENOENT);
	assert_int_equal(smb_chunk_commit_take(&g.smb, 0, 0, &t, &info), 0);
	assert_false(t.sole);
	assert_int_equal(spn_smb_word_state(spn_smb_page_load(&g.smb, 0,
							      memory_order_relaxed), 0),
			 SPN_SMB_BEING_READ);
	assert_int_equal(smb_chunk_commit_copy_out(&g.smb, &t, hdr, payload,
						   sizeof(payload), &info), 0);
	assert_true(info.freed);
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed), 0);
	guard_unmap(g.map);
}

static void test_scrape_copy(void **state)
{
	static struct cbuf c;
	static uint8_t dst[65536];
	struct guarded_smb g;
	struct smb_chunk_info info;
	struct spn_smb_chunk_header *h = NULL;

	(void)state;
	gsmb_open(&g);
	assert_int_equal(spn_smb_try_partition(&g.smb, 0, SPN_SMB_PAGE_DIV2), 0);
	/* Being written: 3 counted, the third still in progress (its size not
	 * back-filled yet, so it reads as running past the end). */
	cb_header(&c, 9, 4, 3,
		  SPN_SMB_FIRST_CONTINUES | SPN_SMB_LAST_CONTINUES | SPN_SMB_NEEDS_PATCHING);
	cb_frag4(&c, 30, 0x61);
	cb_frag1(&c, 5, 0x62);
	cb_bytes(&c, "\xFF\xFF\xFF\x0F", 4);
	put_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV2, 1, &c, false);
	h = spn_smb_chunk(&g.smb, 0, SPN_SMB_PAGE_DIV2, 1);
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 1, dst, sizeof(dst), &info), 0);
	assert_false(info.complete);
	assert_int_equal(info.size, 2044);
	assert_int_equal(info.chunk_id, 9);
	assert_int_equal(info.writer_id, 4);
	assert_int_equal(info.count, 2);
	assert_int_equal(info.flags, SPN_SMB_FIRST_CONTINUES);
	assert_int_equal(info.nfrags, 2);
	assert_int_equal(info.used, 34 + 6);
	/* The stored copy says the same. */
	assert_int_equal(dst[6], 2);
	assert_int_equal(dst[7], 0x04);
	/* The SMB is untouched: still the producer's. */
	assert_int_equal(atomic_load(&h->packets), spn_smb_packets(3, 7));
	assert_int_equal(spn_smb_page_load(&g.smb, 0, memory_order_relaxed),
			 (SPN_SMB_PAGE_DIV2 << 28) | (1u << 2));

	/* Too few fragments to scrape, then complete: everything. */
	spn_smb_chunk_set_packets(h, spn_smb_packets(1, 0));
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 1, dst, sizeof(dst), &info),
			 -ENODATA);
	spn_smb_chunk_set_packets(h, spn_smb_packets(2, SPN_SMB_LAST_CONTINUES));
	assert_int_equal(spn_smb_try_complete(&g.smb, 0, SPN_SMB_PAGE_DIV2, 1), 0);
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 1, dst, sizeof(dst), &info), 0);
	assert_true(info.complete);
	assert_int_equal(info.count, 2);
	assert_int_equal(info.flags, SPN_SMB_LAST_CONTINUES);
	/* Free chunk, missing chunk, small buffer, page out of range. */
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 0, dst, sizeof(dst), &info),
			 -ENOENT);
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 2, dst, sizeof(dst), &info),
			 -ENOENT);
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 0, 1, dst, 100, &info), -ENOSPC);
	assert_int_equal(smb_chunk_scrape_copy(&g.smb, 1, 0, dst, sizeof(dst), &info),
			 -EINVAL);
	guard_unmap(g.map);
}

/* Whatever the producer puts in the page word and the chunk headers, the
 * service's calls stay inside the mapping (a stray access would hit the
 * guard page) and never crash. */
static void test_hostile_words(void **state)
{
	static uint8_t dst[65536];
	struct guarded_smb g;
	struct smb_chunk_info info;
	struct spn_smb_chunk_header *h = NULL;
	uint32_t i, chunk, layout;

	(void)state;
	gsmb_open(&g);
	srand(777);
	for (i = 0; i < 5000; i++) {
		uint32_t w = (uint32_t)rand() ^ ((uint32_t)rand() << 16);
		uint32_t k;

		for (k = 8; k < 4096; k += 4)
			*(uint32_t *)(void *)(g.map + k) = (uint32_t)rand();
		atomic_store(&spn_smb_page(&g.smb, 0)->header_bitmap, w);
		for (chunk = 0; chunk < 16; chunk++) {
			(void)smb_chunk_scrape_copy(&g.smb, 0, chunk, dst, sizeof(dst), &info);
			(void)smb_chunk_commit_copy(&g.smb, 0, chunk, dst, sizeof(dst), &info);
			(void)spn_smb_try_acquire_read(&g.smb, 0, chunk, &layout);
			for (layout = 0; layout < 8; layout++) {
				(void)spn_smb_try_acquire_write(&g.smb, 0, layout, chunk, 1, 1, 1, &h);
				(void)spn_smb_try_complete(&g.smb, 0, layout, chunk);
				(void)spn_smb_try_free(&g.smb, 0, layout, chunk, SPN_SMB_BEING_READ);
			}
		}
		/* A chunk count never grows past what the copy holds. */
		assert_true(info.nfrags <= info.count);
	}
	guard_unmap(g.map);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frag_parse),
		cmocka_unit_test(test_frag_parse_differential),
		cmocka_unit_test(test_validate_good),
		cmocka_unit_test(test_validate_bad_header),
		cmocka_unit_test(test_validate_bad_fragments),
		cmocka_unit_test(test_validate_differential),
		cmocka_unit_test(test_validate_drop_and_flags),
		cmocka_unit_test(test_guard_page),
		cmocka_unit_test(test_commit_copy),
		cmocka_unit_test(test_commit_sole_page),
		cmocka_unit_test(test_scrape_copy),
		cmocka_unit_test(test_hostile_words),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
