// SPDX-License-Identifier: Apache-2.0
// Unit tests of SMB shared memory: sealed memfd creation, attach checks for every refused fd, and every failing system call (through the hook table) leaving nothing open or mapped.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smb/shm.h"

#define ALL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* Open fds of this process (entries of /proc/self/fd, minus the dir's own). */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Shared mappings of this process (lines of /proc/self/maps whose
 * permissions end in 's'): every SMB mapping is one, while the private
 * ones come and go with the sanitizers' runtimes (TSan maps its shadow
 * lazily). */
static int mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512], perms[8];
	bool start = true;	/* line holds the start of a maps line */
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		/* A path longer than the buffer comes in more pieces. */
		if (start && sscanf(line, "%*s %7s", perms) == 1 && perms[3] == 's')
			n++;
		start = strchr(line, '\n') != NULL;
	}
	fclose(f);
	return n;
}

/* Resident kB of the mapping that starts at base (its Rss in
 * /proc/self/smaps: pages present in this process's page tables). */
static long resident_kb(const void *base)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], start[32];
	bool in = false;
	long kb = -1;

	assert_non_null(f);
	snprintf(start, sizeof(start), "%lx-", (unsigned long)(uintptr_t)base);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' '))
			in = strncmp(line, start, strlen(start)) == 0;
		else if (in && sscanf(line, "Rss: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* A memfd of `size` bytes with `seals` added (-1: created without
 * MFD_ALLOW_SEALING). */
static int make_memfd(off_t size, int seals)
{
	int fd = memfd_create("test_smb", MFD_CLOEXEC |
					  (seals >= 0 ? MFD_ALLOW_SEALING : 0));

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	if (seals > 0)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

/* Attach must refuse fd with `err`, leave it open and *shm empty, and say
 * something. */
static void expect_refused(int fd, uint32_t page, enum smb_shm_origin origin, int err,
			   const char *word)
{
	struct smb_shm shm;
	int fds = open_fds(), maps = mappings();
	bool was_open = fd >= 0 && fd_is_open(fd);

	smb_shm_init(&shm);
	assert_int_equal(smb_shm_attach(&shm, fd, page, origin), err);
	assert_int_equal(shm.fd, -1);
	assert_null(shm.smb.base);
	assert_true(strlen(shm.err) > 0);
	if (word && !strstr(shm.err, word))
		fail_msg("error \"%s\" does not mention \"%s\"", shm.err, word);
	assert_true(fd < 0 || fd_is_open(fd) == was_open);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(mappings(), maps);
}

/* ---- Real system calls ------------------------------------------------------ */

static void test_create(void **state)
{
	struct smb_shm a, b;
	char link[64], target[256];
	struct stat st;
	ssize_t n;
	int fds = open_fds(), maps = mappings();

	(void)state;
	smb_shm_init(&a);
	assert_int_equal(smb_shm_create(&a, SPN_SMB_DEFAULT_SIZE, 4096), 0);
	assert_string_equal(a.err, "");
	assert_true(a.fd >= 0);
	assert_non_null(a.smb.base);
	assert_int_equal(a.smb.size, 262144);
	assert_int_equal(a.smb.num_pages, 64);
	assert_int_equal((uintptr_t)a.smb.base % 4096, 0);
	assert_int_equal(fcntl(a.fd, F_GET_SEALS), ALL_SEALS);
	assert_true(fcntl(a.fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fstat(a.fd, &st), 0);
	assert_int_equal(st.st_size, 262144);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", a.fd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_non_null(strstr(target, "memfd:perfetto_shmem"));
	/* Mapped in whole: no writer or lane takes a page fault on it. */
	assert_int_equal(resident_kb(a.smb.base), 256);
	/* The seals hold: the size cannot change. */
	assert_int_equal(ftruncate(a.fd, 4096), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(a.fd, 1 << 20), -1);
	assert_int_equal(fcntl(a.fd, F_ADD_SEALS, F_SEAL_WRITE), -1);

	/* All zero, and shared: the producer's view of the same fd. */
	assert_int_equal(a.smb.base[0], 0);
	assert_int_equal(a.smb.base[262143], 0);
	smb_shm_init(&b);
	assert_int_equal(smb_shm_attach(&b, dup(a.fd), 4096, SMB_SHM_FROM_SERVICE), 0);
	assert_true(b.smb.base != a.smb.base);
	assert_int_equal(spn_smb_try_partition(&b.smb, 63, SPN_SMB_PAGE_DIV7), 0);
	assert_int_equal(spn_smb_page_load(&a.smb, 63, memory_order_acquire),
			 SPN_SMB_PAGE_DIV7 << 28);
	/* ... and the service's view of it, seals checked. */
	smb_shm_close(&b);
	assert_int_equal(smb_shm_attach(&b, dup(a.fd), 4096, SMB_SHM_FROM_PRODUCER), 0);
	assert_int_equal(spn_smb_page_load(&b.smb, 63, memory_order_acquire),
			 SPN_SMB_PAGE_DIV7 << 28);
	smb_shm_close(&b);
	smb_shm_close(&a);
	assert_int_equal(a.fd, -1);
	assert_null(a.smb.base);
	smb_shm_close(&a); /* again: nothing to do */
	assert_int_equal(open_fds(), fds);
	assert_int_equal(mappings(), maps);

	/* Other geometries, up to the limits. */
	assert_int_equal(smb_shm_create(&a, 33554432, 32768), 0);
	assert_int_equal(a.smb.num_pages, 1024);
	smb_shm_close(&a);
	assert_int_equal(smb_shm_create(&a, 65536, 65536), 0);
	assert_int_equal(a.smb.chunk_size[SPN_SMB_PAGE_DIV1], 65528);
	/* In use. */
	assert_int_equal(smb_shm_create(&a, 65536, 65536), -EINVAL);
	assert_int_equal(smb_shm_attach(&a, 0, 4096, SMB_SHM_FROM_SERVICE), -EINVAL);
	smb_shm_close(&a);
	assert_int_equal(open_fds(), fds);
}

static void test_create_bad_geometry(void **state)
{
	static const struct {
		size_t size;
		uint32_t page;
	} bad[] = {
		{ 262144, 2048 }, { 262144, 131072 }, { 262144, 5000 },
		{ 4096, 8192 },	  { 33554432 + 4096, 4096 }, { 10000, 4096 }, { 0, 4096 },
	};
	struct smb_shm shm;
	int fds = open_fds();
	size_t i;

	(void)state;
	smb_shm_init(&shm);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(smb_shm_create(&shm, bad[i].size, bad[i].page), -EINVAL);
		assert_int_equal(shm.fd, -1);
		assert_non_null(strstr(shm.err, "SMB create"));
	}
	assert_int_equal(open_fds(), fds);
}

/* Producer-provided SMBs (startup tracing): what the service accepts. */
static void test_attach_producer_accepted(void **state)
{
	static const struct {
		off_t size;
		uint32_t page;
	} good[] = {
		{ 262144, 4096 }, { 262144, 8192 }, { 262144, 32768 },
		{ 4096, 4096 },	  { 3 * 16384, 16384 }, { 33554432, 4096 },
	};
	struct smb_shm shm;
	size_t i;
	int fds = open_fds();

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int fd = make_memfd(good[i].size, ALL_SEALS);

		smb_shm_init(&shm);
		assert_int_equal(smb_shm_attach(&shm, fd, good[i].page,
						SMB_SHM_FROM_PRODUCER), 0);
		assert_int_equal(shm.fd, fd);
		assert_int_equal(shm.smb.size, (size_t)good[i].size);
		assert_int_equal(shm.smb.page_size, good[i].page);
		smb_shm_close(&shm);
		assert_false(fd_is_open(fd));
	}
	assert_int_equal(open_fds(), fds);
}

/* Every kind of fd the service must refuse from a producer. */
static void test_attach_producer_refused(void **state)
{
	char dir[] = "/tmp/smb_shm_test.XXXXXX", path[128];
	int fd, pfd[2], sv[2];

	(void)state;
	/* No seals at all. */
	fd = make_memfd(262144, 0);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seals");
	close(fd);
	/* Created without MFD_ALLOW_SEALING: it can never be sealed. */
	fd = make_memfd(262144, -1);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seal");
	close(fd);
	/* Each required seal missing in turn. */
	fd = make_memfd(262144, F_SEAL_SHRINK | F_SEAL_GROW);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seals");
	close(fd);
	fd = make_memfd(262144, F_SEAL_SHRINK | F_SEAL_SEAL);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seals");
	close(fd);
	fd = make_memfd(262144, F_SEAL_GROW | F_SEAL_SEAL);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seals");
	close(fd);
	/* Write-sealed: we could not write the chunk states. */
	fd = make_memfd(262144, ALL_SEALS | F_SEAL_WRITE);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "write-sealed");
	close(fd);
	fd = make_memfd(262144, ALL_SEALS | F_SEAL_FUTURE_WRITE);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "write-sealed");
	close(fd);
	/* Sealed, but a size the service does not accept. */
	fd = make_memfd(0, ALL_SEALS);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EINVAL, "empty");
	close(fd);
	fd = make_memfd(5000, ALL_SEALS);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EINVAL, "5000 bytes");
	close(fd);
	fd = make_memfd(64 << 20, ALL_SEALS);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EINVAL, "32 MiB");
	close(fd);
	fd = make_memfd(4096, ALL_SEALS);
	expect_refused(fd, 8192, SMB_SHM_FROM_PRODUCER, -EINVAL, "8192-byte pages");
	close(fd);
	/* Sealed, good size, but a page size the service does not accept. */
	fd = make_memfd(262144, ALL_SEALS);
	expect_refused(fd, 0, SMB_SHM_FROM_PRODUCER, -EINVAL, "0-byte pages");
	expect_refused(fd, 65536, SMB_SHM_FROM_PRODUCER, -EINVAL, "65536");
	expect_refused(fd, 2048, SMB_SHM_FROM_PRODUCER, -EINVAL, "2048");
	close(fd);
	fd = make_memfd(3 * 12288, ALL_SEALS);
	expect_refused(fd, 12288, SMB_SHM_FROM_PRODUCER, -EINVAL, "12288");
	close(fd);
	/* Sealed and valid, but opened read-only: mmap for writing fails. */
	fd = make_memfd(262144, ALL_SEALS);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	pfd[0] = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(pfd[0] >= 0);
	expect_refused(pfd[0], 4096, SMB_SHM_FROM_PRODUCER, -EACCES, "mmap");
	close(pfd[0]);
	close(fd);
	/* Not shared memory at all. */
	assert_int_equal(pipe(pfd), 0);
	expect_refused(pfd[0], 4096, SMB_SHM_FROM_PRODUCER, -ENODEV, "regular file");
	close(pfd[0]);
	close(pfd[1]);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	expect_refused(sv[0], 4096, SMB_SHM_FROM_PRODUCER, -ENODEV, "regular file");
	close(sv[0]);
	close(sv[1]);
	/* A plain file (on disk): it cannot carry seals. */
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/smb", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 262144), 0);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seal");
	close(fd);
	unlink(path);
	rmdir(dir);
	/* No fd, or a closed one. */
	expect_refused(-1, 4096, SMB_SHM_FROM_PRODUCER, -EBADF, "no fd");
	fd = make_memfd(4096, ALL_SEALS);
	close(fd);
	expect_refused(fd, 4096, SMB_SHM_FROM_PRODUCER, -EBADF, "fstat");
}

