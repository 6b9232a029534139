// SPDX-License-Identifier: Apache-2.0
// The control plane's own state: producers as ctl sees them, sessions,
// data-source instances and pending flushes. Control thread only: nothing
// here is read by another thread (lanes learn what they need by message).
#ifndef SPN_CORE_CTL_INT_H
#define SPN_CORE_CTL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "consumer_port.pb-c.h"
#include "core/guardrails.h"
#include "core/session_state.h"
#include "core/svc_packets.h"
#include "core/svc_int.h"
#include "ipc/flush_flags.h"
#include "producer_port.pb-c.h"
#include "trace_config.pb-c.h"

/* One registered data source of a producer. */
struct ctl_ds {
	char *name;		/* DataSourceDescriptor.name */
	uint64_t desc_id;	/* DataSourceDescriptor.id (0: none) */
	uint8_t *desc;		/* the descriptor's bytes, verbatim */
	size_t desc_len;	/* bytes in desc */
	bool notify_start;	/* will_notify_on_start */
	bool notify_stop;	/* will_notify_on_stop */
	bool clear_incr;	/* handles_incremental_state_clear */
	bool no_flush;		/* no_flush */
};

/* A producer as the control plane knows it. */
struct ctl_producer {
	uint16_t id;		/* ProducerID */
	unsigned lane;		/* lane owning the connection */
	uint64_t conn_id;	/* connection id on that lane */
	struct ipc_peer_cred cred; /* SO_PEERCRED */
	char *name;		/* producer_name */
	char *sdk_version;	/* sdk_version it gave, or NULL */
	uint32_t size_hint;	/* shared_memory_size_hint_bytes */
	uint32_t page_hint;	/* shared_memory_page_size_hint_bytes */
	bool have_smb;		/* the lane has (or is being sent) an SMB */
	bool adopted;		/* the SMB is the producer's own */
	bool setup_sent;	/* setup_tracing went out */
	int smb_fd;		/* service SMB fd waiting for the stream, or -1 */
	uint32_t page_kb;	/* page size of the service SMB, KiB */
	bool async_open;	/* the GetAsyncCommand stream is open */
	struct ipc_reply async;	/* its handle */
	struct ctl_ds *ds;	/* registered data sources */
	unsigned nds;		/* entries used */
	unsigned cap_ds;	/* entries allocated */
	struct ctl_producer *next; /* list */
};

/* Data-source instance states (producer-port.md §6.2). */
enum ctl_inst_state {
	INST_CONFIGURED = 0,	/* setup sent */
	INST_STARTING,		/* start sent, waiting for NotifyDataSourceStarted */
	INST_STARTED,		/* running */
	INST_STOPPING,		/* stop sent, waiting for NotifyDataSourceStopped */
	INST_STOPPED,		/* done */
};

/* One data-source instance of a session on a producer. */
struct ctl_inst {
	uint64_t id;		/* DataSourceInstanceID */
	uint16_t producer_id;	/* where it runs */
	unsigned cfg_index;	/* TraceConfig.data_sources index */
	uint16_t buffer_id;	/* BufferID its config targets */
	enum ctl_inst_state state; /* lifecycle */
	bool notify_start;	/* will_notify_on_start */
	bool notify_stop;	/* will_notify_on_stop */
	bool no_flush;		/* excluded from flushes */
	bool clear_incr;	/* wants clear_incremental_state */
	uint8_t *cfg;		/* packed DataSourceConfig sent to the producer */
	size_t cfg_len;		/* bytes in cfg */
};

struct ctl;
struct ctl_session;

/*
 * Called once when a flush started by ctl_flush_then() ends: outcome 1 =
 * every producer acked, 0 = timed out or failed, -1 = the session is being
 * freed (s is dead then: read nothing from it).
 */
typedef void (*ctl_flush_done_fn)(struct ctl *ctl, struct ctl_session *s,
				  int outcome, void *arg);

/* A flush the session waits for. */
struct ctl_flush {
	uint64_t id;		/* FlushRequestID */
	uint16_t *waiting;	/* producers not yet acked */
	unsigned nwaiting;	/* entries in waiting */
	uint64_t timer;		/* timeout timer id */
	bool has_reply;		/* a consumer Flush waits for it */
	struct ipc_reply reply;	/* its reply */
	bool then_disable;	/* the duration expired: disable when done */
	struct ctl_session *session; /* the session it belongs to */
	bool ok;		/* every producer acked in time */
	uint64_t flags;		/* FlushFlags it was sent with (constants.md §7) */
	uint64_t scrape_token;	/* token of its scrapes */
	unsigned scrapes_pending; /* lane scrapes not yet done */
	ctl_flush_done_fn done;	/* called when it ends, or NULL */
	void *done_arg;		/* passed to done */
	struct ctl_flush *next;	/* list */
};

