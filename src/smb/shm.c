// SPDX-License-Identifier: Apache-2.0
// Shared memory for an SMB: sealed memfd creation, checked attach of a received fd, unmap and close, through a hook table.
#include "smb/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Seals an SMB must carry so its size can never change under a mapper. */
#define SMB_SHM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
/* Both sides map the whole SMB in at once (MAP_POPULATE): the first touch
 * of each page would otherwise be a page fault, in a writer's event (a
 * chunk change that cuts a fresh page) or in a lane's copy. An SMB is at
 * most 32 MiB (smb_shm_check_size) and is all used within one lap of its
 * writers, so this only moves the faults to set-up. */
#define SMB_SHM_MAP_FLAGS (MAP_SHARED | MAP_POPULATE)

static int smb_shm_sys_open(const char *path, int flags, mode_t mode)
{
	return open(path, flags, mode);
}

static int smb_shm_sys_add_seals(int fd, int seals)
{
	return fcntl(fd, F_ADD_SEALS, seals);
}

static int smb_shm_sys_get_seals(int fd)
{
	return fcntl(fd, F_GET_SEALS);
}

/* The real system calls. */
#define SMB_SHM_SYS_OPS {				\
	.memfd_create = memfd_create,			\
	.open = smb_shm_sys_open,			\
	.ftruncate = ftruncate,				\
	.add_seals = smb_shm_sys_add_seals,		\
	.get_seals = smb_shm_sys_get_seals,		\
	.fstat = fstat,					\
	.mmap = mmap,					\
	.munmap = munmap,				\
	.close = close,					\
}

/* The calls in use: the real ones unless a test replaced some. */
static struct smb_shm_ops smb_shm_ops = SMB_SHM_SYS_OPS;

void smb_shm_set_ops(const struct smb_shm_ops *ops)
{
	static const struct smb_shm_ops sys = SMB_SHM_SYS_OPS;
	struct smb_shm_ops *o = &smb_shm_ops;

	*o = sys;
	if (!ops)
		return;
#define SMB_SHM_TAKE(f) \
	do { if (ops->f) o->f = ops->f; } while (0)
	SMB_SHM_TAKE(memfd_create);
	SMB_SHM_TAKE(open);
	SMB_SHM_TAKE(ftruncate);
	SMB_SHM_TAKE(add_seals);
	SMB_SHM_TAKE(get_seals);
	SMB_SHM_TAKE(fstat);
	SMB_SHM_TAKE(mmap);
	SMB_SHM_TAKE(munmap);
	SMB_SHM_TAKE(close);
#undef SMB_SHM_TAKE
}

/* Records why a call failed in shm->err and returns err (a -errno). */
__attribute__((format(printf, 3, 4)))
static int smb_shm_fail(struct smb_shm *shm, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(shm->err, sizeof(shm->err), fmt, ap);
	va_end(ap);
	return err;
}

/* Text of errno value e (thread-safe). */
static const char *smb_shm_strerror(int e, char *buf, size_t len)
{
	return strerror_r(e, buf, len);
}

void smb_shm_init(struct smb_shm *shm)
{
	shm->fd = -1;
	memset(&shm->smb, 0, sizeof(shm->smb));
	shm->err[0] = '\0';
}

/* An unlinked, unnamed file for kernels without memfd_create. Returns the
 * fd or -1 with errno set (from the last directory tried). */
static int smb_shm_open_tmpfile(void)
{
	static const char *const dirs[] = { "/dev/shm", "/tmp" };
	size_t i;
	int fd = -1;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && fd < 0; i++)
		fd = smb_shm_ops.open(dirs[i], O_TMPFILE | O_EXCL | O_RDWR | O_CLOEXEC,
				      0600);
	return fd;
}

int smb_shm_create(struct smb_shm *shm, size_t size, uint32_t page_size)
{
	const char *step, *why;
	bool sealed = true;
	char ebuf[64];
	void *p;
	int fd, err;

	if (shm->fd >= 0 || shm->smb.base)
		return smb_shm_fail(shm, -EINVAL, "SMB create: this smb_shm is in use");
	if (spn_smb_check_geometry(size, page_size, &why) != 0)
		return smb_shm_fail(shm, -EINVAL,
				    "SMB create: %zu bytes with %u-byte pages: %s",
				    size, page_size, why);
	step = "memfd_create";
	fd = smb_shm_ops.memfd_create(SPN_SMB_MEMFD_NAME,
				      MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 && errno == ENOSYS) {
		step = "open(O_TMPFILE)";
		sealed = false;
		fd = smb_shm_open_tmpfile();
	}
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	step = "ftruncate";
	if (smb_shm_ops.ftruncate(fd, (off_t)size) != 0) {
		err = -errno;
		goto fail_close;
	}
	step = "fcntl(F_ADD_SEALS)";
	if (sealed && smb_shm_ops.add_seals(fd, SMB_SHM_SEALS) != 0) {
		err = -errno;
		goto fail_close;
	}
	step = "mmap";
	p = smb_shm_ops.mmap(NULL, size, PROT_READ | PROT_WRITE, SMB_SHM_MAP_FLAGS, fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		goto fail_close;
	}
	/* Cannot fail: the geometry passed and mmap returns page-aligned memory. */
	spn_smb_init(&shm->smb, p, size, page_size);
	shm->fd = fd;
	shm->err[0] = '\0';
	return 0;

fail_close:
	smb_shm_ops.close(fd);
fail:
	return smb_shm_fail(shm, err, "SMB create (%zu bytes): %s failed: %s",
			    size, step, smb_shm_strerror(-err, ebuf, sizeof(ebuf)));
}