/* The service's SMB as a producer attaches it: no seal check, ABI sizes. */
static void test_attach_from_service(void **state)
{
	struct smb_shm shm;
	int fd;

	(void)state;
	fd = make_memfd(262144, 0); /* unsealed is fine here */
	smb_shm_init(&shm);
	assert_int_equal(smb_shm_attach(&shm, fd, 4096, SMB_SHM_FROM_SERVICE), 0);
	/* Mapped in whole, though nobody has touched the memfd yet. */
	assert_int_equal(resident_kb(shm.smb.base), 256);
	smb_shm_close(&shm);
	fd = make_memfd(3 * 12288, 0); /* ABI page size the service never picks */
	assert_int_equal(smb_shm_attach(&shm, fd, 12288, SMB_SHM_FROM_SERVICE), 0);
	assert_int_equal(shm.smb.num_pages, 3);
	smb_shm_close(&shm);
	fd = make_memfd(131072, 0);
	assert_int_equal(smb_shm_attach(&shm, fd, 65536, SMB_SHM_FROM_SERVICE), 0);
	smb_shm_close(&shm);

	fd = make_memfd(5000, 0);
	expect_refused(fd, 4096, SMB_SHM_FROM_SERVICE, -EINVAL, "multiple of the page");
	expect_refused(fd, 3000, SMB_SHM_FROM_SERVICE, -EINVAL, "page size");
	close(fd);
	fd = make_memfd(0, 0);
	expect_refused(fd, 4096, SMB_SHM_FROM_SERVICE, -EINVAL, "empty");
	close(fd);
	fd = make_memfd(64 << 20, 0);
	expect_refused(fd, 4096, SMB_SHM_FROM_SERVICE, -EINVAL, "32 MiB");
	close(fd);
}

