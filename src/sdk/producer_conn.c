// SPDX-License-Identifier: Apache-2.0
// The producer SDK's I/O thread, its connection side: connect and handshake (ipc-wire.md §9), register data sources, run the service's commands (setup_tracing, setup / start / stop / flush / clear_incremental_state), and reconnect with back-off.
//
// Runs on the I/O thread only; see producer_io.c for the rules every
// function here follows after an IPC call (the connection may be gone).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/client.h"
#include "ipc/log.h"
#include "producer_port.pb-c.h"
#include "sdk/producer_int.h"

#define SPN_TAG "producer"
#define SPN_SDK_VERSION "spindle 0.1.0"

typedef Perfetto__Protos__GetAsyncCommandResponse SpnCmd;
typedef Perfetto__Protos__DataSourceConfig SpnDsConfig;

/* ---- Instances ------------------------------------------------------------------ */

/* Runs a setup/start callback with the instance's config. */
static void io_call_cfg(struct spn_ds *ds, struct spn_ds_inst *in, const SpnDsConfig *cfg,
			void (*fn)(struct spn_ds *, const struct spn_ds_config *, void *))
{
	struct spn_ds_config c;
	uint8_t small[512], *raw = small;
	size_t n = 0;

	if (!fn)
		return;
	memset(&c, 0, sizeof(c));
	c.instance = in->idx;
	c.instance_id = in->id;
	c.target_buffer = in->target_buffer;
	c.stop_timeout_ms = in->stop_timeout_ms;
	c.name = ds->name;
	c.legacy_config = "";
	if (cfg) {
		n = protobuf_c_message_get_packed_size(&cfg->base);
		if (n > sizeof(small))
			raw = malloc(n);
		if (raw)
			protobuf_c_message_pack(&cfg->base, raw);
		else
			n = 0;
		c.tracing_session_id = cfg->has_tracing_session_id ? cfg->tracing_session_id : 0;
		c.trace_duration_ms = cfg->has_trace_duration_ms ? cfg->trace_duration_ms : 0;
		if (cfg->legacy_config)
			c.legacy_config = cfg->legacy_config;
		if (cfg->has_track_event_config) {
			c.track_event_config = cfg->track_event_config.data;
			c.track_event_config_len = cfg->track_event_config.len;
		}
	}
	c.raw = raw;
	c.raw_len = n;
	fn(ds, &c, ds->cb.user);
	if (raw != small)
		free(raw);
}

/* The data source a setup for `name` goes to: the first registration of
 * that name (not unregistered) with a free slot. */
static struct spn_ds_inst *io_free_slot(struct spn_producer *p, const char *name,
					bool *known)
{
	struct spn_ds *ds;

	*known = false;
	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++) {
		if (ds->unreg || strcmp(ds->name, name) != 0)
			continue;
		*known = true;
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++)
			if (ds->inst[i].state == SPN_INST_FREE)
				return &ds->inst[i];
	}
	return NULL;
}

