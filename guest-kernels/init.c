/*
 * The default guest's /init: tells the VMM it is running, greets on the
 * console and ends the VM.
 *
 * Freestanding (no libc): built with gcc -static -nostdlib, so the initramfs
 * needs nothing else. A microVM has no ACPI, so the VM is ended the way
 * Firecracker guests end it: a restart, which the kernel performs with an
 * i8042 reset (reboot=k) and the VMM turns into its own exit with status 0.
 *
 * The same binary is the container's init in `vmm bench`. There, without
 * the VMM's VMM_BOOT_TIMER parameter (and a hypervisor's CPUID bit), it
 * touches no port, and its restart
 * request, made only as PID 1 of its own PID namespace, ends that
 * namespace, not the host.
 */
#include "sys.h"

/* The boot timer's value (devices/src/boot_timer.rs). */
#define BOOT_TIMER_MAGIC 123

static const char greeting[] =
	"Hello from the guest: init is running in user space on its own kernel.\n";

/* The port in "VMM_BOOT_TIMER=0x440", or 0 if `env` is something else. */
static unsigned long boot_timer_port(const char *env)
{
	static const char key[] = "VMM_BOOT_TIMER=0x";
	unsigned long port = 0;
	unsigned i;

	for (i = 0; key[i]; i++)
		if (env[i] != key[i])
			return 0;
	for (env += i; *env; env++) {
		char c = *env;
		unsigned d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return 0;
		port = port * 16 + d;
		if (port > 0xffff)
			return 0;
	}
	return port;
}

/* Whether CPUID says we run under a hypervisor (leaf 1, ECX bit 31): a
 * second guard, after the VMM's parameter, before touching a port. */
static int under_hypervisor(void)
{
	unsigned a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return (c >> 31) & 1;
}

/* Called from _start with the initial stack: argc, argv..., 0, envp..., 0. */
void start_c(long *stack)
{
	long argc = stack[0];
	char **envp = (char **)(stack + 1 + argc + 1);
	unsigned long port = 0;

	for (; *envp && !port; envp++)
		port = boot_timer_port(*envp);
	/* Mark "init reached" first thing: the VMM's boot timer. */
	if (port && under_hypervisor() && syscall3(SYS_ioperm, port, 1, 1) == 0) {
		unsigned char v = BOOT_TIMER_MAGIC;
		__asm__ volatile("outb %0, %w1" : : "a"(v), "Nd"((unsigned short)port));
	}
	syscall3(SYS_write, 1, (long)greeting, sizeof(greeting) - 1);
	syscall3(SYS_sync, 0, 0, 0);
	if (syscall3(SYS_getpid, 0, 0, 0) == 1)
		restart();
	for (;;)
		__asm__ volatile("pause");
}

GUEST_ENTRY;
