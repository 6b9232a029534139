// SPDX-License-Identifier: Apache-2.0
// Tracing sessions on the control plane: EnableTracing (guardrails, buffer
// allocation, data-source fan-out, triggers), start, flush, disable, free,
// and the ConsumerPort calls that steer them (consumer-port.md).
//
// Control thread only. A consumer is named by (lane, connection id); its
// replies travel through ipc_reply handles, which post to its lane.
#include <errno.h>
#include <stddef.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/ctl_int.h"
#include "core/svc_compress.h"
#include "ipc/log.h"

#define CTL_DEFAULT_FLUSH_TIMEOUT_MS 5000u
#define CTL_DEFAULT_STOP_TIMEOUT_MS 5000u
#define CTL_DEFAULT_FILE_PERIOD_MS 5000u
#define CTL_MIN_FILE_PERIOD_MS 100u

static int64_t ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ctl_session *ctl_session_of(struct ctl *ctl, unsigned lane,
				   uint64_t conn_id)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		if (s->conn_id && s->conn_id == conn_id && s->lane == lane)
			return s;
	return NULL;
}

static struct ctl_inst *ctl_inst_find(struct ctl_session *s, uint16_t pid,
				      uint64_t id)
{
	for (unsigned i = 0; i < s->ninst; i++)
		if (s->inst[i].id == id && s->inst[i].producer_id == pid)
			return &s->inst[i];
	return NULL;
}

/* Sends EnableTracingResponse{disabled:true[, error]} once. */
static void ctl_reply_disabled(struct ctl_session *s)
{
	Perfetto__Protos__EnableTracingResponse r =
		PERFETTO__PROTOS__ENABLE_TRACING_RESPONSE__INIT;

	if (!s->has_enable_reply)
		return;
	r.state_case = PERFETTO__PROTOS__ENABLE_TRACING_RESPONSE__STATE_DISABLED;
	r.disabled = true;
	r.error = s->disable_error;
	ipc_reply_send(&s->enable_reply, &r.base, -1, false);
	s->has_enable_reply = false;
}

static void ctl_reply_enable_error(struct ipc_reply *reply, const char *err)
{
	Perfetto__Protos__EnableTracingResponse r =
		PERFETTO__PROTOS__ENABLE_TRACING_RESPONSE__INIT;

	r.state_case = PERFETTO__PROTOS__ENABLE_TRACING_RESPONSE__STATE_DISABLED;
	r.disabled = true;
	r.error = (char *)err;
	ipc_reply_send(reply, &r.base, -1, false);
}

/* Sends a message of type d with no field set (sized for small ones). */
static void ctl_reply_empty(struct ipc_reply *reply,
			    const ProtobufCMessageDescriptor *d)
{
	_Alignas(max_align_t) unsigned char m[256];

	if (d->sizeof_message > sizeof(m)) {
		ipc_reply_reject(reply);
		return;
	}
	protobuf_c_message_init(d, m);
	ipc_reply_send(reply, (ProtobufCMessage *)m, -1, false);
}

/* --- data-source fan-out (producer-port.md §6.2) --- */

/* Whether name fully matches regex pattern (POSIX ERE stands in for
 * ECMAScript); an invalid pattern matches nothing. */
static bool ctl_full_match(const char *pattern, const char *name)
{
	regex_t re;
	regmatch_t mt;
	bool ok;

	if (regcomp(&re, pattern, REG_EXTENDED))
		return false;
	ok = !regexec(&re, name, 1, &mt, 0) && mt.rm_so == 0 &&
	     (size_t)mt.rm_eo == strlen(name);
	regfree(&re);
	return ok;
}

static bool ctl_name_matches(const Perfetto__Protos__TraceConfig__DataSource *e,
			     const char *name)
{
	bool any = e->n_producer_name_filter || e->n_producer_name_regex_filter;

	for (size_t i = 0; i < e->n_producer_name_filter; i++)
		if (!strcmp(e->producer_name_filter[i], name))
			return true;
	for (size_t i = 0; i < e->n_producer_name_regex_filter; i++)
		if (ctl_full_match(e->producer_name_regex_filter[i], name))
			return true;
	return !any;
}

/* Buffer index of data source entry e (guardrails checked it exists). */
static int ctl_ds_buffer(const struct ctl_session *s,
			 const Perfetto__Protos__TraceConfig__DataSource *e)
{
	const Perfetto__Protos__DataSourceConfig *c = e->config;

	if (c->target_buffer_name && c->target_buffer_name[0]) {
		for (size_t i = 0; i < s->cfg->n_buffers; i++)
			if (s->cfg->buffers[i]->name &&
			    !strcmp(s->cfg->buffers[i]->name,
				    c->target_buffer_name))
				return (int)i;
		return -1;
	}
	return c->target_buffer < s->nbufs ? (int)c->target_buffer : -1;
}

/* The config sent to the producer: the consumer's, service fields rewritten. */
static int ctl_inst_config(struct ctl_session *s, unsigned idx, int buf,
			   struct ctl_inst *in)
{
	Perfetto__Protos__DataSourceConfig c = *s->cfg->data_sources[idx]->config;
	uint32_t stop = s->cfg->has_data_source_stop_timeout_ms &&
					s->cfg->data_source_stop_timeout_ms
				? s->cfg->data_source_stop_timeout_ms
				: CTL_DEFAULT_STOP_TIMEOUT_MS;

	c.has_target_buffer = true;
	c.target_buffer = s->bufs[buf]->id;
	c.has_trace_duration_ms = true;
	c.trace_duration_ms = s->duration_ms;
	c.has_tracing_session_id = true;
	c.tracing_session_id = s->id;
	c.has_enable_extra_guardrails = true;
	c.enable_extra_guardrails = s->cfg->enable_extra_guardrails;
	c.has_stop_timeout_ms = true;
	c.stop_timeout_ms = stop;
	c.has_session_initiator = true;
	c.session_initiator = 0;
	c.has_prefer_suspend_clock_for_duration =
		s->cfg->prefer_suspend_clock_for_duration;
	c.prefer_suspend_clock_for_duration =
		s->cfg->prefer_suspend_clock_for_duration;
	in->cfg_len = protobuf_c_message_get_packed_size(&c.base);
	in->cfg = malloc(in->cfg_len ? in->cfg_len : 1);
	if (!in->cfg)
		return -ENOMEM;
	protobuf_c_message_pack(&c.base, in->cfg);
	return 0;
}

/* Sends setup_data_source or start_data_source for instance in. */
static void ctl_inst_cmd(struct ctl *ctl, struct ctl_producer *p,
			 struct ctl_inst *in, bool start)
{
	Perfetto__Protos__GetAsyncCommandResponse cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__INIT;
	Perfetto__Protos__GetAsyncCommandResponse__SetupDataSource su =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__SETUP_DATA_SOURCE__INIT;
	Perfetto__Protos__GetAsyncCommandResponse__StartDataSource st =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__START_DATA_SOURCE__INIT;
	Perfetto__Protos__DataSourceConfig *c =
		perfetto__protos__data_source_config__unpack(NULL, in->cfg_len,
							     in->cfg);

	if (!c)
		return;
	if (start) {
		st.has_new_instance_id = true;
		st.new_instance_id = in->id;
		st.config = c;
		cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE;
		cmd.start_data_source = &st;
	} else {
		su.has_new_instance_id = true;
		su.new_instance_id = in->id;
		su.config = c;
		cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE;
		cmd.setup_data_source = &su;
	}
	ctl_send_cmd(ctl, p, &cmd, -1);
	perfetto__protos__data_source_config__free_unpacked(c, NULL);
}

static void ctl_inst_start(struct ctl *ctl, struct ctl_session *s,
			   struct ctl_inst *in)
{
	struct ctl_producer *p = ctl_producer_find(ctl, in->producer_id);

	if (!p || in->state != INST_CONFIGURED)
		return;
	in->state = in->notify_start ? INST_STARTING : INST_STARTED;
	ctl_observe_inst(ctl, s, in);
	ctl_inst_cmd(ctl, p, in, true);
}

