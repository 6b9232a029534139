// SPDX-License-Identifier: Apache-2.0
// Track events on the per-thread trace writer: categories, slices, instants, counters, flows and debug annotations as macros, and what the producer's "track_event" data source calls to host them (config matching, descriptor, start/stop/clear).
//
// Using it:
//
//	static struct spn_te_category cat_app = SPN_TE_CATEGORY("app", "App events");
//	static struct spn_te_category cat_gpu = SPN_TE_CATEGORY_TAGS("gpu", "GPU", "slow");
//	...
//	SPN_TRACE_BEGIN(cat_app, "DoWork", SPN_ARG("items", n), SPN_FLOW(req));
//	SPN_TRACE_COUNTER(cat_app, "queue_depth", depth);
//	SPN_TRACE_END(cat_app);
//
// A disabled category costs one relaxed load and a branch: arguments are
// not evaluated. An enabled one calls out of line, once per event, and
// writes one TracePacket per running instance; no lock, system call or
// allocation (see below for the few first-time exceptions).
//
// Names given to the macros must be string literals: they are interned by
// address (the _STR variants take runtime strings and write them inline).
//
// Hosting (the producer's job; tests do it with a bare arbiter): create a
// struct spn_te with the categories and a `writer` callback returning the
// calling thread's trace writer for an instance; send spn_te_descriptor()
// in the DataSourceDescriptor; call spn_te_start() with each instance's
// TrackEventConfig bytes, spn_te_stop() when it stops and
// spn_te_clear_incremental_state() on ClearIncrementalState.
//
// What each sequence (thread x instance) writes, per track-event.md §9: on
// its first event and after every clear or loss, a packet with
// SEQ_INCREMENTAL_STATE_CLEARED (+ first_packet_on_sequence on a new
// writer) carrying trace_packet_defaults (the thread track; clock 64 when
// timing with the TSC) and the ClockSnapshot defining clock 64, then the
// process and thread TrackDescriptors. Events carry SEQ_NEEDS_INCREMENTAL_STATE,
// interned category / name / annotation-name ids, and the interned entries
// they introduce. Counter and custom tracks are described on a sequence
// before their first event there.
//
// Timestamps: with an invariant TSC that the kernel itself uses as its
// clocksource, events are timed with rdtsc, scaled to ns, on the
// sequence-scoped clock 64 (incremental deltas, or absolute when the
// config says disable_incremental_timestamps); each sequence pairs it with
// BOOTTIME in a ClockSnapshot when its state is cleared and then every
// snapshot period. Otherwise CLOCK_BOOTTIME ns, with no clock id.
#ifndef SPINDLE_TRACK_EVENT_H
#define SPINDLE_TRACK_EVENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spindle/trace_writer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Instances of the data source at once (one enabled bit each; equals the
 * producer's SPN_DS_MAX_INSTANCES). */
#define SPN_TE_MAX_INSTANCES 8u
/* Tags one category may carry. */
#define SPN_TE_MAX_TAGS 4u
/* Annotations and flows one event may carry (checked at compile time by
 * the macros, and by spn_te_emit()). */
#define SPN_TE_MAX_ARGS 16u
/* Categories one struct spn_te may register. */
#define SPN_TE_MAX_CATEGORIES 4096u
/* The sequence-scoped clock id used for TSC timestamps. */
#define SPN_TE_CLOCK_ID_TSC 64u
/* BuiltinClock BOOTTIME. */
#define SPN_TE_CLOCK_ID_BOOTTIME 6u

struct spn_te;

/* ---- Categories ----------------------------------------------------------- */

/*
 * A category. Define it statically with SPN_TE_CATEGORY*() and pass it to
 * spn_te_create(); one struct spn_te owns it from then on.
 */
struct spn_te_category {
	/* bit i: enabled in instance i. Written by spn_te_start/stop
	 * (release), read by the macros (relaxed) and the event path
	 * (acquire, pairs with those stores). */
	_Atomic uint32_t enabled;
	const char *name;		/* e.g. "app"; what configs match */
	const char *description;	/* shown by the UI's record page */
	const char *tags[SPN_TE_MAX_TAGS]; /* e.g. "slow", "debug"; NULL-ended */
	struct spn_te *te;		/* owner, set by spn_te_create() */
};

