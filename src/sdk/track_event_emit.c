// SPDX-License-Identifier: Apache-2.0
// The track-event path: per-sequence refresh (clearing packet, clock snapshot, process and thread descriptors), interning, timestamps, and the encoding of one event into one TracePacket on the thread's writer.
//
// Owner thread only: everything here touches the calling thread's
// te_thread and its sequences, and the writers the host gave it. The only
// shared reads are the category words, the instance words (see
// track_event.c for their order) and te->clk.mult.
//
// Encoding. Every length-delimited field is written with its exact size,
// computed before the field (nested sizes never need back-filling), and
// every field goes through the writer's inline spn_tw_* calls, which
// handle chunk boundaries. A packet is
//	timestamp, [timestamp_clock_id], sequence_flags = NEEDS,
//	[interned_data {categories, names, annotation names}],
//	track_event {type, [track_uuid], [category_iids], [name_iid | name],
//		     [counter value], annotations and flows in argument order}
// with the field order of track-event.md §10's example.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sdk/track_event_int.h"
#include "spindle/pb.h"

/* TracePacket fields. */
#define F_PKT_CLOCK_SNAPSHOT 6u
#define F_PKT_TIMESTAMP 8u
#define F_PKT_TRACK_EVENT 11u
#define F_PKT_INTERNED 12u
#define F_PKT_FLAGS 13u
#define F_PKT_CLOCK_ID 58u
#define F_PKT_DEFAULTS 59u
#define F_PKT_TRACK_DESC 60u
#define F_PKT_FIRST 87u
/* TrackEvent fields. */
#define F_TE_CATEGORY_IIDS 3u
#define F_TE_ANNOTATIONS 4u
#define F_TE_TYPE 9u
#define F_TE_NAME_IID 10u
#define F_TE_TRACK_UUID 11u
#define F_TE_NAME 23u
#define F_TE_COUNTER 30u
#define F_TE_DCOUNTER 44u
#define F_TE_FLOW 47u
#define F_TE_FLOW_END 48u
/* DebugAnnotation fields. */
#define F_DA_NAME_IID 1u
#define F_DA_BOOL 2u
#define F_DA_UINT 3u
#define F_DA_INT 4u
#define F_DA_DOUBLE 5u
#define F_DA_STR 6u
#define F_DA_PTR 7u
#define F_DA_NAME 10u
/* TracePacketDefaults / TrackEventDefaults. */
#define F_DEF_TRACK_EVENT 11u
#define F_DEF_CLOCK_ID 58u
#define F_TED_TRACK_UUID 11u
/* ClockSnapshot and its Clock. */
#define F_CS_CLOCK 1u
#define F_CLK_ID 1u
#define F_CLK_TS 2u
#define F_CLK_INCREMENTAL 3u
/* TrackDescriptor and CounterDescriptor. */
#define F_TD_UUID 1u
#define F_TD_NAME 2u
#define F_TD_PARENT 5u
#define F_TD_COUNTER 8u
#define F_CD_UNIT 3u
#define F_CD_MULT 4u
/* Interned entries: iid and name. */
#define F_IE_IID 1u
#define F_IE_NAME 2u

/* SequenceFlags. */
#define SEQ_CLEARED 1u
#define SEQ_NEEDS 2u

/* Placeholder for runtime names when the config filters them. */
#define TE_FILTERED_NAME "FILTERED"

#define te_likely(x) __builtin_expect(!!(x), 1)
#define te_unlikely(x) __builtin_expect(!!(x), 0)
#define TE_INLINE static inline __attribute__((always_inline))

/* ---- Sizes and small writers ---------------------------------------------------- */

/* Bytes of a key (fields below 2048). */
TE_INLINE uint32_t te_klen(uint32_t field)
{
	return field < 16 ? 1u : 2u;
}

/* Bytes of a varint, without a loop: 7 bits per byte of the value's
 * significant bits (at least one). */
TE_INLINE uint32_t te_vlen(uint64_t v)
{
	uint32_t bits = 64u - (uint32_t)__builtin_clzll(v | 1);

	return (bits * 9u + 64u) / 64u;
}

/* Bytes of a varint field. */
TE_INLINE uint64_t te_sz_varint(uint32_t field, uint64_t v)
{
	return te_klen(field) + te_vlen(v);
}

/* Bytes of a length-delimited field of n payload bytes. */
TE_INLINE uint64_t te_sz_len(uint32_t field, uint64_t n)
{
	return te_klen(field) + te_vlen(n) + n;
}

/* Key and length of a length-delimited field whose payload follows. */
TE_INLINE void te_put_len(struct spn_tw *tw, uint32_t field, uint64_t n)
{
	uint8_t b[SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT], *p;

	p = spn_pb_put_key(b, field, SPN_PB_LEN);
	p = spn_pb_put_varint(p, n);
	spn_tw_append(tw, b, (size_t)(p - b));
}

