// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the commit path's untrusted side: a producer that writes anything into its SMB (page words, chunk headers, fragments) while the service takes, copies, validates and stores chunks, scrapes them, applies patches, and reads and clones the trace buffer.
//
// Each run starts from a 16-page SMB holding real chunks of Perfetto v14's
// SDK (the first pages of session1's final SMB dump, their page words
// zeroed) and an empty two-lane trace buffer whose size and fill policy the
// first input byte picks. The rest of the input is a list of operations:
// scribble bytes anywhere in the SMB, store a raw page word, mark a chunk
// Complete, move a chunk (take, copy, validate, store: what the lane's
// CommitData handler does, through the same functions, with the payload
// copied to a private buffer or staged in the trace buffer), scrape one,
// patch a stored chunk, read the buffer, clone and read the clone. After
// every read the output must be packets in Trace framing, each a
// well-formed top-level message that carries the reader's trusted fields
// exactly once and no other field a producer may not write
// (trace-buffer.md §5); ASan, UBSan and the leak checker watch the rest.
//
// Built by tests/fuzz/chunk.cmake when SPN_FUZZ=ON and the compiler is
// clang; .ci/run runs it for 60 s, from an empty corpus.
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tbuf.h"
#include "smb/chunk_validate.h"

#define FZ_PAGES 16u			/* SMB pages (4 KiB each) */
#define FZ_PAGE_SIZE 4096u
#define FZ_SMB_SIZE (FZ_PAGES * FZ_PAGE_SIZE)
#define FZ_UID 1000u			/* trusted uid of both producers */
#define FZ_SNAPSHOT SPN_TESTDATA_DIR "/perfetto_v14/session1/proxy/conn3_producer_fd0.bin"

/* TracePacket fields only the service writes (trace-buffer.md §5), and
 * the trailer's own: trusted_uid, trusted_packet_sequence_id, trusted_pid. */
static const uint32_t fz_forbidden[] = { 33, 35, 36, 50, 69, 98, 124, 125, 133 };
#define FZ_TRUSTED_UID 3u
#define FZ_TRUSTED_SEQ 10u
#define FZ_TRUSTED_PID 79u

static uint8_t fz_image[FZ_SMB_SIZE];	/* the SMB every run starts from */
static uint8_t *fz_smb_mem;		/* the SMB of the run */
static uint8_t fz_scratch[65536];	/* a lane's private copy */

/* The input, consumed front to back; reads past its end give zeros. */
struct fz_in {
	const uint8_t *p;	/* next byte */
	size_t n;		/* bytes left */
};

static uint32_t fz_u8(struct fz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint32_t fz_u16(struct fz_in *in)
{
	return fz_u8(in) | fz_u8(in) << 8;
}

static uint32_t fz_u32(struct fz_in *in)
{
	return fz_u16(in) | fz_u16(in) << 16;
}

/* A read varint of p[0, len) at *pos; false if it is cut or too long. */
static bool fz_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 70; shift += 7) {
		if (*pos >= len)
			return false;
		*v |= (uint64_t)(p[*pos] & 0x7f) << shift;
		if (!(p[(*pos)++] & 0x80))
			return true;
	}
	return false;
}

/* Aborts (a finding) with what the reader got wrong. */
static void fz_fail(const char *what, size_t at)
{
	fprintf(stderr, "chunk_fuzz: reader output: %s at byte %zu\n", what, at);
	abort();
}

/* One packet of the reader's output: a well-formed top-level message with
 * the trailer's trusted fields once each and no other service field. */
static void fz_check_packet(const uint8_t *p, size_t len, size_t base)
{
	unsigned uid = 0, seq = 0, pid = 0;
	size_t pos = 0;

	while (pos < len) {
		uint64_t key, v;
		uint32_t field;

		if (!fz_varint(p, len, &pos, &key))
			fz_fail("cut field key", base + pos);
		field = (uint32_t)(key >> 3);
		switch (key & 7) {
		case 0:
			if (!fz_varint(p, len, &pos, &v))
				fz_fail("cut varint", base + pos);
			break;
		case 1:
			if (len - pos < 8)
				fz_fail("cut fixed64", base + pos);
			pos += 8;
			break;
		case 5:
			if (len - pos < 4)
				fz_fail("cut fixed32", base + pos);
			pos += 4;
			break;
		case 2:
			if (!fz_varint(p, len, &pos, &v) || v > len - pos)
				fz_fail("cut length-delimited field", base + pos);
			pos += (size_t)v;
			break;
		default:
			fz_fail("wire type 3, 4, 6 or 7", base + pos);
		}
		uid += field == FZ_TRUSTED_UID;
		seq += field == FZ_TRUSTED_SEQ;
		pid += field == FZ_TRUSTED_PID;
		for (size_t i = 0; i < sizeof(fz_forbidden) / sizeof(fz_forbidden[0]); i++)
			if (field == fz_forbidden[i])
				fz_fail("field only the service may write", base + pos);
	}
	if (uid != 1 || seq != 1 || pid > 1)
		fz_fail("trusted fields not exactly the trailer's", base);
}

