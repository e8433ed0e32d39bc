/* Negative cases: each checks the return code and errno, that no fd leaked, and that no socket
 * was left in repair mode or changed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "stream.h"

void register_negative_tests(void);

static int t_not_a_socket(const void *arg)
{
	(void)arg;
	int fds = count_fds();
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	errno = 0;
	CHECK(!libsoccr_pause(fd) && errno == ENOTSOCK, "regular file: ENOTSOCK");
	close(fd);
	errno = 0;
	CHECK(!libsoccr_pause(-1) && errno == EBADF, "fd -1: EBADF");
	errno = 0;
	CHECK(!libsoccr_pause(fd) && errno == EBADF, "closed fd: EBADF");
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

static int t_udp(const void *arg)
{
	(void)arg;
	int fds = count_fds();
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	errno = 0;
	CHECK(!libsoccr_pause(fd) && errno == ENOPROTOOPT, "UDP: ENOPROTOOPT");
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	errno = 0;
	CHECK(!libsoccr_pause(fd) && errno == EOPNOTSUPP, "AF_UNIX: EOPNOTSUPP");
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

static int t_listening(const void *arg)
{
	(void)arg;
	int fds = count_fds();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	union libsoccr_addr a;
	socklen_t len;
	make_addr(&a, &len, AF_INET, "127.0.0.1", 0);
	CHECK(bind(fd, &a.sa, len) == 0 && listen(fd, 1) == 0, "listen");
	errno = 0;
	CHECK(!libsoccr_pause(fd) && errno == EPERM, "listening socket: EPERM");
	CHECK(tcp_state_of(fd) == TCP_LISTEN && in_repair(fd) == 0, "still listening, no repair");
	/* still accepts */
	CHECK(getsockname(fd, &a.sa, &len) == 0, "getsockname");
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(c, &a.sa, len) == 0, "connect");
	int s = accept(fd, NULL, NULL);
	CHECK(s >= 0, "accept");
	close(s);
	close(c);
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

static int t_unconnected(const void *arg)
{
	(void)arg;
	struct libsoccr_sk_data d;
	int fds = count_fds();
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	CHECK(sk, "pause of an unconnected socket works (repair is allowed in CLOSE)");
	errno = 0;
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == -2 && errno == ENOTCONN, "save: -2 ENOTCONN");
	CHECK(!libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0) && errno == ENODATA, "no queue");
	libsoccr_resume(sk);
	CHECK(in_repair(fd) == 0, "resume turned repair off");
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

