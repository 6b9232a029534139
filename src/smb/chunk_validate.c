// SPDX-License-Identifier: Apache-2.0
// Service side: copy a chunk out of a producer's SMB (commit or scrape) and validate the private copy.
#include "smb/chunk_validate.h"

#include <errno.h>
#include <string.h>

/* Longest size prefix (a varint of 1 to 4 bytes; spec §6.1). */
#define SMB_FRAG_MAX_PREFIX 4u

static uint32_t smb_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint16_t smb_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void smb_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void smb_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* The 7 low bits of each byte of w, little-endian: the size in a 4-byte
 * prefix (the redundant form: the continuation bit in the first three
 * bytes), or, masked to 7 * n bits, in the first n bytes. */
static inline uint32_t smb_frag4_size(uint32_t w)
{
	return (w & 0x7Fu) | ((w >> 1) & 0x3F80u) | ((w >> 2) & 0x1FC000u) |
	       ((w >> 3) & 0xFE00000u);
}

/*
 * The fragment at payload offset pos: returns the bytes it spans and sets
 * *size, or -ENOMSG / -EBADMSG as smb_frag_parse() documents. With 4 bytes
 * left the size prefix is decoded from one load (writers use the 4-byte
 * redundant form, spec §6.1); near the payload end byte by byte.
 */
static inline int smb_frag_span(const uint8_t *payload, uint32_t len,
				uint32_t pos, uint32_t *size)
{
	uint32_t n, sz;

	if (pos < len && len - pos >= SMB_FRAG_MAX_PREFIX) {
		uint32_t w = smb_le32(payload + pos);

		/* The first byte without the continuation bit ends it. */
		if (!(w & 0x80u))
			n = 1;
		else if (!(w & 0x8000u))
			n = 2;
		else if (!(w & 0x800000u))
			n = 3;
		else if (!(w & 0x80000000u))
			n = 4;
		else
			return -EBADMSG; /* a fifth prefix byte */
		/* 7 bits from each byte, then only the n bytes it has. */
		sz = smb_frag4_size(w) & ((1u << (7u * n)) - 1u);
	} else {
		sz = 0;
		for (n = 0;; n++) {
			uint8_t b;

			if (n == SMB_FRAG_MAX_PREFIX || pos >= len ||
			    n >= len - pos)
				return -EBADMSG;
			b = payload[pos + n];
			sz |= (uint32_t)(b & 0x7Fu) << (7u * n);
			if (!(b & 0x80u))
				break;
		}
		n++; /* prefix bytes */
	}
	if (sz == SPN_SMB_DROP_PACKET_SIZE)
		return -ENOMSG;
	/* pos + n <= len here, and sz < 2^28: no overflow in 64 bits. */
	if ((uint64_t)pos + n + sz > len)
		return -EBADMSG;
	*size = sz;
	return (int)(n + sz);
}

int smb_frag_parse(const uint8_t *payload, uint32_t len, uint32_t pos,
		   struct smb_frag *frag)
{
	uint32_t size;
	int r = smb_frag_span(payload, len, pos, &size);

	if (r < 0)
		return r;
	frag->off = pos + (uint32_t)r - size;
	frag->size = size;
	return r;
}

/* Ends the validation of *info with `end` and reason `why`; returns err. */
static int smb_chunk_end(struct smb_chunk_info *info, enum smb_chunk_end end,
			 const char *why, int err)
{
	info->end = end;
	info->why = why;
	return err;
}

/* Where the walk through a chunk copy's fragments stands. */
struct smb_walk {
	const uint8_t *payload; /* the copy's payload */
	uint32_t len;		/* its bytes */
	uint32_t pos;		/* offset of the next fragment */
	uint32_t i;		/* fragments passed */
	uint32_t count;		/* fragments the header declares */
};

/*
 * Reads the header of a chunk copy (hdr; `len` payload bytes at payload)
 * into *info and starts *w. Clears the reserved flag bits in hdr. Returns 0,
 * or what smb_chunk_validate() returns for a bad header or size.
 */
static int smb_chunk_head(uint8_t *hdr, const uint8_t *payload, size_t len,
			  struct smb_chunk_info *info, struct smb_walk *w)
{
	uint16_t packets;

	memset(info, 0, sizeof(*info));
	if (len > SPN_SMB_MAX_CHUNK_SIZE - SPN_SMB_CHUNK_HEADER_SIZE)
		return smb_chunk_end(info, SMB_CHUNK_BAD_HEADER,
				     "chunk size outside 8..65535 bytes", -EINVAL);
	info->size = (uint32_t)len + SPN_SMB_CHUNK_HEADER_SIZE;
	info->chunk_id = smb_le32(hdr);
	info->writer_id = smb_le16(hdr + 4);
	packets = smb_le16(hdr + 6);
	if (spn_smb_packets_flags(packets) & ~(uint32_t)SPN_SMB_FLAGS_KNOWN) {
		/* Reserved flag bits: not ours to interpret; keep them out of
		 * the stored copy so later readers see only known flags. */
		packets = spn_smb_packets(spn_smb_packets_count(packets),
					  spn_smb_packets_flags(packets) &
						  SPN_SMB_FLAGS_KNOWN);
		smb_put_le16(hdr + 6, packets);
	}
	info->count = (uint16_t)spn_smb_packets_count(packets);
	info->flags = (uint8_t)spn_smb_packets_flags(packets);
	if (info->writer_id == 0 || info->writer_id > SPN_SMB_MAX_WRITER_ID)
		return smb_chunk_end(info, SMB_CHUNK_BAD_HEADER,
				     "writer id outside 1..32767", -EBADMSG);
	*w = (struct smb_walk){ .payload = payload, .len = (uint32_t)len,
				.count = info->count };
	return 0;
}

