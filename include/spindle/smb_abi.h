// SPDX-License-Identifier: Apache-2.0
// The shared memory buffer (SMB) ABI both producers and the service use: page and chunk layout, and the lock-free chunk state machine.
//
// An SMB of `size` bytes is split into pages of `page_size` bytes. Each page
// starts with an 8-byte header whose 32-bit word holds the page layout
// (bits 30:28, how many chunks the page is cut into) and a 2-bit state per
// chunk. Each chunk starts with an 8-byte header (chunk id, writer id and the
// packets word: fragment count in bits 0-9, flags in bits 10-15) followed by
// its payload. All of it is little-endian and byte-compatible with Perfetto
// (spec/smb-abi.md).
//
// Who may do what (every transition but the one-chunk-page read is one
// compare-and-swap on the page word, so it is lock-free; every call tries
// exactly once and reports whether it won; retrying and backing off are the
// caller's policy):
//
//   page 0 -> layout          producer   spn_smb_try_partition()
//   Free -> BeingWritten      producer   spn_smb_try_acquire_write()
//   BeingWritten -> Complete  producer   spn_smb_try_complete()
//   Complete -> BeingRead     service    spn_smb_try_acquire_read()
//   BeingRead -> Free         service    spn_smb_try_free(.., SPN_SMB_BEING_READ)
//   Complete -> (read) -> Free  service  spn_smb_peek_sole(), spn_smb_free_sole()
//                                        (pages of one chunk only: a load
//                                        and plain stores, no CAS)
//   Complete -> Free          producer   spn_smb_try_free(.., SPN_SMB_COMPLETE)
//                                        (shared memory emulation only)
//   BeingWritten -> Free      producer   spn_smb_try_free(.., SPN_SMB_BEING_WRITTEN)
//                                        (a chunk it took and never wrote a
//                                        packet into: packets stayed 0, so
//                                        no scraper could take anything)
//   any -> (read only)        service    spn_smb_scrape_header() (scraping)
//
// Freeing the last non-free chunk of a page also writes 0 to the whole page
// word (un-partitions the page), in the same CAS.
//
// Memory ordering. The page word is the only synchronisation point between
// the owner that hands a chunk over and the one that takes it:
//   - ownership is taken with an acquire CAS (partition, acquire-write,
//     acquire-read): everything the previous owner did to the chunk bytes
//     happens-before our first access;
//   - ownership is handed over with a release CAS (complete, free): our
//     accesses to the chunk happen-before the next owner's.
// Spec §5 names acq_rel for acquire-write, complete and acquire-read; we use
// acq_rel there too (the half that carries no edge costs nothing on x86,
// where every locked RMW is a full barrier) and say which half pairs with
// what at each site. Failed CASes are relaxed: they publish and consume
// nothing, and the caller reloads the word before any retry.
//
// The service must treat every byte of the SMB as hostile: the producer can
// change it at any instant. The functions here only compute addresses from
// bounds-checked indexes and the process-local geometry in struct spn_smb,
// never from SMB contents, so a hostile page word cannot make them touch
// memory outside the mapping. Parsing chunk contents is done on a private
// copy (src/smb/chunk_validate.h).
//
// The struct spn_smb view is process-local (it holds the base pointer of this
// process's mapping); the shared memory itself holds no pointers.
#ifndef SPINDLE_SMB_ABI_H
#define SPINDLE_SMB_ABI_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the SMB ABI is little-endian; this host is not"
#endif
#if ATOMIC_INT_LOCK_FREE != 2 || ATOMIC_SHORT_LOCK_FREE != 2
#error "the SMB ABI needs lock-free 16- and 32-bit atomics (they live in shared memory)"
#endif

/* ---- Sizes and limits (spec/constants.md §2) ---------------------------- */

#define SPN_SMB_PAGE_HEADER_SIZE 8u	/* bytes at the start of every page */
#define SPN_SMB_CHUNK_HEADER_SIZE 8u	/* bytes at the start of every chunk */
#define SPN_SMB_MIN_PAGE_SIZE 4096u	/* ABI minimum page size */
#define SPN_SMB_MAX_PAGE_SIZE 65536u	/* ABI maximum page size */
#define SPN_SMB_SVC_MAX_PAGE_SIZE 32768u /* largest page size the service accepts */
#define SPN_SMB_DEFAULT_PAGE_SIZE 4096u	/* kDefaultShmPageSize */
#define SPN_SMB_DEFAULT_SIZE 262144u	/* kDefaultShmSize (256 KiB) */
#define SPN_SMB_MAX_SIZE 33554432u	/* kMaxShmSize (32 MiB) */
#define SPN_SMB_EMULATED_SIZE 1048576u	/* producer-private SMB in emulation mode */
#define SPN_SMB_MAX_CHUNKS_PER_PAGE 14u	/* chunks of the finest layout */
#define SPN_SMB_MAX_CHUNK_SIZE 65535u	/* largest chunk a service accepts (emulation data) */
#define SPN_SMB_CAS_MAX_ATTEMPTS 64u	/* callers' retry budget on one page word */
#define SPN_SMB_MEMFD_NAME "perfetto_shmem" /* memfd name, as the reference uses */

