// SPDX-License-Identifier: Apache-2.0
// Tests of the generated IPC code of proto/: the rpc order of ProducerPort
// and ConsumerPort gives the method ids of ipc-wire.md §5, and every frame
// of the captured Perfetto v14 session (session1/proxy), with every request
// and reply inside it, decodes with our messages and matches
// ipc_summary.txt.
#include "proto_test_util.h"

#include "consumer_port.pb-c.h"
#include "ipc_frame.pb-c.h"
#include "producer_port.pb-c.h"

/* ---- rpc declaration order = method ids of ipc-wire.md §5 ---- */

static void check_service(const ProtobufCServiceDescriptor *d,
			  const char *name, const char *const *methods,
			  unsigned n)
{
	char want[128];

	assert_string_equal(d->short_name, name);
	assert_int_equal(d->n_methods, n);
	for (unsigned i = 0; i < n; i++) {
		const ProtobufCMethodDescriptor *m = &d->methods[i];

		assert_string_equal(m->name, methods[i]);
		assert_ptr_equal(protobuf_c_service_descriptor_get_method_by_name(
					 d, methods[i]),
				 m);
		snprintf(want, sizeof(want), "perfetto.protos.%sRequest",
			 methods[i]);
		assert_string_equal(m->input->name, want);
		snprintf(want, sizeof(want), "perfetto.protos.%sResponse",
			 methods[i]);
		assert_string_equal(m->output->name, want);
	}
}

static const char *const producer_methods[] = {
	"InitializeConnection",	   "RegisterDataSource",
	"UnregisterDataSource",	   "CommitData",
	"GetAsyncCommand",	   "RegisterTraceWriter",
	"UnregisterTraceWriter",   "NotifyDataSourceStarted",
	"NotifyDataSourceStopped", "ActivateTriggers",
	"Sync",			   "UpdateDataSource",
};

static const char *const consumer_methods[] = {
	"EnableTracing",	 "DisableTracing",    "ReadBuffers",
	"FreeBuffers",		 "Flush",	      "StartTracing",
	"ChangeTraceConfig",	 "Detach",	      "Attach",
	"GetTraceStats",	 "ObserveEvents",     "QueryServiceState",
	"QueryCapabilities",	 "SaveTraceForBugreport", "CloneSession",
};

static void test_service_method_ids(void **state)
{
	(void)state;
	check_service(&perfetto__protos__producer_port__descriptor,
		      "ProducerPort", producer_methods, 12);
	check_service(&perfetto__protos__consumer_port__descriptor,
		      "ConsumerPort", consumer_methods, 15);
}

/* ---- session1/proxy: every frame, request and reply ---- */

#define MAX_FRAMES 64

/* One frame as listed in ipc_summary.txt, or as decoded from a stream. */
struct frame_info {
	char kind[32];	   /* BindService, InvokeMethodReply, ... */
	char method[48];   /* method name, "" for bind frames */
	uint64_t request_id; /* IPCFrame.request_id */
	size_t len;	   /* header + payload bytes */
	int drop_reply;	   /* InvokeMethod.drop_reply */
	int has_more;	   /* InvokeMethodReply.has_more */
	int success;	   /* reply success */
};

/* A frame of ipc_summary.txt: where it travelled and what it was. */
struct summary_entry {
	int conn;		/* connection number, 1..3 */
	int dir;		/* 0 client to service, 1 service to client */
	struct frame_info info; /* what the summary says about it */
};

/* ipc_summary.txt's frames, in time order across all connections. */
struct summary {
	struct summary_entry e[MAX_FRAMES]; /* frames in listed order */
	int total;			    /* frames listed */
};