/* Bad data given to restore: rejected before any kernel call, socket untouched. */
static int t_bad_data(const void *arg)
{
	(void)arg;
	int fds = count_fds();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	union libsoccr_addr self, peer;
	struct libsoccr_sk_data good = {.state = TCP_ESTABLISHED, .inq_seq = 1000,
					.outq_seq = 2000, .mss_clamp = 1460};
	CHECK(sk, "pause");
	make_addr(&self, NULL, AF_INET, "127.0.0.1", 40001);
	make_addr(&peer, NULL, AF_INET, "127.0.0.1", 40002);

	static const char *const cases[] = {
		"state LISTEN", "state TIME_WAIT", "state 99", "unsq_len > outq_len",
		"unknown flags", "window scale 15", "FIN_WAIT2 with data in flight",
		"option bits outside tcpi_options (a u8)",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct libsoccr_sk_data d = good;
		switch (i) {
		case 0: d.state = TCP_LISTEN; break;
		case 1: d.state = TCP_TIME_WAIT; break;
		case 2: d.state = 99; break;
		case 3: d.outq_len = 1; d.unsq_len = 2; break;
		case 4: d.flags = 0x8; break;
		case 5: d.opt_mask = TCPI_OPT_WSCALE; d.snd_wscale = 15; break;
		case 6: d.state = TCP_FIN_WAIT2; d.outq_len = 5; break;
		case 7: d.opt_mask = 0x100; break;
		}
		errno = 0;
		CHECK(libsoccr_restore(sk, &d, sizeof(d)) == -1 && errno == EINVAL, "%s: EINVAL",
		      cases[i]);
		errno = 0;
		CHECK(libsoccr_set_sk_data_unbound(sk, &d, sizeof(d)) == -1 && errno == EINVAL,
		      "%s (staged): EINVAL", cases[i]);
	}
	errno = 0;
	CHECK(libsoccr_restore(sk, &good, sizeof(good) - 4) == -1 && errno == EINVAL, "data_size");
	CHECK(libsoccr_restore(sk, NULL, sizeof(good)) == -1 && errno == EINVAL, "NULL data");
	CHECK(libsoccr_restore(NULL, &good, sizeof(good)) == -1 && errno == EINVAL, "NULL handle");
	CHECK(libsoccr_restore(sk, &good, sizeof(good)) == -1 && errno == EINVAL, "no addresses");
	CHECK(libsoccr_set_addr(sk, 1, &self, 0) == 0 && libsoccr_set_addr(sk, 0, &peer, 0) == 0,
	      "set_addr");
	struct libsoccr_sk_data withq = good;
	withq.inq_len = 10;
	CHECK(libsoccr_restore(sk, &withq, sizeof(withq)) == -1 && errno == EINVAL,
	      "queue bytes missing");
	union libsoccr_addr bad_family = {.sa = {.sa_family = AF_UNIX}};
	CHECK(libsoccr_set_addr(sk, 1, &bad_family, 0) == -1 && errno == EINVAL, "AF_UNIX addr");
	union libsoccr_addr sa;
	socklen_t len = sizeof(sa);
	CHECK(getsockname(fd, &sa.sa, &len) == 0 && sa.v4.sin_port == 0, "still unbound");
	CHECK(tcp_state_of(fd) == TCP_CLOSE && in_repair(fd) == 1, "untouched");
	libsoccr_release(sk);
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

/* The source address is not configured here: bind fails, EADDRNOTAVAIL. */
static int t_address_missing(const void *arg)
{
	(void)arg;
	int fds = count_fds();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	union libsoccr_addr self, peer;
	struct libsoccr_sk_data d = {.state = TCP_ESTABLISHED, .inq_seq = 1000, .outq_seq = 2000,
				     .mss_clamp = 1460};
	CHECK(sk, "pause");
	make_addr(&self, NULL, AF_INET, "10.99.99.99", 40001);
	make_addr(&peer, NULL, AF_INET, "10.99.99.98", 40002);
	libsoccr_set_addr(sk, 1, &self, 0);
	libsoccr_set_addr(sk, 0, &peer, 0);
	errno = 0;
	CHECK(libsoccr_restore(sk, &d, sizeof(d)) == -1 && errno == EADDRNOTAVAIL,
	      "EADDRNOTAVAIL");
	CHECK(tcp_state_of(fd) == TCP_CLOSE, "not connected");
	libsoccr_release(sk);
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	return 0;
}

/* Without CAP_NET_ADMIN: EPERM, and the connection is unaffected. */
static int t_no_cap(const void *arg)
{
	(void)arg;
	struct pair p;
	struct pair_opts po = {.fam = FAM_V4, .cli_ns = -1, .srv_ns = -1};
	struct stream c2s, s2c;

	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	int fds = count_fds();
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		/* uid 65534 in the initial user namespace: no capabilities at all. */
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		errno = 0;
		if (libsoccr_pause(p.srv))
			_exit(11);
		_exit(errno == EPERM ? 0 : 12);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: pause without CAP_NET_ADMIN "
	      "must fail with EPERM (status %d)", status);
	CHECK(in_repair(p.srv) == 0, "not in repair");
	CHECK(count_fds() == fds, "no fd leaked");
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	struct pump_end a = {.fd = p.srv, .out = &s2c, .in = &c2s, .extra = 5000};
	struct pump_end b = {.fd = p.cli, .out = &c2s, .in = &s2c, .extra = 5000};
	TRY(pump_until_closed(&a, &b, 10000));
	close(p.srv);
	close(p.cli);
	return 0;
}

/* libsoccr's contract: repair mode does not block input, the caller must. Data the peer sends
 * after pause is still received and acknowledged (and so belongs in the save). */
static int t_unlocked_traffic(const void *arg)
{
	(void)arg;
	struct pair p;
	struct pair_opts po = {.fam = FAM_V4, .cli_ns = -1, .srv_ns = -1};
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;

	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	/* Repair mode does not stop input: the peer's data is received and acknowledged. */
	TRY(stream_write_all(p.cli, &c2s, 777, 5000));
	TRY(wait_queue(p.srv, false, 777, 5000));
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68 && d.inq_len == 777, "save sees it");
	libsoccr_resume(sk);
	struct pump_end a = {.fd = p.srv, .out = &s2c, .in = &c2s, .extra = 5000};
	struct pump_end b = {.fd = p.cli, .out = &c2s, .in = &s2c, .extra = 5000};
	TRY(pump_until_closed(&a, &b, 10000));
	close(p.srv);
	close(p.cli);
	return 0;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* In a user namespace (root there, not in the initial namespace) SO_SNDBUFFORCE and
 * SO_RCVBUFFORCE are refused: libsoccr falls back to SO_SNDBUF/SO_RCVBUF and unsent data that
 * fits still arrives intact. */
static int t_userns(const void *arg)
{
	(void)arg;
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		int big = 1 << 24, fd;
		if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0 ||
		    write_file("/proc/self/setgroups", "deny") < 0 ||
		    write_file("/proc/self/uid_map", "0 0 1") < 0 ||
		    write_file("/proc/self/gid_map", "0 0 1") < 0 || test_lo_up() < 0) {
			perror("userns setup");
			exit(20);
		}
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) == 0 ||
		    errno != EPERM) {
			fprintf(stderr, "  SO_SNDBUFFORCE should be refused in a user namespace\n");
			exit(21);
		}
		close(fd);
		struct scenario sc = {.fam = FAM_V4, .state = TCP_ESTABLISHED, .recvq = 1000,
				      .sendq = 65536, .zero_window = true, .extra = 65536};
		exit(run_scenario(&sc) ? 22 : 0);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "userns child status %d", status);
	return 0;
}

