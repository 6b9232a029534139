// SPDX-License-Identifier: Apache-2.0
// Tests of src/core/svc_packets: the service-written packets of a batch,
// decoded back with the generated Perfetto__Protos__Trace (order, header
// fields, first-batch rules, clock drift rule with injected clocks,
// history limits, disable flags, stats due rules, TraceStats builder,
// allocation failures) and compared with Perfetto v14's own service
// packets in tests/data.
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/mem_hooks.h"
#include "core/svc_packets.h"
#include "spindle/pb.h"
#include "trace_packet.pb-c.h"
#include "proto_test_util.h"

#define UID 1000u
#define MS 1000000ull

/* ---- injected clocks ---- */

/* Readings by BuiltinClock id (1..6), with per-clock failures. */
struct fake_clock {
	uint64_t t[7];		/* reading of each builtin clock */
	int err[7];		/* non-zero: that clock fails with this */
	unsigned reads;		/* calls made */
};

static int builtin_of(clockid_t id)
{
	switch (id) {
	case CLOCK_REALTIME: return 1;
	case CLOCK_REALTIME_COARSE: return 2;
	case CLOCK_MONOTONIC: return 3;
	case CLOCK_MONOTONIC_COARSE: return 4;
	case CLOCK_MONOTONIC_RAW: return 5;
	case CLOCK_BOOTTIME: return 6;
	default: return 0;
	}
}

static int fake_read(void *ctx, clockid_t id, uint64_t *ns)
{
	struct fake_clock *fc = ctx;
	int b = builtin_of(id);

	fc->reads++;
	if (b == 0)
		return -EINVAL;
	if (fc->err[b])
		return fc->err[b];
	*ns = fc->t[b];
	return 0;
}

/* Distinct, plausible starting readings. */
static void fake_init(struct fake_clock *fc)
{
	memset(fc, 0, sizeof(*fc));
	fc->t[1] = 1795448241586842985ull;
	fc->t[2] = 1795448241581770504ull;
	fc->t[3] = 2099418192983ull;
	fc->t[4] = 2099413120482ull;
	fc->t[5] = 2099168724077ull;
	fc->t[6] = 2099418192873ull;
}

/* All clocks move together: no drift. */
static void fake_advance(struct fake_clock *fc, uint64_t ns)
{
	for (int i = 1; i <= 6; i++)
		fc->t[i] += ns;
}

/* ---- a session config ---- */

/* A TraceConfig packed by protobuf-c, plus an unknown field (999 = 7) that
 * a re-encoding through our .proto would still keep but whose exact place
 * only a verbatim copy preserves. */
static size_t make_config(uint8_t *buf, size_t cap)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig b =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bp = &b;
	size_t n;
	uint8_t *w;

	b.has_size_kb = 1;
	b.size_kb = 1024;
	cfg.n_buffers = 1;
	cfg.buffers = &bp;
	cfg.has_duration_ms = 1;
	cfg.duration_ms = 1500;
	n = perfetto__protos__trace_config__get_packed_size(&cfg);
	assert_true(n + 4 <= cap);
	w = buf + perfetto__protos__trace_config__pack(&cfg, buf);
	w = spn_pb_field_varint(w, 999, 7);
	return (size_t)(w - buf);
}

static uint8_t g_cfg[256];
static size_t g_cfg_len;

static void init_state(struct svc_pkts *st, struct fake_clock *fc,
		       const struct svc_pkts_builtin *b)
{
	struct svc_pkts_config c;

	memset(&c, 0, sizeof(c));
	g_cfg_len = make_config(g_cfg, sizeof(g_cfg));
	c.service_uid = UID;
	c.trace_config = g_cfg;
	c.trace_config_len = g_cfg_len;
	c.uuid_msb = 0x1122334455667788ll;
	c.uuid_lsb = -42;
	if (b)
		c.builtin = *b;
	c.clock = fake_read;
	c.clock_ctx = fc;
	assert_int_equal(svc_pkts_init(st, &c), 0);
}

/* ---- decoding helpers ---- */

/* Checks the Trace framing of out and returns the decoded trace. */
static Perfetto__Protos__Trace *decode(const struct svc_pkts_out *out)
{
	const uint8_t *p = out->data, *end = out->data + out->len;
	Perfetto__Protos__Trace *t;

	while (p < end) {
		struct spn_pb_field f;
		int n = spn_pb_next_field(p, end, &f);

		assert_true(n > 0);
		assert_int_equal(f.id, 1);
		assert_int_equal(f.wt, SPN_PB_LEN);
		assert_int_equal(p[0], 0x0A);
		p += n;
	}
	assert_true(p == end);
	t = perfetto__protos__trace__unpack(NULL, out->len, out->data);
	assert_non_null(t);
	/* Every field is declared, but in the echoed config (verbatim). */
	{
		size_t unknown = count_unknown(&t->base);

		for (size_t i = 0; i < t->n_packet; i++)
			if (t->packet[i]->data_case ==
			    PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG)
				unknown -= count_unknown(
					&t->packet[i]->trace_config->base);
		assert_int_equal(unknown, 0);
	}
	return t;
}

/* The bytes of the i-th packet of out. */
static const uint8_t *raw_packet(const struct svc_pkts_out *out, size_t i,
				 size_t *len)
{
	const uint8_t *p = out->data, *end = out->data + out->len;

	for (;;) {
		struct spn_pb_field f;
		int n = spn_pb_next_field(p, end, &f);

		assert_true(n > 0);
		if (i-- == 0) {
			*len = f.value;
			return f.data;
		}
		p += n;
	}
}

/* Payload of field 33 (trace_config) in a packet, and its length. */
static const uint8_t *field33_find(const uint8_t *p, size_t len, size_t *n)
{
	const uint8_t *end = p + len;

	while (p < end) {
		struct spn_pb_field f;
		int r = spn_pb_next_field(p, end, &f);

		assert_true(r > 0);
		if (f.id == 33) {
			*n = f.value;
			return f.data;
		}
		p += r;
	}
	fail_msg("no trace_config field");
	return NULL;
}

static const uint8_t *field33(const uint8_t *p, size_t len)
{
	size_t n;

	return field33_find(p, len, &n);
}

static size_t field33_len(const uint8_t *p, size_t len)
{
	size_t n = 0;

	field33_find(p, len, &n);
	return n;
}

/* Every service packet: trusted_uid, sequence 1, clock id 6 (bar the
 * sync marker, whose bytes are fixed). */
static void check_header(const Perfetto__Protos__TracePacket *p)
{
	assert_int_equal(p->optional_trusted_uid_case,
			 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_UID_TRUSTED_UID);
	assert_int_equal(p->trusted_uid, UID);
	assert_int_equal(p->optional_trusted_packet_sequence_id_case,
			 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID);
	assert_int_equal(p->trusted_packet_sequence_id, 1);
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_SYNCHRONIZATION_MARKER) {
		assert_false(p->has_timestamp_clock_id);
	} else {
		assert_true(p->has_timestamp_clock_id);
		assert_int_equal(p->timestamp_clock_id, 6);
	}
	assert_false(p->has_trusted_pid);
	assert_false(p->has_previous_packet_dropped);
}

static void check_all_headers(const Perfetto__Protos__Trace *t)
{
	for (size_t i = 0; i < t->n_packet; i++)
		check_header(t->packet[i]);
}

/* Data case of every packet, as a compact list. */
static void assert_cases(const Perfetto__Protos__Trace *t, size_t n,
			 const int *want)
{
	assert_int_equal(t->n_packet, n);
	for (size_t i = 0; i < n; i++) {
		if ((int)t->packet[i]->data_case != want[i])
			fail_msg("packet %zu: data case %d, want %d", i,
				 (int)t->packet[i]->data_case, want[i]);
	}
}

/* The snapshot matches the fake clock readings `t`, in service order. */
static void check_snapshot(const Perfetto__Protos__ClockSnapshot *cs,
			   const uint64_t *t, int primary)
{
	static const uint32_t order[6] = { 6, 2, 4, 1, 3, 5 };

	assert_non_null(cs);
	assert_int_equal(cs->n_clocks, 6);
	for (int i = 0; i < 6; i++) {
		assert_true(cs->clocks[i]->has_clock_id);
		assert_int_equal(cs->clocks[i]->clock_id, order[i]);
		assert_true(cs->clocks[i]->has_timestamp);
		assert_int_equal(cs->clocks[i]->timestamp, t[order[i]]);
		assert_false(cs->clocks[i]->has_is_incremental);
		assert_false(cs->clocks[i]->has_unit_multiplier_ns);
	}
	assert_true(cs->has_primary_trace_clock);
	assert_int_equal(cs->primary_trace_clock, primary);
}