/* Parses the "[NNN] ..." header lines of ipc_summary.txt. */
static void parse_summary(struct summary *s)
{
	FILE *f = fopen(SESSION1 "/ipc_summary.txt", "r");
	char line[4096];

	assert_non_null(f);
	memset(s, 0, sizeof(*s));
	while (fgets(line, sizeof(line), f) != NULL) {
		int idx, conn, used = 0;
		double t;
		char label[32], dir[8], kind[32];
		size_t len, payload;
		unsigned long long rid;

		if (line[0] != '[')
			continue;
		assert_int_equal(sscanf(line,
					"[%d] t= %lf ms conn%d(%31[^)]) %7s "
					"len=%zu (4+%zu) request_id=%llu %31s%n",
					&idx, &t, &conn, label, dir, &len,
					&payload, &rid, kind, &used),
				 9);
		assert_int_equal(idx, s->total);
		assert_true(conn >= 1 && conn <= 3);
		assert_int_equal(len, payload + 4);
		int d = strcmp(dir, "C->S") == 0 ? 0 :
			strcmp(dir, "S->C") == 0 ? 1 : -1;
		assert_true(d >= 0);
		assert_true(s->total < MAX_FRAMES);
		s->e[s->total].conn = conn;
		s->e[s->total].dir = d;
		struct frame_info *fi = &s->e[s->total].info;
		snprintf(fi->kind, sizeof(fi->kind), "%s", kind);
		fi->request_id = rid;
		fi->len = len;

		char *save = NULL;
		for (char *tok = strtok_r(line + used, " \n", &save);
		     tok != NULL; tok = strtok_r(NULL, " \n", &save)) {
			if (strncmp(tok, "**", 2) == 0)
				break;
			if (strcmp(tok, "drop_reply") == 0)
				fi->drop_reply = 1;
			else if (strcmp(tok, "has_more") == 0)
				fi->has_more = 1;
			else if (strcmp(tok, "success=True") == 0)
				fi->success = 1;
			else if (strcmp(tok, "success=False") == 0)
				fi->success = 0;
			else if (fi->method[0] == '\0')
				snprintf(fi->method, sizeof(fi->method), "%s",
					 tok);
			else
				fail_msg("unexpected token %s", tok);
		}
		s->total++;
	}
	fclose(f);
	assert_true(s->total > 0);
}

/* What the stream checks saw; compared with the traces at the end. */
struct ipc_state {
	const ProtobufCServiceDescriptor *service; /* bound service */
	const char *methods[32];  /* BindServiceReply table, by method id */
	unsigned n_methods;	  /* highest method id listed */
	const char *pending[64];  /* method name by request_id */
	struct blob read_back;	  /* ReadBuffers slices as a Trace stream */
	struct blob packet;	  /* packet being reassembled from slices */
	int commits;		  /* CommitData requests */
	size_t chunks_moved;	  /* CommitData chunks_to_move entries */
	size_t patches;		  /* CommitData patches */
	int setups;		  /* setup/start data source commands */
};

/* Value checks on the requests the captured clients sent. */
static void check_request(struct ipc_state *st, const char *method,
			  const ProtobufCMessage *m, const ProtobufCBinaryData *raw)
{
	if (strcmp(method, "InitializeConnection") == 0) {
		const Perfetto__Protos__InitializeConnectionRequest *r =
			(const void *)m;

		assert_true(strncmp(r->producer_name, "./example_", 10) == 0);
		assert_int_equal(r->smb_scraping_mode,
				 PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED);
		assert_true(r->has_shared_memory_size_hint_bytes);
		assert_int_equal(r->shared_memory_size_hint_bytes, 0);
		assert_int_equal(r->build_flags,
				 PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_BUILD_FLAGS__BUILD_FLAGS_DCHECKS_OFF);
	} else if (strcmp(method, "RegisterDataSource") == 0) {
		const Perfetto__Protos__DataSourceDescriptor *d =
			((const Perfetto__Protos__RegisterDataSourceRequest *)m)
				->data_source_descriptor;
		Perfetto__Protos__TrackEventDescriptor *ted;

		assert_str(d->name, "track_event");
		assert_true(d->will_notify_on_start && d->will_notify_on_stop &&
			    d->handles_incremental_state_clear);
		assert_true(d->has_track_event_descriptor);
		ted = perfetto__protos__track_event_descriptor__unpack(
			NULL, d->track_event_descriptor.len,
			d->track_event_descriptor.data);
		assert_non_null(ted);
		assert_int_equal(count_unknown(&ted->base), 0);
		assert_int_equal(ted->n_available_categories, 2);
		assert_str(ted->available_categories[0]->name, "bench");
		assert_str(ted->available_categories[1]->name, "bench.extra");
		assert_str(ted->available_categories[1]->description,
			   "unused second category");
		perfetto__protos__track_event_descriptor__free_unpacked(ted,
									 NULL);
	} else if (strcmp(method, "CommitData") == 0) {
		const Perfetto__Protos__CommitDataRequest *r = (const void *)m;

		st->commits++;
		st->chunks_moved += r->n_chunks_to_move;
		for (size_t i = 0; i < r->n_chunks_to_move; i++)
			assert_int_equal(r->chunks_to_move[i]->target_buffer, 1);
		for (size_t i = 0; i < r->n_chunks_to_patch; i++) {
			const Perfetto__Protos__CommitDataRequest__ChunkToPatch
				*cp = r->chunks_to_patch[i];

			assert_int_equal(cp->writer_id, 1);
			for (size_t k = 0; k < cp->n_patches; k++)
				assert_int_equal(cp->patches[k]->data.len, 4);
			st->patches += cp->n_patches;
		}
	} else if (strcmp(method, "EnableTracing") == 0) {
		const Perfetto__Protos__TraceConfig *tc =
			((const Perfetto__Protos__EnableTracingRequest *)m)
				->trace_config;

		assert_int_equal(tc->duration_ms, 1500);
		assert_int_equal(tc->buffers[0]->size_kb, 1024);
		assert_str(tc->data_sources[0]->config->name, "track_event");
	} else if (strcmp(method, "ObserveEvents") == 0) {
		const Perfetto__Protos__ObserveEventsRequest *r = (const void *)m;
		uint8_t *out;
		size_t n;

		assert_int_equal(r->n_events_to_observe, 2);
		assert_int_equal(r->events_to_observe[0],
				 PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_DATA_SOURCES_INSTANCES);
		assert_int_equal(r->events_to_observe[1],
				 PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_ALL_DATA_SOURCES_STARTED);
		/* Unpacked repeated enum: re-encodes to the client's bytes. */
		out = pack(m, &n);
		assert_int_equal(n, raw->len);
		assert_memory_equal(out, raw->data, n);
		free(out);
	}
}