/* After a packet: did the writer lose one since we last looked? Then the
 * sequence must clear its state at its next event (track-event.md §7.2
 * rule 7): the service marks the loss and the reader drops the state. */
TE_INLINE void te_check_loss(struct te_seq *s)
{
	uint64_t d = spn_tw_stats(s->tw)->packets_dropped;

	if (te_unlikely(d != s->dropped)) {
		s->dropped = d;
		s->lost = true;
		s->gen = TE_GEN_FORCE;
	}
}

/* ---- Interning --------------------------------------------------------------- */

/* Takes a fresh iid for (kind, key) into way e[0] of its set (the previous
 * e[0] moves to e[1] unless e[0] was stale) and lists the name as new. */
static uint32_t te_intern_miss(struct te_seq *s, struct te_ient *e, uint32_t kind,
			       const void *key, const char *str, struct te_new *nw,
			       uint32_t *nn)
{
	uint32_t iid = s->next_iid[kind]++;

	if (e[0].tag >> 3 == s->igen)
		e[1] = e[0];
	e[0].key = key;
	e[0].tag = s->igen << 3 | kind;
	e[0].iid = iid;
	if (str) {
		nw[*nn].kind = kind;
		nw[*nn].iid = iid;
		nw[*nn].str = str;
		nw[*nn].len = (uint32_t)strlen(str);
		(*nn)++;
	}
	return iid;
}

/* The iid of (kind, key) on this sequence, interning it on a miss. */
TE_INLINE uint32_t te_intern(struct te_seq *s, uint32_t kind, const void *key,
			     const char *str, struct te_new *nw, uint32_t *nn)
{
	uint64_t h = ((uint64_t)(uintptr_t)key ^ kind) * 0x9E3779B97F4A7C15ull;
	struct te_ient *e = &s->tab[(h >> (64 - TE_TAB_BITS)) * 2];
	uint32_t tag = s->igen << 3 | kind;

	if (te_likely(e[0].key == key && e[0].tag == tag))
		return e[0].iid;
	if (e[1].key == key && e[1].tag == tag)
		return e[1].iid;
	return te_intern_miss(s, e, kind, key, str, nw, nn);
}

/* Forgets every interned entry (one increment; the table is wiped only
 * when the 29-bit generation wraps). */
static void te_intern_reset(struct te_seq *s)
{
	s->igen = (s->igen + 1) & ((1u << 29) - 1);
	if (s->igen == 0) {
		memset(s->tab, 0, sizeof(s->tab));
		s->igen = 1;
	}
	for (uint32_t k = 0; k < TE_K_COUNT; k++)
		s->next_iid[k] = 1;
}

/* ---- Clock ------------------------------------------------------------------ */

/* Clock 64 at TSC reading tsc (tsc - base_tsc < span). */
TE_INLINE uint64_t te_clock64(const struct te_seq *s, uint64_t tsc)
{
	return s->base_ns + (((tsc - s->base_tsc) * s->mult) >> 32);
}

/* Restarts the sequence's clock function at (tsc, ns64) with the latest
 * calibration; clock 64 stays continuous. */
static void te_rebase(struct spn_te *te, struct te_seq *s, uint64_t tsc, uint64_t ns64)
{
	uint64_t mult = atomic_load_explicit(&te->clk.mult, memory_order_relaxed);
	double ticks = (double)te->clk.period_ns * 4294967296.0 / (double)mult;
	uint64_t lim = UINT64_MAX / mult;

	s->base_tsc = tsc;
	s->base_ns = ns64;
	s->mult = mult;
	s->span = ticks < (double)lim ? (uint64_t)ticks : lim;
}

/* Writes a packet with clock_snapshot {BOOTTIME: boot, 64: ns64}
 * (flags: sequence_flags to add, 0 for none). The snapshot's Clock for 64
 * says is_incremental when the sequence writes deltas. */
static void te_put_snapshot(struct spn_tw *tw, struct te_seq *s, uint64_t boot, uint64_t ns64)
{
	bool inc = !(s->flags & TE_F_ABS_TS);
	uint64_t c1 = te_sz_varint(F_CLK_ID, SPN_TE_CLOCK_ID_BOOTTIME) +
		      te_sz_varint(F_CLK_TS, boot);
	uint64_t c2 = te_sz_varint(F_CLK_ID, SPN_TE_CLOCK_ID_TSC) +
		      te_sz_varint(F_CLK_TS, ns64) + (inc ? 2 : 0);

	te_put_len(tw, F_PKT_CLOCK_SNAPSHOT, te_sz_len(F_CS_CLOCK, c1) + te_sz_len(F_CS_CLOCK, c2));
	te_put_len(tw, F_CS_CLOCK, c1);
	spn_tw_varint(tw, F_CLK_ID, SPN_TE_CLOCK_ID_BOOTTIME);
	spn_tw_varint(tw, F_CLK_TS, boot);
	te_put_len(tw, F_CS_CLOCK, c2);
	spn_tw_varint(tw, F_CLK_ID, SPN_TE_CLOCK_ID_TSC);
	spn_tw_varint(tw, F_CLK_TS, ns64);
	if (inc)
		spn_tw_bool(tw, F_CLK_INCREMENTAL, true);
}

