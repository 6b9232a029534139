// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen's trace checker: reassembles the ReadBuffers slices into TracePackets, decodes each with protobuf-c, finds the event number every loadgen event carries, checks each writer sequence for gaps and order, and maps sequences to threads by the tid the sequence names.
//
// Where the numbers are: the debug annotation "seq" (its name inline or
// interned through InternedData.debug_annotation_names, reset when the
// sequence says SEQ_INCREMENTAL_STATE_CLEARED), the counter value, or
// TestEvent.counter in TracePacket field 900 (unknown to our protos, read
// from protobuf-c's unknown fields). Which thread a sequence belongs to:
// the tid of a thread TrackDescriptor on it (or the legacy
// ThreadDescriptor), or TestEvent.seq_value for raw packets.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/spindle_loadgen.h"
#include "trace_packet.pb-c.h"

/* Largest packet reassembled (bigger ones are counted bad). */
#define LG_MAX_PACKET (64u << 20)

/* One writer sequence of the trace. */
struct lg_seq {
	uint32_t id;		/* trusted_packet_sequence_id; 0: free slot */
	int32_t tid;		/* its thread (0: not known yet) */
	uint64_t seq_iid;	/* interned id of the name "seq" (0: none) */
	bool any;		/* a value was seen */
	uint64_t last;		/* the last value in order */
	uint64_t found;		/* values found in order */
	uint64_t gaps;		/* holes: a value past last + 1 */
	uint64_t misordered;	/* values at or below last */
	uint64_t bytes;		/* bytes of packets with values */
	uint64_t loss_marks;	/* packets with previous_packet_dropped, but
				 * the sequence's first (the service marks
				 * it: nothing is known before it) */
	uint64_t packets;	/* packets of the sequence */
};

/* The checker. */
struct lg_check {
	enum lg_kind kind;		/* where the values are */
	struct lg_seq *tab;		/* open addressing by id */
	size_t cap;			/* slots (power of 2) */
	size_t n;			/* used slots */
	uint8_t *pkt;			/* packet being reassembled */
	size_t pkt_len;			/* its bytes */
	size_t pkt_cap;			/* its allocation */
	bool pkt_bad;			/* it outgrew LG_MAX_PACKET */
	FILE *out;			/* trace file or NULL */
	int out_err;			/* first write error */
	struct lg_check_totals tot;	/* totals */
};

int lg_check_create(enum lg_kind kind, const char *trace_path, struct lg_check **out)
{
	struct lg_check *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->kind = kind;
	c->cap = 1024;
	c->tab = calloc(c->cap, sizeof(*c->tab));
	if (!c->tab) {
		free(c);
		return -ENOMEM;
	}
	if (trace_path) {
		c->out = fopen(trace_path, "w");
		if (!c->out) {
			int err = -errno;

			fprintf(stderr, "spindle-loadgen: cannot create %s: %s\n", trace_path,
				strerror(errno));
			lg_check_free(c);
			return err;
		}
	}
	*out = c;
	return 0;
}

void lg_check_free(struct lg_check *c)
{
	if (!c)
		return;
	if (c->out)
		fclose(c->out);
	free(c->tab);
	free(c->pkt);
	free(c);
}

/* The sequence `id`, added when new; NULL when out of memory. */
static struct lg_seq *lg_seq_get(struct lg_check *c, uint32_t id)
{
	size_t i;

	if ((c->n + 1) * 2 > c->cap) {
		size_t cap = c->cap * 2;
		struct lg_seq *t = calloc(cap, sizeof(*t));

		if (!t)
			return NULL;
		for (size_t k = 0; k < c->cap; k++) {
			if (!c->tab[k].id)
				continue;
			for (i = c->tab[k].id * 2654435761u & (cap - 1); t[i].id; i = (i + 1) & (cap - 1))
				;
			t[i] = c->tab[k];
		}
		free(c->tab);
		c->tab = t;
		c->cap = cap;
	}
	for (i = id * 2654435761u & (c->cap - 1); c->tab[i].id; i = (i + 1) & (c->cap - 1))
		if (c->tab[i].id == id)
			return &c->tab[i];
	c->tab[i].id = id;
	c->n++;
	return &c->tab[i];
}

