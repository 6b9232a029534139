// SPDX-License-Identifier: Apache-2.0
// Service side: copy a chunk out of a producer's (hostile) SMB and validate the private copy: header, fragment count, every fragment's bounds.
//
// The producer can rewrite any SMB byte at any instant, so the service copies
// a chunk once and parses only the copy (spec/smb-abi.md §11). Validation
// follows §6.2: each fragment is a 1..4-byte varint size and that many data
// bytes, all inside the payload; `count` fragments must fit. A malformed
// fragment ends the usable part of the chunk (an ABI violation); a drop marker
// ends it too (writer packet loss, not a violation). Nothing here reads past
// the `size` bytes it is given.
//
// Threads: the commit and scrape copies run on the service thread that owns
// the producer (one at a time per SMB); the producer's threads run
// concurrently. A commit copy reads a chunk the producer has handed over: in
// BeingRead, ordered by the acquire CAS that took it, or, on a page of one
// chunk, still Complete, ordered by an acquire load of the page word (nobody
// else may write such a page until the service frees it, so the locked
// instruction would buy nothing; smb_abi.h, spn_smb_peek_sole). A scrape copy
// of a BeingWritten chunk deliberately copies bytes the producer may still be
// writing (its last fragment); those bytes are never used (count - 1), but a
// ThreadSanitizer run that scrapes concurrently with a writer reports that
// race, so the concurrency tests do not scrape.
#ifndef SPN_SMB_CHUNK_VALIDATE_H
#define SPN_SMB_CHUNK_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spindle/smb_abi.h"

/* One fragment of a chunk payload. */
struct smb_frag {
	uint32_t off;  /* payload offset of the first data byte */
	uint32_t size; /* data bytes (0 for an empty fragment) */
};

/*
 * Parses the fragment that starts at payload offset `pos` of a payload of
 * `len` bytes. Returns the bytes it spans (size prefix + data, >= 1) and
 * fills *frag; -ENOMSG for a drop marker (the writer lost the rest of the
 * packet: discard it and the rest of the chunk); -EBADMSG when it is
 * malformed (no room for the prefix, varint longer than 4 bytes or past the
 * payload end, data past the payload end).
 */
int smb_frag_parse(const uint8_t *payload, uint32_t len, uint32_t pos,
		   struct smb_frag *frag);

/* How the validation of a chunk copy ended. */
enum smb_chunk_end {
	SMB_CHUNK_OK = 0,	  /* all `count` fragments are inside the payload */
	SMB_CHUNK_DROP,		  /* a drop marker after `nfrags` good fragments */
	SMB_CHUNK_BAD_FRAGMENT,	  /* fragment #nfrags is malformed (ABI violation) */
	SMB_CHUNK_BAD_HEADER,	  /* bad header (ABI violation); nothing usable */
};

/* What validation found in a chunk copy. */
struct smb_chunk_info {
	uint32_t size;	    /* chunk bytes, header included */
	uint32_t chunk_id;  /* from the copy's header */
	uint16_t writer_id; /* from the copy's header */
	uint16_t count;	    /* fragments the header declares */
	uint8_t flags;	    /* SPN_SMB_* chunk flags (reserved bits dropped) */
	bool complete;	    /* the chunk was Complete (false: scraped while
			     * BeingWritten, its last fragment left out) */
	bool freed;	    /* commit copy: the chunk went back to Free */
	enum smb_chunk_end end; /* how validation ended */
	uint16_t nfrags;    /* leading fragments that are usable (<= count) */
	uint32_t used;	    /* payload bytes those fragments span */
	const char *why;    /* static reason when end != SMB_CHUNK_OK, else NULL */
};

/*
 * Validates the chunk copy at `chunk`, `size` bytes (8-byte header +
 * payload, as laid out in the SMB). Clears the reserved flag bits in the
 * copy. Fills *info. Returns:
 *   0        every declared fragment is well formed (info->nfrags == count);
 *   -ENOMSG  a drop marker ends it: fragments [0, nfrags) are usable, the
 *            rest is writer packet loss;
 *   -EBADMSG an ABI violation: a bad header (writer id outside 1..32767;
 *            nothing usable) or a malformed fragment (fragments
 *            [0, nfrags) are usable, the rest is discarded);
 *   -EINVAL  size is outside 8..65535.
 */
int smb_chunk_validate(void *chunk, size_t size, struct smb_chunk_info *info);

/*
 * smb_chunk_validate() for a copy whose 8-byte header is at hdr and whose
 * `len` payload bytes are at payload (anywhere, not necessarily after the
 * header). Same results; info->complete and info->freed are left false.
 */
int smb_chunk_check(uint8_t *hdr, const uint8_t *payload, size_t len,
		    struct smb_chunk_info *info);