/* The periodic snapshot: re-pairs clock 64 with BOOTTIME and restarts the
 * delta chain at the snapshot's value. */
static void __attribute__((noinline)) te_snapshot(struct spn_te *te, struct te_seq *s)
{
	uint64_t tsc, boot, ns64;

	te_clock_pair(&tsc, &boot);
	te_clock_refine(&te->clk, tsc, boot);
	ns64 = tsc - s->base_tsc < s->span ? te_clock64(s, tsc) : s->base_ns;
	if (ns64 < s->last_ns)
		ns64 = s->last_ns;
	te_rebase(te, s, tsc, ns64);
	s->last_ns = ns64;
	if (spn_tw_begin_packet(s->tw) == 0)
		te_put_snapshot(s->tw, s, boot, ns64);
	spn_tw_end_packet(s->tw);
	te_check_loss(s);
}

/* The timestamp field value of a packet written now: a delta on clock 64,
 * clock 64 itself (absolute mode) or BOOTTIME ns. */
TE_INLINE uint64_t te_now(struct spn_te *te, struct te_seq *s)
{
	uint64_t tsc, ns;

	if (te->clk.kind != SPN_TE_CLOCK_TSC)
		return te_boottime();
	tsc = te_rdtsc();
	if (te_unlikely(tsc - s->base_tsc >= s->span)) {
		te_snapshot(te, s);
		tsc = te_rdtsc();
		if (tsc - s->base_tsc >= s->span)
			tsc = s->base_tsc;
	}
	ns = te_clock64(s, tsc);
	if (te_unlikely(ns < s->last_ns))
		ns = s->last_ns;
	if (s->flags & TE_F_ABS_TS)
		return ns;
	tsc = ns - s->last_ns;
	s->last_ns = ns;
	return tsc;
}

/* ---- Refresh: clearing packet and descriptors ------------------------------------ */

/* A TrackDescriptor packet from pre-encoded bytes, timestamped `ts`. */
static void te_put_desc_packet(struct te_seq *s, const uint8_t *desc, uint32_t len,
			       uint64_t ts, bool needs)
{
	if (spn_tw_begin_packet(s->tw) == 0) {
		spn_tw_varint(s->tw, F_PKT_TIMESTAMP, ts);
		if (needs)
			spn_tw_varint(s->tw, F_PKT_FLAGS, SEQ_NEEDS);
		spn_tw_bytes(s->tw, F_PKT_TRACK_DESC, desc, len);
	}
	spn_tw_end_packet(s->tw);
}

/*
 * Starts the sequence's incremental state over (track-event.md §9 A-C):
 * the clearing packet (first_packet_on_sequence on a new writer, the
 * defaults naming the thread track and, on the TSC, clock 64, plus the
 * snapshot defining clock 64), then the process and thread descriptors.
 */
static void te_clear(struct spn_te *te, struct te_thread *t, struct te_seq *s, bool first)
{
	struct spn_tw *tw = s->tw;
	bool tsc = te->clk.kind == SPN_TE_CLOCK_TSC;
	uint64_t ttsc = 0, boot, ns64 = 0, ts, ted, def;

	te_intern_reset(s);
	if (tsc) {
		te_clock_pair(&ttsc, &boot);
		te_clock_refine(&te->clk, ttsc, boot);
		if (!s->mult)
			ns64 = boot;	/* a new sequence starts on BOOTTIME */
		else if (ttsc - s->base_tsc < s->span)
			ns64 = te_clock64(s, ttsc);
		else
			ns64 = s->base_ns;
		if (ns64 < s->last_ns)
			ns64 = s->last_ns;
		te_rebase(te, s, ttsc, ns64);
		s->last_ns = ns64;
	} else {
		boot = te_boottime();
	}
	ted = te_sz_varint(F_TED_TRACK_UUID, t->uuid);
	def = te_sz_len(F_DEF_TRACK_EVENT, ted) +
	      (tsc ? te_sz_varint(F_DEF_CLOCK_ID, SPN_TE_CLOCK_ID_TSC) : 0);
	if (spn_tw_begin_packet(tw) == 0) {
		if (first)
			spn_tw_bool(tw, F_PKT_FIRST, true);
		spn_tw_varint(tw, F_PKT_FLAGS, SEQ_CLEARED);
		te_put_len(tw, F_PKT_DEFAULTS, def);
		if (tsc)
			spn_tw_varint(tw, F_DEF_CLOCK_ID, SPN_TE_CLOCK_ID_TSC);
		te_put_len(tw, F_DEF_TRACK_EVENT, ted);
		spn_tw_varint(tw, F_TED_TRACK_UUID, t->uuid);
		if (tsc)
			te_put_snapshot(tw, s, boot, ns64);
	}
	spn_tw_end_packet(tw);
	/* Descriptors at the clearing instant: delta 0 on clock 64, its
	 * absolute value, or BOOTTIME. On clock 64 they depend on the
	 * sequence's state (defaults, snapshot), hence NEEDS. */
	ts = !tsc ? boot : (s->flags & TE_F_ABS_TS) ? ns64 : 0;
	te_put_desc_packet(s, te->proc_desc, te->proc_desc_len, ts, tsc);
	te_put_desc_packet(s, t->desc, t->desc_len, ts, tsc);
}