/* Creates the instance of data source entry idx on producer p. */
void ctl_setup_instance(struct ctl *ctl, struct ctl_session *s, unsigned idx,
			struct ctl_producer *p, const struct ctl_ds *ds)
{
	const Perfetto__Protos__TraceConfig__DataSource *e =
		s->cfg->data_sources[idx];
	int buf = ctl_ds_buffer(s, e);
	struct ctl_inst *in;

	/* While the buffers are being made, ctl_enable_finish sets every
	 * producer up once they exist. */
	if (s->allocating || buf < 0 || (unsigned)buf >= s->nbufs ||
	    !ctl_name_matches(e, p->name))
		return;
	if (ctl->lockdown && p->cred.uid != ctl->svc->uid)
		return;
	if (s->ninst == s->cap_inst) {
		unsigned cap = s->cap_inst ? 2 * s->cap_inst : 4;
		struct ctl_inst *v = realloc(s->inst, cap * sizeof(*v));

		if (!v)
			return;
		s->inst = v;
		s->cap_inst = cap;
	}
	in = &s->inst[s->ninst];
	memset(in, 0, sizeof(*in));
	in->id = ctl->next_inst_id++;
	in->producer_id = p->id;
	in->cfg_index = idx;
	in->buffer_id = s->bufs[buf]->id;
	in->state = INST_CONFIGURED;
	in->notify_start = ds->notify_start;
	in->notify_stop = ds->notify_stop;
	in->no_flush = ds->no_flush;
	in->clear_incr = ds->clear_incr;
	if (ctl_inst_config(s, idx, buf, in) < 0)
		return;
	if (ctl_producer_smb(ctl, p, s->cfg) < 0 ||
	    lane_post_allow(ctl->svc, p->lane, p->id, s->bufs[buf]) < 0) {
		free(in->cfg);
		return;
	}
	s->ninst++;
	ctl_inst_cmd(ctl, p, in, false);
	if (s->state == SVC_SESSION_STARTED)
		ctl_inst_start(ctl, s, in);
}

static void ctl_setup_all(struct ctl *ctl, struct ctl_session *s)
{
	for (unsigned i = 0; i < s->cfg->n_data_sources; i++) {
		const Perfetto__Protos__DataSourceConfig *c =
			s->cfg->data_sources[i]->config;

		if (!c || !c->name)
			continue;
		for (struct ctl_producer *p = ctl->producers; p; p = p->next)
			for (unsigned d = 0; d < p->nds; d++)
				if (!strcmp(p->ds[d].name, c->name))
					ctl_setup_instance(ctl, s, i, p,
							   &p->ds[d]);
	}
}

void ctl_sessions_on_ds(struct ctl *ctl, struct ctl_producer *p,
			const struct ctl_ds *ds)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		if (s->state != SVC_SESSION_CONFIGURED &&
		    s->state != SVC_SESSION_STARTED)
			continue;
		for (unsigned i = 0; i < s->cfg->n_data_sources; i++) {
			const Perfetto__Protos__DataSourceConfig *c =
				s->cfg->data_sources[i]->config;

			if (c && c->name && !strcmp(c->name, ds->name))
				ctl_setup_instance(ctl, s, i, p, ds);
		}
	}
}

/* --- disabling and freeing --- */

static void ctl_timer_cancel(struct ctl *ctl, uint64_t *id)
{
	if (*id)
		ipc_loop_timer_cancel(ctl->loop, *id);
	*id = 0;
}

/* Revokes every producer's right to write into the session's buffers. */
static void ctl_revoke_all(struct ctl *ctl, struct ctl_session *s)
{
	for (unsigned i = 0; i < s->ninst; i++) {
		struct ctl_producer *p =
			ctl_producer_find(ctl, s->inst[i].producer_id);

		if (p)
			lane_post_revoke(ctl->svc, p->lane, p->id,
					 s->inst[i].buffer_id);
	}
}

static void ctl_session_release(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	for (unsigned i = 0; i < s->ninst; i++)
		free(s->inst[i].cfg);
	if (s->seqids)
		svc_seqids_destroy(s->seqids);
	svc_pkts_destroy(&s->pkts);
	perfetto__protos__trace_config__free_unpacked(s->cfg, NULL);
	free(s->cfg_bytes);
	free(s->bufs);
	free(s->inst);
	free(s->detach_key);
	free(s->disable_error);
	free(s);
}

/*
 * Ends a session: unlinks it, cancels its timers and flushes, sends the
 * pending EnableTracing reply, revokes the producers' access and drops the
 * buffers. The memory itself goes at the next loop turn, so a caller up
 * the stack still holding s reads valid (dead) memory.
 */
static void ctl_session_free(struct ctl *ctl, struct ctl_session *s)
{
	struct ctl_session **pp = &ctl->sessions;

	if (s->dead)
		return;
	while (*pp && *pp != s)
		pp = &(*pp)->next;
	if (*pp)
		*pp = s->next;
	s->dead = true;
	ctl_timer_cancel(ctl, &s->duration_timer);
	ctl_timer_cancel(ctl, &s->stop_timer);
	ctl_timer_cancel(ctl, &s->trigger_timer);
	ctl_timer_cancel(ctl, &s->file_timer);
	ctl_timer_cancel(ctl, &s->periodic_timer);
	ctl_timer_cancel(ctl, &s->flush_timer);
	ctl_timer_cancel(ctl, &s->clear_timer);
	for (int list = 0; list < 2; list++) {
		struct ctl_flush **head = list ? &s->scraping : &s->flushes;

		while (*head) {
			struct ctl_flush *f = *head;

			*head = f->next;
			ctl_timer_cancel(ctl, &f->timer);
			if (f->has_reply)
				ipc_reply_reject(&f->reply);
			if (f->done)
				f->done(ctl, s, -1, f->done_arg);
			free(f->waiting);
			free(f);
		}
	}
	ctl_reply_disabled(s);
	/* The final drain a clone held back (ctl_file_hold) is still due. */
	if (s->file_final_due && s->file_fd >= 0)
		ctl_write_file(ctl, s);
	ctl_revoke_all(ctl, s);
	for (unsigned i = 0; i < s->nbufs; i++)
		if (s->bufs[i])
			svc_buf_unref(s->bufs[i]);
	s->nbufs = 0;
	if (s->file_fd >= 0)
		close(s->file_fd);
	s->file_fd = -1;
	if (ipc_loop_timer_add(ctl->loop, 0, ctl_session_release, s, NULL) < 0)
		ctl_session_release(ctl->loop, s);
}

/* The final drain of a write_into_file session, then its file closes. */
static void ctl_file_final(struct ctl *ctl, struct ctl_session *s)
{
	s->file_final_due = false;
	if (s->file_fd < 0)
		return;
	ctl_write_file(ctl, s); /* closes the file itself when full */
	if (s->file_fd >= 0)
		close(s->file_fd);
	s->file_fd = -1;
}

/* The session reached DISABLED: final file write, then the reply. */
static void ctl_disabled(struct ctl *ctl, struct ctl_session *s)
{
	ctl_timer_cancel(ctl, &s->stop_timer);
	ctl_timer_cancel(ctl, &s->duration_timer);
	ctl_timer_cancel(ctl, &s->file_timer);
	ctl_timer_cancel(ctl, &s->flush_timer);
	ctl_timer_cancel(ctl, &s->clear_timer);
	s->state = SVC_SESSION_DISABLED;
	svc_pkts_record_event(&s->pkts, SVC_EV_TRACING_DISABLED, 0);
	/* A clone copying the session's file holds the drain back: it runs
	 * when the clone lets go (ctl_file_release). */
	if (s->file_fd >= 0 && s->file_holds)
		s->file_final_due = true;
	else
		ctl_file_final(ctl, s);
	spn_log_info("ctl", "session %llu disabled",
		     (unsigned long long)s->id);
	ctl_reply_disabled(s);
	/* No consumer (it left, or the session is detached): nobody can read
	 * it any more, so it goes now (consumer-port.md §6), once a file
	 * session got its final drain. */
	if (s->conn_id == 0 && !s->file_final_due)
		ctl_session_free(ctl, s);
}

void ctl_file_hold(struct ctl_session *s)
{
	s->file_holds++;
}

