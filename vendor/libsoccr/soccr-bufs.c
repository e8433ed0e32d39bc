/*
 * libsoccr (node-criu): socket memory for restores, and the unsent tail of the send queue.
 * Repair-mode queue writes are bounded by the socket's memory accounting like normal writes, so
 * big queues need the send and receive buffers raised while they are written, then put back with
 * their lock bits so autotuning keeps working.
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
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
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

/*
 * The unsent tail must leave only after repair mode is off, yet a caller may end repair mode
 * itself (setsockopt TCP_REPAIR 0, as CRIU's restorer does) instead of libsoccr_resume. So it
 * goes into the kernel now, as never-sent data, with nothing transmitted meanwhile: the send
 * window is closed at snd_nxt (TCP_REPAIR_WINDOW), repair is left without a window probe, the
 * bytes (and our FIN) are written as normal data, which the closed window holds back, repair is
 * turned on again and the saved window put back. Whoever ends repair mode then finds an
 * ordinary send queue: the kernel sends it on the peer's next ACK (the window probe of
 * TCP_REPAIR=0 draws one in ESTABLISHED) or on its probe timer; libsoccr_resume pushes at once.
 * Without TCP_REPAIR_WINDOW (Linux < 4.8) the bytes are sent at once instead (CRIU's way).
 */
int soccr_queue_unsent(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data, bool fin)
{
	struct tcp_repair_window saved, shut;
	socklen_t len = sizeof(saved);
	bool have_win = getsockopt(sk->fd, SOL_TCP, TCP_REPAIR_WINDOW, &saved, &len) == 0 &&
			len == sizeof(saved);
	int ret = 0, err = 0;

	if (have_win) {
		uint32_t in_flight = data->outq_len - data->unsq_len;
		shut = saved;
		shut.snd_wnd = in_flight; /* the window ends where the unsent data starts */
		if (shut.max_window < in_flight)
			shut.max_window = in_flight;
		if (setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_WINDOW, &shut, sizeof(shut)) < 0) {
			loge("Unable to close the send window: errno %d\n", errno);
			return -1;
		}
	}
	if (set_int(sk->fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP) < 0 &&
	    (errno != EINVAL || set_int(sk->fd, SOL_TCP, TCP_REPAIR, 0) < 0)) {
		loge("Unable to leave repair mode for the unsent data: errno %d\n", errno);
		ret = -1;
	}
	if (!ret && soccr_send_all(sk, sk->unsent, sk->unsent_len) < 0)
		ret = -1;
	if (!ret && fin && shutdown(sk->fd, SHUT_WR) < 0) {
		loge("Unable to queue our FIN: errno %d\n", errno);
		ret = -1;
	}
	err = errno;
	/* Back in repair mode also after a failure: the caller's rollback needs it. */
	if (set_int(sk->fd, SOL_TCP, TCP_REPAIR, 1) < 0) {
		loge("Unable to re-enter repair mode: errno %d\n", errno);
		return -1;
	}
	if (have_win && setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_WINDOW, &saved, sizeof(saved)) < 0) {
		loge("Unable to reopen the send window: errno %d\n", errno);
		return -1;
	}
	if (ret) {
		errno = err;
		return -1;
	}
	sk->unsent_queued = true;
	logd("Queued %u unsent bytes%s\n", sk->unsent_len, fin ? " and our FIN" : "");
	return 0;
}

/* Switching TCP_CORK off pushes the send queue out, even when it was off already; the
 * application's setting is put back. */
void soccr_push_unsent(struct libsoccr_sk *sk)
{
	int cork = 0;
	socklen_t len = sizeof(cork);

	if (!sk->unsent_queued)
		return;
	if (getsockopt(sk->fd, SOL_TCP, TCP_CORK, &cork, &len) < 0 ||
	    set_int(sk->fd, SOL_TCP, TCP_CORK, 0) < 0 ||
	    (cork && set_int(sk->fd, SOL_TCP, TCP_CORK, 1) < 0))
		loge("Unable to push the unsent data: errno %d\n", errno);
}
