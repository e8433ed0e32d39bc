/*
 * libsoccr (node-criu): libsoccr_save(), reading a paused socket's state and queues.
 *
 * Kernel calls, in order: TCP_INFO (state, options, window scales), TCP_MAXSEG (mss_clamp in
 * repair mode), TCP_TIMESTAMP (if timestamps are on), TCP_REPAIR_WINDOW; receive queue: SIOCINQ,
 * TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, recvmsg(MSG_PEEK) of len+1 bytes that must return exactly len
 * (anything else means traffic was not blocked); send queue: TCP_REPAIR_QUEUE, SIOCOUTQ,
 * SIOCOUTQNSD, TCP_QUEUE_SEQ, peek. Afterwards see park_queue.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "soccr-internal.h"

/* Selects a repair queue (the send queue is selected by the caller), reads its end sequence
 * number and peeks its len bytes into a new buffer (*out; NULL when len is 0). 0 or -1. */
static int save_queue(struct libsoccr_sk *sk, int queue, uint32_t len, uint32_t *seq, char **out)
{
	socklen_t optlen = sizeof(*seq);
	char probe, *buf = NULL;
	struct iovec iov[2];
	struct msghdr msg = {0};
	ssize_t got;

	*out = NULL;
	if (queue != TCP_SEND_QUEUE &&
	    setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_QUEUE, &queue, sizeof(queue)) < 0) {
		loge("Unable to select repair queue %d: errno %d\n", queue, errno);
		return -1;
	}
	if (getsockopt(sk->fd, SOL_TCP, TCP_QUEUE_SEQ, seq, &optlen) < 0) {
		loge("Unable to read the sequence of queue %d: errno %d\n", queue, errno);
		return -1;
	}
	/* The send queue only changes when the application writes or an ACK arrives; an empty
	 * receive queue is still probed so data arriving during the dump is detected. */
	if (len == 0 && queue == TCP_SEND_QUEUE)
		return 0;
	if (len) {
		buf = soccr_queue_buf_alloc(sk, queue, len);
		if (!buf) {
			loge("Unable to allocate %u bytes for queue %d\n", len, queue);
			return -1;
		}
	}
	/* len bytes into buf and one more into probe: a byte there means the queue grew. (The
	 * buffer holds exactly len bytes, so a caller's allocator need not add one.) */
	iov[0].iov_base = buf;
	iov[0].iov_len = len;
	iov[1].iov_base = &probe;
	iov[1].iov_len = 1;
	msg.msg_iov = len ? iov : iov + 1;
	msg.msg_iovlen = len ? 2 : 1;
	got = recvmsg(sk->fd, &msg, MSG_PEEK | MSG_DONTWAIT);
	if (got < 0 && len == 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		got = 0;
	if (got < 0) {
		int saved = errno; /* the log and a caller's release callback may change errno */
		loge("Unable to peek queue %d: errno %d\n", queue, saved);
		soccr_queue_buf_release(sk, queue, buf);
		errno = saved;
		return -1;
	}
	if ((size_t)got != len) {
		loge("Queue %d holds %zd bytes, expected %u: traffic was not blocked\n", queue, got,
		     len);
		soccr_queue_buf_release(sk, queue, buf);
		errno = EBUSY;
		return -1;
	}
	*out = buf;
	return 0;
}

/* SO_PEEK_OFF (TCP since Linux 6.9) would make MSG_PEEK start mid-queue; switch it off while
 * peeking. Returns the old value (-1 = off) or -2 if it cannot be read (old kernel: nothing to
 * do). */
static int peek_off_disable(int fd)
{
	int val = -1, off = -1;
	socklen_t len = sizeof(val);

	if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &val, &len) < 0)
		return -2;
	if (val >= 0 && setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) < 0)
		return -2;
	return val;
}

static void peek_off_restore(int fd, int val)
{
	int saved = errno;

	if (val >= 0 && setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &val, sizeof(val)) < 0)
		loge("Unable to restore SO_PEEK_OFF %d: errno %d\n", val, errno);
	errno = saved;
}