#define SPN_TE_CATEGORY(name_, desc_) \
	{ .name = (name_), .description = (desc_) }
#define SPN_TE_CATEGORY_TAGS(name_, desc_, ...) \
	{ .name = (name_), .description = (desc_), .tags = { __VA_ARGS__ } }

/* One relaxed load: is `cat` (a struct spn_te_category lvalue) enabled in
 * any instance? */
#define SPN_TE_ENABLED(cat) \
	__builtin_expect(atomic_load_explicit(&(cat).enabled, memory_order_relaxed) != 0, 0)

/* ---- Tracks ----------------------------------------------------------------- */

/* Where a track hangs (its parent, which scopes it in the UI). */
enum spn_te_scope {
	SPN_TE_SCOPE_PROCESS = 0,	/* under the process track */
	SPN_TE_SCOPE_THREAD = 1,	/* under the calling thread's track */
};

/* CounterDescriptor.Unit. */
enum spn_te_unit {
	SPN_TE_UNIT_UNSPECIFIED = 0,
	SPN_TE_UNIT_TIME_NS = 1,
	SPN_TE_UNIT_COUNT = 2,
	SPN_TE_UNIT_SIZE_BYTES = 3,
};

/*
 * A track other than the thread's own: a counter track, or a slice track
 * for work that overlaps the thread's slices (async operations). Define it
 * statically (or keep it alive while it is used) with SPN_TE_TRACK*(). Its
 * uuid is the parent's uuid XOR a hash of (name, id, kind), so the same
 * definition gives the same track from every thread of the process (or,
 * thread-scoped, one per thread); it is described on each sequence before
 * its first event there.
 */
struct spn_te_track {
	const char *name;	/* track name shown by the UI */
	uint64_t id;		/* tells apart same-named tracks */
	uint8_t counter;	/* 1: counter track (CounterDescriptor) */
	uint8_t scope;		/* enum spn_te_scope */
	uint8_t unit;		/* counters: enum spn_te_unit */
	int64_t unit_multiplier; /* counters: values are multiplied by this
				  * (0: not set) */
	/* hash of (name, id, counter): computed on first use by any thread
	 * (relaxed; every thread computes the same value); 0 = not yet */
	_Atomic uint64_t hash;
};

#define SPN_TE_TRACK(name_, id_) { .name = (name_), .id = (id_) }
#define SPN_TE_THREAD_TRACK(name_, id_) \
	{ .name = (name_), .id = (id_), .scope = SPN_TE_SCOPE_THREAD }
#define SPN_TE_COUNTER_TRACK(name_, unit_) \
	{ .name = (name_), .counter = 1, .unit = (unit_) }
#define SPN_TE_THREAD_COUNTER_TRACK(name_, unit_) \
	{ .name = (name_), .counter = 1, .unit = (unit_), .scope = SPN_TE_SCOPE_THREAD }

/* ---- Debug annotations and flows -------------------------------------------- */

/* Kinds of struct spn_te_arg. */
enum spn_te_arg_kind {
	SPN_TE_ARG_NONE = 0,	/* placeholder (skipped) */
	SPN_TE_ARG_INT,		/* int_value */
	SPN_TE_ARG_UINT,	/* uint_value */
	SPN_TE_ARG_DOUBLE,	/* double_value */
	SPN_TE_ARG_BOOL,	/* bool_value */
	SPN_TE_ARG_STR,		/* string_value (copied; NULL writes "") */
	SPN_TE_ARG_PTR,		/* pointer_value */
	SPN_TE_ARG_FLOW,	/* TrackEvent.flow_ids: starts or continues */
	SPN_TE_ARG_FLOW_END,	/* TrackEvent.terminating_flow_ids */
};

/* One debug annotation or flow id of an event. Build with SPN_ARG*() and
 * SPN_FLOW*(). */
struct spn_te_arg {
	uint8_t kind;		/* enum spn_te_arg_kind */
	uint8_t dyn_name;	/* 1: name is a runtime string, written
				 * inline; 0: a literal, interned by address */
	uint8_t scoped;		/* flows: 1 = id is process-local and is
				 * mixed with the process uuid */
	const char *name;	/* annotation name (unused by flows) */
	union {
		int64_t i;
		uint64_t u;	/* also flow ids */
		double d;
		bool b;
		const char *s;
		const void *p;
	} v;			/* the value, by kind */
};

