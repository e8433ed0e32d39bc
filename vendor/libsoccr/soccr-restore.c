/*
 * libsoccr (node-criu): restoring a saved connection into a fresh socket in repair mode.
 *
 * Steps (the staged API exposes them; libsoccr_restore() runs them all):
 *  1. unbound:   TCP_QUEUE_SEQ of both queues (the socket must still be unconnected)
 *  -  bind(src) + connect(dst): in repair mode connect sends no SYN and goes to ESTABLISHED
 *  2. noq:       TCP_REPAIR_OPTIONS (must precede any transmission, Linux >= 6.1), TCP_TIMESTAMP
 *  3. queues:    receive queue, then the sent-unacknowledged part of the send queue; the unsent
 *                tail is copied for step 4
 *  4. finish:    TCP_REPAIR_WINDOW (after the receive queue: the kernel checks it against
 *                rcv_nxt), then FIN state: our FIN through shutdown() with the send queue
 *                selected (counted as sent, no packet), the peer's FIN as an injected packet;
 *                last the unsent tail (and our FIN behind it) as never-sent data, see
 *                soccr_queue_unsent().
 * Any failure after connect disconnects the socket silently (connect(AF_UNSPEC) in repair mode
 * sends nothing) so it is never left half-restored.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "soccr-internal.h"

static int set_int(int fd, int level, int opt, int val)
{
	return setsockopt(fd, level, opt, &val, sizeof(val));
}

static int select_queue(struct libsoccr_sk *sk, int queue)
{
	if (set_int(sk->fd, SOL_TCP, TCP_REPAIR_QUEUE, queue) < 0) {
		loge("Unable to select repair queue %d: errno %d\n", queue, errno);
		return -1;
	}
	return 0;
}

/* opt_mask holds TCP_INFO's tcpi_options, a u8 (CRIU saves all of it). Only TIMESTAMPS, SACK and
 * WSCALE can be restored; the others (ECN, ECN_SEEN, SYN_DATA, USEC_TS, ...) are ignored. */
#define SOCCR_OPT_MASK_KERNEL 0xffu

