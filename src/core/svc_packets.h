// SPDX-License-Identifier: Apache-2.0
// The packets spindled writes into a trace itself (spec/trace-buffer.md §6,
// trace-config.md §4.3-§4.5): per-session clock snapshots, sync markers,
// trace_config echo, triggers, trace_uuid, system_info, lifecycle
// service_events and trace_stats, laid out around the producer packets of a
// ReadBuffers batch or a write-into-file drain (svc_packets.c); plus the
// TraceStats builder that GetTraceStats and the trace share
// (consumer-port.md §7, svc_packets_stats.c).
//
// Threads: a struct svc_pkts belongs to one session and is used by the
// control-plane thread serving that session; calls on one state must be
// serialised by the caller (as for the session itself). Nothing here blocks
// except the clock reads and uname(2)/sysinfo(2) of the first batch.
#ifndef SPN_CORE_SVC_PACKETS_H
#define SPN_CORE_SVC_PACKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "trace_config.pb-c.h"
#include "trace_stats.pb-c.h"

/* trusted_packet_sequence_id of every service packet (trace-config.md §4.2). */
#define SVC_PKTS_SEQUENCE_ID 1u
/* timestamp_clock_id of service packets: BUILTIN_CLOCK_BOOTTIME. */
#define SVC_PKTS_CLOCK_BOOTTIME 6u
/* Later clock snapshots kept between two reads (constants.md §6). */
#define SVC_PKTS_CLOCK_RING 16u
/* A snapshot is stored only if some clock moved this much against BOOTTIME. */
#define SVC_PKTS_DRIFT_NS 10000000ll
/* Clocks one service snapshot reads (track-event.md §8.2 ids 1-6). */
#define SVC_PKTS_MAX_CLOCKS 6u
/* History of flush_started / all_data_sources_flushed between reads. */
#define SVC_PKTS_FLUSH_HISTORY 64u
/* Data sources listed in one slow-start / slow-flush event. */
#define SVC_PKTS_MAX_SLOW_DS 32u
/* buffer_cloned events kept between reads (one per buffer of a session). */
#define SVC_PKTS_MAX_BUFFER_CLONED 128u
/* Triggers kept between two reads; more are dropped (triggers_dropped++).
 * Spindle's own bound: the reference keeps every trigger of the session. */
#define SVC_PKTS_MAX_TRIGGERS 1024u
/* builtin_data_sources.snapshot_interval_ms when 0. */
#define SVC_PKTS_DEFAULT_SNAPSHOT_INTERVAL_MS 10000u
/* TraceStats writer histogram: 10 bounds + an overflow bucket. */
#define SVC_PKTS_HIST_BOUNDS 10u
#define SVC_PKTS_HIST_BUCKETS 11u
/* The 16 bytes of TracePacket.synchronization_marker (constants.md §6). */
extern const uint8_t svc_pkts_sync_marker[16];
/* Upper bounds of the writer histogram buckets (chunk_payload_histogram_def). */
extern const int64_t svc_pkts_hist_def[SVC_PKTS_HIST_BOUNDS];

/*
 * Reads clock `id` (a clockid_t such as CLOCK_BOOTTIME) into *ns.
 * Returns 0, or a negative errno when the clock can't be read.
 */
typedef int (*svc_pkts_clock_fn)(void *ctx, clockid_t id, uint64_t *ns);

/* TraceConfig.builtin_data_sources as the service uses it. */
struct svc_pkts_builtin {
	bool disable_clock_snapshotting;  /* no clock_snapshot packets (none taken) */
	bool disable_trace_config;	  /* no trace_config, trigger, clone_snapshot_trigger */
	bool disable_system_info;	  /* no system_info */
	bool disable_service_events;	  /* no service_event packets */
	bool disable_chunk_usage_histograms; /* no TraceStats fields 17/18 */
	uint32_t primary_trace_clock;	  /* BuiltinClock for snapshots; 0 = BOOTTIME */
	uint32_t snapshot_interval_ms;	  /* periodic task period; 0 = 10 s */
};

/* Fills *b from cfg->builtin_data_sources (all defaults when absent). */
void svc_pkts_builtin_from_config(const Perfetto__Protos__TraceConfig *cfg,
				  struct svc_pkts_builtin *b);

