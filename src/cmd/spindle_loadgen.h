// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen's shared declarations: options, the memory the parent shares with its producer processes (per-process and per-thread figures, timing samples), the trace checker and the report.
//
// Processes: the parent maps one shared anonymous region, then forks the
// P producer processes before it (or they) create any thread. Each child
// runs T threads writing events through libspindle; the parent is the
// consumer (or, with --join, only the conductor). They meet through the
// atomics at the top of struct lg_shared:
//   child:  ready++ once its threads exist, started++ once its data source
//           instance started, done++ per thread at the end of the run;
//   parent: go = LG_GO_RUN (futex wake) with go_ns set, later quit = 1
//           (futex wake) once the trace was read; go = LG_GO_ABORT stops
//           everything early.
// Per-thread and per-process records are written by their owner only and
// read by the parent after that owner said it is done (done / waitpid).
#ifndef SPN_CMD_SPINDLE_LOADGEN_H
#define SPN_CMD_SPINDLE_LOADGEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Limits of the flags. */
#define LG_MAX_PRODUCERS 64u
#define LG_MAX_THREADS 4096u		/* per process */
#define LG_MAX_THREADS_TOTAL 8192u	/* all processes */
#define LG_RAW_MIN_SIZE 36u		/* header of a raw packet (see prod.c) */
#define LG_RAW_MAX_SIZE (1u << 20)
/* Timing samples kept: per thread and over all threads (a thread that
 * fills its share halves it and samples half as often). */
#define LG_SAMPLES_PER_THREAD 65536u
#define LG_SAMPLES_TOTAL (4u << 20)
/* Sample every this many events (a power of 2), unless the rate is at
 * most LG_SAMPLE_ALL_RATE events/s per thread: then every event. */
#define LG_SAMPLE_EVERY 64u
#define LG_SAMPLE_ALL_RATE 1000u
/* How long the parent waits for every producer's instance to start. */
#define LG_START_TIMEOUT_MS 15000u
/* Join mode: how long to wait for a session to enable the data source. */
#define LG_JOIN_WAIT_MS 60000u

/* Exit statuses: ok, failure or events lost, bad usage. */
#define LG_EXIT_OK 0
#define LG_EXIT_FAIL 1
#define LG_EXIT_USAGE 2

/* Data source of the raw kind. */
#define LG_RAW_DS_NAME "spindle.loadgen.raw"

/* Event kinds. */
enum lg_kind {
	LG_SLICE,	/* SPN_TRACE_BEGIN / END alternating, annotation "seq" */
	LG_COUNTER,	/* a thread-scoped counter track; the value is seq */
	LG_ANNOTATED,	/* an instant with four annotations, one is "seq" */
	LG_RAW,		/* a raw TracePacket of --size bytes (for_testing) */
};

/* Parsed command line. */
struct lg_opts {
	unsigned producers;		/* processes */
	unsigned threads;		/* threads per process */
	enum lg_kind kind;		/* event kind */
	uint32_t size;			/* raw packet bytes */
	uint64_t rate;			/* events/s per thread; 0 = flat out */
	uint32_t duration_ms;		/* emitting time */
	uint32_t smb_kb;		/* SMB size hint (0: the service's) */
	uint32_t page_kb;		/* SMB page size hint (0: the service's) */
	uint32_t buffer_kb;		/* trace buffer of the session */
	uint32_t stall_us;		/* SDK: wait this long for a free chunk
					 * when the SMB is full (0: drop) */
	pid_t service_pid;		/* for its CPU time; 0: none */
	const char *psock;		/* producer socket or NULL */
	const char *csock;		/* consumer socket or NULL */
	const char *json_path;		/* --json FILE ("-": stdout) or NULL */
	const char *trace_path;		/* -o FILE: the trace read, or NULL */
	bool join;			/* don't create a session */
	bool per_thread;		/* a table row per thread */
};

/* Values of lg_shared.go. */
enum { LG_GO_WAIT = 0, LG_GO_RUN = 1, LG_GO_ABORT = 2 };

/* One producer process. Written by that child; read by the parent after
 * waitpid. */
struct lg_proc {
	int32_t err;			/* setup failure (-errno), else 0 */
	uint64_t sdk_dropped;		/* spn_producer_stats.packets_dropped */
	uint64_t commits;		/* CommitData requests sent */
	uint64_t chunks;		/* chunks committed */
	uint64_t writers;		/* trace writers made */
};

/* One emitting thread. Its own fields are written by the thread and read
 * by the parent after done counts it; the checker's fields by the parent. */
struct lg_thread {
	int32_t tid;			/* gettid(), or 0 before it ran */
	uint32_t proc;			/* process index */
	uint32_t idx;			/* thread index in its process */
	uint64_t emitted;		/* events written (seq values 0..n-1) */
	uint64_t skipped;		/* events not written: no instance */
	uint64_t busy_ns;		/* time spent emitting (not sleeping) */
	uint32_t nsamples;		/* timing samples stored */
	uint32_t sample_every;		/* current sampling period */
	/* ---- the checker (parent) ---- */
	uint32_t seqs;			/* trace sequences of this thread */
	uint64_t found;			/* events found in the trace */
	uint64_t gaps;			/* holes inside its sequences */
	uint64_t misordered;		/* values not after their predecessor */
	uint64_t bytes;			/* bytes of its packets in the trace */
};

