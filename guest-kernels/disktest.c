/*
 * An init for the root-disk tests (on the root image as /sbin/disktest):
 * writes a file of known content on its root file system, fsyncs it and
 * ends the VM. With the argument "raw" (init=/sbin/disktest -- raw) it also
 * tries to write the first sector of the raw root device, /dev/vda: for a
 * read-only disk, where both must fail. Before the restart it remounts the
 * root read-only, as a shutdown does, so the file system is left clean.
 * Each step's result goes to the
 * console as a line "disktest: ...", errors as "error N" (the errno).
 *
 * Freestanding like init.c: gcc -static -nostdlib.
 */
#include "sys.h"

#define O_CREAT 0100
#define O_TRUNC 01000
#define MS_RDONLY 1
#define MS_REMOUNT 32

static const char path[] = "/written-by-guest.txt";
static const char content[] =
	"This file was written by the guest's init through virtio-blk.\n";

static void print(const char *s)
{
	write_str(1, s);
}

/* Prints "what: ok N" or "what: error N" for a system call's result. */
static void result(const char *what, long ret)
{
	char buf[24];
	int i = sizeof(buf);
	unsigned long v = ret < 0 ? -ret : ret;

	buf[--i] = 0;
	buf[--i] = '\n';
	do
		buf[--i] = '0' + v % 10;
	while ((v /= 10) && i > 0);
	print("disktest: ");
	print(what);
	print(ret < 0 ? ": error " : ": ok ");
	print(buf + i);
}

void start_c(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);
	long fd, ret;

	fd = syscall3(SYS_open, (long)path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	result("open /written-by-guest.txt", fd);
	if (fd >= 0) {
		result("write", syscall3(SYS_write, fd, (long)content, str_len(content)));
		result("fsync", syscall3(SYS_fsync, fd, 0, 0));
		syscall3(SYS_close, fd, 0, 0);
	}
	if (argc > 1 && argv[1][0] == 'r' && argv[1][1] == 'a' &&
	    argv[1][2] == 'w' && !argv[1][3]) {
		static char sector[512] = "written by disktest";
		fd = syscall3(SYS_open, (long)"/dev/vda", O_WRONLY, 0);
		result("open /dev/vda for writing", fd);
		if (fd >= 0) {
			ret = syscall4(SYS_pwrite64, fd, (long)sector, sizeof(sector), 0);
			result("write /dev/vda", ret);
			result("fsync /dev/vda", syscall3(SYS_fsync, fd, 0, 0));
			syscall3(SYS_close, fd, 0, 0);
		}
	}
	syscall3(SYS_sync, 0, 0, 0);
	result("remount / read-only",
	       syscall5(SYS_mount, 0, (long)"/", 0, MS_REMOUNT | MS_RDONLY, 0));
	print("disktest: done\n");
	restart();
	for (;;)
		__asm__ volatile("pause");
}

GUEST_ENTRY;
