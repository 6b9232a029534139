// SPDX-License-Identifier: Apache-2.0
// The track-event registry: categories and their TrackEventDescriptor, Perfetto's category matching against a TrackEventConfig, instance start/stop/clear, process and thread identity, and the per-thread state.
//
// Ordering between the controller and app threads. spn_te_start() stores
// the instance's flags and generation, then sets the instance bit of each
// enabled category with a release RMW; the event path loads the category
// word with acquire before it reads the instance, so a thread that sees
// the bit sees that generation or a later one (and the writer it gets for
// it belongs to the new session). spn_te_stop() clears the bits first and
// bumps the generation after: a thread that already passed its check
// finishes its event on the writer it holds, which the host keeps valid
// until the thread asks again.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <unistd.h>

#include "data_source_descriptor.pb-c.h"
#include "sdk/track_event_int.h"
#include "spindle/pb.h"
#include "trace_config.pb-c.h"

/* Bytes of /proc/self/cmdline kept for the process descriptor. */
#define TE_CMDLINE_MAX 4096u

_Thread_local struct te_thread *te_tls __attribute__((tls_model("initial-exec")));
/* The name the thread gave itself (spn_te_set_thread_name), or "". */
static _Thread_local char te_tls_name[TE_THREAD_NAME_MAX];

static pthread_once_t te_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t te_key;		/* frees a thread's state at exit */
static _Atomic uint64_t te_serials;	/* last struct spn_te serial */

/* ---- Per-thread state --------------------------------------------------- */

static void te_thread_free(void *p)
{
	struct te_thread *t = p;

	if (!t)
		return;
	for (uint32_t i = 0; i < SPN_TE_MAX_INSTANCES; i++)
		free(t->seq[i]);
	if (te_tls == t)
		te_tls = NULL;
	free(t);
}

static void te_key_make(void)
{
	/* On failure te_key stays unusable and thread states leak at thread
	 * exit; nothing else depends on it. */
	if (pthread_key_create(&te_key, te_thread_free) != 0)
		te_key = (pthread_key_t)-1;
}

/* Encodes the thread's TrackDescriptor {uuid, parent_uuid, thread {pid,
 * tid, thread_name}} into t->desc. */
static void te_thread_describe(struct te_thread *t)
{
	uint8_t in[TE_THREAD_NAME_MAX + 32], *p = in, *q = t->desc;
	size_t nlen = strnlen(te_tls_name, TE_THREAD_NAME_MAX - 1);

	p = spn_pb_field_int(p, 1, t->pid);
	p = spn_pb_field_int(p, 2, t->tid);
	if (nlen)
		p = spn_pb_field_bytes(p, 5, te_tls_name, nlen);
	q = spn_pb_field_varint(q, 1, t->uuid);
	q = spn_pb_field_varint(q, 5, t->process_uuid);
	q = spn_pb_field_bytes(q, 4, in, (size_t)(p - in));
	t->desc_len = (uint32_t)(q - t->desc);
}

struct te_thread *te_thread_get_slow(struct spn_te *te)
{
	struct te_thread *t = te_tls;

	if (t) {
		/* State of another (or a destroyed) te: start over. */
		if (te_key != (pthread_key_t)-1)
			pthread_setspecific(te_key, NULL);
		te_thread_free(t);
	}
	pthread_once(&te_key_once, te_key_make);
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->te = te;
	t->serial = te->serial;
	t->pid = te->pid;
	t->tid = (int32_t)gettid();
	t->process_uuid = te->process_uuid;
	t->uuid = te->process_uuid ^ (uint64_t)(uint32_t)t->tid;
	if (!te_tls_name[0])
		prctl(PR_GET_NAME, te_tls_name, 0, 0, 0); /* 16 bytes */
	te_thread_describe(t);
	if (te_key != (pthread_key_t)-1)
		pthread_setspecific(te_key, t);
	te_tls = t;
	return t;
}

void spn_te_set_thread_name(const char *name)
{
	struct te_thread *t = te_tls;

	snprintf(te_tls_name, sizeof(te_tls_name), "%s", name ? name : "");
	if (!t)
		return;
	te_thread_describe(t);
	for (uint32_t i = 0; i < SPN_TE_MAX_INSTANCES; i++) {
		if (t->seq[i]) {
			t->seq[i]->redesc = true;
			t->seq[i]->gen = TE_GEN_FORCE;
		}
	}
}

uint64_t spn_te_thread_uuid(const struct spn_te *te)
{
	return te->process_uuid ^ (uint64_t)(uint32_t)gettid();
}

uint64_t spn_te_process_uuid(const struct spn_te *te)
{
	return te->process_uuid;
}

