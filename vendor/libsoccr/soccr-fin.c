/*
 * libsoccr (node-criu): re-creating the peer's FIN on a restored socket.
 *
 * A half-closed connection whose peer already sent FIN (CLOSE_WAIT, CLOSING, LAST_ACK) cannot be
 * rebuilt with socket options alone: the receive-queue repair writes carry no FIN flag. So the
 * FIN is re-received: a FIN+ACK segment from the peer's address and port to ours, built here
 * (IPv4 or IPv6 header, TCP header, checksums; no libnet), sent through a raw socket marked
 * SOCCR_MARK. Its destination is a local address, so it loops back into our socket. Then we wait
 * (bounded) until TCP_INFO shows the socket took it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "soccr-internal.h"

struct tcp_seg {
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t doff_res;  /* data offset in 32-bit words << 4 */
	uint8_t flags;
	uint16_t window, csum, urg;
};
_Static_assert(sizeof(struct tcp_seg) == 20, "TCP header is 20 bytes");

#define TH_FIN_FLAG 0x01
#define TH_ACK_FLAG 0x10

static uint32_t csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) travels as IPv4. */
static bool v4_of(const union libsoccr_addr *a, struct in_addr *out, uint16_t *port)
{
	if (a->sa.sa_family == AF_INET) {
		*out = a->v4.sin_addr;
		*port = a->v4.sin_port;
		return true;
	}
	if (IN6_IS_ADDR_V4MAPPED(&a->v6.sin6_addr)) {
		memcpy(out, &a->v6.sin6_addr.s6_addr[12], 4);
		*port = a->v6.sin6_port;
		return true;
	}
	return false;
}

static int send_v4(const union libsoccr_addr *peer, const union libsoccr_addr *self,
		   struct tcp_seg *th)
{
	struct {
		uint8_t ver_ihl, tos;
		uint16_t tot_len, id, frag;
		uint8_t ttl, proto;
		uint16_t csum;
		struct in_addr saddr, daddr;
		struct tcp_seg tcp;
	} pkt;
	struct {
		struct in_addr saddr, daddr;
		uint8_t zero, proto;
		uint16_t len;
	} pseudo;
	struct sockaddr_in to = {.sin_family = AF_INET};
	uint16_t sport = 0, dport = 0;
	int fd, ret, mark = SOCCR_MARK;

	memset(&pkt, 0, sizeof(pkt));
	v4_of(peer, &pkt.saddr, &sport);
	v4_of(self, &pkt.daddr, &dport);
	th->sport = sport;
	th->dport = dport;
	pseudo.saddr = pkt.saddr;
	pseudo.daddr = pkt.daddr;
	pseudo.zero = 0;
	pseudo.proto = IPPROTO_TCP;
	pseudo.len = htons(sizeof(*th));
	th->csum = csum_fold(csum_add(csum_add(0, &pseudo, sizeof(pseudo)), th, sizeof(*th)));
	pkt.ver_ihl = 0x45;
	pkt.tot_len = htons(sizeof(pkt));
	pkt.frag = htons(0x4000); /* DF */
	pkt.ttl = 64;
	pkt.proto = IPPROTO_TCP;
	pkt.tcp = *th;
	pkt.csum = csum_fold(csum_add(0, &pkt, 20));
	to.sin_addr = pkt.daddr;

