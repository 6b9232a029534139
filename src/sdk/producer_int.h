// SPDX-License-Identifier: Apache-2.0
// Internals of the producer SDK shared by producer.c (app-thread side: data sources, thread writers, wake-ups) and producer_io.c (the I/O thread: connection, commands, commits).
//
// Threads and what they own:
//   I/O thread   the ipc_loop, the client, the connection state, every
//                field marked "I/O"; it is the only writer of instance
//                state, of the enabled bits and of p->ctx.
//   app threads  their thread-local writer table (producer.c); they read
//                instance state under p->lock when they create a writer.
//
// Lifetimes. An SMB context (struct spn_sdk_ctx: the mapping, its arbiter
// and commit storage) is counted: the I/O thread holds one reference while
// it is the connection's current SMB, each thread writer holds one. New
// references are taken only under p->lock while ctx->live, and the I/O
// thread clears live under p->lock before dropping its own, so once the
// count reaches 0 nobody can take one again; whoever drops the last frees
// it (an app thread retiring a stale writer, or the I/O thread). So an app
// thread in the middle of a packet when the connection is lost keeps
// writing into a mapping that stays valid; its chunks are simply never
// committed. The producer itself is counted the same way (the app's handle
// and each context), so a context freed late still finds its producer.
#ifndef SPN_SDK_PRODUCER_INT_H
#define SPN_SDK_PRODUCER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "data_source_descriptor.pb-c.h"
#include "ipc/loop.h"
#include "smb/arbiter.h"
#include "smb/shm.h"
#include "spindle/producer.h"

#pragma GCC visibility push(hidden)

struct ipc_client;
struct ipc_proxy;
struct spn_trig;

/* Longest data source name accepted. */
#define SPN_DS_NAME_MAX 255u
/* Settle rounds (reclaim + drain, one commit period apart) a flush or a
 * stop waits for writers that were inside a packet. */
#define SPN_SETTLE_ROUNDS 3u
/* Stop timeout used when the config has none (kDataSourceStopTimeoutMs). */
#define SPN_DEFAULT_STOP_TIMEOUT_MS 5000u

/* Work bits app threads hand the I/O thread (spn_producer.work). */
enum spn_work {
	SPN_WORK_REGISTER = 1u,	/* a data source was registered */
	SPN_WORK_STOP_DONE = 2u,/* spn_ds_stop_done() was called */
	SPN_WORK_TRIGGERS = 4u,	/* triggers were pushed (p->trig_head) */
	SPN_WORK_UPDATE = 8u,	/* a descriptor update is pending */
	SPN_WORK_UNREG = 16u,	/* a data source is being unregistered */
};

/* Life of an instance slot (spn_ds_inst.state). */
enum spn_inst_state {
	SPN_INST_FREE = 0,	/* unused */
	SPN_INST_SETUP,		/* setup_data_source seen */
	SPN_INST_STARTED,	/* started: writers may be created */
	SPN_INST_STOPPING,	/* stop asked, not yet completed */
	SPN_INST_SETTLING,	/* stop completed, data being committed */
};

/* One SMB of one connection, with its arbiter. See the top for refs. */
struct spn_sdk_ctx {
	/* 1 for the I/O thread while current, + 1 per writer; acq_rel on
	 * the drop (the freeing thread sees every writer's last use) */
	_Atomic uint32_t refs;
	bool live;			/* p->lock: new writers may use it */
	bool ready;			/* arbiter and commit storage set up
					 * (constant once live readers exist) */
	bool producer_owned;		/* we created it (startup SMB) */
	struct spn_producer *p;		/* owner (a reference) */
	struct smb_shm shm;		/* the mapping and its fd */
	struct smb_arbiter arb;		/* chunk allocation and commit queue */
	struct smb_commit commit;	/* I/O: one CommitDataRequest's storage */
};

/* One instance slot of a data source. */
struct spn_ds_inst {
	/* producer-unique id of the instance in this slot, 0 when free;
	 * I/O stores under p->lock (release), app threads load (acquire,
	 * pairs with it: the slot's fields are set up before) */
	_Atomic uint64_t serial;
	/* bumped by the I/O thread at each ClearIncrementalState; threads
	 * compare it with what they saw (relaxed: a hint to re-intern) */
	_Atomic uint32_t clear_gen;
	enum spn_inst_state state;	/* I/O writes under p->lock */
	uint32_t target_buffer;		/* I/O writes under p->lock */
	bool stop_done;			/* p->lock: spn_ds_stop_done() called */
	uint64_t id;			/* I/O: the service's instance id */
	uint32_t stop_timeout_ms;	/* I/O: from the config */
	uint64_t stop_timer;		/* I/O: forced completion timer, 0 */
	/* I/O: send NotifyDataSourceStarted / Stopped for this instance
	 * (the descriptor's flags at setup, see struct spn_ds.sticky_*) */
	bool notify_start, notify_stop;
	struct spn_ds *ds;		/* constant: the data source */
	uint32_t idx;			/* constant: this slot's index */
};

