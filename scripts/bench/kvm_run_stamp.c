/*
 * LD_PRELOAD shim for the boot benchmark. Writes to the file named by
 * $KVM_RUN_STAMP two CLOCK_MONOTONIC times: when the process started (the
 * shim's constructor, run by the dynamic loader right after exec, before the
 * program's own code) and when it first called ioctl(KVM_RUN). Works the
 * same for any VMM that calls glibc's ioctl(), so this VMM and QEMU are
 * measured identically and with no tracing overhead.
 *
 * The file is opened in the constructor, before the program runs: a VMM
 * with seccomp filters (this one's vCPU threads may not open files) makes
 * its first KVM_RUN under them, so the stamp itself is one write(2) of a
 * formatted buffer, which such filters allow, as users run the VMM.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define KVM_RUN 0xae80UL

static int stamped;
static int stamp_fd = -1;
static struct timespec started;

__attribute__((constructor)) static void stamp_start(void)
{
	const char *path = getenv("KVM_RUN_STAMP");

	clock_gettime(CLOCK_MONOTONIC, &started);
	if (path)
		stamp_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real_ioctl)(int, unsigned long, ...);
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real_ioctl)
		real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	if (request == KVM_RUN && !__atomic_exchange_n(&stamped, 1, __ATOMIC_SEQ_CST)) {
		struct timespec ts;
		char line[64];
		int n;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		n = snprintf(line, sizeof(line), "%ld.%09ld %ld.%09ld\n", (long)started.tv_sec,
			     started.tv_nsec, (long)ts.tv_sec, ts.tv_nsec);
		if (stamp_fd >= 0 && n > 0 && write(stamp_fd, line, (size_t)n) != n)
			stamp_fd = -1;
	}
	return real_ioctl(fd, request, arg);
}