void ctl_file_release(struct ctl *ctl, struct ctl_session *s)
{
	if (--s->file_holds || !s->file_final_due)
		return;
	ctl_file_final(ctl, s);
	if (s->conn_id == 0)
		ctl_session_free(ctl, s);
}

/* Asks the lane of each producer with an instance in s (once per producer)
 * to scrape its SMB and answer with CTL_SCRAPED(token). Returns the scrapes
 * posted. */
static unsigned ctl_scrape_producers(struct ctl *ctl, struct ctl_session *s,
				     uint64_t token)
{
	unsigned posted = 0;

	for (unsigned i = 0; i < s->ninst; i++) {
		struct ctl_producer *p =
			ctl_producer_find(ctl, s->inst[i].producer_id);
		bool dup = false;

		for (unsigned j = 0; j < i; j++)
			dup |= s->inst[j].producer_id == s->inst[i].producer_id;
		if (p && !dup &&
		    lane_post_scrape(ctl->svc, p->lane, p->id, token) == 0)
			posted++;
	}
	return posted;
}

/* All instances stopped: scrape the producers' SMBs, then ctl_disabled. */
static void ctl_finish_stop(struct ctl *ctl, struct ctl_session *s)
{
	s->scrape_token = ctl->next_token++;
	s->scrapes_pending = ctl_scrape_producers(ctl, s, s->scrape_token);
	if (!s->scrapes_pending)
		ctl_disabled(ctl, s);
}

static bool ctl_flush_scraped(struct ctl *ctl, struct ctl_session *s,
			      uint64_t token);

void ctl_sessions_on_scraped(struct ctl *ctl, uint64_t token)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		if (ctl_flush_scraped(ctl, s, token))
			return;
		if (s->scrape_token != token || !s->scrapes_pending)
			continue;
		if (--s->scrapes_pending == 0 &&
		    s->state != SVC_SESSION_DISABLED)
			ctl_disabled(ctl, s);
		return;
	}
}

static bool ctl_all_stopped(const struct ctl_session *s)
{
	for (unsigned i = 0; i < s->ninst; i++)
		if (s->inst[i].state != INST_STOPPED)
			return false;
	return true;
}

static void ctl_stop_timeout(struct ipc_loop *loop, void *arg);

/* DisableTracing semantics (consumer-port.md §3). */
static void ctl_disable(struct ctl *ctl, struct ctl_session *s)
{
	if (s->state == SVC_SESSION_DISABLED ||
	    s->state == SVC_SESSION_STOP_WAIT ||
	    s->state == SVC_SESSION_CLONED_READ_ONLY)
		return;
	ctl_timer_cancel(ctl, &s->trigger_timer);
	ctl_timer_cancel(ctl, &s->duration_timer);
	if (s->state == SVC_SESSION_CONFIGURED) {
		for (unsigned i = 0; i < s->ninst; i++) {
			s->inst[i].state = INST_STOPPED;
			ctl_observe_inst(ctl, s, &s->inst[i]);
		}
		ctl_disabled(ctl, s);
		return;
	}
	for (unsigned i = 0; i < s->ninst; i++) {
		struct ctl_inst *in = &s->inst[i];
		struct ctl_producer *p = ctl_producer_find(ctl, in->producer_id);

		if (in->state == INST_STOPPED || in->state == INST_STOPPING)
			continue;
		if (p)
			ctl_send_stop(ctl, p, in->id);
		in->state = p && in->notify_stop ? INST_STOPPING : INST_STOPPED;
		ctl_observe_inst(ctl, s, in);
	}
	if (ctl_all_stopped(s)) {
		s->state = SVC_SESSION_STOP_WAIT;
		ctl_finish_stop(ctl, s);
		return;
	}
	s->state = SVC_SESSION_STOP_WAIT;
	ipc_loop_timer_add(ctl->loop,
			   s->cfg->data_source_stop_timeout_ms
				   ? s->cfg->data_source_stop_timeout_ms
				   : CTL_DEFAULT_STOP_TIMEOUT_MS,
			   ctl_stop_timeout, s, &s->stop_timer);
}

static void ctl_stop_timeout(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	s->stop_timer = 0;
	for (unsigned i = 0; i < s->ninst; i++) {
		if (s->inst[i].state == INST_STOPPED)
			continue;
		s->inst[i].state = INST_STOPPED;
		ctl_observe_inst(s->ctl, s, &s->inst[i]);
	}
	spn_log_warn("ctl", "session %llu: data sources did not ack the stop",
		     (unsigned long long)s->id);
	/* ctl is reachable through any buffer's svc; sessions keep one. */
	ctl_finish_stop(s->ctl, s);
}

/* --- flushes --- */

/* The flush is over (acked, timed out, scraped): reply, maybe disable. */
static void ctl_flush_finish(struct ctl *ctl, struct ctl_session *s,
			     struct ctl_flush *f)
{
	bool disable = f->then_disable;

	if (f->ok)
		s->flushes_succeeded++;
	else
		s->flushes_failed++;
	/* The final flush (reason "trace stop": the duration's, the perfetto
	 * CLI's before DisableTracing) sets the outcome, as in traced. */
	if ((f->flags & SPN_FLUSH_REASON_MASK) == SPN_FLUSH_REASON_TRACE_STOP)
		s->final_flush_outcome = f->ok ? 1 : 2;
	svc_pkts_record_event(&s->pkts, SVC_EV_ALL_DATA_SOURCES_FLUSHED, 0);
	if (f->done)
		f->done(ctl, s, f->ok ? 1 : 0, f->done_arg);
	if (f->has_reply) {
		if (f->ok)
			ctl_reply_empty(&f->reply,
					&perfetto__protos__flush_response__descriptor);
		else
			ipc_reply_reject(&f->reply);
	}
	free(f->waiting);
	free(f);
	if (disable)
		ctl_disable(ctl, s);
}

/*
 * Every producer acked (ok) or the timeout hit: scrape the SMBs of the
 * session's producers that allow it (consumer-port.md §5), then finish.
 */
static void ctl_flush_done(struct ctl *ctl, struct ctl_session *s,
			   struct ctl_flush *f, bool ok)
{
	struct ctl_flush **pp = &s->flushes;

	while (*pp && *pp != f)
		pp = &(*pp)->next;
	if (*pp)
		*pp = f->next;
	ctl_timer_cancel(ctl, &f->timer);
	f->ok = ok;
	f->scrape_token = ctl->next_token++;
	f->scrapes_pending = ctl_scrape_producers(ctl, s, f->scrape_token);
	if (!f->scrapes_pending) {
		ctl_flush_finish(ctl, s, f);
		return;
	}
	f->next = s->scraping;
	s->scraping = f;
}

/* A lane finished a flush's scrape; true if token was a flush's. */
static bool ctl_flush_scraped(struct ctl *ctl, struct ctl_session *s,
			      uint64_t token)
{
	for (struct ctl_flush **pp = &s->scraping; *pp; pp = &(*pp)->next) {
		struct ctl_flush *f = *pp;

		if (f->scrape_token != token)
			continue;
		if (--f->scrapes_pending == 0) {
			*pp = f->next;
			ctl_flush_finish(ctl, s, f);
		}
		return true;
	}
	return false;
}

static void ctl_flush_timeout(struct ipc_loop *loop, void *arg)
{
	struct ctl_flush *f = arg;
	(void)loop;

	f->timer = 0;
	for (struct ctl_session *s = f->session->ctl->sessions; s; s = s->next)
		if (s == f->session) {
			ctl_flush_done(s->ctl, s, f, false);
			return;
		}
}

/* Whether id is one of ids[0..n), or ids is NULL (every buffer). */
static bool ctl_buf_in(uint16_t id, const uint16_t *ids, unsigned n)
{
	for (unsigned i = 0; ids && i < n; i++)
		if (ids[i] == id)
			return true;
	return !ids;
}

/*
 * Flushes the session: one flush command per producer with flushable
 * instances (those writing into the buffers `only` lists, or all when it
 * is NULL); completes when all acked or after timeout_ms.
 */