/* A registered data source. Starts with the inline hot part. */
struct spn_ds {
	struct spn_ds_hot hot;		/* enabled bits (must be first) */
	struct spn_producer *p;		/* owner */
	char name[SPN_DS_NAME_MAX + 1];	/* descriptor name */
	struct spn_ds_desc desc;	/* as given; name and bytes point at
					 * our copies */
	uint8_t *ted;			/* copy of the TrackEventDescriptor */
	struct spn_ds_callbacks cb;	/* callbacks */
	uint64_t desc_id;		/* constant: DataSourceDescriptor.id,
					 * unique in the producer, never 0 */
	uint64_t reg_gen;		/* I/O: connection it was registered on */
	/* p->lock: a spn_data_source_update() copy waits for the I/O thread
	 * (upd holds it; name and bytes point at ours: upd_ted) */
	bool upd_pending;
	struct spn_ds_desc upd;
	uint8_t *upd_ted;
	/* I/O: flags of a descriptor replaced on this connection while the
	 * service may still create instances from it (until the Sync that
	 * follows the UpdateDataSource is answered, or for good when the
	 * service has no UpdateDataSource): new instances notify if either
	 * descriptor asks */
	bool sticky_start, sticky_stop;
	uint32_t upd_syncs;		/* I/O: those Syncs not yet answered */
	/* p->lock: spn_data_source_unregister() was called; unreg_done: the
	 * I/O thread stopped the instances (the caller waits for it on
	 * p->cond) */
	bool gone, unreg_done;
	/* I/O: unregistered: no new instance, no callback but the on_stop
	 * of the stop that unregistering runs, never registered again */
	bool unreg;
	struct spn_ds_inst inst[SPN_DS_MAX_INSTANCES]; /* slots */
};

/* What the I/O thread is doing with the service. */
enum spn_conn_state {
	SPN_CONN_DOWN = 0,	/* not connected; a retry may be scheduled */
	SPN_CONN_CONNECTING,	/* connect / bind / InitializeConnection */
	SPN_CONN_UP,		/* initialized */
};

/* What a settling job does once the writers' data is committed. */
enum spn_settle_kind {
	SPN_SETTLE_FLUSH = 0,	/* ack a flush (CommitData flush id) */
	SPN_SETTLE_STOP,	/* NotifyDataSourceStopped, free the slot */
	SPN_SETTLE_UNREG,	/* free the data source's slots, then
				 * UnregisterDataSource */
};

/* A flush, a stop or an unregistration waiting for writers' data to be
 * committed. */
struct spn_settle {
	enum spn_settle_kind kind;	/* what follows */
	uint64_t flush_id;		/* flush: request id to ack */
	struct spn_ds *ds;		/* stop, unreg: data source */
	uint32_t inst;			/* stop: slot */
	uint64_t serial;		/* stop: instance serial */
	unsigned rounds;		/* settle rounds done */
	struct spn_settle *next;	/* queue */
};

/* Counters (relaxed atomics: any thread reads). */
struct spn_prod_counters {
	_Atomic uint64_t connects, connect_failures, disconnects, commits,
		chunks_committed, flushes_acked, instances_started,
		instances_stopped, writers_created, packets_dropped_gone,
		wakeups, hurries, triggers_sent, triggers_dropped;
};

/* One spn_producer_activate_triggers() call (one allocation: the name
 * pointers, then the strings). */
struct spn_trig {
	struct spn_trig *next;		/* stack link, then queue link */
	uint64_t deadline_ms;		/* CLOCK_MONOTONIC ms after which it is
					 * dropped unsent; 0: never */
	size_t n;			/* names */
	char *names[];			/* n names (point past the array) */
};