/* Value checks on the replies the captured service sent. */
static void check_reply(struct ipc_state *st, const char *method,
			const ProtobufCMessage *m)
{
	if (strcmp(method, "InitializeConnection") == 0) {
		const Perfetto__Protos__InitializeConnectionResponse *r =
			(const void *)m;

		assert_true(r->direct_smb_patching_supported);
		assert_false(r->using_shmem_provided_by_producer);
	} else if (strcmp(method, "GetAsyncCommand") == 0) {
		const Perfetto__Protos__GetAsyncCommandResponse *r =
			(const void *)m;

		switch (r->cmd_case) {
		case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING:
			assert_int_equal(r->setup_tracing->shared_buffer_page_size_kb,
					 4);
			break;
		case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE:
			assert_int_equal(r->setup_data_source->new_instance_id, 1);
			check_config(r->setup_data_source->config);
			st->setups++;
			break;
		case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE:
			assert_int_equal(r->start_data_source->new_instance_id, 1);
			check_config(r->start_data_source->config);
			st->setups++;
			break;
		case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH:
			assert_int_equal(r->flush->n_data_source_ids, 1);
			assert_int_equal(r->flush->data_source_ids[0], 1);
			assert_int_equal(r->flush->request_id, 1);
			break;
		case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE:
			assert_int_equal(r->stop_data_source->instance_id, 1);
			break;
		default:
			fail_msg("unexpected async command %d", r->cmd_case);
		}
	} else if (strcmp(method, "EnableTracing") == 0) {
		const Perfetto__Protos__EnableTracingResponse *r =
			(const void *)m;

		assert_int_equal(r->state_case,
				 PERFETTO__PROTOS__ENABLE_TRACING_RESPONSE__STATE_DISABLED);
		assert_true(r->disabled);
		assert_null(r->error);
	} else if (strcmp(method, "ReadBuffers") == 0) {
		const Perfetto__Protos__ReadBuffersResponse *r = (const void *)m;

		/* Rebuild the Trace stream the consumer wrote. */
		for (size_t i = 0; i < r->n_slices; i++) {
			const ProtobufCBinaryData *d = &r->slices[i]->data;
			struct blob *packet = &st->packet;

			append(packet, d->data, d->len);
			if (!r->slices[i]->last_slice_for_packet)
				continue;
			uint8_t hdr[11] = { 0x0a };
			size_t h = 1, v = packet->len;
			do {
				hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
				v >>= 7;
			} while (v);
			append(&st->read_back, hdr, h);
			append(&st->read_back, packet->data, packet->len);
			free(packet->data);
			*packet = (struct blob){ NULL, 0 };
		}
	} else if (strcmp(method, "ObserveEvents") == 0) {
		const Perfetto__Protos__ObserveEventsResponse *r =
			(const void *)m;

		assert_non_null(r->events);
		for (size_t i = 0; i < r->events->n_instance_state_changes; i++)
			assert_str(r->events->instance_state_changes[i]
					   ->data_source_name,
				   "track_event");
	}
}