static inline struct spn_te_arg spn_te_arg_int(const char *n, int64_t v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_INT, .name = n };

	a.v.i = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_uint(const char *n, uint64_t v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_UINT, .name = n };

	a.v.u = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_double(const char *n, double v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_DOUBLE, .name = n };

	a.v.d = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_bool(const char *n, bool v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_BOOL, .name = n };

	a.v.b = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_str(const char *n, const char *v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_STR, .name = n };

	a.v.s = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_ptr(const char *n, const void *v)
{
	struct spn_te_arg a = { .kind = SPN_TE_ARG_PTR, .name = n };

	a.v.p = v;
	return a;
}

static inline struct spn_te_arg spn_te_arg_flow(uint8_t kind, uint64_t id, uint8_t scoped)
{
	struct spn_te_arg a = { .kind = kind, .scoped = scoped };

	a.v.u = id;
	return a;
}

/* The same annotation with a runtime name (written inline). */
static inline struct spn_te_arg spn_te_arg_dyn(struct spn_te_arg a)
{
	a.dyn_name = 1;
	return a;
}

/* Typed annotations; `name` must be a string literal. */
#define SPN_ARG_INT(name, v) spn_te_arg_int("" name, (v))
#define SPN_ARG_UINT(name, v) spn_te_arg_uint("" name, (v))
#define SPN_ARG_DOUBLE(name, v) spn_te_arg_double("" name, (v))
#define SPN_ARG_BOOL(name, v) spn_te_arg_bool("" name, (v))
#define SPN_ARG_STR(name, v) spn_te_arg_str("" name, (v))
#define SPN_ARG_PTR(name, v) spn_te_arg_ptr("" name, (v))

/* An annotation typed from its value: bool, unsigned, floating point,
 * char strings, void pointers; anything else as a signed integer (so
 * before C23 the int constants true / false need a (bool) cast). */
#define _SPN_ARG_ANY(n, v)                                                      \
	_Generic((v),                                                           \
		_Bool: spn_te_arg_bool,                                         \
		unsigned char: spn_te_arg_uint,                                 \
		unsigned short: spn_te_arg_uint,                                \
		unsigned int: spn_te_arg_uint,                                  \
		unsigned long: spn_te_arg_uint,                                 \
		unsigned long long: spn_te_arg_uint,                            \
		float: spn_te_arg_double,                                       \
		double: spn_te_arg_double,                                      \
		char *: spn_te_arg_str,                                         \
		const char *: spn_te_arg_str,                                   \
		void *: spn_te_arg_ptr,                                         \
		const void *: spn_te_arg_ptr,                                   \
		default: spn_te_arg_int)((n), (v))
#define SPN_ARG(name, v) _SPN_ARG_ANY("" name, v)
/* Same with a runtime name (a const char * expression). */
#define SPN_ARG_DYN(name, v) spn_te_arg_dyn(_SPN_ARG_ANY((name), v))

/* Flows (track-event.md §4.5): a trace-global 64-bit id links the slices
 * that carry it, in time order; _END closes it. The _LOCAL forms mix the
 * id with the process uuid, so small per-process ids do not collide across
 * processes. */
#define SPN_FLOW(id) spn_te_arg_flow(SPN_TE_ARG_FLOW, (id), 0)
#define SPN_FLOW_END(id) spn_te_arg_flow(SPN_TE_ARG_FLOW_END, (id), 0)
#define SPN_FLOW_LOCAL(id) spn_te_arg_flow(SPN_TE_ARG_FLOW, (id), 1)
#define SPN_FLOW_LOCAL_END(id) spn_te_arg_flow(SPN_TE_ARG_FLOW_END, (id), 1)

/* ---- Events ----------------------------------------------------------------- */

/* TrackEvent.Type values. */
enum spn_te_type {
	SPN_TE_SLICE_BEGIN = 1,
	SPN_TE_SLICE_END = 2,
	SPN_TE_INSTANT = 3,
	SPN_TE_COUNTER = 4,
};