struct te_seq *te_refresh(struct spn_te *te, struct te_thread *t, uint32_t inst)
{
	struct te_seq *s = t->seq[inst];
	/* Acquire: pairs with the controller's release store of gen (after
	 * the flags). */
	uint64_t g = atomic_load_explicit(&te->inst[inst].gen, memory_order_acquire);
	bool clear = false, first = false;

	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return NULL;
		s->igen = 0;
		t->seq[inst] = s;
	}
	if (!s->has_session || s->session != (uint32_t)(g >> 32) || !s->tw) {
		struct spn_tw *tw = te->writer(te->ctx, inst);

		s->session = (uint32_t)(g >> 32);
		s->has_session = true;
		if (tw != s->tw) {
			s->tw = tw;
			clear = true;
		}
		if (!tw) {
			/* No writer for this generation: events skip until
			 * the instance changes. */
			s->gen = g;
			s->seen = g;
			return NULL;
		}
	}
	if (g != s->seen || s->lost)
		clear = true;
	s->flags = atomic_load_explicit(&te->inst[inst].flags, memory_order_relaxed);
	if (clear) {
		const struct spn_tw_stats *st = spn_tw_stats(s->tw);

		/* A writer that never wrote starts its sequence. */
		first = st->packets == 0;
		s->dropped = st->packets_dropped;
		s->lost = false;
		s->redesc = false;
		te_clear(te, t, s, first);
	} else if (s->redesc) {
		s->redesc = false;
		te_put_desc_packet(s, t->desc, t->desc_len, te_now(te, s),
				   te->clk.kind == SPN_TE_CLOCK_TSC);
	}
	s->seen = g;
	s->gen = g;
	te_check_loss(s);
	return s;
}

/* ---- Tracks -------------------------------------------------------------------- */

/* Describes `tr` (uuid) on this sequence: {uuid, parent_uuid, name,
 * [counter {unit, unit_multiplier}]}; no timestamp, so the packet does not
 * depend on the sequence's state. */
static void __attribute__((noinline)) te_track_desc(struct te_thread *t, struct te_seq *s,
						    struct spn_te_track *tr, uint64_t uuid)
{
	struct spn_tw *tw = s->tw;
	uint64_t parent = tr->scope == SPN_TE_SCOPE_THREAD ? t->uuid : t->process_uuid;
	size_t nlen = tr->name ? strlen(tr->name) : 0;
	uint64_t cd = 0, td;

	if (tr->counter) {
		if (tr->unit)
			cd += te_sz_varint(F_CD_UNIT, tr->unit);
		if (tr->unit_multiplier)
			cd += te_sz_varint(F_CD_MULT, (uint64_t)tr->unit_multiplier);
	}
	td = te_sz_varint(F_TD_UUID, uuid) + te_sz_varint(F_TD_PARENT, parent) +
	     (nlen ? te_sz_len(F_TD_NAME, nlen) : 0) + (tr->counter ? te_sz_len(F_TD_COUNTER, cd) : 0);
	if (spn_tw_begin_packet(tw) == 0) {
		te_put_len(tw, F_PKT_TRACK_DESC, td);
		spn_tw_varint(tw, F_TD_UUID, uuid);
		spn_tw_varint(tw, F_TD_PARENT, parent);
		if (nlen)
			spn_tw_bytes(tw, F_TD_NAME, tr->name, nlen);
		if (tr->counter) {
			te_put_len(tw, F_TD_COUNTER, cd);
			if (tr->unit)
				spn_tw_varint(tw, F_CD_UNIT, tr->unit);
			if (tr->unit_multiplier)
				spn_tw_int(tw, F_CD_MULT, tr->unit_multiplier);
		}
	}
	spn_tw_end_packet(tw);
	te_check_loss(s);
}

/* ---- Events ------------------------------------------------------------------ */

/* One event, as the entry points pass it on. */
struct te_ev {
	uint32_t type;			/* enum spn_te_type */
	bool dyn;			/* name is written inline */
	bool dbl;			/* counter: vd, else vi */
	const char *name;		/* begin / instant name, or NULL */
	struct spn_te_track *track;	/* NULL: the thread track */
	uint64_t ts;			/* explicit BOOTTIME ns, or 0 */
	const struct spn_te_arg *args;	/* annotations and flows */
	uint32_t nargs;			/* <= SPN_TE_MAX_ARGS */
	int64_t vi;			/* counter value */
	double vd;			/* counter value */
};

