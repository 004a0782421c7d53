/*
 * System calls for the freestanding guest programs (built with gcc -static
 * -nostdlib, no libc): the x86-64 numbers they use and the call itself.
 */
#ifndef VMM_GUEST_SYS_H
#define VMM_GUEST_SYS_H

#define SYS_rt_sigaction 13
#define SYS_read 0
#define SYS_write 1
#define SYS_ioctl 16
#define SYS_open 2
#define SYS_close 3
#define SYS_dup2 33
#define SYS_socket 41
#define SYS_pwrite64 18
#define SYS_getpid 39
#define SYS_clone 56
#define SYS_execve 59
#define SYS_exit 60
#define SYS_wait4 61
#define SYS_fsync 74
#define SYS_mount 165
#define SYS_sync 162
#define SYS_reboot 169
#define SYS_sethostname 170
#define SYS_ioperm 173
#define SYS_syslog 103
#define SYS_chdir 80
#define SYS_mkdir 83
#define SYS_setuid 105
#define SYS_setgid 106
#define SYS_setgroups 116
#define SYS_chroot 161
#define SYS_nanosleep 35
#define SYS_kill 62
#define SYS_setsid 112
#define SYS_setrlimit 160
#define SYS_umount2 166
#define SYS_mknod 133

#define TCSBRK 0x5409
#define TIOCSCTTY 0x540E
#define WNOHANG 1
#define MS_RDONLY 1
#define MS_REMOUNT 32
#define SIOCGIFFLAGS 0x8913
#define SIOCSIFFLAGS 0x8914
#define IFF_UP 0x1
#define AF_INET 2
#define SOCK_DGRAM 2
#define O_RDONLY 0
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
#define MS_NOSUID 2
#define MS_NODEV 4
#define MS_NOEXEC 8
#define MS_BIND 4096
#define MS_MOVE 8192
#define MS_REC 16384

#define ENOENT 2
#define EINTR 4
#define EEXIST 17
#define ENOTDIR 20
#define ENAMETOOLONG 36
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17

#define LINUX_REBOOT_MAGIC1 0xfee1deadL
#define LINUX_REBOOT_MAGIC2 672274793L
#define LINUX_REBOOT_CMD_RESTART 0x01234567L

static inline long syscall5(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline long syscall4(long nr, long a, long b, long c, long d)
{
	return syscall5(nr, a, b, c, d, 0);
}

static inline long syscall3(long nr, long a, long b, long c)
{
	return syscall4(nr, a, b, c, 0);
}

/* The length of a NUL-terminated string. */
static inline unsigned long str_len(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

/* Writes a NUL-terminated string to file descriptor fd. */
static inline void write_str(int fd, const char *s)
{
	syscall3(SYS_write, fd, (long)s, str_len(s));
}

/* Ends the VM: a restart, which the kernel performs with an i8042 reset
 * (reboot=k) and the VMM turns into its own exit with status 0. */
static inline void restart(void)
{
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		 LINUX_REBOOT_CMD_RESTART, 0);
}

/* The entry point: hands the initial stack (argc, argv..., 0, envp..., 0)
 * to start_c, with the stack aligned as the ABI wants for a call. */
#define GUEST_ENTRY                                                            \
	__asm__(".globl _start\n"                                              \
		"_start:\n"                                                    \
		"	mov %rsp, %rdi\n"                                      \
		"	and $-16, %rsp\n"                                      \
		"	call start_c\n"                                        \
		"	hlt\n")

#endif
