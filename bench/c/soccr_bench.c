/*
 * libsoccr dump/restore cost of one established loopback connection, next to a baseline that
 * makes the same kernel calls directly (no library), interleaved in the same process under the
 * same conditions. Each iteration dumps the current server socket, closes it in repair mode and
 * restores it into a new socket, which the next iteration dumps again. The peer checks at the
 * end that the receive queue carried over intact every time (byte-exact) and that traffic flows
 * both ways.
 *
 * Usage: soccr_bench [iterations] [queue bytes...]   (default sizes 0 4096 65536; run as root
 * in a private netns: scripts/bench.sh). bench/soccr/js-soccr-bench.js runs one size at a time,
 * right before the JS rows of that size, so both meet the same machine load.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "soccr_sequence.h"

#define die(...) do { fprintf(stderr, "soccr_bench: " __VA_ARGS__); exit(1); } while (0)

static void checked_dump(int fd, struct image *im)
{
	if (lib_dump(fd, im))
		die("lib dump: %s\n", strerror(errno));
}

static int checked_restore(struct image *im)
{
	int fd = lib_restore(im);
	if (fd < 0)
		die("lib restore: %s\n", strerror(errno));
	return fd;
}

/* ---- the same kernel calls, made directly (ESTABLISHED, nothing unsent) ---- */

static void set_i(int fd, int lvl, int opt, int v)
{
	if (setsockopt(fd, lvl, opt, &v, sizeof(v)))
		die("setsockopt %d: %s\n", opt, strerror(errno));
}

static void raw_dump(int fd, struct image *im)
{
	struct libsoccr_sk_data *d = &im->d;
	struct tcp_info ti;
	struct tcp_repair_window w;
	socklen_t len;
	int v, outq, unsq, inq;

	memset(d, 0, sizeof(*d));
	len = sizeof(v);
	getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len);
	set_i(fd, SOL_TCP, TCP_REPAIR, 1);
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	len = sizeof(ti);
	if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &len))
		die("TCP_INFO\n");
	d->state = ti.tcpi_state;
	d->opt_mask = ti.tcpi_options & 7;
	d->snd_wscale = ti.tcpi_snd_wscale;
	d->rcv_wscale = ti.tcpi_rcv_wscale;
	len = sizeof(v);
	getsockopt(fd, SOL_TCP, TCP_MAXSEG, &d->mss_clamp, &len);
	len = sizeof(v);
	getsockopt(fd, SOL_TCP, TCP_TIMESTAMP, &d->timestamp, &len);
	len = sizeof(w);
	if (getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &len))
		die("window\n");
	d->flags = SOCCR_FLAGS_WINDOW;
	d->snd_wl1 = w.snd_wl1;
	d->snd_wnd = w.snd_wnd;
	d->max_window = w.max_window;
	d->rcv_wnd = w.rcv_wnd;
	d->rcv_wup = w.rcv_wup;
	if (ioctl(fd, SIOCINQ, &inq))
		die("ioctl\n");
	d->inq_len = (uint32_t)inq;
	if (inq) {
		len = sizeof(v);
		getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &v, &len);
	}
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
	len = sizeof(v);
	getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &d->inq_seq, &len);
	char probe;
	im->inq = inq ? malloc((size_t)inq + 1) : NULL;
	if (recv(fd, im->inq ? im->inq : &probe, (size_t)inq + 1, MSG_PEEK | MSG_DONTWAIT) != inq &&
	    inq)
		die("peek\n");
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	if (ioctl(fd, SIOCOUTQ, &outq) || ioctl(fd, SIOCOUTQNSD, &unsq))
		die("ioctl\n");
	d->outq_len = (uint32_t)outq;
	d->unsq_len = (uint32_t)unsq;
	len = sizeof(v);
	getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &d->outq_seq, &len);
	im->outq = outq ? malloc((size_t)outq + 1) : NULL;
	if (outq && recv(fd, im->outq, (size_t)outq + 1, MSG_PEEK | MSG_DONTWAIT) != outq)
		die("peek send\n");
	len = sizeof(im->self);
	getsockname(fd, &im->self.sa, &len);
	len = sizeof(im->peer);
	getpeername(fd, &im->peer.sa, &len);
}

static int raw_restore(struct image *im)
{
	struct libsoccr_sk_data *d = &im->d;
	int fd = socket(im->self.sa.sa_family, SOCK_STREAM, 0), v;
	socklen_t len = sizeof(v), alen = im->self.sa.sa_family == AF_INET ? sizeof(im->self.v4)
									   : sizeof(im->self.v6);
	getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len);
	set_i(fd, SOL_TCP, TCP_REPAIR, 1);
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
	set_i(fd, SOL_TCP, TCP_QUEUE_SEQ, (int)(d->inq_seq - d->inq_len));
	set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	set_i(fd, SOL_TCP, TCP_QUEUE_SEQ, (int)(d->outq_seq - d->outq_len));
	if (bind(fd, &im->self.sa, alen) || connect(fd, &im->peer.sa, alen))
		die("bind/connect: %s\n", strerror(errno));
	struct tcp_repair_opt opts[4] = {
		{TCPOPT_SACK_PERMITTED, 0},
		{TCPOPT_WINDOW, d->snd_wscale | (d->rcv_wscale << 16)},
		{TCPOPT_TIMESTAMP, 0},
		{TCPOPT_MAXSEG, d->mss_clamp},
	};
	if (setsockopt(fd, SOL_TCP, TCP_REPAIR_OPTIONS, opts, sizeof(opts)))
		die("options\n");
	set_i(fd, SOL_TCP, TCP_TIMESTAMP, (int)d->timestamp);
	if (d->inq_len) {
		set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
		if (send(fd, im->inq, d->inq_len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)d->inq_len)
			die("send recvq\n");
	}
	if (d->outq_len) {
		set_i(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
		if (send(fd, im->outq, d->outq_len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)d->outq_len)
			die("send sendq\n");
	}
	struct tcp_repair_window w = {d->snd_wl1, d->snd_wnd, d->max_window, d->rcv_wnd, d->rcv_wup};
	if (setsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, sizeof(w)))
		die("window\n");
	set_i(fd, SOL_TCP, TCP_REPAIR, 0);
	free(im->inq);
	free(im->outq);
	im->inq = im->outq = NULL;
	return fd;
}

