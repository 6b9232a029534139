// SPDX-License-Identifier: Apache-2.0
// The producer SDK: connect to spindled (or Perfetto's traced), register data sources, and get a per-thread trace writer for each started instance.
//
// A producer owns one I/O thread. It connects to the producer socket,
// registers the data sources (and updates or unregisters them), sends the
// triggers the app activates, answers the service's commands (setup,
// start, stop, flush, clear incremental state) by calling the data
// source's callbacks on that thread, and commits the chunks app threads
// fill. When the service goes away, every instance stops (writers return
// NULL) and the I/O thread reconnects with back-off; the app notices only
// the events it could not record meanwhile.
//
// App threads, per event:
//
//	struct spn_tw *tw = spn_ds_writer(ds);	// NULL: not tracing
//	if (tw) {
//		spn_tw_begin_packet(tw);
//		spn_tw_varint(tw, 8, now_ns);
//		...
//		spn_tw_end_packet(tw);
//	}
//
// spn_ds_enabled() is one relaxed load; spn_ds_writer() adds a lookup in a
// small thread-local table. Neither makes a system call, takes a lock or
// allocates, except the first call on a thread for a new instance (it
// creates the thread's writer, under the producer's mutex). A writer
// belongs to its thread: use it only there. It stays valid until that
// thread looks the same instance slot up again and finds the instance
// stopped or replaced (the old writer is retired then, and a new one made
// if the slot runs a new instance), or until the thread exits; a lookup of
// another data source or slot never retires it. So a writer obtained for
// an event stays usable for the whole event even if tracing stops
// meanwhile (its data is then simply not committed).
#ifndef SPINDLE_PRODUCER_H
#define SPINDLE_PRODUCER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spindle/trace_writer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Concurrent instances of one data source (sessions tracing it at once).
 * An instance is named by its slot, 0..SPN_DS_MAX_INSTANCES-1. */
#define SPN_DS_MAX_INSTANCES 8u

struct spn_producer;
struct spn_ds;

/* Options of spn_producer_create(); zero / NULL fields take the defaults. */
struct spn_producer_opts {
	/* Producer socket (a path or "@abstract"). NULL: the value of
	 * PERFETTO_PRODUCER_SOCK_NAME, else /run/perfetto/traced-producer.sock,
	 * else /tmp/perfetto-producer (Perfetto's rules). */
	const char *socket;
	/* Name the service knows us by (TraceConfig producer filters match
	 * it). NULL: the program's name. */
	const char *name;
	/* SMB size and page size hints in bytes (0: the service decides;
	 * Perfetto's service picks 256 KiB and 4 KiB). */
	uint32_t smb_size_hint;
	uint32_t smb_page_size_hint;
	/* Create the SMB ourselves (sealed memfd of smb_size_hint /
	 * smb_page_size_hint, or the defaults) and offer it with
	 * InitializeConnection, as startup tracing does. If the service
	 * declines it, the service's SMB is used instead. */
	bool producer_smb;
	/* A writer that finds the SMB full waits up to this many
	 * microseconds for a free chunk; 0 (default): it drops the packet
	 * at once (counted; the next packet says previous_packet_dropped). */
	uint32_t smb_stall_max_us;
	/* Commit batching window in ms (default 1): once woken, the I/O
	 * thread drains the SMB every window while there is something to
	 * commit, and goes back to sleep after a window with nothing. A
	 * writer that finds less than half of the SMB free makes it
	 * drain at once (counted in hurries), so a thread writing more than
	 * an SMB per window does not have to drop. */
	uint32_t commit_period_ms;
	/* Reconnect back-off (Perfetto's): each failed attempt adds
	 * reconnect_step_ms (default 1000) to the delay while it is below
	 * reconnect_step_limit_ms (default 10000); after that the delay is
	 * reconnect_max_ms (default 30000). The first retry after a lost
	 * connection waits one step. Tests use milliseconds. */
	uint32_t reconnect_step_ms;
	uint32_t reconnect_step_limit_ms;
	uint32_t reconnect_max_ms;
};