/* The TracingServiceEvent case of packet i, with its timestamp. */
static int event_case(const Perfetto__Protos__Trace *t, size_t i, uint64_t *ts)
{
	const Perfetto__Protos__TracePacket *p = t->packet[i];

	assert_int_equal(p->data_case,
			 PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT);
	assert_true(p->has_timestamp);
	if (ts)
		*ts = p->timestamp;
	return (int)p->service_event->event_type_case;
}

/* Data cases, as ints (comparable with a cast data_case). */
#define C_SNAP ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT)
#define C_MARK ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_SYNCHRONIZATION_MARKER)
#define C_CFG ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG)
#define C_CTRIG ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_CLONE_SNAPSHOT_TRIGGER)
#define C_TRIG ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_TRIGGER)
#define C_UUID ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_UUID)
#define C_PROV ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_PROVENANCE)
#define C_SYS ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_SYSTEM_INFO)
#define C_EV ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT)
#define C_STATS ((int)PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS)

/* A prologue into a fresh buffer, decoded. */
static Perfetto__Protos__Trace *prologue(struct svc_pkts *st,
					 struct svc_pkts_out *out,
					 const struct svc_pkts_provenance *prov)
{
	Perfetto__Protos__Trace *t;
	int n;

	out->len = 0;
	n = svc_pkts_prologue(st, out, prov);
	assert_true(n >= 0);
	t = decode(out);
	assert_int_equal(t->n_packet, (size_t)n);
	check_all_headers(t);
	return t;
}

/* ---- stats fill callbacks ---- */

struct fill_ctx {
	int calls;		/* times called */
	int rc;			/* what to return */
	uint64_t invalid;	/* invalid_packets to report */
};

static int fill_stats(void *ctx, struct svc_trace_stats *ts)
{
	struct fill_ctx *fc = ctx;
	struct svc_stats_buffer b = { .buffer_size = 1048576,
				      .chunks_written = 34 };
	struct svc_stats_input in = { .buffers = &b, .n_buffers = 1,
				      .producers_connected = 2,
				      .invalid_packets = fc->invalid,
				      .histograms = true };

	fc->calls++;
	if (fc->rc)
		return fc->rc;
	return svc_trace_stats_build(ts, &in); /* -ENOMEM under the hooks */
}

/* ================= tests ================= */

/* Rows 1-11 of a first batch, in order, with their contents. */
static void test_first_batch_layout(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	Perfetto__Protos__Trace *t;
	uint64_t initial[7], ring[7], ts;
	struct utsname u;
	const uint8_t *raw;
	size_t len;
	static const int want[] = { C_SNAP, C_SNAP, C_MARK, C_CFG, C_TRIG,
				    C_UUID, C_SYS, C_EV, C_EV, C_EV, C_EV };

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	memcpy(initial, fc.t, sizeof(initial));
	assert_int_equal(svc_pkts_snapshot_interval_ms(&st), 10000);

	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_STARTED, 0), 0);
	fake_advance(&fc, 1000);
	memcpy(ring, fc.t, sizeof(ring));
	assert_int_equal(svc_pkts_periodic(&st), 1); /* first: always stored */
	assert_true(svc_pkts_stats_due(&st));
	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_STARTED, 0), 0);
	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_trigger(&st, "trig", "prod", 1234, 500), 0);
	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_FLUSH_STARTED, 0), 0);
	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_FLUSHED, 0), 0);

	t = prologue(&st, &out, NULL);
	assert_cases(t, sizeof(want) / sizeof(want[0]), want);

	/* 1, 2: the initial snapshot, then the ring's (no drift since). */
	check_snapshot(t->packet[0]->clock_snapshot, initial, 6);
	check_snapshot(t->packet[1]->clock_snapshot, ring, 6);
	assert_false(t->packet[0]->has_timestamp);

	/* 3: the sync marker, byte for byte (trace-config.md §4.5). */
	{
		static const uint8_t marker[] = {
			0x18, 0xe8, 0x07, 0x50, 0x01, 0xa2, 0x02, 0x10,
			0x82, 0x47, 0x7a, 0x76, 0xb2, 0x8d, 0x42, 0xba,
			0x81, 0xdc, 0x33, 0x32, 0x6d, 0x57, 0xa0, 0x79 };

		raw = raw_packet(&out, 2, &len);
		assert_int_equal(len, sizeof(marker));
		assert_memory_equal(raw, marker, sizeof(marker));
	}

	/* 4: trace_config carries the consumer's bytes verbatim. */
	{
		const uint8_t *p, *end;
		int found = 0;

		raw = raw_packet(&out, 3, &len);
		for (p = raw, end = raw + len; p < end;) {
			struct spn_pb_field f;
			int n = spn_pb_next_field(p, end, &f);

			assert_true(n > 0);
			if (f.id == 33) {
				assert_int_equal(f.value, g_cfg_len);
				assert_memory_equal(f.data, g_cfg, g_cfg_len);
				found++;
			}
			p += n;
		}
		assert_int_equal(found, 1);
		assert_int_equal(t->packet[3]->trace_config->duration_ms, 1500);
		assert_int_equal(t->packet[3]->trace_config->base.n_unknown_fields, 1);
	}

	/* 6: the trigger, stamped when it was received. */
	{
		const Perfetto__Protos__Trigger *tr = t->packet[4]->trigger;

		assert_true(t->packet[4]->has_timestamp);
		assert_int_equal(t->packet[4]->timestamp, initial[6] + 4000);
		assert_str(tr->trigger_name, "trig");
		assert_str(tr->producer_name, "prod");
		assert_int_equal(tr->trusted_producer_uid, 1234);
		assert_int_equal(tr->stop_delay_ms, 500);
	}

	/* 7: uuid from the config. */
	assert_int_equal(t->packet[5]->trace_uuid->msb, 0x1122334455667788ll);
	assert_int_equal(t->packet[5]->trace_uuid->lsb, -42);

	/* 10: system_info of this machine. */
	{
		const Perfetto__Protos__SystemInfo *si = t->packet[6]->system_info;

		assert_int_equal(uname(&u), 0);
		assert_non_null(si->utsname);
		assert_str(si->utsname->sysname, u.sysname);
		assert_str(si->utsname->version, u.version);
		assert_str(si->utsname->release, u.release);
		assert_str(si->utsname->machine, u.machine);
		assert_true(si->has_page_size);
		assert_int_equal(si->page_size, (uint32_t)sysconf(_SC_PAGESIZE));
		assert_true(si->has_num_cpus);
		assert_int_equal(si->num_cpus, (uint32_t)sysconf(_SC_NPROCESSORS_CONF));
		assert_true(si->has_system_ram_bytes);
		assert_true(si->system_ram_bytes > 0);
		assert_false(si->has_hz);
	}

	/* 11: the events, by timestamp. */
	assert_int_equal(event_case(t, 7, &ts), SVC_EV_TRACING_STARTED);
	assert_int_equal(ts, initial[6] + 1000);
	assert_int_equal(event_case(t, 8, &ts), SVC_EV_ALL_DATA_SOURCES_STARTED);
	assert_int_equal(ts, initial[6] + 3000);
	assert_true(t->packet[8]->service_event->all_data_sources_started);
	assert_int_equal(event_case(t, 9, &ts), SVC_EV_FLUSH_STARTED);
	assert_int_equal(ts, initial[6] + 5000);
	assert_int_equal(event_case(t, 10, &ts), SVC_EV_ALL_DATA_SOURCES_FLUSHED);
	assert_int_equal(ts, initial[6] + 6000);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* Nothing new: the next batch has no service packet at all. */
	t = prologue(&st, &out, NULL);
	assert_int_equal(t->n_packet, 0);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* A later batch: only what happened since (no first-batch rows). */
	fake_advance(&fc, 1000);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_FLUSH_STARTED, 0), 0);
	assert_int_equal(svc_pkts_periodic(&st), 0); /* no drift: not stored */
	assert_int_equal(svc_pkts_record_trigger(&st, "t2", NULL, 7, 0), 0);
	t = prologue(&st, &out, NULL);
	{
		static const int want2[] = { C_MARK, C_TRIG, C_EV };

		assert_cases(t, 3, want2);
		assert_null(t->packet[1]->trigger->producer_name);
		assert_str(t->packet[1]->trigger->trigger_name, "t2");
		assert_int_equal(event_case(t, 2, NULL), SVC_EV_FLUSH_STARTED);
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
	svc_pkts_destroy(&st); /* idempotent */
}