/*
 * One fragment in the form writers use (a 4-byte prefix, data inside the
 * payload): passes it and returns true. Anything else (the drop marker
 * too), or the end of the count: false, with nothing changed.
 */
static inline bool smb_walk_step4(struct smb_walk *w)
{
	uint32_t v, size;

	if (w->i >= w->count || w->len - w->pos < SMB_FRAG_MAX_PREFIX)
		return false;
	v = smb_le32(w->payload + w->pos);
	if ((v & 0x80808080u) != 0x00808080u)
		return false;
	size = smb_frag4_size(v);
	if (size > w->len - w->pos - SMB_FRAG_MAX_PREFIX)
		return false;
	w->pos += SMB_FRAG_MAX_PREFIX + size;
	w->i++;
	return true;
}

/* Walks the rest of w's fragments and ends *info with what it found;
 * returns what smb_chunk_validate() returns. */
static int smb_walk_finish(struct smb_walk *w, struct smb_chunk_info *info)
{
	while (w->i < w->count) {
		uint32_t size;
		int r;

		/* The form writers use, in a loop with one taken branch per
		 * fragment (the walk is a serial chain through the sizes);
		 * anything else, and the drop marker, go the general way. */
		if (smb_walk_step4(w))
			continue;
		r = smb_frag_span(w->payload, w->len, w->pos, &size);
		if (r < 0) {
			info->nfrags = (uint16_t)w->i;
			info->used = w->pos;
			if (r == -ENOMSG)
				return smb_chunk_end(info, SMB_CHUNK_DROP,
						     "drop marker: the writer lost "
						     "the rest of the packet",
						     -ENOMSG);
			return smb_chunk_end(info, SMB_CHUNK_BAD_FRAGMENT,
					     w->pos >= w->len ?
					     "fewer fragments than the count before "
					     "the payload end" :
					     "fragment size prefix or data runs past "
					     "the payload end or 4 bytes", -EBADMSG);
		}
		w->pos += (uint32_t)r;
		w->i++;
	}
	info->nfrags = (uint16_t)w->i;
	info->used = w->pos;
	return smb_chunk_end(info, SMB_CHUNK_OK, NULL, 0);
}

int smb_chunk_check(uint8_t *hdr, const uint8_t *payload, size_t len,
		    struct smb_chunk_info *info)
{
	struct smb_walk w;
	int r = smb_chunk_head(hdr, payload, len, info, &w);

	return r ? r : smb_walk_finish(&w, info);
}

void smb_chunk_check_two(struct smb_chunk_copy *a, struct smb_chunk_copy *b)
{
	struct smb_walk wa, wb;
	int ra = smb_chunk_head(a->hdr, a->payload, a->len, a->info, &wa);
	int rb = smb_chunk_head(b->hdr, b->payload, b->len, b->info, &wb);

	/* Each walk is a serial chain of loads through the sizes; two
	 * independent chains advance together in about the time of one. */
	if (ra == 0 && rb == 0)
		while (smb_walk_step4(&wa) && smb_walk_step4(&wb))
			;
	a->rc = ra ? ra : smb_walk_finish(&wa, a->info);
	b->rc = rb ? rb : smb_walk_finish(&wb, b->info);
}

int smb_chunk_validate(void *chunk, size_t size, struct smb_chunk_info *info)
{
	uint8_t *c = chunk;

	if (size < SPN_SMB_CHUNK_HEADER_SIZE || size > SPN_SMB_MAX_CHUNK_SIZE) {
		memset(info, 0, sizeof(*info));
		return smb_chunk_end(info, SMB_CHUNK_BAD_HEADER,
				     "chunk size outside 8..65535 bytes", -EINVAL);
	}
	return smb_chunk_check(c, c + SPN_SMB_CHUNK_HEADER_SIZE,
			       size - SPN_SMB_CHUNK_HEADER_SIZE, info);
}

int smb_chunk_commit_take(struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  struct smb_chunk_taken *t, struct smb_chunk_info *info)
{
	int r;

	memset(info, 0, sizeof(*info));
	/* One-chunk pages (the layout producers use) need no BeingRead. */
	r = chunk == 0 ? spn_smb_peek_sole(smb, page) : -ENOENT;
	t->sole = r == 0;
	if (r == 0)
		t->layout = SPN_SMB_PAGE_DIV1;
	else if (r == -ENOENT)
		r = spn_smb_try_acquire_read(smb, page, chunk, &t->layout);
	if (r == -EINVAL)
		info->why = "page outside the SMB or chunk outside the page layout";
	else if (r == -EBUSY)
		info->why = "chunk is not complete";
	else if (r == -EAGAIN)
		info->why = "page word changed during the attempt";
	if (r != 0)
		return r;
	t->page = page;
	t->chunk = chunk;
	t->size = smb->chunk_size[t->layout];
	return 0;
}