/* Counters of a producer (spn_producer_stats()); each is a snapshot. */
struct spn_producer_stats {
	bool connected;			/* InitializeConnection succeeded and
					 * the connection is up */
	uint64_t connects;		/* connections that initialized */
	uint64_t connect_failures;	/* attempts that failed */
	uint64_t disconnects;		/* initialized connections lost */
	uint64_t commits;		/* CommitData requests sent */
	uint64_t chunks_committed;	/* chunks listed in them */
	uint64_t flushes_acked;		/* Flush commands answered */
	uint64_t instances_started;	/* start_data_source handled */
	uint64_t instances_stopped;	/* instances stopped (command or loss
					 * of the connection) */
	uint64_t writers_created;	/* thread writers made */
	uint64_t packets_dropped;	/* packets lost (SMB full, aborted) */
	uint64_t wakeups;		/* times an app thread woke the I/O
					 * thread */
	uint64_t hurries;		/* times an app thread that found the
					 * SMB short made the I/O thread
					 * commit before its commit period
					 * was over */
	uint64_t triggers_sent;		/* trigger names sent (ActivateTriggers) */
	uint64_t triggers_dropped;	/* trigger names never sent: their
					 * ttl ran out, the queue was full, or
					 * the producer was destroyed while not
					 * connected */
};

/*
 * Creates a producer and starts its I/O thread, which connects at once
 * (and keeps retrying with back-off while the service is not there).
 * Returns 0 and *out, or -EINVAL (bad option), -ENOMEM, or the -errno of
 * io_uring / thread creation (-ENOSYS, -EPERM when io_uring is
 * unavailable).
 */
int spn_producer_create(const struct spn_producer_opts *opts,
			struct spn_producer **out);

/*
 * Disconnects (instances stop: their on_stop callbacks run, and lookups
 * return NULL from then on), stops the I/O thread and frees the producer.
 * When connected, what is queued for the service (triggers included) is
 * put on the wire first: this waits for that, at most 1 s.
 * No thread may call spn_* functions of this producer or its data sources
 * afterwards. Writers still held by live threads keep their SMB mapped
 * (and the producer's memory allocated) until those threads exit. Any
 * thread except the producer's own callbacks.
 */
void spn_producer_destroy(struct spn_producer *p);

/* Fills *st. Any thread. */
void spn_producer_stats(const struct spn_producer *p, struct spn_producer_stats *st);

/* ---- Triggers -------------------------------------------------------------- */

/* Names one spn_producer_activate_triggers() call may carry, and the
 * longest name accepted (bytes, without the NUL). */
#define SPN_TRIGGERS_MAX 64u
#define SPN_TRIGGER_NAME_MAX 255u
/* Calls waiting for a connection; past this the oldest is dropped. */
#define SPN_TRIGGERS_QUEUE_MAX 256u

/*
 * Activates triggers: the service fires every session whose
 * TraceConfig.trigger_config lists one of the names (START_TRACING,
 * STOP_TRACING or CLONE_SNAPSHOT), subject to the trigger's
 * producer_name_regex (matched against spn_producer_opts.name), skip
 * probability and 24 h limit. The names are copied and handed to the I/O
 * thread, which sends one ActivateTriggers request for the call; this
 * returns at once (one allocation, a lock-free push and at most one
 * wake-up of the I/O thread: no lock, no I/O, no waiting).
 *
 * Not connected (yet, or between reconnects): the call waits in a queue
 * (at most SPN_TRIGGERS_QUEUE_MAX calls, oldest dropped first) and is sent,
 * in call order, as soon as InitializeConnection succeeds, unless ttl_ms
 * is not 0 and more than ttl_ms passed since this call by then: it is then
 * dropped. Dropped names count in triggers_dropped. A request whose
 * connection breaks right after it went out is not sent again (the service
 * may have acted on it). spn_producer_destroy() still sends the queue when
 * connected. Any thread, callbacks included.
 *
 * Returns 0, -EINVAL (p or names NULL, n 0 or over SPN_TRIGGERS_MAX, a
 * name NULL, empty or longer than SPN_TRIGGER_NAME_MAX), -ENOMEM.
 */
int spn_producer_activate_triggers(struct spn_producer *p, const char *const *names,
				   size_t n, uint32_t ttl_ms);

/* ---- Data sources -------------------------------------------------------- */