/* Page word masks. */
#define SPN_SMB_LAYOUT_SHIFT 28u
#define SPN_SMB_LAYOUT_MASK 0x70000000u	/* bits 30:28 */
#define SPN_SMB_STATES_MASK 0x0FFFFFFFu	/* 2 bits per chunk, 14 chunks */
#define SPN_SMB_PAGE_RESERVED_MASK 0x80000000u /* bit 31, must be 0 */

/* Packets word of the chunk header. */
#define SPN_SMB_COUNT_MASK 0x3FFu	/* bits 0-9: fragment count */
#define SPN_SMB_FLAGS_SHIFT 10u		/* bits 10-15: flags */
#define SPN_SMB_MAX_COUNT 1023u		/* largest count the 10 bits hold */
#define SPN_SMB_WRITER_MAX_PACKETS 1022u /* producers write at most this many */

/* Fragments. */
#define SPN_SMB_PACKET_HEADER_SIZE 4u	/* size prefix a writer reserves */
#define SPN_SMB_DROP_PACKET_SIZE 0x0FFFFFFFu /* size prefix meaning "rest lost" */

/* Identifiers. */
#define SPN_SMB_MAX_WRITER_ID 32767u	/* writer ids are 1..32767 */

/* Page layouts (bits 30:28 of the page word). */
enum spn_smb_layout {
	SPN_SMB_PAGE_NOT_PARTITIONED = 0, /* free page, no chunks */
	SPN_SMB_PAGE_DIV1 = 1,		  /* 1 chunk */
	SPN_SMB_PAGE_DIV2 = 2,		  /* 2 chunks */
	SPN_SMB_PAGE_DIV4 = 3,		  /* 4 chunks */
	SPN_SMB_PAGE_DIV7 = 4,		  /* 7 chunks */
	SPN_SMB_PAGE_DIV14 = 5,		  /* 14 chunks */
	SPN_SMB_PAGE_RESERVED6 = 6,	  /* reserved: no chunks */
	SPN_SMB_PAGE_RESERVED7 = 7,	  /* reserved: no chunks */
};

/* Chunk states (2 bits per chunk in the page word). */
enum spn_smb_state {
	SPN_SMB_FREE = 0,	   /* nobody owns it; a producer may acquire it */
	SPN_SMB_BEING_WRITTEN = 1, /* a producer owns it */
	SPN_SMB_BEING_READ = 2,	   /* the service owns it (copying it out) */
	SPN_SMB_COMPLETE = 3,	   /* written; waiting for the service */
};

/* Chunk flags (bits 10-15 of the packets word, here shifted down). */
enum spn_smb_chunk_flag {
	SPN_SMB_FIRST_CONTINUES = 0x01, /* fragment 0 continues chunk_id - 1 */
	SPN_SMB_LAST_CONTINUES = 0x02,	/* last fragment continues in chunk_id + 1 */
	SPN_SMB_NEEDS_PATCHING = 0x04,	/* last fragment waits for patches */
	SPN_SMB_FLAGS_KNOWN = 0x07,	/* all defined flags; 0x38 are reserved */
};

/* ---- Shared structures ------------------------------------------------- */

/* First 8 bytes of every page. */
struct spn_smb_page_header {
	/* layout (bits 30:28) and chunk states (2 bits each); changed only by
	 * CAS, by producer and service alike */
	_Atomic uint32_t header_bitmap;
	uint32_t reserved; /* unused, kept 0 by everyone */
};

/* First 8 bytes of every chunk. */
struct spn_smb_chunk_header {
	/* per-writer counter; producer stores it (relaxed) right after taking
	 * the chunk, the service zeroes it before freeing */
	_Atomic uint32_t chunk_id;
	/* writer id 1..32767; same writers as chunk_id */
	_Atomic uint16_t writer_id;
	/* fragment count (bits 0-9) and flags (bits 10-15); the producer
	 * release-stores it after each change, scrapers acquire-load it */
	_Atomic uint16_t packets;
};

