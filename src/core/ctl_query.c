// SPDX-License-Identifier: Apache-2.0
// ConsumerPort calls that report or adjust the service's state on the
// control plane: QueryServiceState (streamed in frame-sized chunks),
// SaveTraceForBugreport (deprecated) and ChangeTraceConfig (producer name
// filters only). spec/consumer-port.md §3, §9, §11.
//
// Control thread only: reads the producer and session registries it owns.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl_int.h"
#include "ipc/log.h"
#include "spindle/pb.h"
#include "tracing_service_state.pb-c.h"

/* §9: a chunk is sent before it would reach this many bytes. */
#define QSS_CHUNK_LIMIT (131072u - 128u)
/* TracingServiceState.tracing_service_version. */
#define QSS_SERVICE_VERSION "spindled 0.1.0"
/* SaveTraceForBugreportResponse.msg (what current services answer). */
#define SAVE_FOR_BUGREPORT_MSG \
	"SaveTraceForBugreport is deprecated. Use " \
	"CloneSession(kBugreportSessionId) instead."

/* --- QueryServiceState --- */

/* The chunk being assembled and the stream it goes to. */
struct qss_out {
	struct ipc_reply *reply;	/* the QueryServiceState call */
	uint8_t *chunk;			/* serialized TracingServiceState so far */
	size_t len;			/* bytes used in chunk */
	uint8_t *frame;			/* QueryServiceStateResponse being sent */
	int err;			/* first failure (send or memory) */
};

/* Sends the chunk as QueryServiceStateResponse{service_state}. */
static void qss_send(struct qss_out *o, bool has_more)
{
	uint8_t *p;
	int rc;

	if (!o->err) {
		p = spn_pb_field_bytes(o->frame, 1, o->chunk, o->len);
		rc = ipc_reply_send_raw(o->reply, o->frame,
					(size_t)(p - o->frame), -1, has_more);
		if (rc < 0)
			o->err = rc;
	}
	o->len = 0;
}

/* Appends one repeated entry (field `field`, payload d[0..n)), starting a
 * new chunk first when this one would reach the limit. */
static void qss_entry(struct qss_out *o, uint32_t field, const uint8_t *d,
		      size_t n)
{
	size_t need = spn_pb_bytes_field_len(field, n);

	if (need >= QSS_CHUNK_LIMIT) {
		/* Cannot be sent in any chunk (a descriptor that large could
		 * not have been registered through a 128 KiB frame). */
		spn_log_warn("ctl", "QueryServiceState: %zu-byte entry skipped",
			     n);
		return;
	}
	if (o->len && o->len + need >= QSS_CHUNK_LIMIT)
		qss_send(o, true);
	o->len = (size_t)(spn_pb_field_bytes(o->chunk + o->len, field, d, n) -
			  o->chunk);
}

