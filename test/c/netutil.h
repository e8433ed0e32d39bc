/* Helpers for the C tests: addresses, connection pairs, locks (socket filters, nftables),
 * named network namespaces and veth links, counters, waits. Every helper returns 0 on success
 * and prints why on failure. */
#ifndef NCR_TEST_NETUTIL_H
#define NCR_TEST_NETUTIL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "soccr.h"

enum family { FAM_V4, FAM_V6, FAM_MAPPED };
const char *family_name(enum family fam);

/* Builds an address; host is a numeric IPv4 or IPv6 string. For FAM_MAPPED a v4 host becomes
 * ::ffff:a.b.c.d. */
int make_addr(union libsoccr_addr *out, socklen_t *len, int domain, const char *host, int port);
socklen_t addr_len(const union libsoccr_addr *a);

/* A connected pair: cli is the peer (not migrated), srv the accepted socket that is migrated.
 * Sockets are created in the network namespaces given as fds (-1 = current). */
struct pair {
	int cli, srv;
	enum family fam;
};
struct pair_opts {
	enum family fam;
	const char *srv_v4, *srv_v6; /* server addresses (default 127.0.0.1 / ::1) */
	int cli_ns, srv_ns;          /* netns fds, -1 = current */
	int cli_rcvbuf;              /* >0: SO_RCVBUF of cli before connect */
	int srv_rcvbuf;              /* >0: SO_RCVBUFFORCE of the listener (inherited) */
};
int make_pair(struct pair *p, const struct pair_opts *o);

/* Socket domain the migrated (server) side uses for this family. */
int srv_domain(enum family fam);

/* Per-socket lock: classic BPF "ret #0" drops every incoming packet. */
int lock_socket(int fd);
int unlock_socket(int fd);

int set_nonblock(int fd);
int tcp_state_of(int fd);
/* Waits up to timeout_ms until fd is in state; returns 0, or -1 with the state printed. */
int wait_state(int fd, int state, int timeout_ms);
/* Waits until SIOCINQ (or SIOCOUTQ if outq) of fd reaches want. */
int wait_queue(int fd, bool outq, int want, int timeout_ms);

/* Network namespaces. */
int netns_enter(int nsfd);          /* setns(CLONE_NEWNET) */
int netns_self(void);               /* fd of the current netns */
int netns_create(const char *name); /* ip netns add; returns fd or -1 */
int netns_delete(const char *name);
int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int run_in_ns(int nsfd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int set_sysctl(const char *path, const char *value); /* in the current netns */

/* nftables: a table with an output-hook chain dropping packets from src to dst (SOCCR_MARK
 * exempt), in the netns nsfd. table_out receives the unique table name. */
int nft_drop_flow(int nsfd, const union libsoccr_addr *src, const union libsoccr_addr *dst,
		  char *table_out, size_t table_len);
int nft_delete_table(int nsfd, const char *table);

/* RST-related counters of the current netns: Tcp OutRsts plus TcpExt TCPAbortOn*. */
struct rst_counters {
	long out_rsts, abort_on_data, abort_on_close, abort_on_memory, abort_on_timeout,
		abort_on_linger, abort_failed;
};
int read_rst_counters(struct rst_counters *c);
int rst_counters_equal(const struct rst_counters *a, const struct rst_counters *b);

int count_fds(void);
/* 1 if fd is in repair mode (TCP_REPAIR reads 1), 0 if not, -1 on error. */
int in_repair(int fd);

uint32_t rand32(void);
void sleep_ms(int ms);

#endif