static void ctl_flush_ex(struct ctl *ctl, struct ctl_session *s,
			 uint32_t timeout_ms, uint64_t flags,
			 struct ipc_reply *reply, bool then_disable,
			 ctl_flush_done_fn done, void *done_arg,
			 const uint16_t *only, unsigned nonly)
{
	struct ctl_flush *f = calloc(1, sizeof(*f));
	uint64_t *ids = calloc(s->ninst ? s->ninst : 1, sizeof(*ids));

	if (!f || !ids || !(f->waiting = calloc(s->ninst + 1,
						 sizeof(*f->waiting)))) {
		free(f);
		free(ids);
		if (reply)
			ipc_reply_reject(reply);
		if (done)
			done(ctl, s, 0, done_arg);
		if (then_disable)
			ctl_disable(ctl, s);
		return;
	}
	f->id = ctl->next_flush_id++;
	f->session = s;
	f->then_disable = then_disable;
	f->flags = flags;
	f->done = done;
	f->done_arg = done_arg;
	if (reply) {
		f->reply = *reply;
		f->has_reply = true;
	}
	s->flushes_requested++;
	svc_pkts_record_event(&s->pkts, SVC_EV_FLUSH_STARTED, 0);
	for (struct ctl_producer *p = ctl->producers; p; p = p->next) {
		size_t n = 0;

		for (unsigned i = 0; i < s->ninst; i++)
			if (s->inst[i].producer_id == p->id &&
			    !s->inst[i].no_flush &&
			    s->inst[i].state != INST_STOPPED &&
			    ctl_buf_in(s->inst[i].buffer_id, only, nonly))
				ids[n++] = s->inst[i].id;
		if (!n)
			continue;
		ctl_send_flush(ctl, p, ids, n, f->id, flags);
		f->waiting[f->nwaiting++] = p->id;
	}
	free(ids);
	f->next = s->flushes;
	s->flushes = f;
	if (!f->nwaiting) {
		ctl_flush_done(ctl, s, f, true);
		return;
	}
	if (!timeout_ms)
		timeout_ms = s->cfg->flush_timeout_ms
				     ? s->cfg->flush_timeout_ms
				     : CTL_DEFAULT_FLUSH_TIMEOUT_MS;
	ipc_loop_timer_add(ctl->loop, timeout_ms, ctl_flush_timeout, f,
			   &f->timer);
}

static void ctl_flush(struct ctl *ctl, struct ctl_session *s,
		      uint32_t timeout_ms, uint64_t flags,
		      struct ipc_reply *reply, bool then_disable)
{
	ctl_flush_ex(ctl, s, timeout_ms, flags, reply, then_disable, NULL,
		     NULL, NULL, 0);
}

void ctl_flush_then(struct ctl *ctl, struct ctl_session *s, uint64_t flags,
		    const uint16_t *only, unsigned nonly,
		    ctl_flush_done_fn done, void *arg)
{
	ctl_flush_ex(ctl, s, 0, flags, NULL, false, done, arg, only, nonly);
}

void ctl_sessions_on_flush_ack(struct ctl *ctl, uint16_t id, uint64_t fid)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		struct ctl_flush *f = s->flushes;

		while (f) {
			struct ctl_flush *next = f->next;

			if (f->id <= fid) {
				for (unsigned i = 0; i < f->nwaiting; i++)
					if (f->waiting[i] == id)
						f->waiting[i--] =
							f->waiting[--f->nwaiting];
				if (!f->nwaiting)
					ctl_flush_done(ctl, s, f, true);
			}
			f = next;
		}
	}
}

/* --- start --- */

static void ctl_periodic(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	s->periodic_timer = 0;
	if (s->dead || s->state != SVC_SESSION_STARTED)
		return;
	svc_pkts_periodic(&s->pkts);
	ipc_loop_timer_add(s->ctl->loop, svc_pkts_snapshot_interval_ms(&s->pkts),
			   ctl_periodic, s, &s->periodic_timer);
}

static void ctl_duration_expired(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	s->duration_timer = 0;
	if (s->dead || s->state != SVC_SESSION_STARTED)
		return;
	/* Flush first, then disable (what the perfetto CLI and the
	 * reference service do at the end of a timed trace). */
	ctl_flush(s->ctl, s, 0,
		  SPN_FLUSH_REASON_TRACE_STOP | SPN_FLUSH_INITIATOR_TRACED, NULL,
		  true);
}

static void ctl_file_tick(struct ipc_loop *loop, void *arg);

/* TraceConfig.flush_period_ms: a periodic flush while STARTED. */
static void ctl_flush_tick(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	s->flush_timer = 0;
	if (s->dead || s->state != SVC_SESSION_STARTED)
		return;
	ctl_flush(s->ctl, s, 0,
		  SPN_FLUSH_REASON_PERIODIC | SPN_FLUSH_INITIATOR_TRACED, NULL,
		  false);
	ipc_loop_timer_add(s->ctl->loop, s->cfg->flush_period_ms,
			   ctl_flush_tick, s, &s->flush_timer);
}

/* incremental_state_config.clear_period_ms: clear_incremental_state to
 * every instance that handles it, per producer. */
static void ctl_clear_tick(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	struct ctl *ctl = s->ctl;
	uint64_t *ids;
	(void)loop;

	s->clear_timer = 0;
	if (s->dead || s->state != SVC_SESSION_STARTED)
		return;
	ids = calloc(s->ninst ? s->ninst : 1, sizeof(*ids));
	for (struct ctl_producer *p = ctl->producers; ids && p; p = p->next) {
		Perfetto__Protos__GetAsyncCommandResponse cmd =
			PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__INIT;
		Perfetto__Protos__GetAsyncCommandResponse__ClearIncrementalState c =
			PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CLEAR_INCREMENTAL_STATE__INIT;
		size_t n = 0;

		for (unsigned i = 0; i < s->ninst; i++)
			if (s->inst[i].producer_id == p->id &&
			    s->inst[i].clear_incr &&
			    s->inst[i].state == INST_STARTED)
				ids[n++] = s->inst[i].id;
		if (!n)
			continue;
		c.n_data_source_ids = n;
		c.data_source_ids = ids;
		cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_CLEAR_INCREMENTAL_STATE;
		cmd.clear_incremental_state = &c;
		ctl_send_cmd(ctl, p, &cmd, -1);
	}
	free(ids);
	ipc_loop_timer_add(ctl->loop,
			   s->cfg->incremental_state_config->clear_period_ms,
			   ctl_clear_tick, s, &s->clear_timer);
}

static void ctl_session_start(struct ctl *ctl, struct ctl_session *s)
{
	uint32_t period;

	if (s->state != SVC_SESSION_CONFIGURED)
		return;
	s->state = SVC_SESSION_STARTED;
	s->started_once = true;
	svc_pkts_record_event(&s->pkts, SVC_EV_TRACING_STARTED, 0);
	ctl_periodic(ctl->loop, s);
	if (s->duration_ms)
		ipc_loop_timer_add(ctl->loop, s->duration_ms,
				   ctl_duration_expired, s, &s->duration_timer);
	if (s->file_fd >= 0) {
		period = s->cfg->file_write_period_ms
				 ? s->cfg->file_write_period_ms
				 : CTL_DEFAULT_FILE_PERIOD_MS;
		if (period < CTL_MIN_FILE_PERIOD_MS)
			period = CTL_MIN_FILE_PERIOD_MS;
		ipc_loop_timer_add(ctl->loop, period, ctl_file_tick, s,
				   &s->file_timer);
	}
	if (s->cfg->flush_period_ms)
		ipc_loop_timer_add(ctl->loop, s->cfg->flush_period_ms,
				   ctl_flush_tick, s, &s->flush_timer);
	if (s->cfg->incremental_state_config &&
	    s->cfg->incremental_state_config->clear_period_ms)
		ipc_loop_timer_add(ctl->loop,
				   s->cfg->incremental_state_config->clear_period_ms,
				   ctl_clear_tick, s, &s->clear_timer);
	for (unsigned i = 0; i < s->ninst; i++)
		ctl_inst_start(ctl, s, &s->inst[i]);
	ctl_sessions_on_started(ctl, 0, 0);
	spn_log_info("ctl", "session %llu started (%u data source instances)",
		     (unsigned long long)s->id, s->ninst);
}