_Static_assert(sizeof(struct spn_smb_page_header) == SPN_SMB_PAGE_HEADER_SIZE,
	       "page header is 8 bytes");
_Static_assert(offsetof(struct spn_smb_page_header, header_bitmap) == 0,
	       "page word at offset 0");
_Static_assert(offsetof(struct spn_smb_page_header, reserved) == 4,
	       "reserved at offset 4");
_Static_assert(sizeof(struct spn_smb_chunk_header) == SPN_SMB_CHUNK_HEADER_SIZE,
	       "chunk header is 8 bytes");
_Static_assert(offsetof(struct spn_smb_chunk_header, chunk_id) == 0,
	       "chunk_id at offset 0");
_Static_assert(offsetof(struct spn_smb_chunk_header, writer_id) == 4,
	       "writer_id at offset 4");
_Static_assert(offsetof(struct spn_smb_chunk_header, packets) == 6,
	       "packets at offset 6");
_Static_assert(sizeof(_Atomic uint32_t) == 4 && _Alignof(_Atomic uint32_t) == 4,
	       "atomic 32-bit word has the plain layout");
_Static_assert(sizeof(_Atomic uint16_t) == 2 && _Alignof(_Atomic uint16_t) == 2,
	       "atomic 16-bit word has the plain layout");

/* A process-local view of one mapped SMB (not shared; holds our pointer). */
struct spn_smb {
	uint8_t *base;		 /* first byte of this process's mapping */
	size_t size;		 /* bytes mapped, num_pages * page_size */
	uint32_t page_size;	 /* bytes per page */
	uint32_t num_pages;	 /* size / page_size */
	uint32_t chunk_size[8];	 /* chunk bytes (header included) per layout */
};

/* ---- Pure helpers ------------------------------------------------------- */

/* Chunks in a page of `layout` (0 for layouts 0, 6 and 7). */
static inline uint32_t spn_smb_layout_chunks(uint32_t layout)
{
	/* One nibble per layout: 0, 1, 2, 4, 7, 14, 0, 0. */
	return (0x00E74210u >> ((layout & 7u) * 4u)) & 0xFu;
}

/* Chunk size (header included) of `layout` in pages of `page_size` bytes:
 * (page_size - 8) / chunks, rounded down to a multiple of 4; 0 when the
 * layout has no chunks. */
static inline uint32_t spn_smb_chunk_size_for(uint32_t page_size, uint32_t layout)
{
	uint32_t n = spn_smb_layout_chunks(layout);

	if (n == 0 || page_size < SPN_SMB_PAGE_HEADER_SIZE)
		return 0;
	return ((page_size - SPN_SMB_PAGE_HEADER_SIZE) / n) & ~3u;
}

/* Layout field of a page word. */
static inline uint32_t spn_smb_word_layout(uint32_t word)
{
	return (word & SPN_SMB_LAYOUT_MASK) >> SPN_SMB_LAYOUT_SHIFT;
}

/* State of chunk `chunk` (0..13) in a page word. */
static inline uint32_t spn_smb_word_state(uint32_t word, uint32_t chunk)
{
	return (word >> (chunk * 2u)) & 3u;
}

/* The packets word for `count` fragments and `flags`. */
static inline uint16_t spn_smb_packets(uint32_t count, uint32_t flags)
{
	return (uint16_t)((count & SPN_SMB_COUNT_MASK) |
			  ((flags & 0x3Fu) << SPN_SMB_FLAGS_SHIFT));
}

/* Fragment count of a packets word. */
static inline uint32_t spn_smb_packets_count(uint16_t packets)
{
	return packets & SPN_SMB_COUNT_MASK;
}

/* Flags of a packets word (SPN_SMB_* chunk flags, reserved bits included). */
static inline uint32_t spn_smb_packets_flags(uint16_t packets)
{
	return (uint32_t)packets >> SPN_SMB_FLAGS_SHIFT;
}

/* ---- Addresses (no checks: callers pass indexes they checked) ---------- */

/* Header of page `page` (< smb->num_pages). */
static inline struct spn_smb_page_header *spn_smb_page(const struct spn_smb *smb,
							uint32_t page)
{
	return (struct spn_smb_page_header *)(void *)(smb->base +
						      (size_t)page * smb->page_size);
}