/* An event for spn_te_emit(), the general form behind the macros. */
struct spn_te_event {
	uint8_t type;			/* enum spn_te_type */
	bool dyn_name;			/* name is a runtime string (inline) */
	bool is_double;			/* counters: value_d, else value_i */
	const char *name;		/* begin / instant; NULL = none */
	struct spn_te_track *track;	/* NULL: the thread's track (not for
					 * counters, which need one) */
	uint64_t ts;			/* 0: now; else CLOCK_BOOTTIME ns */
	const struct spn_te_arg *args;	/* annotations and flows */
	uint32_t nargs;			/* <= SPN_TE_MAX_ARGS */
	int64_t value_i;		/* counter value */
	double value_d;			/* counter value */
};

/*
 * Writes `ev` in category `cat` on every instance where cat is enabled.
 * Any thread. Returns the number of instances written (0 when none is
 * enabled or the thread has no writer), or -EINVAL (bad type, counter
 * without a counter track, slice on a counter track, too many args).
 */
int spn_te_emit(struct spn_te_category *cat, const struct spn_te_event *ev);

/* Out-of-line halves of the macros (call the macros, not these). */
void _spn_te_begin(struct spn_te_category *cat, const char *name,
		   const struct spn_te_arg *args, uint32_t nargs);
void _spn_te_end(struct spn_te_category *cat, const struct spn_te_arg *args,
		 uint32_t nargs);
void _spn_te_begin0(struct spn_te_category *cat, const char *name);
void _spn_te_end0(struct spn_te_category *cat);
void _spn_te_instant(struct spn_te_category *cat, const char *name,
		     const struct spn_te_arg *args, uint32_t nargs);
void _spn_te_slice(struct spn_te_category *cat, uint32_t type, bool dyn_name,
		   struct spn_te_track *track, const char *name,
		   const struct spn_te_arg *args, uint32_t nargs);
void _spn_te_counter_i(struct spn_te_category *cat, struct spn_te_track *track,
		       int64_t v);
void _spn_te_counter_d(struct spn_te_category *cat, struct spn_te_track *track,
		       double v);

/* Argument-list plumbing (standard C17: the list always holds at least the
 * event name, or the category for END). _SPN_TE_ARGV builds an array whose
 * element 0 is a placeholder, so an empty list is still valid C. */
#define _SPN_TE_HEAD(...) _SPN_TE_HEAD_(__VA_ARGS__, 0)
#define _SPN_TE_HEAD_(x, ...) x
#define _SPN_TE_REST(x, ...) __VA_ARGS__
#define _SPN_TE_ARGV(...) \
	((const struct spn_te_arg[]){ { .kind = SPN_TE_ARG_NONE }, _SPN_TE_REST(__VA_ARGS__, ) })
#define _SPN_TE_NARGS(...) \
	((uint32_t)(sizeof(_SPN_TE_ARGV(__VA_ARGS__)) / sizeof(struct spn_te_arg) - 1))
#define _SPN_TE_ARGS(...) _SPN_TE_ARGV(__VA_ARGS__) + 1, _SPN_TE_NARGS(__VA_ARGS__)
#define _SPN_TE_CHECK_ARGS(...) \
	_Static_assert(_SPN_TE_NARGS(__VA_ARGS__) <= SPN_TE_MAX_ARGS, \
		       "more than SPN_TE_MAX_ARGS annotations and flows")

/* Opens a slice on the calling thread's track:
 * SPN_TRACE_BEGIN(cat, "name", SPN_ARG("k", v), SPN_FLOW(id), ...). */
#define SPN_TRACE_BEGIN(cat, ...)                                              \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (!SPN_TE_ENABLED(cat))                                      \
			break;                                                 \
		if (_SPN_TE_NARGS(__VA_ARGS__) == 0)                           \
			_spn_te_begin0(&(cat), "" _SPN_TE_HEAD(__VA_ARGS__)); \
		else                                                           \
			_spn_te_begin(&(cat), "" _SPN_TE_HEAD(__VA_ARGS__),   \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)

/* Closes the innermost slice of the calling thread's track:
 * SPN_TRACE_END(cat) or SPN_TRACE_END(cat, SPN_ARG(...), SPN_FLOW(...)). */
#define SPN_TRACE_END(...)                                                     \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (!SPN_TE_ENABLED(_SPN_TE_HEAD(__VA_ARGS__)))                \
			break;                                                 \
		if (_SPN_TE_NARGS(__VA_ARGS__) == 0)                           \
			_spn_te_end0(&(_SPN_TE_HEAD(__VA_ARGS__)));            \
		else                                                           \
			_spn_te_end(&(_SPN_TE_HEAD(__VA_ARGS__)),              \
				    _SPN_TE_ARGS(__VA_ARGS__));                \
	} while (0)

