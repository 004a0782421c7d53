/*
 * The default guest's /init: greets on the console and ends the VM.
 *
 * Freestanding (no libc): built with gcc -static -nostdlib, so the initramfs
 * needs nothing else. A microVM has no ACPI, so the VM is ended the way
 * Firecracker guests end it: a restart, which the kernel performs with an
 * i8042 reset (reboot=k) and the VMM turns into its own exit with status 0.
 */
#define SYS_write 1
#define SYS_sync 162
#define SYS_reboot 169

#define LINUX_REBOOT_MAGIC1 0xfee1deadL
#define LINUX_REBOOT_MAGIC2 672274793L
#define LINUX_REBOOT_CMD_RESTART 0x01234567L

static long syscall3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

static long syscall4(long nr, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static const char greeting[] =
	"Hello from the guest: init is running in user space on its own kernel.\n";

void _start(void)
{
	syscall3(SYS_write, 1, (long)greeting, sizeof(greeting) - 1);
	syscall3(SYS_sync, 0, 0, 0);
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		 LINUX_REBOOT_CMD_RESTART, 0);
	for (;;)
		__asm__ volatile("pause");
}