/* The reader's output: packets in Trace framing (0x0A, length, packet). */
static void fz_check_trace(const struct svc_tbuf_out *out)
{
	size_t pos = 0;

	while (pos < out->len) {
		uint64_t n;

		if (out->data[pos++] != 0x0A)
			fz_fail("not a Trace.packet field", pos - 1);
		if (!fz_varint(out->data, out->len, &pos, &n) || n > out->len - pos)
			fz_fail("cut packet", pos);
		fz_check_packet(out->data + pos, (size_t)n, pos);
		pos += (size_t)n;
	}
}

/* Reads b until drained (or a bounded number of passes), checking it all. */
static void fz_read(struct svc_tbuf *b, struct svc_seqids *ids, size_t limit,
		    unsigned passes)
{
	bool drained = false;

	for (unsigned i = 0; i < passes && !drained; i++) {
		struct svc_tbuf_out out = { 0 };

		if (svc_tbuf_read(b, ids, &out, limit, &drained) < 0)
			drained = false;
		fz_check_trace(&out);
		svc_tbuf_out_free(&out);
	}
}

/* Stores a validated chunk copy of producer prod through its lane. */
static void fz_store(struct svc_tbuf *b, unsigned prod, const struct smb_chunk_info *info,
		     uint16_t nfrags, const uint8_t *payload)
{
	struct svc_tbuf_chunk tc = {
		.producer_id = (uint16_t)(prod + 1),
		.writer_id = info->writer_id,
		.chunk_id = info->chunk_id,
		.uid = FZ_UID,
		.pid = (int32_t)(prod + 100),
		.nfrags = nfrags,
		.flags = info->flags,
		.complete = info->complete,
		.payload = payload,
		.len = info->size - SPN_SMB_CHUNK_HEADER_SIZE,
	};

	svc_tbuf_lane_commit(b, prod, &tc);
}

/* The lane's CommitData move of one chunk (producer_port.c pp_move):
 * take, copy once, validate the copy, store it unless the producer broke
 * the ABI (which cuts it off). */
/* Whether two validations found the same. */
static bool fz_same_info(const struct smb_chunk_info *a, const struct smb_chunk_info *b)
{
	return a->size == b->size && a->chunk_id == b->chunk_id &&
	       a->writer_id == b->writer_id && a->count == b->count &&
	       a->flags == b->flags && a->end == b->end &&
	       a->nfrags == b->nfrags && a->used == b->used && a->why == b->why;
}

/* The lane checks moved chunks in pairs (smb_chunk_check_two): checked
 * beside the chunk moved before it, each must come out as when checked
 * alone. */
static void fz_check_two(const uint8_t *hdr, const uint8_t *payload, size_t len)
{
	static uint8_t prev[SPN_SMB_CHUNK_HEADER_SIZE + sizeof(fz_scratch)];
	static uint8_t cur[sizeof(prev)], two[2][sizeof(prev)];
	static size_t prev_len;
	struct smb_chunk_info alone[2], side[2];
	struct smb_chunk_copy c[2];
	int rc[2];

	memcpy(cur, hdr, SPN_SMB_CHUNK_HEADER_SIZE);
	memcpy(cur + SPN_SMB_CHUNK_HEADER_SIZE, payload, len);
	if (prev_len) {
		const uint8_t *src[2] = { prev, cur };
		size_t n[2] = { prev_len, len };

		for (int k = 0; k < 2; k++) {
			memcpy(two[k], src[k], SPN_SMB_CHUNK_HEADER_SIZE + n[k]);
			rc[k] = smb_chunk_check(two[k], two[k] + SPN_SMB_CHUNK_HEADER_SIZE,
						n[k], &alone[k]);
			memcpy(two[k], src[k], SPN_SMB_CHUNK_HEADER_SIZE + n[k]);
			c[k] = (struct smb_chunk_copy){
				two[k], two[k] + SPN_SMB_CHUNK_HEADER_SIZE, n[k],
				&side[k], 1 };
		}
		smb_chunk_check_two(&c[0], &c[1]);
		for (int k = 0; k < 2; k++)
			if (c[k].rc != rc[k] || !fz_same_info(&side[k], &alone[k])) {
				fprintf(stderr, "chunk_fuzz: smb_chunk_check_two differs "
					"from smb_chunk_check for chunk %d\n", k);
				abort();
			}
	}
	memcpy(prev, cur, SPN_SMB_CHUNK_HEADER_SIZE + len);
	prev_len = len;
}

