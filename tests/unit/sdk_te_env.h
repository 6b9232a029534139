// SPDX-License-Identifier: Apache-2.0
// Shared set-up of the track-event tests: an SMB with its arbiter, the test service draining it into the trace_processor stand-in, the host callback that gives each thread its writers, and TrackEventConfig bytes.
#ifndef SPN_SDK_TE_ENV_H
#define SPN_SDK_TE_ENV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdk_te_import.h"
#include "sdk_test_service.h"
#include "smb/arbiter.h"
#include "smb/shm.h"
#include "spindle/track_event.h"
#include "trace_packet.pb-c.h"

/* The categories every test registers: app, gpu ("slow"), dbg.verbose
 * ("debug"), net ("io", "remote"). */
extern struct spn_te_category cat_app, cat_gpu, cat_dbg, cat_net;
extern struct spn_te_category *const all_cats[4];
#define NCATS 4u

struct raw {
	uint16_t wid;	/* sequence */
	uint8_t *d;	/* packet bytes */
	size_t len;
};

struct env {
	struct smb_shm shm;		/* the SMB */
	struct smb_arbiter arb;		/* producer side */
	struct test_service ts;		/* service side (drain + reassembly) */
	struct imp im;			/* reader of what came back */
	struct spn_te *te;		/* the layer under test */
	struct raw *pk;			/* every packet, in order */
	size_t npk, pcap;
	_Atomic uint32_t on[SPN_TE_MAX_INSTANCES];	 /* instance running */
	_Atomic uint32_t session[SPN_TE_MAX_INSTANCES]; /* bumped per start */
	_Atomic uint32_t writer_calls;	/* host callback calls */
};

/* A host's writer for one instance on one thread. */
struct host_slot {
	struct spn_tw *tw;	/* writer */
	uint32_t session;	/* env session it belongs to */
	struct env *e;		/* env it belongs to */
};

/* The host callback (spn_te_opts.writer; ctx = the env). */
struct spn_tw *host_writer(void *ctx, uint32_t inst);
/* The calling thread's writer for inst, or NULL. */
struct spn_tw *host_tw(uint32_t inst);
/* The calling thread hands its partial chunks back (before a pump). */
void host_flush(struct env *e);
/* The calling thread retires its writers. */
void host_release(struct env *e);
/* The test service's packet callback (ctx = the env). */
void on_packet(void *ctx, uint16_t wid, const uint8_t *d, size_t len, bool loss);

/* An env with an SMB of `smb` bytes and a te made with o (categories and
 * writer filled in); env_new: 256 KiB and the clock. */
struct env *env_new_opts(size_t smb, const struct spn_te_opts *o);
struct env *env_new(enum spn_te_clock clock);
/* Flushes the calling thread's writers and drains everything. */
void env_pump(struct env *e);
/* The reader found nothing TP would reject or skip. */
void env_ok(struct env *e);
void env_free(struct env *e);
/* Starts / stops an instance (config bytes may be NULL). */
void env_start(struct env *e, uint32_t inst, const uint8_t *cfg, size_t len);
void env_stop(struct env *e, uint32_t inst);

struct cfg {
	const char *en[4], *dis[4], *en_tags[4], *dis_tags[4]; /* NULL-ended */
	bool abs_ts, no_args, no_dyn;
};

/* Encodes c; returns the length, the bytes malloc'd into *buf. */
size_t cfg_pack(const struct cfg *c, uint8_t **buf);
void env_start_cfg(struct env *e, uint32_t inst, const struct cfg *c);

/* Decodes a packet read back (asserts it decodes); pfree frees it. */
Perfetto__Protos__TracePacket *unpack(const struct raw *r);
void pfree(Perfetto__Protos__TracePacket *p);

#endif