uint64_t spn_te_track_uuid(const struct spn_te *te, struct spn_te_track *track)
{
	uint64_t base = track->scope == SPN_TE_SCOPE_THREAD ? spn_te_thread_uuid(te)
							    : te->process_uuid;

	return base ^ te_track_hash(track);
}

uint64_t te_track_hash_slow(struct spn_te_track *tr)
{
	uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a over the name */

	for (const char *c = tr->name ? tr->name : ""; *c; c++) {
		h ^= (uint8_t)*c;
		h *= 0x100000001B3ull;
	}
	h = te_mix64(h ^ te_mix64(tr->id + (tr->counter ? 0x9E3779B97F4A7C15ull : 0)));
	if (h == 0)
		h = 1;
	/* Relaxed: every thread computes the same value. */
	atomic_store_explicit(&tr->hash, h, memory_order_relaxed);
	return h;
}

/* ---- Process identity ---------------------------------------------------- */

/* Encodes the process TrackDescriptor {uuid, process {pid, cmdline...,
 * process_name}} into te->proc_desc. Returns 0 or -ENOMEM. */
static int te_process_describe(struct spn_te *te, const char *name)
{
	char *cmd = calloc(1, TE_CMDLINE_MAX + 1);
	size_t clen = 0, nlen, cap;
	uint8_t *in, *p, *q;
	int fd;

	if (!cmd)
		return -ENOMEM;
	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n;

		while (clen < TE_CMDLINE_MAX &&
		       (n = read(fd, cmd + clen, TE_CMDLINE_MAX - clen)) > 0)
			clen += (size_t)n;
		close(fd);
	}
	if (!name)
		name = clen ? cmd : program_invocation_name;
	nlen = strlen(name);
	cap = 64 + 2 * clen + nlen + 16;
	in = malloc(cap);
	te->proc_desc = malloc(cap + 32);
	if (!in || !te->proc_desc) {
		free(in);
		free(cmd);
		return -ENOMEM;
	}
	p = spn_pb_field_int(in, 1, te->pid);
	for (size_t off = 0; off < clen;) {
		size_t l = strnlen(cmd + off, clen - off);

		p = spn_pb_field_bytes(p, 2, cmd + off, l);
		off += l + 1;
	}
	p = spn_pb_field_bytes(p, 6, name, nlen);
	q = spn_pb_field_varint(te->proc_desc, 1, te->process_uuid);
	q = spn_pb_field_bytes(q, 3, in, (size_t)(p - in));
	te->proc_desc_len = (uint32_t)(q - te->proc_desc);
	free(in);
	free(cmd);
	return 0;
}

static uint64_t te_random_uuid(const struct spn_te *te)
{
	uint64_t u = 0;

	if (getrandom(&u, sizeof(u), GRND_NONBLOCK) != (ssize_t)sizeof(u))
		u = te_mix64(te_boottime() ^ ((uint64_t)(uint32_t)te->pid << 32) ^
			     (uint64_t)(uintptr_t)te);
	return u ? u : 1;
}

/* ---- Create / destroy ------------------------------------------------------- */

int spn_te_create(const struct spn_te_opts *o, struct spn_te **out)
{
	struct spn_te *te;
	int rc;

	if (!o || !out || !o->writer || o->ncategories > SPN_TE_MAX_CATEGORIES ||
	    (o->ncategories && !o->categories))
		return -EINVAL;
	for (size_t i = 0; i < o->ncategories; i++) {
		const struct spn_te_category *c = o->categories[i];

		if (!c || !c->name || c->te)
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (o->categories[j] == c)
				return -EINVAL;
	}
	te = calloc(1, sizeof(*te));
	if (!te)
		return -ENOMEM;
	te->cats = calloc(o->ncategories ? o->ncategories : 1, sizeof(*te->cats));
	if (!te->cats) {
		free(te);
		return -ENOMEM;
	}
	rc = te_clock_init(&te->clk, o->clock, o->snapshot_period_ms);
	if (rc) {
		free(te->cats);
		free(te);
		return rc;
	}
	te->serial = atomic_fetch_add_explicit(&te_serials, 1, memory_order_relaxed) + 1;
	te->writer = o->writer;
	te->ctx = o->ctx;
	te->unmatched = !o->unmatched_disabled;
	te->pid = o->pid ? o->pid : (int32_t)getpid();
	te->process_uuid = o->process_uuid ? o->process_uuid : te_random_uuid(te);
	rc = te_process_describe(te, o->process_name);
	if (rc) {
		free(te->proc_desc);
		free(te->cats);
		free(te);
		return rc;
	}
	pthread_mutex_init(&te->lock, NULL);
	for (size_t i = 0; i < o->ncategories; i++) {
		te->cats[i] = o->categories[i];
		atomic_store_explicit(&te->cats[i]->enabled, 0, memory_order_relaxed);
		te->cats[i]->te = te;
	}
	te->ncats = (uint32_t)o->ncategories;
	*out = te;
	return 0;
}

