/*
 * libsoccr (node-criu): handles, logging, buffer and address accessors, pause/resume/release.
 * Dump is in soccr-dump.c, restore in soccr-restore.c, the injected peer FIN in soccr-fin.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "soccr-internal.h"

unsigned int soccr_log_level;
void (*soccr_log_fn)(unsigned int level, const char *fmt, ...);

void libsoccr_set_log(unsigned int level, void (*fn)(unsigned int level, const char *fmt, ...))
{
	soccr_log_level = level;
	soccr_log_fn = fn;
}

bool soccr_state_supported(uint32_t state)
{
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return true;
	default:
		return false;
	}
}

bool soccr_our_fin_queued(uint32_t state)
{
	return state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING ||
	       state == TCP_LAST_ACK;
}

bool soccr_our_fin_unacked(uint32_t state)
{
	return state == TCP_FIN_WAIT1 || state == TCP_CLOSING || state == TCP_LAST_ACK;
}

bool soccr_peer_fin_received(uint32_t state)
{
	return state == TCP_CLOSE_WAIT || state == TCP_CLOSING || state == TCP_LAST_ACK;
}

const char *soccr_state_name(uint32_t state)
{
	static const char *const names[] = {
		[TCP_ESTABLISHED] = "ESTABLISHED", [TCP_SYN_SENT] = "SYN_SENT",
		[TCP_SYN_RECV] = "SYN_RECV",       [TCP_FIN_WAIT1] = "FIN_WAIT1",
		[TCP_FIN_WAIT2] = "FIN_WAIT2",     [TCP_TIME_WAIT] = "TIME_WAIT",
		[TCP_CLOSE] = "CLOSE",             [TCP_CLOSE_WAIT] = "CLOSE_WAIT",
		[TCP_LAST_ACK] = "LAST_ACK",       [TCP_LISTEN] = "LISTEN",
		[TCP_CLOSING] = "CLOSING",
	};
	if (state < sizeof(names) / sizeof(names[0]) && names[state])
		return names[state];
	return "unknown";
}

struct libsoccr_sk *libsoccr_pause(int fd)
{
	struct libsoccr_sk *sk;
	int on = 1, reuse = 0;
	socklen_t len = sizeof(reuse);

	sk = calloc(1, sizeof(*sk));
	if (!sk) {
		loge("Unable to allocate a handle for socket %d\n", fd);
		return NULL;
	}
	/* Repair mode replaces the application's SO_REUSEADDR and TCP_REPAIR=0 clears it, so
	 * remember it for resume. This getsockopt also rejects non-sockets (ENOTSOCK). */
	if (getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) < 0) {
		loge("Unable to read SO_REUSEADDR of %d: errno %d\n", fd, errno);
		goto fail;
	}
	/* Also selects no repair queue: a write then fails with EINVAL instead of being queued
	 * (see soccr-dump.c, park_queue). */
	if (setsockopt(fd, SOL_TCP, TCP_REPAIR, &on, sizeof(on)) < 0) {
		loge("Unable to turn TCP_REPAIR on for %d: errno %d\n", fd, errno);
		goto fail;
	}
	sk->fd = fd;
	/* Repair mode reads as SK_FORCE_REUSE (2): a socket already in repair mode has no known
	 * application value, and resume then leaves SO_REUSEADDR off. */
	sk->app_reuseaddr = reuse == SOCCR_SK_CAN_REUSE;
	return sk;
fail: {
	int saved = errno;
	free(sk);
	errno = saved;
	return NULL;
}
}

char *soccr_queue_buf_alloc(struct libsoccr_sk *sk, int queue, uint32_t len)
{
	char *buf;

	if (!sk->queue_alloc.alloc)
		return malloc(len);
	errno = 0;
	buf = sk->queue_alloc.alloc(sk->queue_alloc.arg, queue, len);
	if (!buf && !errno)
		errno = ENOMEM;
	return buf;
}

void soccr_queue_buf_release(struct libsoccr_sk *sk, int queue, char *buf)
{
	int saved = errno;

	if (!buf)
		return;
	if (sk->queue_alloc.release)
		sk->queue_alloc.release(sk->queue_alloc.arg, queue, buf);
	else
		free(buf);
	errno = saved;
}

int libsoccr_set_queue_alloc(struct libsoccr_sk *sk, const struct libsoccr_queue_alloc *qa)
{
	if (!sk || (qa && (!qa->alloc || !qa->release))) {
		errno = EINVAL;
		return -1;
	}
	if (sk->saved_queue[TCP_RECV_QUEUE] || sk->saved_queue[TCP_SEND_QUEUE]) {
		errno = EBUSY;
		return -1;
	}
	if (qa)
		sk->queue_alloc = *qa;
	else
		memset(&sk->queue_alloc, 0, sizeof(sk->queue_alloc));
	return 0;
}

