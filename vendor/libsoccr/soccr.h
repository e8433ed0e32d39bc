/*
 * libsoccr: save and restore established TCP connections with the kernel's TCP_REPAIR.
 *
 * node-criu's own implementation (MIT, see README.md). It is source-compatible with the public
 * API of CRIU's soccr/soccr.h (names, signatures, constants, struct libsoccr_sk_data layout), so a
 * program written against CRIU's libsoccr compiles unchanged against this header. It does not
 * include CRIU's generated config.h: libc's <netinet/tcp.h> is used when it has the repair API,
 * otherwise the fallbacks below apply.
 */
#ifndef NODE_CRIU_SOCCR_H
#define NODE_CRIU_SOCCR_H

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Does the C library's <netinet/tcp.h> have struct tcp_repair_opt, struct tcp_repair_window and
 * the TCP_NO_QUEUE.. enum? CRIU's soccr.h asks its generated config.h (CONFIG_HAS_TCP_REPAIR),
 * which CRIU's build answers once, with GNU feature macros: yes with glibc. So glibc
 * counts as having them whatever the including program's feature macros are, as with CRIU's
 * header: under strict ISO C glibc then hides them and neither header declares them (a program
 * like CRIU's soccr/test/tcp-conn.c declares the enum itself). Elsewhere (musl) the guess follows
 * the header's visibility (_GNU_SOURCE/_BSD_SOURCE). Define SOCCR_LIBC_HAS_TCP_REPAIR to 0 to
 * get this header's fallbacks (as CRIU's without CONFIG_HAS_TCP_REPAIR), or to 1. */
#ifndef SOCCR_LIBC_HAS_TCP_REPAIR
#if defined(__GLIBC__) || defined(_GNU_SOURCE) || defined(_BSD_SOURCE)
#define SOCCR_LIBC_HAS_TCP_REPAIR 1
#else
#define SOCCR_LIBC_HAS_TCP_REPAIR 0
#endif
#endif

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#endif
#ifndef TCP_REPAIR_QUEUE
#define TCP_REPAIR_QUEUE 20
#endif
#ifndef TCP_QUEUE_SEQ
#define TCP_QUEUE_SEQ 21
#endif
#ifndef TCP_REPAIR_OPTIONS
#define TCP_REPAIR_OPTIONS 22
#endif
#ifndef TCP_TIMESTAMP
#define TCP_TIMESTAMP 24
#endif
#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif

#if !SOCCR_LIBC_HAS_TCP_REPAIR
struct tcp_repair_opt {
	uint32_t opt_code;
	uint32_t opt_val;
};

struct tcp_repair_window {
	uint32_t snd_wl1;
	uint32_t snd_wnd;
	uint32_t max_window;
	uint32_t rcv_wnd;
	uint32_t rcv_wup;
};

/* Repair queue ids: an enum, as in CRIU's soccr.h and the kernel's <linux/tcp.h>. */
enum {
	TCP_NO_QUEUE,
	TCP_RECV_QUEUE,
	TCP_SEND_QUEUE,
	TCP_QUEUES_NR,
};
#endif /* !SOCCR_LIBC_HAS_TCP_REPAIR */

/* SO_MARK of the raw packets libsoccr injects (the peer's FIN when restoring a half-closed
 * connection). Firewall rules that lock a connection must let packets with this mark through. */
#define SOCCR_MARK 0xC114

/* Log levels for libsoccr_set_log(): a message is passed on when level >= its level. */
#define SOCCR_LOG_ERR 1
#define SOCCR_LOG_DBG 2

/* libsoccr_sk_data.flags: the five window fields (snd_wl1 .. rcv_wup) are valid. */
#define SOCCR_FLAGS_WINDOW 0x1

/* Ownership flag for get/set of queue buffers and addresses (see README.md). */
#define SOCCR_MEM_EXCL 0x1

/* Opaque handle: one per socket, from libsoccr_pause(). */
struct libsoccr_sk;

