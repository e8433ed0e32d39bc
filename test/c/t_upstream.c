/* Drop-in tests: programs written only against CRIU's soccr.h API (no node-criu extensions:
 * addresses from getsockname/getpeername, the one-call restore, repair mode left as CRIU's
 * restorer leaves it). They also run against CRIU's own libsoccr (NODE_CRIU_LIBSOCCR, see
 * scripts/test-c.sh); tests of this library's extensions are marked and skipped there. */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "stream.h"

void register_upstream_tests(void);

/* A dump as CRIU does it: pause, save, take both queues, addresses from the socket. The socket
 * is then closed in repair mode (no FIN, no RST). */
struct criu_image {
	struct libsoccr_sk_data data;
	char *inq, *outq;
	union libsoccr_addr self, peer;
};

static int criu_dump(int fd, struct criu_image *img)
{
	socklen_t len;
	struct libsoccr_sk *sk = libsoccr_pause(fd);

	memset(img, 0, sizeof(*img));
	CHECK(sk, "libsoccr_pause");
	CHECK(libsoccr_save(sk, &img->data, sizeof(img->data)) == (int)sizeof(img->data), "save");
	img->inq = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, SOCCR_MEM_EXCL);
	img->outq = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	CHECK(!img->data.inq_len || img->inq, "receive queue");
	CHECK(!img->data.outq_len || img->outq, "send queue");
	len = sizeof(img->self);
	CHECK(getsockname(fd, &img->self.sa, &len) == 0, "getsockname");
	len = sizeof(img->peer);
	CHECK(getpeername(fd, &img->peer.sa, &len) == 0, "getpeername");
	libsoccr_release(sk);
	return 0;
}

/* A restore as CRIU's restorer does it: a non-blocking socket with the biggest buffers, pause,
 * addresses and queues (EXCL), restore, release; repair mode stays on for the caller to end.
 * Returns the fd or -1. */
static int criu_restore(struct criu_image *img, int domain)
{
	int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), off = 0;
	int big = INT_MAX / 2;
	struct libsoccr_sk *sk;

	if (fd < 0)
		return -1;
	if (domain == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	sk = libsoccr_pause(fd);
	if (!sk) {
		close(fd);
		return -1;
	}
	libsoccr_set_addr(sk, 1, &img->self, 0);
	libsoccr_set_addr(sk, 0, &img->peer, 0);
	if (img->inq)
		libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, img->inq, SOCCR_MEM_EXCL);
	if (img->outq)
		libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, img->outq, SOCCR_MEM_EXCL);
	img->inq = img->outq = NULL;
	if (libsoccr_restore(sk, &img->data, sizeof(img->data))) {
		perror("  libsoccr_restore");
		libsoccr_release(sk);
		close(fd);
		return -1;
	}
	libsoccr_release(sk);
	return fd;
}

static int repair_off(int fd)
{
	int off = 0;
	CHECK(setsockopt(fd, SOL_TCP, TCP_REPAIR, &off, sizeof(off)) == 0, "TCP_REPAIR off");
	return 0;
}

/* Unsent data and a FIN queued behind it (FIN_WAIT1, the peer's window closed), restored and
 * then taken out of repair mode by the caller itself, not by libsoccr_resume: every byte and the
 * FIN must still reach the peer. */
