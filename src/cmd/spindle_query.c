// SPDX-License-Identifier: Apache-2.0
// spindle --query / --query-raw: QueryServiceState (consumer-port.md §9),
// its chunks joined and parsed once, printed as tables or as text proto.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/spindle_cli.h"
#include "sdk/textproto.h"
#include "tracing_service_state.pb-c.h"

/* The serialized chunks, concatenated. */
struct cli_chunks {
	uint8_t *buf;	/* bytes so far */
	size_t len;	/* used */
	size_t cap;	/* allocated */
	int err;	/* -ENOMEM once out of memory */
};

/* Appends one chunk's TracingServiceState, re-serialized (protobuf-c keeps
 * unknown fields, so nothing newer than our .proto is lost). */
static void cli_chunk_cb(void *arg, struct ipc_client_reply *r)
{
	const Perfetto__Protos__QueryServiceStateResponse *m;
	struct cli_chunks *ch = arg;
	size_t n;

	if (r->status || ch->err)
		return;
	m = (const Perfetto__Protos__QueryServiceStateResponse *)r->msg;
	if (!m->service_state)
		return;
	n = protobuf_c_message_get_packed_size(&m->service_state->base);
	if (ch->len + n > ch->cap) {
		size_t cap = ch->cap ? ch->cap : 65536;
		uint8_t *nb;

		while (cap < ch->len + n)
			cap *= 2;
		nb = realloc(ch->buf, cap);
		if (!nb) {
			ch->err = -ENOMEM;
			return;
		}
		ch->buf = nb;
		ch->cap = cap;
	}
	protobuf_c_message_pack(&m->service_state->base, ch->buf + ch->len);
	ch->len += n;
}

/* Name of producer `id`, or "?". */
static const char *cli_producer_name(const Perfetto__Protos__TracingServiceState *st,
				     int32_t id)
{
	for (size_t i = 0; i < st->n_producers; i++)
		if (st->producers[i]->id == id && st->producers[i]->name)
			return st->producers[i]->name;
	return "?";
}

static int cli_width(int w, const char *s)
{
	int n = s ? (int)strlen(s) : 0;

	return n > w ? n : w;
}

static void cli_print_producers(const Perfetto__Protos__TracingServiceState *st)
{
	int w = 4;

	for (size_t i = 0; i < st->n_producers; i++)
		w = cli_width(w, st->producers[i]->name);
	printf("\nPRODUCERS (%zu)\n", st->n_producers);
	if (!st->n_producers)
		return;
	printf("  %-6s %-8s %-8s %-*s  %s\n", "ID", "PID", "UID", w, "NAME",
	       "SDK");
	for (size_t i = 0; i < st->n_producers; i++) {
		const Perfetto__Protos__TracingServiceState__Producer *p =
			st->producers[i];
		char pid[16] = "-";

		if (p->has_pid)
			snprintf(pid, sizeof(pid), "%d", p->pid);
		printf("  %-6d %-8s %-8d %-*s  %s\n", p->id, pid, p->uid, w,
		       p->name ? p->name : "", p->sdk_version ? p->sdk_version : "");
	}
}

static void cli_print_sources(const Perfetto__Protos__TracingServiceState *st)
{
	int w = 4;

	for (size_t i = 0; i < st->n_data_sources; i++) {
		const Perfetto__Protos__DataSourceDescriptor *d =
			st->data_sources[i]->ds_descriptor;

		w = cli_width(w, d ? d->name : NULL);
	}
	printf("\nDATA SOURCES (%zu)\n", st->n_data_sources);
	if (!st->n_data_sources)
		return;
	printf("  %-*s  %-8s %s\n", w, "NAME", "PRODUCER", "PRODUCER NAME");
	for (size_t i = 0; i < st->n_data_sources; i++) {
		const Perfetto__Protos__TracingServiceState__DataSource *ds =
			st->data_sources[i];
		const char *name = ds->ds_descriptor && ds->ds_descriptor->name ?
					   ds->ds_descriptor->name : "";

		printf("  %-*s  %-8d %s\n", w, name, ds->producer_id,
		       cli_producer_name(st, ds->producer_id));
	}
}