/* ---- Failing system calls ---------------------------------------------------- */

/* Which hooked call fails next, and how. */
static struct {
	int countdown;	/* fail the call that brings this to 0 (<= 0: none) */
	int err;	/* errno it fails with */
	int memfd_enosys; /* memfd_create always fails with ENOSYS */
	int open_err;	/* when set, every open() fails with it */
	int calls;	/* hooked calls made */
	int opened;	/* fds the hooks opened */
	int closed;	/* fds the hooks closed */
	int mapped;	/* mappings the hooks made */
	int unmapped;	/* mappings the hooks removed */
} hk;

/* True when the current call must fail (errno set). */
static bool hk_fail(void)
{
	hk.calls++;
	if (hk.countdown > 0 && --hk.countdown == 0) {
		errno = hk.err;
		return true;
	}
	return false;
}

static int hk_memfd_create(const char *name, unsigned int flags)
{
	int fd;

	if (hk.memfd_enosys) {
		hk.calls++;
		errno = ENOSYS;
		return -1;
	}
	if (hk_fail())
		return -1;
	fd = memfd_create(name, flags);
	hk.opened += fd >= 0;
	return fd;
}

static int hk_open(const char *path, int flags, mode_t mode)
{
	int fd;

	if (hk.open_err) {
		hk.calls++;
		errno = hk.open_err;
		return -1;
	}
	if (hk_fail())
		return -1;
	fd = open(path, flags, mode);
	hk.opened += fd >= 0;
	return fd;
}

