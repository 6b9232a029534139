// SPDX-License-Identifier: Apache-2.0
// The control plane's thread, its message dispatch and the producer side
// of it: registered data sources, the async command stream, SMB creation
// and buffer retirement.
//
// Control thread only, except ctl_post/ctl_msg_* (any thread) and
// svc_buf_ref/unref (any thread; the last unref posts the free here).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ctl_int.h"
#include "data_source_descriptor.pb-c.h"
#include "ipc/log.h"

void svc_pid_free(struct svc *svc, uint16_t id);

/* --- messages --- */

struct ctl_msg *ctl_msg_new(enum ctl_msg_type type)
{
	struct ctl_msg *m = calloc(1, sizeof(*m));

	if (m) {
		m->type = type;
		m->fd = -1;
	}
	return m;
}

void ctl_msg_free(struct ctl_msg *m)
{
	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	free(m->name);
	free(m->bytes);
	free(m);
}

static void ctl_dispatch(struct ipc_loop *loop, void *arg, uint64_t u64);

int ctl_post(struct svc *svc, struct ctl_msg *m)
{
	int rc;

	m->ctl = svc->ctl;
	rc = ipc_loop_post_wait(svc->ctl->loop, ctl_dispatch, m, 0,
				SVC_WAIT_POST_MS);

	if (rc < 0) {
		spn_log_error("ctl", "control ring full: message %d lost",
			      (int)m->type);
		ctl_msg_free(m);
	}
	return rc;
}

/* --- buffers --- */

