/* Restore contract tests: rollback of a failed restore, 4-tuple collision and staged call order,
 * timestamp pass-through, socket buffers put back, one connection moved many times. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "stream.h"

void register_restore_tests(void);

static int dump_and_close(struct pair *p, struct saved_conn *sc)
{
	TRY(dump_socket(p->srv, sc));
	CHECK(close(p->srv) == 0, "close");
	p->srv = -1;
	return 0;
}

static struct saved_conn copy_saved(const struct saved_conn *s)
{
	struct saved_conn c = *s;
	c.recvq = s->recvq ? memcpy(malloc(s->data.inq_len), s->recvq, s->data.inq_len) : NULL;
	c.sendq = s->sendq ? memcpy(malloc(s->data.outq_len), s->sendq, s->data.outq_len) : NULL;
	c.self = memcpy(malloc(sizeof(*s->self)), s->self, sizeof(*s->self));
	c.peer = memcpy(malloc(sizeof(*s->peer)), s->peer, sizeof(*s->peer));
	return c;
}

static void free_saved(struct saved_conn *s)
{
	free(s->recvq);
	free(s->sendq);
	free(s->self);
	free(s->peer);
}

/* A restore that fails after connect() is undone: the socket is disconnected without a packet,
 * the 4-tuple is free again, and a correct restore then succeeds. */
static int t_failed_restore_rolls_back(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct saved_conn saved, bad;
	struct rst_counters c0;
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 3000, 4000, FAM_V4));
	TRY(read_rst_counters(&c0));
	TRY(dump_and_close(&p, &saved));
	bad = copy_saved(&saved);
	bad.data.max_window = 0; /* TCP_REPAIR_WINDOW: max_window < snd_wnd -> EINVAL */
	bad.data.snd_wnd = 1000;
	int fds = count_fds();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	CHECK(sk, "pause");
	libsoccr_set_addr(sk, 1, bad.self, SOCCR_MEM_EXCL);
	libsoccr_set_addr(sk, 0, bad.peer, SOCCR_MEM_EXCL);
	libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, bad.recvq, SOCCR_MEM_EXCL);
	libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, bad.sendq, SOCCR_MEM_EXCL);
	errno = 0;
	CHECK(libsoccr_restore(sk, &bad.data, sizeof(bad.data)) == -1 && errno == EINVAL,
	      "bad window: -1 EINVAL");
	CHECK(tcp_state_of(fd) == TCP_CLOSE && in_repair(fd) == 1, "disconnected, repair on");
	libsoccr_release(sk);
	close(fd);
	CHECK(count_fds() == fds, "no fd leaked");

	int good = restore_socket(&saved, AF_INET);
	CHECK(good >= 0, "restore after the failed one");
	free_saved(&saved);
	return finish_pair(good, p.cli, &c2s, &s2c, &c0);
}

/* The same 4-tuple twice: EADDRNOTAVAIL, nothing disturbed. Staged calls out of order: EINVAL. */
static int t_collision_and_order(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct saved_conn saved, again;
	struct rst_counters c0;
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 10, 20, FAM_V6));
	TRY(read_rst_counters(&c0));
	TRY(dump_and_close(&p, &saved));
	again = copy_saved(&saved);
	int fd = restore_socket(&saved, AF_INET6);
	CHECK(fd >= 0, "first restore");
	int fds = count_fds();
	int dup_fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(dup_fd);
	CHECK(sk, "pause");
	errno = 0;
	CHECK(libsoccr_set_sk_data_noq(sk, &again.data, sizeof(again.data)) == -1 &&
		      errno == EINVAL,
	      "noq before unbound");
	CHECK(libsoccr_set_sk_data(sk, &again.data, sizeof(again.data)) == -1 && errno == EINVAL,
	      "set_sk_data first");
	CHECK(libsoccr_restore_queue(sk, &again.data, sizeof(again.data), TCP_RECV_QUEUE,
				     again.recvq) == -1 && errno == EINVAL,
	      "queue first");
	libsoccr_set_addr(sk, 1, again.self, 0);
	libsoccr_set_addr(sk, 0, again.peer, 0);
	libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, again.recvq, 0);
	libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, again.sendq, 0);
	CHECK(libsoccr_restore(sk, &again.data, sizeof(again.data)) == -1 &&
		      errno == EADDRNOTAVAIL,
	      "4-tuple in use: EADDRNOTAVAIL");
	CHECK(tcp_state_of(dup_fd) == TCP_CLOSE, "not connected");
	libsoccr_release(sk);
	close(dup_fd);
	free_saved(&again);
	CHECK(count_fds() == fds, "no fd leaked");
	return finish_pair(fd, p.cli, &c2s, &s2c, &c0);
}

