// SPDX-License-Identifier: Apache-2.0
// Tests of the generated trace and config code of proto/: the
// track-event.md §10 examples and real Perfetto v14 traces decode to the
// values the specs state, repeated fields use the right (un)packed encoding,
// and DataSourceConfig survives decode + re-encode.
#include "proto_test_util.h"

#include "consumer_port.pb-c.h"
#include "trace_packet.pb-c.h"

static struct blob read_track_event_file(const char *name)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/track_event/%s", SPN_TESTDATA_DIR,
		 name);
	return read_blob(path);
}

/* ---- track-event.md §10: the example and the variant ---- */

static Perfetto__Protos__TracePacket *unpack_packet(const uint8_t *b, size_t n)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, n, b);

	assert_non_null(p);
	assert_int_equal(count_unknown(&p->base), 0);
	return p;
}

/* Checks P1..P5 of §10.1 (index 0..4) or Q1..Q4 of §10.3 (5..8). */
static void check_example_packet(int which,
				 const Perfetto__Protos__TracePacket *p)
{
	const Perfetto__Protos__TrackDescriptor *td = p->track_descriptor;
	const Perfetto__Protos__TrackEvent *te = p->track_event;

	assert_int_equal(p->optional_trusted_packet_sequence_id_case,
			 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID);
	assert_int_equal(p->trusted_packet_sequence_id, 42);
	assert_true(p->has_timestamp == (which != 5));
	assert_int_equal(p->optional_trusted_uid_case,
			 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_UID__NOT_SET);

	switch (which) {
	case 0: /* P1: thread track descriptor, first packet */
	case 6: /* Q2: same descriptor, incremental timestamp 0 */
		assert_int_equal(p->timestamp, which == 0 ? 1000 : 0);
		if (which == 0) {
			assert_true(p->has_first_packet_on_sequence &&
				    p->first_packet_on_sequence);
			assert_false(p->has_sequence_flags);
		} else {
			assert_int_equal(p->sequence_flags, 2);
		}
		assert_int_equal(p->data_case,
				 PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR);
		assert_int_equal(td->uuid, 100);
		assert_false(td->has_parent_uuid);
		assert_non_null(td->thread);
		assert_int_equal(td->thread->pid, 1234);
		assert_int_equal(td->thread->tid, 1235);
		assert_str(td->thread->thread_name, "main");
		assert_null(td->process);
		assert_null(td->counter);
		break;
	case 1: /* P2: counter track descriptor */
		assert_int_equal(p->timestamp, 1000);
		assert_int_equal(p->data_case,
				 PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR);
		assert_int_equal(td->uuid, 200);
		assert_true(td->has_parent_uuid);
		assert_int_equal(td->parent_uuid, 100);
		assert_int_equal(td->static_or_dynamic_name_case,
				 PERFETTO__PROTOS__TRACK_DESCRIPTOR__STATIC_OR_DYNAMIC_NAME_NAME);
		assert_str(td->name, "queue_depth");
		assert_non_null(td->counter); /* empty but present */
		assert_false(td->counter->has_type);
		assert_null(td->thread);
		break;
	case 2: { /* P3: clear + interned data + slice begin */
		const Perfetto__Protos__InternedData *in = p->interned_data;

		assert_int_equal(p->timestamp, 2000);
		assert_int_equal(p->sequence_flags, 3);
		assert_non_null(in);
		assert_int_equal(in->n_event_categories, 1);
		assert_int_equal(in->event_categories[0]->iid, 1);
		assert_str(in->event_categories[0]->name, "app");
		assert_int_equal(in->n_event_names, 1);
		assert_int_equal(in->event_names[0]->iid, 1);
		assert_str(in->event_names[0]->name, "DoWork");
		assert_int_equal(p->data_case,
				 PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT);
		assert_int_equal(te->type,
				 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN);
		assert_int_equal(te->track_uuid, 100);
		assert_int_equal(te->n_category_iids, 1);
		assert_int_equal(te->category_iids[0], 1);
		assert_int_equal(te->name_field_case,
				 PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD_NAME_IID);
		assert_int_equal(te->name_iid, 1);
		assert_int_equal(te->n_debug_annotations, 1);
		assert_int_equal(te->debug_annotations[0]->name_field_case,
				 PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME);
		assert_str(te->debug_annotations[0]->name, "items");
		assert_int_equal(te->debug_annotations[0]->value_case,
				 PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_INT_VALUE);
		assert_int_equal(te->debug_annotations[0]->int_value, 3);
		break;
	}
	case 3: /* P4: counter value */
		assert_int_equal(p->timestamp, 2500);
		assert_int_equal(p->sequence_flags, 2);
		assert_int_equal(te->type,
				 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_COUNTER);
		assert_int_equal(te->track_uuid, 200);
		assert_int_equal(te->counter_value_field_case,
				 PERFETTO__PROTOS__TRACK_EVENT__COUNTER_VALUE_FIELD_COUNTER_VALUE);
		assert_int_equal(te->counter_value, 7);
		break;
	case 4: /* P5: slice end */
		assert_int_equal(p->timestamp, 3000);
		assert_int_equal(p->sequence_flags, 2);
		assert_int_equal(te->type,
				 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_END);
		assert_int_equal(te->track_uuid, 100);
		assert_int_equal(te->name_field_case,
				 PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD__NOT_SET);
		assert_int_equal(te->n_category_iids, 0);
		break;
	case 5: { /* Q1: defaults + incremental clock snapshot */
		const Perfetto__Protos__ClockSnapshot *cs = p->clock_snapshot;

		assert_true(p->first_packet_on_sequence);
		assert_int_equal(p->sequence_flags, 1);
		assert_non_null(p->trace_packet_defaults);
		assert_int_equal(p->trace_packet_defaults->timestamp_clock_id, 64);
		assert_non_null(p->trace_packet_defaults->track_event_defaults);
		assert_int_equal(p->trace_packet_defaults->track_event_defaults
					 ->track_uuid, 100);
		assert_int_equal(p->data_case,
				 PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT);
		assert_int_equal(cs->n_clocks, 2);
		assert_int_equal(cs->clocks[0]->clock_id,
				 PERFETTO__PROTOS__BUILTIN_CLOCK__BUILTIN_CLOCK_BOOTTIME);
		assert_int_equal(cs->clocks[0]->timestamp, 1000000);
		assert_false(cs->clocks[0]->has_is_incremental);
		assert_int_equal(cs->clocks[1]->clock_id, 64);
		assert_int_equal(cs->clocks[1]->timestamp, 1000000);
		assert_true(cs->clocks[1]->has_is_incremental &&
			    cs->clocks[1]->is_incremental);
		break;
	}
	case 7: /* Q3: interned name, default track */
		assert_int_equal(p->timestamp, 500);
		assert_int_equal(p->sequence_flags, 2);
		assert_int_equal(p->interned_data->n_event_names, 1);
		assert_int_equal(p->interned_data->event_names[0]->iid, 1);
		assert_str(p->interned_data->event_names[0]->name, "DoWork");
		assert_int_equal(te->type,
				 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN);
		assert_false(te->has_track_uuid);
		assert_int_equal(te->name_iid, 1);
		break;
	case 8: /* Q4: slice end on the default track */
		assert_int_equal(p->timestamp, 1000);
		assert_int_equal(p->sequence_flags, 2);
		assert_int_equal(te->type,
				 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_END);
		assert_false(te->has_track_uuid);
		break;
	default:
		fail();
	}
}