static struct spn_ds_inst *io_cmd_setup(struct spn_producer *p, uint64_t id,
					const SpnDsConfig *cfg)
{
	struct spn_ds_inst *in;
	bool known;

	if (!id || !cfg || !cfg->name) {
		spn_log_warn(SPN_TAG, "setup_data_source without id or config name");
		return NULL;
	}
	if (_spn_io_find_inst(p, id))
		return NULL; /* duplicate */
	in = io_free_slot(p, cfg->name, &known);
	if (!in) {
		spn_log_warn(SPN_TAG, "setup_data_source for %s data source \"%s\" ignored",
			     known ? "a full" : "an unknown", cfg->name);
		return NULL;
	}
	in->id = id;
	in->stop_timeout_ms = cfg->has_stop_timeout_ms && cfg->stop_timeout_ms ?
				      cfg->stop_timeout_ms : SPN_DEFAULT_STOP_TIMEOUT_MS;
	/* The service may have made this instance from a descriptor we
	 * just replaced: then notify if either asks (producer_ctl.c). */
	in->notify_start = in->ds->desc.will_notify_on_start || in->ds->sticky_start;
	in->notify_stop = in->ds->desc.will_notify_on_stop || in->ds->sticky_stop;
	pthread_mutex_lock(&p->lock);
	in->state = SPN_INST_SETUP;
	in->stop_done = false;
	in->target_buffer = cfg->has_target_buffer ? cfg->target_buffer : 0;
	/* Release: the slot's fields before its serial (pairs with the
	 * acquire load in spn_ds_tls). */
	atomic_store_explicit(&in->serial, ++p->next_serial, memory_order_release);
	pthread_mutex_unlock(&p->lock);
	if (!p->ctx || !p->ctx->ready)
		spn_log_warn(SPN_TAG, "data source \"%s\" set up without an SMB: it "
				      "cannot write", cfg->name);
	io_call_cfg(in->ds, in, cfg, in->ds->cb.on_setup);
	return in;
}

static void io_cmd_start(struct spn_producer *p, uint64_t id, const SpnDsConfig *cfg)
{
	struct spn_ds_inst *in = _spn_io_find_inst(p, id);
	struct spn_ds *ds;

	if (!in)
		in = io_cmd_setup(p, id, cfg); /* a service that skips setup */
	if (!in || in->state != SPN_INST_SETUP)
		return;
	ds = in->ds;
	_spn_io_inst_state(p, in, SPN_INST_STARTED);
	/* Release: with the serial's release, the slot is set up before a
	 * thread sees the bit (it re-checks with an acquire load). */
	atomic_fetch_or_explicit(&ds->hot.enabled, 1u << in->idx, memory_order_release);
	atomic_fetch_add_explicit(&p->n.instances_started, 1, memory_order_relaxed);
	io_call_cfg(ds, in, cfg, ds->cb.on_start);
	if (in->notify_start && in->state == SPN_INST_STARTED) {
		Perfetto__Protos__NotifyDataSourceStartedRequest r =
			PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STARTED_REQUEST__INIT;

		r.has_data_source_id = 1;
		r.data_source_id = id;
		_spn_io_send(p, "NotifyDataSourceStarted", &r.base);
	}
}

static void io_on_stop_timeout(struct ipc_loop *loop, void *arg)
{
	struct spn_ds_inst *in = arg;
	struct spn_producer *p = in->ds->p;

	(void)loop;
	in->stop_timer = 0;
	if (in->state != SPN_INST_STOPPING || p->quitting)
		return;
	spn_log_warn(SPN_TAG, "data source \"%s\" did not finish stopping in %u ms",
		     in->ds->name, in->stop_timeout_ms);
	_spn_io_stop_complete(p, in);
}

/* The stop callback finished: commit the writers' data, then notify. */
void _spn_io_stop_complete(struct spn_producer *p, struct spn_ds_inst *in)
{
	struct spn_settle *j;

	if (in->state != SPN_INST_STOPPING)
		return;
	_spn_io_cancel(p, &in->stop_timer);
	_spn_io_inst_state(p, in, SPN_INST_SETTLING);
	j = calloc(1, sizeof(*j));
	if (!j) {
		/* Cannot wait for the data: notify now. */
		struct spn_settle now = {
			.kind = SPN_SETTLE_STOP, .ds = in->ds, .inst = in->idx,
			.serial = atomic_load_explicit(&in->serial, memory_order_relaxed),
		};

		_spn_io_stop_finish(p, &now);
		return;
	}
	j->kind = SPN_SETTLE_STOP;
	j->ds = in->ds;
	j->inst = in->idx;
	/* Relaxed: only this thread stores serial. */
	j->serial = atomic_load_explicit(&in->serial, memory_order_relaxed);
	_spn_io_settle_add(p, j);
}

