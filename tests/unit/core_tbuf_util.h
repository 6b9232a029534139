// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the trace buffer tests: building chunk payloads and
// test packets, committing them, and parsing what a read returned.
#ifndef SPN_TEST_CORE_TBUF_UTIL_H
#define SPN_TEST_CORE_TBUF_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/tbuf.h"
#include "spindle/pb.h"

/* A chunk payload being built. */
struct tcb {
	uint8_t buf[65536];	/* payload bytes */
	uint32_t len;		/* bytes used */
	uint16_t nfrags;	/* fragments declared */
};

static inline void tcb_init(struct tcb *c)
{
	c->len = 0;
	c->nfrags = 0;
}

/* Appends a fragment with a 4-byte redundant size (or 1 byte if compact). */
static inline void tcb_frag(struct tcb *c, const uint8_t *data, uint32_t size,
			    bool compact)
{
	if (compact && size < 127) {
		c->buf[c->len++] = (uint8_t)size;
	} else {
		spn_pb_put_varint4(c->buf + c->len, size);
		c->len += 4;
	}
	memcpy(c->buf + c->len, data, size);
	c->len += size;
	c->nfrags++;
}

/* Appends raw bytes (not counted as a fragment). */
static inline void tcb_raw(struct tcb *c, const void *p, uint32_t n)
{
	memcpy(c->buf + c->len, p, n);
	c->len += n;
}

/* Appends the drop marker as a fragment. */
static inline void tcb_drop(struct tcb *c)
{
	static const uint8_t m[4] = { 0xFF, 0xFF, 0xFF, 0x7F };

	tcb_raw(c, m, 4);
	c->nfrags++;
}

/* Pads the payload with zeros to `len` bytes (unused chunk tail). */
static inline void tcb_pad(struct tcb *c, uint32_t len)
{
	if (len > c->len) {
		memset(c->buf + c->len, 0, len - c->len);
		c->len = len;
	}
}

/*
 * A test packet: field 1 = seq, field 8 = counter, and when filler > 0
 * field 2 = `filler` bytes (counter + i) & 0xFF. Returns its size.
 */
static inline uint32_t tpkt(uint8_t *out, uint32_t seq, uint32_t counter,
			    uint32_t filler)
{
	uint8_t *p = out;

	p = spn_pb_field_varint(p, 1, seq);
	p = spn_pb_field_varint(p, 8, counter);
	if (filler) {
		p = spn_pb_put_key(p, 2, SPN_PB_LEN);
		p = spn_pb_put_varint(p, filler);
		for (uint32_t i = 0; i < filler; i++)
			*p++ = (uint8_t)(counter + i);
	}
	return (uint32_t)(p - out);
}

/* Commits c as chunk `id` of (p, w), deferred (svc_tbuf_chunk.defer) or
 * not. uid = 1000 + p, pid = 4000 + p. */
static inline int tcommit_as(struct svc_tbuf *b, unsigned lane, uint16_t p,
			     uint16_t w, uint32_t id, const struct tcb *c,
			     uint8_t flags, bool complete, bool defer)
{
	struct svc_tbuf_chunk ch = {
		.producer_id = p, .writer_id = w, .chunk_id = id,
		.uid = 1000u + p, .pid = 4000 + p, .nfrags = c->nfrags,
		.flags = flags, .complete = complete, .payload = c->buf,
		.len = c->len, .defer = defer,
	};

	return svc_tbuf_lane_commit(b, lane, &ch);
}

/* Commits c as chunk `id` of (p, w), published at once. */
static inline int tcommit(struct svc_tbuf *b, unsigned lane, uint16_t p,
			  uint16_t w, uint32_t id, const struct tcb *c,
			  uint8_t flags, bool complete)
{
	return tcommit_as(b, lane, p, w, id, c, flags, complete, false);
}

/* One packet as read back. */
struct tpk {
	uint32_t seq;		/* field 1 */
	uint32_t counter;	/* field 8 */
	uint32_t filler;	/* field 2 length */
	bool filler_ok;		/* field 2 holds the expected pattern */
	uint32_t uid;		/* trusted_uid */
	uint32_t seqid;		/* trusted_packet_sequence_id */
	int32_t pid;		/* trusted_pid, 0 when absent */
	uint32_t loss;		/* previous_packet_dropped, 0 when absent */
	bool trailer_ok;	/* trailer fields last, in spec order */
	uint32_t size;		/* packet bytes (trailer included) */
	const uint8_t *bytes;	/* the packet inside the output */
};

/* Parses one packet; returns false if it is not well formed. */
static inline bool tpk_parse(const uint8_t *p, size_t len, struct tpk *k)
{
	const uint8_t *end = p + len;
	static const uint32_t order[] = { 3, 10, 79, 42 };
	uint32_t oi = 0;
	bool in_trailer = false;

	memset(k, 0, sizeof(*k));
	k->bytes = p;
	k->size = (uint32_t)len;
	k->trailer_ok = true;
	k->filler_ok = true;
	while (p < end) {
		struct spn_pb_field f;
		int n = spn_pb_next_field(p, end, &f);

		if (n <= 0)
			return false;
		if (f.id == 3)
			in_trailer = true;
		if (in_trailer) {
			while (oi < 4 && order[oi] != f.id)
				oi++;
			if (oi == 4)
				k->trailer_ok = false;
		}
		switch (f.id) {
		case 1: k->seq = (uint32_t)f.value; break;
		case 8: k->counter = (uint32_t)f.value; break;
		case 2:
			k->filler = (uint32_t)f.value;
			for (uint32_t i = 0; i < f.value; i++)
				if (f.data[i] != (uint8_t)(k->counter + i))
					k->filler_ok = false;
			break;
		case 3: k->uid = (uint32_t)f.value; break;
		case 10: k->seqid = (uint32_t)f.value; break;
		case 79: k->pid = (int32_t)f.value; break;
		case 42: k->loss = (uint32_t)f.value; break;
		default: break;
		}
		p += n;
	}
	if (!in_trailer)
		k->trailer_ok = false;
	return true;
}

/*
 * Splits a read output (Trace framing) into packets. Returns the count, or
 * -1 if the framing or a packet is malformed.
 */
static inline int tparse(const struct svc_tbuf_out *o, struct tpk *v, int max)
{
	const uint8_t *p = o->data, *end = o->data + o->len;
	int n = 0;

	while (p < end) {
		uint64_t len;
		int k;

		if (*p++ != 0x0A)
			return -1;
		k = spn_pb_get_varint(p, end, &len);
		if (k < 0 || len > (uint64_t)(end - p - k) || n == max)
			return -1;
		p += k;
		if (!tpk_parse(p, (size_t)len, &v[n++]))
			return -1;
		p += len;
	}
	return n;
}

#endif
