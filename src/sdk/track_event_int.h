// SPDX-License-Identifier: Apache-2.0
// Internals of the track-event layer shared by track_event.c (registry, instances, config matching, per-thread state), track_event_emit.c (the event path) and track_event_clock.c (clock choice and TSC calibration).
//
// Threads:
//   controller   spn_te_create/destroy/start/stop/clear: serialised by
//                te->lock; it writes the categories' enabled words and the
//                instances' atomics.
//   app threads  their own struct te_thread (thread-local, found through
//                te_tls) and its sequences; they read te's constant fields
//                and the atomics only.
//
// Sequences. A thread has one struct te_seq per instance it wrote to: the
// writer the host gave it, the instance generation it was set up under,
// its interning table and its clock. An event compares the instance's
// generation word with the sequence's copy (one relaxed load); any
// difference, or a loss the writer counted, sends it through te_refresh(),
// which gets a writer again if the session changed and writes the
// clearing packet, the clock snapshot and the descriptors.
//
// Interning. Names are interned by address: a fixed table of
// TE_TAB_SETS x 2 entries per sequence, keyed by (address, kind) and tagged
// with the sequence's interning generation, so a clear is one increment.
// A miss takes a fresh iid (per kind, from 1) and the entry goes out in the
// packet's interned_data; when both ways of a set are live, the older one
// is evicted, and if that name comes back it is interned again under a new
// iid (an iid is never rebound within a generation). Nothing is allocated
// per event: the table is part of the sequence, allocated on a thread's
// first event of an instance.
#ifndef SPN_SDK_TRACK_EVENT_INT_H
#define SPN_SDK_TRACK_EVENT_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "spindle/track_event.h"

#pragma GCC visibility push(hidden)

/* Interning table: sets of two ways. */
#define TE_TAB_BITS 8u
#define TE_TAB_SETS (1u << TE_TAB_BITS)
/* Longest thread name kept. */
#define TE_THREAD_NAME_MAX 64u
/* Encoded thread TrackDescriptor room (uuids, pid, tid, name). */
#define TE_THREAD_DESC_MAX (TE_THREAD_NAME_MAX + 64u)
/* Default snapshot period of a TSC sequence. */
#define TE_SNAPSHOT_PERIOD_MS 100u
/* A sequence generation no instance word ever has: forces te_refresh(). */
#define TE_GEN_FORCE UINT64_MAX

/* What an interned entry names (each kind is its own iid namespace, plus
 * the tracks described on the sequence). */
enum te_kind {
	TE_K_CATEGORY = 1,	/* InternedData.event_categories */
	TE_K_NAME = 2,		/* InternedData.event_names */
	TE_K_ANN = 3,		/* InternedData.debug_annotation_names */
	TE_K_TRACK = 4,		/* a struct spn_te_track described here */
	TE_K_COUNT = 5,
};

/* Config flags of an instance (te_inst.flags). */
enum te_flags {
	TE_F_ABS_TS = 1u << 0,		/* disable_incremental_timestamps */
	TE_F_NO_ARGS = 1u << 1,		/* filter_debug_annotations */
	TE_F_NO_DYN_NAMES = 1u << 2,	/* filter_dynamic_event_names */
};

/* One instance slot. */
struct te_inst {
	/* session << 32 | clears. Controller stores (release) after flags;
	 * app threads load (acquire in te_refresh, relaxed per event: the
	 * category load with acquire came first). */
	_Atomic uint64_t gen;
	_Atomic uint32_t flags;	/* enum te_flags; controller stores before
				 * gen, threads load after it */
	bool running;		/* controller (te->lock) */
};

/* The clock events are timed with. Constant after spn_te_create(), except
 * mult, which any thread refines (relaxed: any recent value is good). */
struct te_clock {
	enum spn_te_clock kind;	/* BOOTTIME or TSC */
	uint64_t tsc0;		/* anchor: a TSC reading ... */
	uint64_t ns0;		/* ... and BOOTTIME at the same instant */
	_Atomic uint64_t mult;	/* ns per tick, 32.32 fixed point */
	uint64_t period_ns;	/* snapshot period of a sequence */
};

/* One interning entry. */
struct te_ient {
	const void *key;	/* the name's address (or track's) */
	uint32_t tag;		/* igen << 3 | enum te_kind; 0 = empty */
	uint32_t iid;		/* its id in the kind's namespace */
};

/* A name a packet introduces (it goes out in interned_data). */
struct te_new {
	uint32_t kind;		/* TE_K_CATEGORY, _NAME or _ANN */
	uint32_t iid;		/* the id just taken */
	const char *str;	/* the name */
	uint32_t len;		/* strlen(str) */
};

