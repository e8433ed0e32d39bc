/* API contract tests: data_size handling, buffer/address ownership, the global log callback and
 * errno, repeated save, resume on the dump side, staged call order, rollback of a failed
 * restore, 4-tuple collision, timestamp pass-through. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "stream.h"

void register_api_tests(void);

/* A v4 loopback pair; cli sent in_bytes (unread in srv), srv sent out_bytes while its
 * incoming ACKs were dropped (locked), so both queues are non-empty. srv is locked. */
static int loaded_pair(struct pair *p, struct stream *c2s, struct stream *s2c, uint32_t in_bytes,
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
static int finish_pair(int srv, int cli, struct stream *c2s, struct stream *s2c,
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

static int t_data_size(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	unsigned char big[100] __attribute__((aligned(8)));
	struct libsoccr_sk_data *d = (struct libsoccr_sk_data *)big;
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 10, 10, FAM_V4));
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	errno = 0;
	CHECK(libsoccr_save(sk, d, sizeof(*d) - 1) == -1 && errno == EINVAL, "short data_size");
	CHECK(libsoccr_save(sk, NULL, sizeof(*d)) == -1 && errno == EINVAL, "NULL data");
	CHECK(libsoccr_save(NULL, d, sizeof(*d)) == -1 && errno == EINVAL, "NULL handle");
	memset(big, 0xAB, sizeof(big));
	CHECK(libsoccr_save(sk, d, sizeof(big)) == 68, "bigger data_size returns 68");
	for (size_t i = 68; i < sizeof(big); i++)
		CHECK(big[i] == 0, "bytes past the struct are zeroed (byte %zu)", i);
	CHECK(sizeof(struct libsoccr_sk_data) == 68, "ABI size");
	CHECK(d->inq_len == 10 && d->outq_len == 10 && d->state == TCP_ESTABLISHED, "fields");
	libsoccr_resume(sk);
	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

static int t_ownership(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 100, 200, FAM_V6));
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	errno = 0;
	CHECK(!libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0) && errno == ENODATA, "before save");
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "save");
	CHECK(!libsoccr_get_queue_bytes(sk, 7, 0) && errno == EINVAL, "bad queue id");
	CHECK(!libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0x80) && errno == EINVAL, "bad flags");
	char *r1 = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0);
	char *r2 = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0);
	CHECK(r1 && r1 == r2, "without EXCL the handle keeps the buffer");
	for (uint32_t i = 0; i < d.inq_len; i++)
		CHECK((uint8_t)r1[i] == stream_byte(0, i), "receive queue byte %u", i);
	char *mine = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	CHECK(mine, "EXCL");
	CHECK(!libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, 0) && errno == ENODATA,
	      "after EXCL the handle no longer has it");
	for (uint32_t i = 0; i < d.outq_len; i++)
		CHECK((uint8_t)mine[i] == stream_byte(1, i), "send queue byte %u", i);
	free(mine); /* ASan: a double free or leak here fails the test */

	/* Second save on the same handle replaces the buffers (no leak). */
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "second save");
	CHECK(libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, 0), "send queue saved again");

	union libsoccr_addr *self = libsoccr_get_addr(sk, 1, 0), *peer = libsoccr_get_addr(sk, 0, 0);
	union libsoccr_addr *peer_mine = libsoccr_get_addr(sk, 0, SOCCR_MEM_EXCL);
	CHECK(self && peer && peer_mine && peer != peer_mine, "get_addr");
	CHECK(!memcmp(peer, peer_mine, sizeof(*peer)), "same address");
	CHECK(self->sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&self->v6.sin6_addr), "self");
	free(peer_mine);
	CHECK(!libsoccr_get_addr(sk, 1, 0x10) && errno == EINVAL, "bad flags");

	/* set_* ownership: EXCL buffers are freed by the handle, others are not touched. */
	int nfd = socket(AF_INET6, SOCK_STREAM, 0);
	struct libsoccr_sk *rsk = libsoccr_pause(nfd);
	CHECK(rsk, "pause new");
	char stack_buf[4] = "abc";
	CHECK(libsoccr_set_queue_bytes(rsk, TCP_RECV_QUEUE, stack_buf, 0) == 0, "non-EXCL set");
	CHECK(libsoccr_set_queue_bytes(rsk, TCP_SEND_QUEUE, malloc(10), SOCCR_MEM_EXCL) == 0,
	      "EXCL set");
	CHECK(libsoccr_set_queue_bytes(rsk, TCP_SEND_QUEUE, malloc(10), SOCCR_MEM_EXCL) == 0,
	      "EXCL set replaces and frees the previous one");
	CHECK(libsoccr_set_queue_bytes(rsk, 0, stack_buf, 0) == -1 && errno == EINVAL, "bad id");
	union libsoccr_addr any = {.v6 = {.sin6_family = AF_INET6}};
	CHECK(libsoccr_set_addr(rsk, 1, &any, 0x4) == -1 && errno == EINVAL, "bad flags");
	libsoccr_release(rsk);
	close(nfd);

	libsoccr_resume(sk);
	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