/* What a data source tells the service (DataSourceDescriptor). */
struct spn_ds_desc {
	const char *name;		/* required, e.g. "track_event" */
	/* The SDK sends NotifyDataSourceStarted once on_start returned. */
	bool will_notify_on_start;
	/* The SDK sends NotifyDataSourceStopped once the stop completed
	 * (on_stop returned false, or spn_ds_stop_done() was called) and
	 * the writers' data was committed. */
	bool will_notify_on_stop;
	/* The data source wants clear_incremental_state commands. */
	bool handles_incremental_state_clear;
	/* Flush is a no-op for it (newer field; old services ignore it). */
	bool no_flush;
	/* Encoded TrackEventDescriptor (descriptor field 6), or NULL. */
	const uint8_t *track_event_descriptor;
	size_t track_event_descriptor_len;
};

/* The configuration of one instance, valid during the callback only. */
struct spn_ds_config {
	uint32_t instance;		/* slot: the enabled bit, spn_ds_tls() */
	uint64_t instance_id;		/* the service's DataSourceInstanceID */
	uint64_t tracing_session_id;	/* the session */
	uint32_t target_buffer;		/* BufferID the writers commit to */
	uint32_t trace_duration_ms;	/* session duration (0: none) */
	uint32_t stop_timeout_ms;	/* how long the service waits for a stop */
	const char *name;		/* data source name */
	const char *legacy_config;	/* DataSourceConfig.legacy_config or "" */
	/* DataSourceConfig.track_event_config (field 113, encoded), or
	 * NULL / 0 */
	const uint8_t *track_event_config;
	size_t track_event_config_len;
	/* the whole DataSourceConfig as received (encoded) */
	const uint8_t *raw;
	size_t raw_len;
};

/* Names one stopping instance; copy it to complete the stop later. */
struct spn_ds_stop {
	struct spn_ds *ds;		/* the data source */
	uint32_t instance;		/* its slot */
	uint64_t serial;		/* the SDK's id of that instance */
};

/*
 * Callbacks of a data source. All run on the producer's I/O thread, one
 * at a time; keep them short (the service waits for this thread). Any may
 * be NULL. They may write packets through spn_ds_writer() like any thread.
 */
struct spn_ds_callbacks {
	/* The instance is being set up (before start). */
	void (*on_setup)(struct spn_ds *ds, const struct spn_ds_config *cfg,
			 void *user);
	/* The instance started: its enabled bit is already set. */
	void (*on_start)(struct spn_ds *ds, const struct spn_ds_config *cfg,
			 void *user);
	/* The instance stops: its enabled bit is already clear. Return
	 * false when done, or true to finish later with spn_ds_stop_done()
	 * (any thread). A stop never finished is completed by the SDK after
	 * the config's stop_timeout_ms (the service has given up by then).
	 * Also called (and the completion ignored) when the connection is
	 * lost, the data source unregistered or the producer destroyed. */
	bool (*on_stop)(struct spn_ds *ds, const struct spn_ds_stop *stop,
			void *user);
	/* The service asks for a flush of the instance; the SDK then takes
	 * back every writer's partial chunk and commits it. */
	void (*on_flush)(struct spn_ds *ds, uint32_t instance,
			 uint64_t flush_request_id, void *user);
	/* Interning state must be dropped: spn_ds_tls() reports it to each
	 * thread (incremental_reset) at its next lookup. */
	void (*on_clear_incremental_state)(struct spn_ds *ds, uint32_t instance,
					   void *user);
	/* Frees a thread's spn_ds_tls.user when the SDK retires that
	 * writer; runs on the owner thread. */
	void (*free_tls)(void *tls_user, void *user);
	void *user;	/* passed to every callback */
};

/*
 * Registers a data source (copies desc and cb). It is announced to the
 * service now if connected, and on every later connection until
 * spn_data_source_unregister(). Any thread.
 * Returns 0 and *out (valid until spn_producer_destroy), -EINVAL (no name,
 * or a name longer than 255 bytes), -ENOMEM.
 */
int spn_data_source_register(struct spn_producer *p, const struct spn_ds_desc *desc,
			     const struct spn_ds_callbacks *cb, struct spn_ds **out);

/*
 * Replaces the descriptor of a registered data source; desc->name must be
 * its name (a data source cannot be renamed: register another one). The
 * copy is handed to the I/O thread, which sends UpdateDataSource when the
 * data source is registered on the current connection (the service then
 * shows the new descriptor, e.g. in QueryServiceState, and uses it for new
 * instances), and registers the new descriptor on every later connection.
 * Running instances keep the flags they started with; an instance the
 * service may have set up with either descriptor notifies its start and
 * stop if either one asks for it (an extra notification is ignored by the
 * service, a missing one would stall it). A service without
 * UpdateDataSource (Perfetto v14's traced) keeps the old descriptor until
 * the producer reconnects; the SDK logs that once. Several calls in a row:
 * the last one wins. Any thread.
 *
 * Returns 0, -EINVAL (NULL argument, other name), -ENOENT (ds was
 * unregistered), -ENOMEM.
 */