/* What a session's service writer starts from. */
struct svc_pkts_config {
	uint32_t service_uid;		/* trusted_uid of every service packet */
	const uint8_t *trace_config;	/* TraceConfig bytes as received (copied) */
	size_t trace_config_len;	/* bytes at trace_config */
	int64_t uuid_msb;		/* trace UUID; msb == lsb == 0: a random v4 UUID */
	int64_t uuid_lsb;		/* (TraceConfig fields 27/28 when set) */
	struct svc_pkts_builtin builtin; /* the disable flags and clock settings */
	svc_pkts_clock_fn clock;	/* NULL: clock_gettime(2) */
	void *clock_ctx;		/* passed to clock */
};

/* One clock reading of a snapshot. */
struct svc_pkts_clock {
	uint32_t id;		/* BuiltinClock id */
	uint64_t ts;		/* reading in ns */
};

/* One clock snapshot: readings of up to SVC_PKTS_MAX_CLOCKS clocks. */
struct svc_pkts_snapshot {
	uint32_t n;		/* readings in c (clocks that failed are skipped) */
	struct svc_pkts_clock c[SVC_PKTS_MAX_CLOCKS]; /* BOOTTIME first when readable */
};

/* Lifecycle events; values are the TracingServiceEvent field numbers. */
enum svc_pkts_event {
	SVC_EV_ALL_DATA_SOURCES_STARTED = 1,	/* history 1; takes a snapshot */
	SVC_EV_TRACING_STARTED = 2,		/* history 1 */
	SVC_EV_ALL_DATA_SOURCES_FLUSHED = 3,	/* history 64; takes a snapshot */
	SVC_EV_TRACING_DISABLED = 5,		/* history 1; takes a snapshot */
	SVC_EV_SLOW_STARTING_DATA_SOURCES = 7,	/* svc_pkts_record_slow() only */
	SVC_EV_LAST_FLUSH_SLOW_DATA_SOURCES = 8, /* svc_pkts_record_slow() only */
	SVC_EV_FLUSH_STARTED = 9,		/* history 64 */
	SVC_EV_CLONE_STARTED = 10,		/* history 1 (clones) */
	SVC_EV_BUFFER_CLONED = 11,		/* history 128, value = buffer index */
};
/* Kinds with a history (index = enum value; 4 and 6 are never recorded). */
#define SVC_PKTS_EVENT_KINDS 12

/* One recorded lifecycle event. */
struct svc_pkts_ev {
	uint64_t ts;		/* CLOCK_BOOTTIME ns when recorded */
	uint64_t order;		/* record counter: ties in ts keep record order */
	uint32_t value;		/* buffer index of SVC_EV_BUFFER_CLONED */
};

/* History of one event kind: a ring of the newest `cap` records. */
struct svc_pkts_evring {
	struct svc_pkts_ev *e;	/* cap slots inside svc_pkts.ev_pool */
	uint16_t cap;		/* records kept (0: kind never recorded) */
	uint16_t head;		/* slot of the oldest record */
	uint16_t n;		/* records held (<= cap) */
};

/* A data source named in a slow-start / slow-flush event. */
struct svc_pkts_ds_name {
	const char *producer_name;	/* producer's name (NULL = omitted) */
	const char *data_source_name;	/* data source's name (NULL = omitted) */
};

/* A slow-start / slow-flush event (only the most recent one is kept). */
struct svc_pkts_slow {
	bool pending;		/* recorded since the last read */
	uint64_t ts;		/* CLOCK_BOOTTIME ns */
	uint64_t order;		/* record counter */
	uint32_t n;		/* entries in ds (<= SVC_PKTS_MAX_SLOW_DS) */
	struct { char *producer_name, *data_source_name; } ds[SVC_PKTS_MAX_SLOW_DS];
				/* owned copies; NULL = omitted */
};

/* A received trigger (TracePacket.trigger / clone_snapshot_trigger). */
struct svc_pkts_trigger {
	uint64_t ts;		/* CLOCK_BOOTTIME ns when received */
	char *name;		/* trigger_name (owned) */
	char *producer_name;	/* producer_name (owned; NULL = omitted) */
	int32_t producer_uid;	/* trusted_producer_uid */
	uint64_t stop_delay_ms;	/* stop_delay_ms of the matched config trigger */
};