/* Row 15 and 16: the epilogue and when stats are due. */
static void test_epilogue_stats_due(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	struct fill_ctx fx = { 0 };
	Perfetto__Protos__Trace *t;
	uint64_t ts;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	assert_false(svc_pkts_stats_due(&st));

	/* Not drained: nothing, whatever is due. */
	assert_int_equal(svc_pkts_epilogue(&st, &out, false, fill_stats, &fx), 0);
	assert_int_equal(out.len, 0);

	/* Drained, stats not due: read_tracing_buffers_completed only. */
	fake_advance(&fc, 777);
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), 1);
	t = decode(&out);
	check_all_headers(t);
	assert_int_equal(event_case(t, 0, &ts), 4);
	assert_true(t->packet[0]->service_event->read_tracing_buffers_completed);
	assert_int_equal(ts, fc.t[6]);
	assert_int_equal(fx.calls, 0);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* The periodic task makes stats due; a non-draining read keeps them. */
	assert_int_equal(svc_pkts_periodic(&st), 1);
	assert_true(svc_pkts_stats_due(&st));
	out.len = 0;
	assert_int_equal(svc_pkts_epilogue(&st, &out, false, fill_stats, &fx), 0);
	assert_true(svc_pkts_stats_due(&st));
	/* NULL fill: no stats, still due. */
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, NULL, NULL), 1);
	assert_true(svc_pkts_stats_due(&st));
	/* A failing fill: the whole epilogue fails and nothing is appended. */
	out.len = 0;
	fx.rc = -EIO;
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), -EIO);
	assert_int_equal(out.len, 0);
	assert_true(svc_pkts_stats_due(&st));
	fx.rc = 0;

	/* Drained and due: event, then trace_stats; then no longer due. */
	fx.invalid = 3;
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), 2);
	t = decode(&out);
	check_all_headers(t);
	{
		static const int want[] = { C_EV, C_STATS };
		const Perfetto__Protos__TraceStats *s;

		assert_cases(t, 2, want);
		s = t->packet[1]->trace_stats;
		assert_int_equal(s->n_buffer_stats, 1);
		assert_int_equal(s->buffer_stats[0]->buffer_size, 1048576);
		assert_int_equal(s->buffer_stats[0]->chunks_written, 34);
		assert_int_equal(s->producers_connected, 2);
		assert_true(s->has_invalid_packets);
		assert_int_equal(s->invalid_packets, 3);
		assert_false(t->packet[1]->has_timestamp);
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
	assert_false(svc_pkts_stats_due(&st));
	out.len = 0;
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), 1);

	/* Forced due (end of a write-into-file session, clones). */
	svc_pkts_mark_stats_due(&st);
	out.len = 0;
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), 2);
	assert_false(svc_pkts_stats_due(&st));

	/* The periodic task also arms the sync marker, once. */
	assert_int_equal(svc_pkts_periodic(&st), 0);
	assert_int_equal(svc_pkts_periodic(&st), 0);
	t = prologue(&st, &out, NULL);
	{
		/* First batch (never read before): snapshots, marker, ... */
		size_t markers = 0;

		for (size_t i = 0; i < t->n_packet; i++)
			markers += (int)t->packet[i]->data_case == C_MARK;
		assert_int_equal(markers, 1);
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* Ring snapshots of the drained batch, as boot times. */
static size_t ring_boot_times(struct svc_pkts *st, struct svc_pkts_out *out,
			      uint64_t *boot, size_t cap)
{
	Perfetto__Protos__Trace *t = prologue(st, out, NULL);
	size_t n = 0;

	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__ClockSnapshot *cs;

		if ((int)t->packet[i]->data_case != C_SNAP)
			continue;
		cs = t->packet[i]->clock_snapshot;
		assert_true(n < cap);
		assert_int_equal(cs->clocks[0]->clock_id, 6);
		boot[n++] = cs->clocks[0]->timestamp;
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
	return n;
}

/* trace-buffer.md §6.1: stored only on >= 10 ms drift; newest 16 kept. */
static void test_drift_rule(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	uint64_t boot[32], expect[16];
	size_t n;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	/* Drain the first batch (initial snapshot etc.). */
	n = ring_boot_times(&st, &out, boot, 32);
	assert_int_equal(n, 1);

	assert_int_equal(svc_pkts_snapshot(&st), 1); /* first: always */
	fake_advance(&fc, 3600000 * MS);	 /* an hour, no drift */
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	fc.t[1] += 10 * MS - 1;			 /* REALTIME: 1 ns short */
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	fc.t[1] += 1;				 /* 10 ms exactly */
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	assert_int_equal(svc_pkts_snapshot(&st), 0); /* relative to the newest */
	fc.t[3] -= 10 * MS;			 /* MONOTONIC backwards */
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	fc.t[6] += 10 * MS;			 /* BOOTTIME alone (suspend) */
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	fc.t[5] += 9 * MS;			 /* under the threshold */
	fc.t[2] -= 9 * MS;
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	n = ring_boot_times(&st, &out, boot, 32);
	assert_int_equal(n, 3 + 1);
	/* After a read the reference stays: no re-store without drift. */
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	n = ring_boot_times(&st, &out, boot, 32);
	assert_int_equal(n, 0);

	/* 20 drifting snapshots: the ring emits the newest 16, oldest first. */
	for (int i = 0; i < 20; i++) {
		fake_advance(&fc, 1000);
		fc.t[4] += 20 * MS;	/* MONOTONIC_COARSE jumps */
		if (i >= 4)
			expect[i - 4] = fc.t[6];
		assert_int_equal(svc_pkts_snapshot(&st), 1);
	}
	n = ring_boot_times(&st, &out, boot, 32);
	assert_int_equal(n, 16);
	assert_memory_equal(boot, expect, sizeof(expect));

	/* Triggers and the three lifecycle events snapshot too. */
	fc.t[1] += 20 * MS;
	assert_int_equal(svc_pkts_record_trigger(&st, "x", "p", 1, 0), 0);
	fc.t[1] += 20 * MS;
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_STARTED, 0), 0);
	fc.t[1] += 20 * MS;
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_FLUSHED, 0), 0);
	fc.t[1] += 20 * MS;
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_DISABLED, 0), 0);
	fc.t[1] += 20 * MS; /* these don't */
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_FLUSH_STARTED, 0), 0);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_STARTED, 0), 0);
	n = ring_boot_times(&st, &out, boot, 32);
	assert_int_equal(n, 4);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* A clock that fails is skipped; no clock at all means no snapshot. */
static void test_clock_failures(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	struct svc_pkts_snapshot s;
	Perfetto__Protos__Trace *t;
	const Perfetto__Protos__ClockSnapshot *cs;
	static const uint32_t order[5] = { 6, 2, 4, 1, 3 };

	(void)state;
	fake_init(&fc);
	fc.err[5] = -EINVAL; /* MONOTONIC_RAW */
	init_state(&st, &fc, NULL);
	t = prologue(&st, &out, NULL);
	assert_int_equal(t->packet[0]->data_case, C_SNAP);
	cs = t->packet[0]->clock_snapshot;
	assert_int_equal(cs->n_clocks, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(cs->clocks[i]->clock_id, order[i]);
		assert_int_equal(cs->clocks[i]->timestamp, fc.t[order[i]]);
	}
	perfetto__protos__trace__free_unpacked(t, NULL);

	assert_int_equal(svc_pkts_snapshot(&st), 1);
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	fc.err[5] = 0; /* the set of clocks changed: stored */
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	fc.err[6] = -EPERM; /* no BOOTTIME to compare with: stored */
	assert_int_equal(svc_pkts_read_clocks(&st, &s), 5);
	assert_int_equal(s.c[0].id, 2);
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	assert_int_equal(svc_pkts_now(&st), 0);
	for (int i = 1; i <= 6; i++)
		fc.err[i] = -ENOTSUP;
	assert_int_equal(svc_pkts_read_clocks(&st, &s), -ENOTSUP);
	assert_int_equal(svc_pkts_snapshot(&st), -ENOTSUP);
	assert_int_equal(svc_pkts_periodic(&st), -ENOTSUP);
	/* An event whose snapshot fails is still recorded. */
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_DISABLED, 0), 0);
	svc_pkts_destroy(&st);

	/* Every clock failing at init: no initial snapshot packet. */
	init_state(&st, &fc, NULL);
	t = prologue(&st, &out, NULL);
	for (size_t i = 0; i < t->n_packet; i++)
		assert_int_not_equal(t->packet[i]->data_case, C_SNAP);
	assert_int_equal(t->packet[0]->data_case, C_CFG);
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* The real clocks, when no clock is injected. */
static void test_default_clocks(void **state)
{
	struct svc_pkts_config c;
	struct svc_pkts st;
	struct svc_pkts_snapshot s;
	struct timespec now;
	uint64_t boot;
	static const uint32_t order[6] = { 6, 2, 4, 1, 3, 5 };

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(svc_pkts_init(&st, &c), 0);
	assert_true(st.initial_taken);
	assert_int_equal(svc_pkts_read_clocks(&st, &s), 6);
	assert_int_equal(clock_gettime(CLOCK_BOOTTIME, &now), 0);
	boot = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	for (int i = 0; i < 6; i++)
		assert_int_equal(s.c[i].id, order[i]);
	assert_true(s.c[0].ts <= boot && boot - s.c[0].ts < 1000 * MS);
	assert_true(svc_pkts_now(&st) >= boot);
	svc_pkts_destroy(&st);
}