struct spn_producer {
	/* the app's handle + one per SMB context; the last drop frees */
	_Atomic uint32_t refs;
	struct spn_producer_opts opts;	/* resolved (socket, name copied) */
	char socket[108];		/* producer socket name */
	char name[256];			/* producer name */
	pthread_mutex_t lock;		/* ds list, instance fields, ctx */
	struct spn_ds **ds;		/* p->lock: registered data sources */
	uint32_t nds;			/* p->lock: entries used */
	uint32_t ds_cap;		/* p->lock: entries allocated */
	struct spn_sdk_ctx *ctx;	/* p->lock for app readers; I/O writes:
					 * the connection's SMB, or NULL */

	/* ---- wake-up (any thread; see producer.c) ---- */
	/* 1 while the I/O thread sleeps without a commit timer: the first
	 * app thread to exchange it to 0 posts one wake-up */
	_Alignas(64) _Atomic uint32_t armed;
	_Atomic uint32_t kicking;	/* app threads inside the post */
	/* 1 while a hurry post (the SMB runs short while the I/O thread is
	 * awake, see _spn_prod_arb_hurry) is on its way, and for good once
	 * the I/O thread quits: app threads post one only after the I/O
	 * thread cleared it */
	_Atomic uint32_t hurry;
	_Atomic uint32_t work;		/* enum spn_work bits */

	/* ---- I/O thread ---- */
	_Alignas(64) struct ipc_loop *loop; /* the I/O thread's loop */
	pthread_t thread;		/* the I/O thread */
	bool thread_started;		/* thread is running */
	bool quitting;			/* I/O: destroy in progress */
	bool quit_done;			/* I/O: disconnected, loop stopping */
	uint64_t quit_timer;		/* I/O: limit of the last sends, 0 */
	enum spn_conn_state st;		/* I/O: connection state */
	struct ipc_client *cl;		/* I/O: client, or NULL */
	struct ipc_proxy *port;		/* I/O: bound ProducerPort, or NULL */
	uint64_t conn_gen;		/* I/O: connection attempts so far */
	bool direct_patching;		/* I/O: service allows it */
	uint32_t backoff_ms;		/* I/O: current reconnect delay */
	uint64_t retry_timer;		/* I/O: reconnect timer, 0 */
	bool tick_armed;		/* I/O: commit timer pending */
	uint64_t tick_timer;		/* I/O: its id */
	struct spn_settle *settle;	/* I/O: flushes / stops settling */
	bool settle_armed;		/* I/O: settle timer pending */
	uint64_t settle_timer;		/* I/O: its id */
	uint64_t next_serial;		/* I/O: last instance serial given */

	/* ---- triggers (spn_producer_activate_triggers) ---- */
	/* calls pushed by any thread (a stack: CAS push with release, the
	 * I/O thread takes it whole with an acquire exchange) */
	_Alignas(64) _Atomic(struct spn_trig *) trig_head;
	struct spn_trig *trig_q;	/* I/O: taken calls, oldest first */
	struct spn_trig **trig_tail;	/* I/O: &last->next (or &trig_q) */
	uint32_t ntrig_q;		/* I/O: calls in trig_q */

	pthread_cond_t cond;		/* with p->lock: unregistrations done */
	uint64_t next_desc_id;		/* p->lock: last descriptor id given */
	bool upd_unsupported_logged;	/* I/O: said once that the service
					 * lacks UpdateDataSource */

	struct spn_prod_counters n;	/* counters */
};

/* producer.c */
void _spn_prod_kick(struct spn_producer *p);
void _spn_prod_unref(struct spn_producer *p);
/* Drops a reference of ctx (frees it, and drops its producer reference,
 * on the last one). Any thread. */
void _spn_ctx_unref(struct spn_sdk_ctx *ctx);
/* Arbiter wake-up callback (ctx = the producer). */
void _spn_prod_arb_wake(void *p);
/* The arbiter's hurry hook: the SMB runs short (arbiter.h). */
void _spn_prod_arb_hurry(void *p);

/* ---- I/O thread only (producer_io.c and producer_conn.c) ---- */

/* producer_io.c: helpers */
/* Cancels *timer if set, then clears it. */
void _spn_io_cancel(struct spn_producer *p, uint64_t *timer);
/* Invokes a drop-reply method. Returns true while the connection is still
 * up afterwards (a failed send may have closed it). */
bool _spn_io_send(struct spn_producer *p, const char *method, const ProtobufCMessage *m);
/* The data source at index i of the list, or NULL past its end. */
struct spn_ds *_spn_io_ds_at(struct spn_producer *p, uint32_t i);
/* The slot holding service instance `id`, or NULL. */
struct spn_ds_inst *_spn_io_find_inst(struct spn_producer *p, uint64_t id);
/* Sets an instance's state under the lock. */
void _spn_io_inst_state(struct spn_producer *p, struct spn_ds_inst *in,
			enum spn_inst_state st);