/*
 * The service writer state of one session. Embed it in the session; its
 * fields are private to svc_packets.c (use the functions), and are listed
 * here only so that no allocation is needed to hold it.
 */
struct svc_pkts {
	uint32_t uid;			/* service uid (trusted_uid) */
	struct svc_pkts_builtin builtin; /* disable flags, clock settings */
	uint8_t *trace_config;		/* owned copy of the TraceConfig bytes */
	size_t trace_config_len;	/* bytes at trace_config */
	int64_t uuid_msb, uuid_lsb;	/* trace UUID */
	svc_pkts_clock_fn clock;	/* clock reader (never NULL after init) */
	void *clock_ctx;		/* its context */

	bool initial_taken;		/* initial snapshot holds a reading */
	struct svc_pkts_snapshot initial; /* taken at init, emitted in the first batch */
	struct svc_pkts_snapshot ring[SVC_PKTS_CLOCK_RING]; /* later snapshots, oldest at ring_head */
	uint32_t ring_head;		/* slot of the oldest stored snapshot */
	uint32_t ring_n;		/* snapshots waiting for the next batch */
	bool have_ref;			/* ref holds the newest snapshot ever stored */
	struct svc_pkts_snapshot ref;	/* drift reference (kept after emission) */

	bool sync_marker_due;		/* periodic task ran since the last marker */
	bool stats_due;			/* trace_stats goes into the next draining batch */

	bool first_batch_done;		/* rows 1, 4, 5, 7, 9, 10 already emitted */
	bool has_clone_trigger;		/* clone_trigger is set */
	struct svc_pkts_trigger clone_trigger; /* trigger that caused this clone */
	struct svc_pkts_trigger *triggers; /* received since the last batch (owned) */
	uint32_t n_triggers;		/* entries used in triggers */
	uint32_t cap_triggers;		/* entries allocated in triggers */
	uint64_t triggers_dropped;	/* over SVC_PKTS_MAX_TRIGGERS or out of memory */

	uint64_t ev_order;		/* next svc_pkts_ev.order */
	struct svc_pkts_evring ev[SVC_PKTS_EVENT_KINDS]; /* per-kind histories */
	struct svc_pkts_ev ev_pool[1 + 1 + SVC_PKTS_FLUSH_HISTORY + 1 +
				   SVC_PKTS_FLUSH_HISTORY + 1 +
				   SVC_PKTS_MAX_BUFFER_CLONED]; /* ring storage */
	struct svc_pkts_slow slow_start; /* slow_starting_data_sources */
	struct svc_pkts_slow slow_flush; /* last_flush_slow_data_sources */
};

/*
 * Sets up *st for a new session: copies the config bytes, picks the UUID
 * and, unless clock snapshotting is disabled, takes the initial snapshot.
 * Returns 0, -EINVAL for a NULL argument or a length with NULL bytes, or
 * -ENOMEM (nothing to free then). A state must be initialised before the
 * other calls (a zeroed one only tolerates them: no history, uid 0).
 */
int svc_pkts_init(struct svc_pkts *st, const struct svc_pkts_config *cfg);

/* Frees what *st owns. Safe on a zeroed or already destroyed state. */
void svc_pkts_destroy(struct svc_pkts *st);

/*
 * Sets up *dst as the service writer of a clone of src's session
 * (consumer-port.md §12 step 6): copies of the config bytes, clock
 * snapshots (initial, ring, drift reference), lifecycle histories and
 * pending slow-data-source events; the received triggers are moved out of
 * src. The clone gets a new random UUID MSB with src's LSB, writes its
 * first-batch packets again and ends its first draining read with
 * trace_stats. The caller then records clone_started, buffer_cloned and
 * tracing_disabled. Returns 0, or -ENOMEM (*dst is then empty, src intact).
 */
int svc_pkts_clone(struct svc_pkts *dst, struct svc_pkts *src);
/* Period of svc_pkts_periodic() in ms (snapshot_interval_ms, 0 -> 10 s). */
uint32_t svc_pkts_snapshot_interval_ms(const struct svc_pkts *st);