static int save_state(struct libsoccr_sk *sk, struct libsoccr_sk_data *data)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(sk->fd, SOL_TCP, TCP_INFO, &ti, &len) < 0) {
		loge("Unable to read TCP_INFO of %d: errno %d\n", sk->fd, errno);
		return -1;
	}
	if (len < offsetof(struct tcp_info, tcpi_rto)) {
		loge("TCP_INFO too short (%u bytes)\n", (unsigned)len);
		errno = EPROTO;
		return -1;
	}
	if (!soccr_state_supported(ti.tcpi_state)) {
		loge("Socket %d is in state %s (%u), which cannot be saved\n", sk->fd,
		     soccr_state_name(ti.tcpi_state), ti.tcpi_state);
		errno = ti.tcpi_state == TCP_CLOSE ? ENOTCONN : EINVAL;
		return -1;
	}
	data->state = ti.tcpi_state;
	data->opt_mask = ti.tcpi_options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE);
	if (data->opt_mask & TCPI_OPT_WSCALE) {
		data->snd_wscale = ti.tcpi_snd_wscale;
		data->rcv_wscale = ti.tcpi_rcv_wscale;
	}

	return 0;
}

/* Send queue lengths. Called with TCP_SEND_QUEUE selected: from then on a timer (tail loss
 * probe) that pushes new data only marks it sent, without a packet (tcp_write_xmit in repair
 * mode), so the peer never holds bytes beyond the snd_nxt we record. */
static int save_send_lengths(struct libsoccr_sk *sk, struct libsoccr_sk_data *data)
{
	int outq, unsq;

	if (ioctl(sk->fd, SIOCOUTQ, &outq) < 0 || ioctl(sk->fd, SIOCOUTQNSD, &unsq) < 0) {
		loge("Unable to read the send queue lengths of %d: errno %d\n", sk->fd, errno);
		return -1;
	}
	/* A FIN we queued but that is not acknowledged occupies one sequence number of the send
	 * queue (SIOCOUTQ counts it, and SIOCOUTQNSD does while it is unsent). The ABI counts
	 * bytes only. */
	if (soccr_our_fin_unacked(data->state)) {
		if (outq < 1) {
			loge("State %s without our FIN in the send queue\n",
			     soccr_state_name(data->state));
			errno = EPROTO;
			return -1;
		}
		outq--;
		if (unsq > 0)
			unsq--;
	}
	if (outq < 0 || unsq < 0 || unsq > outq) {
		loge("Inconsistent send queue lengths out %d unsent %d\n", outq, unsq);
		errno = EPROTO;
		return -1;
	}
	data->outq_len = (uint32_t)outq;
	data->unsq_len = (uint32_t)unsq;
	return 0;
}

static int save_options(struct libsoccr_sk *sk, struct libsoccr_sk_data *data)
{
	socklen_t len = sizeof(data->mss_clamp);

	if (getsockopt(sk->fd, SOL_TCP, TCP_MAXSEG, &data->mss_clamp, &len) < 0) {
		loge("Unable to read TCP_MAXSEG: errno %d\n", errno);
		return -1;
	}
	if (data->opt_mask & TCPI_OPT_TIMESTAMPS) {
		len = sizeof(data->timestamp);
		/* Opaque: since Linux 6.7 bit 0 says "usec timestamps"; stored unmodified. */
		if (getsockopt(sk->fd, SOL_TCP, TCP_TIMESTAMP, &data->timestamp, &len) < 0) {
			loge("Unable to read TCP_TIMESTAMP: errno %d\n", errno);
			return -1;
		}
	}
	return 0;
}

static int save_window(struct libsoccr_sk *sk, struct libsoccr_sk_data *data)
{
	struct tcp_repair_window win;
	socklen_t len = sizeof(win);

	if (getsockopt(sk->fd, SOL_TCP, TCP_REPAIR_WINDOW, &win, &len) < 0) {
		if (errno == ENOPROTOOPT) {
			/* Linux < 4.8: no window to save; restore leaves the kernel's. */
			logd("TCP_REPAIR_WINDOW not supported by this kernel\n");
			return 0;
		}
		loge("Unable to read TCP_REPAIR_WINDOW: errno %d\n", errno);
		return -1;
	}
	if (len != sizeof(win)) {
		loge("TCP_REPAIR_WINDOW returned %u bytes\n", (unsigned)len);
		errno = EPROTO;
		return -1;
	}
	data->flags |= SOCCR_FLAGS_WINDOW;
	data->snd_wl1 = win.snd_wl1;
	data->snd_wnd = win.snd_wnd;
	data->max_window = win.max_window;
	data->rcv_wnd = win.rcv_wnd;
	data->rcv_wup = win.rcv_wup;
	return 0;
}

