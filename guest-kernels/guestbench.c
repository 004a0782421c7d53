/*
 * guestbench: the guest side of scripts/bench-guest.py, measured from the
 * guest's user space with its own clock (CLOCK_MONOTONIC).
 *
 *   guestbench disk DEVICE MIB OPS
 *       on the raw DEVICE (its first MIB MiB), with O_DIRECT so that the
 *       guest's page cache is out of the way: sequential writes then reads
 *       of 1 MiB blocks (the writes end with fdatasync), then OPS random
 *       4 KiB writes (with fdatasync at the end) and OPS random 4 KiB reads;
 *   guestbench net HOST MIB OPS
 *       against bench-guest.py's peer at the IPv4 address HOST: MIB MiB sent
 *       to its port 5201 (until it has them all and closes), MIB MiB taken
 *       from its port 5202, then OPS round trips of one byte with its port
 *       5203 (TCP_NODELAY on both sides).
 *
 * Each result is a line "guestbench: NAME VALUE UNIT (DETAIL)", e.g.
 * "guestbench: seq-read-1m 251.3 MiB/s (64 MiB in 254662 us)"; a failure is
 * "guestbench: error in STEP: errno N" and exit status 1.
 *
 * Freestanding like init.c: gcc -static -nostdlib.
 */
#include "sys.h"

#define SYS_read 0
#define SYS_pread64 17
#define SYS_connect 42
#define SYS_shutdown 48
#define SYS_setsockopt 54
#define SYS_fdatasync 75
#define SYS_clock_gettime 228
#define O_RDWR 02
#define O_DIRECT 040000
#define CLOCK_MONOTONIC 1
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define TCP_NODELAY 1
#define SHUT_WR 1

#define BLOCK (1 << 20)
#define SMALL 4096

static unsigned char buf[BLOCK] __attribute__((aligned(4096)));

static void print(const char *s)
{
	write_str(1, s);
}

/* Prints v, with `decimals` digits after a point taken from its last ones. */
static void print_fixed(unsigned long v, int decimals)
{
	char out[32];
	int i = sizeof(out), d = 0;

	out[--i] = 0;
	do {
		if (d == decimals && decimals)
			out[--i] = '.';
		out[--i] = '0' + v % 10;
		v /= 10;
		d++;
	} while (v || d <= decimals);
	print(out + i);
}

static void fail(const char *step, long err)
{
	print("guestbench: error in ");
	print(step);
	print(": errno ");
	print_fixed(-err, 0);
	print("\n");
	syscall3(SYS_exit, 1, 0, 0);
}

static long check(const char *step, long ret)
{
	if (ret < 0)
		fail(step, ret);
	return ret;
}

static unsigned long now_us(void)
{
	long ts[2];
	syscall3(SYS_clock_gettime, CLOCK_MONOTONIC, (long)ts, 0);
	return ts[0] * 1000000ul + ts[1] / 1000;
}

static unsigned long parse_u(const char *s)
{
	unsigned long v = 0;
	for (; *s >= '0' && *s <= '9'; s++)
		v = v * 10 + (*s - '0');
	return v;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* "NAME RATE UNIT (AMOUNT UNIT in N us)": RATE = amount per second, with
 * one decimal. */
static void report_rate(const char *name, unsigned long amount, const char *unit,
			const char *per, unsigned long us)
{
	if (!us)
		us = 1;
	print("guestbench: ");
	print(name);
	print(" ");
	print_fixed(amount * 10000000ul / us, 1);
	print(" ");
	print(per);
	print(" (");
	print_fixed(amount, 0);
	print(" ");
	print(unit);
	print(" in ");
	print_fixed(us, 0);
	print(" us)\n");
}

static unsigned long rng = 0x9e3779b97f4a7c15ul;

static unsigned long next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void disk(const char *device, unsigned long mib, unsigned long ops)
{
	long fd = check("open", syscall3(SYS_open, (long)device, O_RDWR | O_DIRECT, 0));
	unsigned long t, i, blocks = mib * (BLOCK / SMALL);

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 7 + 1);
	t = now_us();
	for (i = 0; i < mib; i++)
		if (check("seq write", syscall4(SYS_pwrite64, fd, (long)buf, BLOCK, i * BLOCK)) != BLOCK)
			fail("seq write (short)", -5);
	check("fdatasync", syscall3(SYS_fdatasync, fd, 0, 0));
	report_rate("seq-write-1m", mib, "MiB", "MiB/s", now_us() - t);

	t = now_us();
	for (i = 0; i < mib; i++)
		if (check("seq read", syscall4(SYS_pread64, fd, (long)buf, BLOCK, i * BLOCK)) != BLOCK)
			fail("seq read (short)", -5);
	report_rate("seq-read-1m", mib, "MiB", "MiB/s", now_us() - t);

	t = now_us();
	for (i = 0; i < ops; i++) {
		unsigned long at = next_random() % blocks * SMALL;
		check("random write", syscall4(SYS_pwrite64, fd, (long)buf, SMALL, at));
	}
	check("fdatasync", syscall3(SYS_fdatasync, fd, 0, 0));
	report_rate("rand-write-4k", ops, "writes", "IOPS", now_us() - t);

	t = now_us();
	for (i = 0; i < ops; i++) {
		unsigned long at = next_random() % blocks * SMALL;
		check("random read", syscall4(SYS_pread64, fd, (long)buf, SMALL, at));
	}
	report_rate("rand-read-4k", ops, "reads", "IOPS", now_us() - t);
	syscall3(SYS_close, fd, 0, 0);
}