/* A tracing session. */
struct ctl_session {
	struct ctl *ctl;	/* the control plane (for timer callbacks) */
	uint64_t id;		/* TracingSessionID */
	bool dead;		/* freed at the next turn; ignore it */
	bool allocating;	/* a control worker is making its buffers */
	unsigned lane;		/* consumer's lane */
	uint64_t conn_id;	/* consumer's connection (0: detached) */
	uid_t uid;		/* consumer uid */
	pid_t pid;		/* consumer pid */
	char *detach_key;	/* key while detached */
	enum svc_session_state state; /* lifecycle */
	Perfetto__Protos__TraceConfig *cfg; /* decoded config */
	uint8_t *cfg_bytes;	/* config as received */
	size_t cfg_len;		/* bytes in cfg_bytes */
	struct svc_buf **bufs;	/* buffers, config order */
	unsigned nbufs;		/* entries in bufs */
	struct ctl_inst *inst;	/* data-source instances */
	unsigned ninst;		/* entries used */
	unsigned cap_inst;	/* entries allocated */
	bool has_enable_reply;	/* EnableTracing waits for the end */
	struct ipc_reply enable_reply; /* its handle */
	char *disable_error;	/* error text for that reply, or NULL */
	uint64_t duration_timer; /* 0: none */
	uint64_t stop_timer;	/* stop-ack timeout, 0: none */
	uint64_t trigger_timer;	/* START_TRACING trigger timeout, 0: none */
	uint64_t file_timer;	/* periodic write_into_file */
	uint32_t duration_ms;	/* effective duration */
	int trigger_mode;	/* effective trigger mode */
	bool triggered;		/* a trigger arrived */
	bool started_once;	/* reached STARTED */
	bool all_started_sent;	/* all_data_sources_started recorded */
	int file_fd;		/* write_into_file target, or -1 */
	uint64_t file_bytes;	/* bytes written to it */
	uint64_t max_file_bytes; /* 0: unlimited */
	unsigned file_holds;	/* clones copying the file: drains wait */
	bool file_final_due;	/* DISABLED while held: final drain pending */
	struct svc_seqids *seqids; /* trusted_packet_sequence_id assignment */
	struct svc_pkts pkts;	/* the service's own packets */
	uint64_t periodic_timer; /* snapshot task */
	uint64_t flush_timer;	/* flush_period_ms task, 0: none */
	uint64_t clear_timer;	/* incremental-state clear task, 0: none */
	struct ctl_flush *scraping; /* flushes done, their scrapes pending */
	struct ctl_flush *flushes; /* pending flushes */
	unsigned scrapes_pending; /* lane scrapes before DISABLED */
	uint64_t scrape_token;	/* token of those scrapes */
	uint64_t flushes_requested, flushes_succeeded, flushes_failed;
	bool plain_warned;	/* a compressed read fell back to plain
				 * packets (logged once) */
	uint32_t final_flush_outcome; /* TraceStats field 15: 0 unset, 1 ok,
				 * 2 failed: the last flush with reason "trace
				 * stop" (or a clone's flush that failed) */
	struct ctl_session *next; /* list */
};

/* One trigger activation, for TriggerConfig.Trigger.max_per_24_h. */
struct ctl_trig_hist {
	char *name;	/* trigger name (owned) */
	int64_t ms;	/* CLOCK_BOOTTIME ms of the activation */
};

/* The control plane. */
struct ctl {
	struct svc *svc;		/* the service */
	struct ipc_loop *loop;		/* control thread 0's loop */
	pthread_t thread;		/* control thread 0 */
	bool running;			/* thread started (it destroys the loop) */
	unsigned nworkers;		/* extra control threads (buffer allocation) */
	struct ipc_loop **workers;	/* their loops */
	pthread_t *worker_threads;	/* their threads */
	struct ctl_producer *producers;	/* connected, initialized producers */
	struct ctl_session *sessions;	/* live sessions */
	uint64_t next_session_id;	/* TracingSessionID counter (from 1) */
	uint64_t next_inst_id;		/* DataSourceInstanceID counter (from 1) */
	uint64_t next_flush_id;		/* FlushRequestID counter (from 1) */
	uint64_t next_token;		/* scrape tokens */
	struct svc_bufid_alloc bufids;	/* BufferIDs */
	struct svc_guard_history history; /* step 18 */
	struct ctl_trig_hist *trig_hist; /* activations of the last 24 h */
	size_t ntrig_hist;		/* entries used */
	size_t cap_trig_hist;		/* entries allocated */
	bool lockdown;			/* lockdown mode */
	bool shutting_down;		/* svc_stop in progress */
	bool lanes_gone;		/* lanes stopping: send nothing through them */
	atomic_bool lanes_detached;	/* lanes_gone was set (svc_stop waits on it) */
	atomic_bool idle;		/* no session left (shutdown wait) */
	struct ctl_observe *observe;	/* ObserveEvents streams (ctl_observe.c); NULL until used */
	struct ctl_clone_job *clones;	/* CloneSession calls waiting for their flush (ctl_clone.c) */
};