union libsoccr_addr {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

/* Everything besides the queue contents and the addresses needed to restore a connection. This
 * is an ABI: 17 x uint32_t, 68 bytes, fields in this order. inq_seq and outq_seq are the ENDS of
 * the queues (rcv_nxt and write_seq, including a FIN), as in CRIU. */
struct libsoccr_sk_data {
	uint32_t state;      /* TCP_ESTABLISHED, TCP_FIN_WAIT1, ... (<netinet/tcp.h> values) */
	uint32_t inq_len;    /* bytes in the receive queue (FIN not counted) */
	uint32_t inq_seq;    /* rcv_nxt */
	uint32_t outq_len;   /* bytes in the send queue, sent-unacknowledged + unsent (FIN not counted) */
	uint32_t outq_seq;   /* write_seq */
	uint32_t unsq_len;   /* of outq_len, bytes never sent (FIN not counted) */
	uint32_t opt_mask;   /* TCPI_OPT_* (save: TIMESTAMPS, SACK, WSCALE; restore ignores others) */
	uint32_t mss_clamp;
	uint32_t snd_wscale;
	uint32_t rcv_wscale;
	uint32_t timestamp;  /* TCP_TIMESTAMP value, opaque (bit 0 is the usec flag since Linux 6.7) */

	uint32_t flags;      /* SOCCR_FLAGS_WINDOW */
	uint32_t snd_wl1;
	uint32_t snd_wnd;
	uint32_t max_window;
	uint32_t rcv_wnd;
	uint32_t rcv_wup;
};

/* The ABI checked at compile time: 68 bytes, no padding, every field at its CRIU offset. */
#ifdef __cplusplus
#define SOCCR_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define SOCCR_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
#define SOCCR_ASSERT_OFFSET(field, off) \
	SOCCR_STATIC_ASSERT(__builtin_offsetof(struct libsoccr_sk_data, field) == (off), \
			    "libsoccr_sk_data." #field " must be at offset " #off)
SOCCR_STATIC_ASSERT(sizeof(struct libsoccr_sk_data) == 68, "libsoccr_sk_data must be 68 bytes");
SOCCR_ASSERT_OFFSET(state, 0);
SOCCR_ASSERT_OFFSET(inq_len, 4);
SOCCR_ASSERT_OFFSET(inq_seq, 8);
SOCCR_ASSERT_OFFSET(outq_len, 12);
SOCCR_ASSERT_OFFSET(outq_seq, 16);
SOCCR_ASSERT_OFFSET(unsq_len, 20);
SOCCR_ASSERT_OFFSET(opt_mask, 24);
SOCCR_ASSERT_OFFSET(mss_clamp, 28);
SOCCR_ASSERT_OFFSET(snd_wscale, 32);
SOCCR_ASSERT_OFFSET(rcv_wscale, 36);
SOCCR_ASSERT_OFFSET(timestamp, 40);
SOCCR_ASSERT_OFFSET(flags, 44);
SOCCR_ASSERT_OFFSET(snd_wl1, 48);
SOCCR_ASSERT_OFFSET(snd_wnd, 52);
SOCCR_ASSERT_OFFSET(max_window, 56);
SOCCR_ASSERT_OFFSET(rcv_wnd, 60);
SOCCR_ASSERT_OFFSET(rcv_wup, 64);
SOCCR_STATIC_ASSERT(sizeof(union libsoccr_addr) == 28, "union libsoccr_addr must be 28 bytes");

/* ---- Common ---------------------------------------------------------------------------- */

/* Process-global: one level and one callback for every handle in the process. */
void libsoccr_set_log(unsigned int level, void (*fn)(unsigned int level, const char *fmt, ...));

/* Allocates a handle for fd and turns TCP_REPAIR on. NULL (errno set) on failure; the socket is
 * then unchanged. Does NOT block traffic: the caller must (firewall, socket filter). */
struct libsoccr_sk *libsoccr_pause(int fd);

/* Turns TCP_REPAIR off (the kernel sends a window probe), pushes out the unsent data a restore
 * queued (see README.md), then releases the handle. */
void libsoccr_resume(struct libsoccr_sk *sk);

/* Frees the handle and the buffers it owns. Leaves the socket in repair mode. */
void libsoccr_release(struct libsoccr_sk *sk);

/* ---- Dump ------------------------------------------------------------------------------ */

/* Fills data (data_size >= sizeof(struct libsoccr_sk_data)) and saves both queues in the handle.
 * Returns sizeof(struct libsoccr_sk_data) (68) or a negative code: -1 bad arguments, -2 TCP_INFO
 * or queue ioctls or unsupported state, -3 MSS/timestamp, -4 window, -5 receive queue,
 * -6 send queue. errno holds the cause. The socket stays in repair mode either way. */
int libsoccr_save(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size);

/* The saved contents of TCP_RECV_QUEUE or TCP_SEND_QUEUE (length data.inq_len/outq_len).
 * flags 0: the handle keeps ownership. SOCCR_MEM_EXCL: the caller owns it and must free() it.
 * NULL with errno EINVAL (bad id/flags) or ENODATA (empty queue or already taken). */
char *libsoccr_get_queue_bytes(struct libsoccr_sk *sk, int queue_id, unsigned flags);

/* node-criu extension: where libsoccr_save() puts the queue bytes. alloc(arg, queue_id, len)
 * returns len writable bytes for that queue (NULL, errno set, fails the save with -5/-6);
 * release(arg, queue_id, buf) takes back a buffer the handle drops without having handed it out
 * (a failed save, the previous buffers at a second save, release/resume while it still holds
 * one). A buffer taken with libsoccr_get_queue_bytes(..., SOCCR_MEM_EXCL) is the caller's and is
 * never released by the handle. NULL restores malloc()/free(). 0, or -1 with errno EINVAL
 * (alloc or release missing) or EBUSY (the handle holds saved queues: change it before save). */
struct libsoccr_queue_alloc {
	char *(*alloc)(void *arg, int queue_id, unsigned int len);
	void (*release)(void *arg, int queue_id, char *buf);
	void *arg;
};
int libsoccr_set_queue_alloc(struct libsoccr_sk *sk, const struct libsoccr_queue_alloc *qa);

/* The socket's own (self != 0) or peer (self == 0) address: the one set with libsoccr_set_addr,
 * else getsockname()/getpeername(). flags 0: valid until release. SOCCR_MEM_EXCL: caller frees.
 * NULL with errno set on failure. (CRIU's libsoccr always returns NULL here.) */
union libsoccr_addr *libsoccr_get_addr(struct libsoccr_sk *sk, int self, unsigned flags);

/* ---- Restore, one call (current CRIU API) ------------------------------------------------ */

/* Queue contents to restore (length from data at restore time). SOCCR_MEM_EXCL: the handle frees
 * bytes at release; without it the caller keeps ownership and bytes must stay valid until
 * libsoccr_restore() returns. 0, or -1 with errno EINVAL. */
int libsoccr_set_queue_bytes(struct libsoccr_sk *sk, int queue_id, char *bytes, unsigned flags);

/* Source (self != 0) or destination (self == 0) address; same ownership rule as above. */
int libsoccr_set_addr(struct libsoccr_sk *sk, int self, union libsoccr_addr *, unsigned flags);

/* Binds, connects (no SYN) and restores sequence numbers, options, queues, window and FIN state
 * on the paused fresh socket. 0, or -1 with errno set. On failure after connect the socket is
 * disconnected silently (state CLOSE, repair on, nothing sent to the peer). */
int libsoccr_restore(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size);

/* ---- Restore, staged (the 2016 API: the caller binds and connects) ------------------------ */

/* 1. Sequence numbers, before the caller's bind() and connect(). */
int libsoccr_set_sk_data_unbound(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
				 unsigned data_size);
/* 2. After connect(): MSS, window scale, SACK, timestamps. */
int libsoccr_set_sk_data_noq(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
			     unsigned data_size);
/* 3. Each non-empty queue (data.inq_len / data.outq_len bytes from buf; buf stays the caller's).
 * Named libsoccr_set_queue_bytes in 2016; renamed because today's libsoccr_set_queue_bytes has
 * another signature. */
int libsoccr_restore_queue(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
			   unsigned data_size, int queue_id, char *buf);
/* 4. Window and FIN state. Then libsoccr_resume(). */
int libsoccr_set_sk_data(struct libsoccr_sk *sk, struct libsoccr_sk_data *data,
			 unsigned data_size);

#ifdef __cplusplus
}
#endif

#endif /* NODE_CRIU_SOCCR_H */
