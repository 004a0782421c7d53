/*
 * LD_PRELOAD shim for the boot benchmark. Writes to the file named by
 * $KVM_RUN_STAMP two CLOCK_MONOTONIC times: when the process started (the
 * shim's constructor, run by the dynamic loader right after exec, before the
 * program's own code) and when it first called ioctl(KVM_RUN). Works the
 * same for any VMM that calls glibc's ioctl(), so this VMM and QEMU are
 * measured identically and with no tracing overhead.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KVM_RUN 0xae80UL

static int stamped;
static struct timespec started;

__attribute__((constructor)) static void stamp_start(void)
{
	clock_gettime(CLOCK_MONOTONIC, &started);
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
		const char *path = getenv("KVM_RUN_STAMP");
		FILE *f;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (path && (f = fopen(path, "w"))) {
			fprintf(f, "%ld.%09ld %ld.%09ld\n", (long)started.tv_sec,
				started.tv_nsec, (long)ts.tv_sec, ts.tv_nsec);
			fclose(f);
		}
	}
	return real_ioctl(fd, request, arg);
}