static void test_example_packet_files(void **state)
{
	static const char *const files[] = { "p1.bin", "p2.bin", "p3.bin",
					     "p4.bin", "p5.bin", "q1.bin",
					     "q2.bin", "q3.bin", "q4.bin" };
	(void)state;

	for (int i = 0; i < 9; i++) {
		struct blob b = read_track_event_file(files[i]);
		Perfetto__Protos__TracePacket *p = unpack_packet(b.data, b.len);

		check_example_packet(i, p);
		perfetto__protos__trace_packet__free_unpacked(p, NULL);
		free(b.data);
	}
}

static void test_example_trace_files(void **state)
{
	(void)state;

	for (int v = 0; v < 2; v++) {
		struct blob b = read_track_event_file(v ? "variant.pftrace"
						       : "example.pftrace");
		Perfetto__Protos__Trace *t =
			perfetto__protos__trace__unpack(NULL, b.len, b.data);

		assert_non_null(t);
		assert_int_equal(count_unknown(&t->base), 0);
		if (v == 0)
			assert_int_equal(b.len, 146);
		assert_int_equal(t->n_packet, v ? 4 : 5);
		for (size_t i = 0; i < t->n_packet; i++)
			check_example_packet((int)i + (v ? 5 : 0), t->packet[i]);
		perfetto__protos__trace__free_unpacked(t, NULL);
		free(b.data);
	}
}

