#define _GNU_SOURCE
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

void stream_init(struct stream *s, int dir)
{
	memset(s, 0, sizeof(*s));
	s->dir = dir;
	s->hash_w = s->hash_r = FNV_OFFSET;
}

uint8_t stream_byte(int dir, uint64_t pos)
{
	uint64_t x = pos * 0x9E3779B97F4A7C15ULL + (uint64_t)(dir + 1) * 0xD1B54A32D192ED03ULL;
	x ^= x >> 29;
	return (uint8_t)(x ^ (x >> 17) ^ pos);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * FNV_PRIME;
	return h;
}

ssize_t stream_write(int fd, struct stream *s, uint64_t max)
{
	uint8_t buf[65536];
	size_t n = max < sizeof(buf) ? (size_t)max : sizeof(buf);

	for (size_t i = 0; i < n; i++)
		buf[i] = stream_byte(s->dir, s->written + i);
	ssize_t ret = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (ret < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
	s->hash_w = fnv(s->hash_w, buf, (size_t)ret);
	s->written += (uint64_t)ret;
	return ret;
}

int stream_read(int fd, struct stream *s)
{
	uint8_t buf[65536];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		if (n == 0) {
			s->eof = true;
			return 1;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != stream_byte(s->dir, s->read + (uint64_t)i)) {
				fprintf(stderr, "  stream %d: wrong byte at %" PRIu64 "\n", s->dir,
					s->read + (uint64_t)i);
				errno = EILSEQ;
				return -1;
			}
		}
		s->hash_r = fnv(s->hash_r, buf, (size_t)n);
		s->read += (uint64_t)n;
	}
}

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int stream_write_all(int fd, struct stream *s, uint64_t n, int timeout_ms)
{
	uint64_t target = s->written + n;
	long deadline = now_ms() + timeout_ms;

	while (s->written < target) {
		ssize_t w = stream_write(fd, s, target - s->written);
		if (w < 0) {
			perror("  stream write");
			return -1;
		}
		if (w == 0) {
			if (now_ms() > deadline) {
				fprintf(stderr, "  stream write timed out\n");
				return -1;
			}
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 10);
		}
	}
	return 0;
}

/* One end's turn: write (if any left), shut when done, read. -1 on failure. */
static int pump_step(struct pump_end *e, uint64_t *target)
{
	if (!e->wr_shut && e->out->written < *target) {
		if (stream_write(e->fd, e->out, *target - e->out->written) < 0) {
			fprintf(stderr, "  write on fd %d: %s\n", e->fd, strerror(errno));
			return -1;
		}
	}
	if (!e->wr_shut && e->out->written >= *target) {
		if (shutdown(e->fd, SHUT_WR) < 0) {
			fprintf(stderr, "  shutdown fd %d: %s\n", e->fd, strerror(errno));
			return -1;
		}
		e->wr_shut = true;
	}
	if (!e->rd_eof) {
		int r = stream_read(e->fd, e->in);
		if (r < 0) {
			fprintf(stderr, "  read on fd %d: %s\n", e->fd, strerror(errno));
			return -1;
		}
		if (r == 1)
			e->rd_eof = true;
	}
	return 0;
}

int pump_until_closed(struct pump_end *a, struct pump_end *b, int timeout_ms)
{
	uint64_t ta = a->out->written + a->extra, tb = b->out->written + b->extra;
	long deadline = now_ms() + timeout_ms;

	while (!(a->wr_shut && b->wr_shut && a->rd_eof && b->rd_eof)) {
		if (pump_step(a, &ta) < 0 || pump_step(b, &tb) < 0)
			return -1;
		if (now_ms() > deadline) {
			fprintf(stderr,
				"  pump timed out: a wrote %" PRIu64 "/%" PRIu64 " read %" PRIu64
				" eof %d, b wrote %" PRIu64 "/%" PRIu64 " read %" PRIu64 " eof %d\n",
				a->out->written, ta, a->in->read, a->rd_eof, b->out->written, tb,
				b->in->read, b->rd_eof);
			return -1;
		}
		struct pollfd p[2] = {{.fd = a->fd, .events = POLLIN}, {.fd = b->fd, .events = POLLIN}};
		if (!a->wr_shut)
			p[0].events |= POLLOUT;
		if (!b->wr_shut)
			p[1].events |= POLLOUT;
		if (a->rd_eof)
			p[0].events &= (short)~POLLIN;
		if (b->rd_eof)
			p[1].events &= (short)~POLLIN;
		poll(p, 2, 20);
	}
	/* Counts and hashes, both directions. */
	struct stream *ss[2] = {a->out, b->out};
	for (int i = 0; i < 2; i++) {
		if (ss[i]->written != ss[i]->read || ss[i]->hash_w != ss[i]->hash_r) {
			fprintf(stderr,
				"  stream %d: wrote %" PRIu64 " (hash %016" PRIx64 ") read %" PRIu64
				" (hash %016" PRIx64 ")\n",
				ss[i]->dir, ss[i]->written, ss[i]->hash_w, ss[i]->read, ss[i]->hash_r);
			return -1;
		}
	}
	return 0;
}