/* The shared region (mmap MAP_SHARED before fork). */
struct lg_shared {
	_Atomic uint32_t go;		/* LG_GO_*; futex word */
	_Atomic uint32_t quit;		/* 1: the parent is done; futex word */
	_Atomic uint32_t ready;		/* processes with their threads up */
	_Atomic uint32_t started;	/* processes whose instance started */
	_Atomic uint32_t done;		/* threads that finished the run */
	uint64_t go_ns;			/* CLOCK_MONOTONIC start, set before
					 * go = RUN (release) */
	double ticks_per_ns;		/* timer calibration */
	uint32_t sample_cap;		/* samples per thread */
	struct lg_proc procs[LG_MAX_PRODUCERS]; /* per process */
	struct lg_thread *threads;	/* P x T records (in the region) */
	uint32_t *samples;		/* P x T x sample_cap ns (in the region) */
};

/* ---- spindle_loadgen.c ---- */

/* CLOCK_MONOTONIC ns. */
uint64_t lg_now_ns(void);
/* The timer around one event (TSC ticks on x86-64, else ns). */
uint64_t lg_ticks(void);
/* Blocks while *w == val (shared futex). */
void lg_futex_wait(_Atomic uint32_t *w, uint32_t val);
void lg_futex_wake(_Atomic uint32_t *w);
/* Ends the run everywhere: go = ABORT and quit = 1, both woken. */
void lg_abort(struct lg_shared *sh);

/* ---- spindle_loadgen_prod.c: a producer process ---- */

/* Runs producer process `proc`; returns its exit status. */
int lg_child_main(const struct lg_opts *o, struct lg_shared *sh, unsigned proc);

/* ---- spindle_loadgen_cons.c: the recording consumer ---- */

struct lg_cons;
struct lg_check;

/* Connects and starts the session (EnableTracing for the producers named
 * spindle-loadgen.<pid>.<i>). Returns 0 or -errno (message printed). */
int lg_cons_start(const struct lg_opts *o, struct lg_cons **out);
/* Runs the consumer's loop up to ms. Returns 0, or -ECANCELED when the
 * session already ended, or the loop's -errno (printed). */
int lg_cons_pump(struct lg_cons *c, int ms);
/* Flush, DisableTracing, wait for the end. Returns 0 or -errno. */
int lg_cons_stop(struct lg_cons *c);
/* ReadBuffers into the checker, then FreeBuffers. Returns 0 or -errno. */
int lg_cons_read(struct lg_cons *c, struct lg_check *chk);
void lg_cons_close(struct lg_cons *c);

/* ---- spindle_loadgen_check.c: the trace checker ---- */

/* What the trace said beyond the events. */
struct lg_trace_stats {
	bool seen;			/* a trace_stats packet was read */
	uint64_t chunks_overwritten;	/* buffer stats, summed */
	uint64_t chunks_discarded;	/* buffer stats + service-wide */
	uint64_t abi_violations;	/* buffer stats */
	uint64_t writer_packet_loss;	/* trace_writer_packet_loss */
};

/* Creates a checker for kind; trace_path (or NULL) receives the trace.
 * Returns 0 or -errno. */
int lg_check_create(enum lg_kind kind, const char *trace_path,
		    struct lg_check **out);
/* Adds one ReadBuffers slice (last: the packet is complete). */
void lg_check_slice(struct lg_check *c, const uint8_t *d, size_t n, bool last);
/* Moves the per-sequence results onto the threads (by tid) and fills the
 * totals. Returns 0 or -EIO (the trace file could not be written). */
int lg_check_finish(struct lg_check *c, struct lg_shared *sh, size_t nthreads);
/* Totals of the trace. */
struct lg_check_totals {
	uint64_t packets;		/* packets read */
	uint64_t bad_packets;		/* packets that did not decode */
	uint64_t found;			/* event values found */
	uint64_t unattributed;		/* of those, in sequences of no thread */
	uint64_t gaps;			/* holes in sequences */
	uint64_t misordered;		/* values out of order */
	uint64_t loss_marks;		/* previous_packet_dropped marks */
	uint64_t bytes;			/* bytes of event packets */
	uint64_t sequences;		/* sequences with events */
	struct lg_trace_stats ts;	/* the service's trace_stats */
};
void lg_check_totals(const struct lg_check *c, struct lg_check_totals *t);
void lg_check_free(struct lg_check *c);

/* ---- spindle_loadgen_report.c ---- */

/* Everything the report prints. */
struct lg_run {
	const struct lg_opts *o;	/* options */
	struct lg_shared *sh;		/* per-thread figures */
	size_t nthreads;		/* P x T */
	bool checked;			/* the trace was read and checked */
	struct lg_check_totals tot;	/* its totals (when checked) */
	double wall_s;			/* emitting time (go to last done) */
	double timer_ns;		/* cost of the timing pair itself */
	bool has_svc_cpu;		/* service_cpu_s is valid */
	double svc_cpu_s;		/* service CPU during the run */
	double prod_cpu_s;		/* producer processes' CPU */
	uint64_t sdk_dropped;		/* sum of lg_proc.sdk_dropped */
	uint64_t commits;		/* sum of lg_proc.commits */
};

/* Prints the table to f. */
void lg_report_table(const struct lg_run *r, FILE *f);
/* Writes the JSON report to path ("-": stdout). Returns 0 or -errno. */
int lg_report_json(const struct lg_run *r, const char *path);
/* Events lost (emitted - found, plus misordered) of a checked run. */
uint64_t lg_report_lost(const struct lg_run *r);

#endif