/* Bytes of an annotation's value field (0: not an annotation). */
TE_INLINE uint64_t te_sz_value(const struct spn_te_arg *a, uint32_t *slen)
{
	switch (a->kind) {
	case SPN_TE_ARG_INT:
		return te_sz_varint(F_DA_INT, (uint64_t)a->v.i);
	case SPN_TE_ARG_UINT:
		return te_sz_varint(F_DA_UINT, a->v.u);
	case SPN_TE_ARG_DOUBLE:
		return 1 + 8;
	case SPN_TE_ARG_BOOL:
		return 2;
	case SPN_TE_ARG_STR:
		*slen = a->v.s ? (uint32_t)strlen(a->v.s) : 0;
		return te_sz_len(F_DA_STR, *slen);
	case SPN_TE_ARG_PTR:
		return te_sz_varint(F_DA_PTR, (uint64_t)(uintptr_t)a->v.p);
	default:
		return 0;
	}
}

/* Packets up to this size are encoded on the stack, then appended. */
#define TE_STACK_PACKET 256u

/* Where te_encode() writes: a stack buffer (p) or the writer (tw). */
struct te_out {
	uint8_t *p;		/* buffer cursor */
	struct spn_tw *tw;	/* writer */
};

TE_INLINE void o_varint(struct te_out *o, bool st, uint32_t f, uint64_t v)
{
	if (st)
		spn_tw_varint(o->tw, f, v);
	else
		o->p = spn_pb_field_varint(o->p, f, v);
}

TE_INLINE void o_fixed64(struct te_out *o, bool st, uint32_t f, uint64_t v)
{
	if (st)
		spn_tw_fixed64(o->tw, f, v);
	else
		o->p = spn_pb_field_fixed64(o->p, f, v);
}

TE_INLINE void o_bytes(struct te_out *o, bool st, uint32_t f, const void *d, size_t n)
{
	if (st)
		spn_tw_bytes(o->tw, f, d, n);
	else
		o->p = spn_pb_field_bytes(o->p, f, d, n);
}

/* Key and length of a message whose n payload bytes follow. */
TE_INLINE void o_len(struct te_out *o, bool st, uint32_t f, uint64_t n)
{
	if (st) {
		te_put_len(o->tw, f, n);
	} else {
		o->p = spn_pb_put_key(o->p, f, SPN_PB_LEN);
		o->p = spn_pb_put_varint(o->p, n);
	}
}

TE_INLINE void o_value(struct te_out *o, bool st, const struct spn_te_arg *a, uint32_t slen)
{
	uint64_t bits;

	switch (a->kind) {
	case SPN_TE_ARG_INT:
		o_varint(o, st, F_DA_INT, (uint64_t)a->v.i);
		break;
	case SPN_TE_ARG_UINT:
		o_varint(o, st, F_DA_UINT, a->v.u);
		break;
	case SPN_TE_ARG_DOUBLE:
		memcpy(&bits, &a->v.d, sizeof(bits));
		o_fixed64(o, st, F_DA_DOUBLE, bits);
		break;
	case SPN_TE_ARG_BOOL:
		o_varint(o, st, F_DA_BOOL, a->v.b ? 1 : 0);
		break;
	case SPN_TE_ARG_STR:
		o_bytes(o, st, F_DA_STR, a->v.s ? a->v.s : "", slen);
		break;
	case SPN_TE_ARG_PTR:
		o_varint(o, st, F_DA_PTR, (uint64_t)(uintptr_t)a->v.p);
		break;
	default:
		break;
	}
}

