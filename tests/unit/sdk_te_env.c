// SPDX-License-Identifier: Apache-2.0
// Shared set-up of the track-event tests (see sdk_te_env.h).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sdk_te_env.h"
#include "trace_config.pb-c.h"

/* ---- Categories and tracks used by the tests ------------------------------ */

struct spn_te_category cat_app = SPN_TE_CATEGORY("app", "Application events");
struct spn_te_category cat_gpu = SPN_TE_CATEGORY_TAGS("gpu", "GPU work", "slow");
struct spn_te_category cat_dbg = SPN_TE_CATEGORY_TAGS("dbg.verbose", "Debugging", "debug");
struct spn_te_category cat_net = SPN_TE_CATEGORY_TAGS("net", "Network", "io", "remote");

struct spn_te_category *const all_cats[] = { &cat_app, &cat_gpu, &cat_dbg, &cat_net };

/* ---- Environment: SMB, test service, host callback ------------------------- */

/* The host's per-thread writers (what the producer keeps per thread). */
static _Thread_local struct host_slot host[SPN_TE_MAX_INSTANCES];

struct spn_tw *host_tw(uint32_t inst)
{
	return host[inst].tw;
}

struct spn_tw *host_writer(void *ctx, uint32_t inst)
{
	struct env *e = ctx;
	uint32_t sess = atomic_load(&e->session[inst]);

	atomic_fetch_add(&e->writer_calls, 1);
	if (host[inst].tw && (host[inst].e != e || host[inst].session != sess ||
			      !atomic_load(&e->on[inst]))) {
		if (host[inst].e == e)
			spn_tw_destroy(host[inst].tw);
		host[inst].tw = NULL;
	}
	if (!atomic_load(&e->on[inst]))
		return NULL;
	if (!host[inst].tw) {
		if (smb_arbiter_create_writer(&e->arb, inst + 1, &host[inst].tw) != 0)
			return NULL;
		host[inst].session = sess;
		host[inst].e = e;
	}
	return host[inst].tw;
}

/* The calling thread hands its partial chunks back (before a pump). */
void host_flush(struct env *e)
{
	for (uint32_t i = 0; i < SPN_TE_MAX_INSTANCES; i++)
		if (host[i].tw && host[i].e == e)
			spn_tw_flush(host[i].tw);
}

/* The calling thread retires its writers. */
void host_release(struct env *e)
{
	for (uint32_t i = 0; i < SPN_TE_MAX_INSTANCES; i++) {
		if (host[i].tw && host[i].e == e)
			spn_tw_destroy(host[i].tw);
		if (host[i].e == e) {
			host[i].tw = NULL;
			host[i].e = NULL;
		}
	}
}

void on_packet(void *ctx, uint16_t wid, const uint8_t *d, size_t len, bool loss)
{
	struct env *e = ctx;

	(void)loss;
	if (e->npk == e->pcap) {
		e->pcap = e->pcap ? e->pcap * 2 : 256;
		e->pk = realloc(e->pk, e->pcap * sizeof(*e->pk));
		assert_non_null(e->pk);
	}
	e->pk[e->npk].wid = wid;
	e->pk[e->npk].d = malloc(len ? len : 1);
	assert_non_null(e->pk[e->npk].d);
	memcpy(e->pk[e->npk].d, d, len);
	e->pk[e->npk].len = len;
	e->npk++;
	imp_packet(&e->im, wid, d, len);
}

struct env *env_new_opts(size_t smb, const struct spn_te_opts *o)
{
	struct env *e = calloc(1, sizeof(*e));
	struct smb_arbiter_opts ao = { 0 };
	struct spn_te_opts opts = { 0 };

	assert_non_null(e);
	if (o)
		opts = *o;
	smb_shm_init(&e->shm);
	assert_int_equal(smb_shm_create(&e->shm, smb, 4096), 0);
	assert_int_equal(ts_init(&e->ts, &e->arb, on_packet, e), 0);
	assert_int_equal(smb_arbiter_init(&e->arb, &e->shm.smb, &ao), 0);
	imp_init(&e->im);
	if (!opts.categories) {
		opts.categories = all_cats;
		opts.ncategories = NCATS;
	}
	opts.writer = host_writer;
	opts.ctx = e;
	assert_int_equal(spn_te_create(&opts, &e->te), 0);
	return e;
}

