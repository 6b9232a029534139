// SPDX-License-Identifier: Apache-2.0
// The service-written packets of a session (see svc_packets.h): state kept
// between reads and the batch prologue/epilogue encoders (the TraceStats
// builder is in svc_packets_stats.c).
//
// Encoding: each packet is a Perfetto__Protos__TracePacket with its `data`
// oneof set, packed by protobuf-c (which writes fields in field-number
// order, so the sync marker comes out as trace-config.md §4.5's exact
// bytes). The one exception is trace_config: the consumer's bytes are
// appended verbatim as field 33 after the packed header, so unknown and
// newer config fields reach the trace unchanged.
//
// Failure atomicity: the prologue and epilogue first append everything,
// then forget what they emitted. On an error they truncate the output back
// and leave the state as it was, so the next call writes the same packets.
#include "core/svc_packets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/mem_hooks.h"
#include "spindle/pb.h"
#include "clock_snapshot.pb-c.h"
#include "trace_packet.pb-c.h"

const uint8_t svc_pkts_sync_marker[16] = {
	0x82, 0x47, 0x7a, 0x76, 0xb2, 0x8d, 0x42, 0xba,
	0x81, 0xdc, 0x33, 0x32, 0x6d, 0x57, 0xa0, 0x79,
};

/* The clocks of a service snapshot, in the order the reference writes them
 * on Linux (trace-config.md §4.3), with their BuiltinClock ids. */
static const struct {
	clockid_t clk;		/* POSIX clock */
	uint32_t id;		/* BuiltinClock */
} svc_pkts_clocks[SVC_PKTS_MAX_CLOCKS] = {
	{ CLOCK_BOOTTIME, 6 },
	{ CLOCK_REALTIME_COARSE, 2 },
	{ CLOCK_MONOTONIC_COARSE, 4 },
	{ CLOCK_REALTIME, 1 },
	{ CLOCK_MONOTONIC, 3 },
	{ CLOCK_MONOTONIC_RAW, 5 },
};

/* History length of each event kind (0: not kept in a ring). */
static const uint16_t svc_pkts_ev_cap[SVC_PKTS_EVENT_KINDS] = {
	[SVC_EV_ALL_DATA_SOURCES_STARTED] = 1,
	[SVC_EV_TRACING_STARTED] = 1,
	[SVC_EV_ALL_DATA_SOURCES_FLUSHED] = SVC_PKTS_FLUSH_HISTORY,
	[SVC_EV_TRACING_DISABLED] = 1,
	[SVC_EV_FLUSH_STARTED] = SVC_PKTS_FLUSH_HISTORY,
	[SVC_EV_CLONE_STARTED] = 1,
	[SVC_EV_BUFFER_CLONED] = SVC_PKTS_MAX_BUFFER_CLONED,
};

static int svc_pkts_default_clock(void *ctx, clockid_t id, uint64_t *ns)
{
	struct timespec ts;

	(void)ctx;
	if (clock_gettime(id, &ts) != 0)
		return -errno;
	*ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return 0;
}

void svc_pkts_builtin_from_config(const Perfetto__Protos__TraceConfig *cfg,
				  struct svc_pkts_builtin *b)
{
	const Perfetto__Protos__TraceConfig__BuiltinDataSource *s =
		cfg ? cfg->builtin_data_sources : NULL;

	memset(b, 0, sizeof(*b));
	if (s == NULL)
		return;
	b->disable_clock_snapshotting = s->has_disable_clock_snapshotting &&
					s->disable_clock_snapshotting;
	b->disable_trace_config = s->has_disable_trace_config &&
				  s->disable_trace_config;
	b->disable_system_info = s->has_disable_system_info &&
				 s->disable_system_info;
	b->disable_service_events = s->has_disable_service_events &&
				    s->disable_service_events;
	b->disable_chunk_usage_histograms =
		s->has_disable_chunk_usage_histograms &&
		s->disable_chunk_usage_histograms;
	if (s->has_primary_trace_clock)
		b->primary_trace_clock = (uint32_t)s->primary_trace_clock;
	if (s->has_snapshot_interval_ms)
		b->snapshot_interval_ms = s->snapshot_interval_ms;
}