/* A zero-duration event on the calling thread's track. */
#define SPN_TRACE_INSTANT(cat, ...)                                            \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_instant(&(cat), "" _SPN_TE_HEAD(__VA_ARGS__), \
					_SPN_TE_ARGS(__VA_ARGS__));            \
	} while (0)

/* Same with a runtime name (a const char * expression, written inline). */
#define SPN_TRACE_BEGIN_STR(cat, ...)                                          \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_slice(&(cat), SPN_TE_SLICE_BEGIN, true, NULL,  \
				      _SPN_TE_HEAD(__VA_ARGS__),               \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)
#define SPN_TRACE_INSTANT_STR(cat, ...)                                        \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_slice(&(cat), SPN_TE_INSTANT, true, NULL,      \
				      _SPN_TE_HEAD(__VA_ARGS__),               \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)

/* Slices and instants on a struct spn_te_track (pass its address). */
#define SPN_TRACE_BEGIN_ON(cat, track, ...)                                    \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_slice(&(cat), SPN_TE_SLICE_BEGIN, false,       \
				      (track), "" _SPN_TE_HEAD(__VA_ARGS__),   \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)
#define SPN_TRACE_END_ON(cat, ...)                                             \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_slice(&(cat), SPN_TE_SLICE_END, false,         \
				      _SPN_TE_HEAD(__VA_ARGS__), NULL,         \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)
#define SPN_TRACE_INSTANT_ON(cat, track, ...)                                  \
	do {                                                                   \
		_SPN_TE_CHECK_ARGS(__VA_ARGS__);                               \
		if (SPN_TE_ENABLED(cat))                                       \
			_spn_te_slice(&(cat), SPN_TE_INSTANT, false, (track),  \
				      "" _SPN_TE_HEAD(__VA_ARGS__),            \
				      _SPN_TE_ARGS(__VA_ARGS__));              \
	} while (0)

/* Value of a counter track (a struct spn_te_track * with counter = 1);
 * integers go out as counter_value, floating point as
 * double_counter_value. */
#define SPN_TRACE_COUNTER_ON(cat, track, value)                                \
	do {                                                                   \
		if (SPN_TE_ENABLED(cat))                                       \
			_Generic((value),                                      \
				float: _spn_te_counter_d,                      \
				double: _spn_te_counter_d,                     \
				long double: _spn_te_counter_d,                \
				default: _spn_te_counter_i)(&(cat), (track),   \
							    (value));          \
	} while (0)

/* Value of the process-scoped counter track named `name` (a literal). */
#define SPN_TRACE_COUNTER(cat, name, value)                                    \
	do {                                                                   \
		static struct spn_te_track _spn_te_ctr =                       \
			SPN_TE_COUNTER_TRACK("" name, SPN_TE_UNIT_UNSPECIFIED); \
		SPN_TRACE_COUNTER_ON(cat, &_spn_te_ctr, value);                \
	} while (0)

/* ---- Hosting: the data source ---------------------------------------------- */

/* Clocks for timestamps. */
enum spn_te_clock {
	SPN_TE_CLOCK_AUTO = 0,	/* the TSC when it is correct, else BOOTTIME */
	SPN_TE_CLOCK_BOOTTIME,	/* clock_gettime(CLOCK_BOOTTIME) */
	SPN_TE_CLOCK_TSC,	/* rdtsc on clock 64 (fails where unsafe) */
};

/* Options of spn_te_create(); zero fields take the defaults. */
struct spn_te_opts {
	/* the categories (each owned by this struct spn_te from now on) */
	struct spn_te_category *const *categories;
	size_t ncategories;
	/*
	 * Required. The calling thread's trace writer for instance `inst`,
	 * or NULL when that instance is not running (or has no writer for
	 * this thread). Called on a thread's first event of an instance and
	 * again only after spn_te_start/stop on it; the layer keeps using
	 * the writer until then, so it must stay valid for this thread until
	 * the thread's next call for `inst` (or thread exit). A writer never
	 * seen before (or that has written nothing yet) starts a sequence.
	 * Must not emit track events itself.
	 */
	struct spn_tw *(*writer)(void *ctx, uint32_t inst);
	void *ctx;			/* for writer */
	enum spn_te_clock clock;	/* default AUTO */
	/* a category no config rule matches is disabled (Perfetto's C SDK)
	 * instead of enabled (its C++ SDK, the default) */
	bool unmatched_disabled;
	int32_t pid;			/* 0: getpid() */
	const char *process_name;	/* NULL: argv[0] */
	uint64_t process_uuid;		/* 0: random */
	/* TSC: a sequence re-pairs clock 64 with BOOTTIME at least this
	 * often (default 100 ms) */
	uint32_t snapshot_period_ms;
};