/* Everything of the packet after its header; sizes come from te_write. */
TE_INLINE void te_encode(struct te_out *o, bool st, const struct te_thread *t,
			 const struct te_ev *ev, uint64_t ts, bool clock6,
			 const struct te_new *nw, uint32_t nn, uint64_t interned, uint64_t body,
			 uint64_t uuid, uint32_t cat_iid, uint32_t name_iid, const char *name,
			 uint32_t nlen, const uint32_t *aiid, const uint32_t *asz,
			 const uint32_t *slen)
{
	o_varint(o, st, F_PKT_TIMESTAMP, ts);
	if (clock6)
		o_varint(o, st, F_PKT_CLOCK_ID, SPN_TE_CLOCK_ID_BOOTTIME);
	o_varint(o, st, F_PKT_FLAGS, SEQ_NEEDS);
	if (nn) {
		o_len(o, st, F_PKT_INTERNED, interned);
		for (uint32_t i = 0; i < nn; i++) {
			o_len(o, st, nw[i].kind, te_sz_varint(F_IE_IID, nw[i].iid) +
							 te_sz_len(F_IE_NAME, nw[i].len));
			o_varint(o, st, F_IE_IID, nw[i].iid);
			o_bytes(o, st, F_IE_NAME, nw[i].str, nw[i].len);
		}
	}
	o_len(o, st, F_PKT_TRACK_EVENT, body);
	o_varint(o, st, F_TE_TYPE, ev->type);
	if (ev->track)
		o_varint(o, st, F_TE_TRACK_UUID, uuid);
	if (cat_iid)
		o_varint(o, st, F_TE_CATEGORY_IIDS, cat_iid);
	if (name_iid)
		o_varint(o, st, F_TE_NAME_IID, name_iid);
	else if (name)
		o_bytes(o, st, F_TE_NAME, name, nlen);
	if (ev->type == SPN_TE_COUNTER) {
		uint64_t bits;

		if (ev->dbl) {
			memcpy(&bits, &ev->vd, sizeof(bits));
			o_fixed64(o, st, F_TE_DCOUNTER, bits);
		} else {
			o_varint(o, st, F_TE_COUNTER, (uint64_t)ev->vi);
		}
	}
	for (uint32_t i = 0; i < ev->nargs; i++) {
		const struct spn_te_arg *a = &ev->args[i];

		if (a->kind == SPN_TE_ARG_FLOW || a->kind == SPN_TE_ARG_FLOW_END) {
			uint64_t id = a->scoped ? te_mix64(a->v.u ^ t->process_uuid) : a->v.u;

			o_fixed64(o, st, a->kind == SPN_TE_ARG_FLOW ? F_TE_FLOW : F_TE_FLOW_END, id);
			continue;
		}
		if (!asz[i])
			continue;
		o_len(o, st, F_TE_ANNOTATIONS, asz[i]);
		if (aiid[i])
			o_varint(o, st, F_DA_NAME_IID, aiid[i]);
		else
			o_bytes(o, st, F_DA_NAME, a->name ? a->name : "",
				a->name ? strlen(a->name) : 0);
		o_value(o, st, a, slen[i]);
	}
}

/* Writes ev on sequence s (which has a writer). */
/* The sizes and the packet of ev on s, once its timestamp, track and the
 * iids of its category and name are known (nw[nn]: entries new on s so
 * far; the annotation names may add more). */
TE_INLINE void te_pack(const struct te_thread *t, struct te_seq *s, const struct te_ev *ev,
		       uint64_t ts, bool clock6, struct te_new *nw, uint32_t nn,
		       uint32_t cat_iid, uint32_t name_iid, const char *name, uint32_t nlen,
		       uint64_t uuid)
{
	struct spn_tw *tw = s->tw;
	uint32_t aiid[SPN_TE_MAX_ARGS], asz[SPN_TE_MAX_ARGS], slen[SPN_TE_MAX_ARGS];
	uint32_t nargs = ev->nargs;
	bool args_off = s->flags & TE_F_NO_ARGS;
	uint64_t body, interned = 0;

	/* Sizes. */
	body = te_sz_varint(F_TE_TYPE, ev->type);
	if (ev->track)
		body += te_sz_varint(F_TE_TRACK_UUID, uuid);
	if (cat_iid)
		body += te_sz_varint(F_TE_CATEGORY_IIDS, cat_iid);
	if (name_iid)
		body += te_sz_varint(F_TE_NAME_IID, name_iid);
	else if (name)
		body += te_sz_len(F_TE_NAME, nlen);
	if (ev->type == SPN_TE_COUNTER)
		body += ev->dbl ? 2 + 8 : te_sz_varint(F_TE_COUNTER, (uint64_t)ev->vi);
	for (uint32_t i = 0; i < nargs; i++) {
		const struct spn_te_arg *a = &ev->args[i];
		uint64_t v;

		asz[i] = 0;
		if (a->kind == SPN_TE_ARG_FLOW || a->kind == SPN_TE_ARG_FLOW_END) {
			body += 2 + 8;
			continue;
		}
		if (args_off || !(v = te_sz_value(a, &slen[i])))
			continue;
		if (a->dyn_name || !a->name) {
			aiid[i] = 0;
			v += te_sz_len(F_DA_NAME, a->name ? strlen(a->name) : 0);
		} else {
			aiid[i] = te_intern(s, TE_K_ANN, a->name, a->name, nw, &nn);
			v += te_sz_varint(F_DA_NAME_IID, aiid[i]);
		}
		asz[i] = (uint32_t)v;
		body += te_sz_len(F_TE_ANNOTATIONS, v);
	}
	for (uint32_t i = 0; i < nn; i++)
		interned += te_sz_len(nw[i].kind, te_sz_varint(F_IE_IID, nw[i].iid) +
						      te_sz_len(F_IE_NAME, nw[i].len));

	/* The packet: a small one that fits in the chunk is encoded in place
	 * through a local cursor (it stays in a register; stores through the
	 * writer's cursor make the compiler reload it after every byte); a
	 * small one that crosses the chunk is encoded on the stack and
	 * copied in one append, the rest field by field on the writer. */
	{
		uint64_t total = te_sz_varint(F_PKT_TIMESTAMP, ts) + (clock6 ? 3 : 0) + 2 +
				 (nn ? te_sz_len(F_PKT_INTERNED, interned) : 0) +
				 te_sz_len(F_PKT_TRACK_EVENT, body);
		uint8_t *p = total <= TE_STACK_PACKET ? spn_tw_small_begin(tw, total) : NULL;

		if (te_likely(p != NULL)) {
			/* The common case: the packet fits in the chunk. */
			struct te_out o = { .p = p };

			te_encode(&o, false, t, ev, ts, clock6, nw, nn, interned, body, uuid,
				  cat_iid, name_iid, name, nlen, aiid, asz, slen);
			spn_tw_small_end(tw, p, o.p);
			te_check_loss(s);
			return;
		}
		if (te_unlikely(spn_tw_begin_packet(tw) != 0)) {
			spn_tw_end_packet(tw);
			te_check_loss(s);
			return;
		}
		if (total <= TE_STACK_PACKET) {
			uint8_t buf[TE_STACK_PACKET];
			struct te_out o = { .p = buf };

			te_encode(&o, false, t, ev, ts, clock6, nw, nn, interned, body, uuid,
				  cat_iid, name_iid, name, nlen, aiid, asz, slen);
			spn_tw_append(tw, buf, (size_t)(o.p - buf));
		} else {
			struct te_out o = { .tw = tw };

			te_encode(&o, true, t, ev, ts, clock6, nw, nn, interned, body, uuid,
				  cat_iid, name_iid, name, nlen, aiid, asz, slen);
		}
		spn_tw_end_packet(tw);
		te_check_loss(s);
	}
}