/* TCP_TIMESTAMP goes back unmodified (including bit 0, the usec flag on >= 6.7). */
static int t_timestamp(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct saved_conn saved;
	struct rst_counters c0;
	uint32_t ts = 0;
	socklen_t len = sizeof(ts);
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 0, 0, FAM_V4));
	TRY(read_rst_counters(&c0));
	TRY(dump_and_close(&p, &saved));
	CHECK(saved.data.opt_mask & TCPI_OPT_TIMESTAMPS, "timestamps on");
	uint32_t before = saved.data.timestamp;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	CHECK(sk, "pause");
	libsoccr_set_addr(sk, 1, saved.self, SOCCR_MEM_EXCL);
	libsoccr_set_addr(sk, 0, saved.peer, SOCCR_MEM_EXCL);
	CHECK(libsoccr_restore(sk, &saved.data, sizeof(saved.data)) == 0, "restore");
	CHECK(getsockopt(fd, SOL_TCP, TCP_TIMESTAMP, &ts, &len) == 0, "read back");
	CHECK((ts & 1) == (before & 1), "usec flag bit kept (%u vs %u)", ts, before);
	CHECK(ts - before < 100000000u, "clock continues from the saved value (%u -> %u)", before, ts);
	libsoccr_resume(sk);
	return finish_pair(fd, p.cli, &c2s, &s2c, &c0);
}

/* Buffers raised for a restore are put back (sizes and SO_BUF_LOCK: autotuning stays on). */
static int t_bufs_put_back(const void *arg)
{
	struct pair p;
	struct pair_opts po = {.fam = FAM_V4, .cli_ns = -1, .srv_ns = -1, .cli_rcvbuf = 2048};
	struct stream c2s, s2c;
	struct saved_conn saved;
	struct rst_counters c0;
	int def_snd, def_rcv, snd, rcv, lock = -1;
	socklen_t len = sizeof(int);
	(void)arg;

	int fresh = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(getsockopt(fresh, SOL_SOCKET, SO_SNDBUF, &def_snd, &len) == 0, "default sndbuf");
	CHECK(getsockopt(fresh, SOL_SOCKET, SO_RCVBUF, &def_rcv, &len) == 0, "default rcvbuf");
	close(fresh);
	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	TRY(read_rst_counters(&c0));
	/* the peer does not read: most of this stays unsent, so restore must raise the buffers */
	for (int i = 0; i < 100 && s2c.written < 300000; i++) {
		CHECK(stream_write(p.srv, &s2c, 300000 - s2c.written) >= 0, "write");
		sleep_ms(2);
	}
	TRY(lock_socket(p.srv));
	TRY(dump_socket(p.srv, &saved));
	CHECK(saved.data.unsq_len > 0, "unsent data");
	close(p.srv);
	int fd = restore_socket(&saved, AF_INET);
	CHECK(fd >= 0, "restore");
	/* Raised means INT_MAX/2 (doubled); put back means the connected socket's own size
	 * (at most the tcp_wmem/tcp_rmem maximum, 4/6 MB by default). */
	CHECK(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &len) == 0 && snd >= def_snd &&
		      snd <= 64 << 20,
	      "sndbuf put back (is %d)", snd);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len) == 0 && rcv >= def_rcv / 2 &&
		      rcv <= 64 << 20,
	      "rcvbuf put back (is %d)", rcv);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_BUF_LOCK, &lock, &len) == 0 && lock == 0,
	      "no buffer lock left (%d)", lock);
	return finish_pair(fd, p.cli, &c2s, &s2c, &c0);
}

/* One connection moved 20 times in a row, with new data in both queues before every dump. */
static int t_cycles(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct rst_counters c0;
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 100, 100, FAM_V6));
	TRY(read_rst_counters(&c0));
	int srv = p.srv;
	for (int i = 0; i < 20; i++) {
		struct saved_conn saved;
		char guard[64];
		TRY(dump_socket(srv, &saved));
		TRY(nft_drop_flow(-1, saved.peer, saved.self, guard, sizeof(guard)));
		close(srv);
		srv = restore_socket(&saved, AF_INET6);
		CHECK(srv >= 0, "restore %d", i);
		TRY(nft_delete_table(-1, guard));
		TRY(set_nonblock(srv));
		/* more data each way; the server reads nothing, so its receive queue grows */
		TRY(stream_write_all(p.cli, &c2s, 1000, 5000));
		TRY(wait_queue(srv, false, (int)(c2s.written - c2s.read), 5000));
		TRY(stream_write_all(srv, &s2c, 1000, 5000));
		TRY(stream_read(p.cli, &s2c) < 0 ? -1 : 0);
		/* Per move, so a reset (one was counted once in CI, never here) names its move. */
		struct rst_counters now;
		TRY(read_rst_counters(&now));
		CHECK(rst_counters_equal(&c0, &now), "no RST after move %d", i);
	}
	return finish_pair(srv, p.cli, &c2s, &s2c, &c0);
}

void register_restore_tests(void)
{
	test_add(t_bufs_put_back, NULL, "api: raised socket buffers put back, autotuning kept");
	test_add(t_cycles, NULL, "api: one connection moved 20 times, data added each time");
	test_add(t_failed_restore_rolls_back, NULL, "api: failed restore is rolled back silently");
	test_add(t_collision_and_order, NULL, "api: 4-tuple collision, staged calls out of order");
	test_add(t_timestamp, NULL, "api: TCP_TIMESTAMP passed through");
}