/* trace-buffer.md §6.2 history limits, and sorting by timestamp. */
static void test_history_limits(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	Perfetto__Protos__Trace *t;
	uint64_t ts, prev = 0, base;
	size_t starts = 0, flushed = 0, cloned = 0, i;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	/* The first batch and the first (always stored) snapshot out of the
	 * way: the flushed events below then find no drift. */
	assert_int_equal(svc_pkts_snapshot(&st), 1);
	t = prologue(&st, &out, NULL);
	perfetto__protos__trace__free_unpacked(t, NULL);

	base = fc.t[6];
	for (i = 0; i < 100; i++) {
		fake_advance(&fc, 10);
		assert_int_equal(svc_pkts_record_event(&st, SVC_EV_FLUSH_STARTED, 0), 0);
		fake_advance(&fc, 10);
		assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_FLUSHED, 0), 0);
	}
	for (i = 0; i < 3; i++) {
		fake_advance(&fc, 10);
		assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_STARTED, 0), 0);
	}
	for (i = 0; i < 130; i++)
		assert_int_equal(svc_pkts_record_event(&st, SVC_EV_BUFFER_CLONED, (uint32_t)i), 0);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_CLONE_STARTED, 0), 0);
	assert_int_equal(svc_pkts_record_event(&st, (enum svc_pkts_event)4, 0), -EINVAL);
	assert_int_equal(svc_pkts_record_event(&st, (enum svc_pkts_event)6, 0), -EINVAL);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_SLOW_STARTING_DATA_SOURCES, 0), -EINVAL);
	assert_int_equal(svc_pkts_record_event(&st, (enum svc_pkts_event)99, 0), -EINVAL);

	t = prologue(&st, &out, NULL);
	assert_int_equal(t->n_packet, 64 + 64 + 1 + 128 + 1);
	for (i = 0; i < t->n_packet; i++) {
		int k = event_case(t, i, &ts);

		assert_true(ts >= prev);
		prev = ts;
		if (k == SVC_EV_FLUSH_STARTED) {
			/* The newest 64 of 100: numbers 36..99. */
			assert_int_equal(ts, base + (36 + starts) * 20 + 10);
			starts++;
		} else if (k == SVC_EV_ALL_DATA_SOURCES_FLUSHED) {
			assert_int_equal(ts, base + (36 + flushed) * 20 + 20);
			flushed++;
		} else if (k == SVC_EV_TRACING_STARTED) {
			assert_int_equal(ts, base + 2000 + 30); /* latest of 3 */
		} else if (k == SVC_EV_BUFFER_CLONED) {
			/* Same timestamp: record order, the newest 128. */
			assert_int_equal(t->packet[i]->service_event->buffer_cloned,
					 2 + cloned);
			cloned++;
		} else {
			assert_int_equal(k, SVC_EV_CLONE_STARTED);
			assert_int_equal(cloned, 128);
		}
	}
	assert_int_equal(starts, 64);
	assert_int_equal(flushed, 64);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* Out-of-order clocks still come out sorted. */
	fc.t[6] = 5000;
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_DISABLED, 0), 0);
	fc.t[6] = 100;
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_STARTED, 0), 0);
	t = prologue(&st, &out, NULL);
	/* (BOOTTIME jumping alone is a drift: tracing_disabled's snapshot.) */
	assert_int_equal(t->n_packet, 3);
	assert_int_equal(t->packet[0]->data_case, C_SNAP);
	assert_int_equal(event_case(t, 1, NULL), SVC_EV_ALL_DATA_SOURCES_STARTED);
	assert_int_equal(event_case(t, 2, NULL), SVC_EV_TRACING_DISABLED);
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* Slow start / slow flush: at most 32 listed, only the latest kept. */
static void test_slow_events(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	struct svc_pkts_ds_name ds[40];
	char names[40][16];
	Perfetto__Protos__Trace *t;
	const Perfetto__Protos__TracingServiceEvent__DataSources *l;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	t = prologue(&st, &out, NULL);
	perfetto__protos__trace__free_unpacked(t, NULL);

	for (int i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "ds%d", i);
		ds[i].producer_name = "prod";
		ds[i].data_source_name = names[i];
	}
	ds[1].producer_name = NULL;
	fake_advance(&fc, 10);
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_SLOW_STARTING_DATA_SOURCES, ds, 40), 0);
	fake_advance(&fc, 10);
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES, ds, 3), 0);
	fake_advance(&fc, 10);
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES, ds + 5, 2), 0);
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_FLUSH_STARTED, ds, 1), -EINVAL);
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_SLOW_STARTING_DATA_SOURCES, NULL, 1), -EINVAL);

	t = prologue(&st, &out, NULL);
	assert_int_equal(t->n_packet, 2);
	assert_int_equal(event_case(t, 0, NULL), SVC_EV_SLOW_STARTING_DATA_SOURCES);
	l = t->packet[0]->service_event->slow_starting_data_sources;
	assert_int_equal(l->n_data_source, 32);
	assert_null(l->data_source[1]->producer_name);
	assert_str(l->data_source[1]->data_source_name, "ds1");
	assert_str(l->data_source[31]->producer_name, "prod");
	assert_str(l->data_source[31]->data_source_name, "ds31");
	assert_int_equal(event_case(t, 1, NULL), SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES);
	l = t->packet[1]->service_event->last_flush_slow_data_sources;
	assert_int_equal(l->n_data_source, 2);
	assert_str(l->data_source[0]->data_source_name, "ds5");
	assert_str(l->data_source[1]->data_source_name, "ds6");
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* An empty list is still an event. */
	assert_int_equal(svc_pkts_record_slow(&st, SVC_EV_SLOW_STARTING_DATA_SOURCES, NULL, 0), 0);
	t = prologue(&st, &out, NULL);
	assert_int_equal(t->n_packet, 1);
	assert_int_equal(t->packet[0]->service_event->slow_starting_data_sources->n_data_source, 0);
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* Counts packets of one data case. */
static size_t count_case(const Perfetto__Protos__Trace *t, int c)
{
	size_t n = 0;

	for (size_t i = 0; i < t->n_packet; i++)
		n += (int)t->packet[i]->data_case == c;
	return n;
}

/* A session with everything recorded, first batch + epilogue, under `b`. */
static Perfetto__Protos__Trace *run_with(const struct svc_pkts_builtin *b,
					 struct fake_clock *fc,
					 struct svc_pkts_out *out)
{
	struct svc_pkts st;
	struct fill_ctx fx = { 0 };
	int n;

	fake_init(fc);
	init_state(&st, fc, b);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_STARTED, 0), 0);
	assert_true(svc_pkts_periodic(&st) >= 0);
	assert_int_equal(svc_pkts_record_trigger(&st, "t", "p", 1, 0), 0);
	assert_int_equal(svc_pkts_set_clone_trigger(&st, 5, "ct", "p", 1, 2), 0);
	out->len = 0;
	n = svc_pkts_prologue(&st, out, NULL);
	assert_true(n >= 0);
	n = svc_pkts_epilogue(&st, out, true, fill_stats, &fx);
	assert_true(n >= 1);
	svc_pkts_destroy(&st);
	return decode(out);
}