/* Frees a slot (serial 0: threads' writers for it become stale). */
void _spn_io_inst_free(struct spn_producer *p, struct spn_ds_inst *in);
/* A new SMB context (one reference, the producer's reference taken), or
 * NULL. */
struct spn_sdk_ctx *_spn_io_ctx_new(struct spn_producer *p);
/* Sets up the arbiter over ctx's mapping. Returns 0 or -errno. */
int _spn_io_ctx_ready(struct spn_producer *p, struct spn_sdk_ctx *ctx);
/* Makes ctx the connection's SMB (writers may use it from now on). */
void _spn_io_ctx_publish(struct spn_producer *p, struct spn_sdk_ctx *ctx);
/* Drops the connection's SMB (it lives on while writers hold it). */
void _spn_io_drop_ctx(struct spn_producer *p);
/* Creates the startup SMB offered with InitializeConnection. Returns 0 or
 * -errno. */
int _spn_io_make_own_smb(struct spn_producer *p);
/* Drains and sends; flush_id != 0 rides on the last request. Returns the
 * entries sent. */
int _spn_io_commit(struct spn_producer *p, uint64_t flush_id);
/* Queues a flush or stop to settle (the first round runs now). */
void _spn_io_settle_add(struct spn_producer *p, struct spn_settle *job);
/* Forgets every settling job (connection lost). */
void _spn_io_settle_drop(struct spn_producer *p);
/* Completes the stops app threads finished with spn_ds_stop_done(). */
void _spn_io_stop_done_scan(struct spn_producer *p);
/* A settled stop: NotifyDataSourceStopped if wanted, then free the slot. */
void _spn_io_stop_finish(struct spn_producer *p, const struct spn_settle *j);
/* Stops an instance: clears its enabled bit, runs on_stop (see
 * producer_conn.c). */
void _spn_io_stop_inst(struct spn_producer *p, struct spn_ds_inst *in, bool service);

/* producer_ctl.c: triggers, descriptor updates, unregistration */
/* Fills d from ds's descriptor (RegisterDataSource, UpdateDataSource). */
void _spn_io_fill_desc(const struct spn_ds *ds, Perfetto__Protos__DataSourceDescriptor *d);
/* Takes the pushed trigger calls and, when connected, sends the queue. */
void _spn_io_triggers(struct spn_producer *p);
/* Frees every queued trigger call, counting its names as dropped. Any
 * thread once the I/O thread is gone (or the I/O thread). */
void _spn_trig_free_all(struct spn_producer *p);
/* Applies pending descriptor updates (and sends them). */
void _spn_io_updates(struct spn_producer *p);
/* Stops the data sources whose unregistration was asked. */
void _spn_io_unreg_scan(struct spn_producer *p);
/* A settled unregistration: free the slots, UnregisterDataSource. */
void _spn_io_unreg_finish(struct spn_producer *p, const struct spn_settle *j);
/* The connection is up: forget what belonged to the last one. */
void _spn_io_ctl_connected(struct spn_producer *p);

/* producer_conn.c */
/* The connection failed or went away (or destroy); idempotent. */
void _spn_io_lost(struct spn_producer *p, int reason);
/* Starts a connection attempt. */
void _spn_io_connect(struct spn_producer *p);
/* Registers every data source not yet registered on this connection. */
void _spn_io_register_all(struct spn_producer *p);
/* A stop's callback finished: settle, then notify. */
void _spn_io_stop_complete(struct spn_producer *p, struct spn_ds_inst *in);

/* producer_io.c: the thread */
/* The producer whose I/O thread this is (NULL on other threads). */
extern __thread struct spn_producer *_spn_io_self;
void *_spn_io_main(void *p);
/* Posted by spn_producer_create / spn_producer_destroy. */
void _spn_io_start(struct ipc_loop *loop, void *p, uint64_t u64);
void _spn_io_quit(struct ipc_loop *loop, void *p, uint64_t u64);
/* Finishes a quit (after the last sends, or at once). Idempotent. */
void _spn_io_quit_done(struct spn_producer *p);
/* Posted by an app thread that woke the I/O thread (_spn_prod_kick). */
void _spn_io_on_kick(struct ipc_loop *loop, void *p, uint64_t u64);
/* I/O thread: an app thread found the SMB short; commit now. */
void _spn_io_on_hurry(struct ipc_loop *loop, void *p, uint64_t u64);

#pragma GCC visibility pop

#endif