/* §10.4 snippets whose fields are in ascending number order re-encode exactly. */
static void test_track_event_snippets(void **state)
{
	static const uint8_t instant[] = { 0x48, 0x03, 0x58, 0x64, 0xBA, 0x01,
					   0x04, 'M',  'a',  'r',  'k',  0xF9,
					   0x02, 0x34, 0x12, 0,    0,    0,
					   0,    0,    0 };
	static const uint8_t counter[] = { 0x48, 0x04, 0x58, 0xC8, 0x01,
					   0xE1, 0x02, 0,    0,    0,
					   0,    0,    0,    0xF8, 0x3F };
	static const uint8_t handle[] = {
		0x48, 0x01, 0x58, 0xAC, 0x02, 0xBA, 0x01, 0x06, 'H', 'a',
		'n',  'd',  'l',  'e',  0x81, 0x03, 0x34, 0x12, 0,   0,
		0,    0,    0,    0,    0x22, 0x0A, 0x08, 0x01, 0x5A, 0x06,
		0x52, 0x01, 'k',  0x32, 0x01, 'v'
	};
	Perfetto__Protos__TrackEvent ev = PERFETTO__PROTOS__TRACK_EVENT__INIT;
	uint64_t flow = 0x1234, cats[2] = { 1, 2 };
	uint8_t *out;
	size_t n;
	(void)state;

	ev.has_type = 1;
	ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_INSTANT;
	ev.has_track_uuid = 1;
	ev.track_uuid = 100;
	ev.name_field_case = PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD_NAME;
	ev.name = "Mark";
	ev.n_flow_ids = 1;
	ev.flow_ids = &flow;
	out = pack(&ev.base, &n);
	assert_int_equal(n, sizeof(instant));
	assert_memory_equal(out, instant, n);
	free(out);

	ev = (Perfetto__Protos__TrackEvent)PERFETTO__PROTOS__TRACK_EVENT__INIT;
	ev.has_type = 1;
	ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_COUNTER;
	ev.has_track_uuid = 1;
	ev.track_uuid = 200;
	ev.counter_value_field_case =
		PERFETTO__PROTOS__TRACK_EVENT__COUNTER_VALUE_FIELD_DOUBLE_COUNTER_VALUE;
	ev.double_counter_value = 1.5;
	out = pack(&ev.base, &n);
	assert_int_equal(n, sizeof(counter));
	assert_memory_equal(out, counter, n);
	free(out);

	/* Repeated scalars are unpacked: one key per element. */
	ev = (Perfetto__Protos__TrackEvent)PERFETTO__PROTOS__TRACK_EVENT__INIT;
	ev.n_category_iids = 2;
	ev.category_iids = cats;
	out = pack(&ev.base, &n);
	assert_int_equal(n, 4);
	assert_memory_equal(out, ((uint8_t[]){ 0x18, 0x01, 0x18, 0x02 }), 4);
	free(out);

	/* The third snippet puts field 4 last, so check it by decoding. */
	Perfetto__Protos__TrackEvent *te =
		perfetto__protos__track_event__unpack(NULL, sizeof(handle),
						      handle);
	assert_non_null(te);
	assert_int_equal(count_unknown(&te->base), 0);
	assert_int_equal(te->type,
			 PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN);
	assert_int_equal(te->track_uuid, 300);
	assert_str(te->name, "Handle");
	assert_int_equal(te->n_terminating_flow_ids, 1);
	assert_int_equal(te->terminating_flow_ids[0], 0x1234);
	assert_int_equal(te->n_debug_annotations, 1);
	const Perfetto__Protos__DebugAnnotation *da = te->debug_annotations[0];
	assert_int_equal(da->name_iid, 1);
	assert_int_equal(da->n_dict_entries, 1);
	assert_str(da->dict_entries[0]->name, "k");
	assert_str(da->dict_entries[0]->string_value, "v");
	perfetto__protos__track_event__free_unpacked(te, NULL);
}