/* te_pack when the event interns something new: out of line. */
static void __attribute__((noinline))
te_pack_interning(const struct te_thread *t, struct te_seq *s, struct te_ev ev,
		  uint64_t ts, bool clock6, struct te_new *nw, uint32_t nn, uint32_t cat_iid,
		  uint32_t name_iid, const char *name, uint32_t nlen, uint64_t uuid)
{
	/* ev by value: its address does not escape the callers, so they
	 * keep it in registers and fold its constant fields. */
	te_pack(t, s, &ev, ts, clock6, nw, nn, cat_iid, name_iid, name, nlen, uuid);
}

TE_INLINE void te_write(struct spn_te *te, struct te_thread *t, struct te_seq *s,
			struct spn_te_category *cat, const struct te_ev *ev)
{
	struct te_new nw[2 + SPN_TE_MAX_ARGS];
	uint32_t nn = 0, cat_iid = 0, name_iid = 0, nlen = 0;
	const char *name = ev->name;
	bool clock6 = false;
	uint64_t ts, uuid = 0;

	if (ev->ts) {
		ts = ev->ts;
		clock6 = te->clk.kind == SPN_TE_CLOCK_TSC;
	} else {
		ts = te_now(te, s);
	}
	if (ev->type != SPN_TE_SLICE_END && ev->type != SPN_TE_COUNTER)
		cat_iid = te_intern(s, TE_K_CATEGORY, cat, cat->name, nw, &nn);
	/* name stays set only when it is written inline */
	if (name && ev->type != SPN_TE_SLICE_END && ev->type != SPN_TE_COUNTER) {
		if (!ev->dyn) {
			name_iid = te_intern(s, TE_K_NAME, name, name, nw, &nn);
			name = NULL;
		} else {
			if (s->flags & TE_F_NO_DYN_NAMES)
				name = TE_FILTERED_NAME;
			nlen = (uint32_t)strlen(name);
		}
	} else {
		name = NULL;
	}
	if (ev->track) {
		struct te_new seen[1];
		uint32_t nseen = 0;

		uuid = (ev->track->scope == SPN_TE_SCOPE_THREAD ? t->uuid : t->process_uuid) ^
		       te_track_hash(ev->track);
		/* A miss lists the track in seen[]: describe it first. */
		te_intern(s, TE_K_TRACK, ev->track, "", seen, &nseen);
		if (te_unlikely(nseen))
			te_track_desc(t, s, ev->track, uuid);
	}

	/* Everything interned already (the usual case): the rest is
	 * specialised for no new entries. */
	if (te_likely(nn == 0))
		te_pack(t, s, ev, ts, clock6, nw, 0, cat_iid, name_iid, name, nlen, uuid);
	else
		te_pack_interning(t, s, *ev, ts, clock6, nw, nn, cat_iid, name_iid, name, nlen,
				  uuid);
}