/* builtin_data_sources disable flags. */
static void test_disable_flags(void **state)
{
	struct fake_clock fc;
	struct svc_pkts_out out = { 0 };
	struct svc_pkts_builtin b;
	Perfetto__Protos__Trace *t;
	struct svc_pkts st;

	(void)state;
	memset(&b, 0, sizeof(b));
	t = run_with(&b, &fc, &out);
	{
		static const int want[] = { C_SNAP, C_SNAP, C_MARK, C_CFG,
					    C_CTRIG, C_TRIG, C_UUID, C_SYS,
					    C_EV, C_EV, C_STATS };

		assert_cases(t, sizeof(want) / sizeof(want[0]), want);
		assert_int_equal(t->packet[4]->timestamp, 5);
		assert_str(t->packet[4]->clone_snapshot_trigger->trigger_name, "ct");
		assert_int_equal(t->packet[4]->clone_snapshot_trigger->stop_delay_ms, 2);
	}
	perfetto__protos__trace__free_unpacked(t, NULL);

	memset(&b, 0, sizeof(b));
	b.disable_clock_snapshotting = true;
	t = run_with(&b, &fc, &out);
	assert_int_equal(count_case(t, C_SNAP), 0);
	assert_int_equal(count_case(t, C_MARK), 1);
	assert_int_equal(count_case(t, C_CFG), 1);
	perfetto__protos__trace__free_unpacked(t, NULL);
	/* ... and no clock is read for snapshots. */
	fake_init(&fc);
	init_state(&st, &fc, &b);
	assert_int_equal(fc.reads, 0);
	assert_int_equal(svc_pkts_snapshot(&st), 0);
	assert_int_equal(fc.reads, 0);
	svc_pkts_destroy(&st);

	memset(&b, 0, sizeof(b));
	b.disable_trace_config = true;
	t = run_with(&b, &fc, &out);
	assert_int_equal(count_case(t, C_CFG), 0);
	assert_int_equal(count_case(t, C_TRIG), 0);
	assert_int_equal(count_case(t, C_CTRIG), 0);
	assert_int_equal(count_case(t, C_UUID), 1);
	assert_int_equal(count_case(t, C_SYS), 1);
	perfetto__protos__trace__free_unpacked(t, NULL);

	memset(&b, 0, sizeof(b));
	b.disable_system_info = true;
	t = run_with(&b, &fc, &out);
	assert_int_equal(count_case(t, C_SYS), 0);
	assert_int_equal(count_case(t, C_UUID), 1);
	perfetto__protos__trace__free_unpacked(t, NULL);

	memset(&b, 0, sizeof(b));
	b.disable_service_events = true;
	t = run_with(&b, &fc, &out);
	assert_int_equal(count_case(t, C_EV), 0);
	assert_int_equal(count_case(t, C_STATS), 1);
	assert_int_equal(t->packet[t->n_packet - 1]->data_case, C_STATS);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* primary_trace_clock and snapshot interval. */
	memset(&b, 0, sizeof(b));
	b.primary_trace_clock = 3;
	b.snapshot_interval_ms = 250;
	t = run_with(&b, &fc, &out);
	assert_int_equal(t->packet[0]->clock_snapshot->primary_trace_clock, 3);
	perfetto__protos__trace__free_unpacked(t, NULL);
	fake_init(&fc);
	init_state(&st, &fc, &b);
	assert_int_equal(svc_pkts_snapshot_interval_ms(&st), 250);
	svc_pkts_destroy(&st);
	svc_pkts_out_free(&out);
}

/* builtin_data_sources read from a decoded TraceConfig. */
static void test_builtin_from_config(void **state)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BuiltinDataSource bds =
		PERFETTO__PROTOS__TRACE_CONFIG__BUILTIN_DATA_SOURCE__INIT;
	struct svc_pkts_builtin b;

	(void)state;
	memset(&b, 0xff, sizeof(b));
	svc_pkts_builtin_from_config(&cfg, &b);
	assert_false(b.disable_clock_snapshotting || b.disable_trace_config ||
		     b.disable_system_info || b.disable_service_events ||
		     b.disable_chunk_usage_histograms);
	assert_int_equal(b.primary_trace_clock, 0);
	assert_int_equal(b.snapshot_interval_ms, 0);
	svc_pkts_builtin_from_config(NULL, &b);
	assert_false(b.disable_service_events);

	cfg.builtin_data_sources = &bds;
	bds.has_disable_clock_snapshotting = 1;
	bds.disable_clock_snapshotting = 1;
	bds.has_disable_trace_config = 1;
	bds.disable_trace_config = 0;
	bds.has_disable_system_info = 1;
	bds.disable_system_info = 1;
	bds.has_disable_service_events = 1;
	bds.disable_service_events = 1;
	bds.has_disable_chunk_usage_histograms = 1;
	bds.disable_chunk_usage_histograms = 1;
	bds.has_primary_trace_clock = 1;
	bds.primary_trace_clock = PERFETTO__PROTOS__BUILTIN_CLOCK__BUILTIN_CLOCK_MONOTONIC_RAW;
	bds.has_snapshot_interval_ms = 1;
	bds.snapshot_interval_ms = 1234;
	svc_pkts_builtin_from_config(&cfg, &b);
	assert_true(b.disable_clock_snapshotting);
	assert_false(b.disable_trace_config);
	assert_true(b.disable_system_info);
	assert_true(b.disable_service_events);
	assert_true(b.disable_chunk_usage_histograms);
	assert_int_equal(b.primary_trace_clock, 5);
	assert_int_equal(b.snapshot_interval_ms, 1234);
}

/* Random UUIDs when the config has none; bad arguments. */
static void test_uuid_and_args(void **state)
{
	struct svc_pkts_config c;
	struct svc_pkts a, b;

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(svc_pkts_init(&a, &c), 0);
	assert_int_equal(svc_pkts_init(&b, &c), 0);
	assert_false(a.uuid_msb == b.uuid_msb && a.uuid_lsb == b.uuid_lsb);
	assert_int_equal(((uint64_t)a.uuid_msb >> 12) & 0xF, 4);
	assert_int_equal((uint64_t)a.uuid_lsb >> 62, 2);
	svc_pkts_destroy(&a);
	svc_pkts_destroy(&b);

	c.uuid_lsb = 1; /* one half set: used as given */
	assert_int_equal(svc_pkts_init(&a, &c), 0);
	assert_int_equal(a.uuid_msb, 0);
	assert_int_equal(a.uuid_lsb, 1);
	svc_pkts_destroy(&a);

	assert_int_equal(svc_pkts_init(NULL, &c), -EINVAL);
	assert_int_equal(svc_pkts_init(&a, NULL), -EINVAL);
	c.trace_config_len = 5;
	assert_int_equal(svc_pkts_init(&a, &c), -EINVAL);

	c.trace_config_len = 0;
	assert_int_equal(svc_pkts_init(&a, &c), 0);
	assert_int_equal(svc_pkts_record_trigger(&a, NULL, "p", 0, 0), -EINVAL);
	assert_int_equal(svc_pkts_set_clone_trigger(&a, 0, NULL, "p", 0, 0), -EINVAL);
	/* No config bytes: an empty trace_config is still echoed. */
	{
		struct svc_pkts_out out = { 0 };
		Perfetto__Protos__Trace *t;
		const uint8_t *raw;
		size_t len;

		assert_true(svc_pkts_prologue(&a, &out, NULL) > 0);
		t = decode(&out);
		assert_int_equal(t->packet[1]->data_case, C_CFG);
		raw = raw_packet(&out, 1, &len);
		assert_int_equal(field33_len(raw, len), 0);
		perfetto__protos__trace__free_unpacked(t, NULL);
		svc_pkts_out_free(&out);
	}
	svc_pkts_destroy(&a);

	/* A zeroed, never initialised state tolerates every call. */
	{
		struct svc_pkts z;
		struct svc_pkts_out out = { 0 };
		Perfetto__Protos__Trace *t;

		memset(&z, 0, sizeof(z));
		assert_int_equal(svc_pkts_record_event(&z, SVC_EV_TRACING_STARTED, 0), -EINVAL);
		assert_int_equal(svc_pkts_periodic(&z), 1);
		assert_true(svc_pkts_now(&z) > 0);
		assert_true(svc_pkts_prologue(&z, &out, NULL) > 0);
		assert_int_equal(svc_pkts_epilogue(&z, &out, true, NULL, NULL), 1);
		t = decode(&out);
		assert_true(t->n_packet >= 4);
		perfetto__protos__trace__free_unpacked(t, NULL);
		svc_pkts_out_free(&out);
		svc_pkts_destroy(&z);
	}
}

/* Triggers waiting for a read are bounded. */
static void test_trigger_limit(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	Perfetto__Protos__Trace *t;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	for (unsigned i = 0; i < SVC_PKTS_MAX_TRIGGERS; i++)
		assert_int_equal(svc_pkts_record_trigger(&st, "t", "p", 1, i), 0);
	assert_int_equal(svc_pkts_record_trigger(&st, "t", "p", 1, 0), -ENOSPC);
	assert_int_equal(st.triggers_dropped, 1);
	t = prologue(&st, &out, NULL);
	assert_int_equal(count_case(t, C_TRIG), SVC_PKTS_MAX_TRIGGERS);
	for (size_t i = 0, k = 0; i < t->n_packet; i++)
		if ((int)t->packet[i]->data_case == C_TRIG)
			assert_int_equal(t->packet[i]->trigger->stop_delay_ms, k++);
	perfetto__protos__trace__free_unpacked(t, NULL);
	/* Emitted triggers are forgotten: room again. */
	assert_int_equal(svc_pkts_record_trigger(&st, "t", "p", 1, 0), 0);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* trace_provenance in the first batch, after trace_uuid. */
static void test_provenance(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	Perfetto__Protos__Trace *t;
	const struct svc_pkts_prov_seq s0[] = { { 2, 1 }, { 3, 1 } };
	const struct svc_pkts_prov_seq s2[] = { { 4, 7 } };
	const struct svc_pkts_prov_buffer bufs[3] = { { s0, 2 }, { NULL, 0 },
						      { s2, 1 } };
	const struct svc_pkts_provenance prov = { bufs, 3 };
	const struct svc_pkts_prov_buffer bad_buf = { NULL, 1 };
	const struct svc_pkts_provenance bad = { &bad_buf, 1 };
	const Perfetto__Protos__TraceProvenance *tp;
	size_t i;

	(void)state;
	fake_init(&fc);
	init_state(&st, &fc, NULL);
	assert_int_equal(svc_pkts_prologue(&st, &out, &bad), -EINVAL);
	assert_int_equal(out.len, 0);
	t = prologue(&st, &out, &prov);
	for (i = 0; i < t->n_packet && (int)t->packet[i]->data_case != C_PROV; i++)
		;
	assert_true(i < t->n_packet);
	assert_int_equal(t->packet[i - 1]->data_case, C_UUID);
	assert_int_equal(t->packet[i + 1]->data_case, C_SYS);
	tp = t->packet[i]->trace_provenance;
	assert_int_equal(tp->n_buffers, 3);
	assert_int_equal(tp->buffers[0]->n_sequences, 2);
	assert_int_equal(tp->buffers[0]->sequences[1]->id, 3);
	assert_int_equal(tp->buffers[0]->sequences[1]->producer_id, 1);
	assert_int_equal(tp->buffers[1]->n_sequences, 0);
	assert_int_equal(tp->buffers[2]->sequences[0]->id, 4);
	assert_int_equal(tp->buffers[2]->sequences[0]->producer_id, 7);
	perfetto__protos__trace__free_unpacked(t, NULL);
	/* First batch only. */
	t = prologue(&st, &out, &prov);
	assert_int_equal(t->n_packet, 0);
	perfetto__protos__trace__free_unpacked(t, NULL);
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);
}