static void fz_move(struct spn_smb *smb, struct svc_tbuf *b, unsigned prod,
		    uint32_t page, uint32_t chunk, bool stage, bool *cut)
{
	uint8_t hdr[SPN_SMB_CHUNK_HEADER_SIZE], *dst = fz_scratch;
	struct smb_chunk_info info;
	struct smb_chunk_taken t;
	int rc = -EAGAIN;

	for (int tries = 0; rc == -EAGAIN && tries < 4; tries++)
		rc = smb_chunk_commit_take(smb, page, chunk, &t, &info);
	if (rc != 0)
		return;
	if (stage) {
		dst = svc_tbuf_lane_stage(b, prod, t.size - SPN_SMB_CHUNK_HEADER_SIZE);
		if (!dst)
			dst = fz_scratch;
	}
	rc = smb_chunk_commit_finish(smb, &t, hdr, dst, sizeof(fz_scratch), &info);
	if (rc != -ENOSPC)
		fz_check_two(hdr, dst, t.size - SPN_SMB_CHUNK_HEADER_SIZE);
	if (rc == -ENOSPC || info.end == SMB_CHUNK_BAD_HEADER ||
	    info.end == SMB_CHUNK_BAD_FRAGMENT) {
		*cut = true;
		return;
	}
	fz_store(b, prod, &info, info.count, dst);
}

/* The lane's scrape of one chunk (producer_port.c pp_scrape). */
static void fz_scrape(struct spn_smb *smb, struct svc_tbuf *b, unsigned prod,
		      uint32_t page, uint32_t chunk)
{
	struct smb_chunk_info info;
	int rc = smb_chunk_scrape_copy(smb, page, chunk, fz_scratch,
				       sizeof(fz_scratch), &info);

	if ((rc < 0 && rc != -ENOMSG) || info.nfrags == 0 || info.writer_id == 0)
		return;
	/* The producer's count (the buffer leaves the last fragment of an
	 * incomplete chunk out itself). */
	fz_store(b, prod, &info, (uint16_t)(info.count + (info.complete ? 0 : 1)),
		 fz_scratch + SPN_SMB_CHUNK_HEADER_SIZE);
}

/* A patch batch for a chunk the producer may have stored. */
static void fz_patch(struct fz_in *in, struct svc_tbuf *b, unsigned prod)
{
	struct svc_tbuf_patch p[4];
	uint32_t writer = fz_u8(in) % 3 + 1, chunk_id = fz_u8(in) % 80;
	uint32_t n = fz_u8(in);
	bool more = n & 0x80;

	n %= 5;
	for (uint32_t i = 0; i < n; i++) {
		p[i].offset = fz_u16(in) % 4200;
		for (int k = 0; k < 4; k++)
			p[i].data[k] = (uint8_t)fz_u8(in);
	}
	svc_tbuf_lane_patch(b, prod, (uint16_t)(prod + 1), (uint16_t)writer,
			    chunk_id, p, n, more);
}

/* One operation of the input. */
static void fz_op(struct fz_in *in, struct spn_smb *smb, struct svc_tbuf *b,
		  struct svc_seqids *ids, bool cut[2])
{
	uint32_t op = fz_u8(in), page, chunk, layout;
	unsigned prod = (op >> 4) & 1;

