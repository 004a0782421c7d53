/*
 * The default guest's /init (and the root disk's /sbin/init).
 *
 * As PID 1 of a VM it tells the VMM it is running (the boot timer), mounts
 * /proc, /sys, /dev (devtmpfs) and /tmp, sets the hostname, greets on the
 * console, and then:
 *   - with a command from the VMM (`vmm run -- COMMAND`, the VMM_CMD
 *     parameter), runs it with the console as its stdin, stdout and stderr,
 *     waits for it, and reports its exit status (or 128 + the signal that
 *     killed it; 127 if it cannot be found, 126 if it cannot be run) on the
 *     VMM's exit device, which ends the VM with that status;
 *   - with VMM_COMMAND_PORT=0x448 and no VMM_CMD (`vmm template create`:
 *     the VM becomes a template once init is ready), says "ready" on the
 *     VMM's command device (devices/src/command.rs) and polls it until a
 *     command is there: the VMM snapshots the VM in that poll, and each
 *     VM restored from it (`vmm run --from DIR -- COMMAND`) finds its own
 *     command at the next read, runs it as it would VMM_CMD's and reports
 *     its status the same way;
 *   - with VMM_SHELL=1 (the VMM adds it when `vmm run` has no command and
 *     its stdin is a terminal), runs a login-free shell on the console
 *     (busybox: setsid cttyhack sh, so that it has job control); when the
 *     shell ends (Ctrl-D, `exit`) the VM ends, exit code 0;
 *   - with VMM_IMAGE=1 (`vmm run --image`: init is /vmm/init on a disk
 *     made from a container image), reads what to run from /vmm/run (the
 *     VMM writes it into the VM's overlay over the disk: argv, environment,
 *     uid, gid, groups, working directory), makes the image's files under
 *     /rootfs the root, mounts /proc, /sys, /dev (with /dev/pts and
 *     /dev/shm) and /tmp there, writes /etc/resolv.conf when the kernel got
 *     an address by DHCP (ip=dhcp), and runs the command as that user in
 *     that directory with that environment, its PATH searched; the status
 *     is reported as for a command. With VMM_COMMAND_PORT too (`vmm
 *     template create --image`, and `vmm-runtime`'s containers), the
 *     command is the command device's, run the same way (the image's
 *     environment, user and directory), and while it runs init polls the
 *     device's signal register and sends what the VMM queued there
 *     (`vmm-runtime kill`) to the command or to every process. The run
 *     file may also bind files from /vmm/files over the root's paths,
 *     mount tmpfs directories, set the host name and resource limits,
 *     make the root read-only, and give the command the console as its
 *     controlling terminal (vmm-runtime's records: H, L, B, b, T, R, Y);
 *   - otherwise ends the VM at once (a restart, exit code 0).
 * The VMM passes its ports and the command as KEY=VALUE kernel parameters,
 * which the kernel hands to init as environment variables:
 *   VMM_BOOT_TIMER=0x440  the boot timer (devices/src/boot_timer.rs)
 *   VMM_EXIT_PORT=0x444   the exit device (devices/src/exit_device.rs)
 *   VMM_COMMAND_PORT=0x448  a template's: the command device's port
 *   VMM_CMD=...           the command: each argument followed by a NUL
 *                         byte, in unpadded URL-safe base64
 *   VMM_SHELL=1           a shell on the console instead
 *   VMM_IMAGE=1           a container image's disk: the run in /vmm/run
 *   VMM_QUIET=1           no greeting (a container's VM: vmm-runtime)
 *   VMM_DHCP=1            configure eth0 by DHCP (busybox udhcpc and its
 *                         lease script, which says the address on the
 *                         console) before the command or the shell; an
 *                         address from the kernel's own ip= parameter
 *                         needs nothing from init
 * The loopback interface is brought up in every case. Once the basics are
 * mounted, the console's log level becomes 4 (errors and worse), as a
 * distribution sets it after boot (kernel.printk) and as the kernel's
 * `quiet` does, so that the kernel's informational lines do not cut
 * through what the command or the shell prints; a command line that sets
 * the level itself (loglevel=, debug, ignore_loglevel) keeps it.
 *
 * Freestanding (no libc): built with gcc -static -nostdlib, so the
 * initramfs needs nothing else for it. A microVM has no ACPI, so the VM is
 * ended the way Firecracker guests end it: a restart, which the kernel
 * performs with an i8042 reset (reboot=k) and the VMM turns into its own
 * exit with status 0, unless a command's status was reported first.
 *
 * The same binary is the container's init in `vmm bench`. There, without
 * the VMM's parameters (and a hypervisor's CPUID bit), it touches no port
 * and mounts nothing, and its restart request, made only as PID 1 of its
 * own PID namespace, ends that namespace, not the host.
 */
