/*
 * The libsoccr sequence bench/c times, shared by the standalone benchmark (soccr_bench.c) and the
 * in-process one (inproc/soccr_inproc.c, which js-soccr-bench.js loads to time the very same C
 * on the same connection as its JS rows). Dump: pause, save, both queues (SOCCR_MEM_EXCL, the
 * caller owns them), both addresses, release: the socket is left in repair mode. Restore: a new
 * socket, pause, addresses, queues (handed back with SOCCR_MEM_EXCL: libsoccr frees them),
 * restore, resume. Both return 0, or -1 with errno set.
 */
#ifndef NODE_CRIU_SOCCR_SEQUENCE_H
#define NODE_CRIU_SOCCR_SEQUENCE_H

#include <errno.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "soccr.h"

struct image {
	struct libsoccr_sk_data d;
	char *inq, *outq;
	union libsoccr_addr self, peer;
};

static inline double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static inline int lib_dump(int fd, struct image *im)
{
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	if (!sk)
		return -1;
	if (libsoccr_save(sk, &im->d, sizeof(im->d)) != sizeof(im->d)) {
		int err = errno;
		libsoccr_resume(sk);
		errno = err;
		return -1;
	}
	im->inq = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, SOCCR_MEM_EXCL);
	im->outq = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	union libsoccr_addr *a = libsoccr_get_addr(sk, 1, 0), *b = libsoccr_get_addr(sk, 0, 0);
	if (!a || !b) {
		libsoccr_resume(sk);
		errno = EINVAL;
		return -1;
	}
	im->self = *a;
	im->peer = *b;
	libsoccr_release(sk);
	return 0;
}

/* Returns the restored socket, or -1 (errno set; nothing left open). */
static inline int lib_restore(struct image *im)
{
	int fd = socket(im->self.sa.sa_family, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	if (!sk) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	libsoccr_set_addr(sk, 1, &im->self, 0);
	libsoccr_set_addr(sk, 0, &im->peer, 0);
	if (im->inq)
		libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, im->inq, SOCCR_MEM_EXCL);
	if (im->outq)
		libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, im->outq, SOCCR_MEM_EXCL);
	im->inq = im->outq = NULL;
	if (libsoccr_restore(sk, &im->d, sizeof(im->d))) {
		int err = errno;
		libsoccr_release(sk);
		close(fd); /* repair mode on: silent */
		errno = err;
		return -1;
	}
	libsoccr_resume(sk);
	return fd;
}

#endif