/* TraceStats.WriterStats histograms are the only packed repeated fields. */
static void test_packed_fields(void **state)
{
	Perfetto__Protos__TraceStats__WriterStats ws =
		PERFETTO__PROTOS__TRACE_STATS__WRITER_STATS__INIT;
	Perfetto__Protos__FreeBuffersRequest fb =
		PERFETTO__PROTOS__FREE_BUFFERS_REQUEST__INIT;
	uint64_t counts[3] = { 1, 2, 300 };
	uint32_t ids[2] = { 1, 2 };
	uint8_t *out;
	size_t n;
	(void)state;

	ws.n_chunk_payload_histogram_counts = 3;
	ws.chunk_payload_histogram_counts = counts;
	out = pack(&ws.base, &n);
	assert_int_equal(n, 6);
	assert_memory_equal(out, ((uint8_t[]){ 0x12, 0x04, 0x01, 0x02, 0xAC,
					       0x02 }),
			    6);
	free(out);

	fb.n_buffer_ids = 2;
	fb.buffer_ids = ids;
	out = pack(&fb.base, &n);
	assert_int_equal(n, 4);
	assert_memory_equal(out, ((uint8_t[]){ 0x08, 0x01, 0x08, 0x02 }), 4);
	free(out);
}

/* ---- session1/trace.pftrace and sample_trace_2threads.pftrace ---- */

/* Counts per trace, filled by scan_trace(). */
struct trace_counts {
	size_t packets;       /* TracePackets */
	size_t track_events;  /* packets with a track_event */
	size_t by_type[6];    /* track events per TrackEvent.Type */
	size_t service;       /* packets on sequence 1 */
	size_t unknown;       /* unknown fields in all packets */
	size_t counters[8];   /* counter events per sequence id */
	int64_t first_counter[8]; /* first counter value per sequence id */
	int64_t last_counter[8];  /* last counter value per sequence id */
	int counter_gaps;     /* values not one more than the previous one */
};

static void scan_trace(const Perfetto__Protos__Trace *t,
		       struct trace_counts *c)
{
	memset(c, 0, sizeof(*c));
	c->packets = t->n_packet;
	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *p = t->packet[i];
		uint32_t seq = p->trusted_packet_sequence_id;

		c->unknown += count_unknown(&p->base);
		assert_int_equal(p->optional_trusted_packet_sequence_id_case,
				 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID);
		assert_int_equal(p->optional_trusted_uid_case,
				 PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_UID_TRUSTED_UID);
		if (seq == 1)
			c->service++;
		if (p->data_case !=
		    PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT)
			continue;
		c->track_events++;
		assert_true(p->has_timestamp);
		assert_true(p->track_event->type < 6);
		c->by_type[p->track_event->type]++;
		if (p->track_event->type ==
		    PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_COUNTER) {
			int64_t v = p->track_event->counter_value;

			assert_true(seq < 8);
			if (c->counters[seq]++ == 0)
				c->first_counter[seq] = v;
			else if (v != c->last_counter[seq] + 1)
				c->counter_gaps++;
			c->last_counter[seq] = v;
		}
	}
}

static const uint8_t sync_marker[16] = { 0x82, 0x47, 0x7a, 0x76, 0xb2, 0x8d,
					 0x42, 0xba, 0x81, 0xdc, 0x33, 0x32,
					 0x6d, 0x57, 0xa0, 0x79 };

