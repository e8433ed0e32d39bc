/*
 * Compatibility check: a program written only against CRIU's libsoccr API (soccr/soccr.h as
 * CRIU ships it: the names, signatures, constants and the one-call restore; no node-criu
 * extensions, and no libsoccr_get_addr, which CRIU leaves unimplemented). It must compile
 * unchanged and pass against vendor/libsoccr.
 *
 * Scenario (like CRIU's soccr/test/tcp-conn.c, written independently): a loopback connection in
 * a private netns, 10 bytes queued each way, the accepted socket saved and closed in repair
 * mode, restored into a new socket from the EXCL queue buffers, resumed; then data both ways
 * and a half-close in each direction.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "soccr.h"

#define pr_fail(...) do { fprintf(stderr, "compat_api: " __VA_ARGS__); exit(1); } while (0)

static void log_fn(unsigned int level, const char *fmt, ...)
{
	va_list ap;
	if (level > SOCCR_LOG_ERR)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static void read_exact(int fd, const char *want, size_t len)
{
	char buf[64];
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			pr_fail("read: %zd (%s)\n", n, strerror(errno));
		got += (size_t)n;
	}
	if (memcmp(buf, want, len))
		pr_fail("wrong data: %.*s, want %s\n", (int)len, buf, want);
}

int main(void)
{
#ifdef TEST_IPV6
	const int family = AF_INET6;
#else
	const int family = AF_INET;
#endif
	union libsoccr_addr addr, self, peer;
	socklen_t len;
	struct libsoccr_sk_data data;
	struct libsoccr_sk *so, *so_rst;
	char *queue;
	int lsk, csk, ssk, rst, ret;

	libsoccr_set_log(SOCCR_LOG_ERR, log_fn);

	memset(&addr, 0, sizeof(addr));
	addr.sa.sa_family = family;
	if (family == AF_INET) {
		addr.v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(addr.v4);
	} else {
		addr.v6.sin6_addr = in6addr_loopback;
		len = sizeof(addr.v6);
	}
	lsk = socket(family, SOCK_STREAM, 0);
	if (lsk < 0 || bind(lsk, &addr.sa, len) || listen(lsk, 1) || getsockname(lsk, &addr.sa, &len))
		pr_fail("listen: %s\n", strerror(errno));
	csk = socket(family, SOCK_STREAM, 0);
	if (csk < 0 || connect(csk, &addr.sa, len))
		pr_fail("connect: %s\n", strerror(errno));
	ssk = accept(lsk, NULL, NULL);
	if (ssk < 0)
		pr_fail("accept: %s\n", strerror(errno));
	close(lsk);

	if (write(csk, "0123456789", 10) != 10 || write(ssk, "abcdefghij", 10) != 10)
		pr_fail("write\n");
	/* Wait (bounded) until the 10 bytes are in the accepted socket's receive queue. */
	struct pollfd pfd = {.fd = ssk, .events = POLLIN};
	if (poll(&pfd, 1, 5000) != 1)
		pr_fail("no data\n");

	so = libsoccr_pause(ssk);
	if (!so)
		pr_fail("libsoccr_pause: %s\n", strerror(errno));
	ret = libsoccr_save(so, &data, sizeof(data));
	if (ret != sizeof(data))
		pr_fail("libsoccr_save: %d\n", ret);
	if (data.state != 1 /* TCP_ESTABLISHED */ || data.inq_len != 10)
		pr_fail("saved state %u inq %u\n", data.state, data.inq_len);
	/* CRIU's libsoccr_get_addr is unimplemented: take the addresses from the socket. */
	len = sizeof(self);
	if (getsockname(ssk, &self.sa, &len))
		pr_fail("getsockname\n");
	len = sizeof(peer);
	if (getpeername(ssk, &peer.sa, &len))
		pr_fail("getpeername\n");

	so_rst = NULL;
	rst = socket(family, SOCK_STREAM, 0);
	if (rst < 0)
		pr_fail("socket\n");
	so_rst = libsoccr_pause(rst);
	if (!so_rst)
		pr_fail("libsoccr_pause (restore): %s\n", strerror(errno));

	queue = libsoccr_get_queue_bytes(so, TCP_RECV_QUEUE, SOCCR_MEM_EXCL);
	if (!queue)
		pr_fail("libsoccr_get_queue_bytes(TCP_RECV_QUEUE)\n");
	libsoccr_set_queue_bytes(so_rst, TCP_RECV_QUEUE, queue, SOCCR_MEM_EXCL);
	queue = libsoccr_get_queue_bytes(so, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	if (data.outq_len && !queue)
		pr_fail("libsoccr_get_queue_bytes(TCP_SEND_QUEUE)\n");
	if (queue)
		libsoccr_set_queue_bytes(so_rst, TCP_SEND_QUEUE, queue, SOCCR_MEM_EXCL);

	/* Close the original in repair mode: no FIN, no RST. */
	libsoccr_release(so);
	close(ssk);

	libsoccr_set_addr(so_rst, 1, &self, 0);
	libsoccr_set_addr(so_rst, 0, &peer, 0);
	if (libsoccr_restore(so_rst, &data, sizeof(data)))
		pr_fail("libsoccr_restore: %s\n", strerror(errno));
	libsoccr_resume(so_rst);

	read_exact(rst, "0123456789", 10);
	read_exact(csk, "abcdefghij", 10);
	if (write(rst, "after-rst", 9) != 9 || write(csk, "to-rst", 6) != 6)
		pr_fail("write after restore\n");
	read_exact(csk, "after-rst", 9);
	read_exact(rst, "to-rst", 6);

	/* Half-close each way: EOF is seen on the other side. */
	char c;
	shutdown(rst, SHUT_WR);
	if (read(csk, &c, 1) != 0)
		pr_fail("expected EOF on the peer\n");
	shutdown(csk, SHUT_WR);
	if (read(rst, &c, 1) != 0)
		pr_fail("expected EOF on the restored socket\n");
	close(rst);
	close(csk);
	printf("compat_api: ok\n");
	return 0;
}