int smb_chunk_commit_copy_out(struct spn_smb *smb, const struct smb_chunk_taken *t,
			      uint8_t *hdr, uint8_t *payload, size_t cap,
			      struct smb_chunk_info *info)
{
	const uint8_t *src = (const uint8_t *)spn_smb_chunk(smb, t->page,
							    t->layout, t->chunk);
	uint32_t len = t->size - SPN_SMB_CHUNK_HEADER_SIZE, attempt;
	int fr = -EAGAIN;
	bool fits = payload && len <= cap;

	/* The one copy out of the SMB; only the copy is parsed after. */
	if (fits) {
		memcpy(hdr, src, SPN_SMB_CHUNK_HEADER_SIZE);
		memcpy(payload, src + SPN_SMB_CHUNK_HEADER_SIZE, len);
	}
	/* Always give the chunk back, valid or not. A one-chunk page read in
	 * place is ours alone until then: plain stores. Otherwise the page
	 * word also moves when the producer takes or completes other chunks
	 * of the page, so retry within the usual budget; never wait for the
	 * producer. */
	if (t->sole) {
		spn_smb_free_sole(smb, t->page);
		fr = 0;
	}
	for (attempt = 0; attempt < SPN_SMB_CAS_MAX_ATTEMPTS && fr == -EAGAIN; attempt++)
		fr = spn_smb_try_free(smb, t->page, t->layout, t->chunk,
				      SPN_SMB_BEING_READ);
	memset(info, 0, sizeof(*info));
	info->freed = fr == 0;
	info->size = t->size;
	if (!fits) {
		info->why = "chunk larger than the copy buffer";
		return -ENOSPC;
	}
	return 0;
}

int smb_chunk_commit_finish(struct spn_smb *smb, const struct smb_chunk_taken *t,
			    uint8_t *hdr, uint8_t *payload, size_t cap,
			    struct smb_chunk_info *info)
{
	int r = smb_chunk_commit_copy_out(smb, t, hdr, payload, cap, info);
	bool freed = info->freed;

	if (r != 0)
		return r;
	r = smb_chunk_check(hdr, payload, t->size - SPN_SMB_CHUNK_HEADER_SIZE, info);
	info->complete = true;
	info->freed = freed;
	return r;
}

int smb_chunk_commit_copy(struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  void *dst, size_t cap, struct smb_chunk_info *info)
{
	struct smb_chunk_taken t;
	uint8_t *d = dst;
	int r = smb_chunk_commit_take(smb, page, chunk, &t, info);
	bool fits;

	if (r != 0)
		return r;
	fits = t.size <= cap;
	return smb_chunk_commit_finish(smb, &t, d,
				       fits ? d + SPN_SMB_CHUNK_HEADER_SIZE : NULL,
				       fits ? cap - SPN_SMB_CHUNK_HEADER_SIZE : 0,
				       info);
}

int smb_chunk_scrape_copy(const struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  void *dst, size_t cap, struct smb_chunk_info *info)
{
	struct spn_smb_scrape s;
	uint8_t *d = dst;
	uint16_t packets;
	int r;

	memset(info, 0, sizeof(*info));
	r = spn_smb_scrape_header(smb, page, chunk, &s);
	if (r == -EINVAL)
		info->why = "page outside the SMB";
	else if (r == -ENOENT)
		info->why = "no such chunk, or it is free or being read";
	else if (r == -ENODATA)
		info->why = "chunk being written has fewer than 2 fragments";
	if (r != 0)
		return r;
	if (s.size > cap) {
		info->size = s.size;
		info->why = "chunk larger than the copy buffer";
		return -ENOSPC;
	}
	/* The payload as it is now; only the copy is parsed. */
	memcpy(d + SPN_SMB_CHUNK_HEADER_SIZE, spn_smb_chunk_payload(s.hdr),
	       s.size - SPN_SMB_CHUNK_HEADER_SIZE);
	packets = s.packets;
	if (s.state != SPN_SMB_COMPLETE)
		packets = spn_smb_packets(spn_smb_packets_count(packets) - 1u,
					  spn_smb_packets_flags(packets) &
						  ~(uint32_t)(SPN_SMB_LAST_CONTINUES |
							      SPN_SMB_NEEDS_PATCHING));
	/* The header fields as loaded once, not as they may be now. */
	smb_put_le32(d, s.chunk_id);
	smb_put_le16(d + 4, s.writer_id);
	smb_put_le16(d + 6, packets);
	r = smb_chunk_validate(d, s.size, info);
	info->complete = s.state == SPN_SMB_COMPLETE;
	return r;
}
