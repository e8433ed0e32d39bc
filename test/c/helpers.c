/* Small building blocks shared by the C tests and reused by the scenario runner: dump a socket
 * into a saved_conn, restore one, a loaded connection pair, and the final two-way check. */
#define _GNU_SOURCE
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "stream.h"

int dump_socket(int fd, struct saved_conn *out)
{
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	int ret;

	memset(out, 0, sizeof(*out));
	CHECK(sk, "libsoccr_pause");
	ret = libsoccr_save(sk, &out->data, sizeof(out->data));
	CHECK(ret == (int)sizeof(out->data), "libsoccr_save returned %d", ret);
	out->recvq = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, SOCCR_MEM_EXCL);
	out->sendq = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	out->self = libsoccr_get_addr(sk, 1, SOCCR_MEM_EXCL);
	out->peer = libsoccr_get_addr(sk, 0, SOCCR_MEM_EXCL);
	libsoccr_release(sk);
	CHECK(out->self && out->peer, "libsoccr_get_addr");
	CHECK(!out->data.inq_len || out->recvq, "receive queue buffer");
	CHECK(!out->data.outq_len || out->sendq, "send queue buffer");
	return 0;
}

int restore_socket(struct saved_conn *in, int domain)
{
	int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0), off = 0;
	struct libsoccr_sk *sk;

	if (fd < 0)
		return -1;
	if (domain == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	sk = libsoccr_pause(fd);
	if (!sk) {
		close(fd);
		return -1;
	}
	libsoccr_set_addr(sk, 1, in->self, SOCCR_MEM_EXCL);
	libsoccr_set_addr(sk, 0, in->peer, SOCCR_MEM_EXCL);
	if (in->recvq)
		libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, in->recvq, SOCCR_MEM_EXCL);
	if (in->sendq)
		libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, in->sendq, SOCCR_MEM_EXCL);
	in->self = in->peer = NULL;
	in->recvq = in->sendq = NULL;
	if (libsoccr_restore(sk, &in->data, sizeof(in->data)) < 0) {
		perror("  libsoccr_restore");
		libsoccr_release(sk);
		close(fd);
		return -1;
	}
	libsoccr_resume(sk);
	return fd;
}

/* A v4 loopback pair; cli sent in_bytes (unread in srv), srv sent out_bytes while its
 * incoming ACKs were dropped (locked), so both queues are non-empty. srv is locked. */
int loaded_pair(struct pair *p, struct stream *c2s, struct stream *s2c, uint32_t in_bytes,
		       uint32_t out_bytes, enum family fam)
{
	struct pair_opts po = {.fam = fam, .cli_ns = -1, .srv_ns = -1};

	stream_init(c2s, 0);
	stream_init(s2c, 1);
	TRY(make_pair(p, &po));
	TRY(set_nonblock(p->cli));
	TRY(set_nonblock(p->srv));
	if (in_bytes) {
		TRY(stream_write_all(p->cli, c2s, in_bytes, 5000));
		TRY(wait_queue(p->srv, false, (int)in_bytes, 5000));
	}
	TRY(lock_socket(p->srv));
	if (out_bytes)
		TRY(stream_write_all(p->srv, s2c, out_bytes, 5000));
	return 0;
}
/* Traffic both ways after a restore (or resume), then a clean close with no RST. */
int finish_pair(int srv, int cli, struct stream *c2s, struct stream *s2c,
		       const struct rst_counters *c0)
{
	struct rst_counters c1;
	struct pump_end a = {.fd = srv, .out = s2c, .in = c2s, .extra = 100000};
	struct pump_end b = {.fd = cli, .out = c2s, .in = s2c, .extra = 100000};

	TRY(set_nonblock(srv));
	TRY(pump_until_closed(&a, &b, 20000));
	TRY(wait_state(srv, TCP_CLOSE, 10000));
	TRY(wait_state(cli, TCP_CLOSE, 10000));
	TRY(read_rst_counters(&c1));
	CHECK(rst_counters_equal(c0, &c1), "no RST");
	close(srv);
	close(cli);
	return 0;
}
