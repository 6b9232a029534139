// SPDX-License-Identifier: Apache-2.0
// spindled's internal structures: the service, its lanes and control plane,
// the lane-owned and control-owned halves of a producer, and the messages
// the threads exchange.
//
// Ownership (DESIGN.md §2). Threads share nothing mutable except through
// posted messages (ipc_loop_post: a bounded ck_ring plus an eventfd wake-up
// read by the receiving loop) and the few atomics named below.
//  - A lane owns its connections and, per producer, the SMB mapping, the
//    writer -> buffer map and the set of buffers the producer may write to
//    (struct svc_producer). Only the lane touches them.
//  - The control thread (ctl, thread 0 of the control plane) owns sessions,
//    the control half of each producer (name, data sources, the async
//    command stream: struct ctl_producer) and the BufferID space.
//  - A trace buffer (struct svc_buf) is shared: lanes append to their own
//    shard, the control thread reads. Its lifetime is a reference count: the
//    session holds one reference and every producer allowed to write into it
//    holds one on its lane; the last unref posts the destroy to ctl, so a
//    buffer is never freed under a lane.
//  - Its storage (svc_buf.tb) can be replaced under the same BufferID
//    (CloneSession: clear_before_clone, transfer_on_clone). Lanes never read
//    svc_buf.tb: each allow entry carries the storage the lane writes into,
//    set by the allow message and changed only by a retarget message; the
//    lane acks a retarget (CTL_BUF_RETARGETED), after which it never touches
//    the old storage again, so ctl may then hand it to a clone or free it.
//  - Posting from ctl to a lane and sending a reply through a lane's loop
//    both go through that lane's post ring, in post order: so "map the SMB,
//    allow buffer B, then send setup_data_source" reaches the lane in that
//    order and the producer can't commit before the lane can accept it.
#ifndef SPN_CORE_SVC_INT_H
#define SPN_CORE_SVC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/service.h"
#include "core/tbuf.h"
#include "ipc/conn.h"
#include "ipc/host.h"
#include "ipc/loop.h"
#include "smb/shm.h"

#define SVC_MAX_PRODUCERS 65535u	/* ProducerIDs 1..65535 */
#define SVC_WAIT_POST_MS 1000u		/* back-pressure wait of a full post ring */
#define SVC_PRODUCER_SEND_TIMEOUT_MS 10u	/* ipc-wire.md §8 */
#define SVC_CONSUMER_SEND_TIMEOUT_MS 10000u	/* ipc-wire.md §8 */
#define SVC_CHUNK_SCRATCH 65536u	/* lane's copy buffer: the largest chunk */

struct svc;
struct ctl;

/* A trace buffer shared by lanes (writers) and ctl (reader). */
struct svc_buf {
	uint16_t id;		/* global BufferID; ctl writes once at creation */
	struct svc_tbuf *tb;	/* the storage: ctl only (creation, CloneSession
				 * swaps); freed with the last reference. Lanes
				 * use their allow entry's copy instead */
	atomic_int refs;	/* session + allowed producers; last unref -> ctl frees */
	struct svc *svc;	/* for the final unref's post */
};

/* One allowed (producer may write) buffer on a lane. */
struct svc_allow {
	uint16_t buffer_id;	/* BufferID named in commits */
	struct svc_buf *buf;	/* holds one reference */
	struct svc_tbuf *tb;	/* where commits go: buf->tb when allowed, then
				 * whatever the last retarget named */
};

/* The lane half of a producer: lane thread only. */
struct svc_producer {
	uint16_t id;			/* ProducerID (1..65535) */
	struct svc_lane *lane;		/* owning lane */
	struct ipc_conn *conn;		/* its connection (valid while connected) */
	struct ipc_peer_cred cred;	/* SO_PEERCRED at accept */
	bool initialized;		/* InitializeConnection accepted */
	bool scrape;			/* SMB scraping enabled for this producer */
	bool cut_off;			/* broke the ABI: being disconnected */
	struct smb_shm *shm;		/* the SMB once set up, else NULL */
	uint16_t *writer_buf;		/* WriterID -> BufferID (0: unregistered), lazily 32768 */
	struct svc_allow *allow;	/* buffers it may write to */
	unsigned nallow;		/* entries used in allow */
	unsigned cap_allow;		/* entries allocated in allow */
};