/* Fills msb/lsb with a random RFC 4122 version-4 UUID. */
static void svc_pkts_random_uuid(struct svc_pkts *st)
{
	uint64_t v[2];

	if (getrandom(v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
		/* No entropy yet (early boot): mix the clock, pid and address
		 * with splitmix64 steps; uniqueness, not secrecy, is needed. */
		uint64_t x = svc_pkts_now(st) ^ ((uint64_t)getpid() << 32) ^
			     (uint64_t)(uintptr_t)st;

		for (int i = 0; i < 2; i++) {
			uint64_t z = (x += 0x9e3779b97f4a7c15ull);

			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
			v[i] = z ^ (z >> 31);
		}
	}
	v[0] = (v[0] & ~0xF000ull) | 0x4000ull;		/* version 4 */
	v[1] = (v[1] & ~(3ull << 62)) | (2ull << 62);	/* RFC 4122 variant */
	st->uuid_msb = (int64_t)v[0];
	st->uuid_lsb = (int64_t)v[1];
}

int svc_pkts_init(struct svc_pkts *st, const struct svc_pkts_config *cfg)
{
	size_t off = 0;

	if (st == NULL || cfg == NULL ||
	    (cfg->trace_config == NULL && cfg->trace_config_len > 0))
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	st->uid = cfg->service_uid;
	st->builtin = cfg->builtin;
	st->clock = cfg->clock ? cfg->clock : svc_pkts_default_clock;
	st->clock_ctx = cfg->clock ? cfg->clock_ctx : NULL;
	if (cfg->trace_config_len > 0) {
		st->trace_config = svc_mem_malloc(cfg->trace_config_len);
		if (st->trace_config == NULL)
			return -ENOMEM;
		memcpy(st->trace_config, cfg->trace_config,
		       cfg->trace_config_len);
		st->trace_config_len = cfg->trace_config_len;
	}
	for (int k = 0; k < SVC_PKTS_EVENT_KINDS; k++) {
		st->ev[k].cap = svc_pkts_ev_cap[k];
		st->ev[k].e = st->ev_pool + off;
		off += svc_pkts_ev_cap[k];
	}
	if (cfg->uuid_msb != 0 || cfg->uuid_lsb != 0) {
		st->uuid_msb = cfg->uuid_msb;
		st->uuid_lsb = cfg->uuid_lsb;
	} else {
		svc_pkts_random_uuid(st);
	}
	if (!st->builtin.disable_clock_snapshotting)
		st->initial_taken =
			svc_pkts_read_clocks(st, &st->initial) > 0;
	return 0;
}

static void svc_pkts_trigger_free(struct svc_pkts_trigger *t)
{
	svc_mem_free(t->name);
	svc_mem_free(t->producer_name);
	t->name = NULL;
	t->producer_name = NULL;
}

static void svc_pkts_slow_clear(struct svc_pkts_slow *s)
{
	for (uint32_t i = 0; i < s->n; i++) {
		svc_mem_free(s->ds[i].producer_name);
		svc_mem_free(s->ds[i].data_source_name);
	}
	memset(s, 0, sizeof(*s));
}

void svc_pkts_destroy(struct svc_pkts *st)
{
	if (st == NULL)
		return;
	svc_mem_free(st->trace_config);
	st->trace_config = NULL;
	st->trace_config_len = 0;
	for (uint32_t i = 0; i < st->n_triggers; i++)
		svc_pkts_trigger_free(&st->triggers[i]);
	svc_mem_free(st->triggers);
	st->triggers = NULL;
	st->n_triggers = st->cap_triggers = 0;
	svc_pkts_trigger_free(&st->clone_trigger);
	st->has_clone_trigger = false;
	svc_pkts_slow_clear(&st->slow_start);
	svc_pkts_slow_clear(&st->slow_flush);
}

uint32_t svc_pkts_snapshot_interval_ms(const struct svc_pkts *st)
{
	return st->builtin.snapshot_interval_ms ?
		       st->builtin.snapshot_interval_ms :
		       SVC_PKTS_DEFAULT_SNAPSHOT_INTERVAL_MS;
}

/* Reads clock clk through the state's clock (the real one on a state
 * that was zeroed but never initialised). */
static int svc_pkts_read(const struct svc_pkts *st, clockid_t clk,
			 uint64_t *ns)
{
	if (st->clock == NULL)
		return svc_pkts_default_clock(NULL, clk, ns);
	return st->clock(st->clock_ctx, clk, ns);
}

uint64_t svc_pkts_now(const struct svc_pkts *st)
{
	uint64_t ns;

	if (svc_pkts_read(st, CLOCK_BOOTTIME, &ns) != 0)
		return 0;
	return ns;
}

int svc_pkts_read_clocks(const struct svc_pkts *st,
			 struct svc_pkts_snapshot *snap)
{
	int first_err = 0;

	snap->n = 0;
	for (unsigned i = 0; i < SVC_PKTS_MAX_CLOCKS; i++) {
		uint64_t ns;
		int rc = svc_pkts_read(st, svc_pkts_clocks[i].clk, &ns);

		if (rc != 0) {
			if (first_err == 0)
				first_err = rc < 0 ? rc : -EIO;
			continue;
		}
		snap->c[snap->n].id = svc_pkts_clocks[i].id;
		snap->c[snap->n].ts = ns;
		snap->n++;
	}
	return snap->n > 0 ? (int)snap->n : first_err;
}

/* Reading of clock `id` in s, or false when s has none. */
static bool svc_pkts_find(const struct svc_pkts_snapshot *s, uint32_t id,
			  uint64_t *ts)
{
	for (uint32_t i = 0; i < s->n; i++) {
		if (s->c[i].id == id) {
			*ts = s->c[i].ts;
			return true;
		}
	}
	return false;
}

/*
 * Whether `cur` differs enough from `ref` to be worth storing: some clock
 * moved by >= SVC_PKTS_DRIFT_NS more or less than BOOTTIME did. A change
 * in the set of readable clocks (or no BOOTTIME to compare with) counts as
 * significant: the reader could not relate the clocks otherwise.
 */
static bool svc_pkts_drifted(const struct svc_pkts_snapshot *ref,
			     const struct svc_pkts_snapshot *cur)
{
	uint64_t b_ref, b_cur;

	if (ref->n != cur->n ||
	    !svc_pkts_find(ref, SVC_PKTS_CLOCK_BOOTTIME, &b_ref) ||
	    !svc_pkts_find(cur, SVC_PKTS_CLOCK_BOOTTIME, &b_cur))
		return true;
	for (uint32_t i = 0; i < cur->n; i++) {
		uint64_t r;
		int64_t d;

		if (cur->c[i].id == SVC_PKTS_CLOCK_BOOTTIME)
			continue;
		if (!svc_pkts_find(ref, cur->c[i].id, &r))
			return true;
		/* Unsigned differences wrap consistently; the signed view of
		 * their difference is the drift. */
		d = (int64_t)((cur->c[i].ts - r) - (b_cur - b_ref));
		if (d >= SVC_PKTS_DRIFT_NS || d <= -SVC_PKTS_DRIFT_NS)
			return true;
	}
	return false;
}

int svc_pkts_snapshot(struct svc_pkts *st)
{
	struct svc_pkts_snapshot s;
	int rc;

	if (st->builtin.disable_clock_snapshotting)
		return 0;
	rc = svc_pkts_read_clocks(st, &s);
	if (rc < 0)
		return rc;
	if (st->have_ref && !svc_pkts_drifted(&st->ref, &s))
		return 0;
	if (st->ring_n == SVC_PKTS_CLOCK_RING) {
		st->ring_head = (st->ring_head + 1) % SVC_PKTS_CLOCK_RING;
		st->ring_n--;
	}
	st->ring[(st->ring_head + st->ring_n) % SVC_PKTS_CLOCK_RING] = s;
	st->ring_n++;
	st->ref = s;
	st->have_ref = true;
	return 1;
}

int svc_pkts_periodic(struct svc_pkts *st)
{
	st->sync_marker_due = true;
	st->stats_due = true;
	return svc_pkts_snapshot(st);
}

void svc_pkts_mark_stats_due(struct svc_pkts *st)
{
	st->stats_due = true;
}

bool svc_pkts_stats_due(const struct svc_pkts *st)
{
	return st->stats_due;
}

int svc_pkts_record_event(struct svc_pkts *st, enum svc_pkts_event ev,
			  uint32_t value)
{
	struct svc_pkts_evring *r;
	struct svc_pkts_ev *e;

	if ((unsigned)ev >= SVC_PKTS_EVENT_KINDS || st->ev[ev].cap == 0)
		return -EINVAL;
	r = &st->ev[ev];
	if (r->n == r->cap) {
		r->head = (uint16_t)((r->head + 1) % r->cap);
		r->n--;
	}
	e = &r->e[(r->head + r->n) % r->cap];
	e->ts = svc_pkts_now(st);
	e->order = st->ev_order++;
	e->value = value;
	r->n++;
	if (ev == SVC_EV_ALL_DATA_SOURCES_STARTED ||
	    ev == SVC_EV_ALL_DATA_SOURCES_FLUSHED ||
	    ev == SVC_EV_TRACING_DISABLED)
		(void)svc_pkts_snapshot(st); /* a clock failure only loses the snapshot */
	return 0;
}

/* svc_mem_malloc'd copy of s; NULL for a NULL s. *oom is set on failure. */
static char *svc_pkts_strdup(const char *s, bool *oom)
{
	char *c;
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	c = svc_mem_malloc(n);
	if (c == NULL) {
		*oom = true;
		return NULL;
	}
	memcpy(c, s, n);
	return c;
}

int svc_pkts_record_slow(struct svc_pkts *st, enum svc_pkts_event ev,
			 const struct svc_pkts_ds_name *ds, size_t n)
{
	struct svc_pkts_slow s, *dst;
	bool oom = false;

	if (ev == SVC_EV_SLOW_STARTING_DATA_SOURCES)
		dst = &st->slow_start;
	else if (ev == SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES)
		dst = &st->slow_flush;
	else
		return -EINVAL;
	if (ds == NULL && n > 0)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	if (n > SVC_PKTS_MAX_SLOW_DS)
		n = SVC_PKTS_MAX_SLOW_DS;
	for (size_t i = 0; i < n && !oom; i++) {
		s.ds[i].producer_name =
			svc_pkts_strdup(ds[i].producer_name, &oom);
		s.ds[i].data_source_name =
			svc_pkts_strdup(ds[i].data_source_name, &oom);
		s.n = (uint32_t)i + 1;
	}
	if (oom) {
		svc_pkts_slow_clear(&s);
		return -ENOMEM;
	}
	s.pending = true;
	s.ts = svc_pkts_now(st);
	s.order = st->ev_order++;
	svc_pkts_slow_clear(dst);
	*dst = s;
	return 0;
}

/* Fills *t (owned copies of the strings). Returns 0 or -ENOMEM. */
static int svc_pkts_trigger_fill(struct svc_pkts_trigger *t, uint64_t ts,
				 const char *name, const char *producer_name,
				 int32_t uid, uint64_t stop_delay_ms)
{
	bool oom = false;

	t->ts = ts;
	t->name = svc_pkts_strdup(name, &oom);
	t->producer_name = svc_pkts_strdup(producer_name, &oom);
	t->producer_uid = uid;
	t->stop_delay_ms = stop_delay_ms;
	if (oom) {
		svc_pkts_trigger_free(t);
		return -ENOMEM;
	}
	return 0;
}

int svc_pkts_record_trigger(struct svc_pkts *st, const char *name,
			    const char *producer_name, int32_t producer_uid,
			    uint64_t stop_delay_ms)
{
	int rc;

	if (name == NULL)
		return -EINVAL;
	if (st->n_triggers >= SVC_PKTS_MAX_TRIGGERS) {
		st->triggers_dropped++;
		return -ENOSPC;
	}
	if (st->n_triggers == st->cap_triggers) {
		uint32_t cap = st->cap_triggers ? st->cap_triggers * 2 : 4;
		struct svc_pkts_trigger *t;

		if (cap > SVC_PKTS_MAX_TRIGGERS)
			cap = SVC_PKTS_MAX_TRIGGERS;
		t = svc_mem_realloc(st->triggers, cap * sizeof(*t));
		if (t == NULL) {
			st->triggers_dropped++;
			return -ENOMEM;
		}
		st->triggers = t;
		st->cap_triggers = cap;
	}
	rc = svc_pkts_trigger_fill(&st->triggers[st->n_triggers],
				   svc_pkts_now(st), name, producer_name,
				   producer_uid, stop_delay_ms);
	if (rc < 0) {
		st->triggers_dropped++;
		return rc;
	}
	st->n_triggers++;
	(void)svc_pkts_snapshot(st); /* a clock failure only loses the snapshot */
	return 0;
}

/* Deep copy of a slow-start / slow-flush event; on failure *dst is empty. */
static int svc_pkts_slow_copy(struct svc_pkts_slow *dst,
			      const struct svc_pkts_slow *src)
{
	bool oom = false;

	*dst = *src;
	for (uint32_t i = 0; i < src->n; i++) {
		dst->ds[i].producer_name =
			svc_pkts_strdup(src->ds[i].producer_name, &oom);
		dst->ds[i].data_source_name =
			svc_pkts_strdup(src->ds[i].data_source_name, &oom);
	}
	if (oom) {
		svc_pkts_slow_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

int svc_pkts_clone(struct svc_pkts *dst, struct svc_pkts *src)
{
	int64_t lsb = src->uuid_lsb;

	*dst = *src;
	dst->trace_config = NULL;
	dst->triggers = NULL;
	dst->n_triggers = dst->cap_triggers = 0;
	memset(&dst->clone_trigger, 0, sizeof(dst->clone_trigger));
	dst->has_clone_trigger = false;
	memset(&dst->slow_start, 0, sizeof(dst->slow_start));
	memset(&dst->slow_flush, 0, sizeof(dst->slow_flush));
	if (src->trace_config_len > 0) {
		dst->trace_config = svc_mem_malloc(src->trace_config_len);
		if (dst->trace_config == NULL)
			goto nomem;
		memcpy(dst->trace_config, src->trace_config,
		       src->trace_config_len);
	}
	if (svc_pkts_slow_copy(&dst->slow_start, &src->slow_start) < 0 ||
	    svc_pkts_slow_copy(&dst->slow_flush, &src->slow_flush) < 0)
		goto nomem;
	/* The histories live in the state's own pool. */
	for (int k = 0; k < SVC_PKTS_EVENT_KINDS; k++)
		dst->ev[k].e = dst->ev_pool + (src->ev[k].e - src->ev_pool);
	/* Triggers move to the clone (consumer-port.md §12 step 6). */
	dst->triggers = src->triggers;
	dst->n_triggers = src->n_triggers;
	dst->cap_triggers = src->cap_triggers;
	src->triggers = NULL;
	src->n_triggers = src->cap_triggers = 0;
	/* A new trace: new UUID (same LSB), every first-batch packet again,
	 * and trace_stats at the end of the first draining read. */
	svc_pkts_random_uuid(dst);
	dst->uuid_lsb = lsb;
	dst->first_batch_done = false;
	dst->stats_due = true;
	return 0;
nomem:
	svc_pkts_destroy(dst);
	return -ENOMEM;
}

int svc_pkts_set_clone_trigger(struct svc_pkts *st, uint64_t ts_ns,
			       const char *name, const char *producer_name,
			       int32_t producer_uid, uint64_t stop_delay_ms)
{
	struct svc_pkts_trigger t = { 0 };
	int rc;

	if (name == NULL)
		return -EINVAL;
	rc = svc_pkts_trigger_fill(&t, ts_ns, name, producer_name,
				   producer_uid, stop_delay_ms);
	if (rc < 0)
		return rc;
	svc_pkts_trigger_free(&st->clone_trigger);
	st->clone_trigger = t;
	st->has_clone_trigger = true;
	return 0;
}

void svc_pkts_out_free(struct svc_pkts_out *out)
{
	svc_mem_free(out->data);
	memset(out, 0, sizeof(*out));
}

int svc_pkts_out_reserve(struct svc_pkts_out *out, size_t more)
{
	size_t cap;
	uint8_t *d;

	if (more <= out->cap - out->len)
		return 0;
	if (more > SIZE_MAX / 2 - out->len)
		return -ENOMEM;
	cap = out->cap ? out->cap : 4096;
	while (cap - out->len < more)
		cap *= 2;
	d = svc_mem_realloc(out->data, cap);
	if (d == NULL)
		return -ENOMEM;
	out->data = d;
	out->cap = cap;
	return 0;
}

/* A TracePacket with the service header: trusted_uid, sequence 1 and,
 * with clock_id, timestamp_clock_id BOOTTIME (trace-config.md §4.4). */
static void svc_pkts_header(const struct svc_pkts *st,
			    Perfetto__Protos__TracePacket *p, bool clock_id)
{
	perfetto__protos__trace_packet__init(p);
	p->optional_trusted_uid_case =
		PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_UID_TRUSTED_UID;
	p->trusted_uid = (int32_t)st->uid;
	p->optional_trusted_packet_sequence_id_case =
		PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID;
	p->trusted_packet_sequence_id = SVC_PKTS_SEQUENCE_ID;
	if (clock_id) {
		p->has_timestamp_clock_id = 1;
		p->timestamp_clock_id = SVC_PKTS_CLOCK_BOOTTIME;
	}
}

/*
 * Appends `0x0A len packet` where packet = p packed, followed by field
 * `tail_field` holding tail verbatim when tail_field != 0. Returns 0 or
 * -ENOMEM (out unchanged).
 */
static int svc_pkts_put(struct svc_pkts_out *out,
			const Perfetto__Protos__TracePacket *p,
			uint32_t tail_field, const uint8_t *tail,
			size_t tail_len)
{
	size_t n = protobuf_c_message_get_packed_size(&p->base);
	size_t extra = tail_field ?
			       spn_pb_bytes_field_len(tail_field, tail_len) :
			       0;
	uint8_t *w;

	if (svc_pkts_out_reserve(out, 1 + SPN_PB_MAX_VARINT + n + extra) < 0)
		return -ENOMEM;
	w = out->data + out->len;
	*w++ = 0x0A; /* Trace.packet, length-delimited */
	w = spn_pb_put_varint(w, n + extra);
	w += protobuf_c_message_pack(&p->base, w);
	if (tail_field)
		w = spn_pb_field_bytes(w, tail_field, tail, tail_len);
	out->len = (size_t)(w - out->data);
	return 0;
}

static int svc_pkts_put_snapshot(const struct svc_pkts *st,
				 struct svc_pkts_out *out,
				 const struct svc_pkts_snapshot *s)
{
	Perfetto__Protos__ClockSnapshot__Clock clocks[SVC_PKTS_MAX_CLOCKS];
	Perfetto__Protos__ClockSnapshot__Clock *ptrs[SVC_PKTS_MAX_CLOCKS];
	Perfetto__Protos__ClockSnapshot cs;
	Perfetto__Protos__TracePacket p;

	perfetto__protos__clock_snapshot__init(&cs);
	for (uint32_t i = 0; i < s->n; i++) {
		perfetto__protos__clock_snapshot__clock__init(&clocks[i]);
		clocks[i].has_clock_id = 1;
		clocks[i].clock_id = s->c[i].id;
		clocks[i].has_timestamp = 1;
		clocks[i].timestamp = s->c[i].ts;
		ptrs[i] = &clocks[i];
	}
	cs.n_clocks = s->n;
	cs.clocks = ptrs;
	cs.has_primary_trace_clock = 1;
	cs.primary_trace_clock =
		(Perfetto__Protos__BuiltinClock)(st->builtin.primary_trace_clock ?
			st->builtin.primary_trace_clock :
			SVC_PKTS_CLOCK_BOOTTIME);
	svc_pkts_header(st, &p, true);
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT;
	p.clock_snapshot = &cs;
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

/* The sync marker packet: exactly trace-config.md §4.5 (no clock id). */
static int svc_pkts_put_sync_marker(const struct svc_pkts *st,
				    struct svc_pkts_out *out)
{
	Perfetto__Protos__TracePacket p;

	svc_pkts_header(st, &p, false);
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_SYNCHRONIZATION_MARKER;
	p.synchronization_marker.data = (uint8_t *)(uintptr_t)svc_pkts_sync_marker;
	p.synchronization_marker.len = sizeof(svc_pkts_sync_marker);
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

/* trace_config: header, then the consumer's bytes as field 33. */
static int svc_pkts_put_trace_config(const struct svc_pkts *st,
				     struct svc_pkts_out *out)
{
	Perfetto__Protos__TracePacket p;

	static const uint8_t none[1];

	svc_pkts_header(st, &p, true);
	return svc_pkts_put(out, &p,
			    PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG,
			    st->trace_config ? st->trace_config : none,
			    st->trace_config_len);
}

/* A trigger (field 46) or clone_snapshot_trigger (113) packet. */
static int svc_pkts_put_trigger(const struct svc_pkts *st,
				struct svc_pkts_out *out,
				const struct svc_pkts_trigger *t, bool clone)
{
	Perfetto__Protos__TracePacket p;
	Perfetto__Protos__Trigger tr;

	perfetto__protos__trigger__init(&tr);
	tr.trigger_name = t->name;
	tr.producer_name = t->producer_name;
	tr.has_trusted_producer_uid = 1;
	tr.trusted_producer_uid = t->producer_uid;
	tr.has_stop_delay_ms = 1;
	tr.stop_delay_ms = t->stop_delay_ms;
	svc_pkts_header(st, &p, true);
	p.has_timestamp = 1;
	p.timestamp = t->ts;
	if (clone) {
		p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_CLONE_SNAPSHOT_TRIGGER;
		p.clone_snapshot_trigger = &tr;
	} else {
		p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_TRIGGER;
		p.trigger = &tr;
	}
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

static int svc_pkts_put_uuid(const struct svc_pkts *st,
			     struct svc_pkts_out *out)
{
	Perfetto__Protos__TracePacket p;
	Perfetto__Protos__TraceUuid u;

	perfetto__protos__trace_uuid__init(&u);
	u.has_msb = 1;
	u.msb = st->uuid_msb;
	u.has_lsb = 1;
	u.lsb = st->uuid_lsb;
	svc_pkts_header(st, &p, true);
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_UUID;
	p.trace_uuid = &u;
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

static int svc_pkts_put_provenance(const struct svc_pkts *st,
				   struct svc_pkts_out *out,
				   const struct svc_pkts_provenance *prov)
{
	Perfetto__Protos__TraceProvenance tp;
	Perfetto__Protos__TraceProvenance__Buffer *bufs = NULL, **bptrs = NULL;
	Perfetto__Protos__TraceProvenance__Sequence *seqs = NULL, **sptrs = NULL;
	Perfetto__Protos__TracePacket p;
	size_t total = 0, k = 0;
	int rc = -ENOMEM;

	for (size_t i = 0; i < prov->n; i++) {
		if (prov->buffers[i].seqs == NULL && prov->buffers[i].n > 0)
			return -EINVAL;
		total += prov->buffers[i].n;
	}
	bufs = svc_mem_calloc(prov->n ? prov->n : 1, sizeof(*bufs));
	bptrs = svc_mem_calloc(prov->n ? prov->n : 1, sizeof(*bptrs));
	seqs = svc_mem_calloc(total ? total : 1, sizeof(*seqs));
	sptrs = svc_mem_calloc(total ? total : 1, sizeof(*sptrs));
	if (!bufs || !bptrs || !seqs || !sptrs)
		goto out;
	for (size_t i = 0; i < prov->n; i++) {
		perfetto__protos__trace_provenance__buffer__init(&bufs[i]);
		bufs[i].n_sequences = prov->buffers[i].n;
		bufs[i].sequences = sptrs + k;
		for (size_t j = 0; j < prov->buffers[i].n; j++, k++) {
			perfetto__protos__trace_provenance__sequence__init(&seqs[k]);
			seqs[k].has_id = 1;
			seqs[k].id = prov->buffers[i].seqs[j].id;
			seqs[k].has_producer_id = 1;
			seqs[k].producer_id = prov->buffers[i].seqs[j].producer_id;
			sptrs[k] = &seqs[k];
		}
		bptrs[i] = &bufs[i];
	}
	perfetto__protos__trace_provenance__init(&tp);
	tp.n_buffers = prov->n;
	tp.buffers = bptrs;
	svc_pkts_header(st, &p, true);
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_PROVENANCE;
	p.trace_provenance = &tp;
	rc = svc_pkts_put(out, &p, 0, NULL, 0);
out:
	svc_mem_free(bufs);
	svc_mem_free(bptrs);
	svc_mem_free(seqs);
	svc_mem_free(sptrs);
	return rc;
}

/* system_info: utsname plus the cheap machine facts (page size, CPUs,
 * timezone offset, RAM). A fact that can't be read is omitted. */
static int svc_pkts_put_system_info(const struct svc_pkts *st,
				    struct svc_pkts_out *out)
{
	Perfetto__Protos__TracePacket p;
	Perfetto__Protos__SystemInfo si;
	Perfetto__Protos__Utsname un;
	struct utsname u;
	struct sysinfo sinfo;
	struct tm tm;
	time_t now = time(NULL);
	long v;

	perfetto__protos__system_info__init(&si);
	perfetto__protos__utsname__init(&un);
	if (uname(&u) == 0) {
		un.sysname = u.sysname;
		un.version = u.version;
		un.release = u.release;
		un.machine = u.machine;
		si.utsname = &un;
	}
	v = sysconf(_SC_PAGESIZE);
	if (v > 0 && v <= (long)UINT32_MAX) {
		si.has_page_size = 1;
		si.page_size = (uint32_t)v;
	}
	v = sysconf(_SC_NPROCESSORS_CONF);
	if (v > 0 && v <= (long)UINT32_MAX) {
		si.has_num_cpus = 1;
		si.num_cpus = (uint32_t)v;
	}
	if (localtime_r(&now, &tm) != NULL) {
		si.has_timezone_off_mins = 1;
		si.timezone_off_mins = (int32_t)(tm.tm_gmtoff / 60);
	}
	if (sysinfo(&sinfo) == 0) {
		si.has_system_ram_bytes = 1;
		si.system_ram_bytes =
			(uint64_t)sinfo.totalram * (uint64_t)sinfo.mem_unit;
	}
	svc_pkts_header(st, &p, true);
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_SYSTEM_INFO;
	p.system_info = &si;
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

/* One pending service event, for sorting. */
struct svc_pkts_pending {
	uint64_t ts;		/* timestamp */
	uint64_t order;		/* record counter (tie breaker) */
	uint32_t kind;		/* enum svc_pkts_event */
	uint32_t value;		/* buffer index of BUFFER_CLONED */
};

static int svc_pkts_pending_cmp(const void *a, const void *b)
{
	const struct svc_pkts_pending *x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return 0;
}

/* A service_event packet of `kind` at ts; `slow` for kinds 7 and 8. */
static int svc_pkts_put_event(const struct svc_pkts *st,
			      struct svc_pkts_out *out, uint32_t kind,
			      uint64_t ts, uint32_t value,
			      const struct svc_pkts_slow *slow)
{
	Perfetto__Protos__TracingServiceEvent__DataSources__DataSource
		dsv[SVC_PKTS_MAX_SLOW_DS];
	Perfetto__Protos__TracingServiceEvent__DataSources__DataSource
		*dsp[SVC_PKTS_MAX_SLOW_DS];
	Perfetto__Protos__TracingServiceEvent__DataSources dss;
	Perfetto__Protos__TracingServiceEvent ev;
	Perfetto__Protos__TracePacket p;

	perfetto__protos__tracing_service_event__init(&ev);
	ev.event_type_case = (Perfetto__Protos__TracingServiceEvent__EventTypeCase)kind;
	switch (kind) {
	case SVC_EV_SLOW_STARTING_DATA_SOURCES:
	case SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES:
		perfetto__protos__tracing_service_event__data_sources__init(&dss);
		for (uint32_t i = 0; i < slow->n; i++) {
			perfetto__protos__tracing_service_event__data_sources__data_source__init(&dsv[i]);
			dsv[i].producer_name = slow->ds[i].producer_name;
			dsv[i].data_source_name = slow->ds[i].data_source_name;
			dsp[i] = &dsv[i];
		}
		dss.n_data_source = slow->n;
		dss.data_source = dsp;
		if (kind == SVC_EV_SLOW_STARTING_DATA_SOURCES)
			ev.slow_starting_data_sources = &dss;
		else
			ev.last_flush_slow_data_sources = &dss;
		break;
	case SVC_EV_BUFFER_CLONED:
		ev.buffer_cloned = value;
		break;
	case SVC_EV_ALL_DATA_SOURCES_STARTED:
		ev.all_data_sources_started = 1;
		break;
	case SVC_EV_TRACING_STARTED:
		ev.tracing_started = 1;
		break;
	case SVC_EV_ALL_DATA_SOURCES_FLUSHED:
		ev.all_data_sources_flushed = 1;
		break;
	case 4: /* read_tracing_buffers_completed */
		ev.read_tracing_buffers_completed = 1;
		break;
	case SVC_EV_TRACING_DISABLED:
		ev.tracing_disabled = 1;
		break;
	case SVC_EV_FLUSH_STARTED:
		ev.flush_started = 1;
		break;
	case SVC_EV_CLONE_STARTED:
		ev.clone_started = 1;
		break;
	default:
		return -EINVAL;
	}
	svc_pkts_header(st, &p, true);
	p.has_timestamp = 1;
	p.timestamp = ts;
	p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT;
	p.service_event = &ev;
	return svc_pkts_put(out, &p, 0, NULL, 0);
}

/* Row 11: every recorded event, sorted by timestamp. Returns packets or
 * -ENOMEM. */
static int svc_pkts_put_events(const struct svc_pkts *st,
			       struct svc_pkts_out *out)
{
	struct svc_pkts_pending v[sizeof(st->ev_pool) / sizeof(st->ev_pool[0]) + 2];
	size_t n = 0;
	int rc;

	for (uint32_t k = 0; k < SVC_PKTS_EVENT_KINDS; k++) {
		const struct svc_pkts_evring *r = &st->ev[k];

		for (uint32_t i = 0; i < r->n; i++) {
			const struct svc_pkts_ev *e = &r->e[(r->head + i) % r->cap];

			v[n++] = (struct svc_pkts_pending){ e->ts, e->order, k,
							    e->value };
		}
	}
	if (st->slow_start.pending)
		v[n++] = (struct svc_pkts_pending){
			st->slow_start.ts, st->slow_start.order,
			SVC_EV_SLOW_STARTING_DATA_SOURCES, 0 };
	if (st->slow_flush.pending)
		v[n++] = (struct svc_pkts_pending){
			st->slow_flush.ts, st->slow_flush.order,
			SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES, 0 };
	qsort(v, n, sizeof(v[0]), svc_pkts_pending_cmp);
	for (size_t i = 0; i < n; i++) {
		const struct svc_pkts_slow *slow =
			v[i].kind == SVC_EV_SLOW_STARTING_DATA_SOURCES ?
				&st->slow_start :
				&st->slow_flush;

		rc = svc_pkts_put_event(st, out, v[i].kind, v[i].ts,
					v[i].value, slow);
		if (rc < 0)
			return rc;
	}
	return (int)n;
}

/* Appends rows 1-11 without changing *st. Returns packets or -errno. */
static int svc_pkts_put_prologue(const struct svc_pkts *st,
				 struct svc_pkts_out *out,
				 const struct svc_pkts_provenance *prov)
{
	const struct svc_pkts_builtin *b = &st->builtin;
	bool first = !st->first_batch_done;
	int n = 0, rc;

#define SVC_PKTS_TRY(call)            \
	do {                          \
		rc = (call);          \
		if (rc < 0)           \
			return rc;    \
		n++;                  \
	} while (0)

	if (!b->disable_clock_snapshotting) {
		if (first && st->initial_taken)
			SVC_PKTS_TRY(svc_pkts_put_snapshot(st, out, &st->initial));
		for (uint32_t i = 0; i < st->ring_n; i++)
			SVC_PKTS_TRY(svc_pkts_put_snapshot(
				st, out,
				&st->ring[(st->ring_head + i) % SVC_PKTS_CLOCK_RING]));
	}
	if (st->sync_marker_due)
		SVC_PKTS_TRY(svc_pkts_put_sync_marker(st, out));
	if (!b->disable_trace_config) {
		if (first)
			SVC_PKTS_TRY(svc_pkts_put_trace_config(st, out));
		if (first && st->has_clone_trigger)
			SVC_PKTS_TRY(svc_pkts_put_trigger(st, out,
							  &st->clone_trigger,
							  true));
		for (uint32_t i = 0; i < st->n_triggers; i++)
			SVC_PKTS_TRY(svc_pkts_put_trigger(st, out,
							  &st->triggers[i],
							  false));
	}
	if (first) {
		SVC_PKTS_TRY(svc_pkts_put_uuid(st, out));
		if (prov != NULL)
			SVC_PKTS_TRY(svc_pkts_put_provenance(st, out, prov));
		if (!b->disable_system_info)
			SVC_PKTS_TRY(svc_pkts_put_system_info(st, out));
	}
#undef SVC_PKTS_TRY
	if (!b->disable_service_events) {
		rc = svc_pkts_put_events(st, out);
		if (rc < 0)
			return rc;
		n += rc;
	}
	return n;
}

int svc_pkts_prologue(struct svc_pkts *st, struct svc_pkts_out *out,
		      const struct svc_pkts_provenance *prov)
{
	size_t start = out->len;
	int n = svc_pkts_put_prologue(st, out, prov);

	if (n < 0) {
		out->len = start;
		return n;
	}
	/* Everything is out: forget it. */
	st->first_batch_done = true;
	st->ring_head = st->ring_n = 0;
	st->sync_marker_due = false;
	for (uint32_t i = 0; i < st->n_triggers; i++)
		svc_pkts_trigger_free(&st->triggers[i]);
	st->n_triggers = 0;
	for (int k = 0; k < SVC_PKTS_EVENT_KINDS; k++)
		st->ev[k].head = st->ev[k].n = 0;
	svc_pkts_slow_clear(&st->slow_start);
	svc_pkts_slow_clear(&st->slow_flush);
	return n;
}

int svc_pkts_epilogue(struct svc_pkts *st, struct svc_pkts_out *out,
		      bool drained, svc_pkts_stats_fn fill, void *ctx)
{
	size_t start = out->len;
	bool wrote_stats = false;
	int n = 0, rc;

	if (!drained)
		return 0;
	if (!st->builtin.disable_service_events) {
		rc = svc_pkts_put_event(st, out, 4, svc_pkts_now(st), 0, NULL);
		if (rc < 0)
			goto fail;
		n++;
	}
	if (st->stats_due && fill != NULL) {
		struct svc_trace_stats ts;
		Perfetto__Protos__TracePacket p;

		memset(&ts, 0, sizeof(ts));
		perfetto__protos__trace_stats__init(&ts.msg);
		rc = fill(ctx, &ts);
		if (rc == 0) {
			svc_pkts_header(st, &p, true);
			p.data_case = PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS;
			p.trace_stats = &ts.msg;
			rc = svc_pkts_put(out, &p, 0, NULL, 0);
		}
		svc_trace_stats_release(&ts);
		if (rc < 0)
			goto fail;
		n++;
		wrote_stats = true;
	}
	if (wrote_stats)
		st->stats_due = false;
	return n;
fail:
	out->len = start;
	return rc;
}