/* Header of chunk `chunk` (< chunks of `layout`) in page `page`. */
static inline struct spn_smb_chunk_header *
spn_smb_chunk(const struct spn_smb *smb, uint32_t page, uint32_t layout,
	      uint32_t chunk)
{
	uint8_t *p = smb->base + (size_t)page * smb->page_size +
		     SPN_SMB_PAGE_HEADER_SIZE +
		     (size_t)chunk * smb->chunk_size[layout & 7u];

	return (struct spn_smb_chunk_header *)(void *)p;
}

/* First payload byte of a chunk. */
static inline uint8_t *spn_smb_chunk_payload(struct spn_smb_chunk_header *hdr)
{
	return (uint8_t *)hdr + SPN_SMB_CHUNK_HEADER_SIZE;
}

/* Loads page `page`'s word with order `mo` (page < smb->num_pages). */
static inline uint32_t spn_smb_page_load(const struct spn_smb *smb, uint32_t page,
					 memory_order mo)
{
	return atomic_load_explicit(&spn_smb_page(smb, page)->header_bitmap, mo);
}

/* ---- Producer: chunk header updates while the chunk is BeingWritten ----- */

/*
 * Owner thread only: publishes a new packets word. Release: the bytes of
 * every earlier fragment happen-before it; pairs with the acquire load of
 * packets in spn_smb_scrape_header().
 */
static inline void spn_smb_chunk_set_packets(struct spn_smb_chunk_header *hdr,
					     uint16_t packets)
{
	atomic_store_explicit(&hdr->packets, packets, memory_order_release);
}

/*
 * Owner thread only: counts one more fragment, before the fragment's bytes
 * are written (so a scraper never trusts the last one). Returns the new
 * count. The caller keeps count <= SPN_SMB_WRITER_MAX_PACKETS.
 */
static inline uint32_t spn_smb_chunk_inc_count(struct spn_smb_chunk_header *hdr)
{
	/* Relaxed: only the owner writes this word while it is BeingWritten. */
	uint16_t p = atomic_load_explicit(&hdr->packets, memory_order_relaxed);

	/* Release: pairs with the scraper's acquire load of packets; the
	 * fragments already counted are complete before the count grows. */
	atomic_store_explicit(&hdr->packets, (uint16_t)(p + 1u),
			      memory_order_release);
	return spn_smb_packets_count((uint16_t)(p + 1u));
}

/* Producer side (owner or its arbiter): sets chunk flags. */
static inline void spn_smb_chunk_set_flags(struct spn_smb_chunk_header *hdr,
					   uint32_t flags)
{
	/* Release: what the flag describes (e.g. a back-filled size) is
	 * written before it; pairs with the scraper's acquire load. */
	atomic_fetch_or_explicit(&hdr->packets,
				 (uint16_t)((flags & 0x3Fu) << SPN_SMB_FLAGS_SHIFT),
				 memory_order_release);
}

/* Producer side (owner or its arbiter): clears chunk flags (e.g.
 * SPN_SMB_NEEDS_PATCHING after the last direct patch). */
static inline void spn_smb_chunk_clear_flags(struct spn_smb_chunk_header *hdr,
					     uint32_t flags)
{
	/* Release: the patched bytes are written before the flag goes; pairs
	 * with the scraper's acquire load. */
	atomic_fetch_and_explicit(&hdr->packets,
				  (uint16_t)~((flags & 0x3Fu) << SPN_SMB_FLAGS_SHIFT),
				  memory_order_release);
}

/* ---- State machine: each call tries once --------------------------------
 *
 * Common return values:
 *   0        the transition happened (this caller won);
 *   -EINVAL  page >= num_pages, or chunk outside the layout (including
 *            layouts without chunks): the request itself is wrong;
 *   -EBUSY   the page/chunk is not in the state the transition starts from
 *            (or has another layout); retrying now is unlikely to help;
 *   -EAGAIN  the page word changed between our load and our CAS (another
 *            chunk of the page moved); a retry may succeed.
 */

/*
 * Cuts un-partitioned page `page` into `layout` with the chunk states
 * `states` in one CAS from 0 (`mo`: its order on success). Returns 0,
 * -EINVAL (bad page or layout) or -EBUSY (the page is partitioned already).
 */
static inline int _spn_smb_cut(struct spn_smb *smb, uint32_t page, uint32_t layout,
			       uint32_t states, memory_order mo)
{
	_Atomic uint32_t *w;
	uint32_t expected = 0;

	if (page >= smb->num_pages || spn_smb_layout_chunks(layout) == 0)
		return -EINVAL;
	w = &spn_smb_page(smb, page)->header_bitmap;
	/* Relaxed: a cheap look before the CAS; the CAS decides. */
	if (atomic_load_explicit(w, memory_order_relaxed) != 0)
		return -EBUSY;
	if (!atomic_compare_exchange_strong_explicit(
		    w, &expected, layout << SPN_SMB_LAYOUT_SHIFT | states, mo,
		    memory_order_relaxed))
		return -EBUSY;
	return 0;
}