/* The TraceStats builder: every field, from plain structs. */
static void test_stats_builder(void **state)
{
	struct svc_stats_buffer b[2];
	struct svc_stats_writer w[2];
	uint64_t disc[2] = { 11, 22 };
	struct svc_stats_filter f = { 1, 2, 3, 4, 5, disc, 2 };
	struct svc_stats_input in;
	struct svc_trace_stats ts;
	Perfetto__Protos__TraceStats *m;
	uint8_t *buf;
	size_t n;

	(void)state;
	memset(b, 0, sizeof(b));
	{
		uint64_t *v = (uint64_t *)&b[0];

		for (size_t i = 0; i < sizeof(b[0]) / sizeof(uint64_t); i++)
			v[i] = 100 + i;
	}
	b[1].buffer_size = 4096;
	memset(w, 0, sizeof(w));
	w[0].sequence_id = 2;
	w[0].buffer = 0;
	w[1].sequence_id = 5;
	w[1].buffer = 1;
	for (int i = 0; i < 11; i++) {
		w[0].counts[i] = (uint64_t)i;
		w[0].sums[i] = i * 1000;
		w[1].counts[i] = 50u + (uint64_t)i;
	}
	memset(&in, 0, sizeof(in));
	in.buffers = b;
	in.n_buffers = 2;
	in.producers_connected = 2;
	in.producers_seen = 3;
	in.data_sources_registered = 4;
	in.data_sources_seen = 5;
	in.tracing_sessions = 6;
	in.total_buffers = 7;
	in.chunks_discarded = 8;
	in.patches_discarded = 9;
	in.invalid_packets = 10;
	in.filter = &f;
	in.flushes_requested = 12;
	in.flushes_succeeded = 13;
	in.flushes_failed = 14;
	in.final_flush_outcome = 2;
	in.histograms = true;
	in.writers = w;
	in.n_writers = 2;
	assert_int_equal(svc_trace_stats_build(&ts, &in), 0);
	n = perfetto__protos__trace_stats__get_packed_size(&ts.msg);
	buf = malloc(n);
	assert_non_null(buf);
	perfetto__protos__trace_stats__pack(&ts.msg, buf);
	svc_trace_stats_release(&ts);
	m = perfetto__protos__trace_stats__unpack(NULL, n, buf);
	assert_non_null(m);
	free(buf);

	assert_int_equal(m->n_buffer_stats, 2);
	{
		const Perfetto__Protos__TraceStats__BufferStats *s = m->buffer_stats[0];

		assert_int_equal(s->buffer_size, 100);
		assert_int_equal(s->bytes_written, 101);
		assert_int_equal(s->bytes_overwritten, 102);
		assert_int_equal(s->bytes_read, 103);
		assert_int_equal(s->padding_bytes_written, 104);
		assert_int_equal(s->padding_bytes_cleared, 105);
		assert_int_equal(s->chunks_written, 106);
		assert_int_equal(s->chunks_rewritten, 107);
		assert_int_equal(s->chunks_relocated, 108);
		assert_int_equal(s->chunks_overwritten, 109);
		assert_int_equal(s->chunks_discarded, 110);
		assert_int_equal(s->chunks_read, 111);
		assert_int_equal(s->chunks_committed_out_of_order, 112);
		assert_int_equal(s->write_wrap_count, 113);
		assert_int_equal(s->patches_succeeded, 114);
		assert_int_equal(s->patches_failed, 115);
		assert_int_equal(s->readaheads_succeeded, 116);
		assert_int_equal(s->readaheads_failed, 117);
		assert_int_equal(s->abi_violations, 118);
		assert_int_equal(s->trace_writer_packet_loss, 119);
		s = m->buffer_stats[1];
		assert_int_equal(s->buffer_size, 4096);
		assert_true(s->has_chunks_overwritten); /* explicit zero */
		assert_false(s->has_chunks_relocated);	/* V2 only */
	}
	assert_int_equal(m->producers_connected, 2);
	assert_int_equal(m->producers_seen, 3);
	assert_int_equal(m->data_sources_registered, 4);
	assert_int_equal(m->data_sources_seen, 5);
	assert_int_equal(m->tracing_sessions, 6);
	assert_int_equal(m->total_buffers, 7);
	assert_int_equal(m->chunks_discarded, 8);
	assert_int_equal(m->patches_discarded, 9);
	assert_int_equal(m->invalid_packets, 10);
	assert_non_null(m->filter_stats);
	assert_int_equal(m->filter_stats->input_packets, 1);
	assert_int_equal(m->filter_stats->time_taken_ns, 5);
	assert_int_equal(m->filter_stats->n_bytes_discarded_per_buffer, 2);
	assert_int_equal(m->filter_stats->bytes_discarded_per_buffer[1], 22);
	assert_int_equal(m->flushes_requested, 12);
	assert_int_equal(m->flushes_succeeded, 13);
	assert_int_equal(m->flushes_failed, 14);
	assert_int_equal(m->final_flush_outcome, 2);
	assert_int_equal(m->n_chunk_payload_histogram_def, 10);
	assert_memory_equal(m->chunk_payload_histogram_def, svc_pkts_hist_def,
			    sizeof(svc_pkts_hist_def));
	assert_int_equal(m->chunk_payload_histogram_def[9], 16384);
	assert_int_equal(m->n_writer_stats, 2);
	assert_int_equal(m->writer_stats[1]->sequence_id, 5);
	assert_int_equal(m->writer_stats[1]->buffer, 1);
	assert_int_equal(m->writer_stats[0]->n_chunk_payload_histogram_counts, 11);
	assert_int_equal(m->writer_stats[0]->chunk_payload_histogram_counts[10], 10);
	assert_int_equal(m->writer_stats[0]->n_chunk_payload_histogram_sum, 11);
	assert_int_equal(m->writer_stats[0]->chunk_payload_histogram_sum[7], 7000);
	assert_int_equal(m->writer_stats[1]->chunk_payload_histogram_counts[0], 50);
	perfetto__protos__trace_stats__free_unpacked(m, NULL);

	/* Histograms off, no filter, outcome unspecified: fields absent. */
	in.histograms = false;
	in.filter = NULL;
	in.final_flush_outcome = 0;
	in.n_buffers = 0;
	in.buffers = NULL;
	assert_int_equal(svc_trace_stats_build(&ts, &in), 0);
	assert_int_equal(ts.msg.n_chunk_payload_histogram_def, 0);
	assert_int_equal(ts.msg.n_writer_stats, 0);
	assert_null(ts.msg.filter_stats);
	assert_false(ts.msg.has_final_flush_outcome);
	assert_int_equal(ts.msg.n_buffer_stats, 0);
	assert_true(ts.msg.has_chunks_discarded);
	svc_trace_stats_release(&ts);
	/* Histograms on with no writers: the definition alone. */
	in.histograms = true;
	in.n_writers = 0;
	assert_int_equal(svc_trace_stats_build(&ts, &in), 0);
	assert_int_equal(ts.msg.n_chunk_payload_histogram_def, 10);
	assert_int_equal(ts.msg.n_writer_stats, 0);
	svc_trace_stats_release(&ts);

	/* Bad input. */
	assert_int_equal(svc_trace_stats_build(&ts, NULL), -EINVAL);
	assert_int_equal(svc_trace_stats_build(NULL, &in), -EINVAL);
	in.n_buffers = 1;
	assert_int_equal(svc_trace_stats_build(&ts, &in), -EINVAL);
	in.n_buffers = 0;
	in.final_flush_outcome = 3;
	assert_int_equal(svc_trace_stats_build(&ts, &in), -EINVAL);
	in.final_flush_outcome = 0;
	in.n_writers = 1;
	in.writers = NULL;
	assert_int_equal(svc_trace_stats_build(&ts, &in), -EINVAL);
	svc_trace_stats_release(&ts);
}