/*
 * Stops an instance: clears its enabled bit and runs on_stop. With
 * `service` (a stop_data_source command) the stop then completes now or
 * when the data source says so; otherwise (connection lost, destroy) the
 * caller frees the slot and the completion is ignored.
 */
void _spn_io_stop_inst(struct spn_producer *p, struct spn_ds_inst *in, bool service)
{
	struct spn_ds *ds = in->ds;
	struct spn_ds_stop stop;
	bool deferred = false;

	if (in->state != SPN_INST_SETUP && in->state != SPN_INST_STARTED)
		return;
	/* Release: the stop is ordered after what the I/O thread did for
	 * the instance; threads read the bit relaxed (a hint). */
	atomic_fetch_and_explicit(&ds->hot.enabled, ~(1u << in->idx), memory_order_release);
	_spn_io_inst_state(p, in, SPN_INST_STOPPING);
	stop.ds = ds;
	stop.instance = in->idx;
	stop.serial = atomic_load_explicit(&in->serial, memory_order_relaxed);
	if (ds->cb.on_stop)
		deferred = ds->cb.on_stop(ds, &stop, ds->cb.user);
	if (!service || p->st != SPN_CONN_UP ||
	    atomic_load_explicit(&in->serial, memory_order_relaxed) != stop.serial)
		return;
	if (!deferred) {
		_spn_io_stop_complete(p, in);
		return;
	}
	if (ipc_loop_timer_add(p->loop, in->stop_timeout_ms, io_on_stop_timeout, in,
			       &in->stop_timer) != 0)
		in->stop_timer = 0;
	/* It may have called spn_ds_stop_done() before returning true. */
	_spn_io_stop_done_scan(p);
}

/* Connection gone or destroy: every instance stops, every slot is freed. */
static void io_stop_all(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++) {
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
			struct spn_ds_inst *in = &ds->inst[i];

			if (in->state == SPN_INST_FREE)
				continue;
			_spn_io_stop_inst(p, in, false);
			/* on_stop may have unregistered ds, which freed it */
			if (in->state != SPN_INST_FREE)
				_spn_io_inst_free(p, in);
		}
		ds->reg_gen = 0;
	}
}

static void io_cmd_flush(struct spn_producer *p,
			 const Perfetto__Protos__GetAsyncCommandResponse__Flush *f)
{
	struct spn_settle *j;

	for (size_t k = 0; k < f->n_data_source_ids; k++) {
		struct spn_ds_inst *in = _spn_io_find_inst(p, f->data_source_ids[k]);

		if (in && !in->ds->unreg && in->ds->cb.on_flush)
			in->ds->cb.on_flush(in->ds, in->idx, f->request_id, in->ds->cb.user);
		if (p->st != SPN_CONN_UP)
			return;
	}
	if (!f->has_request_id || !f->request_id)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		_spn_io_commit(p, f->request_id); /* ack what we have */
		return;
	}
	j->flush_id = f->request_id;
	_spn_io_settle_add(p, j);
}

static void io_cmd_clear(struct spn_producer *p,
			 const Perfetto__Protos__GetAsyncCommandResponse__ClearIncrementalState *c)
{
	for (size_t k = 0; k < c->n_data_source_ids; k++) {
		struct spn_ds_inst *in = _spn_io_find_inst(p, c->data_source_ids[k]);

		if (!in)
			continue;
		/* Relaxed: see struct spn_ds_inst. */
		atomic_fetch_add_explicit(&in->clear_gen, 1, memory_order_relaxed);
		if (!in->ds->unreg && in->ds->cb.on_clear_incremental_state)
			in->ds->cb.on_clear_incremental_state(in->ds, in->idx, in->ds->cb.user);
	}
}

