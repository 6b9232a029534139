// SPDX-License-Identifier: Apache-2.0
// Per-packet processing at read time (trace-buffer.md §5): the packet
// validator, the trusted-field trailer, and the session's
// trusted_packet_sequence_id map.
#include "core/tbuf_int.h"

#include <errno.h>
#include <string.h>

#include "core/mem_hooks.h"
#include "spindle/pb.h"

/* TracePacket field numbers (trace-config.md §4). */
#define TB_F_TRUSTED_UID 3
#define TB_F_TRUSTED_SEQ_ID 10
#define TB_F_PREVIOUS_PACKET_DROPPED 42
#define TB_F_TRUSTED_PID 79

/* Largest length-delimited field the validator accepts (constants.md §6). */
#define TB_MAX_LEN_FIELD 268435455u

/* Top-level fields only the service may write (constants.md §6). */
static bool tb_field_reserved(uint32_t id)
{
	switch (id) {
	case 3: case 10: case 33: case 35: case 36: case 50:
	case 69: case 79: case 98: case 124: case 125: case 133:
		return true;
	default:
		return false;
	}
}

bool tb_packet_valid(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;

	while (p < end) {
		struct spn_pb_field f;
		int n = spn_pb_next_field(p, end, &f);

		/* Need-more counts as invalid: the packet must end exactly
		 * at a field boundary. */
		if (n <= 0)
			return false;
		if (tb_field_reserved(f.id))
			return false;
		if (f.wt == SPN_PB_LEN && f.value > TB_MAX_LEN_FIELD)
			return false;
		p += n;
	}
	return true;
}

size_t tb_trailer(uint8_t *out, uint32_t uid, uint32_t seqid, int32_t pid,
		  uint32_t loss)
{
	uint8_t *p = out;

	/* int32 fields: negative values sign-extend to 10 bytes. */
	p = spn_pb_field_int(p, TB_F_TRUSTED_UID, (int32_t)uid);
	p = spn_pb_field_varint(p, TB_F_TRUSTED_SEQ_ID, seqid);
	if (pid > 0)
		p = spn_pb_field_int(p, TB_F_TRUSTED_PID, pid);
	if (loss)
		p = spn_pb_field_varint(p, TB_F_PREVIOUS_PACKET_DROPPED, loss);
	return (size_t)(p - out);
}

/* One assigned sequence id. */
struct tb_seqid {
	uint32_t key;		/* producer << 16 | writer */
	uint32_t id;		/* trusted_packet_sequence_id */
};

struct svc_seqids {
	struct tb_seqid *v;	/* sorted by key */
	uint32_t n;		/* entries */
	uint32_t cap;		/* allocated entries */
	uint32_t next;		/* next id to hand out (starts at 2) */
};

int svc_seqids_create(struct svc_seqids **out)
{
	struct svc_seqids *ids = svc_mem_calloc(1, sizeof(*ids));

	*out = NULL;
	if (!ids)
		return -ENOMEM;
	ids->next = 2;	/* 1 is the service's own sequence */
	*out = ids;
	return 0;
}

void svc_seqids_destroy(struct svc_seqids *ids)
{
	if (!ids)
		return;
	svc_mem_free(ids->v);
	svc_mem_free(ids);
}

uint32_t svc_seqids_get(struct svc_seqids *ids, uint16_t producer_id,
			uint16_t writer_id)
{
	uint32_t key = ((uint32_t)producer_id << 16) | writer_id;
	uint32_t lo = 0, hi = ids->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (ids->v[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < ids->n && ids->v[lo].key == key)
		return ids->v[lo].id;
	if (ids->next == 0)	/* 2^32 - 2 sequences: out of ids */
		return 0;
	if (ids->n == ids->cap) {
		uint32_t cap = ids->cap ? ids->cap * 2 : 64;
		struct tb_seqid *v = svc_mem_realloc(ids->v, cap * sizeof(*v));

		if (!v)
			return 0;
		ids->v = v;
		ids->cap = cap;
	}
	memmove(&ids->v[lo + 1], &ids->v[lo], (ids->n - lo) * sizeof(ids->v[0]));
	ids->v[lo].key = key;
	ids->v[lo].id = ids->next++;
	ids->n++;
	return ids->v[lo].id;
}