/* Checks the seals of a producer's fd. Returns 0 or -EPERM / -errno. */
static int smb_shm_check_seals(struct smb_shm *shm, int fd)
{
	char ebuf[64];
	int seals = smb_shm_ops.get_seals(fd);

	if (seals < 0) {
		int e = errno;

		if (e == EINVAL)
			return smb_shm_fail(shm, -EPERM,
					    "producer SMB fd %d refused: it cannot carry seals "
					    "(not a memfd created with MFD_ALLOW_SEALING)", fd);
		return smb_shm_fail(shm, -e,
				    "producer SMB fd %d refused: F_GET_SEALS failed: %s",
				    fd, smb_shm_strerror(e, ebuf, sizeof(ebuf)));
	}
	if ((seals & SMB_SHM_SEALS) != SMB_SHM_SEALS)
		return smb_shm_fail(shm, -EPERM,
				    "producer SMB fd %d refused: seals 0x%x lack shrink, "
				    "grow and seal (0x%x); it could shrink under us",
				    fd, (unsigned)seals, (unsigned)SMB_SHM_SEALS);
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return smb_shm_fail(shm, -EPERM,
				    "producer SMB fd %d refused: it is write-sealed "
				    "(seals 0x%x)", fd, (unsigned)seals);
	return 0;
}

/* Checks the size of fd against the rules of `origin`. Returns 0 or -EINVAL. */
static int smb_shm_check_size(struct smb_shm *shm, int fd, off_t st_size,
			      uint32_t page_size, enum smb_shm_origin origin)
{
	uint32_t size, page;
	const char *why;

	if (st_size <= 0)
		return smb_shm_fail(shm, -EINVAL, "SMB fd %d refused: it is empty", fd);
	if (origin == SMB_SHM_FROM_PRODUCER) {
		if (!spn_smb_service_sizes((uint64_t)st_size, page_size, &size, &page) ||
		    size != (uint64_t)st_size || page != page_size)
			return smb_shm_fail(shm, -EINVAL,
					    "producer SMB fd %d refused: %lld bytes with "
					    "%u-byte pages is not a size the service accepts "
					    "(pages of 4, 8, 16 or 32 KiB, size a multiple of "
					    "the page, at most 32 MiB)",
					    fd, (long long)st_size, page_size);
		return 0;
	}
	if (spn_smb_check_geometry((uint64_t)st_size, page_size, &why) != 0)
		return smb_shm_fail(shm, -EINVAL,
				    "SMB fd %d refused: %lld bytes with %u-byte pages: %s",
				    fd, (long long)st_size, page_size, why);
	return 0;
}

int smb_shm_attach(struct smb_shm *shm, int fd, uint32_t page_size,
		   enum smb_shm_origin origin)
{
	char ebuf[64];
	struct stat st;
	void *p;
	int err;

	if (shm->fd >= 0 || shm->smb.base)
		return smb_shm_fail(shm, -EINVAL, "SMB attach: this smb_shm is in use");
	if (fd < 0)
		return smb_shm_fail(shm, -EBADF, "SMB attach: no fd (%d)", fd);
	if (smb_shm_ops.fstat(fd, &st) != 0) {
		err = errno;
		return smb_shm_fail(shm, -err, "SMB fd %d refused: fstat failed: %s",
				    fd, smb_shm_strerror(err, ebuf, sizeof(ebuf)));
	}
	if (!S_ISREG(st.st_mode))
		return smb_shm_fail(shm, -ENODEV,
				    "SMB fd %d refused: not a regular file (mode 0%o)",
				    fd, (unsigned)st.st_mode);
	if (origin == SMB_SHM_FROM_PRODUCER && (err = smb_shm_check_seals(shm, fd)) != 0)
		return err;
	if ((err = smb_shm_check_size(shm, fd, st.st_size, page_size, origin)) != 0)
		return err;
	p = smb_shm_ops.mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
			     SMB_SHM_MAP_FLAGS, fd, 0);
	if (p == MAP_FAILED) {
		err = errno;
		return smb_shm_fail(shm, -err, "SMB fd %d refused: mmap of %lld bytes "
				    "failed: %s", fd, (long long)st.st_size,
				    smb_shm_strerror(err, ebuf, sizeof(ebuf)));
	}
	/* Cannot fail: the size checks passed and mmap is page-aligned. */
	spn_smb_init(&shm->smb, p, (size_t)st.st_size, page_size);
	shm->fd = fd;
	shm->err[0] = '\0';
	return 0;
}

void smb_shm_close(struct smb_shm *shm)
{
	if (shm->smb.base)
		smb_shm_ops.munmap(shm->smb.base, shm->smb.size);
	if (shm->fd >= 0)
		smb_shm_ops.close(shm->fd);
	smb_shm_init(shm);
}