static int set_net_raw(bool on)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct caps[2];

	if (syscall(SYS_capget, &hdr, caps) < 0)
		return -1;
	if (on)
		caps[0].effective |= 1u << CAP_NET_RAW;
	else
		caps[0].effective &= ~(1u << CAP_NET_RAW);
	return (int)syscall(SYS_capset, &hdr, caps);
}

/* A failure after connect (no CAP_NET_RAW for the peer's FIN in CLOSE_WAIT) is rolled back: the
 * socket is disconnected silently, and the same image then restores into a new socket. */
static int t_no_net_raw(const void *arg)
{
	(void)arg;
	struct pair p;
	struct pair_opts po = {.fam = FAM_V6, .cli_ns = -1, .srv_ns = -1};
	struct stream c2s, s2c;
	struct saved_conn saved, copy;
	struct rst_counters c0, c1;
	char guard[64];

	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	TRY(read_rst_counters(&c0));
	TRY(stream_write_all(p.cli, &c2s, 500, 5000));
	CHECK(shutdown(p.cli, SHUT_WR) == 0, "shutdown");
	TRY(wait_state(p.srv, TCP_CLOSE_WAIT, 5000));
	TRY(lock_socket(p.srv));
	TRY(dump_socket(p.srv, &saved));
	TRY(nft_drop_flow(-1, saved.peer, saved.self, guard, sizeof(guard)));
	close(p.srv);
	copy = saved;
	copy.recvq = memcpy(malloc(500), saved.recvq, 500);
	copy.self = memcpy(malloc(sizeof(*saved.self)), saved.self, sizeof(*saved.self));
	copy.peer = memcpy(malloc(sizeof(*saved.peer)), saved.peer, sizeof(*saved.peer));

	CHECK(set_net_raw(false) == 0, "drop CAP_NET_RAW");
	int fds = count_fds();
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	CHECK(sk, "pause (CAP_NET_ADMIN is enough)");
	libsoccr_set_addr(sk, 1, saved.self, SOCCR_MEM_EXCL);
	libsoccr_set_addr(sk, 0, saved.peer, SOCCR_MEM_EXCL);
	libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, saved.recvq, SOCCR_MEM_EXCL);
	errno = 0;
	CHECK(libsoccr_restore(sk, &saved.data, sizeof(saved.data)) == -1 && errno == EPERM,
	      "peer FIN without CAP_NET_RAW: EPERM");
	CHECK(tcp_state_of(fd) == TCP_CLOSE && in_repair(fd) == 1, "disconnected, repair on");
	libsoccr_release(sk);
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");
	CHECK(set_net_raw(true) == 0, "CAP_NET_RAW back");

	fd = restore_socket(&copy, AF_INET6);
	CHECK(fd >= 0, "restore with CAP_NET_RAW");
	CHECK(tcp_state_of(fd) == TCP_CLOSE_WAIT, "CLOSE_WAIT");
	TRY(nft_delete_table(-1, guard));
	TRY(set_nonblock(fd));
	struct pump_end a = {.fd = fd, .out = &s2c, .in = &c2s, .extra = 70000};
	struct pump_end b = {.fd = p.cli, .out = &c2s, .in = &s2c, .wr_shut = true};
	TRY(pump_until_closed(&a, &b, 10000));
	TRY(wait_state(fd, TCP_CLOSE, 5000));
	TRY(read_rst_counters(&c1));
	CHECK(rst_counters_equal(&c0, &c1), "no RST");
	close(fd);
	close(p.cli);
	return 0;
}

void register_negative_tests(void)
{
	test_add(t_no_net_raw, NULL, "negative: no CAP_NET_RAW for the peer's FIN (EPERM, rolled back)");
	test_add(t_userns, NULL, "userns: no SO_*BUFFORCE, fallback buffers, unsent data intact");
	test_add(t_not_a_socket, NULL, "negative: not a socket (ENOTSOCK, EBADF)");
	test_add(t_udp, NULL, "negative: UDP and AF_UNIX sockets");
	test_add(t_listening, NULL, "negative: listening socket (EPERM, keeps listening)");
	test_add(t_unconnected, NULL, "negative: unconnected socket (-2 ENOTCONN)");
	test_add(t_bad_data, NULL, "negative: bad data_size, state and fields (EINVAL, untouched)");
	test_add(t_address_missing, NULL, "negative: source address not present (EADDRNOTAVAIL)");
	test_add(t_no_cap, NULL, "negative: no CAP_NET_ADMIN (EPERM)");
	test_add(t_unlocked_traffic, NULL, "contract: repair mode alone does not block input");
}