/* Periodic write_into_file drain; stops the session at max_file_size. */
static void ctl_file_tick(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	uint32_t period = s->cfg->file_write_period_ms
				  ? s->cfg->file_write_period_ms
				  : CTL_DEFAULT_FILE_PERIOD_MS;
	(void)loop;

	s->file_timer = 0;
	if (s->dead || s->file_fd < 0)
		return;
	/* While a clone copies the file, its drains wait (ctl_file_hold). */
	if (!s->file_holds && ctl_file_drain(s->ctl, s) != 0)
		return;
	if (period < CTL_MIN_FILE_PERIOD_MS)
		period = CTL_MIN_FILE_PERIOD_MS;
	ipc_loop_timer_add(s->ctl->loop, period, ctl_file_tick, s,
			   &s->file_timer);
}

int ctl_file_drain(struct ctl *ctl, struct ctl_session *s)
{
	int rc = ctl_write_file(ctl, s);

	/* A failed write, or max_file_size_bytes reached: stop. */
	if (rc != 0)
		ctl_disable(ctl, s);
	return rc;
}

static void ctl_trigger_timeout(struct ipc_loop *loop, void *arg)
{
	struct ctl_session *s = arg;
	(void)loop;

	s->trigger_timer = 0;
	if (s->dead)
		return;
	/* START_TRACING never came: the session ends, nothing recorded. */
	ctl_disable(s->ctl, s);
}

/* --- notifications from producers --- */

void ctl_sessions_on_started(struct ctl *ctl, uint16_t id, uint64_t inst)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		struct ctl_inst *in = id ? ctl_inst_find(s, id, inst) : NULL;
		bool all = true;

		if (in && in->state == INST_STARTING &&
		    s->state == SVC_SESSION_STARTED) {
			in->state = INST_STARTED;
			ctl_observe_inst(ctl, s, in);
		}
		for (unsigned i = 0; i < s->ninst; i++)
			all &= s->inst[i].state == INST_STARTED;
		if (all && s->state == SVC_SESSION_STARTED &&
		    !s->all_started_sent) {
			s->all_started_sent = true;
			svc_pkts_record_event(&s->pkts,
					      SVC_EV_ALL_DATA_SOURCES_STARTED, 0);
			ctl_observe_all_started(ctl, s);
		}
	}
}

void ctl_sessions_on_stopped(struct ctl *ctl, uint16_t id, uint64_t inst)
{
	struct ctl_session *next;

	for (struct ctl_session *s = ctl->sessions; s; s = next) {
		struct ctl_inst *in = ctl_inst_find(s, id, inst);

		next = s->next;
		if (!in || in->state != INST_STOPPING)
			continue;
		in->state = INST_STOPPED;
		ctl_observe_inst(ctl, s, in);
		if (s->state == SVC_SESSION_STOP_WAIT && s->stop_timer &&
		    ctl_all_stopped(s)) {
			ctl_timer_cancel(ctl, &s->stop_timer);
			ctl_finish_stop(ctl, s);
		}
	}
}

/* An instance went away (unregistered data source, producer gone). */
static void ctl_inst_gone(struct ctl *ctl, struct ctl_session *s,
			  struct ctl_inst *in)
{
	in->state = INST_STOPPED;
	ctl_observe_inst(ctl, s, in);
	for (struct ctl_flush *f = s->flushes; f;) {
		struct ctl_flush *next = f->next;
		bool other = false;

		for (unsigned i = 0; i < s->ninst; i++)
			other |= &s->inst[i] != in &&
				 s->inst[i].producer_id == in->producer_id &&
				 s->inst[i].state != INST_STOPPED;
		for (unsigned i = 0; !other && i < f->nwaiting; i++)
			if (f->waiting[i] == in->producer_id)
				f->waiting[i--] = f->waiting[--f->nwaiting];
		if (!f->nwaiting)
			ctl_flush_done(ctl, s, f, true);
		f = next;
	}
	if (s->state == SVC_SESSION_STOP_WAIT && s->stop_timer &&
	    ctl_all_stopped(s)) {
		ctl_timer_cancel(ctl, &s->stop_timer);
		ctl_finish_stop(ctl, s);
	}
}

void ctl_sessions_on_producer_gone(struct ctl *ctl, uint16_t id)
{
	struct ctl_session *next;

	for (struct ctl_session *s = ctl->sessions; s; s = next) {
		next = s->next;
		for (unsigned i = 0; i < s->ninst && !s->dead; i++)
			if (s->inst[i].producer_id == id &&
			    s->inst[i].state != INST_STOPPED)
				ctl_inst_gone(ctl, s, &s->inst[i]);
		/* Pending scrapes of its lane will still be answered. */
	}
}

void ctl_sessions_on_ds_unregistered(struct ctl *ctl, uint16_t id,
				     const char *name)
{
	struct ctl_producer *p = ctl_producer_find(ctl, id);
	struct ctl_session *next;

	for (struct ctl_session *s = ctl->sessions; s; s = next) {
		next = s->next;
		for (unsigned i = 0; i < s->ninst && !s->dead; i++) {
			struct ctl_inst *in = &s->inst[i];
			const char *n =
				s->cfg->data_sources[in->cfg_index]->config->name;

			if (in->producer_id != id || in->state == INST_STOPPED ||
			    strcmp(n, name))
				continue;
			if (p && in->state != INST_STOPPING)
				ctl_send_stop(ctl, p, in->id);
			ctl_inst_gone(ctl, s, in);
		}
	}
}

/* Whether trigger tr may fire now (trace-config.md §1.2): the producer
 * regex, then the skip probability, then the 24 h rate limit. */
static bool ctl_trigger_allowed(struct ctl *ctl, struct ctl_producer *p,
				const Perfetto__Protos__TraceConfig__TriggerConfig__Trigger *tr,
				int64_t now_ms)
{
	unsigned hits = 0;

	if (tr->producer_name_regex && tr->producer_name_regex[0] &&
	    !ctl_full_match(tr->producer_name_regex, p->name))
		return false;
	if (tr->skip_probability > 0 &&
	    (double)random() / ((double)RAND_MAX + 1.0) < tr->skip_probability)
		return false;
	if (!tr->max_per_24_h)
		return true;
	for (size_t i = 0; i < ctl->ntrig_hist; i++)
		if (now_ms - ctl->trig_hist[i].ms < 24 * 3600 * 1000ll &&
		    !strcmp(ctl->trig_hist[i].name, tr->name))
			hits++;
	return hits < tr->max_per_24_h;
}

/* Counts an activation of `name` toward max_per_24_h (once per activation
 * that matched a session), forgetting entries older than a day. */
static void ctl_trigger_count(struct ctl *ctl, const char *name, int64_t now_ms)
{
	size_t w = 0;

	for (size_t i = 0; i < ctl->ntrig_hist; i++) {
		if (now_ms - ctl->trig_hist[i].ms < 24 * 3600 * 1000ll)
			ctl->trig_hist[w++] = ctl->trig_hist[i];
		else
			free(ctl->trig_hist[i].name);
	}
	ctl->ntrig_hist = w;
	if (w == ctl->cap_trig_hist) {
		size_t cap = w ? 2 * w : 16;
		struct ctl_trig_hist *v =
			realloc(ctl->trig_hist, cap * sizeof(*v));

		if (!v)
			return;
		ctl->trig_hist = v;
		ctl->cap_trig_hist = cap;
	}
	ctl->trig_hist[w].name = strdup(name);
	ctl->trig_hist[w].ms = now_ms;
	if (ctl->trig_hist[w].name)
		ctl->ntrig_hist++;
}