/* A data-plane lane: one thread, one loop, its connections. */
struct svc_lane {
	struct svc *svc;		/* the service */
	unsigned idx;			/* lane index, the tbuf shard */
	struct ipc_loop *loop;		/* this lane's loop */
	pthread_t thread;		/* the lane thread */
	bool running;			/* thread started (it destroys the loop) */
	struct svc_producer **by_id;	/* ProducerID -> producer on this lane */
	uint8_t *scratch;		/* 2 * SVC_CHUNK_SCRATCH bytes: two chunk
					 * copies (pp_move), or one scrape copy */
};

/* Service-wide counters (TraceStats), updated by lanes with relaxed adds. */
struct svc_counters {
	atomic_uint_fast64_t chunks_discarded;	/* copy-time refusals (§5.2) */
	atomic_uint_fast64_t patches_discarded;	/* bad ChunkToPatch entries */
	atomic_uint_fast64_t producers_seen;	/* producers ever connected */
};

/* The service. */
struct svc {
	struct svc_opts opts;		/* copy of the options (paths owned) */
	uid_t uid;			/* the service's own uid (trusted_uid of its packets) */
	struct ipc_loop *acceptor;	/* listens on both sockets */
	pthread_t acceptor_thread;	/* runs the acceptor loop */
	struct ipc_listener *plisten;	/* producer socket */
	struct ipc_listener *clisten;	/* consumer socket */
	struct ipc_host *phost;		/* ProducerPort */
	struct ipc_host *chost;		/* ConsumerPort */
	struct svc_lane *lanes;		/* opts.lanes lanes */
	atomic_uint next_lane;		/* round robin for new connections */
	struct ctl *ctl;		/* the control plane */
	_Atomic uint64_t pid_bits[1024]; /* ProducerIDs in use (bit per id) */
	atomic_uint pid_next;		/* next ProducerID to try */
	struct svc_counters cnt;	/* TraceStats counters */
	atomic_bool lockdown;		/* lockdown mode (ctl writes, lanes read) */
};

/* --- messages to the control thread (ctl.c), any thread may post --- */

enum ctl_msg_type {
	CTL_P_INIT = 1,		/* producer initialized */
	CTL_P_ASYNC,		/* GetAsyncCommand stream opened */
	CTL_P_REG_DS,		/* RegisterDataSource */
	CTL_P_UPDATE_DS,	/* UpdateDataSource */
	CTL_P_UNREG_DS,		/* UnregisterDataSource */
	CTL_P_DS_STARTED,	/* NotifyDataSourceStarted */
	CTL_P_DS_STOPPED,	/* NotifyDataSourceStopped */
	CTL_P_TRIGGERS,		/* ActivateTriggers */
	CTL_P_FLUSH_ACK,	/* CommitData.flush_request_id */
	CTL_P_SYNC,		/* Sync: reply once earlier messages are done */
	CTL_P_GONE,		/* producer disconnected (lane released its half) */
	CTL_C_CALL,		/* a ConsumerPort call */
	CTL_C_GONE,		/* consumer disconnected */
	CTL_BUF_FREE,		/* last reference of a buffer dropped */
	CTL_SCRAPED,		/* a lane finished a scrape request */
	CTL_BUF_RETARGETED,	/* a lane applied a retarget (u64 = token) */
};