/* Writes ev on every instance where cat is enabled. Returns how many. */
TE_INLINE int te_emit(struct spn_te_category *cat, const struct te_ev *ev)
{
	/* Acquire: pairs with spn_te_start's release RMW; the instance
	 * generation and flags stored before it are visible. */
	uint32_t bits = atomic_load_explicit(&cat->enabled, memory_order_acquire);
	struct spn_te *te = cat->te;
	struct te_thread *t;
	int n = 0;

	if (te_unlikely(!bits || !te))
		return 0;
	t = te_thread_get(te);
	if (te_unlikely(!t))
		return 0;
	do {
		uint32_t i = (uint32_t)__builtin_ctz(bits);
		struct te_seq *s = t->seq[i];

		bits &= bits - 1;
		/* Relaxed: ordered by the acquire load of the category. */
		if (te_unlikely(!s || s->gen != atomic_load_explicit(&te->inst[i].gen,
								    memory_order_relaxed)))
			s = te_refresh(te, t, i);
		if (te_likely(s && s->tw)) {
			te_write(te, t, s, cat, ev);
			n++;
		}
	} while (bits);
	return n;
}

/* ---- Entry points ------------------------------------------------------------ */

void _spn_te_begin(struct spn_te_category *cat, const char *name,
		   const struct spn_te_arg *args, uint32_t nargs)
{
	struct te_ev ev = { .type = SPN_TE_SLICE_BEGIN, .name = name, .args = args,
			    .nargs = nargs < SPN_TE_MAX_ARGS ? nargs : SPN_TE_MAX_ARGS };

	te_emit(cat, &ev);
}

void _spn_te_end(struct spn_te_category *cat, const struct spn_te_arg *args, uint32_t nargs)
{
	struct te_ev ev = { .type = SPN_TE_SLICE_END, .args = args,
			    .nargs = nargs < SPN_TE_MAX_ARGS ? nargs : SPN_TE_MAX_ARGS };

	te_emit(cat, &ev);
}

/* The common slice events: no annotations or flows. The event is a
 * constant here, so te_write folds down to the few fields it has. */
void _spn_te_begin0(struct spn_te_category *cat, const char *name)
{
	struct te_ev ev = { .type = SPN_TE_SLICE_BEGIN, .name = name };

	te_emit(cat, &ev);
}

void _spn_te_end0(struct spn_te_category *cat)
{
	struct te_ev ev = { .type = SPN_TE_SLICE_END };

	te_emit(cat, &ev);
}

/* The general form: not inlined into each entry point. */
static int __attribute__((noinline)) te_emit_any(struct spn_te_category *cat,
						 const struct te_ev *ev)
{
	return te_emit(cat, ev);
}

void _spn_te_instant(struct spn_te_category *cat, const char *name,
		     const struct spn_te_arg *args, uint32_t nargs)
{
	struct te_ev ev = { .type = SPN_TE_INSTANT, .name = name, .args = args,
			    .nargs = nargs < SPN_TE_MAX_ARGS ? nargs : SPN_TE_MAX_ARGS };

	te_emit(cat, &ev);
}

void _spn_te_slice(struct spn_te_category *cat, uint32_t type, bool dyn_name,
		   struct spn_te_track *track, const char *name,
		   const struct spn_te_arg *args, uint32_t nargs)
{
	struct te_ev ev = { .type = type, .dyn = dyn_name, .name = name, .track = track,
			    .args = args,
			    .nargs = nargs < SPN_TE_MAX_ARGS ? nargs : SPN_TE_MAX_ARGS };

	if (type < SPN_TE_SLICE_BEGIN || type > SPN_TE_INSTANT || (track && track->counter) ||
	    (dyn_name && !name))
		return;
	te_emit_any(cat, &ev);
}

void _spn_te_counter_i(struct spn_te_category *cat, struct spn_te_track *track, int64_t v)
{
	struct te_ev ev = { .type = SPN_TE_COUNTER, .track = track, .vi = v };

	if (track && track->counter)
		te_emit(cat, &ev);
}

void _spn_te_counter_d(struct spn_te_category *cat, struct spn_te_track *track, double v)
{
	struct te_ev ev = { .type = SPN_TE_COUNTER, .track = track, .dbl = true, .vd = v };

	if (track && track->counter)
		te_emit(cat, &ev);
}

int spn_te_emit(struct spn_te_category *cat, const struct spn_te_event *e)
{
	struct te_ev ev;

	if (!cat || !e || e->type < SPN_TE_SLICE_BEGIN || e->type > SPN_TE_COUNTER ||
	    e->nargs > SPN_TE_MAX_ARGS || (e->nargs && !e->args) ||
	    (e->type == SPN_TE_COUNTER && (!e->track || !e->track->counter)) ||
	    (e->type != SPN_TE_COUNTER && e->track && e->track->counter) ||
	    (e->dyn_name && !e->name))
		return -EINVAL;
	ev = (struct te_ev){ .type = e->type, .dyn = e->dyn_name, .dbl = e->is_double,
			     .name = e->name, .track = e->track, .ts = e->ts,
			     .args = e->args, .nargs = e->nargs, .vi = e->value_i,
			     .vd = e->value_d };
	return te_emit_any(cat, &ev);
}