/* Which repair queue a paused socket keeps once save is done (or failed). No queue makes an
 * application write fail with EINVAL (the kernel's answer in repair mode); the send queue makes
 * a write look sent, without a packet. But with never-sent data in the send queue, the send
 * queue must stay selected: a timer (tail loss probe) would otherwise transmit new data after
 * save read snd_nxt, the peer would then hold bytes the image calls unsent, and after the
 * restore its ACKs of them would be dropped as acknowledging unsent data (the connection
 * stalls). With the send queue selected the kernel only marks such data sent. Never the
 * receive queue: writes would land there. */
static void park_queue(struct libsoccr_sk *sk)
{
	int unsent = 1, queue;

	if (ioctl(sk->fd, SIOCOUTQNSD, &unsent) < 0)
		unsent = 1;
	queue = unsent ? TCP_SEND_QUEUE : TCP_NO_QUEUE;
	if (setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_QUEUE, &queue, sizeof(queue)) < 0)
		loge("Unable to select repair queue %d: errno %d\n", queue, errno);
}

int libsoccr_save(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size)
{
	char *recvq = NULL, *sendq = NULL;
	int peek_off, ret, inq;
	int send_queue = TCP_SEND_QUEUE;

	if (!sk || !data || data_size < sizeof(*data)) {
		errno = EINVAL;
		return -1;
	}
	memset(data, 0, data_size);

	if (save_state(sk, data))
		return -2;
	if (save_options(sk, data))
		return -3;
	if (save_window(sk, data))
		return -4;

	/* Receive queue: length first, so data arriving later changes the sequence number and
	 * the peek, and is caught. */
	if (ioctl(sk->fd, SIOCINQ, &inq) < 0 || inq < 0) {
		loge("Unable to read the receive queue length of %d: errno %d\n", sk->fd, errno);
		ret = -2;
		goto fail;
	}
	data->inq_len = (uint32_t)inq; /* SIOCINQ leaves out a received FIN */
	peek_off = data->inq_len ? peek_off_disable(sk->fd) : -1;
	ret = save_queue(sk, TCP_RECV_QUEUE, data->inq_len, &data->inq_seq, &recvq) ? -5 : 0;
	peek_off_restore(sk->fd, peek_off);
	if (ret)
		goto fail;

	if (setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_QUEUE, &send_queue, sizeof(send_queue)) < 0) {
		ret = -6;
		goto fail;
	}
	if (save_send_lengths(sk, data)) {
		ret = -2;
		goto fail;
	}
	if (save_queue(sk, TCP_SEND_QUEUE, data->outq_len, &data->outq_seq, &sendq)) {
		ret = -6;
		goto fail;
	}
	park_queue(sk);
	/* A second save on one handle replaces (and frees) the first one's buffers. */
	soccr_queue_buf_release(sk, TCP_RECV_QUEUE, sk->saved_queue[TCP_RECV_QUEUE]);
	soccr_queue_buf_release(sk, TCP_SEND_QUEUE, sk->saved_queue[TCP_SEND_QUEUE]);
	sk->saved_queue[TCP_RECV_QUEUE] = recvq;
	sk->saved_queue[TCP_SEND_QUEUE] = sendq;
	logd("Saved %s: in %u@%u out %u@%u unsent %u\n", soccr_state_name(data->state),
	     data->inq_len, data->inq_seq, data->outq_len, data->outq_seq, data->unsq_len);
	return (int)sizeof(*data);

fail: {
	int saved = errno;
	soccr_queue_buf_release(sk, TCP_RECV_QUEUE, recvq);
	park_queue(sk);
	errno = saved;
	return ret;
}
}