#include "sys.h"

/* The boot timer's value (devices/src/boot_timer.rs). */
#define BOOT_TIMER_MAGIC 123
/* The exit device's report: this | status (devices/src/exit_device.rs). */
#define EXIT_MAGIC 0x564d5800u

#define MAX_ARGS 256
#define CMD_BYTES 2048

static const char greeting[] =
	"Hello from the guest: init is running in user space on its own kernel.\n";
static const char hostname[] = "vmm-guest";

static char *const command_env[] = {
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"TERM=linux",
	0,
};

static void print(const char *s)
{
	write_str(2, s);
}

/* The value of `key` ("KEY=") in envp, or 0. */
static const char *env_get(char **envp, const char *key)
{
	for (; *envp; envp++) {
		const char *e = *envp, *k = key;
		while (*k && *e == *k)
			e++, k++;
		if (!*k)
			return e;
	}
	return 0;
}

/* A port written as "0x..." (at most 0xffff), or 0. */
static unsigned long parse_port(const char *s)
{
	unsigned long port = 0;

	if (!s || s[0] != '0' || s[1] != 'x' || !s[2])
		return 0;
	for (s += 2; *s; s++) {
		char c = *s;
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

/* Whether `word` is one of the space-separated words of `line`, or the
 * start of one when it ends with '='. */
static int has_word(const char *line, const char *word)
{
	for (const char *at = line; *at;) {
		const char *w = word, *l = at;
		while (*w && *l == *w)
			w++, l++;
		if (!*w && (w[-1] == '=' || *l == ' ' || *l == '\n' || !*l))
			return 1;
		while (*at && *at != ' ')
			at++;
		while (*at == ' ')
			at++;
	}
	return 0;
}

/* The console's log level to errors and worse (4, `quiet`'s), unless the
 * kernel's command line chose one (read from /proc, mounted by now). */
static void quiet_console(void)
{
	static char line[4096];
	long fd = syscall3(SYS_open, (long)"/proc/cmdline", O_RDONLY, 0);
	long n = fd < 0 ? -1 : syscall3(SYS_read, fd, (long)line, sizeof(line) - 1);

	if (fd >= 0)
		syscall3(SYS_close, fd, 0, 0);
	if (n < 0)
		return;
	line[n] = 0;
	if (has_word(line, "loglevel=") || has_word(line, "debug") ||
	    has_word(line, "ignore_loglevel"))
		return;
	/* SYSLOG_ACTION_CONSOLE_LEVEL */
	syscall3(SYS_syslog, 8, 0, 4);
}

/* Whether CPUID says we run under a hypervisor (leaf 1, ECX bit 31): a
 * second guard, after the VMM's parameter, before touching a port. */
static int under_hypervisor(void)
{
	unsigned a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return (c >> 31) & 1;
}

static int b64(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decodes unpadded URL-safe base64 into out; the length, or -1. */
static long b64_decode(const char *s, char *out, long cap)
{
	unsigned long acc = 0;
	int bits = 0;
	long n = 0;

	for (; *s; s++) {
		int v = b64(*s);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (char)(acc >> bits);
			acc &= (1ul << bits) - 1;
		}
	}
	return n;
}

static void report(unsigned long port, unsigned status)
{
	unsigned v = EXIT_MAGIC | (status & 0xff);
	if (syscall3(SYS_ioperm, port, 4, 1) == 0)
		__asm__ volatile("outl %0, %w1" : : "a"(v), "Nd"((unsigned short)port));
}

/* The value of PATH in envp, or the default search list. */
static const char *path_of(char **envp)
{
	const char *p = env_get(envp, "PATH=");
	return p ? p : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/* Runs argv[0] as execvp does: a name without '/' is looked up in the
 * environment's PATH. Returns only on failure, with the errno of the most
 * telling attempt. */
static long exec_command(char **argv, char **envp)
{
	char path[512];
	const char *name = argv[0];
	const char *dirs = path_of(envp);
	unsigned long n = str_len(name);
	long err = -ENOENT;

	for (unsigned long i = 0; name[i]; i++)
		if (name[i] == '/')
			return syscall3(SYS_execve, (long)name, (long)argv, (long)envp);
	while (1) {
		const char *end = dirs;
		unsigned long d, k;
		long r;
		while (*end && *end != ':')
			end++;
		d = end - dirs;
		/* An empty entry is the current directory. */
		if (d == 0) {
			path[0] = '.';
			d = 1;
		} else if (d + 1 + n + 1 <= sizeof(path)) {
			for (k = 0; k < d; k++)
				path[k] = dirs[k];
		}
		if (d + 1 + n + 1 <= sizeof(path)) {
			path[d] = '/';
			for (k = 0; k <= n; k++)
				path[d + 1 + k] = name[k];
			r = syscall3(SYS_execve, (long)path, (long)argv, (long)envp);
			if (r != -ENOENT && r != -ENOTDIR)
				err = r;
		}
		if (!*end)
			break;
		dirs = end + 1;
	}
	return err;
}

/* Who the command runs as and where (a container image's run). */
struct creds {
	unsigned uid, gid;
	unsigned groups[64];
	int ngroups;
	const char *workdir;
	/* The console is the command's controlling terminal (a container's
	 * process.terminal): a session of its own, so that ^C reaches it. */
	int terminal;
	/* Resource limits: resource, soft, hard (a container's rlimits). */
	struct {
		unsigned resource;
		unsigned long soft, hard;
	} rlimits[16];
	int nrlimits;
};

/* Where the command device's signal register is, once init runs a
 * command from the device: 0 when there is none. */
static unsigned long signal_port;

static unsigned port_inl(unsigned long port);

/* Sleeps `ms` milliseconds. */
static void sleep_ms(long ms)
{
	long ts[2] = { ms / 1000, (ms % 1000) * 1000000 };
	syscall3(SYS_nanosleep, (long)ts, 0, 0);
}

/* mkdir -p, as root, before the command's user is taken. */
static void make_dirs(const char *path)
{
	static char buf[512];
	unsigned long n = str_len(path);

	if (n >= sizeof(buf))
		return;
	for (unsigned long i = 0; i <= n; i++) {
		buf[i] = path[i];
		if ((path[i] == '/' && i > 0) || path[i] == 0) {
			buf[i] = 0;
			syscall3(SYS_mkdir, (long)buf, 0755, 0);
			buf[i] = path[i];
		}
	}
}

/* Runs the command and returns its status as a shell gives it; `quiet`:
 * with its stdout and stderr on /dev/null instead of the console; `c`:
 * as that user in that directory (or as init is, when 0). */
static unsigned run_command(char **argv, char **envp, int quiet, const struct creds *c)
{
	long pid = syscall5(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	int status = 0;

	if (pid == 0) {
		long err;
		if (quiet) {
			long null = syscall3(SYS_open, (long)"/dev/null", O_WRONLY, 0);
			if (null >= 0) {
				syscall3(SYS_dup2, null, 1, 0);
				syscall3(SYS_dup2, null, 2, 0);
			}
		}
		if (c) {
			if (c->terminal) {
				syscall3(SYS_setsid, 0, 0, 0);
				syscall3(SYS_ioctl, 0, TIOCSCTTY, 1);
			}
			for (int i = 0; i < c->nrlimits; i++)
				syscall3(SYS_setrlimit, c->rlimits[i].resource,
					 (long)&c->rlimits[i].soft, 0);
			make_dirs(c->workdir);
			if (syscall3(SYS_chdir, (long)c->workdir, 0, 0) != 0) {
				print("init: cannot enter the working directory ");
				print(c->workdir);
				print("\n");
				syscall3(SYS_exit, 126, 0, 0);
			}
			if (syscall3(SYS_setgroups, c->ngroups, (long)c->groups, 0) != 0 ||
			    syscall3(SYS_setgid, c->gid, 0, 0) != 0 ||
			    syscall3(SYS_setuid, c->uid, 0, 0) != 0) {
				print("init: cannot take the command's user and groups\n");
				syscall3(SYS_exit, 126, 0, 0);
			}
		}
		err = exec_command(argv, envp);
		print("init: ");
		print(argv[0]);
		print(err == -ENOENT ? ": command not found\n" : ": cannot run it\n");
		syscall3(SYS_exit, err == -ENOENT ? 127 : 126, 0, 0);
	}
	if (pid < 0) {
		print("init: cannot start the command\n");
		return 126;
	}
	/* Orphans become init's children: reap them until the command ends.
	 * With the command device's signal register (a container's VM), poll
	 * it meanwhile: a signal the VMM was asked to send (`vmm-runtime kill`)
	 * goes to the command, or with its "all" bit to every process. */
	for (;;) {
		long r = syscall4(SYS_wait4, -1, (long)&status, signal_port ? WNOHANG : 0, 0);
		if (r == pid)
			break;
		if (r < 0 && r != -EINTR)
			return 126;
		if (r == 0) {
			unsigned sig = port_inl(signal_port);
			if (sig & 0xff)
				syscall3(SYS_kill, (sig & 0x100) ? -1 : pid, sig & 0xff, 0);
			else
				sleep_ms(10);
		}
	}
	if ((status & 0x7f) == 0)
		return (status >> 8) & 0xff;
	return 128 + (status & 0x7f);
}

/* busybox's halt, poweroff and reboot (run as applets by its shell) ask
 * PID 1 with SIGUSR1, SIGUSR2 and SIGTERM: each ends the VM as init does,
 * a microVM having no ACPI to power off with. */
static void on_end_signal(int sig)
{
	(void)sig;
	syscall3(SYS_sync, 0, 0, 0);
	restart();
	for (;;)
		__asm__ volatile("pause");
}

static void catch_end_signals(void)
{
	/* struct kernel_sigaction: handler, flags, restorer, mask. The handler
	 * never returns, so no restorer is needed. */
	static const int sigs[] = { SIGUSR1, SIGUSR2, SIGTERM };
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		unsigned long act[4] = { (unsigned long)on_end_signal, 0, 0, 0 };
		syscall4(SYS_rt_sigaction, sigs[i], (long)act, 0, 8);
	}
}

/* Brings the loopback interface up, as every system's init does. */
static void loopback_up(void)
{
	/* struct ifreq: the name (16 bytes), then the flags (a short). */
	union {
		char name[16];
		short raw[20];
	} ifr = { .name = "lo" };
	long s = syscall3(SYS_socket, AF_INET, SOCK_DGRAM, 0);

	if (s < 0)
		return;
	if (syscall3(SYS_ioctl, s, SIOCGIFFLAGS, (long)&ifr) == 0) {
		ifr.raw[8] |= IFF_UP;
		syscall3(SYS_ioctl, s, SIOCSIFFLAGS, (long)&ifr);
	}
	syscall3(SYS_close, s, 0, 0);
}

/* eth0 by DHCP: busybox udhcpc, until it has a lease or gives up (about
 * 10 s); its lease script applies the lease and says it on the console. */
static void dhcp(void)
{
	static char *const udhcpc[] = { "/bin/busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
					"-t", "5", "-T", "2", "-s",
					"/usr/share/udhcpc/default.script", 0 };
	if (run_command((char **)udhcpc, (char **)command_env, 1, 0) != 0)
		print("init: eth0 got no address by DHCP (udhcpc failed); going on without it\n");
}

static void mount_basics(void)
{
	syscall5(SYS_mount, (long)"proc", (long)"/proc", (long)"proc", 0, 0);
	syscall5(SYS_mount, (long)"sysfs", (long)"/sys", (long)"sysfs", 0, 0);
	syscall5(SYS_mount, (long)"devtmpfs", (long)"/dev", (long)"devtmpfs", 0, 0);
	syscall5(SYS_mount, (long)"tmpfs", (long)"/tmp", (long)"tmpfs", 0, (long)"mode=1777");
	syscall3(SYS_sethostname, (long)hostname, sizeof(hostname) - 1, 0);
}

/* A container image's run (/vmm/run, the VMM's image::run::Spec): the
 * magic line, then NUL-terminated records, a letter and its value, ended
 * by an empty one. */
#define RUN_BYTES 65536
#define MAX_ENV 512
static char run_file[RUN_BYTES + 1];
static char *run_argv[MAX_ARGS + 1];
static char *run_env[MAX_ENV + 1];
static struct creds run_creds;

static const char *run_hostname;
/* The root read-only ('R': a container's root.readonly). */
static int run_ro_root;
/* Files bound over the root's paths ('B', read-write; 'b', read-only),
 * each followed by its content ('C', base64, decoded in place): written
 * to /vmm/files/K on a tmpfs there, then bound. */
#define MAX_BINDS 32
static const char *run_binds[MAX_BINDS];
static int run_binds_ro[MAX_BINDS];
static char *run_bind_data[MAX_BINDS];
static long run_bind_len[MAX_BINDS];
static int run_nbinds;
/* tmpfs mounts ('T': the target, a newline, the mount's options). */
#define MAX_TMPFS 16
static char *run_tmpfs[MAX_TMPFS];
static int run_ntmpfs;

static unsigned long parse_ulong(const char **s)
{
	unsigned long v = 0;
	while (**s == ' ')
		(*s)++;
	while (**s >= '0' && **s <= '9')
		v = v * 10 + (unsigned long)(*(*s)++ - '0');
	return v;
}

static unsigned parse_uint(const char *s)
{
	return (unsigned)parse_ulong(&s);
}

/* Reads /vmm/run; 0 when it is not one this init reads. */
static int read_run(void)
{
	static const char magic[] = "VMMRUN1\n";
	long fd = syscall3(SYS_open, (long)"/vmm/run", O_RDONLY, 0);
	long n = 0, r;
	int argn = 0, envn = 0;
	char *p;

	if (fd < 0)
		return 0;
	while (n < RUN_BYTES && (r = syscall3(SYS_read, fd, (long)run_file + n, RUN_BYTES - n)) > 0)
		n += r;
	syscall3(SYS_close, fd, 0, 0);
	run_file[n] = 0;
	for (int i = 0; magic[i]; i++)
		if (run_file[i] != magic[i])
			return 0;
	run_creds.workdir = "/";
	for (p = run_file + sizeof(magic) - 1; p < run_file + n && *p; p += str_len(p) + 1) {
		char tag = *p;
		char *value = p + 1;
		if (tag == 'A' && argn < MAX_ARGS)
			run_argv[argn++] = value;
		else if (tag == 'E' && envn < MAX_ENV)
			run_env[envn++] = value;
		else if (tag == 'U')
			run_creds.uid = parse_uint(value);
		else if (tag == 'G')
			run_creds.gid = parse_uint(value);
		else if (tag == 'S' && run_creds.ngroups < 64)
			run_creds.groups[run_creds.ngroups++] = parse_uint(value);
		else if (tag == 'W')
			run_creds.workdir = value;
		else if (tag == 'H')
			run_hostname = value;
		else if (tag == 'Y')
			run_creds.terminal = 1;
		else if (tag == 'R')
			run_ro_root = 1;
		else if (tag == 'L' && run_creds.nrlimits < 16) {
			/* "RESOURCE SOFT HARD"; all ones is unlimited. */
			const char *v = value;
			int i = run_creds.nrlimits++;
			run_creds.rlimits[i].resource = (unsigned)parse_ulong(&v);
			run_creds.rlimits[i].soft = parse_ulong(&v);
			run_creds.rlimits[i].hard = parse_ulong(&v);
		} else if ((tag == 'B' || tag == 'b') && run_nbinds < MAX_BINDS) {
			run_binds_ro[run_nbinds] = tag == 'b';
			run_bind_len[run_nbinds] = 0;
			run_binds[run_nbinds++] = value;
		} else if (tag == 'C' && run_nbinds > 0) {
			/* Decoded over itself: the output never overtakes the
			 * input (3 bytes for each 4). */
			long n = b64_decode(value, value, str_len(value));
			run_bind_data[run_nbinds - 1] = value;
			run_bind_len[run_nbinds - 1] = n < 0 ? 0 : n;
		} else if (tag == 'T' && run_ntmpfs < MAX_TMPFS)
			run_tmpfs[run_ntmpfs++] = value;
	}
	run_argv[argn] = 0;
	run_env[envn] = 0;
	return argn > 0;
}

/* Makes /rootfs the root (as switch_root does: the directory bound onto
 * itself and moved over /), then mounts what a container has. */
/* Makes the directories above `path` (not `path` itself). */
static void make_parents(const char *path)
{
	static char parent[512];
	unsigned long n = str_len(path), cut = 0;

	if (n >= sizeof(parent))
		return;
	for (unsigned long i = 0; i < n; i++) {
		parent[i] = path[i];
		if (path[i] == '/')
			cut = i;
	}
	parent[cut] = 0;
	if (cut)
		make_dirs(parent);
}

/* Binds the run's files (written to /vmm/files/K from the run file) over
 * their paths under /rootfs, as a container runtime binds podman's
 * /etc/hosts, /etc/resolv.conf and the like: the image's own file stays
 * under it. */
static void bind_files(void)
{
	static char src[64], dst[600];
	static const char prefix[] = "/rootfs";

	for (int k = 0; k < run_nbinds; k++) {
		unsigned long n = 0, m = 0;
		const char *head = "/vmm/files/";
		char digits[12];
		int d = 0, v = k;
		long fd;

		while (*head)
			src[n++] = *head++;
		do
			digits[d++] = (char)('0' + v % 10);
		while ((v /= 10));
		while (d)
			src[n++] = digits[--d];
		src[n] = 0;
		if (k == 0)
			syscall5(SYS_mount, (long)"tmpfs", (long)"/vmm/files", (long)"tmpfs",
				 MS_NOSUID | MS_NODEV, (long)"mode=755");
		fd = syscall3(SYS_open, (long)src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			syscall3(SYS_write, fd, (long)run_bind_data[k], run_bind_len[k]);
			syscall3(SYS_close, fd, 0, 0);
		}
		for (const char *p = prefix; *p;)
			dst[m++] = *p++;
		for (const char *p = run_binds[k]; *p && m < sizeof(dst) - 1;)
			dst[m++] = *p++;
		dst[m] = 0;
		make_parents(dst);
		fd = syscall3(SYS_open, (long)dst, O_WRONLY | O_CREAT, 0644);
		if (fd >= 0)
			syscall3(SYS_close, fd, 0, 0);
		if (syscall5(SYS_mount, (long)src, (long)dst, 0, MS_BIND, 0) != 0) {
			print("init: cannot bind ");
			print(run_binds[k]);
			print("\n");
			continue;
		}
		if (run_binds_ro[k])
			syscall5(SYS_mount, 0, (long)dst, 0, MS_REMOUNT | MS_BIND | MS_RDONLY, 0);
	}
}

static void enter_rootfs(void)
{
	bind_files();
	if (syscall5(SYS_mount, (long)"/rootfs", (long)"/rootfs", 0, MS_BIND | MS_REC, 0) == 0 &&
	    syscall3(SYS_chdir, (long)"/rootfs", 0, 0) == 0 &&
	    syscall5(SYS_mount, (long)".", (long)"/", 0, MS_MOVE, 0) == 0) {
		syscall3(SYS_chroot, (long)".", 0, 0);
	} else {
		syscall3(SYS_chroot, (long)"/rootfs", 0, 0);
	}
	syscall3(SYS_chdir, (long)"/", 0, 0);
	static const char *const dirs[] = { "/proc", "/sys", "/dev", "/tmp", 0 };
	for (int i = 0; dirs[i]; i++)
		syscall3(SYS_mkdir, (long)dirs[i], 0755, 0);
	mount_basics();
	syscall3(SYS_mkdir, (long)"/dev/pts", 0755, 0);
	syscall3(SYS_mkdir, (long)"/dev/shm", 01777, 0);
	syscall5(SYS_mount, (long)"devpts", (long)"/dev/pts", (long)"devpts", MS_NOSUID | MS_NOEXEC,
		 (long)"newinstance,ptmxmode=0666,mode=0620");
	syscall5(SYS_mount, (long)"shm", (long)"/dev/shm", (long)"tmpfs", MS_NOSUID | MS_NODEV,
		 (long)"mode=1777");
	syscall3(SYS_mkdir, (long)"/dev/mqueue", 0755, 0);
	syscall5(SYS_mount, (long)"mqueue", (long)"/dev/mqueue", (long)"mqueue",
		 MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	for (int i = 0; i < run_ntmpfs; i++) {
		char *data = run_tmpfs[i];
		while (*data && *data != '\n')
			data++;
		if (*data)
			*data++ = 0;
		make_dirs(run_tmpfs[i]);
		syscall5(SYS_mount, (long)"tmpfs", (long)run_tmpfs[i], (long)"tmpfs",
			 MS_NOSUID | MS_NODEV, (long)data);
	}
	if (run_hostname)
		syscall3(SYS_sethostname, (long)run_hostname, str_len(run_hostname), 0);
	if (run_ro_root)
		syscall5(SYS_mount, 0, (long)"/", 0, MS_REMOUNT | MS_BIND | MS_RDONLY, 0);
}

/* Whether line starts with word. */
static int starts_with(const char *line, const char *word)
{
	while (*word && *line == *word)
		line++, word++;
	return !*word;
}

/* The kernel's DHCP lease (ip=dhcp) gives the DNS servers in /proc/net/pnp
 * ("#PROTO: DHCP", then nameserver, domain and bootserver lines): the
 * image's /etc/resolv.conf gets its nameserver and domain lines. */
static void resolv_conf(void)
{
	static char pnp[2048], conf[2048];
	long fd = syscall3(SYS_open, (long)"/proc/net/pnp", O_RDONLY, 0);
	long n = fd < 0 ? -1 : syscall3(SYS_read, fd, (long)pnp, sizeof(pnp) - 1);
	long len = 0;

	if (fd >= 0)
		syscall3(SYS_close, fd, 0, 0);
	if (n <= 0)
		return;
	pnp[n] = 0;
	/* "#MANUAL" when the kernel configured no interface: the image's own
	 * file stays. */
	if (!starts_with(pnp, "#PROTO:"))
		return;
	for (char *line = pnp; *line;) {
		char *end = line;
		while (*end && *end != '\n')
			end++;
		if (starts_with(line, "nameserver ") || starts_with(line, "domain ")) {
			for (char *c = line; c < end; c++)
				conf[len++] = *c;
			conf[len++] = '\n';
		}
		line = *end ? end + 1 : end;
	}
	fd = syscall3(SYS_open, (long)"/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		syscall3(SYS_write, fd, (long)conf, len);
		syscall3(SYS_close, fd, 0, 0);
	}
}

/* The command device (devices/src/command.rs): "ready", then the
 * command's length (all ones while there is none) and its bytes, four at a
 * time. */
#define COMMAND_READY 0x564d5201u
#define COMMAND_NONE 0xffffffffu
#define COMMAND_BYTES 65536
static char device_cmd[COMMAND_BYTES + 4];
static char *device_argv[MAX_ARGS + 1];

static unsigned port_inl(unsigned long port)
{
	if (!port)
		return 0;
	unsigned v;
	__asm__ volatile("inl %w1, %0" : "=a"(v) : "Nd"((unsigned short)port));
	return v;
}

/* Says "ready" and waits for the command; runs it with `envp` as `c`
 * (none: init's own) and returns its status as run_command does (126 when
 * the command cannot be read). */
static unsigned command_from_device(unsigned long port, char **envp, const struct creds *c)
{
	unsigned long len, i;
	int argn = 0;

	if (syscall3(SYS_ioperm, port, 12, 1) != 0) {
		print("init: cannot reach the command device\n");
		return 126;
	}
	__asm__ volatile("outl %0, %w1" : : "a"(COMMAND_READY), "Nd"((unsigned short)port));
	/* Spin a while (a restored template finds its command at once), then
	 * sleep between polls: a container's VM may wait long for `start`. */
	for (unsigned spins = 0; (len = port_inl(port)) == COMMAND_NONE; spins++) {
		if (spins < 1000)
			__asm__ volatile("pause");
		else
			sleep_ms(2);
	}
	if (len == 0 || len > COMMAND_BYTES) {
		print("init: the command device's command is not one this init can read\n");
		return 126;
	}
	for (i = 0; i < len; i += 4) {
		unsigned w = port_inl(port + 4);
		for (int b = 0; b < 4; b++)
			device_cmd[i + b] = (char)(w >> (8 * b));
	}
	for (i = 0; i < len && argn < MAX_ARGS; argn++) {
		device_argv[argn] = device_cmd + i;
		while (i < len && device_cmd[i])
			i++;
		i++;
	}
	device_argv[argn] = 0;
	if (device_cmd[len - 1] != 0 || argn == MAX_ARGS) {
		print("init: the command device's command is not one this init can read\n");
		return 126;
	}
	signal_port = port + 8;
	return run_command(device_argv, envp, 0, c);
}

/* Ends the VM with `status` on the exit device once the console is out. */
static void finish(unsigned long exit_port, unsigned status)
{
	syscall3(SYS_sync, 0, 0, 0);
	/* Let the console send what the command wrote (tcdrain): the
	 * report ends the VM at once, and output still queued in the
	 * guest's tty would be lost. */
	syscall3(SYS_ioctl, 1, TCSBRK, 1);
	if (exit_port)
		report(exit_port, status);
}

/* Called from _start with the initial stack: argc, argv..., 0, envp..., 0. */
void start_c(long *stack)
{
	static char cmd[CMD_BYTES];
	static char *argv[MAX_ARGS + 1];
	long argc = stack[0];
	char **envp = (char **)(stack + 1 + argc + 1);
	unsigned long timer = parse_port(env_get(envp, "VMM_BOOT_TIMER="));
	unsigned long exit_port = parse_port(env_get(envp, "VMM_EXIT_PORT="));
	const char *encoded = env_get(envp, "VMM_CMD=");
	unsigned long command_port = parse_port(env_get(envp, "VMM_COMMAND_PORT="));
	int pid1 = syscall3(SYS_getpid, 0, 0, 0) == 1;
	int in_vm = pid1 && (timer || exit_port) && under_hypervisor();

	/* Mark "init reached" first thing: the VMM's boot timer. */
	if (in_vm && timer && syscall3(SYS_ioperm, timer, 1, 1) == 0) {
		unsigned char v = BOOT_TIMER_MAGIC;
		__asm__ volatile("outb %0, %w1" : : "a"(v), "Nd"((unsigned short)timer));
	}
	/* A container's VM (vmm-runtime) says nothing of its own: its
	 * console is the container's output. */
	if (!env_get(envp, "VMM_QUIET=1"))
		syscall3(SYS_write, 1, (long)greeting, sizeof(greeting) - 1);
	if (in_vm && env_get(envp, "VMM_IMAGE=1")) {
		unsigned status = 126;
		if (!read_run()) {
			print("init: /vmm/run is not a run this init can read\n");
		} else {
			enter_rootfs();
			quiet_console();
			loopback_up();
			resolv_conf();
			/* A template of an image: the command comes from the
			 * command device, run with the image's environment, user
			 * and directory. */
			if (command_port)
				status = command_from_device(command_port, run_env, &run_creds);
			else
				status = run_command(run_argv, run_env, 0, &run_creds);
		}
		finish(exit_port, status);
		restart();
		for (;;)
			__asm__ volatile("pause");
	}
	if (in_vm) {
		mount_basics();
		quiet_console();
		loopback_up();
		if (env_get(envp, "VMM_DHCP=1"))
			dhcp();
	}
	if (in_vm && encoded) {
		long n = b64_decode(encoded, cmd, sizeof(cmd));
		int argn = 0;
		unsigned status;

		for (long i = 0; n > 0 && i < n && argn < MAX_ARGS; argn++) {
			argv[argn] = cmd + i;
			while (i < n && cmd[i])
				i++;
			i++;
		}
		argv[argn] = 0;
		if (n <= 0 || cmd[n - 1] != 0 || argn == 0 || argn == MAX_ARGS) {
			print("init: VMM_CMD is not a command this init can read\n");
			status = 126;
		} else {
			status = run_command(argv, (char **)command_env, 0, 0);
		}
		finish(exit_port, status);
	}
	if (in_vm && !encoded && command_port)
		finish(exit_port, command_from_device(command_port, (char **)command_env, 0));
	if (in_vm && !encoded && !command_port && env_get(envp, "VMM_SHELL=1")) {
		static char *const shell[] = { "/bin/busybox", "setsid", "cttyhack", "/bin/sh", 0 };
		print("init: a shell on the console; Ctrl-D or poweroff ends the VM\n");
		catch_end_signals();
		run_command((char **)shell, (char **)command_env, 0, 0);
	}
	syscall3(SYS_sync, 0, 0, 0);
	if (pid1)
		restart();
	for (;;)
		__asm__ volatile("pause");
}

GUEST_ENTRY;