/* One chunk copy for smb_chunk_check_two(). */
struct smb_chunk_copy {
	uint8_t *hdr;		      /* its 8-byte header */
	const uint8_t *payload;	      /* its payload */
	size_t len;		      /* payload bytes */
	struct smb_chunk_info *info;  /* filled as by smb_chunk_check() */
	int rc;			      /* set to what smb_chunk_check() returns */
};

/*
 * smb_chunk_check() of two copies at once, with the same results for each:
 * the fragment walks (each a serial chain of loads) run side by side while
 * both are in the form writers use, so two chunks of small packets take
 * little more time than one.
 */
void smb_chunk_check_two(struct smb_chunk_copy *a, struct smb_chunk_copy *b);

/* A Complete chunk the service took for reading: BeingRead, or left
 * Complete on a one-chunk page (sole). */
struct smb_chunk_taken {
	uint32_t page;	 /* page index */
	uint32_t chunk;	 /* chunk index in the page */
	uint32_t layout; /* the page's layout when it was taken */
	uint32_t size;	 /* chunk bytes, 8-byte header included */
	bool sole;	 /* one-chunk page read in place (still Complete) */
};

/*
 * Commit path, first half: takes Complete chunk `chunk` of page `page` for
 * reading (chunk 0 of a one-chunk page with a load, leaving it Complete; any
 * other with the CAS to BeingRead) and fills *t (t->size tells the caller how
 * much room the copy needs). The caller must then call
 * smb_chunk_commit_finish(), which gives the chunk back. Returns 0, or with
 * nothing taken (info->why set): -EINVAL (page not in the SMB or chunk not in
 * the page's layout: ignore the entry), -EBUSY (the chunk is not Complete),
 * -EAGAIN (the page word changed under us; retry).
 */
int smb_chunk_commit_take(struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  struct smb_chunk_taken *t, struct smb_chunk_info *info);

/*
 * Commit path, second half: copies taken chunk t once, its 8-byte header to
 * hdr and its t->size - 8 payload bytes to payload (which may be where the
 * chunk will be stored, as long as nobody else can see it yet), frees the
 * chunk, then validates the copy (hdr and payload only, never the SMB).
 * Returns what smb_chunk_validate() returns, or -ENOSPC with nothing copied
 * when payload is NULL or the payload is larger than cap (the chunk is
 * freed and its data lost). info->freed as for smb_chunk_commit_copy().
 */
int smb_chunk_commit_finish(struct spn_smb *smb, const struct smb_chunk_taken *t,
			    uint8_t *hdr, uint8_t *payload, size_t cap,
			    struct smb_chunk_info *info);

/*
 * smb_chunk_commit_finish() without the validation: copies taken chunk t
 * (header to hdr, payload to payload) and frees it. Returns 0 (validate the
 * copy with smb_chunk_check() or smb_chunk_check_two()), or -ENOSPC as
 * smb_chunk_commit_finish(). Sets info->size and info->freed and clears the
 * rest (info->why for -ENOSPC).
 */
int smb_chunk_commit_copy_out(struct spn_smb *smb, const struct smb_chunk_taken *t,
			      uint8_t *hdr, uint8_t *payload, size_t cap,
			      struct smb_chunk_info *info);

/*
 * Commit path in one call (take, then finish into one buffer): takes Complete
 * chunk `chunk` of page `page` for reading, copies it (whole, header
 * included) to dst, frees it, then validates the copy. The chunk is freed
 * whatever its content; info->freed is false only if a hostile producer kept
 * changing the page word or moved the chunk out of BeingRead (a one-chunk
 * page is freed with plain stores, always). Returns what smb_chunk_validate()
 * returns (info->size bytes are in dst), or, with nothing copied: -EINVAL
 * (page not in the SMB or chunk not in the page's layout: ignore the entry),
 * -EBUSY (the chunk is not Complete), -EAGAIN (the page word changed under
 * us; retry), -ENOSPC (the chunk is larger than cap; it is freed and its data
 * lost).
 */
int smb_chunk_commit_copy(struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  void *dst, size_t cap, struct smb_chunk_info *info);

/*
 * Scraping (spec §9): copies chunk `chunk` of page `page` without taking it.
 * A BeingWritten chunk is copied with count - 1 fragments and without the
 * LastPacketContinuesOnNextChunk and ChunkNeedsPatching flags (its last
 * fragment may be in progress); the header in dst is the one loaded once
 * by spn_smb_scrape_header(). Returns what smb_chunk_validate() returns
 * (info->complete tells the state), or, with nothing copied: -EINVAL (page
 * not in the SMB), -ENOENT (no such chunk, or Free or BeingRead), -ENODATA
 * (BeingWritten with fewer than 2 fragments), -ENOSPC (larger than cap).
 */
int smb_chunk_scrape_copy(const struct spn_smb *smb, uint32_t page, uint32_t chunk,
			  void *dst, size_t cap, struct smb_chunk_info *info);

#endif