static void io_cmd_setup_tracing(struct spn_producer *p,
				 const Perfetto__Protos__GetAsyncCommandResponse__SetupTracing *st,
				 int fd)
{
	uint32_t page = st->has_shared_buffer_page_size_kb ?
				st->shared_buffer_page_size_kb * 1024u : SPN_SMB_DEFAULT_PAGE_SIZE;
	struct spn_sdk_ctx *ctx;
	int err;

	if (p->ctx) {
		/* Ours was adopted (no fd), or a second offer. */
		if (fd >= 0) {
			spn_log_warn(SPN_TAG, "setup_tracing: already have an SMB; fd ignored");
			close(fd);
		}
		return;
	}
	if (fd < 0) {
		spn_log_error(SPN_TAG, "setup_tracing without an SMB fd: cannot trace");
		return;
	}
	ctx = _spn_io_ctx_new(p);
	if (!ctx) {
		close(fd);
		return;
	}
	err = smb_shm_attach(&ctx->shm, fd, page, SMB_SHM_FROM_SERVICE);
	if (err) {
		spn_log_error(SPN_TAG, "cannot map the service's SMB: %s", ctx->shm.err);
		close(fd);
		_spn_ctx_unref(ctx);
		return;
	}
	err = _spn_io_ctx_ready(p, ctx);
	if (err) {
		spn_log_error(SPN_TAG, "SMB set-up failed: %s", strerror(-err));
		_spn_ctx_unref(ctx);
		return;
	}
	_spn_io_ctx_publish(p, ctx);
}

/* One reply of the GetAsyncCommand stream: one command. */
static void io_on_cmd(void *arg, struct ipc_client_reply *r)
{
	struct spn_producer *p = arg;
	const SpnCmd *cmd = (const SpnCmd *)r->msg;

	if (p->st == SPN_CONN_DOWN)
		return;
	if (r->status < 0) {
		_spn_io_lost(p, r->status);
		return;
	}
	switch (cmd->cmd_case) {
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING:
		io_cmd_setup_tracing(p, cmd->setup_tracing, ipc_client_reply_take_fd(r));
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE:
		io_cmd_setup(p, cmd->setup_data_source->new_instance_id,
			     cmd->setup_data_source->config);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE:
		io_cmd_start(p, cmd->start_data_source->new_instance_id,
			     cmd->start_data_source->config);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE: {
		struct spn_ds_inst *in = _spn_io_find_inst(p, cmd->stop_data_source->instance_id);

		if (in)
			_spn_io_stop_inst(p, in, true);
		break;
	}
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH:
		io_cmd_flush(p, cmd->flush);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_CLEAR_INCREMENTAL_STATE:
		io_cmd_clear(p, cmd->clear_incremental_state);
		break;
	default:
		spn_log_debug(SPN_TAG, "unknown async command %d ignored", (int)cmd->cmd_case);
		break;
	}
	if (!r->has_more && p->st != SPN_CONN_DOWN) {
		spn_log_warn(SPN_TAG, "the service ended the command stream");
		_spn_io_lost(p, -EPROTO);
	}
}

/* ---- Connection -------------------------------------------------------------------- */

static void io_on_registered(void *arg, struct ipc_client_reply *r)
{
	struct spn_ds *ds = arg;

	if (r->status < 0 && r->status != -ECONNRESET)
		spn_log_warn(SPN_TAG, "RegisterDataSource \"%s\": %s", ds->name,
			     strerror(-r->status));
}

static void io_register(struct spn_producer *p, struct spn_ds *ds)
{
	Perfetto__Protos__RegisterDataSourceRequest req =
		PERFETTO__PROTOS__REGISTER_DATA_SOURCE_REQUEST__INIT;
	Perfetto__Protos__DataSourceDescriptor d =
		PERFETTO__PROTOS__DATA_SOURCE_DESCRIPTOR__INIT;
	int err;

	_spn_io_fill_desc(ds, &d);
	req.data_source_descriptor = &d;
	ds->reg_gen = p->conn_gen;
	err = ipc_client_invoke(p->port, "RegisterDataSource", &req.base, -1, 0,
				io_on_registered, ds, NULL);
	if (err)
		spn_log_warn(SPN_TAG, "RegisterDataSource \"%s\" not sent: %s", ds->name,
			     strerror(-err));
}