/* Now, on CLOCK_BOOTTIME through the state's clock; 0 if it can't be read. */
uint64_t svc_pkts_now(const struct svc_pkts *st);

/*
 * Reads every clock into *snap in the service order (BOOTTIME,
 * REALTIME_COARSE, MONOTONIC_COARSE, REALTIME, MONOTONIC, MONOTONIC_RAW),
 * skipping clocks that fail. Returns the readings (1..6), or the first
 * clock's negative errno when none could be read.
 */
int svc_pkts_read_clocks(const struct svc_pkts *st,
			 struct svc_pkts_snapshot *snap);

/*
 * Takes a snapshot for the ring (trace-buffer.md §6.1): stored only if it
 * is the first, or some clock drifted >= 10 ms against BOOTTIME since the
 * newest stored snapshot (emitted or not); the ring keeps the newest 16.
 * Returns 1 if stored, 0 if not (no drift, or snapshotting disabled), or a
 * negative errno when no clock could be read.
 */
int svc_pkts_snapshot(struct svc_pkts *st);

/* The periodic task (every snapshot interval from start): marks the sync
 * marker and trace_stats due and takes a ring snapshot. Returns as
 * svc_pkts_snapshot(). */
int svc_pkts_periodic(struct svc_pkts *st);

/* Forces trace_stats into the next draining batch (end of a write-into-file
 * session; cloned sessions). */
void svc_pkts_mark_stats_due(struct svc_pkts *st);

/* Whether the next draining batch ends with trace_stats. */
bool svc_pkts_stats_due(const struct svc_pkts *st);

/*
 * Records lifecycle event `ev` now (CLOCK_BOOTTIME) into its history
 * (trace-buffer.md §6.2); the oldest record of a full history is dropped.
 * ALL_DATA_SOURCES_STARTED, ALL_DATA_SOURCES_FLUSHED and TRACING_DISABLED
 * also take a ring snapshot. `value` is the buffer index for BUFFER_CLONED,
 * ignored otherwise. Returns 0, or -EINVAL for a kind without a history
 * (4 is written by svc_pkts_epilogue(), 7 and 8 by svc_pkts_record_slow()).
 */
int svc_pkts_record_event(struct svc_pkts *st, enum svc_pkts_event ev,
			  uint32_t value);

/*
 * Records a slow_starting_data_sources (ev = 7) or
 * last_flush_slow_data_sources (ev = 8) event now, replacing the one not
 * yet read. Only the first SVC_PKTS_MAX_SLOW_DS of the n entries are kept.
 * Returns 0, -EINVAL for another kind or a NULL list with n > 0, or -ENOMEM
 * (the previous event of that kind is kept then).
 */
int svc_pkts_record_slow(struct svc_pkts *st, enum svc_pkts_event ev,
			 const struct svc_pkts_ds_name *ds, size_t n);

/*
 * Records a trigger the session received, now (TracePacket.trigger in the
 * next batch), and takes a ring snapshot. producer_name may be NULL.
 * Returns 0, -EINVAL for a NULL name, -ENOSPC when SVC_PKTS_MAX_TRIGGERS
 * are already waiting, or -ENOMEM (both counted in triggers_dropped).
 */
int svc_pkts_record_trigger(struct svc_pkts *st, const char *name,
			    const char *producer_name, int32_t producer_uid,
			    uint64_t stop_delay_ms);

/*
 * Sets the trigger that caused this (cloned) session, written once as
 * clone_snapshot_trigger in the first batch. ts_ns is when the trigger was
 * received (CLOCK_BOOTTIME). Returns 0, -EINVAL or -ENOMEM.
 */
int svc_pkts_set_clone_trigger(struct svc_pkts *st, uint64_t ts_ns,
			       const char *name, const char *producer_name,
			       int32_t producer_uid, uint64_t stop_delay_ms);

/* Output: packets in Trace framing (0x0A, varint length, packet bytes). */
struct svc_pkts_out {
	uint8_t *data;		/* svc_mem_* allocated; NULL until something is written */
	size_t len;		/* bytes used */
	size_t cap;		/* bytes allocated */
};

/* Frees out->data and zeroes *out. */
void svc_pkts_out_free(struct svc_pkts_out *out);