/* A varint at *p (before end). Returns false when it is cut or too long. */
static bool lg_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned s = 0; s < 64 && *p < end; s += 7) {
		uint8_t b = *(*p)++;

		x |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

/* TestEvent (field 900 as protobuf-c kept it: length prefix, then the
 * message): seq_value (2) is the tid, counter (3) the event number. */
static bool lg_raw_value(const ProtobufCMessageUnknownField *u, int32_t *tid, uint64_t *v)
{
	const uint8_t *p = u->data, *end = u->data + u->len;
	uint64_t len, key, x;
	bool has_v = false;

	if (!lg_varint(&p, end, &len) || len != (uint64_t)(end - p))
		return false;
	while (p < end) {
		if (!lg_varint(&p, end, &key))
			return false;
		switch (key & 7) {
		case 0:
			if (!lg_varint(&p, end, &x))
				return false;
			if (key >> 3 == 2)
				*tid = (int32_t)x;
			if (key >> 3 == 3) {
				*v = x;
				has_v = true;
			}
			break;
		case 2:
			if (!lg_varint(&p, end, &x) || x > (uint64_t)(end - p))
				return false;
			p += x;
			break;
		default:
			return false;
		}
	}
	return has_v;
}

/* The "seq" annotation of a track event. */
static bool lg_annotation_value(const Perfetto__Protos__TrackEvent *te,
				const struct lg_seq *s, uint64_t *v)
{
	for (size_t i = 0; i < te->n_debug_annotations; i++) {
		const Perfetto__Protos__DebugAnnotation *a = te->debug_annotations[i];
		bool named;

		if (a->name_field_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME)
			named = !strcmp(a->name, "seq");
		else
			named = a->name_field_case ==
					PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME_IID &&
				s->seq_iid && a->name_iid == s->seq_iid;
		if (!named)
			continue;
		if (a->value_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE)
			*v = a->uint_value;
		else if (a->value_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_INT_VALUE)
			*v = (uint64_t)a->int_value;
		else
			return false;
		return true;
	}
	return false;
}

/* Interning and thread identity carried by packet p of sequence s. */
static void lg_seq_state(struct lg_seq *s, const Perfetto__Protos__TracePacket *p)
{
	const Perfetto__Protos__InternedData *in = p->interned_data;

	if ((p->has_sequence_flags && (p->sequence_flags & 1u)) ||
	    (p->has_incremental_state_cleared && p->incremental_state_cleared))
		s->seq_iid = 0;
	for (size_t i = 0; in && i < in->n_debug_annotation_names; i++) {
		const Perfetto__Protos__DebugAnnotationName *n = in->debug_annotation_names[i];

		if (n->name && !strcmp(n->name, "seq") && n->has_iid)
			s->seq_iid = n->iid;
	}
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR &&
	    p->track_descriptor->thread && p->track_descriptor->thread->has_tid)
		s->tid = (int32_t)p->track_descriptor->thread->tid;
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_THREAD_DESCRIPTOR &&
	    p->thread_descriptor->has_tid)
		s->tid = (int32_t)p->thread_descriptor->tid;
}

/* The event number of p, if it carries one. */
static bool lg_value(const struct lg_check *c, struct lg_seq *s,
		     const Perfetto__Protos__TracePacket *p, uint64_t *v)
{
	const Perfetto__Protos__TrackEvent *te = NULL;

	if (c->kind == LG_RAW) {
		for (unsigned i = 0; i < p->base.n_unknown_fields; i++) {
			const ProtobufCMessageUnknownField *u = &p->base.unknown_fields[i];

			if (u->tag == 900 && u->wire_type == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
				return lg_raw_value(u, &s->tid, v);
		}
		return false;
	}
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT)
		te = p->track_event;
	if (!te)
		return false;
	if (c->kind == LG_COUNTER) {
		if (te->counter_value_field_case !=
		    PERFETTO__PROTOS__TRACK_EVENT__COUNTER_VALUE_FIELD_COUNTER_VALUE)
			return false;
		*v = (uint64_t)te->counter_value;
		return true;
	}
	return lg_annotation_value(te, s, v);
}

/* Takes the figures of a trace_stats packet (the last one wins). */
static void lg_take_stats(struct lg_check *c, const Perfetto__Protos__TraceStats *ts)
{
	struct lg_trace_stats *t = &c->tot.ts;

	memset(t, 0, sizeof(*t));
	t->seen = true;
	t->chunks_discarded = ts->chunks_discarded;
	for (size_t i = 0; i < ts->n_buffer_stats; i++) {
		const Perfetto__Protos__TraceStats__BufferStats *b = ts->buffer_stats[i];

		t->chunks_overwritten += b->chunks_overwritten;
		t->chunks_discarded += b->chunks_discarded;
		t->abi_violations += b->abi_violations;
		t->writer_packet_loss += b->trace_writer_packet_loss;
	}
}