static int hk_ftruncate(int fd, off_t len)
{
	return hk_fail() ? -1 : ftruncate(fd, len);
}

static int hk_add_seals(int fd, int seals)
{
	return hk_fail() ? -1 : fcntl(fd, F_ADD_SEALS, seals);
}

static int hk_get_seals(int fd)
{
	return hk_fail() ? -1 : fcntl(fd, F_GET_SEALS);
}

static int hk_fstat(int fd, struct stat *st)
{
	return hk_fail() ? -1 : fstat(fd, st);
}

static void *hk_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p;

	if (hk_fail())
		return MAP_FAILED;
	p = mmap(addr, len, prot, flags, fd, off);
	hk.mapped += p != MAP_FAILED;
	return p;
}

static int hk_munmap(void *addr, size_t len)
{
	hk.unmapped++;
	return munmap(addr, len);
}

static int hk_close(int fd)
{
	hk.closed++;
	return close(fd);
}

static const struct smb_shm_ops hk_ops = {
	.memfd_create = hk_memfd_create,
	.open = hk_open,
	.ftruncate = hk_ftruncate,
	.add_seals = hk_add_seals,
	.get_seals = hk_get_seals,
	.fstat = hk_fstat,
	.mmap = hk_mmap,
	.munmap = hk_munmap,
	.close = hk_close,
};

static int hooks_on(void **state)
{
	(void)state;
	memset(&hk, 0, sizeof(hk));
	smb_shm_set_ops(&hk_ops);
	return 0;
}

static int hooks_off(void **state)
{
	(void)state;
	smb_shm_set_ops(NULL);
	return 0;
}

/* Create with the n-th system call failing, for every n: an error from
 * the failing call, a message naming it, nothing open or mapped after. */