/* Registers every data source not yet registered on this connection. */
void _spn_io_register_all(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; p->st == SPN_CONN_UP && (ds = _spn_io_ds_at(p, k)); k++)
		if (ds->reg_gen != p->conn_gen && !ds->unreg)
			io_register(p, ds);
}

static void io_on_init(void *arg, struct ipc_client_reply *r)
{
	struct spn_producer *p = arg;
	const Perfetto__Protos__InitializeConnectionResponse *resp = (const void *)r->msg;

	if (p->st != SPN_CONN_CONNECTING)
		return;
	if (r->status < 0) {
		if (r->status != -ECONNRESET)
			spn_log_warn(SPN_TAG, "InitializeConnection refused by %s", p->socket);
		_spn_io_lost(p, r->status);
		return;
	}
	if (resp->has_use_shmem_emulation && resp->use_shmem_emulation) {
		spn_log_error(SPN_TAG, "the service asks for SMB emulation, which a Unix "
				       "socket producer does not do");
		_spn_io_lost(p, -EPROTO);
		return;
	}
	p->direct_patching = resp->has_direct_smb_patching_supported &&
			     resp->direct_smb_patching_supported;
	if (p->ctx) { /* our startup SMB */
		struct spn_sdk_ctx *ctx = p->ctx;

		if (resp->has_using_shmem_provided_by_producer &&
		    resp->using_shmem_provided_by_producer && _spn_io_ctx_ready(p, ctx) == 0) {
			_spn_io_ctx_publish(p, ctx);
		} else {
			spn_log_info(SPN_TAG, "the service did not adopt our SMB; using its own");
			_spn_io_drop_ctx(p);
		}
	}
	p->st = SPN_CONN_UP;
	p->backoff_ms = 0;
	atomic_fetch_add_explicit(&p->n.connects, 1, memory_order_relaxed);
	spn_log_info(SPN_TAG, "connected to %s as \"%s\"", p->socket, p->name);
	_spn_io_register_all(p);
	_spn_io_ctl_connected(p); /* then the triggers that waited */
}

static void io_on_bind(void *arg, struct ipc_proxy *proxy, int status)
{
	struct spn_producer *p = arg;
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__GetAsyncCommandRequest cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_REQUEST__INIT;
	int err, fd = p->ctx ? p->ctx->shm.fd : -1;

	if (p->st != SPN_CONN_CONNECTING)
		return;
	if (status < 0) {
		_spn_io_lost(p, status);
		return;
	}
	p->port = proxy;
	init.producer_name = p->name;
	if (p->ctx) {
		init.has_shared_memory_size_hint_bytes = 1;
		init.shared_memory_size_hint_bytes = (uint32_t)p->ctx->shm.smb.size;
		init.has_shared_memory_page_size_hint_bytes = 1;
		init.shared_memory_page_size_hint_bytes = p->ctx->shm.smb.page_size;
		init.has_producer_provided_shmem = init.producer_provided_shmem = 1;
	} else {
		init.has_shared_memory_size_hint_bytes = p->opts.smb_size_hint != 0;
		init.shared_memory_size_hint_bytes = p->opts.smb_size_hint;
		init.has_shared_memory_page_size_hint_bytes = p->opts.smb_page_size_hint != 0;
		init.shared_memory_page_size_hint_bytes = p->opts.smb_page_size_hint;
	}
	init.has_smb_scraping_mode = 1;
	init.smb_scraping_mode =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED;
	init.sdk_version = SPN_SDK_VERSION;
	/* Spec order: InitializeConnection, then GetAsyncCommand at once,
	 * without waiting for the reply. */
	err = ipc_client_invoke(proxy, "InitializeConnection", &init.base, fd, 0, io_on_init,
				p, NULL);
	if (!err && p->st == SPN_CONN_CONNECTING)
		err = ipc_client_invoke(proxy, "GetAsyncCommand", &cmd.base, -1, 0, io_on_cmd,
					p, NULL);
	if (err && p->st == SPN_CONN_CONNECTING) {
		spn_log_warn(SPN_TAG, "handshake: %s", strerror(-err));
		_spn_io_lost(p, err);
	}
}