/* ---- harness ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	int i = (int)(p * (n - 1) + 0.5);
	return v[i];
}

static void make_conn(int *cli, int *srv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, len) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
		die("listen\n");
	*cli = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(*cli, (struct sockaddr *)&a, len))
		die("connect\n");
	*srv = accept(l, NULL, NULL);
	close(l);
}

static void fill(char *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(i * 31 + seed);
}

static void run_row(int iters, size_t qbytes)
{
	int cli, srv;
	double *t[4];
	for (int k = 0; k < 4; k++)
		t[k] = calloc((size_t)iters, sizeof(double));
	make_conn(&cli, &srv);
	char *payload = malloc(qbytes + 1);
	fill(payload, qbytes, 7);
	if (qbytes) {
		/* The server never reads: these bytes ride along in every dump and restore. */
		if (send(cli, payload, qbytes, 0) != (ssize_t)qbytes)
			die("send\n");
		for (int i = 0, q = 0; q != (int)qbytes; i++) {
			if (i > 5000)
				die("queue did not fill\n");
			ioctl(srv, SIOCINQ, &q);
			usleep(200);
		}
	}
	/* Warm-up, then interleave library and baseline so both see the same conditions. */
	for (int i = -50; i < iters; i++) {
		for (int lib = 0; lib <= 1; lib++) {
			struct image im;
			double t0 = now_us();
			lib ? checked_dump(srv, &im) : raw_dump(srv, &im);
			double t1 = now_us();
			close(srv);
			double t2 = now_us();
			srv = lib ? checked_restore(&im) : raw_restore(&im);
			double t3 = now_us();
			if (i >= 0) {
				t[lib * 2][i] = t1 - t0;
				t[lib * 2 + 1][i] = t3 - t2;
			}
		}
	}
	/* Verify: the queue survived 2 x (iters + 50) migrations byte for byte; traffic both ways. */
	char *got = malloc(qbytes + 16);
	size_t have = 0;
	if (send(cli, "ping", 4, 0) != 4)
		die("ping\n");
	while (have < qbytes) {
		ssize_t n = recv(srv, got + have, qbytes - have, 0);
		if (n <= 0)
			die("recv: %s\n", strerror(errno));
		have += (size_t)n;
	}
	if (memcmp(got, payload, qbytes))
		die("queue corrupted\n");
	if (recv(srv, got, 4, MSG_WAITALL) != 4 || memcmp(got, "ping", 4) ||
	    send(srv, "pong", 4, 0) != 4 || recv(cli, got, 4, MSG_WAITALL) != 4 ||
	    memcmp(got, "pong", 4))
		die("traffic after migrations\n");

	double ld50 = pct(t[2], iters, .5), ld99 = pct(t[2], iters, .99);
	double lr50 = pct(t[3], iters, .5), lr99 = pct(t[3], iters, .99);
	double rd50 = pct(t[0], iters, .5), rd99 = pct(t[0], iters, .99);
	double rr50 = pct(t[1], iters, .5), rr99 = pct(t[1], iters, .99);
	printf("| %zu | %.1f / %.1f | %.1f / %.1f | %.2fx | %.1f / %.1f | %.1f / %.1f | %.2fx | %.2fx |\n",
	       qbytes, ld50, ld99, rd50, rd99, ld50 / rd50, lr50, lr99, rr50, rr99, lr50 / rr50,
	       (ld50 + lr50) / (rd50 + rr50));
	close(srv);
	close(cli);
	free(got);
	free(payload);
	for (int k = 0; k < 4; k++)
		free(t[k]);
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 3000;
	struct utsname u;
	char date[64];
	time_t now = time(NULL);

	uname(&u);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
	printf("### libsoccr: dump and restore of one established TCP connection (C)\n\n");
	printf("Machine: %s %s, %ld CPUs; %s; loopback in a private netns; %d iterations per row, "
	       "library and raw-syscall baseline interleaved.\n\n",
	       u.machine, u.release, sysconf(_SC_NPROCESSORS_ONLN), date, iters);
	printf("| recv queue bytes | libsoccr dump p50 / p99 µs | baseline dump p50 / p99 µs | "
	       "dump ratio | libsoccr restore p50 / p99 µs | baseline restore p50 / p99 µs | "
	       "restore ratio | total ratio (p50) |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	if (argc > 2) {
		for (int i = 2; i < argc; i++)
			run_row(iters, (size_t)strtoul(argv[i], NULL, 10));
	} else {
		run_row(iters, 0);
		run_row(iters, 4096);
		run_row(iters, 65536);
	}
	printf("\nDump = pause + save + queue and address retrieval; restore = socket + pause + "
	       "restore + resume. Baseline = the same kernel calls without the library.\n");
	return 0;
}
