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

/* libsoccr_set_queue_alloc (extension): save peeks into the caller's buffers of exactly the
 * queue lengths; the handle releases through the caller only what it did not hand out. */
struct counting_alloc {
	int allocs, releases, fail;
	unsigned lens[3];
};

static char *counting_alloc_fn(void *arg, int queue_id, unsigned len)
{
	struct counting_alloc *c = arg;
	if (c->fail) {
		errno = ENOMEM;
		return NULL;
	}
	c->allocs++;
	c->lens[queue_id] = len;
	return malloc(len);
}

static void counting_release_fn(void *arg, int queue_id, char *buf)
{
	struct counting_alloc *c = arg;
	(void)queue_id;
	c->releases++;
	free(buf);
}

static int t_queue_alloc(const void *arg)
{
	struct pair p;
	struct stream c2s, s2c;
	struct libsoccr_sk_data d;
	struct counting_alloc c = {0};
	const struct libsoccr_queue_alloc qa = {counting_alloc_fn, counting_release_fn, &c};
	const struct libsoccr_queue_alloc half = {counting_alloc_fn, NULL, &c};
	(void)arg;

	TRY(loaded_pair(&p, &c2s, &s2c, 3000, 5000, FAM_V4));
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	errno = 0;
	CHECK(libsoccr_set_queue_alloc(NULL, &qa) == -1 && errno == EINVAL, "NULL handle");
	CHECK(libsoccr_set_queue_alloc(sk, &half) == -1 && errno == EINVAL, "release missing");
	CHECK(libsoccr_set_queue_alloc(sk, &qa) == 0, "set");

	c.fail = 1;
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == -5 && errno == ENOMEM, "a failing alloc fails the save");
	c.fail = 0;
	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "save");
	CHECK(c.allocs == 2 && c.lens[TCP_RECV_QUEUE] == 3000 && c.lens[TCP_SEND_QUEUE] == 5000,
	      "one exact-length buffer per queue (allocs %d)", c.allocs);
	CHECK(libsoccr_set_queue_alloc(sk, NULL) == -1 && errno == EBUSY, "no change while saved");
	char *r = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0);
	for (uint32_t i = 0; i < d.inq_len; i++)
		CHECK((uint8_t)r[i] == stream_byte(0, i), "receive queue byte %u", i);

	CHECK(libsoccr_save(sk, &d, sizeof(d)) == 68, "second save");
	CHECK(c.allocs == 4 && c.releases == 2, "the first save's buffers released (%d)", c.releases);
	char *mine = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	CHECK(mine, "EXCL");
	for (uint32_t i = 0; i < d.outq_len; i++)
		CHECK((uint8_t)mine[i] == stream_byte(1, i), "send queue byte %u", i);
	libsoccr_resume(sk);
	CHECK(c.releases == 3, "resume released the receive queue only (%d)", c.releases);
	free(mine); /* ASan: a double release or a leak fails the test */

	TRY(unlock_socket(p.srv));
	struct rst_counters c0;
	TRY(read_rst_counters(&c0));
	return finish_pair(p.srv, p.cli, &c2s, &s2c, &c0);
}

void register_api_tests(void)
{
	test_add(t_peek_off, NULL, "api: SO_PEEK_OFF does not shift the saved queue");
	test_add(t_data_size, NULL, "api: data_size, 68-byte ABI, zeroed tail");
	test_add(t_ownership, NULL, "api: queue/address ownership with and without EXCL");
	test_add(t_log_errno, NULL, "api: log levels, prefixes, errno kept across the callback");
	test_add(t_resume_dump_side, NULL, "api: resume on the dump side, SO_REUSEADDR kept");
	test_add(t_queue_alloc, NULL, "api: queue allocator (extension): exact buffers, releases");
}