static int t_caller_ends_repair(const void *arg)
{
	const bool fin = arg != NULL;
	const uint32_t total = 262144;
	struct pair p;
	struct pair_opts po = {.fam = FAM_V4, .cli_ns = -1, .srv_ns = -1, .cli_rcvbuf = 2048};
	struct stream c2s, s2c;
	struct criu_image img;
	struct rst_counters c0;
	char guard[64];
	int big = 4 << 20;

	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	TRY(read_rst_counters(&c0));
	CHECK(setsockopt(p.srv, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) == 0, "sndbuf");
	for (int i = 0; i < 200 && s2c.written < total; i++) {
		CHECK(stream_write(p.srv, &s2c, total - s2c.written) >= 0, "write");
		sleep_ms(2);
	}
	CHECK(s2c.written == total, "queued %llu", (unsigned long long)s2c.written);
	if (fin)
		CHECK(shutdown(p.srv, SHUT_WR) == 0, "shutdown");
	TRY(lock_socket(p.srv));
	TRY(criu_dump(p.srv, &img));
	CHECK(img.data.unsq_len > total / 2, "mostly unsent (%u)", img.data.unsq_len);
	CHECK(img.data.state == (uint32_t)(fin ? TCP_FIN_WAIT1 : TCP_ESTABLISHED), "state %u",
	      img.data.state);
	TRY(nft_drop_flow(-1, &img.peer, &img.self, guard, sizeof(guard)));
	close(p.srv);

	int fd = criu_restore(&img, AF_INET);
	CHECK(fd >= 0, "restore");
	TRY(nft_delete_table(-1, guard));
	TRY(repair_off(fd));

	/* The peer reads everything and EOF (if shut), then closes its side too. */
	TRY(set_nonblock(fd));
	struct pump_end a = {.fd = fd, .out = &s2c, .in = &c2s, .wr_shut = fin,
			     .extra = fin ? 0 : 5000};
	struct pump_end b = {.fd = p.cli, .out = &c2s, .in = &s2c, .extra = 5000};
	TRY(pump_until_closed(&a, &b, 20000));
	CHECK(s2c.read == s2c.written && s2c.eof, "peer got %llu of %llu bytes, eof %d",
	      (unsigned long long)s2c.read, (unsigned long long)s2c.written, s2c.eof);
	TRY(wait_state(fd, TCP_CLOSE, 10000));
	struct rst_counters c1;
	TRY(read_rst_counters(&c1));
	CHECK(rst_counters_equal(&c0, &c1), "no RST");
	close(fd);
	close(p.cli);
	return 0;
}

/* CRIU saves opt_mask as the kernel's whole tcpi_options, with bits repair cannot set (ECN
 * negotiated, ECN seen, ...). Restore takes them and ignores them. */
static int t_ecn_opt_mask(const void *arg)
{
	struct pair p;
	struct pair_opts po = {.fam = FAM_V4, .cli_ns = -1, .srv_ns = -1};
	struct stream c2s, s2c;
	struct criu_image img;
	struct rst_counters c0;
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	char guard[64];
	(void)arg;

	TRY(set_sysctl("/proc/sys/net/ipv4/tcp_ecn", "1"));
	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	TRY(read_rst_counters(&c0));
	TRY(stream_write_all(p.cli, &c2s, 3000, 5000));
	TRY(wait_queue(p.srv, false, 3000, 5000));
	TRY(lock_socket(p.srv));
	TRY(stream_write_all(p.srv, &s2c, 4000, 5000));
	CHECK(getsockopt(p.srv, SOL_TCP, TCP_INFO, &ti, &len) == 0, "TCP_INFO");
	CHECK(ti.tcpi_options & TCPI_OPT_ECN, "ECN negotiated (options %#x)", ti.tcpi_options);
	TRY(criu_dump(p.srv, &img));
	img.data.opt_mask = ti.tcpi_options; /* what CRIU's libsoccr_save stores */
	TRY(nft_drop_flow(-1, &img.peer, &img.self, guard, sizeof(guard)));
	close(p.srv);

	int fd = criu_restore(&img, AF_INET);
	CHECK(fd >= 0, "restore with opt_mask %#x", img.data.opt_mask);
	TRY(nft_delete_table(-1, guard));
	TRY(repair_off(fd));
	return finish_pair(fd, p.cli, &c2s, &s2c, &c0);
}

/* A write on a paused socket fails with EINVAL (repair mode, no repair queue selected) instead of
 * vanishing into the send queue as if sent. After save (an extension: CRIU's save leaves the send
 * queue selected, which takes writes) the same holds while nothing is unsent. Resume ends it. */