/* Applies one fired trigger to session s (trace-config.md §1.3). */
static void ctl_trigger_fire(struct ctl *ctl, struct ctl_session *s,
			     struct ctl_producer *p,
			     const Perfetto__Protos__TraceConfig__TriggerConfig__Trigger *tr)
{
	bool first = !s->triggered;

	svc_pkts_record_trigger(&s->pkts, tr->name, p->name,
				(int32_t)p->cred.uid, tr->stop_delay_ms);
	s->triggered = true;
	switch (s->trigger_mode) {
	case SVC_TRIGGER_START_TRACING:
		if (s->state != SVC_SESSION_CONFIGURED || s->allocating)
			break;
		ctl_timer_cancel(ctl, &s->trigger_timer);
		s->duration_ms = tr->stop_delay_ms;
		ctl_session_start(ctl, s);
		break;
	case SVC_TRIGGER_STOP_TRACING:
		if (!first || s->state != SVC_SESSION_STARTED)
			break;
		/* Final flush then disable, stop_delay_ms from now. */
		ctl_timer_cancel(ctl, &s->duration_timer);
		ipc_loop_timer_add(ctl->loop, tr->stop_delay_ms,
				   ctl_duration_expired, s, &s->duration_timer);
		break;
	case SVC_TRIGGER_CLONE_SNAPSHOT:
		if (s->state == SVC_SESSION_STARTED)
			ctl_observe_clone_trigger(ctl, s, tr->name, p->name,
						  p->cred.uid,
						  tr->stop_delay_ms);
		break;
	default:
		break;
	}
}

void ctl_sessions_on_triggers(struct ctl *ctl, struct ctl_producer *p,
			      char **names, size_t n)
{
	int64_t now = ctl_now_ms();

	for (size_t i = 0; i < n; i++) {
		bool matched = false;
		struct ctl_session *next;

		for (struct ctl_session *s = ctl->sessions; s; s = next) {
			const Perfetto__Protos__TraceConfig__TriggerConfig *tc =
				s->cfg->trigger_config;

			next = s->next;
			if (!tc || s->dead ||
			    s->state == SVC_SESSION_CLONED_READ_ONLY)
				continue;
			for (size_t t = 0; t < tc->n_triggers; t++) {
				const Perfetto__Protos__TraceConfig__TriggerConfig__Trigger
					*tr = tc->triggers[t];

				if (!tr->name || strcmp(tr->name, names[i]) ||
				    !ctl_trigger_allowed(ctl, p, tr, now))
					continue;
				matched = true;
				ctl_trigger_fire(ctl, s, p, tr);
			}
		}
		if (matched)
			ctl_trigger_count(ctl, names[i], now);
	}
}

/* --- EnableTracing (consumer-port.md §2.1) --- */

static int ctl_views(struct ctl *ctl, struct svc_session_view **out,
		     size_t *n)
{
	size_t cnt = 0;
	struct svc_session_view *v;

	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		cnt++;
	v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	cnt = 0;
	for (struct ctl_session *s = ctl->sessions; s; s = s->next, cnt++) {
		v[cnt].id = s->id;
		v[cnt].consumer_uid = s->uid;
		v[cnt].state = s->state;
		v[cnt].exclusive_prio = s->cfg->exclusive_prio;
		v[cnt].unique_session_name = s->cfg->unique_session_name;
		v[cnt].semaphores = s->cfg->session_semaphores;
		v[cnt].n_semaphores = s->cfg->n_session_semaphores;
	}
	*out = v;
	*n = cnt;
	return 0;
}

static struct ctl_session *ctl_session_by_id(struct ctl *ctl, uint64_t id)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

/* Runs steps 1-22; on failure err holds the text. */
static int ctl_guardrails(struct ctl *ctl, struct ctl_msg *m,
			  const Perfetto__Protos__TraceConfig *cfg,
			  int *trigger_mode, char *err, size_t errlen)
{
	struct svc_guard_result res = { 0 };
	struct svc_session_view *views;
	struct svc_guard_ctx g = { 0 };
	size_t n;
	int rc = ctl_views(ctl, &views, &n);

	if (rc < 0) {
		snprintf(err, errlen, "Out of memory");
		return rc;
	}
	res.abort_ids = calloc(n ? n : 1, sizeof(uint64_t));
	g.cfg = cfg;
	g.uid = m->cred.uid;
	g.has_session = ctl_session_of(ctl, m->lane, m->conn_id) != NULL;
	g.sessions = views;
	g.n_sessions = n;
	g.history = &ctl->history;
	g.now_ms = ctl_now_ms();
	g.lockdown = &ctl->lockdown;
	rc = res.abort_ids ? svc_guard_check(&g, &res, err, errlen) : -ENOMEM;
	atomic_store_explicit(&ctl->svc->lockdown, ctl->lockdown,
			      memory_order_relaxed);
	for (size_t i = 0; res.abort_ids && i < res.n_abort; i++) {
		struct ctl_session *s = ctl_session_by_id(ctl, res.abort_ids[i]);

		if (!s)
			continue;
		free(s->disable_error);
		s->disable_error = strdup(res.abort_reason);
		ctl_session_free(ctl, s);
	}
	*trigger_mode = res.trigger_mode;
	free(res.abort_ids);
	free(views);
	return rc;
}

/* Step 24: the write_into_file target. */
static int ctl_output(struct ctl_session *s, struct ctl_msg *m, char *err,
		      size_t errlen)
{
	int rc;

	if (!s->cfg->write_into_file)
		return 0;
	rc = svc_guard_check_output(s->cfg, m->fd >= 0, err, errlen);
	if (rc < 0)
		return rc;
	if (m->fd >= 0) {
		s->file_fd = m->fd;
		m->fd = -1;
	} else {
		rc = svc_guard_create_output_file(s->cfg->output_path, err,
						  errlen);
		if (rc < 0)
			return rc;
		s->file_fd = rc;
	}
	s->max_file_bytes = s->cfg->max_file_size_bytes;
	return 0;
}

static int ctl_session_new(struct ctl *ctl, struct ctl_msg *m,
			   Perfetto__Protos__TraceConfig *cfg,
			   const uint8_t *bytes, size_t len,
			   struct ctl_session **out)
{
	struct ctl_session *s = calloc(1, sizeof(*s));
	struct svc_pkts_config pc = { 0 };

	if (!s)
		return -ENOMEM;
	s->ctl = ctl;
	s->file_fd = -1;
	s->cfg = cfg;
	s->cfg_bytes = malloc(len ? len : 1);
	if (!s->cfg_bytes) {
		free(s);
		return -ENOMEM;
	}
	memcpy(s->cfg_bytes, bytes, len);
	s->cfg_len = len;
	s->id = ctl->next_session_id++;
	s->lane = m->lane;
	s->conn_id = m->conn_id;
	s->uid = m->cred.uid;
	s->pid = m->cred.pid;
	s->state = SVC_SESSION_CONFIGURED;
	pc.service_uid = ctl->svc->uid;
	pc.trace_config = s->cfg_bytes;
	pc.trace_config_len = len ? len : 0;
	pc.uuid_msb = cfg->trace_uuid_msb;
	pc.uuid_lsb = cfg->trace_uuid_lsb;
	svc_pkts_builtin_from_config(cfg, &pc.builtin);
	if ((len && svc_pkts_init(&s->pkts, &pc) < 0) ||
	    svc_seqids_create(&s->seqids) < 0) {
		svc_pkts_destroy(&s->pkts);
		free(s->cfg_bytes);
		free(s);
		return -ENOMEM;
	}
	s->next = ctl->sessions;
	ctl->sessions = s;
	*out = s;
	return 0;
}