static int log_calls, log_debug_calls;
static void clobbering_log(unsigned level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_calls++;
	if (level == SOCCR_LOG_DBG)
		log_debug_calls++;
	if (level == SOCCR_LOG_ERR && strncmp(buf, "Error (", 7))
		log_calls = -1000;
	if (level == SOCCR_LOG_DBG && strncmp(buf, "Debug: ", 7))
		log_calls = -1000;
	errno = EXDEV; /* a callback that changes errno must not hide the real cause */
}

static int t_log_errno(const void *arg)
{
	struct libsoccr_sk_data d = {0};
	(void)arg;

	libsoccr_set_log(SOCCR_LOG_ERR, clobbering_log);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	CHECK(sk, "pause");
	errno = 0;
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == -2 && errno == ENOTCONN,
	      "unconnected: -2 ENOTCONN despite the callback");
	CHECK(log_calls > 0 && log_debug_calls == 0, "error logged, debug filtered (%d/%d)",
	      log_calls, log_debug_calls);
	libsoccr_set_log(SOCCR_LOG_DBG, clobbering_log);
	d.state = TCP_LISTEN;
	CHECK(libsoccr_restore(sk, &d, sizeof(d)) == -1 && errno == EINVAL, "bad state: EINVAL");
	libsoccr_release(sk);
	close(fd);

	struct pair p;
	struct stream c2s, s2c;
	TRY(loaded_pair(&p, &c2s, &s2c, 5, 5, FAM_V4));
	sk = libsoccr_pause(p.srv);
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "save");
	CHECK(log_debug_calls > 0, "debug messages at SOCCR_LOG_DBG");
	libsoccr_resume(sk);
	libsoccr_set_log(0, NULL);
	CHECK(log_calls > 0, "callback format prefixes");
	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

/* Dump-side resume: the connection carries on; SO_REUSEADDR survives repair mode. */
static int t_resume_dump_side(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;
	int on = 1, v = 0;
	socklen_t len = sizeof(v);
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 1000, 1000, FAM_MAPPED));
	CHECK(setsockopt(p.srv, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0, "reuseaddr");
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk && in_repair(p.srv) == 1, "paused");
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "save");
	libsoccr_resume(sk);
	CHECK(in_repair(p.srv) == 0, "repair off");
	CHECK(getsockopt(p.srv, SOL_SOCKET, SO_REUSEADDR, &v, &len) == 0 && v == 1,
	      "SO_REUSEADDR re-applied (%d)", v);
	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

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

/* SO_PEEK_OFF (TCP, Linux >= 6.9) must not shift what save() peeks; the app's value stays. */
static int t_peek_off(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;
	int off = 3, v = -5;
	socklen_t len = sizeof(v);
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 10, 0, FAM_V4));
	CHECK(setsockopt(p.srv, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) == 0, "SO_PEEK_OFF");
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68 && d.inq_len == 10, "save");
	char *q = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0);
	for (int i = 0; i < 10; i++)
		CHECK((uint8_t)q[i] == stream_byte(0, (uint64_t)i), "byte %d from the queue start", i);
	CHECK(getsockopt(p.srv, SOL_SOCKET, SO_PEEK_OFF, &v, &len) == 0 && v == 3,
	      "SO_PEEK_OFF put back (%d)", v);
	libsoccr_resume(sk);
	v = -1;
	CHECK(setsockopt(p.srv, SOL_SOCKET, SO_PEEK_OFF, &v, sizeof(v)) == 0, "SO_PEEK_OFF off");
	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
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
	}
	return finish_pair(srv, p.cli, &c2s, &s2c, &c0);
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

void register_api_tests(void)
{
	test_add(t_bufs_put_back, NULL, "api: raised socket buffers put back, autotuning kept");
	test_add(t_peek_off, NULL, "api: SO_PEEK_OFF does not shift the saved queue");
	test_add(t_cycles, NULL, "api: one connection moved 20 times, data added each time");
	test_add(t_data_size, NULL, "api: data_size, 68-byte ABI, zeroed tail");
	test_add(t_ownership, NULL, "api: queue/address ownership with and without EXCL");
	test_add(t_log_errno, NULL, "api: log levels, prefixes, errno kept across the callback");
	test_add(t_resume_dump_side, NULL, "api: resume on the dump side, SO_REUSEADDR kept");
	test_add(t_failed_restore_rolls_back, NULL, "api: failed restore is rolled back silently");
	test_add(t_collision_and_order, NULL, "api: 4-tuple collision, staged calls out of order");
	test_add(t_timestamp, NULL, "api: TCP_TIMESTAMP passed through");
}
