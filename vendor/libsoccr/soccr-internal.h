/* Internal declarations shared by the libsoccr source files. Not installed, not part of the API. */
#ifndef NODE_CRIU_SOCCR_INTERNAL_H
#define NODE_CRIU_SOCCR_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "soccr.h"

#if defined(__GNUC__)
#define SOCCR_HIDDEN __attribute__((visibility("hidden")))
#else
#define SOCCR_HIDDEN
#endif

/* sk_reuse as getsockopt(SO_REUSEADDR) reports it: TCP_REPAIR=1 sets SK_FORCE_REUSE. */
#define SOCCR_SK_CAN_REUSE 1
#define SOCCR_SK_FORCE_REUSE 2

/* Restore progress of a handle; the staged API must be called in this order. */
enum soccr_stage {
	SOCCR_STAGE_PAUSED = 0,  /* after libsoccr_pause() */
	SOCCR_STAGE_UNBOUND,     /* sequence numbers set, caller binds and connects */
	SOCCR_STAGE_CONNECTED,   /* options set, queues may be written */
	SOCCR_STAGE_DONE,        /* window and FIN state restored, only resume/release left */
};

struct libsoccr_sk {
	int fd;

	/* Dump: queue contents saved by libsoccr_save(), owned by the handle until taken with
	 * SOCCR_MEM_EXCL. Indexed by TCP_RECV_QUEUE / TCP_SEND_QUEUE. */
	char *saved_queue[TCP_QUEUES_NR];
	/* Where those buffers come from (libsoccr_set_queue_alloc); alloc NULL: malloc/free. */
	struct libsoccr_queue_alloc queue_alloc;

	/* Restore (one-call API): buffers and addresses given by the caller. */
	char *restore_queue[TCP_QUEUES_NR];
	bool restore_queue_owned[TCP_QUEUES_NR];
	union libsoccr_addr *addr[2];     /* [1] = self (source), [0] = peer (destination) */
	bool addr_owned[2];
	union libsoccr_addr *queried_addr[2]; /* get_addr() results kept by the handle */

	/* SO_REUSEADDR as the application had it before TCP_REPAIR=1 (repair mode overrides it
	 * and TCP_REPAIR=0 clears it); re-applied by libsoccr_resume(). */
	bool app_reuseaddr;

	/* Restore state. */
	enum soccr_stage stage;
	bool queue_restored[TCP_QUEUES_NR];
	bool connected;                   /* connect() done: failures must disconnect */
	bool bufs_raised;                 /* SO_{SND,RCV}BUF(FORCE) raised, put back later */
	int orig_sndbuf, orig_rcvbuf, orig_buf_lock;
	char *unsent;                     /* unsent tail of the send queue, until it is queued */
	uint32_t unsent_len;
	bool unsent_queued;               /* restore queued unsent data: resume pushes it */
};

/* ---- logging (soccr.c) ---- */
extern unsigned int soccr_log_level SOCCR_HIDDEN;
extern void (*soccr_log_fn)(unsigned int level, const char *fmt, ...) SOCCR_HIDDEN;

/* Calls the process-global log callback without letting it change errno. */
#define soccr_log(lvl, fmt, ...)                                              \
	do {                                                                   \
		if (soccr_log_fn && soccr_log_level >= (lvl)) {                \
			int saved_errno_ = errno;                              \
			soccr_log_fn((lvl), fmt, ##__VA_ARGS__);               \
			errno = saved_errno_;                                  \
		}                                                              \
	} while (0)
#define loge(fmt, ...) \
	soccr_log(SOCCR_LOG_ERR, "Error (%s:%d): " fmt, __FILE__, __LINE__, ##__VA_ARGS__)
#define logd(fmt, ...) soccr_log(SOCCR_LOG_DBG, "Debug: " fmt, ##__VA_ARGS__)

/* ---- queue buffers of libsoccr_save (soccr.c): the handle's allocator, else malloc/free ---- */
SOCCR_HIDDEN char *soccr_queue_buf_alloc(struct libsoccr_sk *sk, int queue, uint32_t len);
SOCCR_HIDDEN void soccr_queue_buf_release(struct libsoccr_sk *sk, int queue, char *buf);

/* ---- TCP state helpers (values from <netinet/tcp.h>) ---- */
SOCCR_HIDDEN bool soccr_state_supported(uint32_t state);
/* Our FIN is in the send sequence space (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK). */
SOCCR_HIDDEN bool soccr_our_fin_queued(uint32_t state);
/* Our FIN is queued and not acknowledged (FIN_WAIT1, CLOSING, LAST_ACK). */
SOCCR_HIDDEN bool soccr_our_fin_unacked(uint32_t state);
/* The peer's FIN was received (CLOSE_WAIT, CLOSING, LAST_ACK). */
SOCCR_HIDDEN bool soccr_peer_fin_received(uint32_t state);
SOCCR_HIDDEN const char *soccr_state_name(uint32_t state);

/* ---- socket buffers (soccr-bufs.c) ---- */
/* Raises SO_SNDBUF/SO_RCVBUF (FORCE if permitted) and remembers the old values. 0 or -1. */
SOCCR_HIDDEN int soccr_raise_bufs(struct libsoccr_sk *sk);
/* Puts SO_SNDBUF/SO_RCVBUF and SO_BUF_LOCK back if they were raised. Keeps errno. */
SOCCR_HIDDEN void soccr_put_back_bufs(struct libsoccr_sk *sk);
/* The whole send queue (queue_len bytes) fits the current send buffer; else -1, ENOBUFS. */
SOCCR_HIDDEN int soccr_check_send_room(struct libsoccr_sk *sk, uint32_t queue_len);
/* Sends len bytes (repair queue already selected, or repair off), looping on short writes,
 * raising the socket buffers once and halving the chunk on ENOMEM/EAGAIN. 0 or -1 (errno). */
SOCCR_HIDDEN int soccr_send_all(struct libsoccr_sk *sk, const char *buf, uint32_t len);

/* ---- the unsent tail (soccr-bufs.c) ---- */
/* Queues the unsent tail (sk->unsent) as never-sent data behind the restored send queue, then
 * our FIN if fin; transmits nothing while repair mode is on. 0 or -1 (errno). */
SOCCR_HIDDEN int soccr_queue_unsent(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data,
				    bool fin);
/* After repair is off: sends what soccr_queue_unsent queued, now, instead of on the next ACK. */
SOCCR_HIDDEN void soccr_push_unsent(struct libsoccr_sk *sk);

/* ---- soccr-fin.c ---- */
/* Injects a segment from the peer (FIN+ACK, or a pure ACK) towards our socket through a raw
 * socket marked SOCCR_MARK and waits until the socket's state changed. 0 or -1 (errno). */
SOCCR_HIDDEN int soccr_inject_peer_segment(struct libsoccr_sk *sk,
					   const struct libsoccr_sk_data *data, uint32_t seq,
					   uint32_t ack_seq, bool fin);

/* Sequence arithmetic modulo 2^32. */
static inline bool soccr_seq_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

#endif /* NODE_CRIU_SOCCR_INTERNAL_H */
