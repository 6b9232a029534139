// SPDX-License-Identifier: Apache-2.0
// Allocation hooks of src/core: every malloc/calloc/realloc/free/mmap/munmap
// of the service goes through one table that tests replace to fail the N-th
// allocation (SQLite style) and to count what is still outstanding.
#ifndef SPN_CORE_MEM_HOOKS_H
#define SPN_CORE_MEM_HOOKS_H

#include <stddef.h>
#include <sys/types.h>

/*
 * The allocation table. A NULL member means the libc function. The table is
 * process-global and not synchronised: tests set it before starting threads
 * and restore it (svc_mem_set_hooks(NULL)) after joining them.
 */
struct svc_mem_hooks {
	void *(*malloc)(size_t size);		   /* malloc(3) */
	void *(*calloc)(size_t n, size_t size);	   /* calloc(3) */
	void *(*realloc)(void *p, size_t size);	   /* realloc(3) */
	void (*free)(void *p);			   /* free(3) */
	void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd,
		      off_t off);		   /* mmap(2); MAP_FAILED on error */
	int (*munmap)(void *addr, size_t len);	   /* munmap(2) */
};

/* Installs `h` (copied), or the libc functions when h is NULL. */
void svc_mem_set_hooks(const struct svc_mem_hooks *h);

/* The hooked functions; same contracts as their libc namesakes. */
void *svc_mem_malloc(size_t size);
void *svc_mem_calloc(size_t n, size_t size);
void *svc_mem_realloc(void *p, size_t size);
void svc_mem_free(void *p);
/* Returns MAP_FAILED (errno set) on failure, like mmap(2). */
void *svc_mem_mmap(void *addr, size_t len, int prot, int flags, int fd,
		   off_t off);
int svc_mem_munmap(void *addr, size_t len);

#endif
