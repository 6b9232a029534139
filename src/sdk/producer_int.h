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

#include "ipc/loop.h"
#include "smb/arbiter.h"
#include "smb/shm.h"
#include "spindle/producer.h"

#pragma GCC visibility push(hidden)

struct ipc_client;
struct ipc_proxy;

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
	uint64_t reg_gen;		/* I/O: connection it was registered on */
	struct spn_ds_inst inst[SPN_DS_MAX_INSTANCES]; /* slots */
};

/* What the I/O thread is doing with the service. */
enum spn_conn_state {
	SPN_CONN_DOWN = 0,	/* not connected; a retry may be scheduled */
	SPN_CONN_CONNECTING,	/* connect / bind / InitializeConnection */
	SPN_CONN_UP,		/* initialized */
};

/* A flush or a stop waiting for writers' data to be committed. */
struct spn_settle {
	bool is_stop;			/* stop (else flush) */
	uint64_t flush_id;		/* flush: request id to ack */
	struct spn_ds *ds;		/* stop: data source */
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
		wakeups;
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
	_Atomic uint32_t work;		/* enum spn_work bits */

	/* ---- I/O thread ---- */
	_Alignas(64) struct ipc_loop *loop; /* the I/O thread's loop */
	pthread_t thread;		/* the I/O thread */
	bool thread_started;		/* thread is running */
	bool quitting;			/* I/O: destroy in progress */
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
void *_spn_io_main(void *p);
/* Posted by spn_producer_create / spn_producer_destroy. */
void _spn_io_start(struct ipc_loop *loop, void *p, uint64_t u64);
void _spn_io_quit(struct ipc_loop *loop, void *p, uint64_t u64);
/* Posted by an app thread that woke the I/O thread (_spn_prod_kick). */
void _spn_io_on_kick(struct ipc_loop *loop, void *p, uint64_t u64);

#pragma GCC visibility pop

#endif