struct env *env_new(enum spn_te_clock clock)
{
	struct spn_te_opts o = { .clock = clock };

	return env_new_opts(256 * 1024, &o);
}

void env_pump(struct env *e)
{
	host_flush(e);
	ts_pump(&e->ts, 0);
	if (e->ts.errors)
		fail_msg("service: %llu errors, first: %s", (unsigned long long)e->ts.errors,
			 e->ts.first_error);
}

/* The reader found nothing TP would reject or skip. */
void env_ok(struct env *e)
{
	if (e->im.errors)
		fail_msg("reader: %llu errors, first: %s", (unsigned long long)e->im.errors,
			 e->im.first_error);
	assert_int_equal(e->im.skipped, 0);
	assert_int_equal(e->im.interned_skipped, 0);
}

void env_free(struct env *e)
{
	spn_te_destroy(e->te);
	host_release(e);
	ts_pump(&e->ts, 0);
	ts_fini(&e->ts);
	smb_arbiter_destroy(&e->arb);
	smb_shm_close(&e->shm);
	imp_fini(&e->im);
	for (size_t i = 0; i < e->npk; i++)
		free(e->pk[i].d);
	free(e->pk);
	free(e);
}

void env_start(struct env *e, uint32_t inst, const uint8_t *cfg, size_t len)
{
	atomic_fetch_add(&e->session[inst], 1);
	atomic_store(&e->on[inst], 1);
	assert_int_equal(spn_te_start(e->te, inst, cfg, len), 0);
}

void env_stop(struct env *e, uint32_t inst)
{
	assert_int_equal(spn_te_stop(e->te, inst), 0);
	atomic_store(&e->on[inst], 0);
}

/* ---- TrackEventConfig bytes -------------------------------------------------- */

size_t cfg_count(const char *const *v)
{
	size_t n = 0;

	while (n < 4 && v[n])
		n++;
	return n;
}

/* Encodes c; returns the length, bytes in buf (malloc'd). */
size_t cfg_pack(const struct cfg *c, uint8_t **buf)
{
	Perfetto__Protos__TrackEventConfig m = PERFETTO__PROTOS__TRACK_EVENT_CONFIG__INIT;
	size_t len;

	m.n_enabled_categories = cfg_count(c->en);
	m.enabled_categories = (char **)c->en;
	m.n_disabled_categories = cfg_count(c->dis);
	m.disabled_categories = (char **)c->dis;
	m.n_enabled_tags = cfg_count(c->en_tags);
	m.enabled_tags = (char **)c->en_tags;
	m.n_disabled_tags = cfg_count(c->dis_tags);
	m.disabled_tags = (char **)c->dis_tags;
	m.has_disable_incremental_timestamps = c->abs_ts;
	m.disable_incremental_timestamps = c->abs_ts;
	m.has_filter_debug_annotations = c->no_args;
	m.filter_debug_annotations = c->no_args;
	m.has_filter_dynamic_event_names = c->no_dyn;
	m.filter_dynamic_event_names = c->no_dyn;
	len = perfetto__protos__track_event_config__get_packed_size(&m);
	*buf = malloc(len ? len : 1);
	assert_non_null(*buf);
	perfetto__protos__track_event_config__pack(&m, *buf);
	return len;
}

void env_start_cfg(struct env *e, uint32_t inst, const struct cfg *c)
{
	uint8_t *b;
	size_t n = cfg_pack(c, &b);

	env_start(e, inst, b, n);
	free(b);
}

Perfetto__Protos__TracePacket *unpack(const struct raw *r)
{
	Perfetto__Protos__TracePacket *p = perfetto__protos__trace_packet__unpack(NULL, r->len, r->d);

	assert_non_null(p);
	return p;
}

void pfree(Perfetto__Protos__TracePacket *p)
{
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
}