/*
 * Registers the categories and sets up the clock (a TSC calibration takes
 * about 2 ms). Any thread. Returns 0 and *out, -EINVAL (no writer
 * callback, a category without a name or already owned, more than
 * SPN_TE_MAX_CATEGORIES), -ENOTSUP (clock TSC asked where it is not
 * safe) or -ENOMEM.
 */
int spn_te_create(const struct spn_te_opts *opts, struct spn_te **out);

/*
 * Stops every instance, releases the categories (their enabled words are
 * 0 and they may be registered again) and frees te. No thread may be
 * inside an event of these categories. Per-thread state of other threads
 * is freed when they exit.
 */
void spn_te_destroy(struct spn_te *te);

/*
 * The TrackEventDescriptor (DataSourceDescriptor field 6) listing the
 * categories with descriptions and tags, malloc'd into *buf / *len.
 * Returns 0 or -ENOMEM.
 */
int spn_te_descriptor(const struct spn_te *te, uint8_t **buf, size_t *len);

/*
 * Perfetto's category matching (track-event.md §12): decodes a
 * TrackEventConfig (cfg may be NULL / 0: an empty config) and sets on[i]
 * for each of the n categories. At each level in turn (exact name, then a
 * pattern with '*' matching the prefix before it, then a lone "*"):
 * enabled_categories enables, disabled_categories disables, disabled_tags
 * disables (["slow", "debug"] when the config has no tag lists at all),
 * enabled_tags enables; the first rule that matches decides. A category
 * no rule matches gets `unmatched`. Returns 0 or -EINVAL (cfg does not
 * decode).
 */
int spn_te_match(const uint8_t *cfg, size_t len,
		 const struct spn_te_category *const *cats, size_t n,
		 bool unmatched, bool *on);

/*
 * Starts instance `inst` with its TrackEventConfig (DataSourceConfig field
 * 113; NULL / 0 for none): sets the instance bit of every category the
 * config enables. The config's disable_incremental_timestamps,
 * filter_debug_annotations and filter_dynamic_event_names are honoured.
 * Returns 0, -EINVAL (inst out of range, cfg does not decode) or -EBUSY
 * (already running). The producer's I/O thread (calls are serialised
 * internally).
 */
int spn_te_start(struct spn_te *te, uint32_t inst, const uint8_t *cfg, size_t len);

/* Stops instance `inst`: clears its bit in every category. Events already
 * past their check may still complete. Returns 0 or -EINVAL. */
int spn_te_stop(struct spn_te *te, uint32_t inst);

/*
 * The service asked to clear incremental state: every sequence of `inst`
 * starts over at its next event (SEQ_INCREMENTAL_STATE_CLEARED, defaults,
 * clock snapshot, descriptors, fresh interning). Returns 0 or -EINVAL.
 */
int spn_te_clear_incremental_state(struct spn_te *te, uint32_t inst);

/* The clock events are timed with (BOOTTIME or TSC, never AUTO). */
enum spn_te_clock spn_te_clock_used(const struct spn_te *te);

/* The process track's uuid. */
uint64_t spn_te_process_uuid(const struct spn_te *te);

/* The calling thread's track uuid (process uuid XOR tid). */
uint64_t spn_te_thread_uuid(const struct spn_te *te);

/* The uuid `track` has for the calling thread. */
uint64_t spn_te_track_uuid(const struct spn_te *te, struct spn_te_track *track);

/* Names the calling thread's track (default: its comm name); re-described
 * on each of its sequences at their next event. Any thread, for itself. */
void spn_te_set_thread_name(const char *name);

/* CLOCK_BOOTTIME in ns, for spn_te_event.ts. */
uint64_t spn_te_boottime_ns(void);

#ifdef __cplusplus
}
#endif
#endif