static void ctl_enable(struct ctl *ctl, struct ctl_msg *m)
{
	Perfetto__Protos__EnableTracingRequest *r =
		perfetto__protos__enable_tracing_request__unpack(NULL, m->len,
								 m->bytes);
	Perfetto__Protos__TraceConfig *cfg = NULL;
	struct ctl_session *s = NULL;
	char err[SVC_GUARD_ERR_LEN] = "";
	uint8_t *cbytes = NULL;
	size_t clen = 0;
	int mode = 0;

	if (!r) {
		ctl_reply_enable_error(&m->reply, "Invalid EnableTracingRequest");
		return;
	}
	if (r->attach_notification_only) {
		/* Rebind the end-of-trace reply of the attached session. */
		s = ctl_session_of(ctl, m->lane, m->conn_id);
		if (!s) {
			ctl_reply_enable_error(&m->reply,
					       "No tracing session attached");
		} else {
			if (s->has_enable_reply)
				ipc_reply_reject(&s->enable_reply);
			s->enable_reply = m->reply;
			s->has_enable_reply = true;
			if (s->state == SVC_SESSION_DISABLED)
				ctl_reply_disabled(s);
		}
		goto out;
	}
	/* A newer EnableTracing on the connection replaces the pending one,
	 * which is rejected (consumer-port.md §2); this one then fails at
	 * step 2 with its own reply. */
	s = ctl_session_of(ctl, m->lane, m->conn_id);
	if (s && s->has_enable_reply) {
		ipc_reply_reject(&s->enable_reply);
		s->has_enable_reply = false;
	}
	s = NULL;
	if (!r->trace_config) {
		ctl_reply_enable_error(&m->reply, "Missing trace_config");
		goto out;
	}
	/* Keep the config's own bytes (trace_config packet, pass-through). */
	clen = protobuf_c_message_get_packed_size(&r->trace_config->base);
	cbytes = malloc(clen ? clen : 1);
	if (cbytes)
		protobuf_c_message_pack(&r->trace_config->base, cbytes);
	cfg = perfetto__protos__trace_config__unpack(NULL, clen, cbytes);
	if (!cbytes || !cfg) {
		ctl_reply_enable_error(&m->reply, "Out of memory");
		goto out;
	}
	if (ctl_guardrails(ctl, m, cfg, &mode, err, sizeof(err)) < 0)
		goto fail;
	if (ctl_session_new(ctl, m, cfg, cbytes, clen, &s) < 0) {
		snprintf(err, sizeof(err), "Out of memory");
		goto fail;
	}
	cfg = NULL; /* the session owns it */
	s->enable_reply = m->reply;
	s->has_enable_reply = true;
	s->trigger_mode = mode;
	s->duration_ms = s->cfg->duration_ms;
	if (ctl_output(s, m, err, sizeof(err)) < 0 ||
	    ctl_alloc_buffers(ctl, s, err, sizeof(err)) < 0) {
		s->has_enable_reply = false;
		ctl_session_free(ctl, s);
		goto fail;
	}
	/* The rest happens in ctl_enable_finish once the buffers exist
	 * (made by a control worker thread, see ctl_alloc.c). */
	goto out;
fail:
	spn_log_warn("ctl", "EnableTracing refused: %s", err);
	ctl_reply_enable_error(&m->reply, err);
	if (cfg)
		perfetto__protos__trace_config__free_unpacked(cfg, NULL);
out:
	free(cbytes);
	perfetto__protos__enable_tracing_request__free_unpacked(r, NULL);
}

/* Steps 27-29, once the session's buffers exist (ctl_alloc.c). */
void ctl_enable_finish(struct ctl *ctl, struct ctl_session *s)
{
	int mode = s->trigger_mode;
	bool zstd_only;

	spn_log_info("ctl", "session %llu enabled by uid %u (%u buffers)",
		     (unsigned long long)s->id, (unsigned)s->uid, s->nbufs);
	svc_compress_pick(s->cfg, &zstd_only);
	if (zstd_only)
		spn_log_info("ctl", "session %llu: compression.zstd is not "
			     "supported here: the trace is read uncompressed",
			     (unsigned long long)s->id);
	ctl_setup_all(ctl, s);
	if (mode == SVC_TRIGGER_START_TRACING) {
		ipc_loop_timer_add(ctl->loop,
				   s->cfg->trigger_config->trigger_timeout_ms,
				   ctl_trigger_timeout, s, &s->trigger_timer);
	} else if (mode == SVC_TRIGGER_STOP_TRACING ||
		   mode == SVC_TRIGGER_CLONE_SNAPSHOT) {
		s->duration_ms = s->cfg->trigger_config->trigger_timeout_ms;
	}
	if (!s->cfg->deferred_start && mode != SVC_TRIGGER_START_TRACING)
		ctl_session_start(ctl, s);
}

/* The buffers could not be made: the consumer gets err, the session goes. */
void ctl_enable_failed(struct ctl *ctl, struct ctl_session *s,
		       const char *err)
{
	spn_log_warn("ctl", "EnableTracing refused: %s", err);
	if (s->has_enable_reply)
		ctl_reply_enable_error(&s->enable_reply, err);
	s->has_enable_reply = false;
	ctl_session_free(ctl, s);
}

/* --- the other ConsumerPort calls --- */

static void ctl_c_disable(struct ctl *ctl, struct ctl_session *s,
			  struct ctl_msg *m)
{
	if (s)
		ctl_disable(ctl, s);
	ctl_reply_empty(&m->reply,
			&perfetto__protos__disable_tracing_response__descriptor);
}

static void ctl_c_start(struct ctl *ctl, struct ctl_session *s,
			struct ctl_msg *m)
{
	if (s && s->state == SVC_SESSION_CONFIGURED &&
	    s->trigger_mode != SVC_TRIGGER_START_TRACING)
		ctl_session_start(ctl, s);
	ctl_reply_empty(&m->reply,
			&perfetto__protos__start_tracing_response__descriptor);
}

static void ctl_c_free(struct ctl *ctl, struct ctl_session *s,
		       struct ctl_msg *m)
{
	if (s) {
		if (s->state != SVC_SESSION_DISABLED) {
			/* Immediate: no waiting for stop acks. */
			for (unsigned i = 0; i < s->ninst; i++) {
				struct ctl_producer *p = ctl_producer_find(
					ctl, s->inst[i].producer_id);

				if (s->inst[i].state == INST_STOPPED)
					continue;
				if (p)
					ctl_send_stop(ctl, p, s->inst[i].id);
				s->inst[i].state = INST_STOPPED;
				ctl_observe_inst(ctl, s, &s->inst[i]);
			}
			s->state = SVC_SESSION_DISABLED;
		}
		ctl_session_free(ctl, s);
	}
	ctl_reply_empty(&m->reply,
			&perfetto__protos__free_buffers_response__descriptor);
}

static void ctl_c_flush(struct ctl *ctl, struct ctl_session *s,
			struct ctl_msg *m)
{
	Perfetto__Protos__FlushRequest *r =
		perfetto__protos__flush_request__unpack(NULL, m->len, m->bytes);
	unsigned pending = 0;

	for (struct ctl_flush *f = s ? s->flushes : NULL; f; f = f->next)
		pending++;
	if (!r || !s || s->state != SVC_SESSION_STARTED ||
	    pending >= SVC_MAX_PENDING_FLUSHES_PER_SESSION)
		ipc_reply_reject(&m->reply);
	else
		ctl_flush(ctl, s, r->timeout_ms, r->flags, &m->reply, false);
	if (r)
		perfetto__protos__flush_request__free_unpacked(r, NULL);
}

static void ctl_c_detach(struct ctl *ctl, struct ctl_session *s,
			 struct ctl_msg *m)
{
	Perfetto__Protos__DetachRequest *r =
		perfetto__protos__detach_request__unpack(NULL, m->len, m->bytes);
	bool ok = r && s && r->key && r->key[0];

	/* Keys are per uid, as at Attach. */
	for (struct ctl_session *o = ctl->sessions; ok && o; o = o->next)
		ok = !(o->detach_key && o->uid == s->uid &&
		       !strcmp(o->detach_key, r->key));
	if (ok && !(s->detach_key = strdup(r->key)))
		ok = false;
	if (ok) {
		/* The consumer no longer waits for the end of the trace. Its
		 * EnableTracing reply is dropped, not rejected: the perfetto
		 * CLI calls Detach right after EnableTracing and reads a
		 * rejection that arrives before the DetachResponse as "lost
		 * the service" (exit 1, the session left behind). */
		s->has_enable_reply = false;
		s->conn_id = 0;
		ctl_reply_empty(&m->reply,
				&perfetto__protos__detach_response__descriptor);
	} else {
		ipc_reply_reject(&m->reply);
	}
	if (r)
		perfetto__protos__detach_request__free_unpacked(r, NULL);
}