/* Decodes one frame payload and records it in got; checks inner messages. */
static void decode_frame(struct ipc_state *st, int dir, const uint8_t *payload,
			 size_t len, struct frame_info *got)
{
	Perfetto__Protos__IPCFrame *fr =
		perfetto__protos__ipcframe__unpack(NULL, len, payload);

	assert_non_null(fr);
	assert_int_equal(count_unknown(&fr->base), 0);
	got->request_id = fr->request_id;
	got->len = len + 4;
	assert_true(fr->request_id < 64);
	switch (fr->msg_case) {
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE: {
		const char *name = fr->msg_bind_service->service_name;

		assert_int_equal(dir, 0);
		strcpy(got->kind, "BindService");
		st->service = strcmp(name, "ProducerPort") == 0 ?
				      &perfetto__protos__producer_port__descriptor :
			      strcmp(name, "ConsumerPort") == 0 ?
				      &perfetto__protos__consumer_port__descriptor :
				      NULL;
		assert_non_null(st->service);
		assert_string_equal(st->service->short_name, name);
		break;
	}
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE_REPLY: {
		const Perfetto__Protos__IPCFrame__BindServiceReply *r =
			fr->msg_bind_service_reply;

		assert_int_equal(dir, 1);
		strcpy(got->kind, "BindServiceReply");
		got->success = r->success;
		assert_int_equal(r->service_id, 1);
		assert_non_null(st->service);
		for (size_t i = 0; i < r->n_methods; i++) {
			const ProtobufCMethodDescriptor *md =
				protobuf_c_service_descriptor_get_method_by_name(
					st->service, r->methods[i]->name);
			uint32_t id = r->methods[i]->id;

			/* Our rpc order gives the same id as the reference. */
			assert_non_null(md);
			assert_int_equal(md - st->service->methods + 1, id);
			assert_true(id < 32);
			st->methods[id] = md->name;
			if (id > st->n_methods)
				st->n_methods = id;
		}
		break;
	}
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD: {
		const Perfetto__Protos__IPCFrame__InvokeMethod *im =
			fr->msg_invoke_method;
		const ProtobufCMethodDescriptor *md;
		ProtobufCMessage *args;

		assert_int_equal(dir, 0);
		strcpy(got->kind, "InvokeMethod");
		assert_true(im->has_drop_reply);
		got->drop_reply = im->drop_reply;
		assert_true(im->method_id >= 1 && im->method_id <= st->n_methods);
		md = &st->service->methods[im->method_id - 1];
		assert_string_equal(md->name, st->methods[im->method_id]);
		snprintf(got->method, sizeof(got->method), "%s", md->name);
		st->pending[fr->request_id] = md->name;
		args = protobuf_c_message_unpack(md->input, NULL,
						 im->args_proto.len,
						 im->args_proto.data);
		assert_non_null(args);
		assert_int_equal(count_unknown(args), 0);
		check_request(st, md->name, args, &im->args_proto);
		protobuf_c_message_free_unpacked(args, NULL);
		break;
	}
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY: {
		const Perfetto__Protos__IPCFrame__InvokeMethodReply *r =
			fr->msg_invoke_method_reply;
		const char *method = st->pending[fr->request_id];
		const ProtobufCMethodDescriptor *md;
		ProtobufCMessage *reply;

		assert_int_equal(dir, 1);
		assert_non_null(method);
		strcpy(got->kind, "InvokeMethodReply");
		snprintf(got->method, sizeof(got->method), "%s", method);
		got->success = r->success;
		got->has_more = r->has_more;
		md = protobuf_c_service_descriptor_get_method_by_name(st->service,
								      method);
		assert_non_null(md);
		reply = protobuf_c_message_unpack(md->output, NULL,
						  r->reply_proto.len,
						  r->reply_proto.data);
		assert_non_null(reply);
		assert_int_equal(count_unknown(reply), 0);
		check_reply(st, method, reply);
		protobuf_c_message_free_unpacked(reply, NULL);
		break;
	}
	default:
		fail_msg("unexpected frame kind %d", fr->msg_case);
	}
	perfetto__protos__ipcframe__free_unpacked(fr, NULL);
}

