// SPDX-License-Identifier: Apache-2.0
// An in-process stand-in for spindled's producer data path, for the SDK writer tests: drains the arbiter like the SDK's I/O thread, then does what the service does with each CommitDataRequest.
//
// One pump: smb_arbiter_drain() -> register the writers it announces ->
// pack the request to bytes and unpack it
// again (the wire format is exercised) -> for each ChunksToMove, take the
// chunk with smb_chunk_commit_copy() (Complete -> BeingRead, copy, free,
// validate the private copy) and store it per sequence (writer id) by chunk
// id -> apply ChunkToPatch entries to the stored copies -> read every
// sequence in chunk-id order, reassembling fragmented packets, stopping at a
// chunk that still needs patches or at a missing chunk id, and hand each
// packet to the callback -> unregister the writers it retires. Anything a
// correct writer never produces (an
// orphan continuation, a duplicate chunk, a malformed fragment, a failed
// patch, a chunk for the wrong buffer) is counted as an error with a reason.
//
// Threads: the pump runs on one thread at a time (the "I/O + service"
// thread).
#ifndef SPN_SDK_TEST_SERVICE_H
#define SPN_SDK_TEST_SERVICE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smb/arbiter.h"
#include "smb/chunk_validate.h"

/* One packet handed to the test: writer id, bytes, and whether data of the
 * sequence was lost before it (drop marker, broken chain). */
typedef void (*ts_packet_cb)(void *ctx, uint16_t writer_id, const uint8_t *data,
			     size_t len, bool loss_before);

/* A chunk copy waiting to be read. */
struct ts_chunk {
	bool present;		/* slot in use */
	bool needs_patching;	/* blocked until a has_more=false patch */
	uint32_t chunk_id;	/* its id */
	int vr;			/* smb_chunk_validate() result: 0 or -ENOMSG */
	struct smb_chunk_info info; /* what validation found */
	uint8_t *data;		/* the copy, header included (malloc) */
};

/* One writer sequence. */
struct ts_seq {
	uint32_t next_id;	/* next chunk id to read */
	bool started;		/* next_id is set (first chunk seen) */
	struct ts_chunk *win;	/* stored chunks by id % cap */
	uint32_t cap;		/* window size (power of two) */
	uint8_t *partial;	/* packet being reassembled */
	size_t plen, pcap;	/* its length and capacity */
	bool in_partial;	/* a fragment continues in the next chunk */
	bool loss_pending;	/* data was lost before the next packet */
	uint64_t packets;	/* packets returned */
	uint64_t chunks;	/* chunks read */
	bool touched;		/* listed in test_service.touched */
};

struct test_service {
	struct smb_arbiter *arb;	/* producer side being drained */
	struct smb_commit commit;	/* drain storage */
	ts_packet_cb cb;		/* where packets go */
	void *cb_ctx;			/* for cb */
	struct ts_seq *seqs;		/* by writer id, 0..32767 */
	/* registered target buffer by writer id (0: not registered), from
	 * the drain's added / removed lists */
	uint32_t *registered;
	uint8_t *copy;			/* commit copy buffer */
	uint16_t *touched;		/* writer ids to read after a request */
	uint32_t ntouched;		/* entries in touched */
	/* counters */
	uint64_t requests;		/* CommitDataRequests processed */
	uint64_t moves;			/* chunks taken */
	uint64_t patch_entries;		/* ChunkToPatch entries */
	uint64_t writers_added;		/* RegisterTraceWriter equivalents */
	uint64_t writers_removed;	/* UnregisterTraceWriter equivalents */
	uint64_t patches;		/* patches applied */
	uint64_t drop_markers;		/* chunks that ended in a drop marker */
	uint64_t flush_id;		/* last flush_request_id seen */
	uint64_t reclaims;		/* reclaim rounds after pressure */
	bool reclaim_on_pressure;	/* reclaim when a drain says so (default) */
	uint64_t errors;		/* anything a correct writer never does */
	char first_error[256];		/* the first of them */
	/* optional: sees every chunk taken (its validated copy), before it
	 * is stored */
	void (*on_chunk)(void *ctx, const struct smb_chunk_info *info,
			 const uint8_t *copy);
	void *chunk_ctx;		/* for on_chunk */
	/* the last request, kept for tests that inspect it (unpacked) */
	Perfetto__Protos__CommitDataRequest *last_req;
	bool keep_last;			/* keep last_req instead of freeing */
};

/* Sets up *ts to drain arb (which may be set up after this call).
 * Returns 0 or -ENOMEM. */
int ts_init(struct test_service *ts, struct smb_arbiter *arb, ts_packet_cb cb,
	    void *cb_ctx);
void ts_fini(struct test_service *ts);

/* Drains and processes until the queue is empty (flush id on the last
 * request if non-zero); when a drain reports pressure, reclaims once and
 * drains again. Returns the entries processed. */
uint64_t ts_pump(struct test_service *ts, uint64_t flush_request_id);

/* Processes one CommitDataRequest as the service would. */
void ts_process(struct test_service *ts, const Perfetto__Protos__CommitDataRequest *req);

#endif