static int check_data(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data,
		      unsigned data_size)
{
	if (!sk || !data || data_size < sizeof(*data)) {
		errno = EINVAL;
		return -1;
	}
	if (!soccr_state_supported(data->state)) {
		loge("Cannot restore state %s (%u)\n", soccr_state_name(data->state), data->state);
		errno = EINVAL;
		return -1;
	}
	if (data->unsq_len > data->outq_len || (data->flags & ~SOCCR_FLAGS_WINDOW) ||
	    data->snd_wscale > 14 || data->rcv_wscale > 14 ||
	    (data->state == TCP_FIN_WAIT2 && data->outq_len != 0) ||
	    (data->opt_mask & ~SOCCR_OPT_MASK_KERNEL)) {
		loge("Inconsistent data for state %s\n", soccr_state_name(data->state));
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* Undoes a failed restore: after connect, disconnect silently; put the buffers back. */
static void restore_failed(struct libsoccr_sk *sk)
{
	int saved = errno;

	if (sk->connected) {
		struct sockaddr unspec = {.sa_family = AF_UNSPEC};
		if (connect(sk->fd, &unspec, sizeof(unspec)) < 0)
			loge("Unable to disconnect after a failed restore: errno %d\n", errno);
		sk->connected = false;
	}
	soccr_put_back_bufs(sk);
	free(sk->unsent);
	sk->unsent = NULL;
	sk->unsent_len = 0;
	sk->unsent_queued = false;
	memset(sk->queue_restored, 0, sizeof(sk->queue_restored));
	sk->stage = SOCCR_STAGE_PAUSED;
	errno = saved;
}

/* End of the data in the send queue: outq_seq counts our FIN if one is queued. */
static uint32_t send_data_end(const struct libsoccr_sk_data *data)
{
	return data->outq_seq - (soccr_our_fin_queued(data->state) ? 1 : 0);
}

/* End of the data in the receive queue: inq_seq counts the peer's FIN if one arrived. */
static uint32_t recv_data_end(const struct libsoccr_sk_data *data)
{
	return data->inq_seq - (soccr_peer_fin_received(data->state) ? 1 : 0);
}

static int rst_unbound(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data)
{
	if (select_queue(sk, TCP_RECV_QUEUE) < 0 ||
	    set_int(sk->fd, SOL_TCP, TCP_QUEUE_SEQ, (int)(recv_data_end(data) - data->inq_len)) < 0)
		goto fail;
	if (select_queue(sk, TCP_SEND_QUEUE) < 0 ||
	    set_int(sk->fd, SOL_TCP, TCP_QUEUE_SEQ, (int)(send_data_end(data) - data->outq_len)) < 0)
		goto fail;
	sk->stage = SOCCR_STAGE_UNBOUND;
	return 0;
fail:
	loge("Unable to set the queue sequence numbers: errno %d\n", errno);
	restore_failed(sk);
	return -1;
}

static int rst_noq(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data)
{
	struct tcp_repair_opt opts[4];
	int n = 0;

	sk->connected = true;
	if (data->opt_mask & TCPI_OPT_SACK)
		opts[n++] = (struct tcp_repair_opt){TCPOPT_SACK_PERMITTED, 0};
	if (data->opt_mask & TCPI_OPT_WSCALE)
		opts[n++] = (struct tcp_repair_opt){TCPOPT_WINDOW,
						    data->snd_wscale | (data->rcv_wscale << 16)};
	if (data->opt_mask & TCPI_OPT_TIMESTAMPS)
		opts[n++] = (struct tcp_repair_opt){TCPOPT_TIMESTAMP, 0};
	if (data->mss_clamp)
		opts[n++] = (struct tcp_repair_opt){TCPOPT_MAXSEG, data->mss_clamp};
	if (n && setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_OPTIONS, opts,
			    (socklen_t)(n * sizeof(opts[0]))) < 0) {
		loge("Unable to set TCP_REPAIR_OPTIONS: errno %d\n", errno);
		goto fail;
	}
	if ((data->opt_mask & TCPI_OPT_TIMESTAMPS) &&
	    set_int(sk->fd, SOL_TCP, TCP_TIMESTAMP, (int)data->timestamp) < 0) {
		loge("Unable to set TCP_TIMESTAMP: errno %d\n", errno);
		goto fail;
	}
	sk->stage = SOCCR_STAGE_CONNECTED;
	return 0;
fail:
	restore_failed(sk);
	return -1;
}

static int rst_queue(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data, int queue,
		     const char *buf)
{
	uint32_t len = queue == TCP_RECV_QUEUE ? data->inq_len : data->outq_len;
	uint32_t sent_len = len;

	if (len && !buf) {
		loge("No buffer for the %u bytes of queue %d\n", len, queue);
		errno = EINVAL;
		goto fail;
	}
	if (queue == TCP_SEND_QUEUE && data->unsq_len) {
		/* Never-sent bytes are queued as such at the end of the restore, so the kernel
		 * sends them for real under the restored window once repair mode is off. */
		sent_len = len - data->unsq_len;
		/* They were all queued at the source; keep room for them until then. */
		if (soccr_raise_bufs(sk) < 0)
			goto fail;
		if (soccr_check_send_room(sk, len) < 0)
			goto fail;
		free(sk->unsent);
		sk->unsent = malloc(data->unsq_len);
		if (!sk->unsent)
			goto fail;
		memcpy(sk->unsent, buf + sent_len, data->unsq_len);
		sk->unsent_len = data->unsq_len;
	}
	if (sent_len) {
		if (select_queue(sk, queue) < 0 || soccr_send_all(sk, buf, sent_len) < 0)
			goto fail;
	}
	sk->queue_restored[queue] = true;
	return 0;
fail:
	restore_failed(sk);
	return -1;
}

static int rst_finish(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data)
{
	uint32_t state = data->state;
	bool our_fin = soccr_our_fin_queued(state), peer_fin = soccr_peer_fin_received(state);
	uint32_t ack = send_data_end(data) - data->outq_len; /* snd_una */

	if (data->flags & SOCCR_FLAGS_WINDOW) {
		struct tcp_repair_window win = {
			.snd_wl1 = data->snd_wl1, .snd_wnd = data->snd_wnd,
			.max_window = data->max_window, .rcv_wnd = data->rcv_wnd,
			.rcv_wup = data->rcv_wup,
		};
		uint32_t rcv_nxt = recv_data_end(data);
		/* Until the peer's FIN is re-received rcv_nxt is one lower than at the dump;
		 * keep the right edge of the advertised window where it was. */
		if (soccr_seq_after(win.rcv_wup, rcv_nxt)) {
			win.rcv_wnd += win.rcv_wup - rcv_nxt;
			win.rcv_wup = rcv_nxt;
		}
		if (setsockopt(sk->fd, SOL_TCP, TCP_REPAIR_WINDOW, &win, sizeof(win)) < 0) {
			loge("Unable to set TCP_REPAIR_WINDOW: errno %d\n", errno);
			goto fail;
		}
	}

	/* Our FIN: unsent data must go first, so with unsent data the FIN is queued behind it. */
	bool fin_deferred = our_fin && sk->unsent_len > 0;
	/* CLOSING = our FIN, then theirs; LAST_ACK = theirs, then ours. */
	if (peer_fin && state != TCP_CLOSING) {
		if (soccr_inject_peer_segment(sk, data, data->inq_seq - 1, ack, true) < 0)
			goto fail;
	}
	if (our_fin && !fin_deferred) {
		if (select_queue(sk, TCP_SEND_QUEUE) < 0)
			goto fail;
		if (shutdown(sk->fd, SHUT_WR) < 0) {
			loge("Unable to queue our FIN: errno %d\n", errno);
			goto fail;
		}
		/* FIN_WAIT2: the peer had acknowledged our FIN; replay that ACK. */
		if (state == TCP_FIN_WAIT2 &&
		    soccr_inject_peer_segment(sk, data, data->inq_seq, data->outq_seq, false) < 0)
			goto fail;
	}
	if (peer_fin && state == TCP_CLOSING) {
		if (soccr_inject_peer_segment(sk, data, data->inq_seq - 1, ack, true) < 0)
			goto fail;
	}
	if (sk->unsent_len) {
		if (soccr_queue_unsent(sk, data, fin_deferred) < 0)
			goto fail;
		free(sk->unsent);
		sk->unsent = NULL;
		sk->unsent_len = 0;
	}
	/* No repair queue: until repair mode ends, an application write fails with EINVAL
	 * instead of being queued as already sent. */
	if (select_queue(sk, TCP_NO_QUEUE) < 0)
		goto fail;
	soccr_put_back_bufs(sk);
	sk->stage = SOCCR_STAGE_DONE;
	return 0;
fail:
	restore_failed(sk);
	return -1;
}

static int stage_error(struct libsoccr_sk *sk, const char *call)
{
	loge("%s called out of order (restore stage %d)\n", call, sk ? (int)sk->stage : -1);
	errno = EINVAL;
	return -1;
}

int libsoccr_restore(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size)
{
	union libsoccr_addr *src, *dst;
	socklen_t src_len, dst_len;

	if (check_data(sk, data, data_size) < 0)
		return -1;
	if (sk->stage != SOCCR_STAGE_PAUSED)
		return stage_error(sk, "libsoccr_restore");
	src = sk->addr[1];
	dst = sk->addr[0];
	if (!src || !dst || src->sa.sa_family != dst->sa.sa_family ||
	    (data->inq_len && !sk->restore_queue[TCP_RECV_QUEUE]) ||
	    (data->outq_len && !sk->restore_queue[TCP_SEND_QUEUE])) {
		loge("Addresses or queue buffers missing for the restore\n");
		errno = EINVAL;
		return -1;
	}
	src_len = src->sa.sa_family == AF_INET ? sizeof(src->v4) : sizeof(src->v6);
	dst_len = src_len;

	if (rst_unbound(sk, data) < 0)
		return -1;
	/* Repair mode sets SK_FORCE_REUSE: bind needs no SO_REUSEADDR. */
	if (bind(sk->fd, &src->sa, src_len) < 0) {
		loge("Unable to bind the restored socket: errno %d\n", errno);
		restore_failed(sk);
		return -1;
	}
	if (connect(sk->fd, &dst->sa, dst_len) < 0) {
		loge("Unable to connect the restored socket: errno %d\n", errno);
		restore_failed(sk);
		return -1;
	}
	if (rst_noq(sk, data) < 0)
		return -1;
	if (rst_queue(sk, data, TCP_RECV_QUEUE, sk->restore_queue[TCP_RECV_QUEUE]) < 0 ||
	    rst_queue(sk, data, TCP_SEND_QUEUE, sk->restore_queue[TCP_SEND_QUEUE]) < 0)
		return -1;
	if (rst_finish(sk, data) < 0)
		return -1;
	logd("Restored %s: in %u@%u out %u@%u unsent %u\n", soccr_state_name(data->state),
	     data->inq_len, data->inq_seq, data->outq_len, data->outq_seq, data->unsq_len);
	return 0;
}

int libsoccr_set_sk_data_unbound(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
				 unsigned data_size)
{
	if (check_data(sk, data, data_size) < 0)
		return -1;
	if (sk->stage != SOCCR_STAGE_PAUSED)
		return stage_error(sk, "libsoccr_set_sk_data_unbound");
	return rst_unbound(sk, data);
}

int libsoccr_set_sk_data_noq(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
			     unsigned data_size)
{
	if (check_data(sk, data, data_size) < 0)
		return -1;
	if (sk->stage != SOCCR_STAGE_UNBOUND)
		return stage_error(sk, "libsoccr_set_sk_data_noq");
	return rst_noq(sk, data);
}

int libsoccr_restore_queue(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
			   unsigned data_size, int queue_id, char *buf)
{
	if (check_data(sk, data, data_size) < 0)
		return -1;
	if (queue_id != TCP_RECV_QUEUE && queue_id != TCP_SEND_QUEUE) {
		errno = EINVAL;
		return -1;
	}
	if (sk->stage != SOCCR_STAGE_CONNECTED || sk->queue_restored[queue_id] ||
	    (queue_id == TCP_SEND_QUEUE && !sk->queue_restored[TCP_RECV_QUEUE] && data->inq_len))
		return stage_error(sk, "libsoccr_restore_queue");
	return rst_queue(sk, data, queue_id, buf);
}

int libsoccr_set_sk_data(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size)
{
	if (check_data(sk, data, data_size) < 0)
		return -1;
	if (sk->stage != SOCCR_STAGE_CONNECTED ||
	    (data->inq_len && !sk->queue_restored[TCP_RECV_QUEUE]) ||
	    (data->outq_len && !sk->queue_restored[TCP_SEND_QUEUE]))
		return stage_error(sk, "libsoccr_set_sk_data");
	return rst_finish(sk, data);
}