int spn_data_source_update(struct spn_ds *ds, const struct spn_ds_desc *desc);

/*
 * Unregisters a data source. On the I/O thread, its running instances
 * stop: the enabled bits clear (spn_ds_writer() / spn_ds_tls() return NULL
 * from then on), on_stop runs for each (its deferral is ignored, as when
 * the connection is lost; a stop the service asked for and on_stop
 * deferred is completed now), and what the writers wrote is committed,
 * partial chunks included (as for a flush). Then UnregisterDataSource
 * tells the service, which ends these instances in their sessions (the
 * trace keeps what was committed) and forgets the registration. The
 * service works by name: other data sources of this producer with the
 * same name lose their instances too.
 *
 * From an app thread this waits until the I/O thread has stopped the
 * instances (at most 10 s), not for the service. From inside a callback
 * of this producer (the I/O thread) it cannot wait: it returns at once,
 * and the stop runs right after the current callback returns.
 *
 * Once it returned (from a callback: once the stop ran), no callback of ds
 * runs again, except free_tls: per-thread state that threads still hold
 * for ds is freed on each such thread when it exits (their writers are
 * retired then too; nothing they write after the stop is recorded). The
 * handle stays valid (never enabled again) until spn_producer_destroy(),
 * which frees it; no instance of it is set up again, on this or a later
 * connection.
 *
 * Returns 0, -EINVAL (ds NULL), -ENOENT (already unregistered),
 * -ETIMEDOUT (the I/O thread did not get to it within 10 s; it still
 * will).
 */
int spn_data_source_unregister(struct spn_ds *ds);

/* Completes a stop that on_stop deferred. Idempotent; a handle of an
 * instance already gone is ignored. Any thread. */
void spn_ds_stop_done(struct spn_ds_stop stop);

/* The part of a data source the inline hot path reads; the library's
 * struct spn_ds begins with it. */
struct spn_ds_hot {
	/* bit i: instance slot i is started (set before on_start, cleared
	 * before on_stop); written by the I/O thread */
	_Atomic uint32_t enabled;
};

/* Mask of started instances (0: not tracing). One relaxed load: use it
 * to skip building an event. Any thread. */
static inline uint32_t spn_ds_enabled(const struct spn_ds *ds)
{
	/* Relaxed: a hint; spn_ds_tls() re-checks the instance with an
	 * acquire load before its writer is used. */
	return atomic_load_explicit(&((const struct spn_ds_hot *)(const void *)ds)->enabled,
				    memory_order_relaxed);
}

/* What the calling thread holds for one started instance. */
struct spn_ds_tls {
	struct spn_tw *tw;	/* the thread's writer for the instance */
	void *user;		/* the data source's per-thread state (e.g.
				 * interning tables), NULL at first; freed with
				 * callbacks.free_tls */
	uint32_t instance;	/* slot */
	/* true when tw is new or the service cleared incremental state
	 * since this thread last cleared the flag: the next packet must
	 * carry SEQ_INCREMENTAL_STATE_CLEARED and re-intern. The caller
	 * clears it. */
	bool incremental_reset;
};

/*
 * The calling thread's state for instance slot `instance` of ds, creating
 * its writer the first time; NULL when the instance is not started (or
 * its writer cannot be had: no SMB, writer ids exhausted, no memory).
 * The pointer and its writer stay valid on this thread as described at
 * the top (until a lookup of the same slot finds another instance).
 */
struct spn_ds_tls *spn_ds_tls(struct spn_ds *ds, uint32_t instance);

/*
 * The calling thread's writer for the lowest started instance of ds, or
 * NULL when none is started. For every instance, iterate the bits of
 * spn_ds_enabled() with spn_ds_tls().
 */
struct spn_tw *spn_ds_writer(struct spn_ds *ds);

/* The registered name. */
const char *spn_ds_name(const struct spn_ds *ds);

#ifdef __cplusplus
}
#endif
#endif