/* Writes a chunk's header: of a chunk just taken for writing, or zeroed
 * (0, 0, 0) when the service gives a chunk back. */
static inline void _spn_smb_write_header(struct spn_smb_chunk_header *hdr,
					 uint16_t writer_id, uint32_t chunk_id,
					 uint16_t packets)
{
	/* Relaxed: published by the release store of packets just after. */
	atomic_store_explicit(&hdr->chunk_id, chunk_id, memory_order_relaxed);
	atomic_store_explicit(&hdr->writer_id, writer_id, memory_order_relaxed);
	/* Release: the ids above happen-before it; pairs with the scraper's
	 * acquire load of packets, which then reads the ids. */
	atomic_store_explicit(&hdr->packets, packets, memory_order_release);
}

/*
 * Producer: cuts free page `page` into `layout` (SPN_SMB_PAGE_DIV1..DIV14),
 * all chunks Free. Returns 0, -EINVAL (bad page or layout) or -EBUSY (the
 * page is partitioned already).
 */
static inline int spn_smb_try_partition(struct spn_smb *smb, uint32_t page,
					uint32_t layout)
{
	/* Acquire: pairs with the release CAS in spn_smb_try_free() that
	 * un-partitioned the page, so the reader's copy of the old chunks is
	 * finished before we reuse the page. */
	return _spn_smb_cut(smb, page, layout, 0, memory_order_acquire);
}

/*
 * Producer: takes Free chunk `chunk` of page `page` (partitioned as
 * `layout`) for writing, then writes its header: chunk_id, writer_id and the
 * initial packets word (count/flags, e.g. count 1 + SPN_SMB_FIRST_CONTINUES
 * for a continued packet). On success *out is the chunk header; its size is
 * smb->chunk_size[layout]. Returns 0, -EINVAL, -EBUSY or -EAGAIN.
 */
static inline int spn_smb_try_acquire_write(struct spn_smb *smb, uint32_t page,
					    uint32_t layout, uint32_t chunk,
					    uint16_t writer_id, uint32_t chunk_id,
					    uint16_t packets,
					    struct spn_smb_chunk_header **out)
{
	struct spn_smb_chunk_header *hdr;
	_Atomic uint32_t *w;
	uint32_t old, new_word;

	if (page >= smb->num_pages || chunk >= spn_smb_layout_chunks(layout))
		return -EINVAL;
	w = &spn_smb_page(smb, page)->header_bitmap;
	/* Relaxed: the CAS below re-checks this exact value. */
	old = atomic_load_explicit(w, memory_order_relaxed);
	if (spn_smb_word_layout(old) != layout ||
	    spn_smb_word_state(old, chunk) != SPN_SMB_FREE)
		return -EBUSY;
	new_word = old | ((uint32_t)SPN_SMB_BEING_WRITTEN << (chunk * 2u));
	/* acq_rel (spec §5). Acquire pairs with the release CAS in
	 * spn_smb_try_free(): the service's copy and header zeroing are done
	 * before we write. The release half carries nothing this chunk needs
	 * (its header is published by the release store of packets below). */
	if (!atomic_compare_exchange_strong_explicit(w, &old, new_word,
						     memory_order_acq_rel,
						     memory_order_relaxed))
		return -EAGAIN;
	hdr = spn_smb_chunk(smb, page, layout, chunk);
	_spn_smb_write_header(hdr, writer_id, chunk_id, packets);
	*out = hdr;
	return 0;
}

/*
 * Producer: cuts free page `page` into `layout` and takes its chunk 0 for
 * writing in the same CAS (spn_smb_try_partition() then
 * spn_smb_try_acquire_write() of chunk 0, without the second locked
 * instruction and reload in between; nobody can see the page partitioned
 * with chunk 0 still Free). Writes the header as the latter does. Returns
 * 0, -EINVAL or -EBUSY (the page is partitioned already).
 */
static inline int spn_smb_try_partition_acquire(struct spn_smb *smb, uint32_t page,
						uint32_t layout, uint16_t writer_id,
						uint32_t chunk_id, uint16_t packets,
						struct spn_smb_chunk_header **out)
{
	/* acq_rel, as in the two calls it stands for; the acquire half pairs
	 * with the release CAS in spn_smb_try_free() that un-partitioned
	 * the page. */
	int r = _spn_smb_cut(smb, page, layout, SPN_SMB_BEING_WRITTEN,
			     memory_order_acq_rel);

