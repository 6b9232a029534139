// SPDX-License-Identifier: Apache-2.0
// The allocation hook table of src/core (see mem_hooks.h).
#include "core/mem_hooks.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The installed table; all NULL = libc. Written only while single-threaded. */
static struct svc_mem_hooks svc_mem_table;

void svc_mem_set_hooks(const struct svc_mem_hooks *h)
{
	if (h)
		svc_mem_table = *h;
	else
		memset(&svc_mem_table, 0, sizeof(svc_mem_table));
}

void *svc_mem_malloc(size_t size)
{
	return svc_mem_table.malloc ? svc_mem_table.malloc(size) : malloc(size);
}

void *svc_mem_calloc(size_t n, size_t size)
{
	return svc_mem_table.calloc ? svc_mem_table.calloc(n, size) :
				      calloc(n, size);
}

void *svc_mem_realloc(void *p, size_t size)
{
	return svc_mem_table.realloc ? svc_mem_table.realloc(p, size) :
				       realloc(p, size);
}

void svc_mem_free(void *p)
{
	if (svc_mem_table.free)
		svc_mem_table.free(p);
	else
		free(p);
}

void *svc_mem_mmap(void *addr, size_t len, int prot, int flags, int fd,
		   off_t off)
{
	return svc_mem_table.mmap ? svc_mem_table.mmap(addr, len, prot, flags,
						       fd, off) :
				    mmap(addr, len, prot, flags, fd, off);
}

int svc_mem_munmap(void *addr, size_t len)
{
	return svc_mem_table.munmap ? svc_mem_table.munmap(addr, len) :
				      munmap(addr, len);
}
