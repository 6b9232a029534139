// SPDX-License-Identifier: Apache-2.0
// Shared memory for an SMB: create a sealed memfd and map it, or attach to a received fd after checking it; unmap and close.
//
// Both sides use it: the service creates the SMB of each producer (and
// attaches a producer-created one for startup tracing); the SDK attaches the
// service's fd (and creates its own for startup tracing). Every system call
// goes through a hook table (struct smb_shm_ops) so tests can make any of
// them fail; all failure paths close and unmap what they opened.
#ifndef SPN_SMB_SHM_H
#define SPN_SMB_SHM_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "spindle/smb_abi.h"

/* The system calls shm.c makes; each returns what the real call returns
 * (-1 with errno set on failure, MAP_FAILED for mmap). */
struct smb_shm_ops {
	int (*memfd_create)(const char *name, unsigned int flags);
	/* open(2), for the O_TMPFILE fallback when memfd_create is ENOSYS */
	int (*open)(const char *path, int flags, mode_t mode);
	int (*ftruncate)(int fd, off_t length);
	int (*add_seals)(int fd, int seals); /* fcntl(fd, F_ADD_SEALS, seals) */
	int (*get_seals)(int fd);	     /* fcntl(fd, F_GET_SEALS) */
	int (*fstat)(int fd, struct stat *st);
	void *(*mmap)(void *addr, size_t length, int prot, int flags, int fd,
		      off_t offset);
	int (*munmap)(void *addr, size_t length);
	int (*close)(int fd);
};

/*
 * Replaces the system calls (tests only; not thread-safe: call it while no
 * other thread uses shm.c). NULL entries, or ops == NULL, mean the real
 * calls. The table is copied.
 */
void smb_shm_set_ops(const struct smb_shm_ops *ops);

/* Where an fd being attached came from, which decides the checks. */
enum smb_shm_origin {
	/* The service's SMB, attached by a producer: the ABI geometry rules
	 * (spn_smb_check_geometry), no seal check (spec §2). */
	SMB_SHM_FROM_SERVICE,
	/* A producer's SMB, attached by the service (startup tracing): seals
	 * shrink, grow and seal required, no write seal, and the size and page
	 * size must pass the service rules unchanged (producer-port.md §2, §7). */
	SMB_SHM_FROM_PRODUCER,
};

/* One mapped SMB. smb_shm_init() it before first use. */
struct smb_shm {
	int fd;		 /* the memfd (owned), -1 when none */
	struct spn_smb smb; /* the mapping: base (NULL when unmapped), size, pages */
	char err[192];	 /* why the last call failed ("" after success) */
};

/* Sets up an empty *shm (fd -1, nothing mapped). */
void smb_shm_init(struct smb_shm *shm);

/*
 * Creates an SMB of `size` bytes with `page_size`-byte pages: memfd
 * "perfetto_shmem" (MFD_CLOEXEC | MFD_ALLOW_SEALING), ftruncate, seals
 * shrink + grow + seal, then a shared read-write mapping. When the kernel
 * has no memfd_create (ENOSYS) it falls back to an unlinked O_TMPFILE in
 * /dev/shm (then /tmp), unsealed, as the reference does. The geometry must
 * pass spn_smb_check_geometry(); a service picks it with
 * spn_smb_service_sizes(). *shm must be empty. Returns 0, or -errno with
 * shm->err set and nothing left open or mapped: -EINVAL (geometry, or *shm
 * in use), or the error of the failing system call.
 */
int smb_shm_create(struct smb_shm *shm, size_t size, uint32_t page_size);

/*
 * Maps received fd `fd` as an SMB with `page_size`-byte pages, after
 * checking it per `origin` (see enum smb_shm_origin): it must be a regular
 * file; its size (fstat) must be a valid SMB size for `page_size`; for
 * SMB_SHM_FROM_PRODUCER it must carry the seals. On success *shm owns fd
 * (smb_shm_close() closes it). On failure fd is left open and still the
 * caller's, nothing is mapped, and shm->err says why. Returns 0 or:
 * -EBADF (fd < 0 or not open), -ENODEV (not a regular file), -EPERM
 * (missing seals, or a write seal), -EINVAL (size or page size refused,
 * or *shm in use), or the error of the failing system call.
 */
int smb_shm_attach(struct smb_shm *shm, int fd, uint32_t page_size,
		   enum smb_shm_origin origin);

/* Unmaps and closes (either may already be gone); *shm is empty after. */
void smb_shm_close(struct smb_shm *shm);

#endif