/* A message to ctl; the fields used depend on type. Heap, ctl frees it. */
struct ctl_msg {
	enum ctl_msg_type type;		/* what happened */
	struct ctl *ctl;		/* receiver (set by ctl_post) */
	uint16_t producer_id;		/* CTL_P_*: the producer */
	unsigned lane;			/* lane of the connection */
	uint64_t conn_id;		/* connection id on that lane */
	struct ipc_peer_cred cred;	/* peer identity */
	struct ipc_reply reply;		/* deferred reply (ASYNC, SYNC, C_CALL) */
	uint32_t method;		/* CTL_C_CALL: ConsumerPort method id */
	int fd;				/* fd that came with the call, or -1 */
	uint64_t u64;			/* instance id, flush id, scrape token */
	char *name;			/* producer / data source name */
	uint8_t *bytes;			/* packed request or descriptor; INIT:
					 * sdk_version (NUL-terminated) or NULL */
	size_t len;			/* bytes used in bytes */
	uint32_t u32a, u32b;		/* INIT: size and page hints */
	int i32;			/* INIT: scraping mode; adopted SMB page size */
	struct svc_buf *buf;		/* CTL_BUF_FREE */
};

/* Allocates a zeroed message (fd = -1). NULL on ENOMEM. */
struct ctl_msg *ctl_msg_new(enum ctl_msg_type type);
/* Frees a message and what it owns (closes fd). */
void ctl_msg_free(struct ctl_msg *m);
/* Posts m to ctl, waiting while its ring is full. On failure frees m and
 * returns -errno. Any thread. */
int ctl_post(struct svc *svc, struct ctl_msg *m);

/* --- control plane lifecycle (ctl.c) --- */
int ctl_create(struct svc *svc, struct ctl **out);
int ctl_start(struct ctl *ctl);
/* Disables every session and waits until each consumer got its reply. */
void ctl_shutdown_sessions(struct ctl *ctl);
/* Makes ctl stop sending through lanes (before they are destroyed). */
void ctl_detach_lanes(struct ctl *ctl);
/* Whether ctl stopped using the lanes (ctl thread only). */
bool ctl_lanes_gone(const struct ctl *ctl);
void ctl_stop(struct ctl *ctl);		/* stops the threads, joins */
void ctl_destroy(struct ctl *ctl);

/* --- buffers (svc_buf.c) --- */
void svc_buf_ref(struct svc_buf *b);
void svc_buf_unref(struct svc_buf *b);	/* last: posts CTL_BUF_FREE */

/* --- lanes: messages from ctl (producer_port.c) --- */

/* Gives producer `id` on `lane` its SMB (ownership of shm passes). */
int lane_post_smb(struct svc *svc, unsigned lane, uint16_t id,
		  struct smb_shm *shm);
/* Allows producer `id` to write into b (takes a reference for it). */
int lane_post_allow(struct svc *svc, unsigned lane, uint16_t id,
		    struct svc_buf *b);
/* Revokes buffer `buffer_id` of producer `id` (drops its reference). */
int lane_post_revoke(struct svc *svc, unsigned lane, uint16_t id,
		     uint16_t buffer_id);
/* Points producer `id`'s allow entry for `buffer_id` (if it still has one)
 * at storage tb, then posts CTL_BUF_RETARGETED with u64 = token: from then
 * on that lane never touches the entry's previous storage. Returns 0, or
 * -errno with nothing posted (no ack will come). */
int lane_post_retarget(struct svc *svc, unsigned lane, uint16_t id,
		       uint16_t buffer_id, struct svc_tbuf *tb, uint64_t token);
/* Scrapes producer `id`'s SMB into its allowed buffers, then posts
 * CTL_SCRAPED with u64 = token. */
int lane_post_scrape(struct svc *svc, unsigned lane, uint16_t id,
		     uint64_t token);
/* Closes producer `id`'s connection (e.g. rejected InitializeConnection). */
int lane_post_close(struct svc *svc, unsigned lane, uint64_t conn_id);

/* Registers ProducerPort / ConsumerPort on the hosts. */
int svc_producer_port_register(struct svc *svc, struct ipc_host *h);
int svc_consumer_port_register(struct svc *svc, struct ipc_host *h);
void svc_producer_on_connect(struct svc *svc, struct ipc_conn *c);
void svc_producer_on_disconnect(struct svc *svc, struct ipc_conn *c);

/* Names a thread "<prefix><n>" (best effort). */
void svc_name_thread(pthread_t t, const char *prefix, unsigned n);

/* The lane that owns loop (NULL if none). */
struct svc_lane *svc_lane_of(struct svc *svc, struct ipc_loop *loop);

#endif
