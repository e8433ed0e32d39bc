/*
 * libsoccr (node-criu): socket memory for restores. Repair-mode queue writes are bounded by the
 * socket's memory accounting like normal writes, so big queues need the send and receive
 * buffers raised while they are written (and, for unsent data, until resume), then put back
 * with their lock bits so autotuning keeps working.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "soccr-internal.h"

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

/* First chunk of a repair-mode queue write; halved on ENOMEM down to MIN_CHUNK. */
#define MAX_CHUNK (1u << 20)
#define MIN_CHUNK 1024u

static int set_int(int fd, int level, int opt, int val)
{
	return setsockopt(fd, level, opt, &val, sizeof(val));
}

static int get_int(int fd, int level, int opt, int *val)
{
	socklen_t len = sizeof(*val);
	return getsockopt(fd, level, opt, val, &len);
}

/* Repair-mode writes are still bounded by the socket's memory accounting, so big queues need
 * bigger buffers while they are written. FORCE needs CAP_NET_ADMIN in the initial namespace;
 * elsewhere fall back to the plain options (capped by net.core.[rw]mem_max). */
int soccr_raise_bufs(struct libsoccr_sk *sk)
{
	const int big = INT_MAX / 2;

	if (sk->bufs_raised)
		return 0;
	if (get_int(sk->fd, SOL_SOCKET, SO_SNDBUF, &sk->orig_sndbuf) < 0 ||
	    get_int(sk->fd, SOL_SOCKET, SO_RCVBUF, &sk->orig_rcvbuf) < 0)
		return -1;
	if (get_int(sk->fd, SOL_SOCKET, SO_BUF_LOCK, &sk->orig_buf_lock) < 0)
		sk->orig_buf_lock = -1; /* Linux < 5.14: the lock bits stay set afterwards */
	sk->bufs_raised = true;
	if (set_int(sk->fd, SOL_SOCKET, SO_SNDBUFFORCE, big) < 0)
		set_int(sk->fd, SOL_SOCKET, SO_SNDBUF, big);
	if (set_int(sk->fd, SOL_SOCKET, SO_RCVBUFFORCE, big) < 0)
		set_int(sk->fd, SOL_SOCKET, SO_RCVBUF, big);
	logd("Raised socket buffers (were snd %d rcv %d)\n", sk->orig_sndbuf, sk->orig_rcvbuf);
	return 0;
}

void soccr_put_back_bufs(struct libsoccr_sk *sk)
{
	int saved = errno;

	if (!sk->bufs_raised)
		return;
	/* The kernel doubles what is set, and getsockopt reports the doubled value. */
	if (set_int(sk->fd, SOL_SOCKET, SO_SNDBUFFORCE, sk->orig_sndbuf / 2) < 0)
		set_int(sk->fd, SOL_SOCKET, SO_SNDBUF, sk->orig_sndbuf / 2);
	if (set_int(sk->fd, SOL_SOCKET, SO_RCVBUFFORCE, sk->orig_rcvbuf / 2) < 0)
		set_int(sk->fd, SOL_SOCKET, SO_RCVBUF, sk->orig_rcvbuf / 2);
	/* Setting a size locks it (no autotuning); give back the application's lock bits. */
	if (sk->orig_buf_lock >= 0)
		set_int(sk->fd, SOL_SOCKET, SO_BUF_LOCK, sk->orig_buf_lock);
	sk->bufs_raised = false;
	errno = saved;
}

int soccr_send_all(struct libsoccr_sk *sk, const char *buf, uint32_t len)
{
	uint32_t off = 0, chunk = len < MAX_CHUNK ? len : MAX_CHUNK;
	unsigned failures = 0;

	while (off < len) {
		uint32_t n = len - off < chunk ? len - off : chunk;
		ssize_t ret = send(sk->fd, buf + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (ret > 0) {
			off += (uint32_t)ret;
			continue;
		}
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0 && (errno == ENOMEM || errno == EAGAIN || errno == ENOBUFS)) {
			/* Out of socket memory: raise the buffers once, then halve the chunk
			 * (a repair write of the receive queue allocates one skb per call). */
			if (!sk->bufs_raised) {
				if (soccr_raise_bufs(sk) < 0)
					return -1;
				continue;
			}
			if (chunk > MIN_CHUNK) {
				chunk /= 2;
				continue;
			}
			if (++failures < 3)
				continue;
		}
		if (ret == 0)
			errno = EIO;
		else if (errno == EAGAIN)
			errno = ENOBUFS; /* out of socket memory even with raised buffers */
		loge("Unable to write %u of %u queue bytes: errno %d\n", len - off, len, errno);
		return -1;
	}
	return 0;
}

/* Unsent bytes are written by resume, which cannot fail: make sure now that the whole send
 * queue fits the (raised) send buffer. Without CAP_NET_ADMIN in the initial namespace the raise
 * falls back to SO_SNDBUF, capped by net.core.wmem_max; a bigger queue fails here (ENOBUFS)
 * instead of losing bytes later. The margin covers per-skb overhead. */
int soccr_check_send_room(struct libsoccr_sk *sk, uint32_t queue_len)
{
	int sndbuf = 0;
	uint64_t need = (uint64_t)queue_len + queue_len / 8 + 65536;

	if (get_int(sk->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf) < 0)
		return -1;
	if ((uint64_t)sndbuf < need) {
		loge("Send queue of %u bytes does not fit the send buffer (%d bytes; "
		     "SO_SNDBUFFORCE not permitted?)\n", queue_len, sndbuf);
		errno = ENOBUFS;
		return -1;
	}
	return 0;
}