static void free_buffers(struct libsoccr_sk *sk)
{
	for (int q = 0; q < TCP_QUEUES_NR; q++) {
		soccr_queue_buf_release(sk, q, sk->saved_queue[q]);
		sk->saved_queue[q] = NULL;
		if (sk->restore_queue_owned[q])
			free(sk->restore_queue[q]);
		sk->restore_queue[q] = NULL;
		sk->restore_queue_owned[q] = false;
	}
	for (int i = 0; i < 2; i++) {
		if (sk->addr_owned[i])
			free(sk->addr[i]);
		sk->addr[i] = NULL;
		sk->addr_owned[i] = false;
		free(sk->queried_addr[i]);
		sk->queried_addr[i] = NULL;
	}
	free(sk->unsent);
	sk->unsent = NULL;
	sk->unsent_len = 0;
}

void libsoccr_release(struct libsoccr_sk *sk)
{
	int saved = errno;

	if (!sk)
		return;
	soccr_put_back_bufs(sk);
	free_buffers(sk);
	free(sk);
	errno = saved;
}

void libsoccr_resume(struct libsoccr_sk *sk)
{
	int off = 0, saved = errno, reuse = SOCCR_SK_FORCE_REUSE;
	socklen_t len = sizeof(reuse);

	if (!sk)
		return;
	/* SO_REUSEADDR set while paused (0 or 1, no longer FORCE) is the application's latest. */
	getsockopt(sk->fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len);
	if (reuse != SOCCR_SK_FORCE_REUSE)
		sk->app_reuseaddr = reuse == SOCCR_SK_CAN_REUSE;
	if (setsockopt(sk->fd, SOL_TCP, TCP_REPAIR, &off, sizeof(off)) < 0)
		loge("Unable to turn TCP_REPAIR off for %d: errno %d\n", sk->fd, errno);
	else {
		/* TCP_REPAIR=0 clears it: put the application's value back. */
		if (sk->app_reuseaddr) {
			int on = 1;
			if (setsockopt(sk->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0)
				loge("Unable to re-apply SO_REUSEADDR: errno %d\n", errno);
		}
		soccr_push_unsent(sk);
	}
	libsoccr_release(sk);
	errno = saved;
}

char *libsoccr_get_queue_bytes(struct libsoccr_sk *sk, int queue_id, unsigned flags)
{
	char *buf;

	if (!sk || (queue_id != TCP_RECV_QUEUE && queue_id != TCP_SEND_QUEUE) ||
	    (flags & ~SOCCR_MEM_EXCL)) {
		errno = EINVAL;
		return NULL;
	}
	buf = sk->saved_queue[queue_id];
	if (!buf) {
		errno = ENODATA;
		return NULL;
	}
	if (flags & SOCCR_MEM_EXCL)
		sk->saved_queue[queue_id] = NULL;
	return buf;
}

int libsoccr_set_queue_bytes(struct libsoccr_sk *sk, int queue_id, char *bytes, unsigned flags)
{
	if (!sk || (queue_id != TCP_RECV_QUEUE && queue_id != TCP_SEND_QUEUE) ||
	    (flags & ~SOCCR_MEM_EXCL)) {
		errno = EINVAL;
		return -1;
	}
	if (sk->restore_queue_owned[queue_id] && sk->restore_queue[queue_id] != bytes)
		free(sk->restore_queue[queue_id]);
	sk->restore_queue[queue_id] = bytes;
	sk->restore_queue_owned[queue_id] = (flags & SOCCR_MEM_EXCL) != 0;
	return 0;
}

int libsoccr_set_addr(struct libsoccr_sk *sk, int self, union libsoccr_addr *addr, unsigned flags)
{
	int i = self ? 1 : 0;

	if (!sk || !addr || (flags & ~SOCCR_MEM_EXCL) ||
	    (addr->sa.sa_family != AF_INET && addr->sa.sa_family != AF_INET6)) {
		errno = EINVAL;
		return -1;
	}
	if (sk->addr_owned[i] && sk->addr[i] != addr)
		free(sk->addr[i]);
	sk->addr[i] = addr;
	sk->addr_owned[i] = (flags & SOCCR_MEM_EXCL) != 0;
	return 0;
}

union libsoccr_addr *libsoccr_get_addr(struct libsoccr_sk *sk, int self, unsigned flags)
{
	int i = self ? 1 : 0;
	union libsoccr_addr *addr;

	if (!sk || (flags & ~SOCCR_MEM_EXCL)) {
		errno = EINVAL;
		return NULL;
	}
	addr = calloc(1, sizeof(*addr));
	if (!addr)
		return NULL;
	if (sk->addr[i]) {
		*addr = *sk->addr[i];
	} else {
		socklen_t len = sizeof(*addr);
		int ret = self ? getsockname(sk->fd, &addr->sa, &len)
			       : getpeername(sk->fd, &addr->sa, &len);
		if (ret < 0) {
			int saved = errno;
			loge("Unable to get the %s address of %d: errno %d\n", self ? "own" : "peer",
			     sk->fd, errno);
			free(addr);
			errno = saved;
			return NULL;
		}
	}
	if (flags & SOCCR_MEM_EXCL)
		return addr;
	free(sk->queried_addr[i]);
	sk->queried_addr[i] = addr;
	return addr;
}