/* Splits the v14 trace into packets (pointers into blob). */
static size_t split_trace(const struct blob *b, const uint8_t **pk,
			  size_t *len, size_t cap)
{
	const uint8_t *p = b->data, *end = b->data + b->len;
	size_t n = 0;

	while (p < end && n < cap) {
		struct spn_pb_field f;
		int r = spn_pb_next_field(p, end, &f);

		assert_true(r > 0);
		pk[n] = f.data;
		len[n++] = f.value;
		p += r;
	}
	return n;
}

/* Sorted set of top-level field numbers of a packet, as a bit mask of
 * (number % 64) plus a count: enough to compare layouts. */
static uint64_t field_set(const uint8_t *p, size_t len, uint32_t skip)
{
	const uint8_t *end = p + len;
	uint64_t m = 0;

	struct spn_pb_field f;
	int r;

	while (p < end && (r = spn_pb_next_field(p, end, &f)) > 0) {
		if (f.id != skip)
			m |= 1ull << (f.id % 64);
		p += r;
	}
	assert_ptr_equal(p, end);	/* every field decoded */
	return m;
}

/* Every optional scalar `want` has is present in `got` with the same value
 * (got may have more). */
static void assert_scalars_superset(const ProtobufCMessageDescriptor *d,
				    const void *want, const void *got)
{
	const char *wp = want, *gp = got;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *fd = &d->fields[i];
		size_t w = fd->type == PROTOBUF_C_TYPE_UINT32 ||
				   fd->type == PROTOBUF_C_TYPE_ENUM ? 4 : 8;

		if (fd->label != PROTOBUF_C_LABEL_OPTIONAL ||
		    fd->type == PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (!*(const protobuf_c_boolean *)(wp + fd->quantifier_offset))
			continue;
		if (!*(const protobuf_c_boolean *)(gp + fd->quantifier_offset))
			fail_msg("%s missing", fd->name);
		assert_memory_equal(wp + fd->offset, gp + fd->offset, w);
	}
}

/*
 * Our packets have the same top-level fields as Perfetto v14's service
 * packets (plus HEAD's timestamp_clock_id), and our TraceStats built from
 * v14's numbers decodes to v14's values.
 */
static void test_matches_v14(void **state)
{
	struct blob trace = read_blob(SESSION1 "/trace.pftrace");
	const uint8_t *pk[8192];
	size_t len[8192], n, i, ol;
	struct fake_clock fc;
	struct svc_pkts st;
	struct svc_pkts_out out = { 0 };
	struct svc_pkts_builtin b;
	Perfetto__Protos__TracePacket *v14;
	const uint8_t *ours;
	struct fill_ctx fx = { 0 };

	(void)state;
	n = split_trace(&trace, pk, len, 8192);
	assert_int_equal(n, 4050);

	/* v14 layout: 0 and 1 snapshots, 2 marker, 3 config, 4 system_info,
	 * 5.. events; last packet trace_stats. Ours, without uuid: */
	memset(&b, 0, sizeof(b));
	fake_init(&fc);
	{
		struct svc_pkts_config c;

		memset(&c, 0, sizeof(c));
		c.service_uid = 0;
		/* v14's config bytes, echoed verbatim. */
		v14 = perfetto__protos__trace_packet__unpack(NULL, len[3], pk[3]);
		assert_non_null(v14);
		assert_int_equal(v14->data_case, C_CFG);
		perfetto__protos__trace_packet__free_unpacked(v14, NULL);
		{
			const uint8_t *p = pk[3], *end = pk[3] + len[3];

			while (p < end) {
				struct spn_pb_field f;
				int r = spn_pb_next_field(p, end, &f);

				assert_true(r > 0);
				if (f.id == 33) {
					c.trace_config = f.data;
					c.trace_config_len = f.value;
				}
				p += r;
			}
		}
		c.uuid_msb = 1;
		c.clock = fake_read;
		c.clock_ctx = &fc;
		assert_int_equal(svc_pkts_init(&st, &c), 0);
	}
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_STARTED, 0), 0);
	assert_int_equal(svc_pkts_periodic(&st), 1);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_STARTED, 0), 0);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_ALL_DATA_SOURCES_FLUSHED, 0), 0);
	assert_int_equal(svc_pkts_record_event(&st, SVC_EV_TRACING_DISABLED, 0), 0);
	assert_true(svc_pkts_prologue(&st, &out, NULL) > 0);

	/* Packet by packet: ours (skipping our uuid at 4) vs v14's. */
	{
		static const size_t ours_idx[] = { 0, 1, 2, 3, 5, 6, 7, 8, 9 };
		static const size_t v14_idx[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };

		for (i = 0; i < 9; i++) {
			uint64_t a, w;

			ours = raw_packet(&out, ours_idx[i], &ol);
			a = field_set(ours, ol, 58);
			w = field_set(pk[v14_idx[i]], len[v14_idx[i]], 0);
			if (a != w)
				fail_msg("packet %zu: fields %#llx, v14 %#llx", i,
					 (unsigned long long)a,
					 (unsigned long long)w);
		}
		/* The sync marker and config echo are byte-identical. */
		ours = raw_packet(&out, 2, &ol);
		assert_int_equal(ol, len[2]);
		assert_memory_equal(ours, pk[2], ol);
		ours = raw_packet(&out, 3, &ol);
		assert_int_equal(field33_len(ours, ol), field33_len(pk[3], len[3]));
		assert_memory_equal(field33(ours, ol), field33(pk[3], len[3]),
				    field33_len(pk[3], len[3]));
	}
	/* Event kinds in v14's order: started, all started, flushed, disabled. */
	{
		Perfetto__Protos__Trace *t = decode(&out);

		for (i = 0; i < 4; i++) {
			v14 = perfetto__protos__trace_packet__unpack(NULL, len[5 + i], pk[5 + i]);
			assert_non_null(v14);
			assert_int_equal(event_case(t, 6 + i, NULL),
					 v14->service_event->event_type_case);
			perfetto__protos__trace_packet__free_unpacked(v14, NULL);
		}
		/* Snapshot clock order as v14's. */
		v14 = perfetto__protos__trace_packet__unpack(NULL, len[0], pk[0]);
		assert_non_null(v14);
		for (i = 0; i < 6; i++)
			assert_int_equal(t->packet[0]->clock_snapshot->clocks[i]->clock_id,
					 v14->clock_snapshot->clocks[i]->clock_id);
		assert_int_equal(t->packet[0]->clock_snapshot->primary_trace_clock,
				 v14->clock_snapshot->primary_trace_clock);
		perfetto__protos__trace_packet__free_unpacked(v14, NULL);
		perfetto__protos__trace__free_unpacked(t, NULL);
	}

	/* read_tracing_buffers_completed + trace_stats like v14's tail. */
	out.len = 0;
	assert_int_equal(svc_pkts_epilogue(&st, &out, true, fill_stats, &fx), 2);
	ours = raw_packet(&out, 0, &ol);
	assert_int_equal(field_set(ours, ol, 58), field_set(pk[4048], len[4048], 0));
	ours = raw_packet(&out, 1, &ol);
	assert_int_equal(field_set(ours, ol, 58), field_set(pk[4049], len[4049], 0));
	svc_pkts_out_free(&out);
	svc_pkts_destroy(&st);

	/* v14's TraceStats numbers through our builder: same values. */
	v14 = perfetto__protos__trace_packet__unpack(NULL, len[4049], pk[4049]);
	assert_non_null(v14);
	assert_int_equal(v14->data_case, C_STATS);
	{
		const Perfetto__Protos__TraceStats *w = v14->trace_stats;
		const Perfetto__Protos__TraceStats__BufferStats *wb = w->buffer_stats[0];
		struct svc_stats_buffer sb = {
			.buffer_size = wb->buffer_size,
			.bytes_written = wb->bytes_written,
			.bytes_read = wb->bytes_read,
			.chunks_written = wb->chunks_written,
			.chunks_read = wb->chunks_read,
			.patches_succeeded = wb->patches_succeeded,
			.readaheads_succeeded = wb->readaheads_succeeded,
		};
		struct svc_stats_input in = {
			.buffers = &sb, .n_buffers = 1,
			.producers_connected = w->producers_connected,
			.producers_seen = w->producers_seen,
			.data_sources_registered = w->data_sources_registered,
			.data_sources_seen = w->data_sources_seen,
			.tracing_sessions = w->tracing_sessions,
			.total_buffers = w->total_buffers,
		};
		struct svc_trace_stats ts;
		uint8_t buf[512];
		size_t sz;
		Perfetto__Protos__TraceStats *m;
		const ProtobufCMessageDescriptor *d =
			&perfetto__protos__trace_stats__descriptor;

		assert_int_equal(svc_trace_stats_build(&ts, &in), 0);
		sz = perfetto__protos__trace_stats__pack(&ts.msg, buf);
		svc_trace_stats_release(&ts);
		m = perfetto__protos__trace_stats__unpack(NULL, sz, buf);
		assert_non_null(m);
		/* Every scalar v14 wrote is present with the same value. */
		assert_scalars_superset(d, w, m);
		assert_int_equal(m->n_buffer_stats, 1);
		assert_scalars_superset(
			&perfetto__protos__trace_stats__buffer_stats__descriptor,
			wb, m->buffer_stats[0]);
		assert_int_equal(m->buffer_stats[0]->bytes_written, 139264);
		assert_int_equal(m->buffer_stats[0]->readaheads_succeeded, 23);
		assert_int_equal(m->buffer_stats[0]->patches_succeeded, 27);
		assert_int_equal(m->buffer_stats[0]->buffer_size, 1048576);
		perfetto__protos__trace_stats__free_unpacked(m, NULL);
	}
	perfetto__protos__trace_packet__free_unpacked(v14, NULL);
	free(trace.data);
}