void svc_buf_ref(struct svc_buf *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void svc_buf_unref(struct svc_buf *b)
{
	struct ctl_msg *m;

	/* acq_rel: the lanes' last writes into the buffer happen before
	 * the free that the final decrement triggers. */
	if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return;
	m = ctl_msg_new(CTL_BUF_FREE);
	if (!m) {
		spn_log_error("ctl", "out of memory: buffer %u leaked", b->id);
		return;
	}
	m->buf = b;
	ctl_post(b->svc, m);
}

static void ctl_buf_free(struct ctl *ctl, struct svc_buf *b)
{
	svc_bufid_free(&ctl->bufids, b->id);
	svc_tbuf_destroy(b->tb);
	free(b);
}

void ctl_buf_put(struct ctl *ctl, struct svc_buf *b)
{
	/* acq_rel: as in svc_buf_unref. */
	if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		ctl_buf_free(ctl, b);
}

/* --- producers --- */

struct ctl_producer *ctl_producer_find(struct ctl *ctl, uint16_t id)
{
	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

static void ctl_producer_free(struct ctl_producer *p)
{
	for (unsigned i = 0; i < p->nds; i++) {
		free(p->ds[i].name);
		free(p->ds[i].desc);
	}
	if (p->smb_fd >= 0)
		close(p->smb_fd);
	free(p->ds);
	free(p->name);
	free(p->sdk_version);
	free(p);
}

/*
 * Sends one command on the producer's GetAsyncCommand stream. Commands
 * before the stream is open are dropped (producer-port.md §6), except
 * setup_tracing, which the caller holds back itself.
 */
int ctl_send_cmd(struct ctl *ctl, struct ctl_producer *p,
		 Perfetto__Protos__GetAsyncCommandResponse *cmd, int fd)
{
	int rc;
	(void)ctl;

	if (!p->async_open)
		return -ENOTCONN;
	rc = ipc_reply_send(&p->async, &cmd->base, fd, true);
	if (rc < 0 && rc != -EALREADY)
		spn_log_warn("ctl", "producer %u: command not sent: %s", p->id,
			     strerror(-rc));
	return rc;
}

/* setup_tracing: with the service SMB's fd and page size, or bare when the
 * producer's own SMB was adopted. */
static void ctl_send_setup_tracing(struct ctl *ctl, struct ctl_producer *p)
{
	Perfetto__Protos__GetAsyncCommandResponse cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__INIT;
	Perfetto__Protos__GetAsyncCommandResponse__SetupTracing st =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__SETUP_TRACING__INIT;

	if (p->setup_sent || !p->have_smb || !p->async_open)
		return;
	if (!p->adopted) {
		st.has_shared_buffer_page_size_kb = true;
		st.shared_buffer_page_size_kb = p->page_kb;
	}
	cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING;
	cmd.setup_tracing = &st;
	if (ctl_send_cmd(ctl, p, &cmd, p->smb_fd) == 0)
		p->setup_sent = true;
	if (p->smb_fd >= 0) {
		close(p->smb_fd);
		p->smb_fd = -1;
	}
}

/*
 * Makes sure producer p has an SMB before its first setup_data_source
 * (producer-port.md §6.1): sizes from the session's producers[] entry for
 * its name, else its hints, validated per §7. The lane gets the mapping
 * first, then setup_tracing (+fd) goes out, in that order on the lane.
 * Returns 0 or -errno (the producer then gets no instance).
 */
int ctl_producer_smb(struct ctl *ctl, struct ctl_producer *p,
		     const Perfetto__Protos__TraceConfig *cfg)
{
	uint64_t size = p->size_hint, page = p->page_hint;
	uint32_t vsize, vpage;
	struct smb_shm *shm;
	int rc, fd;

	if (p->have_smb)
		return 0;
	for (size_t i = 0; cfg && i < cfg->n_producers; i++) {
		const Perfetto__Protos__TraceConfig__ProducerConfig *pc =
			cfg->producers[i];

		if (!pc->producer_name || strcmp(pc->producer_name, p->name))
			continue;
		if (pc->page_size_kb)
			page = (uint64_t)pc->page_size_kb * 1024;
		if (pc->shm_size_kb)
			size = (uint64_t)pc->shm_size_kb * 1024;
		break;
	}
	spn_smb_service_sizes(size, page, &vsize, &vpage);
	shm = malloc(sizeof(*shm));
	if (!shm)
		return -ENOMEM;
	smb_shm_init(shm);
	rc = smb_shm_create(shm, vsize, vpage);
	if (rc < 0) {
		spn_log_error("ctl", "producer %u: SMB creation failed: %s",
			      p->id, shm->err);
		free(shm);
		return rc;
	}
	fd = dup(shm->fd);
	if (fd < 0) {
		rc = -errno;
		smb_shm_close(shm);
		free(shm);
		return rc;
	}
	rc = lane_post_smb(ctl->svc, p->lane, p->id, shm);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	p->have_smb = true;
	p->smb_fd = fd;
	p->page_kb = vpage / 1024;
	ctl_send_setup_tracing(ctl, p);
	return 0;
}

void ctl_send_flush(struct ctl *ctl, struct ctl_producer *p,
		    const uint64_t *ids, size_t n, uint64_t flush_id,
		    uint64_t flags)
{
	Perfetto__Protos__GetAsyncCommandResponse cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__INIT;
	Perfetto__Protos__GetAsyncCommandResponse__Flush f =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__FLUSH__INIT;

	f.n_data_source_ids = n;
	f.data_source_ids = (uint64_t *)ids;
	f.has_request_id = true;
	f.request_id = flush_id;
	if (flags) {
		f.has_flags = true;
		f.flags = flags;
	}
	cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH;
	cmd.flush = &f;
	ctl_send_cmd(ctl, p, &cmd, -1);
}

void ctl_send_stop(struct ctl *ctl, struct ctl_producer *p, uint64_t inst)
{
	Perfetto__Protos__GetAsyncCommandResponse cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__INIT;
	Perfetto__Protos__GetAsyncCommandResponse__StopDataSource st =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__STOP_DATA_SOURCE__INIT;

	st.has_instance_id = true;
	st.instance_id = inst;
	cmd.cmd_case = PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE;
	cmd.stop_data_source = &st;
	ctl_send_cmd(ctl, p, &cmd, -1);
}

static void ctl_on_init(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = calloc(1, sizeof(*p));

	if (!p) {
		spn_log_error("ctl", "out of memory: producer %u dropped",
			      m->producer_id);
		lane_post_close(ctl->svc, m->lane, m->conn_id);
		return;
	}
	p->id = m->producer_id;
	p->lane = m->lane;
	p->conn_id = m->conn_id;
	p->cred = m->cred;
	p->name = m->name;
	m->name = NULL;
	p->sdk_version = (char *)m->bytes;
	m->bytes = NULL;
	p->size_hint = m->u32a;
	p->page_hint = m->u32b;
	p->smb_fd = -1;
	if (m->i32 > 0) {
		/* Adopted producer SMB: setup_tracing without fd once the
		 * stream opens (producer-port.md §2 step 6). */
		p->have_smb = true;
		p->adopted = true;
	}
	p->next = ctl->producers;
	ctl->producers = p;
	spn_log_info("ctl", "producer %u \"%s\" (pid %d uid %u) connected",
		     p->id, p->name, (int)p->cred.pid, (unsigned)p->cred.uid);
}

static void ctl_on_async(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = ctl_producer_find(ctl, m->producer_id);

	if (!p) {
		ipc_reply_reject(&m->reply);
		return;
	}
	/* A second stream replaces the first, which is rejected (§6). */
	if (p->async_open)
		ipc_reply_reject(&p->async);
	p->async = m->reply;
	p->async_open = true;
	ctl_send_setup_tracing(ctl, p);
}

static void ctl_on_register_ds(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = ctl_producer_find(ctl, m->producer_id);
	Perfetto__Protos__RegisterDataSourceRequest *r;
	Perfetto__Protos__DataSourceDescriptor *d;
	struct ctl_ds *ds;

	if (!p)
		return;
	r = perfetto__protos__register_data_source_request__unpack(NULL, m->len,
								   m->bytes);
	if (!r)
		return;
	d = r->data_source_descriptor;
	if (!d || !d->name || !d->name[0])
		goto out;
	for (unsigned i = 0; d->has_id && d->id && i < p->nds; i++)
		if (p->ds[i].desc_id == d->id)
			goto out;
	if (p->nds == p->cap_ds) {
		unsigned cap = p->cap_ds ? 2 * p->cap_ds : 4;
		struct ctl_ds *v = realloc(p->ds, cap * sizeof(*v));

		if (!v)
			goto out;
		p->ds = v;
		p->cap_ds = cap;
	}
	ds = &p->ds[p->nds];
	memset(ds, 0, sizeof(*ds));
	ds->name = strdup(d->name);
	ds->desc_len = protobuf_c_message_get_packed_size(&d->base);
	ds->desc = malloc(ds->desc_len ? ds->desc_len : 1);
	if (!ds->name || !ds->desc) {
		free(ds->name);
		free(ds->desc);
		goto out;
	}
	protobuf_c_message_pack(&d->base, ds->desc);
	ds->desc_id = d->has_id ? d->id : 0;
	ds->notify_start = d->will_notify_on_start;
	ds->notify_stop = d->will_notify_on_stop;
	ds->clear_incr = d->handles_incremental_state_clear;
	ds->no_flush = d->no_flush;
	p->nds++;
	spn_log_info("ctl", "producer %u registered data source \"%s\"", p->id,
		     ds->name);
	ctl_sessions_on_ds(ctl, p, ds);
out:
	perfetto__protos__register_data_source_request__free_unpacked(r, NULL);
}

static void ctl_on_update_ds(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = ctl_producer_find(ctl, m->producer_id);
	Perfetto__Protos__UpdateDataSourceRequest *r;
	Perfetto__Protos__DataSourceDescriptor *d;

	if (!p)
		return;
	r = perfetto__protos__update_data_source_request__unpack(NULL, m->len,
								 m->bytes);
	if (!r)
		return;
	d = r->data_source_descriptor;
	for (unsigned i = 0; d && d->has_id && d->id && d->name && i < p->nds;
	     i++) {
		struct ctl_ds *ds = &p->ds[i];
		size_t len = protobuf_c_message_get_packed_size(&d->base);
		uint8_t *buf;

		if (ds->desc_id != d->id || strcmp(ds->name, d->name))
			continue;
		buf = malloc(len ? len : 1);
		if (!buf)
			break;
		protobuf_c_message_pack(&d->base, buf);
		free(ds->desc);
		ds->desc = buf;
		ds->desc_len = len;
		ds->notify_start = d->will_notify_on_start;
		ds->notify_stop = d->will_notify_on_stop;
		ds->clear_incr = d->handles_incremental_state_clear;
		ds->no_flush = d->no_flush;
		break;
	}
	perfetto__protos__update_data_source_request__free_unpacked(r, NULL);
}

static void ctl_on_unregister_ds(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = ctl_producer_find(ctl, m->producer_id);
	Perfetto__Protos__UnregisterDataSourceRequest *r;

	if (!p)
		return;
	r = perfetto__protos__unregister_data_source_request__unpack(
		NULL, m->len, m->bytes);
	if (!r)
		return;
	if (r->data_source_name) {
		ctl_sessions_on_ds_unregistered(ctl, p->id, r->data_source_name);
		for (unsigned i = 0; i < p->nds; i++) {
			if (strcmp(p->ds[i].name, r->data_source_name))
				continue;
			free(p->ds[i].name);
			free(p->ds[i].desc);
			p->ds[i] = p->ds[--p->nds];
			break;
		}
	}
	perfetto__protos__unregister_data_source_request__free_unpacked(r, NULL);
}

/* NotifyDataSourceStarted/Stopped carry one uint64 (field 1). */
static uint64_t ctl_notify_id(const struct ctl_msg *m, bool started)
{
	uint64_t id = 0;

	if (started) {
		Perfetto__Protos__NotifyDataSourceStartedRequest *r =
			perfetto__protos__notify_data_source_started_request__unpack(
				NULL, m->len, m->bytes);
		if (r) {
			id = r->data_source_id;
			perfetto__protos__notify_data_source_started_request__free_unpacked(
				r, NULL);
		}
	} else {
		Perfetto__Protos__NotifyDataSourceStoppedRequest *r =
			perfetto__protos__notify_data_source_stopped_request__unpack(
				NULL, m->len, m->bytes);
		if (r) {
			id = r->data_source_id;
			perfetto__protos__notify_data_source_stopped_request__free_unpacked(
				r, NULL);
		}
	}
	return id;
}

static void ctl_on_triggers(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer *p = ctl_producer_find(ctl, m->producer_id);
	Perfetto__Protos__ActivateTriggersRequest *r;

	if (!p)
		return;
	r = perfetto__protos__activate_triggers_request__unpack(NULL, m->len,
								m->bytes);
	if (!r)
		return;
	ctl_sessions_on_triggers(ctl, p, r->trigger_names, r->n_trigger_names);
	perfetto__protos__activate_triggers_request__free_unpacked(r, NULL);
}

static void ctl_on_gone(struct ctl *ctl, struct ctl_msg *m)
{
	struct ctl_producer **pp = &ctl->producers;

	ctl_sessions_on_producer_gone(ctl, m->producer_id);
	while (*pp && (*pp)->id != m->producer_id)
		pp = &(*pp)->next;
	if (*pp) {
		struct ctl_producer *p = *pp;

		*pp = p->next;
		spn_log_info("ctl", "producer %u \"%s\" disconnected", p->id,
			     p->name);
		ctl_producer_free(p);
	}
	svc_pid_free(ctl->svc, m->producer_id);
}

static void ctl_on_sync(struct ctl_msg *m)
{
	Perfetto__Protos__SyncResponse r = PERFETTO__PROTOS__SYNC_RESPONSE__INIT;

	ipc_reply_send(&m->reply, &r.base, -1, false);
}

/* During shutdown: idle once every session reached DISABLED. */
static void ctl_check_idle(struct ctl *ctl)
{
	for (struct ctl_session *s = ctl->sessions; s; s = s->next)
		if (s->state != SVC_SESSION_DISABLED)
			return;
	/* Release: pairs with the acquire load in ctl_shutdown_sessions. */
	atomic_store_explicit(&ctl->idle, true, memory_order_release);
}

static void ctl_dispatch(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct ctl_msg *m = arg;
	struct ctl *ctl;
	(void)loop;
	(void)u64;

	ctl = m->ctl;
	if (ctl->lanes_gone &&
	    (m->type == CTL_C_CALL || m->type == CTL_P_ASYNC ||
	     m->type == CTL_P_SYNC)) {
		/* Its lane is stopping: nothing may be sent through it. */
		ctl_msg_free(m);
		return;
	}
	switch (m->type) {
	case CTL_P_INIT:
		ctl_on_init(ctl, m);
		break;
	case CTL_P_ASYNC:
		ctl_on_async(ctl, m);
		break;
	case CTL_P_REG_DS:
		ctl_on_register_ds(ctl, m);
		break;
	case CTL_P_UPDATE_DS:
		ctl_on_update_ds(ctl, m);
		break;
	case CTL_P_UNREG_DS:
		ctl_on_unregister_ds(ctl, m);
		break;
	case CTL_P_DS_STARTED:
		ctl_sessions_on_started(ctl, m->producer_id,
					ctl_notify_id(m, true));
		break;
	case CTL_P_DS_STOPPED:
		ctl_sessions_on_stopped(ctl, m->producer_id,
					ctl_notify_id(m, false));
		break;
	case CTL_P_TRIGGERS:
		ctl_on_triggers(ctl, m);
		break;
	case CTL_P_FLUSH_ACK:
		ctl_sessions_on_flush_ack(ctl, m->producer_id, m->u64);
		break;
	case CTL_P_SYNC:
		ctl_on_sync(m);
		break;
	case CTL_P_GONE:
		ctl_on_gone(ctl, m);
		break;
	case CTL_C_CALL:
		ctl_consumer_call(ctl, m);
		break;
	case CTL_C_GONE:
		ctl_consumer_gone(ctl, m->lane, m->conn_id);
		break;
	case CTL_BUF_FREE:
		ctl_buf_free(ctl, m->buf);
		break;
	case CTL_SCRAPED:
		ctl_sessions_on_scraped(ctl, m->u64);
		break;
	case CTL_BUF_RETARGETED:
		ctl_clone_on_retargeted(ctl, m->u64);
		break;
	}
	ctl_msg_free(m);
	if (ctl->shutting_down)
		ctl_check_idle(ctl);
}

/* --- lifecycle --- */

/* Control thread 0: runs until ctl_stop, then destroys its loop on this
 * thread, which first runs the posts still queued (the lanes' last buffer
 * frees and producer exits). */
static void *ctl_thread_main(void *arg)
{
	ipc_loop_run(arg);
	ipc_loop_destroy(arg);
	return NULL;
}

int ctl_create(struct svc *svc, struct ctl **out)
{
	struct ctl *ctl = calloc(1, sizeof(*ctl));
	int rc;

	if (!ctl)
		return -ENOMEM;
	ctl->svc = svc;
	ctl->next_session_id = 1;
	ctl->next_inst_id = 1;
	ctl->next_flush_id = 1;
	ctl->next_token = 1;
	svc_bufid_init(&ctl->bufids);
	svc_guard_history_init(&ctl->history);
	rc = ipc_loop_create(&ctl->loop, NULL);
	if (rc < 0) {
		free(ctl);
		return rc;
	}
	*out = ctl;
	return 0;
}

int ctl_start(struct ctl *ctl)
{
	int rc = pthread_create(&ctl->thread, NULL, ctl_thread_main, ctl->loop);

	ctl->running = rc == 0;
	if (rc != 0)
		return -rc;
	svc_name_thread(ctl->thread, "spn-ctl", 0);
	/* Threads 1..N-1 of the control plane work for thread 0. */
	return ctl_workers_start(ctl, ctl->svc->opts.control - 1);
}

static void ctl_do_shutdown(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct ctl *ctl = arg;
	(void)loop;
	(void)u;

	ctl->shutting_down = true;
	ctl_sessions_shutdown(ctl);
	ctl_check_idle(ctl);
}

void ctl_shutdown_sessions(struct ctl *ctl)
{
	/* Longest wait: stop acks (5 s) plus the final drain. */
	int waited_ms = 0;

	if (!ctl || !ctl->running)
		return;
	atomic_store_explicit(&ctl->idle, false, memory_order_relaxed);
	if (ipc_loop_post_wait(ctl->loop, ctl_do_shutdown, ctl, 0,
			       SVC_WAIT_POST_MS) < 0)
		return;
	/* Acquire: pairs with the release stores of idle on ctl. */
	while (!atomic_load_explicit(&ctl->idle, memory_order_acquire) &&
	       waited_ms < 8000) {
		usleep(1000);
		waited_ms++;
	}
}

/* Runs on ctl: from now on nothing is sent through a lane (replies,
 * commands, posts), since the lanes are about to be destroyed. */
static void ctl_do_detach_lanes(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct ctl *ctl = arg;
	(void)loop;
	(void)u;

	ctl->lanes_gone = true;
	for (struct ctl_session *s = ctl->sessions; s; s = s->next) {
		s->has_enable_reply = false;
		for (struct ctl_flush *f = s->flushes; f; f = f->next)
			f->has_reply = false;
	}
	for (struct ctl_producer *p = ctl->producers; p; p = p->next)
		p->async_open = false;
	ctl_clone_lanes_gone(ctl);
	/* Release: pairs with the acquire load in ctl_detach_lanes. */
	atomic_store_explicit(&ctl->lanes_detached, true, memory_order_release);
}

bool ctl_lanes_gone(const struct ctl *ctl)
{
	return ctl->lanes_gone;
}

void ctl_detach_lanes(struct ctl *ctl)
{
	if (!ctl || !ctl->running)
		return;
	if (ipc_loop_post_wait(ctl->loop, ctl_do_detach_lanes, ctl, 0,
			       SVC_WAIT_POST_MS) < 0)
		return;
	/* Acquire: pairs with the release store in ctl_do_detach_lanes. */
	while (!atomic_load_explicit(&ctl->lanes_detached, memory_order_acquire))
		usleep(200);
}

void ctl_stop(struct ctl *ctl)
{
	if (!ctl || !ctl->running)
		return;
	ctl_workers_stop(ctl);
	ipc_loop_stop(ctl->loop);
	pthread_join(ctl->thread, NULL);
}

void ctl_destroy(struct ctl *ctl)
{
	if (!ctl)
		return;
	if (!ctl->running)
		ipc_loop_destroy(ctl->loop);
	while (ctl->producers) {
		struct ctl_producer *p = ctl->producers;

		ctl->producers = p->next;
		ctl_producer_free(p);
	}
	svc_guard_history_free(&ctl->history);
	for (size_t i = 0; i < ctl->ntrig_hist; i++)
		free(ctl->trig_hist[i].name);
	free(ctl->trig_hist);
	ctl_observe_destroy(ctl);
	ctl_clone_destroy(ctl);
	free(ctl);
}