/* Makes room for `more` bytes after out->len (svc_mem_* allocation).
 * Returns 0 or -ENOMEM (out unchanged). */
int svc_pkts_out_reserve(struct svc_pkts_out *out, size_t more);

/* One writer sequence of a buffer, for trace_provenance. */
struct svc_pkts_prov_seq {
	uint32_t id;		/* trusted_packet_sequence_id */
	int32_t producer_id;	/* ProducerID that owns it */
};

/* Sequences of one buffer (config order) for trace_provenance. */
struct svc_pkts_prov_buffer {
	const struct svc_pkts_prov_seq *seqs; /* may be NULL when n is 0 */
	size_t n;		/* entries in seqs */
};

/* trace_provenance input: one entry per session buffer, config order. */
struct svc_pkts_provenance {
	const struct svc_pkts_prov_buffer *buffers; /* n entries */
	size_t n;		/* the session's buffer count */
};

/*
 * Appends the service packets that precede the producer packets of a batch
 * (trace-buffer.md §6 rows 1-11): initial snapshot (first batch), ring
 * snapshots, sync marker (if due), trace_config (first batch), clone
 * snapshot trigger (first batch of a clone), triggers, trace_uuid (first
 * batch), trace_provenance (first batch, when prov is not NULL),
 * system_info (first batch), service events sorted by timestamp; each
 * unless its builtin_data_sources flag disables it. Emitted items are then
 * forgotten (histories, ring, flags). Extension descriptors and concurrent
 * session events are not written (spindled has none configured; the latter
 * is an opt-in it does not offer).
 * Returns the packets appended (>= 0), -ENOMEM, or -EINVAL for a prov
 * buffer with NULL seqs and n > 0: out->len is then back where it was and
 * *st is unchanged, so a later call writes the same.
 */
int svc_pkts_prologue(struct svc_pkts *st, struct svc_pkts_out *out,
		      const struct svc_pkts_provenance *prov);

/* Result of svc_trace_stats_build(): the message and the memory it uses. */
struct svc_trace_stats {
	Perfetto__Protos__TraceStats msg; /* ready to pack or embed */
	Perfetto__Protos__TraceStats__BufferStats *bufs; /* n_buffer_stats entries */
	Perfetto__Protos__TraceStats__BufferStats **buf_ptrs; /* msg.buffer_stats */
	Perfetto__Protos__TraceStats__WriterStats *writers; /* n_writer_stats entries */
	Perfetto__Protos__TraceStats__WriterStats **writer_ptrs; /* msg.writer_stats */
	uint64_t *hist_counts;	/* 11 per writer */
	int64_t *hist_sums;	/* 11 per writer */
	int64_t hist_def[SVC_PKTS_HIST_BOUNDS]; /* msg.chunk_payload_histogram_def */
	Perfetto__Protos__TraceStats__FilterStats filter; /* msg.filter_stats when set */
	uint64_t *filter_discarded; /* filter.bytes_discarded_per_buffer */
};

/*
 * Fills the TraceStats of the trace (row 16). Called by
 * svc_pkts_epilogue() only when stats are due; it typically fills a
 * struct svc_stats_input and calls svc_trace_stats_build(ts, &in).
 * Returns 0 or a negative errno (the epilogue then fails with it).
 */
typedef int (*svc_pkts_stats_fn)(void *ctx, struct svc_trace_stats *ts);

/*
 * Appends the service packets that follow the producer packets of a batch:
 * service_event{read_tracing_buffers_completed} when `drained` (unless
 * service events are disabled), then, when drained and stats are due,
 * trace_stats from fill(). A NULL fill leaves stats due and writes none.
 * Returns the packets appended (>= 0), or a negative errno (-ENOMEM, or
 * fill's error): out->len is then back where it was and *st unchanged.
 */
int svc_pkts_epilogue(struct svc_pkts *st, struct svc_pkts_out *out,
		      bool drained, svc_pkts_stats_fn fill, void *ctx);