	if (r != 0)
		return r;
	*out = spn_smb_chunk(smb, page, layout, 0);
	_spn_smb_write_header(*out, writer_id, chunk_id, packets);
	return 0;
}

/*
 * Producer: marks BeingWritten chunk `chunk` (page `page`, `layout`)
 * Complete. After success the producer must not touch the chunk again.
 * Returns 0, -EINVAL, -EBUSY or -EAGAIN.
 */
static inline int spn_smb_try_complete(struct spn_smb *smb, uint32_t page,
				       uint32_t layout, uint32_t chunk)
{
	_Atomic uint32_t *w;
	uint32_t old, new_word;

	if (page >= smb->num_pages || chunk >= spn_smb_layout_chunks(layout))
		return -EINVAL;
	w = &spn_smb_page(smb, page)->header_bitmap;
	/* Relaxed: the CAS below re-checks this exact value. */
	old = atomic_load_explicit(w, memory_order_relaxed);
	if (spn_smb_word_layout(old) != layout ||
	    spn_smb_word_state(old, chunk) != SPN_SMB_BEING_WRITTEN)
		return -EBUSY;
	/* 01 -> 11. */
	new_word = old | ((uint32_t)SPN_SMB_COMPLETE << (chunk * 2u));
	/* acq_rel (spec §5). Release: the payload and header writes
	 * happen-before it; pairs with the acquire CAS in
	 * spn_smb_try_acquire_read() and the scraper's acquire load of the
	 * page word. The acquire half carries nothing (we read nothing after). */
	if (!atomic_compare_exchange_strong_explicit(w, &old, new_word,
						     memory_order_acq_rel,
						     memory_order_relaxed))
		return -EAGAIN;
	return 0;
}

/*
 * Service: takes Complete chunk `chunk` of page `page` for reading, in the
 * page's current layout, which it stores in *layout (the chunk is then at
 * spn_smb_chunk(smb, page, *layout, chunk), smb->chunk_size[*layout] bytes).
 * Returns 0, -EINVAL (page out of range, or chunk not in the current layout:
 * ignore the entry), -EBUSY (not Complete: skip) or -EAGAIN.
 */
static inline int spn_smb_try_acquire_read(struct spn_smb *smb, uint32_t page,
					   uint32_t chunk, uint32_t *layout)
{
	_Atomic uint32_t *w;
	uint32_t old, new_word, l;

	if (page >= smb->num_pages || chunk >= SPN_SMB_MAX_CHUNKS_PER_PAGE)
		return -EINVAL;
	w = &spn_smb_page(smb, page)->header_bitmap;
	/* Relaxed: the CAS below re-checks this exact value, layout included. */
	old = atomic_load_explicit(w, memory_order_relaxed);
	l = spn_smb_word_layout(old);
	if (chunk >= spn_smb_layout_chunks(l))
		return -EINVAL;
	if (spn_smb_word_state(old, chunk) != SPN_SMB_COMPLETE)
		return -EBUSY;
	/* 11 -> 10. */
	new_word = old & ~((uint32_t)SPN_SMB_BEING_WRITTEN << (chunk * 2u));
	/* acq_rel (spec §5). Acquire pairs with the release CAS in
	 * spn_smb_try_complete(): the producer's payload and header writes are
	 * visible to our copy. The release half carries nothing (we wrote
	 * nothing the producer needs). */
	if (!atomic_compare_exchange_strong_explicit(w, &old, new_word,
						     memory_order_acq_rel,
						     memory_order_relaxed))
		return -EAGAIN;
	*layout = l;
	return 0;
}

/*
 * Frees chunk `chunk` (page `page`, `layout`) that is in state `from`:
 * SPN_SMB_BEING_READ (service, after copying it), SPN_SMB_COMPLETE
 * (producer in emulation mode, after shipping it in CommitData) or
 * SPN_SMB_BEING_WRITTEN (producer giving back a chunk it never published a
 * packet in: the header's packets word is still 0). Zeroes the
 * chunk header first, then moves the chunk to Free; if that leaves every
 * chunk of the page Free, the same CAS writes 0 (un-partitions the page).
 * Returns 0, -EINVAL (also for any other `from`), -EBUSY or -EAGAIN (the
 * header is zeroed already; the caller still owns the chunk and retries).
 */