static void ctl_c_attach(struct ctl *ctl, struct ctl_session *cur,
			 struct ctl_msg *m)
{
	Perfetto__Protos__AttachRequest *r =
		perfetto__protos__attach_request__unpack(NULL, m->len, m->bytes);
	Perfetto__Protos__AttachResponse resp =
		PERFETTO__PROTOS__ATTACH_RESPONSE__INIT;
	struct ctl_session *s = NULL;

	for (struct ctl_session *o = ctl->sessions; r && r->key && o;
	     o = o->next)
		if (o->detach_key && !strcmp(o->detach_key, r->key) &&
		    o->uid == m->cred.uid)
			s = o;
	if (!s || cur) {
		ipc_reply_reject(&m->reply);
	} else {
		free(s->detach_key);
		s->detach_key = NULL;
		s->lane = m->lane;
		s->conn_id = m->conn_id;
		resp.trace_config = s->cfg;
		ipc_reply_send(&m->reply, &resp.base, -1, false);
	}
	if (r)
		perfetto__protos__attach_request__free_unpacked(r, NULL);
}

/* Fills a TraceStats for session s (also the trace_stats packet). */
int ctl_fill_stats_cb(void *ctx, struct svc_trace_stats *ts)
{
	struct ctl_session *s = ctx;
	struct ctl *ctl = s->ctl;
	struct svc_stats_buffer *bs = calloc(s->nbufs ? s->nbufs : 1,
					     sizeof(*bs));
	struct svc_stats_input in = { 0 };
	unsigned nsess = 0, nbufs = 0, nds = 0, nprod = 0;
	int rc;

	if (!bs)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nbufs; i++) {
		struct svc_tbuf_stats st;

		svc_tbuf_get_stats(s->bufs[i]->tb, &st);
		bs[i] = (struct svc_stats_buffer){
			.buffer_size = st.buffer_size,
			.bytes_written = st.bytes_written,
			.bytes_overwritten = st.bytes_overwritten,
			.bytes_read = st.bytes_read,
			.padding_bytes_written = st.padding_bytes_written,
			.padding_bytes_cleared = st.padding_bytes_cleared,
			.chunks_written = st.chunks_written,
			.chunks_rewritten = st.chunks_rewritten,
			.chunks_overwritten = st.chunks_overwritten,
			.chunks_discarded = st.chunks_discarded,
			.chunks_read = st.chunks_read,
			.chunks_committed_out_of_order =
				st.chunks_committed_out_of_order,
			.write_wrap_count = st.write_wrap_count,
			.patches_succeeded = st.patches_succeeded,
			.patches_failed = st.patches_failed,
			.readaheads_succeeded = st.readaheads_succeeded,
			.readaheads_failed = st.readaheads_failed,
			.abi_violations = st.abi_violations,
			.trace_writer_packet_loss = st.trace_writer_packet_loss,
		};
		in.invalid_packets += st.invalid_packets;
	}
	for (struct ctl_session *o = ctl->sessions; o; o = o->next) {
		nsess++;
		nbufs += o->nbufs;
	}
	for (struct ctl_producer *p = ctl->producers; p; p = p->next) {
		nprod++;
		nds += p->nds;
	}
	in.buffers = bs;
	in.n_buffers = s->nbufs;
	in.producers_connected = nprod;
	in.producers_seen = atomic_load_explicit(
		&ctl->svc->cnt.producers_seen, memory_order_relaxed);
	in.data_sources_registered = nds;
	in.data_sources_seen = ctl->next_inst_id - 1;
	in.tracing_sessions = nsess;
	in.total_buffers = nbufs;
	in.chunks_discarded = atomic_load_explicit(
		&ctl->svc->cnt.chunks_discarded, memory_order_relaxed);
	in.patches_discarded = atomic_load_explicit(
		&ctl->svc->cnt.patches_discarded, memory_order_relaxed);
	in.flushes_requested = s->flushes_requested;
	in.flushes_succeeded = s->flushes_succeeded;
	in.flushes_failed = s->flushes_failed;
	in.final_flush_outcome = s->final_flush_outcome;
	rc = svc_trace_stats_build(ts, &in);
	free(bs);
	return rc;
}

static void ctl_c_stats(struct ctl *ctl, struct ctl_session *s,
			struct ctl_msg *m)
{
	Perfetto__Protos__GetTraceStatsResponse resp =
		PERFETTO__PROTOS__GET_TRACE_STATS_RESPONSE__INIT;
	struct svc_trace_stats ts = { 0 };
	(void)ctl;

	if (!s || ctl_fill_stats_cb(s, &ts) < 0) {
		ipc_reply_reject(&m->reply);
		svc_trace_stats_release(&ts);
		return;
	}
	resp.trace_stats = &ts.msg;
	ipc_reply_send(&m->reply, &resp.base, -1, false);
	svc_trace_stats_release(&ts);
}

static void ctl_c_capabilities(struct ctl_msg *m)
{
	Perfetto__Protos__QueryCapabilitiesResponse resp =
		PERFETTO__PROTOS__QUERY_CAPABILITIES_RESPONSE__INIT;
	Perfetto__Protos__TracingServiceCapabilities caps =
		PERFETTO__PROTOS__TRACING_SERVICE_CAPABILITIES__INIT;
	Perfetto__Protos__ObservableEvents__Type observable[] = {
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_DATA_SOURCES_INSTANCES,
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_ALL_DATA_SOURCES_STARTED,
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_CLONE_TRIGGER_HIT,
	};

	caps.has_has_query_capabilities = true;
	caps.has_query_capabilities = true;
	caps.has_has_trace_config_output_path = true;
	caps.has_trace_config_output_path = true;
	caps.has_has_clone_session = true;
	caps.has_clone_session = true;
	caps.n_observable_events = sizeof(observable) / sizeof(observable[0]);
	caps.observable_events = observable;
	resp.capabilities = &caps;
	ipc_reply_send(&m->reply, &resp.base, -1, false);
}

void ctl_consumer_call(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_session *s = ctl_session_of(ctl, m->lane, m->conn_id);

	switch (m->method) {
	case 1:
		ctl_enable(ctl, m);
		break;
	case 2:
		ctl_c_disable(ctl, s, m);
		break;
	case 3:
		ctl_read_buffers(ctl, s, &m->reply);
		break;
	case 4:
		ctl_c_free(ctl, s, m);
		break;
	case 5:
		ctl_c_flush(ctl, s, m);
		break;
	case 6:
		ctl_c_start(ctl, s, m);
		break;
	case 7:
		ctl_change_trace_config(ctl, s, m);
		break;
	case 8:
		ctl_c_detach(ctl, s, m);
		break;
	case 9:
		ctl_c_attach(ctl, s, m);
		break;
	case 10:
		ctl_c_stats(ctl, s, m);
		break;
	case 11:
		ctl_observe_events(ctl, s, m);
		break;
	case 12:
		ctl_query_service_state(ctl, m);
		break;
	case 13:
		ctl_c_capabilities(m);
		break;
	case 14:
		ctl_save_trace_for_bugreport(m);
		break;
	case 15:
		ctl_clone_session(ctl, s, m);
		break;
	default:
		ipc_reply_reject(&m->reply);
		break;
	}
}

void ctl_consumer_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id)
{
	struct ctl_session *s = ctl_session_of(ctl, lane, conn_id);

	ctl_observe_conn_gone(ctl, lane, conn_id);
	ctl_clone_conn_gone(ctl, lane, conn_id);
	if (!s)
		return;
	s->has_enable_reply = false;
	s->conn_id = 0;
	if (s->state == SVC_SESSION_DISABLED ||
	    s->state == SVC_SESSION_CONFIGURED ||
	    s->state == SVC_SESSION_CLONED_READ_ONLY)
		ctl_session_free(ctl, s);
	else
		ctl_disable(ctl, s); /* frees itself once DISABLED */
}

void ctl_sessions_shutdown(struct ctl *ctl)
{
	struct ctl_session *next;

	for (struct ctl_session *s = ctl->sessions; s; s = next) {
		next = s->next;
		ctl_disable(ctl, s);
		if (!s->dead && (s->state == SVC_SESSION_DISABLED ||
				 s->state == SVC_SESSION_CLONED_READ_ONLY))
			ctl_session_free(ctl, s);
	}
}