/* Checks the service-written and descriptor packets of session1. */
static void check_session1_details(const Perfetto__Protos__Trace *t)
{
	int snapshots = 0, markers = 0, configs = 0, stats = 0, infos = 0;
	int events = 0, threads = 0, interned = 0;

	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *p = t->packet[i];

		assert_int_equal(p->trusted_uid, 0);
		switch (p->data_case) {
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT:
			snapshots++;
			assert_int_equal(p->clock_snapshot->primary_trace_clock,
					 PERFETTO__PROTOS__BUILTIN_CLOCK__BUILTIN_CLOCK_BOOTTIME);
			assert_int_equal(p->clock_snapshot->n_clocks, 6);
			assert_int_equal(p->clock_snapshot->clocks[0]->clock_id, 6);
			assert_int_equal(p->clock_snapshot->clocks[5]->clock_id, 5);
			break;
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_SYNCHRONIZATION_MARKER:
			markers++;
			assert_int_equal(p->synchronization_marker.len, 16);
			assert_memory_equal(p->synchronization_marker.data,
					    sync_marker, 16);
			break;
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG: {
			const Perfetto__Protos__TraceConfig *tc = p->trace_config;

			configs++;
			assert_int_equal(tc->n_buffers, 1);
			assert_int_equal(tc->buffers[0]->size_kb, 1024);
			assert_int_equal(tc->buffers[0]->fill_policy,
					 PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__RING_BUFFER);
			assert_int_equal(tc->n_data_sources, 1);
			assert_str(tc->data_sources[0]->config->name,
				   "track_event");
			assert_true(tc->data_sources[0]->config->has_target_buffer);
			assert_int_equal(tc->data_sources[0]->config->target_buffer, 0);
			assert_int_equal(tc->duration_ms, 1500);
			break;
		}
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS: {
			const Perfetto__Protos__TraceStats *ts = p->trace_stats;

			stats++;
			assert_int_equal(ts->n_buffer_stats, 1);
			assert_int_equal(ts->buffer_stats[0]->bytes_written, 139264);
			assert_int_equal(ts->buffer_stats[0]->chunks_written, 34);
			assert_int_equal(ts->buffer_stats[0]->patches_succeeded, 27);
			assert_int_equal(ts->buffer_stats[0]->readaheads_succeeded, 23);
			assert_int_equal(ts->buffer_stats[0]->buffer_size, 1048576);
			assert_int_equal(ts->buffer_stats[0]->chunks_read, 34);
			assert_int_equal(ts->producers_connected, 2);
			assert_int_equal(ts->data_sources_registered, 1);
			assert_int_equal(ts->tracing_sessions, 1);
			assert_true(ts->has_invalid_packets);
			assert_int_equal(ts->invalid_packets, 0);
			break;
		}
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_SYSTEM_INFO:
			infos++;
			assert_str(p->system_info->utsname->sysname, "Linux");
			assert_str(p->system_info->utsname->machine, "x86_64");
			break;
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT:
			events++;
			assert_int_equal(p->trusted_packet_sequence_id, 1);
			assert_true(p->service_event->event_type_case !=
				    PERFETTO__PROTOS__TRACING_SERVICE_EVENT__EVENT_TYPE__NOT_SET);
			break;
		case PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR:
			if (p->track_descriptor->thread != NULL) {
				threads++;
				assert_int_equal(p->track_descriptor->thread->pid,
						 26078);
				assert_int_equal(p->track_descriptor->thread->tid,
						 26082);
				assert_str(p->track_descriptor->thread->thread_name,
					   "example_produce");
				assert_int_equal(p->track_descriptor->uuid,
						 16738371616900130274ull);
				assert_int_equal(p->track_descriptor->parent_uuid,
						 16738371616900136960ull);
			} else {
				assert_str(p->track_descriptor->name, "counter");
				assert_non_null(p->track_descriptor->counter);
			}
			break;
		default:
			break;
		}
		if (p->interned_data != NULL) {
			const Perfetto__Protos__InternedData *in = p->interned_data;

			interned++;
			assert_str(in->event_categories[0]->name, "bench");
			assert_str(in->event_names[0]->name, "slice");
			assert_str(in->debug_annotation_names[0]->name, "payload");
		}
		if (p->trace_packet_defaults != NULL) {
			assert_int_equal(p->previous_packet_dropped, 1);
			assert_int_equal(p->sequence_flags, 1);
			assert_int_equal(p->trace_packet_defaults->timestamp_clock_id,
					 6);
			assert_int_equal(p->trace_packet_defaults
						 ->track_event_defaults->track_uuid,
					 16738371616900130274ull);
		}
	}
	assert_int_equal(snapshots, 2);
	assert_int_equal(markers, 1);
	assert_int_equal(configs, 1);
	assert_int_equal(stats, 1);
	assert_int_equal(infos, 1);
	assert_int_equal(events, 9);
	assert_int_equal(threads, 1);
	assert_int_equal(interned, 1);
}