static inline int spn_smb_try_free(struct spn_smb *smb, uint32_t page,
				   uint32_t layout, uint32_t chunk, uint32_t from)
{
	struct spn_smb_chunk_header *hdr;
	_Atomic uint32_t *w;
	uint32_t old, new_word;

	if (page >= smb->num_pages || chunk >= spn_smb_layout_chunks(layout) ||
	    (from != SPN_SMB_BEING_READ && from != SPN_SMB_COMPLETE &&
	     from != SPN_SMB_BEING_WRITTEN))
		return -EINVAL;
	w = &spn_smb_page(smb, page)->header_bitmap;
	/* Relaxed: the CAS below re-checks this exact value. */
	old = atomic_load_explicit(w, memory_order_relaxed);
	if (spn_smb_word_layout(old) != layout ||
	    spn_smb_word_state(old, chunk) != from)
		return -EBUSY;
	hdr = spn_smb_chunk(smb, page, layout, chunk);
	/* Zeroed ids, then packets 0 with release (spec §5): a scraper that
	 * acquire-loads packets == 0 also sees the zeroed ids. */
	_spn_smb_write_header(hdr, 0, 0, 0);
	new_word = old & ~(3u << (chunk * 2u));
	if ((new_word & SPN_SMB_STATES_MASK) == 0)
		new_word = 0; /* last chunk out: un-partition */
	/* Release: our copy of the chunk and the zeroed header happen-before
	 * it; pairs with the acquire CAS of the producer's next
	 * spn_smb_try_acquire_write() or spn_smb_try_partition(). */
	if (!atomic_compare_exchange_strong_explicit(w, &old, new_word,
						     memory_order_release,
						     memory_order_relaxed))
		return -EAGAIN;
	return 0;
}

/*
 * Service, pages of one chunk (SPN_SMB_PAGE_DIV1): reads Complete chunk 0
 * of page `page` without a locked instruction. On such a page nobody but
 * the service may touch the page word while the chunk is Complete (the
 * producer hands it over for good, spec §5), so BeingRead would tell
 * nobody anything; the chunk is read in place and freed with
 * spn_smb_free_sole(). The two CASes it saves were the commit path's
 * costliest step: a locked instruction waits for the lane's earlier
 * streaming stores into the trace buffer to reach memory (commit_bench,
 * one lane, 8 alternating runs: 0.50 -> 0.575 of memcpy). The caller must
 * be the only reader of this SMB (its producer's lane); a producer that
 * maps one SMB into two connections gets, at worst, its own chunk stored
 * twice. Returns 0, -EINVAL (page out of range), -ENOENT
 * (the page is not a one-chunk page: use spn_smb_try_acquire_read()) or
 * -EBUSY (not Complete: skip).
 */
static inline int spn_smb_peek_sole(const struct spn_smb *smb, uint32_t page)
{
	uint32_t word;

	if (page >= smb->num_pages)
		return -EINVAL;
	/* Acquire: pairs with the release CAS in spn_smb_try_complete(); the
	 * producer's payload and header writes are visible to our copy. */
	word = spn_smb_page_load(smb, page, memory_order_acquire);
	if (spn_smb_word_layout(word) != SPN_SMB_PAGE_DIV1)
		return -ENOENT;
	if (spn_smb_word_state(word, 0) != SPN_SMB_COMPLETE)
		return -EBUSY;
	return 0;
}

/*
 * Service: frees the Complete one-chunk page `page` that
 * spn_smb_peek_sole() found, after copying it: zeroes the chunk header,
 * then writes 0 to the page word (its last chunk out: un-partitioned),
 * with plain stores. A producer that broke the ABI and changed the page
 * meanwhile loses that change; nobody else can.
 */
static inline void spn_smb_free_sole(struct spn_smb *smb, uint32_t page)
{
	/* As in spn_smb_try_free(): ids, then packets 0 with release. */
	_spn_smb_write_header(spn_smb_chunk(smb, page, SPN_SMB_PAGE_DIV1, 0),
			      0, 0, 0);
	/* Release: our copy of the chunk and the zeroed header happen-before
	 * it; pairs with the acquire CAS of the producer's next
	 * spn_smb_try_partition(), which expects exactly this 0. */
	atomic_store_explicit(&spn_smb_page(smb, page)->header_bitmap, 0,
			      memory_order_release);
}

/* What a scraper saw of one chunk (a snapshot; the producer still owns it). */
struct spn_smb_scrape {
	struct spn_smb_chunk_header *hdr; /* the chunk in the SMB */
	uint32_t layout;	/* page layout the chunk was found in */
	uint32_t size;		/* chunk bytes, header included */
	uint32_t state;		/* SPN_SMB_BEING_WRITTEN or SPN_SMB_COMPLETE */
	uint32_t chunk_id;	/* as loaded once */
	uint16_t writer_id;	/* as loaded once */
	uint16_t packets;	/* as loaded once (count and flags) */
};

