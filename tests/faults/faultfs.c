/* faultfs: an LD_PRELOAD library that makes write and sync calls on files
 * under one directory fail, switched on and off while the process runs.
 *
 *   FLEETHUB_FAULT_DIR   the directory (its files and itself are affected)
 *   FLEETHUB_FAULT_CTL   a control file; each call reads it, so a test turns
 *                        faults on and off by rewriting it. Words:
 *                          write=eio     write calls fail with EIO
 *                          write=enospc  write calls fail with ENOSPC
 *                          fsync=eio     fsync/fdatasync fail with EIO
 *                        empty or absent: no fault.
 *
 * Interposed: write, pwrite, pwrite64, writev, pwritev, fsync, fdatasync,
 * sync_file_range (SQLite writes with pwrite64 and syncs with fdatasync, and
 * fsync on the directory). A failing call does nothing. Each injected fault
 * is counted in FLEETHUB_FAULT_CTL.count (one line, the running total) so
 * a test can see that its faults were really hit.
 *
 * Works beside AddressSanitizer: ASan's own interceptors for write and
 * pwrite come after this library in the lookup order and are reached
 * through dlsym(RTLD_NEXT). Set ASAN_OPTIONS=verify_asan_link_order=0 when
 * preloading into a sanitizer build. Test code only: never part of the
 * server. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum fault_kind { FAULT_WRITE, FAULT_SYNC };

static pthread_mutex_t count_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long injected;

/* The next definition of name (libc's, or a sanitizer's interceptor). */
static void *next_fn(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f)
		abort();
	return f;
}

#define NEXT(type, name) ((type)next_fn(#name))

/* The errno to inject for a call of kind on fd, or 0. Uses only raw
 * system calls that are not interposed here (open, read, readlink). */
static int fault_for(int fd, enum fault_kind kind)
{
	const char *dir = getenv("FLEETHUB_FAULT_DIR");
	const char *ctl = getenv("FLEETHUB_FAULT_CTL");
	if (!dir || !*dir || !ctl || !*ctl || fd < 0)
		return 0;
	char words[256];
	int cfd = open(ctl, O_RDONLY | O_CLOEXEC);
	if (cfd < 0)
		return 0;
	ssize_t n = read(cfd, words, sizeof words - 1);
	close(cfd);
	if (n <= 0)
		return 0;
	words[n] = 0;
	int err = 0;
	if (kind == FAULT_WRITE && strstr(words, "write=eio"))
		err = EIO;
	else if (kind == FAULT_WRITE && strstr(words, "write=enospc"))
		err = ENOSPC;
	else if (kind == FAULT_SYNC && strstr(words, "fsync=eio"))
		err = EIO;
	if (!err)
		return 0;

	char link[64], target[PATH_MAX];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t len = readlink(link, target, sizeof target - 1);
	if (len <= 0)
		return 0;
	target[len] = 0;
	size_t dlen = strlen(dir);
	while (dlen > 1 && dir[dlen - 1] == '/')
		dlen--;
	if (strncmp(target, dir, dlen) != 0 || (target[dlen] != 0 && target[dlen] != '/'))
		return 0;

	pthread_mutex_lock(&count_mu);
	unsigned long total = ++injected;
	char path[PATH_MAX + 8], line[32];
	snprintf(path, sizeof path, "%s.count", ctl);
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out >= 0) {
		int m = snprintf(line, sizeof line, "%lu\n", total);
		ssize_t (*w)(int, const void *, size_t) = NEXT(ssize_t(*)(int, const void *, size_t), write);
		if (w(out, line, (size_t)m) < 0)
			line[0] = 0; /* the count is best effort */
		close(out);
	}
	pthread_mutex_unlock(&count_mu);
	return err;
}

#define FAIL_IF(fd, kind)                                                                  \
	do {                                                                               \
		int e_ = fault_for((fd), (kind));                                          \
		if (e_) {                                                                  \
			errno = e_;                                                        \
			return -1;                                                         \
		}                                                                          \
	} while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
	FAIL_IF(fd, FAULT_WRITE);
	return NEXT(ssize_t(*)(int, const void *, size_t), write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	FAIL_IF(fd, FAULT_WRITE);
	return NEXT(ssize_t(*)(int, const void *, size_t, off_t), pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	FAIL_IF(fd, FAULT_WRITE);
	return NEXT(ssize_t(*)(int, const void *, size_t, off64_t), pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	FAIL_IF(fd, FAULT_WRITE);
	return NEXT(ssize_t(*)(int, const struct iovec *, int), writev)(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	FAIL_IF(fd, FAULT_WRITE);
	return NEXT(ssize_t(*)(int, const struct iovec *, int, off_t), pwritev)(fd, iov, cnt, off);
}

int fsync(int fd)
{
	FAIL_IF(fd, FAULT_SYNC);
	return NEXT(int (*)(int), fsync)(fd);
}

int fdatasync(int fd)
{
	FAIL_IF(fd, FAULT_SYNC);
	return NEXT(int (*)(int), fdatasync)(fd);
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
	FAIL_IF(fd, FAULT_SYNC);
	return NEXT(int (*)(int, off64_t, off64_t, unsigned int), sync_file_range)(fd, off, n,
										    flags);
}