static void test_session1_trace(void **state)
{
	struct blob b = read_blob(SESSION1 "/trace.pftrace");
	Perfetto__Protos__Trace *t;
	struct trace_counts c;
	(void)state;

	t = perfetto__protos__trace__unpack(NULL, b.len, b.data);
	assert_non_null(t);
	scan_trace(t, &c);
	assert_int_equal(c.packets, 4050);
	assert_int_equal(c.track_events, 4032);
	assert_int_equal(c.by_type[1], 1344);
	assert_int_equal(c.by_type[2], 1344);
	assert_int_equal(c.by_type[4], 1344);
	assert_int_equal(c.counters[2], 1344);
	assert_int_equal(c.first_counter[2], 0);
	assert_int_equal(c.last_counter[2], 1343);
	assert_int_equal(c.counter_gaps, 0);
	assert_int_equal(c.service, 4050 - 4032 - 3);
	assert_int_equal(c.unknown, 0);
	check_session1_details(t);
	perfetto__protos__trace__free_unpacked(t, NULL);
	free(b.data);
}

static void test_sample_trace_2threads(void **state)
{
	struct blob b = read_blob(SPN_TESTDATA_DIR
				  "/perfetto_v14/sample_trace_2threads.pftrace");
	Perfetto__Protos__Trace *t;
	struct trace_counts c;
	(void)state;

	t = perfetto__protos__trace__unpack(NULL, b.len, b.data);
	assert_non_null(t);
	scan_trace(t, &c);
	assert_int_equal(c.track_events, 3840);
	assert_int_equal(c.by_type[4], 1280);
	assert_int_equal(c.counter_gaps, 0);
	assert_int_equal(c.unknown, 0);
	/* One writer per thread, 640 consecutive values each; the second
	 * thread's values start at 2^40. */
	assert_int_equal(c.counters[2], 640);
	assert_int_equal(c.first_counter[2], 0);
	assert_int_equal(c.counters[3], 640);
	assert_int_equal(c.first_counter[3], 1ll << 40);
	assert_int_equal(c.last_counter[3], (1ll << 40) + 639);
	perfetto__protos__trace__free_unpacked(t, NULL);
	free(b.data);
}

/* ---- DataSourceConfig pass-through ---- */

/* Appends a key for (number, wire type). */
static void put_key(struct blob *b, uint32_t number, int wt)
{
	uint64_t v = (uint64_t)number << 3 | (uint64_t)wt;
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	append(b, tmp, n);
}