/* "1024+512" KiB per buffer into buf. */
static const char *cli_buffers_kb(
	const Perfetto__Protos__TracingServiceState__TracingSession *s,
	char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < s->n_buffer_size_kb && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%u", i ? "+" : "",
				 s->buffer_size_kb[i]);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	return s->n_buffer_size_kb ? buf : "-";
}

static void cli_print_sessions(const Perfetto__Protos__TracingServiceState *st)
{
	int w = 4;

	for (size_t i = 0; i < st->n_tracing_sessions; i++)
		w = cli_width(w, st->tracing_sessions[i]->unique_session_name);
	printf("\nTRACING SESSIONS (%zu visible)\n", st->n_tracing_sessions);
	if (!st->n_tracing_sessions)
		return;
	printf("  %-8s %-8s %-28s %-*s  %-14s %-10s %s\n", "ID", "UID",
	       "STATE", w, "NAME", "BUFFERS (KiB)", "DURATION", "SOURCES");
	for (size_t i = 0; i < st->n_tracing_sessions; i++) {
		const Perfetto__Protos__TracingServiceState__TracingSession *s =
			st->tracing_sessions[i];
		char bufs[64], dur[24] = "-";

		if (s->duration_ms)
			snprintf(dur, sizeof(dur), "%.1fs",
				 s->duration_ms / 1000.0);
		printf("  %-8llu %-8d %-28s %-*s  %-14s %-10s %u\n",
		       (unsigned long long)s->id, s->consumer_uid,
		       s->state ? s->state : "?", w,
		       s->unique_session_name ? s->unique_session_name : "",
		       cli_buffers_kb(s, bufs, sizeof(bufs)), dur,
		       s->num_data_sources);
	}
}

static void cli_print_table(const Perfetto__Protos__TracingServiceState *st)
{
	printf("Service: %s\n", st->tracing_service_version &&
					*st->tracing_service_version ?
					st->tracing_service_version :
					"(version not reported)");
	printf("Tracing sessions: %d (%d started)\n", st->num_sessions,
	       st->num_sessions_started);
	cli_print_producers(st);
	cli_print_sources(st);
	if (st->supports_tracing_sessions || st->n_tracing_sessions)
		cli_print_sessions(st);
}

int cli_query(const struct cli_opts *o, struct cli_conn *c)
{
	Perfetto__Protos__QueryServiceStateRequest req =
		PERFETTO__PROTOS__QUERY_SERVICE_STATE_REQUEST__INIT;
	Perfetto__Protos__TracingServiceState *st;
	struct cli_chunks ch = { 0 };
	int rc;

	rc = ipc_sync_stream(c->sync, c->port, "QueryServiceState", &req.base,
			     -1, cli_chunk_cb, &ch, CLI_CALL_TIMEOUT_MS);
	if (rc || ch.err) {
		fprintf(stderr, "spindle: QueryServiceState: %s%s\n",
			cli_status_str(rc ? rc : ch.err),
			rc == -EREMOTEIO ? " (this service may not offer it)" :
					   "");
		free(ch.buf);
		return CLI_EXIT_FAIL;
	}
	st = perfetto__protos__tracing_service_state__unpack(NULL, ch.len,
							      ch.buf);
	free(ch.buf);
	if (!st) {
		fprintf(stderr, "spindle: QueryServiceState: the service state "
				"does not decode\n");
		return CLI_EXIT_FAIL;
	}
	if (o->mode == CLI_QUERY_RAW)
		rc = spn_textproto_print(&st->base, stdout);
	else
		cli_print_table(st);
	perfetto__protos__tracing_service_state__free_unpacked(st, NULL);
	if (rc || fflush(stdout)) {
		fprintf(stderr, "spindle: cannot write to stdout\n");
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}