void spn_te_destroy(struct spn_te *te)
{
	if (!te)
		return;
	for (uint32_t i = 0; i < SPN_TE_MAX_INSTANCES; i++)
		spn_te_stop(te, i);
	for (uint32_t i = 0; i < te->ncats; i++) {
		atomic_store_explicit(&te->cats[i]->enabled, 0, memory_order_relaxed);
		te->cats[i]->te = NULL;
	}
	if (te_tls && te_tls->te == te) {
		if (te_key != (pthread_key_t)-1)
			pthread_setspecific(te_key, NULL);
		te_thread_free(te_tls);
	}
	pthread_mutex_destroy(&te->lock);
	free(te->proc_desc);
	free(te->cats);
	free(te);
}

enum spn_te_clock spn_te_clock_used(const struct spn_te *te)
{
	return te->clk.kind;
}

/* ---- Descriptor ---------------------------------------------------------------- */

int spn_te_descriptor(const struct spn_te *te, uint8_t **buf, size_t *len)
{
	Perfetto__Protos__TrackEventDescriptor d = PERFETTO__PROTOS__TRACK_EVENT_DESCRIPTOR__INIT;
	Perfetto__Protos__TrackEventCategory *cs = NULL, **cps = NULL;
	size_t n = te->ncats, sz;
	int rc = -ENOMEM;

	if (n) {
		cs = calloc(n, sizeof(*cs));
		cps = calloc(n, sizeof(*cps));
		if (!cs || !cps)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct spn_te_category *c = te->cats[i];
		size_t nt = 0;

		perfetto__protos__track_event_category__init(&cs[i]);
		cs[i].name = (char *)c->name;
		cs[i].description = (char *)c->description;
		while (nt < SPN_TE_MAX_TAGS && c->tags[nt])
			nt++;
		cs[i].n_tags = nt;
		cs[i].tags = (char **)c->tags;
		cps[i] = &cs[i];
	}
	d.n_available_categories = n;
	d.available_categories = cps;
	sz = perfetto__protos__track_event_descriptor__get_packed_size(&d);
	*buf = malloc(sz ? sz : 1);
	if (!*buf)
		goto out;
	*len = perfetto__protos__track_event_descriptor__pack(&d, *buf);
	rc = 0;
out:
	free(cs);
	free(cps);
	return rc;
}

/* ---- Category matching ------------------------------------------------------- */

/* Match levels, tried in this order. */
enum te_level {
	TE_L_EXACT,	/* a pattern without '*', equal to the name */
	TE_L_PREFIX,	/* a pattern with '*' (not "*"): the part before it
			 * is a prefix of the name */
	TE_L_ALL,	/* the pattern "*" */
	TE_L_COUNT,
};

static bool te_pat(const char *pat, const char *name, enum te_level lv)
{
	const char *star;

	if (!pat || !name)
		return false;
	star = strchr(pat, '*');
	switch (lv) {
	case TE_L_EXACT:
		return !star && strcmp(pat, name) == 0;
	case TE_L_PREFIX:
		return star && strcmp(pat, "*") != 0 &&
		       strncmp(pat, name, (size_t)(star - pat)) == 0;
	default:
		return strcmp(pat, "*") == 0;
	}
}

static bool te_any(char *const *pats, size_t n, const char *name, enum te_level lv)
{
	for (size_t i = 0; i < n; i++)
		if (te_pat(pats[i], name, lv))
			return true;
	return false;
}

static bool te_any_tag(char *const *pats, size_t n, const struct spn_te_category *c,
		       enum te_level lv)
{
	for (size_t t = 0; t < SPN_TE_MAX_TAGS && c->tags[t]; t++)
		if (te_any(pats, n, c->tags[t], lv))
			return true;
	return false;
}

/* The rules of track-event.md §12 (see spn_te_match() in the header). */
static bool te_category_on(const Perfetto__Protos__TrackEventConfig *cfg,
			   const struct spn_te_category *c, bool unmatched)
{
	static char *const dflt_off[] = { "slow", "debug" };
	char *const *off_tags = cfg->disabled_tags;
	size_t n_off_tags = cfg->n_disabled_tags;

	if (!cfg->n_disabled_tags && !cfg->n_enabled_tags) {
		off_tags = dflt_off;
		n_off_tags = 2;
	}
	for (int lv = 0; lv < TE_L_COUNT; lv++) {
		if (te_any(cfg->enabled_categories, cfg->n_enabled_categories, c->name, lv))
			return true;
		if (te_any(cfg->disabled_categories, cfg->n_disabled_categories, c->name, lv))
			return false;
		if (te_any_tag(off_tags, n_off_tags, c, lv))
			return false;
		if (te_any_tag(cfg->enabled_tags, cfg->n_enabled_tags, c, lv))
			return true;
	}
	return unmatched;
}