/* One sequence: a thread's writer for one instance (owner thread only). */
struct te_seq {
	struct spn_tw *tw;	/* writer (host's; not owned), NULL: the
				 * instance has none for this thread */
	uint64_t gen;		/* te_inst.gen events compare with; or
				 * TE_GEN_FORCE to send them to te_refresh */
	uint64_t seen;		/* te_inst.gen the state was last set up for */
	uint32_t session;	/* seen >> 32 when tw was obtained */
	bool has_session;	/* session is set */
	bool lost;		/* the writer lost a packet: clear */
	uint64_t dropped;	/* tw's packets_dropped when last checked */
	uint32_t flags;		/* the instance's enum te_flags */
	uint32_t igen;		/* interning generation (29 bits, never 0) */
	uint32_t next_iid[TE_K_COUNT]; /* next iid per kind */
	bool redesc;		/* the thread was renamed: describe again */
	/* clock (TSC): ns = base_ns + ((tsc - base_tsc) * mult >> 32),
	 * valid while tsc - base_tsc < span (then a snapshot is due) */
	uint64_t base_tsc;	/* TSC at the last rebase */
	uint64_t base_ns;	/* clock 64 at the last rebase */
	uint64_t mult;		/* 32.32 ns per tick since then */
	uint64_t span;		/* ticks after base_tsc the next snapshot is due */
	uint64_t last_ns;	/* clock 64 of the last packet (delta base) */
	struct te_ient tab[TE_TAB_SETS * 2]; /* interning table */
};

/* Per-thread state (thread-local; freed at thread exit). */
struct te_thread {
	struct spn_te *te;	/* the te this state belongs to */
	uint64_t serial;	/* te->serial when it was made */
	int32_t pid;		/* te->pid */
	int32_t tid;		/* gettid() */
	uint64_t process_uuid;	/* te->process_uuid */
	uint64_t uuid;		/* thread track uuid (process uuid ^ tid) */
	struct te_seq *seq[SPN_TE_MAX_INSTANCES]; /* by instance, or NULL */
	uint32_t desc_len;	/* bytes of desc */
	uint8_t desc[TE_THREAD_DESC_MAX]; /* encoded thread TrackDescriptor */
};

struct spn_te {
	uint64_t serial;		/* unique per struct spn_te made */
	struct spn_te_category **cats;	/* registered categories */
	uint32_t ncats;			/* how many */
	struct spn_tw *(*writer)(void *ctx, uint32_t inst); /* host */
	void *ctx;			/* for writer */
	bool unmatched;			/* value for unmatched categories */
	pthread_mutex_t lock;		/* controller calls */
	struct te_inst inst[SPN_TE_MAX_INSTANCES]; /* instance slots */
	int32_t pid;			/* process id written */
	uint64_t process_uuid;		/* process track uuid */
	uint8_t *proc_desc;		/* encoded process TrackDescriptor */
	uint32_t proc_desc_len;		/* its length */
	struct te_clock clk;		/* timestamps */
};

/* The calling thread's state (track_event.c). */
extern _Thread_local struct te_thread *te_tls __attribute__((tls_model("initial-exec")));

/* track_event.c: the calling thread's state for te, made on first use
 * (NULL when out of memory). */
struct te_thread *te_thread_get_slow(struct spn_te *te);

/* The calling thread's state for te, if it has one that belongs to te. */
static inline struct te_thread *te_thread_get(struct spn_te *te)
{
	struct te_thread *t = te_tls;

	if (__builtin_expect(t != NULL && t->te == te && t->serial == te->serial, 1))
		return t;
	return te_thread_get_slow(te);
}

/* Hash of a track's (name, id, kind), cached in the track. */
uint64_t te_track_hash_slow(struct spn_te_track *tr);
static inline uint64_t te_track_hash(struct spn_te_track *tr)
{
	/* Relaxed: the value is the same whoever computed it. */
	uint64_t h = atomic_load_explicit(&tr->hash, memory_order_relaxed);

	return h ? h : te_track_hash_slow(tr);
}

/* track_event_emit.c: brings sequence `inst` of t up to date with the
 * instance (writer, clear, descriptors). Returns it, or NULL when the
 * instance has no writer for this thread. */
struct te_seq *te_refresh(struct spn_te *te, struct te_thread *t, uint32_t inst);

/* track_event_clock.c */
/* Chooses and calibrates the clock. Returns 0 or -ENOTSUP. */
int te_clock_init(struct te_clock *c, enum spn_te_clock want, uint32_t period_ms);
/* CLOCK_BOOTTIME ns. */
uint64_t te_boottime(void);
/* A TSC reading and BOOTTIME taken together (the tightest of a few). */
void te_clock_pair(uint64_t *tsc, uint64_t *ns);
/* Refines c->mult from the anchor to (tsc, ns). Any thread. */
void te_clock_refine(struct te_clock *c, uint64_t tsc, uint64_t ns);
/* The TSC (0 where there is none). */
static inline uint64_t te_rdtsc(void);

/* 64-bit mix (splitmix64 finaliser). */
static inline uint64_t te_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 31;
	return x;
}

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t te_rdtsc(void)
{
	return __rdtsc();
}
#else
static inline uint64_t te_rdtsc(void)
{
	return 0;
}
#endif

#pragma GCC visibility pop

#endif