static int t_write_paused(const void *arg)
{
	const bool after_save = arg != NULL;
	struct pair p;
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;
	struct rst_counters c0;

	TRY(loaded_pair(&p, &c2s, &s2c, 100, 0, FAM_V4));
	TRY(read_rst_counters(&c0));
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	if (after_save) {
		CHECK(libsoccr_save(sk, &d, sizeof(d)) == (int)sizeof(d), "save");
		CHECK(d.unsq_len == 0, "nothing unsent");
	}
	errno = 0;
	CHECK(send(p.srv, "lost", 4, MSG_DONTWAIT | MSG_NOSIGNAL) == -1 && errno == EINVAL,
	      "write on a paused socket: EINVAL");
	int outq = -1;
	CHECK(ioctl(p.srv, SIOCOUTQ, &outq) == 0 && outq == 0, "nothing queued (%d)", outq);
	libsoccr_resume(sk);
	TRY(unlock_socket(p.srv));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

#ifndef NCR_UPSTREAM
/* Extension: a restored socket still in repair mode refuses writes with EINVAL too (CRIU's
 * restore leaves the send queue selected, which takes them as already sent). */
static int t_write_restored(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct criu_image img;
	struct rst_counters c0;
	char guard[64];
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 3000, 4000, FAM_V4));
	TRY(read_rst_counters(&c0));
	TRY(criu_dump(p.srv, &img));
	TRY(nft_drop_flow(-1, &img.peer, &img.self, guard, sizeof(guard)));
	close(p.srv);
	int fd = criu_restore(&img, AF_INET);
	CHECK(fd >= 0, "restore");
	TRY(nft_delete_table(-1, guard));
	errno = 0;
	CHECK(send(fd, "lost", 4, MSG_DONTWAIT | MSG_NOSIGNAL) == -1 && errno == EINVAL,
	      "write before repair mode ends: EINVAL");
	TRY(repair_off(fd));
	return finish_pair(fd, p.cli, &c2s, &s2c, &c0);
}
#endif

static int reuseaddr_of(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);
	return getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len) == 0 ? v : -1;
}

/* Pause and resume never switch SO_REUSEADDR on when the application did not have it on: not for
 * a socket already in repair mode at pause (TCP_REPAIR itself reads as SO_REUSEADDR there), not
 * when the caller switched it off while paused. */
static int t_reuseaddr_kept_off(const void *arg)
{
	const bool set_while_paused = arg != NULL;
	struct pair p;
	struct stream c2s, s2c;
	struct rst_counters c0;
	int on = 1, off = 0;

	TRY(loaded_pair(&p, &c2s, &s2c, 10, 10, FAM_V4));
	TRY(read_rst_counters(&c0));
	if (set_while_paused)
		CHECK(setsockopt(p.srv, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0, "on");
	else
		CHECK(setsockopt(p.srv, SOL_TCP, TCP_REPAIR, &on, sizeof(on)) == 0, "repair on");
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	if (set_while_paused)
		CHECK(setsockopt(p.srv, SOL_SOCKET, SO_REUSEADDR, &off, sizeof(off)) == 0, "off");
	libsoccr_resume(sk);
	CHECK(in_repair(p.srv) == 0, "repair off");
	CHECK(reuseaddr_of(p.srv) == 0, "SO_REUSEADDR stays off (%d)", reuseaddr_of(p.srv));
	TRY(unlock_socket(p.srv));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

/* Separate programs (test/c/compat_*.c), built against the same library. */
static int t_compat_program(const void *arg)
{
	const char *prog = arg;
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		execl(prog, prog, (char *)NULL);
		_exit(127);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s exit status %d", prog, status);
	return 0;
}

#ifndef NCR_BUILD_DIR
#define NCR_BUILD_DIR "build"
#endif

void register_upstream_tests(void)
{
	test_add(t_compat_program, "./" NCR_BUILD_DIR "/compat_api",
		 "compat: test/c/compat_api.c (CRIU's soccr.h API only), IPv4");
	test_add(t_compat_program, "./" NCR_BUILD_DIR "/compat_api6",
		 "compat: test/c/compat_api.c (CRIU's soccr.h API only), IPv6");
	test_add(t_compat_program, "./" NCR_BUILD_DIR "/compat_own_enum",
		 "compat: a program declaring the queue ids itself (strict C11, as CRIU's tcp-conn.c)");
	test_add(t_caller_ends_repair, NULL,
		 "upstream: restore, caller ends repair itself: unsent tail arrives");
	test_add(t_caller_ends_repair, "fin",
		 "upstream: restore, caller ends repair itself: unsent tail and FIN arrive");
	test_add(t_ecn_opt_mask, NULL, "upstream: opt_mask with ECN and other unsettable bits");
	test_add(t_write_paused, NULL, "upstream: write on a paused socket fails with EINVAL");
	test_add(t_reuseaddr_kept_off, NULL,
		 "upstream: SO_REUSEADDR stays off: socket already in repair mode at pause");
	test_add(t_reuseaddr_kept_off, "off",
		 "upstream: SO_REUSEADDR stays off: switched off while paused");
#ifndef NCR_UPSTREAM
	test_add(t_write_paused, "save",
		 "extension: write on a paused socket after save fails with EINVAL");
	test_add(t_write_restored, NULL,
		 "extension: write on a restored socket before repair ends fails with EINVAL");
#endif
}