static void put_varint(struct blob *b, uint32_t number, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	put_key(b, number, 0);
	do {
		tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	append(b, tmp, n);
}

static void put_bytes(struct blob *b, uint32_t number, const void *data,
		      size_t len)
{
	assert_true(len < 128);
	put_key(b, number, 2);
	append(b, (uint8_t[]){ (uint8_t)len }, 1);
	append(b, data, len);
}

static void put_fixed(struct blob *b, uint32_t number, uint64_t v, int w)
{
	uint8_t tmp[8];

	put_key(b, number, w == 8 ? 1 : 5);
	for (int i = 0; i < w; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	append(b, tmp, (size_t)w);
}

/* Opaque sub-config payloads, deliberately not canonical inside. */
static const uint8_t ftrace_cfg[] = { 0x0a, 0x85, 0x80, 0x80, 0x00, 's',
				      'c',  'h',  'e',  'd',  0xf8, 0x7f,
				      0x01, 0x99 };
static const uint8_t te_cfg[] = { 0x12, 0x01, '*', 0x1a, 0x04, 's', 'l',
				  'o',  'w',  0x28, 0x01, 0x30, 0x0a };

/* Declared fields of every kind, in ascending number order. */
static void put_known_fields(struct blob *b, int with_gaps)
{
	put_bytes(b, 1, "track_event", 11);
	put_varint(b, 2, 3);
	put_varint(b, 3, 10000);
	put_varint(b, 4, 77);
	if (with_gaps)
		put_varint(b, 5, 555); /* unused number between declared ones */
	put_varint(b, 6, 1);
	put_varint(b, 7, 5000);
	put_varint(b, 8, 0);
	put_varint(b, 9, 3);
	put_bytes(b, 10, "\x08\x02\x10\x05", 4);
	put_bytes(b, 11, "buf", 3);
	put_bytes(b, 12, "\x0a\x00", 2);
	if (with_gaps)
		put_fixed(b, 13, 0x1122334455667788ull, 8);
	put_bytes(b, 100, ftrace_cfg, sizeof(ftrace_cfg));
	put_bytes(b, 101, "\x0a\x03" "cat", 5);
	put_bytes(b, 113, te_cfg, sizeof(te_cfg));
	put_bytes(b, 115, "", 0);
	put_varint(b, 122, 1);
	put_bytes(b, 130, "\x08\x01", 2);
	put_bytes(b, 144, "\xff", 1);
	put_bytes(b, 150, "\x10\x02", 2);
	if (with_gaps)
		put_bytes(b, 151, "new", 3);
	put_bytes(b, 1000, "legacy", 6);
	put_bytes(b, 1001, "\x08\x01", 2);
}

/* Undeclared numbers after every declared one, several wire types. */
static void put_trailing_unknown(struct blob *b)
{
	put_varint(b, 1002, 9);
	put_fixed(b, 4000, 0xdeadbeef, 4);
	put_bytes(b, 1002, "again", 5);
	put_fixed(b, 70000, 0x0102030405060708ull, 8);
	put_varint(b, 268435454, 1);
}

static Perfetto__Protos__DataSourceConfig *unpack_dsc(const struct blob *b)
{
	Perfetto__Protos__DataSourceConfig *c =
		perfetto__protos__data_source_config__unpack(NULL, b->len,
							     b->data);

	assert_non_null(c);
	return c;
}

static void test_dsc_roundtrip_exact(void **state)
{
	struct blob in = { NULL, 0 };
	Perfetto__Protos__DataSourceConfig *c;
	Perfetto__Protos__TrackEventConfig *tec;
	uint8_t *out;
	size_t n;
	(void)state;

	put_known_fields(&in, 0);
	put_trailing_unknown(&in);
	c = unpack_dsc(&in);
	assert_str(c->name, "track_event");
	assert_int_equal(c->target_buffer, 3);
	assert_int_equal(c->tracing_session_id, 77);
	assert_int_equal(c->buffer_exhausted_policy,
			 PERFETTO__PROTOS__DATA_SOURCE_CONFIG__BUFFER_EXHAUSTED_POLICY__BUFFER_EXHAUSTED_STALL_THEN_DROP);
	assert_int_equal(c->priority_boost->policy,
			 PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_SCHED_FIFO);
	assert_int_equal(c->priority_boost->priority, 5);
	assert_true(c->prefer_suspend_clock_for_duration);
	assert_true(c->has_ftrace_config);
	assert_int_equal(c->ftrace_config.len, sizeof(ftrace_cfg));
	assert_memory_equal(c->ftrace_config.data, ftrace_cfg,
			    sizeof(ftrace_cfg));
	assert_true(c->has_ds_config_130 && c->has_ds_config_144 &&
		    c->has_ds_config_150 && c->has_interceptor_config);
	assert_false(c->has_ds_config_116);
	assert_str(c->legacy_config, "legacy");
	assert_int_equal(c->base.n_unknown_fields, 5);

	/* The track_event payload decodes on its own. */
	tec = perfetto__protos__track_event_config__unpack(
		NULL, c->track_event_config.len, c->track_event_config.data);
	assert_non_null(tec);
	assert_int_equal(tec->n_enabled_categories, 1);
	assert_str(tec->enabled_categories[0], "*");
	assert_int_equal(tec->n_disabled_tags, 1);
	assert_str(tec->disabled_tags[0], "slow");
	assert_true(tec->disable_incremental_timestamps);
	assert_int_equal(tec->timestamp_unit_multiplier, 10);
	perfetto__protos__track_event_config__free_unpacked(tec, NULL);

	out = pack(&c->base, &n);
	assert_int_equal(n, in.len);
	assert_memory_equal(out, in.data, n);
	free(out);

	/* The service rewrites its fields; the rest still comes back intact. */
	c->target_buffer = 9;
	c->tracing_session_id = 12;
	out = pack(&c->base, &n);
	Perfetto__Protos__DataSourceConfig *c2 =
		perfetto__protos__data_source_config__unpack(NULL, n, out);
	assert_non_null(c2);
	assert_int_equal(c2->target_buffer, 9);
	assert_int_equal(c2->tracing_session_id, 12);
	assert_memory_equal(c2->ftrace_config.data, ftrace_cfg,
			    sizeof(ftrace_cfg));
	assert_int_equal(c2->base.n_unknown_fields, 5);
	/* Same bytes as the input except the values of fields 2 and 4. */
	assert_int_equal(n, in.len);
	assert_memory_equal(out, in.data, 14);
	assert_int_equal(out[14], 9);
	assert_memory_equal(out + 15, in.data + 15, 4);
	assert_int_equal(out[19], 12);
	assert_memory_equal(out + 20, in.data + 20, n - 20);
	perfetto__protos__data_source_config__free_unpacked(c2, NULL);
	free(out);

	perfetto__protos__data_source_config__free_unpacked(c, NULL);
	free(in.data);
}

/*
 * Undeclared numbers between declared ones (5, 13, 151 here) are kept but
 * re-emitted after all declared fields, in arrival order. That is the whole
 * guarantee (see data_source_config.proto): same values per field number,
 * not the same byte order.
 */
static void test_dsc_roundtrip_interleaved_unknown(void **state)
{
	struct blob in = { NULL, 0 }, want = { NULL, 0 };
	Perfetto__Protos__DataSourceConfig *c;
	uint8_t *out;
	size_t n;
	(void)state;

	put_known_fields(&in, 1);
	put_trailing_unknown(&in);
	c = unpack_dsc(&in);
	assert_int_equal(c->base.n_unknown_fields, 8);
	out = pack(&c->base, &n);
	assert_int_equal(n, in.len);
	assert_wire_equivalent(out, n, in.data, in.len);

	/* Exactly: declared fields, then 5, 13, 151, then the trailing ones. */
	put_known_fields(&want, 0);
	put_varint(&want, 5, 555);
	put_fixed(&want, 13, 0x1122334455667788ull, 8);
	put_bytes(&want, 151, "new", 3);
	put_trailing_unknown(&want);
	assert_int_equal(want.len, n);
	assert_memory_equal(out, want.data, n);

	free(out);
	perfetto__protos__data_source_config__free_unpacked(c, NULL);
	free(in.data);
	free(want.data);
}

/*
 * The configs of the captured session: the consumer's (inside
 * EnableTracing) re-encodes byte for byte; the one traced sent in
 * SetupDataSource has its fields out of number order and padded lengths
 * around it, and re-encodes to an equivalent message.
 */
static void test_dsc_captured(void **state)
{
	/* DataSourceConfig of frame [007] (EnableTracing). */
	static const uint8_t consumer_cfg[] = { 0x0a, 0x0b, 't', 'r', 'a', 'c',
						'k',  '_',  'e', 'v', 'e', 'n',
						't',  0x10, 0x00 };
	/* DataSourceConfig of frame [018] (SetupDataSource). */
	static const uint8_t service_cfg[] = {
		0x0a, 0x0b, 't',  'r',	'a',  'c',  'k', '_', 'e',
		'v',  'e',  'n',  't',	0x10, 0x01, 0x18, 0xdc, 0x0b,
		0x38, 0x88, 0x27, 0x30, 0x00, 0x20, 0x01
	};
	Perfetto__Protos__DataSourceConfig *c;
	uint8_t *out;
	size_t n;
	(void)state;

	c = perfetto__protos__data_source_config__unpack(
		NULL, sizeof(consumer_cfg), consumer_cfg);
	assert_non_null(c);
	out = pack(&c->base, &n);
	assert_int_equal(n, sizeof(consumer_cfg));
	assert_memory_equal(out, consumer_cfg, n);
	free(out);
	perfetto__protos__data_source_config__free_unpacked(c, NULL);

	c = perfetto__protos__data_source_config__unpack(
		NULL, sizeof(service_cfg), service_cfg);
	assert_non_null(c);
	assert_int_equal(c->base.n_unknown_fields, 0);
	check_config(c);
	out = pack(&c->base, &n);
	assert_int_equal(n, sizeof(service_cfg));
	assert_wire_equivalent(out, n, service_cfg, sizeof(service_cfg));
	free(out);
	perfetto__protos__data_source_config__free_unpacked(c, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_packet_files),
		cmocka_unit_test(test_example_trace_files),
		cmocka_unit_test(test_track_event_snippets),
		cmocka_unit_test(test_packed_fields),
		cmocka_unit_test(test_session1_trace),
		cmocka_unit_test(test_sample_trace_2threads),
		cmocka_unit_test(test_dsc_roundtrip_exact),
		cmocka_unit_test(test_dsc_roundtrip_interleaved_unknown),
		cmocka_unit_test(test_dsc_captured),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