/* ctl.c */
struct ctl_producer *ctl_producer_find(struct ctl *ctl, uint16_t id);
int ctl_send_cmd(struct ctl *ctl, struct ctl_producer *p,
		 Perfetto__Protos__GetAsyncCommandResponse *cmd, int fd);
void ctl_send_flush(struct ctl *ctl, struct ctl_producer *p,
		    const uint64_t *ids, size_t n, uint64_t flush_id,
		    uint64_t flags);
void ctl_send_stop(struct ctl *ctl, struct ctl_producer *p, uint64_t inst);
int ctl_producer_smb(struct ctl *ctl, struct ctl_producer *p,
		     const Perfetto__Protos__TraceConfig *cfg);
/* Drops a reference to b held by thread 0; the last one frees b here and
 * now (svc_buf_unref would post that to this same thread). */
void ctl_buf_put(struct ctl *ctl, struct svc_buf *b);

/* ctl_session.c */
void ctl_consumer_call(struct ctl *ctl, struct ctl_msg *m);
void ctl_consumer_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id);
void ctl_sessions_on_ds(struct ctl *ctl, struct ctl_producer *p,
			const struct ctl_ds *ds);
void ctl_sessions_on_producer_gone(struct ctl *ctl, uint16_t id);
void ctl_sessions_on_ds_unregistered(struct ctl *ctl, uint16_t id,
				     const char *name);
void ctl_sessions_on_started(struct ctl *ctl, uint16_t id, uint64_t inst);
void ctl_sessions_on_stopped(struct ctl *ctl, uint16_t id, uint64_t inst);
void ctl_sessions_on_flush_ack(struct ctl *ctl, uint16_t id, uint64_t fid);
void ctl_sessions_on_triggers(struct ctl *ctl, struct ctl_producer *p,
			      char **names, size_t n);
void ctl_sessions_on_scraped(struct ctl *ctl, uint64_t token);
void ctl_sessions_shutdown(struct ctl *ctl);
/* The session attached to consumer connection (lane, conn_id), or NULL. */
struct ctl_session *ctl_session_of(struct ctl *ctl, unsigned lane,
				   uint64_t conn_id);
/* Flushes s with these FlushFlags (producer-port.md §6.3), only the data
 * sources writing into the buffers only[0..nonly) (all when only is NULL),
 * and calls done when the flush ends (possibly before returning). */
void ctl_flush_then(struct ctl *ctl, struct ctl_session *s, uint64_t flags,
		    const uint16_t *only, unsigned nonly,
		    ctl_flush_done_fn done, void *arg);
/* write_into_file: drains s into its file now (ctl_write_file); on a
 * failed write or at max_file_size_bytes disables s (which may free it:
 * look it up again). Returns ctl_write_file's result. */
int ctl_file_drain(struct ctl *ctl, struct ctl_session *s);
/* A clone copies s's file: until the matching release, periodic drains
 * are skipped and the final drain of a disable waits (and so does freeing
 * a session without consumer), so the file does not grow under the copy
 * and no data leaves the buffers for it meanwhile. */
void ctl_file_hold(struct ctl_session *s);
/* Ends a hold; the last one runs a final drain that waited (and frees s
 * then if nobody is attached: look it up again). */
void ctl_file_release(struct ctl *ctl, struct ctl_session *s);
/* svc_pkts_stats_fn for session ctx: the session's TraceStats. */
int ctl_fill_stats_cb(void *ctx, struct svc_trace_stats *ts);

/* ctl_alloc.c: control worker threads, and buffers made on them */
/* A function of a piece of work handed to a worker (ctl_work_submit). */
typedef void (*ctl_work_fn)(struct ctl *ctl, void *arg);
/*
 * Thread 0: runs run(arg) on control worker (key % workers), then done(arg)
 * back on thread 0; lost(arg) instead of done, on the worker, if thread 0
 * cannot be reached (shutdown wedged): it frees what arg holds. Without
 * workers (--control 1), or if none is reachable, run and done are called
 * here before this returns. What arg refers to belongs to the worker from
 * the call until done starts (the post rings order the hand-offs).
 */