/* An IPv4 address "a.b.c.d" in network byte order (as stored), or 0. */
static unsigned parse_ipv4(const char *s)
{
	unsigned addr = 0;
	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		int digits = 0;
		for (; *s >= '0' && *s <= '9'; s++, digits++)
			v = v * 10 + (*s - '0');
		if (!digits || v > 255 || (part < 3 ? *s != '.' : *s != 0))
			return 0;
		addr |= v << (8 * part);
		s++;
	}
	return addr;
}

static long connect_to(unsigned addr, unsigned port)
{
	/* struct sockaddr_in: family, port (big-endian), address, padding. */
	struct {
		unsigned short family, port;
		unsigned addr;
		unsigned char zero[8];
	} sa = { AF_INET, (unsigned short)((port >> 8) | ((port & 0xff) << 8)), addr, { 0 } };
	int one = 1;
	long s = check("socket", syscall3(SYS_socket, AF_INET, SOCK_STREAM, 0));

	check("connect", syscall3(SYS_connect, s, (long)&sa, sizeof(sa)));
	check("TCP_NODELAY", syscall5(SYS_setsockopt, s, IPPROTO_TCP, TCP_NODELAY, (long)&one,
				      sizeof(one)));
	return s;
}

static void net(unsigned addr, unsigned long mib, unsigned long ops)
{
	unsigned long t, sent = 0, got = 0, total = mib * BLOCK, i;
	long s, n;

	/* Sent: until the peer has taken everything and closes. */
	t = now_us();
	s = connect_to(addr, 5201);
	while (sent < total) {
		unsigned long chunk = total - sent < 65536 ? total - sent : 65536;
		sent += check("send", syscall3(SYS_write, s, (long)buf, chunk));
	}
	check("shutdown", syscall3(SYS_shutdown, s, SHUT_WR, 0));
	while (check("wait for the peer", syscall3(SYS_read, s, (long)buf, 65536)) > 0)
		;
	report_rate("tcp-send", mib, "MiB", "MiB/s", now_us() - t);
	syscall3(SYS_close, s, 0, 0);

	t = now_us();
	s = connect_to(addr, 5202);
	while ((n = check("receive", syscall3(SYS_read, s, (long)buf, 65536))) > 0)
		got += n;
	if (got != total)
		fail("receive (short)", -5);
	report_rate("tcp-receive", mib, "MiB", "MiB/s", now_us() - t);
	syscall3(SYS_close, s, 0, 0);

	s = connect_to(addr, 5203);
	t = now_us();
	for (i = 0; i < ops; i++) {
		buf[0] = (unsigned char)i;
		if (check("ping", syscall3(SYS_write, s, (long)buf, 1)) != 1 ||
		    check("pong", syscall3(SYS_read, s, (long)buf, 1)) != 1 ||
		    buf[0] != (unsigned char)i)
			fail("round trip (lost byte)", -5);
	}
	t = now_us() - t;
	print("guestbench: tcp-rtt ");
	print_fixed(t * 10 / (ops ? ops : 1), 1);
	print(" us (");
	print_fixed(ops, 0);
	print(" round trips in ");
	print_fixed(t, 0);
	print(" us)\n");
	syscall3(SYS_close, s, 0, 0);
}

static void usage(void)
{
	print("usage: guestbench disk DEVICE MIB OPS | guestbench net HOST MIB OPS\n");
	syscall3(SYS_exit, 2, 0, 0);
}

void start_c(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);

	if (argc != 5)
		usage();
	if (same(argv[1], "disk")) {
		disk(argv[2], parse_u(argv[3]), parse_u(argv[4]));
	} else if (same(argv[1], "net")) {
		unsigned addr = parse_ipv4(argv[2]);
		if (!addr)
			usage();
		net(addr, parse_u(argv[3]), parse_u(argv[4]));
	} else {
		usage();
	}
	syscall3(SYS_exit, 0, 0, 0);
}

GUEST_ENTRY;