/* ---- allocation failures (SQLite style: fail the N-th) ---- */

static int g_alloc_count, g_alloc_fail_at;

static bool alloc_fails(void)
{
	return ++g_alloc_count == g_alloc_fail_at;
}

static void *h_malloc(size_t n) { return alloc_fails() ? NULL : malloc(n); }
static void *h_calloc(size_t n, size_t s) { return alloc_fails() ? NULL : calloc(n, s); }
static void *h_realloc(void *p, size_t n) { return alloc_fails() ? NULL : realloc(p, n); }

static const struct svc_mem_hooks g_hooks = {
	.malloc = h_malloc, .calloc = h_calloc, .realloc = h_realloc,
};

/* Records a full set of items into *st (may fail under the hooks).
 * Returns 0 when every step succeeded. */
static int fill_state(struct svc_pkts *st, struct fake_clock *fc)
{
	struct svc_pkts_ds_name ds[2] = { { "p", "a" }, { "p", "b" } };
	struct svc_pkts_config c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.service_uid = UID;
	c.trace_config = g_cfg;
	c.trace_config_len = g_cfg_len;
	c.uuid_msb = 9;
	c.clock = fake_read;
	c.clock_ctx = fc;
	rc = svc_pkts_init(st, &c);
	if (rc)
		return rc;
	if (svc_pkts_record_event(st, SVC_EV_TRACING_STARTED, 0) ||
	    svc_pkts_periodic(st) < 0)
		return -EIO;
	rc = svc_pkts_record_trigger(st, "trig", "prod", 3, 4);
	if (rc == 0)
		rc = svc_pkts_record_trigger(st, "trig2", "prod", 3, 4);
	if (rc == 0)
		rc = svc_pkts_set_clone_trigger(st, 1, "c", "p", 3, 4);
	if (rc == 0)
		rc = svc_pkts_record_slow(st, SVC_EV_SLOW_STARTING_DATA_SOURCES, ds, 2);
	if (rc == 0)
		rc = svc_pkts_record_slow(st, SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES, ds, 2);
	return rc;
}

/* Provenance used by the allocation-failure runs. */
static const struct svc_pkts_prov_seq g_s0[] = { { 2, 1 } };
static const struct svc_pkts_prov_buffer g_bufs[1] = { { g_s0, 1 } };
static const struct svc_pkts_provenance g_prov = { g_bufs, 1 };

/*
 * Prologue then epilogue (with stats), the hooks installed for both. A
 * stage that fails must leave out as it was; it is then retried without
 * hooks. Returns whether any stage failed.
 */
static bool emit_all(struct svc_pkts *st, struct svc_pkts_out *out, bool hooks)
{
	struct fill_ctx fx = { 0 };
	bool failed = false;
	size_t before = out->len;
	int rc;

	if (hooks)
		svc_mem_set_hooks(&g_hooks);
	rc = svc_pkts_prologue(st, out, &g_prov);
	svc_mem_set_hooks(NULL);
	if (rc < 0) {
		assert_int_equal(rc, -ENOMEM);
		assert_int_equal(out->len, before);
		failed = true;
		assert_true(svc_pkts_prologue(st, out, &g_prov) > 0);
	}
	before = out->len;
	if (hooks)
		svc_mem_set_hooks(&g_hooks);
	rc = svc_pkts_epilogue(st, out, true, fill_stats, &fx);
	svc_mem_set_hooks(NULL);
	if (rc < 0) {
		assert_int_equal(rc, -ENOMEM);
		assert_int_equal(out->len, before);
		assert_true(svc_pkts_stats_due(st));
		failed = true;
		assert_int_equal(svc_pkts_epilogue(st, out, true, fill_stats, &fx), 2);
	}
	assert_false(svc_pkts_stats_due(st));
	return failed;
}

/* Builds a stats message with writers and a filter (for OOM runs). */
static int build_big_stats(struct svc_trace_stats *ts)
{
	struct svc_stats_buffer b[3] = { { .buffer_size = 1 } };
	struct svc_stats_writer w[3] = { { .sequence_id = 2 } };
	uint64_t disc[1] = { 5 };
	struct svc_stats_filter f = { .bytes_discarded_per_buffer = disc,
				      .n_discarded = 1 };
	struct svc_stats_input in = { .buffers = b, .n_buffers = 3,
				      .writers = w, .n_writers = 3,
				      .filter = &f, .histograms = true };

	return svc_trace_stats_build(ts, &in);
}

static void test_alloc_failures(void **state)
{
	struct fake_clock fc;
	struct svc_pkts st, ref;
	struct svc_pkts_out out = { 0 }, ref_out = { 0 };
	int fail_at, rc;
	bool done = false;

	(void)state;
	g_cfg_len = make_config(g_cfg, sizeof(g_cfg));

	/* Reference output without failures. */
	fake_init(&fc);
	assert_int_equal(fill_state(&ref, &fc), 0);
	assert_false(emit_all(&ref, &ref_out, false));
	svc_pkts_destroy(&ref);

	/* Setting up: each failure is reported, nothing leaks (ASan). */
	for (fail_at = 1; !done; fail_at++) {
		fake_init(&fc);
		g_alloc_count = 0;
		g_alloc_fail_at = fail_at;
		svc_mem_set_hooks(&g_hooks);
		memset(&st, 0, sizeof(st));
		rc = fill_state(&st, &fc);
		svc_mem_set_hooks(NULL);
		if (rc == 0)
			done = true;
		else
			assert_int_equal(rc, -ENOMEM);
		svc_pkts_destroy(&st);
		assert_true(fail_at < 100);
	}

	/* Emitting: a failure leaves out and the state as they were, and a
	 * retry produces exactly the reference bytes. */
	done = false;
	for (fail_at = 1; !done; fail_at++) {
		fake_init(&fc);
		assert_int_equal(fill_state(&st, &fc), 0);
		g_alloc_count = 0;
		g_alloc_fail_at = fail_at;
		done = !emit_all(&st, &out, true);
		assert_int_equal(out.len, ref_out.len);
		assert_memory_equal(out.data, ref_out.data, out.len);
		svc_pkts_out_free(&out);
		svc_pkts_destroy(&st);
		assert_true(fail_at < 100);
	}

	/* The stats builder. */
	done = false;
	for (fail_at = 1; !done; fail_at++) {
		struct svc_trace_stats ts;

		g_alloc_count = 0;
		g_alloc_fail_at = fail_at;
		svc_mem_set_hooks(&g_hooks);
		rc = build_big_stats(&ts);
		svc_mem_set_hooks(NULL);
		if (rc == 0) {
			done = true;
			assert_int_equal(ts.msg.n_writer_stats, 3);
		} else {
			assert_int_equal(rc, -ENOMEM);
			assert_int_equal(ts.msg.n_buffer_stats, 0);
		}
		svc_trace_stats_release(&ts);
		assert_true(fail_at < 100);
	}
	svc_pkts_out_free(&ref_out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_batch_layout),
		cmocka_unit_test(test_epilogue_stats_due),
		cmocka_unit_test(test_drift_rule),
		cmocka_unit_test(test_clock_failures),
		cmocka_unit_test(test_default_clocks),
		cmocka_unit_test(test_history_limits),
		cmocka_unit_test(test_slow_events),
		cmocka_unit_test(test_disable_flags),
		cmocka_unit_test(test_builtin_from_config),
		cmocka_unit_test(test_uuid_and_args),
		cmocka_unit_test(test_trigger_limit),
		cmocka_unit_test(test_provenance),
		cmocka_unit_test(test_stats_builder),
		cmocka_unit_test(test_matches_v14),
		cmocka_unit_test(test_alloc_failures),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