void ctl_work_submit(struct ctl *ctl, uint64_t key, ctl_work_fn run,
		     ctl_work_fn done, ctl_work_fn lost, void *arg);
/* The fill policy of a BufferConfig. */
enum svc_tbuf_policy ctl_buffer_policy(
	const Perfetto__Protos__TraceConfig__BufferConfig *bc);
int ctl_alloc_buffers(struct ctl *ctl, struct ctl_session *s, char *err,
		      size_t errlen);
int ctl_workers_start(struct ctl *ctl, unsigned n);
void ctl_workers_stop(struct ctl *ctl);
/* ctl_session.c: the end of EnableTracing, after the buffers */
void ctl_enable_finish(struct ctl *ctl, struct ctl_session *s);
void ctl_enable_failed(struct ctl *ctl, struct ctl_session *s,
		       const char *err);

/* ctl_read.c */
void ctl_read_buffers(struct ctl *ctl, struct ctl_session *s,
		      struct ipc_reply *reply);
/* Drains s into its file: 0; 1 when max_file_size_bytes was reached (the
 * file is closed then); -errno on a failed write or read. */
int ctl_write_file(struct ctl *ctl, struct ctl_session *s);

/* ctl_session.c, for ChangeTraceConfig: creates the instance of data-source
 * entry idx of s on producer p (ds: its registration), if p matches the
 * entry's filters; starts it when s is STARTED. */
void ctl_setup_instance(struct ctl *ctl, struct ctl_session *s, unsigned idx,
			struct ctl_producer *p, const struct ctl_ds *ds);

/* ctl_query.c: ConsumerPort calls that report or adjust service state. */
/* QueryServiceState (12): TracingServiceState in chunks (consumer-port.md §9). */
void ctl_query_service_state(struct ctl *ctl, struct ctl_msg *m);
/* SaveTraceForBugreport (14): deprecated, always success:false (§11). */
void ctl_save_trace_for_bugreport(struct ctl_msg *m);
/* ChangeTraceConfig (7): honours the producer name filters of the session's
 * data sources (§3); s is the connection's session or NULL. */
void ctl_change_trace_config(struct ctl *ctl, struct ctl_session *s,
			     struct ctl_msg *m);

/* ctl_observe.c: ObserveEvents streams (consumer-port.md §8). Events are
 * batched per consumer and sent at the next turn of the control loop. */
/* ObserveEvents (11): replaces the connection's stream; s is its session. */
void ctl_observe_events(struct ctl *ctl, struct ctl_session *s,
			struct ctl_msg *m);
/* Instance `in` of s changed state: reports STARTED, and CONFIGURED/STOPPED
 * as STOPPED, to s's consumer if it observes instances. Call after the
 * state is stored. */
void ctl_observe_inst(struct ctl *ctl, const struct ctl_session *s,
		      const struct ctl_inst *in);
/* s just recorded all_data_sources_started (once per session). */
void ctl_observe_all_started(struct ctl *ctl, const struct ctl_session *s);
/* A CLONE_SNAPSHOT trigger of s fired now: after stop_delay_ms its consumer
 * gets clone_trigger_hit (if s and the consumer are still there). */
void ctl_observe_clone_trigger(struct ctl *ctl, const struct ctl_session *s,
			       const char *trigger, const char *producer,
			       uid_t producer_uid, uint32_t stop_delay_ms);
/* The consumer connection (lane, conn_id) is gone: forgets its stream. */
void ctl_observe_conn_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id);
/* Frees every stream and pending notification (ctl_destroy; the loop is
 * already gone, nothing is sent). */
void ctl_observe_destroy(struct ctl *ctl);

/* ctl_clone.c: CloneSession (15, consumer-port.md §12); cur is the
 * connection's session or NULL. */
void ctl_clone_session(struct ctl *ctl, struct ctl_session *cur,
		       struct ctl_msg *m);
/* The consumer connection (lane, conn_id) is gone: its pending clones
 * complete without a reply and without a session. */
void ctl_clone_conn_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id);
/* A lane applied the retarget posted with this token (CTL_BUF_RETARGETED). */
void ctl_clone_on_retargeted(struct ctl *ctl, uint64_t token);
/* The lanes are going: no clone reply may be sent through them any more. */
void ctl_clone_lanes_gone(struct ctl *ctl);
/* ctl_destroy: frees the clones still pending (the threads are stopped). */
void ctl_clone_destroy(struct ctl *ctl);

#endif