	switch (op & 7) {
	case 0: { /* scribble */
		uint32_t off = fz_u16(in) % FZ_SMB_SIZE, len = fz_u8(in);

		for (uint32_t i = 0; i < len && off + i < FZ_SMB_SIZE && in->n; i++)
			fz_smb_mem[off + i] = (uint8_t)fz_u8(in);
		break;
	}
	case 1: /* a raw page word */
		page = fz_u8(in) % FZ_PAGES;
		atomic_store_explicit(&spn_smb_page(smb, page)->header_bitmap,
				      fz_u32(in), memory_order_relaxed);
		break;
	case 2: /* one chunk Complete, in a real layout */
		page = fz_u8(in) % FZ_PAGES;
		layout = fz_u8(in) % 5 + SPN_SMB_PAGE_DIV1;
		chunk = fz_u8(in) % spn_smb_layout_chunks(layout);
		atomic_store_explicit(&spn_smb_page(smb, page)->header_bitmap,
				      layout << SPN_SMB_LAYOUT_SHIFT |
					      (uint32_t)SPN_SMB_COMPLETE << (chunk * 2u),
				      memory_order_relaxed);
		break;
	case 3: /* CommitData move (a page past the SMB included) */
		page = fz_u8(in) % (FZ_PAGES + 1);
		chunk = fz_u8(in) % (SPN_SMB_MAX_CHUNKS_PER_PAGE + 1);
		if (!cut[prod])
			fz_move(smb, b, prod, page, chunk, op & 0x20, &cut[prod]);
		break;
	case 4: /* scrape */
		page = fz_u8(in) % FZ_PAGES;
		chunk = fz_u8(in) % SPN_SMB_MAX_CHUNKS_PER_PAGE;
		if (!cut[prod])
			fz_scrape(smb, b, prod, page, chunk);
		break;
	case 5:
		if (!cut[prod])
			fz_patch(in, b, prod);
		break;
	case 6: /* a read batch of any size */
		fz_read(b, ids, fz_u16(in) + 1u, 1);
		break;
	default: { /* clone, read the clone whole */
		struct svc_tbuf *c;

		if (svc_tbuf_clone(b, &c) == 0) {
			fz_read(c, ids, 1u << 20, 64);
			svc_tbuf_destroy(c);
		}
		break;
	}
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FILE *f = fopen(FZ_SNAPSHOT, "rb");

	(void)argc;
	(void)argv;
	if (!f || fread(fz_image, 1, sizeof(fz_image), f) != sizeof(fz_image)) {
		fprintf(stderr, "chunk_fuzz: cannot read %s\n", FZ_SNAPSHOT);
		exit(1);
	}
	fclose(f);
	/* Every page free (the input decides which chunks become Complete),
	 * each holding the chunk the SDK wrote there. The service zeroed
	 * their headers when it freed them: put back writer 1, the chunk id
	 * (the SDK took the pages in order) and the fragments found. */
	for (uint32_t page = 0; page < FZ_PAGES; page++) {
		uint8_t *pg = fz_image + page * FZ_PAGE_SIZE;
		uint8_t *pl = pg + SPN_SMB_PAGE_HEADER_SIZE + SPN_SMB_CHUNK_HEADER_SIZE;
		size_t len = FZ_PAGE_SIZE - SPN_SMB_PAGE_HEADER_SIZE -
			     SPN_SMB_CHUNK_HEADER_SIZE, pos = 0;
		uint32_t count = 0;

		memset(pg, 0, SPN_SMB_PAGE_HEADER_SIZE);
		while (pos + 4 <= len && count < 1023) {
			uint32_t n = (pl[pos] & 0x7fu) | (pl[pos + 1] & 0x7fu) << 7 |
				     (pl[pos + 2] & 0x7fu) << 14 | (pl[pos + 3] & 0x7fu) << 21;

			if (n == 0 || n > len - pos - 4)
				break;
			pos += 4 + n;
			count++;
		}
		pg[8] = (uint8_t)page; /* chunk_id, little endian */
		pg[12] = 1;	       /* writer_id */
		pg[14] = (uint8_t)count;
		pg[15] = (uint8_t)(count >> 8);
	}
	fz_smb_mem = aligned_alloc(FZ_PAGE_SIZE, FZ_SMB_SIZE);
	return fz_smb_mem ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint32_t first = fz_u8(&in);
	struct svc_seqids *ids;
	struct svc_tbuf *b;
	struct spn_smb smb;
	bool cut[2] = { false, false };

	memcpy(fz_smb_mem, fz_image, FZ_SMB_SIZE);
	spn_smb_init(&smb, fz_smb_mem, FZ_SMB_SIZE, FZ_PAGE_SIZE);
	if (svc_seqids_create(&ids) != 0)
		return 0;
	/* 16..128 KiB, ring or discard: small enough to wrap and fill. */
	if (svc_tbuf_create(16384u << (first & 3), (first >> 2) & 1 ? SVC_TBUF_DISCARD :
								      SVC_TBUF_RING,
			    2, 0, &b) != 0) {
		svc_seqids_destroy(ids);
		return 0;
	}
	while (in.n)
		fz_op(&in, &smb, b, ids, cut);
	fz_read(b, ids, 1u << 20, 64);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
	return 0;
}