static void test_create_each_call_fails(void **state)
{
	static const int errs[] = { EMFILE, ENOSPC, EPERM, ENOMEM };
	static const char *const steps[] = { "memfd_create", "ftruncate",
					     "F_ADD_SEALS", "mmap" };
	struct smb_shm shm;
	int n, fds = open_fds(), maps = mappings();

	(void)state;
	smb_shm_init(&shm);
	for (n = 1;; n++) {
		int r;

		memset(&hk, 0, sizeof(hk));
		hk.countdown = n;
		hk.err = errs[(n - 1) % 4];
		r = smb_shm_create(&shm, 262144, 4096);
		if (r == 0) {
			/* Past the last call: every call ran and none failed. */
			assert_int_equal(n, 5);
			assert_int_equal(hk.calls, 4);
			smb_shm_close(&shm);
			break;
		}
		assert_int_equal(r, -hk.err);
		if (!strstr(shm.err, steps[n - 1]))
			fail_msg("error \"%s\" does not name %s", shm.err, steps[n - 1]);
		assert_int_equal(shm.fd, -1);
		assert_null(shm.smb.base);
		assert_int_equal(hk.opened, hk.closed);
		assert_int_equal(hk.mapped, hk.unmapped);
		assert_int_equal(open_fds(), fds);
		assert_int_equal(mappings(), maps);
	}
	assert_int_equal(hk.opened, hk.closed);
	assert_int_equal(hk.mapped, hk.unmapped);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(mappings(), maps);
}

/* No memfd_create in the kernel: an unlinked O_TMPFILE, unsealed, which a
 * producer may map but the service would refuse as a producer SMB. */
static void test_create_without_memfd(void **state)
{
	struct smb_shm shm, peer;
	int fds = open_fds();

	(void)state;
	hk.memfd_enosys = 1;
	smb_shm_init(&shm);
	assert_int_equal(smb_shm_create(&shm, 262144, 4096), 0);
	assert_int_equal(hk.opened, 1);
	assert_int_equal(fcntl(shm.fd, F_GET_SEALS) & ALL_SEALS, F_SEAL_SEAL);
	smb_shm_init(&peer);
	assert_int_equal(smb_shm_attach(&peer, dup(shm.fd), 4096, SMB_SHM_FROM_SERVICE), 0);
	smb_shm_close(&peer);
	expect_refused(shm.fd, 4096, SMB_SHM_FROM_PRODUCER, -EPERM, "seals");
	smb_shm_close(&shm);

	/* And when the fallback fails too: open's error, nothing left. */
	memset(&hk, 0, sizeof(hk));
	hk.memfd_enosys = 1;
	hk.open_err = EROFS;
	assert_int_equal(smb_shm_create(&shm, 262144, 4096), -EROFS);
	assert_non_null(strstr(shm.err, "O_TMPFILE"));
	assert_int_equal(hk.opened, hk.closed);
	assert_int_equal(open_fds(), fds);
}

/* Attach with each system call failing: fstat, F_GET_SEALS, mmap. The fd
 * stays the caller's and open; nothing is mapped. */
static void test_attach_each_call_fails(void **state)
{
	static const char *const steps[] = { "fstat", "F_GET_SEALS", "mmap" };
	struct smb_shm shm;
	int n, fd = make_memfd(262144, ALL_SEALS), maps = mappings();

	(void)state;
	smb_shm_init(&shm);
	for (n = 1;; n++) {
		int r;

		memset(&hk, 0, sizeof(hk));
		hk.countdown = n;
		hk.err = EIO;
		r = smb_shm_attach(&shm, fd, 4096, SMB_SHM_FROM_PRODUCER);
		if (r == 0) {
			assert_int_equal(n, 4);
			break;
		}
		assert_int_equal(r, -EIO);
		if (!strstr(shm.err, steps[n - 1]))
			fail_msg("error \"%s\" does not name %s", shm.err, steps[n - 1]);
		assert_true(fd_is_open(fd));
		assert_int_equal(hk.closed, 0);
		assert_int_equal(hk.mapped, 0);
		assert_int_equal(mappings(), maps);
	}
	/* Attached: close unmaps once and closes the fd once. */
	memset(&hk, 0, sizeof(hk));
	smb_shm_close(&shm);
	assert_int_equal(hk.unmapped, 1);
	assert_int_equal(hk.closed, 1);
	assert_false(fd_is_open(fd));
	assert_int_equal(mappings(), maps);
	smb_shm_close(&shm);
	assert_int_equal(hk.unmapped, 1);
	assert_int_equal(hk.closed, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_bad_geometry),
		cmocka_unit_test(test_attach_producer_accepted),
		cmocka_unit_test(test_attach_producer_refused),
		cmocka_unit_test(test_attach_from_service),
		cmocka_unit_test_setup_teardown(test_create_each_call_fails, hooks_on,
						hooks_off),
		cmocka_unit_test_setup_teardown(test_create_without_memfd, hooks_on,
						hooks_off),
		cmocka_unit_test_setup_teardown(test_attach_each_call_fails, hooks_on,
						hooks_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
