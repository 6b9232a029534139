// SPDX-License-Identifier: Apache-2.0
// The out-of-line part of the SMB ABI: geometry checks, the service's size rules, view set-up and names.
#include "spindle/smb_abi.h"

#include <stdint.h>

int spn_smb_check_geometry(size_t size, uint64_t page_size, const char **why)
{
	const char *w = NULL;

	if (page_size < SPN_SMB_MIN_PAGE_SIZE || page_size > SPN_SMB_MAX_PAGE_SIZE)
		w = "page size is outside 4096..65536 bytes";
	else if (page_size % SPN_SMB_MIN_PAGE_SIZE != 0)
		w = "page size is not a multiple of 4096";
	else if (size < page_size)
		w = "SMB size is smaller than one page";
	else if (size > SPN_SMB_MAX_SIZE)
		w = "SMB size is larger than 32 MiB";
	else if (size % page_size != 0)
		w = "SMB size is not a multiple of the page size";
	if (why)
		*why = w;
	return w ? -EINVAL : 0;
}

bool spn_smb_service_sizes(uint64_t size_hint, uint64_t page_hint,
			   uint32_t *size, uint32_t *page_size)
{
	uint64_t page = page_hint ? page_hint : SPN_SMB_DEFAULT_PAGE_SIZE;
	uint64_t sz = size_hint ? size_hint : SPN_SMB_DEFAULT_SIZE;
	uint64_t units;
	bool ok;

	if (page > SPN_SMB_SVC_MAX_PAGE_SIZE)
		page = SPN_SMB_SVC_MAX_PAGE_SIZE;
	if (sz > SPN_SMB_MAX_SIZE)
		sz = SPN_SMB_MAX_SIZE;
	units = page / SPN_SMB_MIN_PAGE_SIZE;
	ok = page >= SPN_SMB_MIN_PAGE_SIZE && page % SPN_SMB_MIN_PAGE_SIZE == 0 &&
	     (units & (units - 1)) == 0 && sz >= page && sz % page == 0;
	if (!ok) {
		page = SPN_SMB_DEFAULT_PAGE_SIZE;
		sz = SPN_SMB_DEFAULT_SIZE;
	}
	*size = (uint32_t)sz;
	*page_size = (uint32_t)page;
	return ok;
}

int spn_smb_init(struct spn_smb *smb, void *base, size_t size, uint32_t page_size)
{
	uint32_t layout;

	if (!base || ((uintptr_t)base & 7u) != 0 ||
	    spn_smb_check_geometry(size, page_size, NULL) != 0)
		return -EINVAL;
	smb->base = base;
	smb->size = size;
	smb->page_size = page_size;
	smb->num_pages = (uint32_t)(size / page_size);
	for (layout = 0; layout < 8; layout++)
		smb->chunk_size[layout] = spn_smb_chunk_size_for(page_size, layout);
	return 0;
}

bool spn_smb_word_valid(uint32_t word)
{
	uint32_t n = spn_smb_layout_chunks(spn_smb_word_layout(word));
	uint32_t used = n ? (1u << (n * 2u)) - 1u : 0;

	if (word & SPN_SMB_PAGE_RESERVED_MASK)
		return false;
	return (word & SPN_SMB_STATES_MASK & ~used) == 0;
}

const char *spn_smb_state_name(uint32_t state)
{
	static const char *const names[4] = {
		"free", "being_written", "being_read", "complete",
	};

	return names[state & 3u];
}

const char *spn_smb_layout_name(uint32_t layout)
{
	static const char *const names[8] = {
		"not_partitioned", "div1", "div2", "div4",
		"div7", "div14", "reserved", "reserved",
	};

	return names[layout & 7u];
}