/* One buffer's counters (TraceStats.BufferStats, consumer-port.md §7). */
struct svc_stats_buffer {
	uint64_t buffer_size;		/* bytes (field 12) */
	uint64_t bytes_written;		/* chunk record bytes written (1) */
	uint64_t bytes_overwritten;	/* record bytes evicted unread (13) */
	uint64_t bytes_read;		/* record bytes fully consumed (14) */
	uint64_t padding_bytes_written;	/* (15) */
	uint64_t padding_bytes_cleared;	/* (16) */
	uint64_t chunks_written;	/* (2) */
	uint64_t chunks_rewritten;	/* (10) */
	uint64_t chunks_relocated;	/* (20, V2 only; written when non-zero) */
	uint64_t chunks_overwritten;	/* (3) */
	uint64_t chunks_discarded;	/* DISCARD buffer full (18) */
	uint64_t chunks_read;		/* (17) */
	uint64_t chunks_committed_out_of_order; /* (11) */
	uint64_t write_wrap_count;	/* (4) */
	uint64_t patches_succeeded;	/* (5) */
	uint64_t patches_failed;	/* (6) */
	uint64_t readaheads_succeeded;	/* (7) */
	uint64_t readaheads_failed;	/* (8) */
	uint64_t abi_violations;	/* (9) */
	uint64_t trace_writer_packet_loss; /* (19) */
};

/* One (producer, writer) sequence's chunk payload histogram (field 18). */
struct svc_stats_writer {
	uint64_t sequence_id;		/* its trusted_packet_sequence_id */
	uint32_t buffer;		/* buffer index, config order */
	uint64_t counts[SVC_PKTS_HIST_BUCKETS]; /* chunks per bucket */
	int64_t sums[SVC_PKTS_HIST_BUCKETS];	/* their payload bytes */
};

/* TraceStats.FilterStats (only for sessions with a trace_filter). */
struct svc_stats_filter {
	uint64_t input_packets;		/* (1) */
	uint64_t input_bytes;		/* (2) */
	uint64_t output_bytes;		/* (3) */
	uint64_t errors;		/* (4) */
	uint64_t time_taken_ns;		/* (5) */
	const uint64_t *bytes_discarded_per_buffer; /* (20), n_discarded entries */
	size_t n_discarded;		/* entries in bytes_discarded_per_buffer */
};

/* Everything a TraceStats holds, as plain values (consumer-port.md §7). */
struct svc_stats_input {
	const struct svc_stats_buffer *buffers; /* the session's buffers, config order */
	size_t n_buffers;		/* entries in buffers */
	uint32_t producers_connected;	/* producers connected now (2) */
	uint64_t producers_seen;	/* last ProducerID handed out (3) */
	uint32_t data_sources_registered; /* all producers (4) */
	uint64_t data_sources_seen;	/* last DataSourceInstanceID handed out (5) */
	uint32_t tracing_sessions;	/* sessions alive (6) */
	uint32_t total_buffers;		/* buffers alive, all sessions (7) */
	uint64_t chunks_discarded;	/* service-global, before any buffer (8) */
	uint64_t patches_discarded;	/* service-global (9) */
	uint64_t invalid_packets;	/* session: dropped by the validator (10) */
	const struct svc_stats_filter *filter; /* (11); NULL = no trace_filter */
	uint64_t flushes_requested;	/* session, final flush included (12) */
	uint64_t flushes_succeeded;	/* (13) */
	uint64_t flushes_failed;	/* (14) */
	uint32_t final_flush_outcome;	/* 0 unspecified (omitted), 1 succeeded, 2 failed (15) */
	bool histograms;		/* write fields 17/18 (!disable_chunk_usage_histograms) */
	const struct svc_stats_writer *writers; /* (18), n_writers entries */
	size_t n_writers;		/* entries in writers */
};

/*
 * Builds ts->msg from *in. Every scalar the reference writes is present
 * (zeros included), so readers see explicit counters. Returns 0, -EINVAL
 * for a NULL argument, NULL arrays with a count, or final_flush_outcome > 2,
 * or -ENOMEM (ts is then empty; release is still safe).
 */
int svc_trace_stats_build(struct svc_trace_stats *ts,
			  const struct svc_stats_input *in);

/* Frees what svc_trace_stats_build() allocated; leaves an empty message. */
void svc_trace_stats_release(struct svc_trace_stats *ts);

#endif