static int qss_cmp_session(const void *a, const void *b)
{
	const struct ctl_session *x = *(const struct ctl_session *const *)a;
	const struct ctl_session *y = *(const struct ctl_session *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* The caller may see session s: uid 0 sees all, others their own. */
static bool qss_visible(const struct ctl_session *s, uid_t uid)
{
	return uid == 0 || s->uid == uid;
}

/* REALTIME reading of the session's initial clock snapshot, if any. */
static bool qss_start_realtime(const struct ctl_session *s, int64_t *ns)
{
	const struct svc_pkts_snapshot *snap = &s->pkts.initial;

	if (!s->started_once || !s->pkts.initial_taken)
		return false;
	for (uint32_t i = 0; i < snap->n; i++)
		if (snap->c[i].id == 1 /* BUILTIN_CLOCK_REALTIME */) {
			*ns = (int64_t)snap->c[i].ts;
			return true;
		}
	return false;
}

/* Fills one TracingSession entry; kb has room for s->cfg->n_buffers. */
static void qss_session(const struct ctl_session *s, uint32_t *kb,
			Perfetto__Protos__TracingServiceState__TracingSession *t)
{
	const Perfetto__Protos__TraceConfig *c = s->cfg;

	perfetto__protos__tracing_service_state__tracing_session__init(t);
	t->has_id = true;
	t->id = s->id;
	t->has_consumer_uid = true;
	t->consumer_uid = (int32_t)s->uid;
	t->state = (char *)svc_session_state_name(s->state);
	t->unique_session_name = c->unique_session_name
					 ? c->unique_session_name
					 : (char *)"";
	for (size_t i = 0; i < c->n_buffers; i++)
		kb[i] = c->buffers[i]->size_kb;
	t->n_buffer_size_kb = c->n_buffers;
	t->buffer_size_kb = kb;
	t->has_duration_ms = true;
	t->duration_ms = s->duration_ms;
	t->has_num_data_sources = true;
	t->num_data_sources = s->ninst;
	t->has_start_realtime_ns = qss_start_realtime(s, &t->start_realtime_ns);
	t->has_bugreport_score = c->has_bugreport_score;
	t->bugreport_score = c->bugreport_score;
	t->bugreport_filename = c->bugreport_filename;
	t->has_is_started = s->state == SVC_SESSION_STARTED;
	t->is_started = t->has_is_started;
}

/*
 * The first part of the first chunk: every field but producers and data
 * sources (those follow as entries). Returns 0 or -ENOMEM.
 */
static int qss_header(struct ctl *ctl, uid_t uid, struct qss_out *o)
{
	Perfetto__Protos__TracingServiceState st =
		PERFETTO__PROTOS__TRACING_SERVICE_STATE__INIT;
	Perfetto__Protos__TracingServiceState__TracingSession *ts = NULL,
		**tsp = NULL;
	struct ctl_session **all = NULL;
	uint32_t *kb = NULL;
	size_t n = 0, nvis = 0, nkb = 0, used = 0;
	int started = 0, rc = -ENOMEM;

	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		n++;
		started += s->state == SVC_SESSION_STARTED;
		nkb += s->cfg->n_buffers;
	}
	all = calloc(n + 1, sizeof(*all));
	ts = calloc(n + 1, sizeof(*ts));
	tsp = calloc(n + 1, sizeof(*tsp));
	kb = calloc(nkb + 1, sizeof(*kb));
	if (!all || !ts || !tsp || !kb)
		goto out;
	n = 0;
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		all[n++] = s;
	qsort(all, n, sizeof(*all), qss_cmp_session);
	for (size_t i = 0; i < n; i++) {
		if (!qss_visible(all[i], uid))
			continue;
		qss_session(all[i], kb + used, &ts[nvis]);
		used += all[i]->cfg->n_buffers;
		tsp[nvis] = &ts[nvis];
		nvis++;
	}
	st.has_num_sessions = true;
	st.num_sessions = (int32_t)n;
	st.has_num_sessions_started = true;
	st.num_sessions_started = started;
	st.tracing_service_version = QSS_SERVICE_VERSION;
	st.n_tracing_sessions = nvis;
	st.tracing_sessions = tsp;
	st.has_supports_tracing_sessions = true;
	st.supports_tracing_sessions = true;
	o->len = protobuf_c_message_get_packed_size(&st.base);
	if (o->len >= QSS_CHUNK_LIMIT) {
		/* 15 sessions of 128 buffers stay far below this. */
		spn_log_error("ctl", "QueryServiceState: header too large");
		o->len = 0;
		rc = -EMSGSIZE;
		goto out;
	}
	protobuf_c_message_pack(&st.base, o->chunk);
	rc = 0;
out:
	free(all);
	free(ts);
	free(tsp);
	free(kb);
	return rc;
}

static int qss_cmp_producer(const void *a, const void *b)
{
	const struct ctl_producer *x = *(const struct ctl_producer *const *)a;
	const struct ctl_producer *y = *(const struct ctl_producer *const *)b;

	return (int)x->id - (int)y->id;
}

/* Producers, by ProducerID. */
static int qss_producers(struct ctl *ctl, struct qss_out *o, uint8_t *tmp)
{
	struct ctl_producer **v;
	size_t n = 0;

	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		n++;
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	n = 0;
	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		v[n++] = p;
	qsort(v, n, sizeof(*v), qss_cmp_producer);
	for (size_t i = 0; i < n && !o->err; i++) {
		Perfetto__Protos__TracingServiceState__Producer e =
			PERFETTO__PROTOS__TRACING_SERVICE_STATE__PRODUCER__INIT;
		size_t len;

		e.has_id = true;
		e.id = v[i]->id;
		e.name = v[i]->name;
		e.has_uid = true;
		e.uid = (int32_t)v[i]->cred.uid;
		e.has_pid = v[i]->cred.pid > 0;
		e.pid = v[i]->cred.pid;
		e.sdk_version = v[i]->sdk_version;
		len = protobuf_c_message_get_packed_size(&e.base);
		if (len >= QSS_CHUNK_LIMIT)
			continue; /* a name can't be that long (frame limit) */
		protobuf_c_message_pack(&e.base, tmp);
		qss_entry(o, 1, tmp, len);
	}
	free(v);
	return 0;
}

/* A registered data source, for sorting. */
struct qss_ds {
	const struct ctl_ds *ds;	/* the registration */
	uint16_t producer_id;		/* its producer */
};

static int qss_cmp_ds(const void *a, const void *b)
{
	const struct qss_ds *x = a, *y = b;
	int c = strcmp(x->ds->name, y->ds->name);

	return c ? c : (int)x->producer_id - (int)y->producer_id;
}

/* Data sources, by name then producer: {ds_descriptor as registered,
 * producer_id}. */
static int qss_data_sources(struct ctl *ctl, struct qss_out *o, uint8_t *tmp)
{
	struct qss_ds *v;
	size_t n = 0;

	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		n += p->nds;
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	n = 0;
	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		for (unsigned i = 0; i < p->nds; i++)
			v[n++] = (struct qss_ds){ &p->ds[i], p->id };
	qsort(v, n, sizeof(*v), qss_cmp_ds);
	for (size_t i = 0; i < n && !o->err; i++) {
		const struct ctl_ds *d = v[i].ds;
		uint8_t *p;

		if (spn_pb_bytes_field_len(1, d->desc_len) + 8 >= QSS_CHUNK_LIMIT) {
			spn_log_warn("ctl", "QueryServiceState: descriptor of "
				     "\"%s\" too large, skipped", d->name);
			continue;
		}
		p = spn_pb_field_bytes(tmp, 1, d->desc, d->desc_len);
		p = spn_pb_field_int(p, 2, v[i].producer_id);
		qss_entry(o, 2, tmp, (size_t)(p - tmp));
	}
	free(v);
	return 0;
}

void ctl_query_service_state(struct ctl *ctl, struct ctl_msg *m)
{
	Perfetto__Protos__QueryServiceStateRequest *r =
		perfetto__protos__query_service_state_request__unpack(
			NULL, m->len, m->bytes);
	struct qss_out o = { .reply = &m->reply };
	uint8_t *tmp = malloc(QSS_CHUNK_LIMIT);
	int rc = -ENOMEM;

	o.chunk = malloc(QSS_CHUNK_LIMIT);
	o.frame = malloc(QSS_CHUNK_LIMIT + 16);
	if (!r || !tmp || !o.chunk || !o.frame)
		goto fail;
	rc = qss_header(ctl, m->cred.uid, &o);
	if (rc == 0 && !r->sessions_only)
		rc = qss_producers(ctl, &o, tmp);
	if (rc == 0 && !r->sessions_only)
		rc = qss_data_sources(ctl, &o, tmp);
	if (rc < 0)
		goto fail;
	qss_send(&o, false);
	if (o.err)
		spn_log_warn("ctl", "QueryServiceState: reply not sent: %s",
			     strerror(-o.err));
	goto out;
fail:
	/* Rejected (success:false), which consumers read as a failure. */
	ipc_reply_reject(&m->reply);
out:
	free(tmp);
	free(o.chunk);
	free(o.frame);
	if (r)
		perfetto__protos__query_service_state_request__free_unpacked(r,
									     NULL);
}

/* --- SaveTraceForBugreport --- */

void ctl_save_trace_for_bugreport(struct ctl_msg *m)
{
	Perfetto__Protos__SaveTraceForBugreportResponse r =
		PERFETTO__PROTOS__SAVE_TRACE_FOR_BUGREPORT_RESPONSE__INIT;

	r.has_success = true;
	r.success = false;
	r.msg = SAVE_FOR_BUGREPORT_MSG;
	ipc_reply_send(&m->reply, &r.base, -1, false);
}

/* --- ChangeTraceConfig --- */

/* Replaces a repeated string field's contents with copies of src. */
static int ctc_copy_strings(char ***dst, size_t *ndst, char *const *src,
			    size_t nsrc)
{
	char **v = calloc(nsrc + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < nsrc; i++) {
		v[i] = strdup(src[i] ? src[i] : "");
		if (!v[i]) {
			while (i--)
				free(v[i]);
			free(v);
			return -ENOMEM;
		}
	}
	/* The session's config was unpacked with the default allocator
	 * (malloc/free), so its strings are released the same way. */
	for (size_t i = 0; i < *ndst; i++)
		free((*dst)[i]);
	free(*dst);
	*dst = v;
	*ndst = nsrc;
	return 0;
}

static const char *ctc_name(const Perfetto__Protos__TraceConfig__DataSource *e)
{
	return e && e->config && e->config->name ? e->config->name : NULL;
}

/*
 * The entry of the session's config that new entry j pairs with: the k-th
 * entry of the same name, k being how many entries of that name come
 * before j in the new config. -1 if there is none.
 */
static int ctc_pair(const Perfetto__Protos__TraceConfig *cur,
		    const Perfetto__Protos__TraceConfig *upd, size_t j)
{
	const char *name = ctc_name(upd->data_sources[j]);
	size_t k = 0;

	if (!name)
		return -1;
	for (size_t i = 0; i < j; i++) {
		const char *n = ctc_name(upd->data_sources[i]);

		k += n && !strcmp(n, name);
	}
	for (size_t i = 0; i < cur->n_data_sources; i++) {
		const char *n = ctc_name(cur->data_sources[i]);

		if (n && !strcmp(n, name) && k-- == 0)
			return (int)i;
	}
	return -1;
}

static bool ctc_has_instance(const struct ctl_session *s, unsigned idx,
			     uint16_t producer_id)
{
	for (unsigned i = 0; i < s->ninst; i++)
		if (s->inst[i].cfg_index == idx &&
		    s->inst[i].producer_id == producer_id)
			return true;
	return false;
}

/* Sets up entry idx on every producer that now matches and has none. */
static void ctc_setup_new(struct ctl *ctl, struct ctl_session *s, unsigned idx)
{
	const char *name = ctc_name(s->cfg->data_sources[idx]);

	for (struct ctl_producer *p = ctl->producers; p && !s->dead;
	     p = p->next) {
		if (ctc_has_instance(s, idx, p->id))
			continue;
		for (unsigned d = 0; d < p->nds; d++)
			if (!strcmp(p->ds[d].name, name)) {
				/* Checks the filters and lockdown itself. */
				ctl_setup_instance(ctl, s, idx, p, &p->ds[d]);
				break;
			}
	}
}

/* Stores the session's config bytes again after a change (Attach and
 * later readers see the config as currently stored). */
static void ctc_repack(struct ctl_session *s)
{
	size_t len = protobuf_c_message_get_packed_size(&s->cfg->base);
	uint8_t *b = malloc(len ? len : 1);

	if (!b)
		return; /* the old bytes stay: still a valid config */
	protobuf_c_message_pack(&s->cfg->base, b);
	free(s->cfg_bytes);
	s->cfg_bytes = b;
	s->cfg_len = len;
}

static void ctc_apply(struct ctl *ctl, struct ctl_session *s,
		      const Perfetto__Protos__TraceConfig *upd)
{
	size_t n = s->cfg->n_data_sources;
	bool *changed = calloc(n + 1, sizeof(*changed));
	bool any = false;

	if (!changed) {
		spn_log_error("ctl", "ChangeTraceConfig: out of memory");
		return;
	}
	for (size_t j = 0; j < upd->n_data_sources; j++) {
		const Perfetto__Protos__TraceConfig__DataSource *u =
			upd->data_sources[j];
		int i = ctc_pair(s->cfg, upd, j);
		Perfetto__Protos__TraceConfig__DataSource *e;

		if (i < 0)
			continue; /* new entries are not added (§3) */
		e = s->cfg->data_sources[i];
		if (ctc_copy_strings(&e->producer_name_filter,
				     &e->n_producer_name_filter,
				     u->producer_name_filter,
				     u->n_producer_name_filter) < 0 ||
		    ctc_copy_strings(&e->producer_name_regex_filter,
				     &e->n_producer_name_regex_filter,
				     u->producer_name_regex_filter,
				     u->n_producer_name_regex_filter) < 0) {
			spn_log_error("ctl", "ChangeTraceConfig: out of memory");
			continue;
		}
		changed[i] = true;
		any = true;
	}
	if (any)
		ctc_repack(s);
	for (size_t i = 0; i < n && !s->dead; i++)
		if (changed[i])
			ctc_setup_new(ctl, s, (unsigned)i);
	free(changed);
}

void ctl_change_trace_config(struct ctl *ctl, struct ctl_session *s,
			     struct ctl_msg *m)
{
	Perfetto__Protos__ChangeTraceConfigRequest *r =
		perfetto__protos__change_trace_config_request__unpack(
			NULL, m->len, m->bytes);
	Perfetto__Protos__ChangeTraceConfigResponse resp =
		PERFETTO__PROTOS__CHANGE_TRACE_CONFIG_RESPONSE__INIT;

	if (r && r->trace_config && s &&
	    (s->state == SVC_SESSION_CONFIGURED ||
	     s->state == SVC_SESSION_STARTED))
		ctc_apply(ctl, s, r->trace_config);
	else if (s)
		spn_log_info("ctl", "session %llu: ChangeTraceConfig ignored "
			     "(session %s%s)", (unsigned long long)s->id,
			     svc_session_state_name(s->state),
			     r && r->trace_config ? "" : ", no config");
	ipc_reply_send(&m->reply, &resp.base, -1, false);
	if (r)
		perfetto__protos__change_trace_config_request__free_unpacked(r,
									     NULL);
}