/* Decodes cfg (NULL / 0: empty). Returns the message (free it with
 * te_config_free) or NULL when it does not decode; *empty tells an empty
 * config (returned as a static empty message). */
static Perfetto__Protos__TrackEventConfig *te_config_decode(const uint8_t *cfg, size_t len,
							    Perfetto__Protos__TrackEventConfig *empty)
{
	perfetto__protos__track_event_config__init(empty);
	if (!cfg || !len)
		return empty;
	return perfetto__protos__track_event_config__unpack(NULL, len, cfg);
}

static void te_config_free(Perfetto__Protos__TrackEventConfig *c,
			   Perfetto__Protos__TrackEventConfig *empty)
{
	if (c && c != empty)
		perfetto__protos__track_event_config__free_unpacked(c, NULL);
}

int spn_te_match(const uint8_t *cfg, size_t len,
		 const struct spn_te_category *const *cats, size_t n,
		 bool unmatched, bool *on)
{
	Perfetto__Protos__TrackEventConfig empty, *c = te_config_decode(cfg, len, &empty);

	if (!c)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		on[i] = cats[i] && cats[i]->name && te_category_on(c, cats[i], unmatched);
	te_config_free(c, &empty);
	return 0;
}

/* ---- Instances --------------------------------------------------------------- */

int spn_te_start(struct spn_te *te, uint32_t inst, const uint8_t *cfg, size_t len)
{
	Perfetto__Protos__TrackEventConfig empty, *c;
	uint32_t flags = 0;
	uint64_t g;

	if (inst >= SPN_TE_MAX_INSTANCES)
		return -EINVAL;
	c = te_config_decode(cfg, len, &empty);
	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&te->lock);
	if (te->inst[inst].running) {
		pthread_mutex_unlock(&te->lock);
		te_config_free(c, &empty);
		return -EBUSY;
	}
	if (c->has_disable_incremental_timestamps && c->disable_incremental_timestamps)
		flags |= TE_F_ABS_TS;
	if (c->has_filter_debug_annotations && c->filter_debug_annotations)
		flags |= TE_F_NO_ARGS;
	if (c->has_filter_dynamic_event_names && c->filter_dynamic_event_names)
		flags |= TE_F_NO_DYN_NAMES;
	atomic_store_explicit(&te->inst[inst].flags, flags, memory_order_relaxed);
	/* Release: the flags above before the new generation; pairs with
	 * te_refresh's acquire load. */
	g = atomic_load_explicit(&te->inst[inst].gen, memory_order_relaxed);
	atomic_store_explicit(&te->inst[inst].gen, ((g >> 32) + 1) << 32,
			      memory_order_release);
	for (uint32_t i = 0; i < te->ncats; i++) {
		if (te_category_on(c, te->cats[i], te->unmatched))
			/* Release: the generation before the bit; pairs with
			 * the event path's acquire load of the word. */
			atomic_fetch_or_explicit(&te->cats[i]->enabled, 1u << inst,
						 memory_order_release);
	}
	te->inst[inst].running = true;
	pthread_mutex_unlock(&te->lock);
	te_config_free(c, &empty);
	return 0;
}

int spn_te_stop(struct spn_te *te, uint32_t inst)
{
	uint64_t g;

	if (inst >= SPN_TE_MAX_INSTANCES)
		return -EINVAL;
	pthread_mutex_lock(&te->lock);
	if (te->inst[inst].running) {
		for (uint32_t i = 0; i < te->ncats; i++)
			atomic_fetch_and_explicit(&te->cats[i]->enabled, ~(1u << inst),
						  memory_order_release);
		g = atomic_load_explicit(&te->inst[inst].gen, memory_order_relaxed);
		/* Release: as in spn_te_start(). */
		atomic_store_explicit(&te->inst[inst].gen, ((g >> 32) + 1) << 32,
				      memory_order_release);
		te->inst[inst].running = false;
	}
	pthread_mutex_unlock(&te->lock);
	return 0;
}

int spn_te_clear_incremental_state(struct spn_te *te, uint32_t inst)
{
	uint64_t g;

	if (inst >= SPN_TE_MAX_INSTANCES)
		return -EINVAL;
	pthread_mutex_lock(&te->lock);
	g = atomic_load_explicit(&te->inst[inst].gen, memory_order_relaxed);
	/* Release: pairs with te_refresh's acquire load (nothing else is
	 * published with it; the order keeps TSan's view simple). */
	atomic_store_explicit(&te->inst[inst].gen,
			      (g & ~0xFFFFFFFFull) | (uint32_t)(g + 1),
			      memory_order_release);
	pthread_mutex_unlock(&te->lock);
	return 0;
}
