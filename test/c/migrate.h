/* One end-to-end migration scenario: build a connection in a given TCP state with given queues,
 * lock and dump the server end with libsoccr, close it in repair mode, restore it into a new
 * socket (same netns, or another netns the server address moved to), then check traffic both
 * ways byte for byte, the FIN exchange, and that no RST was sent. */
#ifndef NCR_TEST_MIGRATE_H
#define NCR_TEST_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "netutil.h"

enum restore_api { API_ONE_CALL, API_STAGED };

#define OPT_OFF_TS 1u     /* net.ipv4.tcp_timestamps=0 */
#define OPT_OFF_SACK 2u   /* net.ipv4.tcp_sack=0 */
#define OPT_OFF_WSCALE 4u /* net.ipv4.tcp_window_scaling=0 */
#define OPT_OFF_ALL 7u

struct scenario {
	enum family fam;
	int state;            /* TCP state of the server end at the dump */
	uint32_t recvq;       /* bytes in the server's receive queue at the dump */
	uint32_t sendq;       /* bytes the server writes while the peer's ACKs are dropped */
	bool zero_window;     /* peer stops reading with a tiny receive buffer: unsent data */
	unsigned opts_off;    /* OPT_OFF_* bits: TCP options switched off by sysctl */
	bool veth;            /* peer and server in separate netns over veth; restore in a third */
	bool veth_same_ns;    /* with veth: restore in the server's own netns (no move) */
	enum restore_api api;
	bool non_excl;        /* pass buffers and addresses without SOCCR_MEM_EXCL */
	uint32_t extra;       /* bytes each way after the restore */
	int close_delay_ms;   /* wait between save and close: the kernel's timers (tail loss
			       * probe) run on the paused socket meanwhile */
};

int run_scenario(const struct scenario *sc);

/* Bench and tests: the restore part alone (one-call API, EXCL buffers). */
struct saved_conn {
	struct libsoccr_sk_data data;
	char *recvq, *sendq;
	union libsoccr_addr *self, *peer;
};
int dump_socket(int fd, struct saved_conn *out);         /* pause + save + take; fd left paused */
int restore_socket(struct saved_conn *in, int domain);   /* returns the new fd (repair off) */

/* A loopback pair of family fam: the peer sent in_bytes (unread by srv), srv sent out_bytes
 * while locked (its incoming ACKs dropped), so both queues are non-empty. srv stays locked. */
struct stream;
int loaded_pair(struct pair *p, struct stream *c2s, struct stream *s2c, uint32_t in_bytes,
		uint32_t out_bytes, enum family fam);
/* Traffic both ways (100000 bytes extra each), a clean close, no RST since c0. */
int finish_pair(int srv, int cli, struct stream *c2s, struct stream *s2c,
		const struct rst_counters *c0);

#endif
