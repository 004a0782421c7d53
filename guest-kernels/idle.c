/*
 * The default guest's /idle: an init that makes no system call and never
 * ends, so the guest's kernel keeps running and serving its devices (it
 * answers ping, for instance) with nothing to do in user space. Boot it
 * with rdinit=/idle (or init=/sbin/idle from the root disk).
 *
 * It exists for hosts where guest user space cannot make system calls (an
 * emulated KVM: the first one kills init and the kernel panics), and is as
 * useful on VT-x/AMD-V to keep a network test guest up. It spins with
 * PAUSE at CPL 3, where a vCPU runs natively, so it costs one host CPU.
 */
void _start(void)
{
	for (;;)
		__asm__ volatile("pause");
}