/* A captured byte stream and how far it has been split into frames. */
struct stream {
	struct blob b; /* the whole capture of one direction */
	size_t off;    /* start of the next frame */
};

/*
 * Takes the next frame (4-byte LE length + IPCFrame) of s; the capture must
 * hold all of it.
 */
static const uint8_t *next_frame(struct stream *s, size_t *len)
{
	const uint8_t *p = s->b.data + s->off;
	uint32_t n;

	assert_true(s->b.len - s->off >= 4);
	n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
	assert_true(n > 0 && n <= 131068);
	assert_true(s->b.len - s->off - 4 >= n);
	s->off += 4 + (size_t)n;
	*len = n;
	return p + 4;
}

static void assert_frame_equal(const struct frame_info *g,
			       const struct frame_info *w)
{
	assert_string_equal(g->kind, w->kind);
	assert_string_equal(g->method, w->method);
	assert_int_equal(g->request_id, w->request_id);
	assert_int_equal(g->len, w->len);
	assert_int_equal(g->drop_reply, w->drop_reply);
	assert_int_equal(g->has_more, w->has_more);
	assert_int_equal(g->success, w->success);
}

/*
 * Walks the frames in the order ipc_summary.txt lists them (time order
 * across connections), taking each from its connection's captured stream:
 * so a BindServiceReply is seen before the calls that use its method table,
 * as a real client sees it.
 */
static void test_ipc_streams(void **state)
{
	static const char *const conns[4] = { NULL, "conn1_producer",
					      "conn2_consumer",
					      "conn3_producer" };
	struct summary *want = calloc(1, sizeof(*want));
	struct stream streams[4][2];
	struct ipc_state *ipc[4];
	int per_conn[4] = { 0 };
	(void)state;

	assert_non_null(want);
	parse_summary(want);
	for (int c = 1; c <= 3; c++) {
		ipc[c] = calloc(1, sizeof(*ipc[c]));
		assert_non_null(ipc[c]);
		for (int d = 0; d < 2; d++) {
			char path[1024];

			snprintf(path, sizeof(path), "%s/proxy/%s_%s.bin",
				 SESSION1, conns[c], d ? "s2c" : "c2s");
			streams[c][d].b = read_blob(path);
			streams[c][d].off = 0;
		}
	}
	for (int i = 0; i < want->total; i++) {
		const struct summary_entry *e = &want->e[i];
		struct frame_info got;
		const uint8_t *payload;
		size_t n;

		memset(&got, 0, sizeof(got));
		payload = next_frame(&streams[e->conn][e->dir], &n);
		decode_frame(ipc[e->conn], e->dir, payload, n, &got);
		assert_frame_equal(&got, &e->info);
		per_conn[e->conn]++;
	}
	/* Every captured byte belongs to a listed frame. */
	for (int c = 1; c <= 3; c++) {
		for (int d = 0; d < 2; d++) {
			assert_int_equal(streams[c][d].off, streams[c][d].b.len);
			free(streams[c][d].b.data);
		}
	}
	assert_int_equal(want->total, 49);
	assert_int_equal(per_conn[1], 5);
	assert_int_equal(per_conn[2], 15);
	assert_int_equal(per_conn[3], 29);

	/* conn3, the example producer: its traffic in numbers. */
	assert_int_equal(ipc[3]->commits, 12);
	assert_int_equal(ipc[3]->setups, 2);
	/* As many as the trace's TraceStats says were written and patched. */
	assert_int_equal(ipc[3]->chunks_moved, 34);
	assert_int_equal(ipc[3]->patches, 27);

	/* conn2, the consumer: ReadBuffers gave exactly trace.pftrace. */
	struct blob trace = read_blob(SESSION1 "/trace.pftrace");
	assert_int_equal(ipc[2]->read_back.len, trace.len);
	assert_memory_equal(ipc[2]->read_back.data, trace.data, trace.len);
	free(trace.data);

	for (int c = 1; c <= 3; c++) {
		assert_int_equal(ipc[c]->packet.len, 0); /* no partial packet */
		free(ipc[c]->read_back.data);
		free(ipc[c]);
	}
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_service_method_ids),
		cmocka_unit_test(test_ipc_streams),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