/*
 * Service, scraping: reads chunk `chunk` of page `page` without taking it
 * (spec §9 steps 1-3). Fills *out when the chunk is worth copying: it is
 * Complete, or BeingWritten with at least 2 fragments (the last one may be
 * in progress, so the caller keeps count - 1). Returns 0; -EINVAL (page out
 * of range); -ENOENT (no such chunk in the current layout, or Free or
 * BeingRead); -ENODATA (BeingWritten with fewer than 2 fragments). The
 * caller copies the chunk and must parse only its copy.
 */
static inline int spn_smb_scrape_header(const struct spn_smb *smb, uint32_t page,
					uint32_t chunk, struct spn_smb_scrape *out)
{
	struct spn_smb_chunk_header *hdr;
	uint32_t word, layout, state;
	uint16_t packets;

	if (page >= smb->num_pages)
		return -EINVAL;
	/* Acquire: pairs with the release CAS in spn_smb_try_complete(); a
	 * Complete chunk's bytes are visible to our copy. */
	word = spn_smb_page_load(smb, page, memory_order_acquire);
	layout = spn_smb_word_layout(word);
	if (chunk >= spn_smb_layout_chunks(layout))
		return -ENOENT;
	state = spn_smb_word_state(word, chunk);
	if (state != SPN_SMB_BEING_WRITTEN && state != SPN_SMB_COMPLETE)
		return -ENOENT;
	hdr = spn_smb_chunk(smb, page, layout, chunk);
	/* Acquire: pairs with the producer's release stores of packets
	 * (acquire-write, inc_count, flag changes): the ids and every counted
	 * fragment but the last are visible. */
	packets = atomic_load_explicit(&hdr->packets, memory_order_acquire);
	if (state == SPN_SMB_BEING_WRITTEN && spn_smb_packets_count(packets) < 2)
		return -ENODATA;
	out->hdr = hdr;
	out->layout = layout;
	out->size = smb->chunk_size[layout];
	out->state = state;
	/* Relaxed: ordered by the acquire load of packets above. */
	out->chunk_id = atomic_load_explicit(&hdr->chunk_id, memory_order_relaxed);
	out->writer_id = atomic_load_explicit(&hdr->writer_id, memory_order_relaxed);
	out->packets = packets;
	return 0;
}

/* ---- Out of line (src/smb/smb_abi.c) ------------------------------------ */

/*
 * Checks an SMB geometry against the ABI (spec/smb-abi.md §2): page size a
 * multiple of 4096 in 4096..65536; size a multiple of the page size, at
 * least one page, at most 32 MiB. Returns 0, or -EINVAL with *why (if
 * why != NULL) set to a static sentence naming the broken rule.
 */
int spn_smb_check_geometry(size_t size, uint64_t page_size, const char **why);

/*
 * Service rules for the SMB size and page size (producer-port.md §7) from a
 * producer's or trace config's hints (0 = unset): defaults 256 KiB / 4 KiB,
 * page clamped to 32 KiB, size to 32 MiB; valid iff the page size is 4, 8,
 * 16 or 32 KiB and the size a multiple of it, at least one page. Writes the
 * sizes to use to *size and *page_size (both defaults if the hints were
 * invalid). Returns true iff the hints were usable (after defaulting and
 * clamping), false when both defaults replaced them.
 */
bool spn_smb_service_sizes(uint64_t size_hint, uint64_t page_hint,
			   uint32_t *size, uint32_t *page_size);

/*
 * Sets up *smb over `size` bytes at `base` (8-byte aligned) with pages of
 * `page_size` bytes; the geometry must pass spn_smb_check_geometry().
 * Returns 0 or -EINVAL. Touches no SMB byte.
 */
int spn_smb_init(struct spn_smb *smb, void *base, size_t size, uint32_t page_size);

/*
 * True iff a page word is well formed: bit 31 clear, and no state bits set
 * for chunks the layout does not have (all of them for layouts 0, 6, 7).
 * A service may use it to spot a producer that breaks the ABI; the state
 * machine stays safe without it.
 */
bool spn_smb_word_valid(uint32_t word);

/* Static name of a chunk state ("free", "being_written", ...). */
const char *spn_smb_state_name(uint32_t state);

/* Static name of a layout ("not_partitioned", "div1", ..., "reserved"). */
const char *spn_smb_layout_name(uint32_t layout);

#endif