static void io_on_disconnect(void *arg, struct ipc_client *cl, int reason)
{
	struct spn_producer *p = arg;

	(void)cl;
	_spn_io_lost(p, reason);
}

static void io_on_retry(struct ipc_loop *loop, void *arg);

void _spn_io_connect(struct spn_producer *p)
{
	static const struct ipc_client_ops ops = { .on_disconnect = io_on_disconnect };
	int err;

	p->conn_gen++;
	p->st = SPN_CONN_CONNECTING;
	p->direct_patching = false;
	if (p->opts.producer_smb)
		_spn_io_make_own_smb(p);
	err = ipc_client_connect(p->loop, p->socket, &ops, p, &p->cl);
	if (err) {
		p->cl = NULL;
		_spn_io_lost(p, err);
		return;
	}
	err = ipc_client_bind(p->cl, &perfetto__protos__producer_port__descriptor, io_on_bind, p);
	if (err && p->st == SPN_CONN_CONNECTING)
		_spn_io_lost(p, err);
}

static void io_on_retry(struct ipc_loop *loop, void *arg)
{
	struct spn_producer *p = arg;

	(void)loop;
	p->retry_timer = 0;
	if (!p->quitting && p->st == SPN_CONN_DOWN)
		_spn_io_connect(p);
}

/* Perfetto's back-off: + step per failed attempt while below the limit,
 * then the maximum. */
static void io_schedule_retry(struct spn_producer *p)
{
	if (p->backoff_ms < p->opts.reconnect_step_limit_ms)
		p->backoff_ms += p->opts.reconnect_step_ms;
	else
		p->backoff_ms = p->opts.reconnect_max_ms;
	if (ipc_loop_timer_add(p->loop, p->backoff_ms, io_on_retry, p, &p->retry_timer) != 0) {
		spn_log_error(SPN_TAG, "cannot schedule a reconnect");
		p->retry_timer = 0;
	}
}

/*
 * The connection failed or went away (or destroy): stop every instance,
 * drop the SMB (writers still holding it keep it mapped), close the
 * client, and schedule a retry. Idempotent per connection.
 */
void _spn_io_lost(struct spn_producer *p, int reason)
{
	struct ipc_client *cl = p->cl;
	bool was_up = p->st == SPN_CONN_UP;

	if (p->st == SPN_CONN_DOWN)
		return;
	p->st = SPN_CONN_DOWN;
	p->cl = NULL;
	p->port = NULL;
	_spn_io_settle_drop(p);
	io_stop_all(p);
	_spn_io_drop_ctx(p);
	if (cl)
		ipc_client_destroy(cl);
	if (was_up) {
		atomic_fetch_add_explicit(&p->n.disconnects, 1, memory_order_relaxed);
		if (!p->quitting)
			spn_log_info(SPN_TAG, "lost %s (%s); reconnecting", p->socket,
				     reason ? strerror(-reason) : "closed by the service");
	} else {
		atomic_fetch_add_explicit(&p->n.connect_failures, 1, memory_order_relaxed);
		spn_log_debug(SPN_TAG, "cannot connect to %s: %s", p->socket,
			      reason ? strerror(-reason) : "closed");
	}
	if (!p->quitting)
		io_schedule_retry(p);
	else
		_spn_io_quit_done(p); /* a destroy waiting for the last sends */
}