/* Checks one whole packet. */
static void lg_packet(struct lg_check *c, const uint8_t *d, size_t n)
{
	Perfetto__Protos__TracePacket *p = perfetto__protos__trace_packet__unpack(NULL, n, d);
	struct lg_seq *s;
	uint64_t v;

	c->tot.packets++;
	if (!p) {
		c->tot.bad_packets++;
		return;
	}
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS)
		lg_take_stats(c, p->trace_stats);
	if (p->optional_trusted_packet_sequence_id_case !=
		    PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID ||
	    !p->trusted_packet_sequence_id)
		goto out;
	s = lg_seq_get(c, p->trusted_packet_sequence_id);
	if (!s) {
		c->tot.bad_packets++;
		goto out;
	}
	if (s->packets++ && p->has_previous_packet_dropped && p->previous_packet_dropped)
		s->loss_marks++;
	lg_seq_state(s, p);
	if (!lg_value(c, s, p, &v))
		goto out;
	s->bytes += n;
	if (s->any && v <= s->last) {
		s->misordered++;
		goto out;
	}
	if (s->any && v > s->last + 1)
		s->gaps++;
	s->any = true;
	s->last = v;
	s->found++;
out:
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
}

/* Appends a packet to the trace file as Trace.packet (field 1). */
static void lg_write(struct lg_check *c, const uint8_t *d, size_t n)
{
	uint8_t hdr[11], *q = hdr;
	uint64_t len = n;

	if (!c->out || c->out_err)
		return;
	*q++ = (1u << 3) | 2u;
	do {
		*q++ = (uint8_t)(len | (len > 0x7f ? 0x80 : 0));
		len >>= 7;
	} while (len);
	if (fwrite(hdr, 1, (size_t)(q - hdr), c->out) != (size_t)(q - hdr) ||
	    fwrite(d, 1, n, c->out) != n)
		c->out_err = -EIO;
}

void lg_check_slice(struct lg_check *c, const uint8_t *d, size_t n, bool last)
{
	if (n && !c->pkt_bad) {
		if (c->pkt_len + n > LG_MAX_PACKET) {
			c->pkt_bad = true;
		} else if (c->pkt_len + n > c->pkt_cap) {
			size_t cap = c->pkt_cap ? c->pkt_cap : 4096;
			uint8_t *b;

			while (cap < c->pkt_len + n)
				cap *= 2;
			b = realloc(c->pkt, cap);
			if (!b) {
				c->pkt_bad = true;
			} else {
				c->pkt = b;
				c->pkt_cap = cap;
			}
		}
		if (!c->pkt_bad) {
			memcpy(c->pkt + c->pkt_len, d, n);
			c->pkt_len += n;
		}
	}
	if (!last)
		return;
	if (c->pkt_bad) {
		c->tot.packets++;
		c->tot.bad_packets++;
	} else {
		lg_write(c, c->pkt, c->pkt_len);
		lg_packet(c, c->pkt, c->pkt_len);
	}
	c->pkt_len = 0;
	c->pkt_bad = false;
}

/* (tid, thread index) pairs sorted by tid, for lg_check_finish. */
struct lg_tid {
	int32_t tid;
	uint32_t idx;
};

static int lg_tid_cmp(const void *a, const void *b)
{
	const struct lg_tid *x = a, *y = b;

	return (x->tid > y->tid) - (x->tid < y->tid);
}

int lg_check_finish(struct lg_check *c, struct lg_shared *sh, size_t nthreads)
{
	struct lg_tid *map = calloc(nthreads ? nthreads : 1, sizeof(*map));
	struct lg_check_totals *t = &c->tot;

	if (!map)
		return -ENOMEM;
	for (size_t i = 0; i < nthreads; i++)
		map[i] = (struct lg_tid){ sh->threads[i].tid, (uint32_t)i };
	qsort(map, nthreads, sizeof(*map), lg_tid_cmp);
	for (size_t k = 0; k < c->cap; k++) {
		const struct lg_seq *s = &c->tab[k];
		struct lg_tid key = { s->tid, 0 }, *m;

		if (!s->id)
			continue;
		t->loss_marks += s->loss_marks;
		if (!s->any)
			continue;
		t->sequences++;
		t->found += s->found;
		t->gaps += s->gaps;
		t->misordered += s->misordered;
		t->bytes += s->bytes;
		m = s->tid ? bsearch(&key, map, nthreads, sizeof(*map), lg_tid_cmp) : NULL;
		if (!m) {
			t->unattributed += s->found;
			continue;
		}
		sh->threads[m->idx].seqs++;
		sh->threads[m->idx].found += s->found;
		sh->threads[m->idx].gaps += s->gaps;
		sh->threads[m->idx].misordered += s->misordered;
		sh->threads[m->idx].bytes += s->bytes;
	}
	free(map);
	if (c->out && fflush(c->out) != 0)
		c->out_err = -EIO;
	return c->out_err;
}

void lg_check_totals(const struct lg_check *c, struct lg_check_totals *t)
{
	*t = c->tot;
}