	/* IPPROTO_RAW implies IP_HDRINCL: the header above goes out as built. */
	fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		return -1;
	ret = setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	if (!ret && sendto(fd, &pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		ret = -1;
	{
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return ret;
}

static int send_v6(const union libsoccr_addr *peer, const union libsoccr_addr *self,
		   struct tcp_seg *th)
{
	struct {
		uint32_t ver_class_flow;
		uint16_t payload_len;
		uint8_t next_header, hop_limit;
		struct in6_addr saddr, daddr;
		struct tcp_seg tcp;
	} pkt;
	struct {
		struct in6_addr saddr, daddr;
		uint32_t len;
		uint8_t zero[3], next_header;
	} pseudo;
	struct sockaddr_in6 to = {.sin6_family = AF_INET6};
	int fd, ret, mark = SOCCR_MARK;

	memset(&pkt, 0, sizeof(pkt));
	memset(&pseudo, 0, sizeof(pseudo));
	th->sport = peer->v6.sin6_port;
	th->dport = self->v6.sin6_port;
	pseudo.saddr = peer->v6.sin6_addr;
	pseudo.daddr = self->v6.sin6_addr;
	pseudo.len = htonl(sizeof(*th));
	pseudo.next_header = IPPROTO_TCP;
	th->csum = csum_fold(csum_add(csum_add(0, &pseudo, sizeof(pseudo)), th, sizeof(*th)));
	pkt.ver_class_flow = htonl(6u << 28);
	pkt.payload_len = htons(sizeof(*th));
	pkt.next_header = IPPROTO_TCP;
	pkt.hop_limit = 64;
	pkt.saddr = peer->v6.sin6_addr;
	pkt.daddr = self->v6.sin6_addr;
	pkt.tcp = *th;
	to.sin6_addr = pkt.daddr;
	to.sin6_scope_id = self->v6.sin6_scope_id;

	/* AF_INET6 + IPPROTO_RAW implies IPV6_HDRINCL (Linux >= 4.5). */
	fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		return -1;
	ret = setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	if (!ret && sendto(fd, &pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		ret = -1;
	{
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return ret;
}

static int tcp_state(int fd, uint8_t *state)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	*state = ti.tcpi_state;
	return 0;
}

int soccr_inject_peer_segment(struct libsoccr_sk *sk, const struct libsoccr_sk_data *data,
			      uint32_t seq, uint32_t ack_seq, bool fin)
{
	const union libsoccr_addr *self = sk->addr[1], *peer = sk->addr[0];
	union libsoccr_addr self_q, peer_q;
	struct tcp_seg th;
	uint32_t wnd = 0xffff;
	uint8_t before, now;
	struct in_addr unused;
	uint16_t unused_port;
	int ret;

	/* The staged API leaves bind/connect to the caller: ask the socket. */
	if (!self || !peer) {
		socklen_t len = sizeof(self_q);
		if (getsockname(sk->fd, &self_q.sa, &len) < 0)
			return -1;
		len = sizeof(peer_q);
		if (getpeername(sk->fd, &peer_q.sa, &len) < 0)
			return -1;
		self = &self_q;
		peer = &peer_q;
	}
	if (tcp_state(sk->fd, &before) < 0)
		return -1;

	if (data->flags & SOCCR_FLAGS_WINDOW) {
		wnd = data->snd_wnd >> ((data->opt_mask & TCPI_OPT_WSCALE) ? data->snd_wscale : 0);
		if (wnd > 0xffff)
			wnd = 0xffff;
	}
	memset(&th, 0, sizeof(th));
	th.seq = htonl(seq);
	th.ack = htonl(ack_seq);
	th.doff_res = 5 << 4;
	th.flags = fin ? TH_FIN_FLAG | TH_ACK_FLAG : TH_ACK_FLAG;
	th.window = htons((uint16_t)wnd);

	if (v4_of(peer, &unused, &unused_port))
		ret = send_v4(peer, self, &th);
	else
		ret = send_v6(peer, self, &th);
	if (ret < 0) {
		loge("Unable to send the peer's %s: errno %d\n", fin ? "FIN" : "ACK", errno);
		return -1;
	}

	/* Loopback delivery normally completes inside sendto(); allow up to ~1 s. */
	for (int i = 0; i < 1000; i++) {
		if (tcp_state(sk->fd, &now) < 0)
			return -1;
		if (now != before) {
			logd("Peer %s re-received: %s -> %s\n", fin ? "FIN" : "ACK",
			     soccr_state_name(before), soccr_state_name(now));
			return 0;
		}
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	loge("The injected %s was not accepted (state %s)\n", fin ? "FIN" : "ACK",
	     soccr_state_name(before));
	errno = ETIMEDOUT;
	return -1;
}
