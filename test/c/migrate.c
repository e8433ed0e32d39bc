#define _GNU_SOURCE
#include "migrate.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"
#include "stream.h"



/* ---- scenario pieces ---- */

struct env {
	int peer_ns, src_ns, dst_ns; /* -1 = the test's own netns */
	char names[3][96];
	char link_peer[16], link_srv[16];
	const char *srv_v4, *srv_v6;
};

static const char *V4_PEER = "10.201.0.1", *V4_SRV = "10.201.0.2";
static const char *V6_PEER = "fd00:201::1", *V6_SRV = "fd00:201::2";

static int setup_veth(struct env *e)
{
	const char *suffix[3] = {"p", "a", "b"};
	uint32_t r = rand32();

	for (int i = 0; i < 3; i++)
		snprintf(e->names[i], sizeof(e->names[i]), "%s%08x-%s", test_netns_prefix(), r,
			 suffix[i]);
	snprintf(e->link_peer, sizeof(e->link_peer), "v%08xp", r);
	snprintf(e->link_srv, sizeof(e->link_srv), "v%08xs", r);
	e->peer_ns = netns_create(e->names[0]);
	e->src_ns = netns_create(e->names[1]);
	e->dst_ns = netns_create(e->names[2]);
	CHECK(e->peer_ns >= 0 && e->src_ns >= 0 && e->dst_ns >= 0, "netns");
	/* No IPv6 duplicate address detection: a tentative link-local address would delay
	 * neighbour discovery (and the first packets) by about a second after the link moves. */
	for (int i = 0; i < 3; i++)
		TRY(run_in_ns(i == 0 ? e->peer_ns : i == 1 ? e->src_ns : e->dst_ns,
			      "sysctl -qw net.ipv6.conf.all.accept_dad=0"
			      " net.ipv6.conf.default.accept_dad=0"));
	TRY(run_cmd("ip -n %s link set lo up && ip -n %s link set lo up && ip -n %s link set lo up"
		    " && ip -n %s link add %s type veth peer name %s netns %s"
		    " && ip -n %s addr add %s/24 dev %s && ip -n %s addr add %s/64 dev %s nodad"
		    " && ip -n %s link set %s up"
		    " && ip -n %s addr add %s/24 dev %s && ip -n %s addr add %s/64 dev %s nodad"
		    " && ip -n %s link set %s up",
		    e->names[0], e->names[1], e->names[2], e->names[0], e->link_peer, e->link_srv,
		    e->names[1], e->names[0], V4_PEER, e->link_peer, e->names[0], V6_PEER,
		    e->link_peer, e->names[0], e->link_peer, e->names[1], V4_SRV, e->link_srv,
		    e->names[1], V6_SRV, e->link_srv, e->names[1], e->link_srv));
	e->srv_v4 = V4_SRV;
	e->srv_v6 = V6_SRV;
	return 0;
}

/* The server's address moves with its link from the source netns to the destination netns. */
static int move_server_link(struct env *e)
{
	return run_cmd("ip -n %s link set %s netns %s && ip -n %s addr add %s/24 dev %s"
		       " && ip -n %s addr add %s/64 dev %s nodad && ip -n %s link set %s up",
		       e->names[1], e->link_srv, e->names[2], e->names[2], V4_SRV, e->link_srv,
		       e->names[2], V6_SRV, e->link_srv, e->names[2], e->link_srv);
}

static int options_off(int nsfd, unsigned off)
{
	return run_in_ns(nsfd, "sysctl -qw net.ipv4.tcp_timestamps=%d net.ipv4.tcp_sack=%d"
			       " net.ipv4.tcp_window_scaling=%d",
			 !(off & OPT_OFF_TS), !(off & OPT_OFF_SACK), !(off & OPT_OFF_WSCALE));
}

static int counters_in(int nsfd, struct rst_counters *c)
{
	int home = netns_self(), ret;
	if (home < 0 || netns_enter(nsfd) < 0)
		return -1;
	ret = read_rst_counters(c);
	netns_enter(home);
	close(home);
	return ret;
}

/* Writes as much as the socket takes, up to n bytes, for at most ~timeout_ms. */
static int write_up_to(int fd, struct stream *s, uint64_t n, int timeout_ms)
{
	uint64_t target = s->written + n;
	int idle = 0;
	while (s->written < target && idle < timeout_ms) {
		ssize_t w = stream_write(fd, s, target - s->written);
		CHECK(w >= 0, "write");
		if (w == 0) {
			sleep_ms(5);
			idle += 5;
		} else {
			idle = 0;
		}
	}
	return 0;
}

static bool our_fin_state(int st)
{
	return st == TCP_FIN_WAIT1 || st == TCP_FIN_WAIT2 || st == TCP_CLOSING || st == TCP_LAST_ACK;
}

static bool peer_fin_state(int st)
{
	return st == TCP_CLOSE_WAIT || st == TCP_CLOSING || st == TCP_LAST_ACK;
}

/* Brings p->srv into sc->state with the requested queues; locks it (socket filter). */
static int build_state(const struct scenario *sc, struct pair *p, struct stream *c2s,
		       struct stream *s2c, bool *cli_locked)
{
	if (sc->recvq) {
		TRY(stream_write_all(p->cli, c2s, sc->recvq, 10000));
		TRY(wait_queue(p->srv, false, (int)sc->recvq, 10000));
	}
	switch (sc->state) {
	case TCP_ESTABLISHED:
		if (sc->zero_window) {
			/* The peer's window closes: the rest stays unsent. */
			TRY(write_up_to(p->srv, s2c, sc->sendq, 200));
			TRY(lock_socket(p->srv));
		} else {
			TRY(lock_socket(p->srv));
			TRY(write_up_to(p->srv, s2c, sc->sendq, 100));
		}
		break;
	case TCP_FIN_WAIT1:
		TRY(lock_socket(p->srv));
		TRY(write_up_to(p->srv, s2c, sc->sendq, 100));
		CHECK(shutdown(p->srv, SHUT_WR) == 0, "shutdown");
		break;
	case TCP_FIN_WAIT2:
		TRY(write_up_to(p->srv, s2c, sc->sendq, 100));
		CHECK(shutdown(p->srv, SHUT_WR) == 0, "shutdown");
		TRY(wait_state(p->srv, TCP_FIN_WAIT2, 5000));
		TRY(lock_socket(p->srv));
		break;
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
		CHECK(shutdown(p->cli, SHUT_WR) == 0, "shutdown");
		TRY(wait_state(p->srv, TCP_CLOSE_WAIT, 5000));
		TRY(lock_socket(p->srv));
		TRY(write_up_to(p->srv, s2c, sc->sendq, 100));
		if (sc->state == TCP_LAST_ACK)
			CHECK(shutdown(p->srv, SHUT_WR) == 0, "shutdown");
		break;
	case TCP_CLOSING:
		/* Our FIN is lost at the peer, then the peer's FIN arrives: CLOSING. */
		TRY(lock_socket(p->cli));
		*cli_locked = true;
		TRY(write_up_to(p->srv, s2c, sc->sendq, 100));
		CHECK(shutdown(p->srv, SHUT_WR) == 0, "shutdown");
		CHECK(shutdown(p->cli, SHUT_WR) == 0, "shutdown");
		TRY(wait_state(p->srv, TCP_CLOSING, 5000));
		TRY(lock_socket(p->srv));
		break;
	default:
		FAIL("unsupported scenario state %d", sc->state);
	}
	TRY(wait_state(p->srv, sc->state, 5000));
	return 0;
}

static int check_saved(const struct scenario *sc, const struct libsoccr_sk_data *d, int srv_fd)
{
	CHECK(d->state == (uint32_t)sc->state, "saved state %u", d->state);
	CHECK(d->inq_len == sc->recvq, "inq_len %u, want %u", d->inq_len, sc->recvq);
	CHECK(d->unsq_len <= d->outq_len, "unsq %u outq %u", d->unsq_len, d->outq_len);
	if (sc->zero_window)
		CHECK(d->unsq_len > 0, "zero window: expected unsent data, outq %u", d->outq_len);
	uint32_t want = (sc->opts_off & OPT_OFF_TS ? 0 : TCPI_OPT_TIMESTAMPS) |
			(sc->opts_off & OPT_OFF_SACK ? 0 : TCPI_OPT_SACK) |
			(sc->opts_off & OPT_OFF_WSCALE ? 0 : TCPI_OPT_WSCALE);
	CHECK(d->opt_mask == want, "opt_mask %#x, want %#x", d->opt_mask, want);
	CHECK(d->flags & SOCCR_FLAGS_WINDOW, "window saved");
	(void)srv_fd;
	return 0;
}

static int restore_staged(struct libsoccr_sk *sk, int fd, struct libsoccr_sk_data *d,
			  union libsoccr_addr *self, union libsoccr_addr *peer, char *recvq,
			  char *sendq)
{
	CHECK(libsoccr_set_sk_data_unbound(sk, d, sizeof(*d)) == 0, "unbound");
	CHECK(bind(fd, &self->sa, addr_len(self)) == 0, "bind");
	CHECK(connect(fd, &peer->sa, addr_len(peer)) == 0, "connect");
	CHECK(libsoccr_set_sk_data_noq(sk, d, sizeof(*d)) == 0, "noq");
	if (d->inq_len)
		CHECK(libsoccr_restore_queue(sk, d, sizeof(*d), TCP_RECV_QUEUE, recvq) == 0, "recvq");
	if (d->outq_len)
		CHECK(libsoccr_restore_queue(sk, d, sizeof(*d), TCP_SEND_QUEUE, sendq) == 0, "sendq");
	CHECK(libsoccr_set_sk_data(sk, d, sizeof(*d)) == 0, "set_sk_data");
	return 0;
}

int run_scenario(const struct scenario *sc)
{
	struct env e = {.peer_ns = -1, .src_ns = -1, .dst_ns = -1};
	struct rst_counters c0[3], c1[3];
	struct stream c2s, s2c;
	struct pair p;
	bool cli_locked = false;
	unsigned flags = sc->non_excl ? 0 : SOCCR_MEM_EXCL;
	int fds_before = count_fds();

	stream_init(&c2s, 0);
	stream_init(&s2c, 1);
	if (sc->veth)
		TRY(setup_veth(&e));
	if (sc->opts_off) {
		TRY(options_off(e.peer_ns, sc->opts_off));
		if (sc->veth) {
			TRY(options_off(e.src_ns, sc->opts_off));
			TRY(options_off(e.dst_ns, sc->opts_off));
		}
	}
	int nss[3] = {e.peer_ns, e.src_ns, e.dst_ns};
	int nns = sc->veth ? 3 : 1;
	for (int i = 0; i < nns; i++)
		TRY(counters_in(nss[i], &c0[i]));

	struct pair_opts po = {
		.fam = sc->fam, .srv_v4 = e.srv_v4, .srv_v6 = e.srv_v6,
		.cli_ns = e.peer_ns, .srv_ns = e.src_ns,
		.cli_rcvbuf = sc->zero_window ? 2048 : 0,
		.srv_rcvbuf = sc->recvq > 65536 ? 16 << 20 : 0,
	};
	TRY(make_pair(&p, &po));
	TRY(set_nonblock(p.cli));
	TRY(set_nonblock(p.srv));
	if (sc->sendq > 65536) {
		int big = 16 << 20;
		CHECK(setsockopt(p.srv, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) == 0, "sndbuf");
	}
	TRY(build_state(sc, &p, &c2s, &s2c, &cli_locked));

	/* ---- dump ---- */
	struct libsoccr_sk_data d;
	struct libsoccr_sk *sk = libsoccr_pause(p.srv);
	CHECK(sk, "pause");
	int ret = libsoccr_save(sk, &d, sizeof(d));
	CHECK(ret == (int)sizeof(d), "save returned %d", ret);
	NOTE("saved %u: in %u@%u out %u@%u unsent %u opts %#x ts %u mss %u wnd %u/%u/%u/%u/%u "
	     "ws %u/%u; c2s written %llu, s2c written %llu read %llu", d.state, d.inq_len,
	     d.inq_seq, d.outq_len, d.outq_seq, d.unsq_len, d.opt_mask, d.timestamp, d.mss_clamp,
	     d.snd_wl1, d.snd_wnd, d.max_window, d.rcv_wnd, d.rcv_wup, d.snd_wscale, d.rcv_wscale,
	     (unsigned long long)c2s.written, (unsigned long long)s2c.written,
	     (unsigned long long)s2c.read);
	TRY(check_saved(sc, &d, p.srv));
	char *recvq = libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, flags);
	char *sendq = libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, flags);
	CHECK(!d.inq_len || recvq, "receive queue");
	CHECK(!d.outq_len || sendq, "send queue");
	union libsoccr_addr *self = libsoccr_get_addr(sk, 1, flags);
	union libsoccr_addr *peer = libsoccr_get_addr(sk, 0, flags);
	CHECK(self && peer, "get_addr");
	{
		union libsoccr_addr a;
		socklen_t len = sizeof(a);
		CHECK(getsockname(p.srv, &a.sa, &len) == 0 && !memcmp(&a, self, len), "self addr");
		len = sizeof(a);
		CHECK(getpeername(p.srv, &a.sa, &len) == 0 && !memcmp(&a, peer, len), "peer addr");
	}
	/* Nothing may reach the 4-tuple while no socket owns it (it would answer with RST). */
	char guard[64];
	TRY(nft_drop_flow(e.peer_ns, peer, self, guard, sizeof(guard)));
	if (sc->close_delay_ms)
		sleep_ms(sc->close_delay_ms);
	if (!sc->non_excl)
		libsoccr_release(sk);
	CHECK(close(p.srv) == 0, "close in repair mode");
	if (sc->veth && !sc->veth_same_ns)
		TRY(move_server_link(&e));

	/* ---- restore ---- */
	int home = netns_self();
	CHECK(home >= 0, "netns fd");
	TRY(netns_enter(sc->veth_same_ns ? e.src_ns : e.dst_ns));
	int fd = socket(srv_domain(sc->fam), SOCK_STREAM | SOCK_CLOEXEC, 0), off = 0;
	CHECK(fd >= 0, "socket");
	if (sc->fam == FAM_MAPPED)
		CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == 0, "v6only");
	struct libsoccr_sk *rsk = libsoccr_pause(fd);
	CHECK(rsk, "pause new socket");
	if (sc->api == API_ONE_CALL) {
		CHECK(libsoccr_set_addr(rsk, 1, self, flags) == 0, "set_addr self");
		CHECK(libsoccr_set_addr(rsk, 0, peer, flags) == 0, "set_addr peer");
		if (recvq)
			CHECK(libsoccr_set_queue_bytes(rsk, TCP_RECV_QUEUE, recvq, flags) == 0, "setq");
		if (sendq)
			CHECK(libsoccr_set_queue_bytes(rsk, TCP_SEND_QUEUE, sendq, flags) == 0, "setq");
		CHECK(libsoccr_restore(rsk, &d, sizeof(d)) == 0, "restore");
	} else {
		TRY(restore_staged(rsk, fd, &d, self, peer, recvq, sendq));
		if (!sc->non_excl) {
			free(recvq);
			free(sendq);
			free(self);
			free(peer);
		}
	}
	/* With unsent data our FIN is queued behind it: CLOSING (our FIN sent, then theirs
	 * received) becomes LAST_ACK (theirs received, ours unsent). */
	int restored = tcp_state_of(fd);
	if (d.unsq_len && sc->state == TCP_CLOSING)
		CHECK(restored == TCP_LAST_ACK, "restored state %d (FIN behind unsent data)", restored);
	else
		CHECK(restored == sc->state, "restored state %d", restored);
	/* The restored socket owns the 4-tuple again: the guard can go before resume. */
	TRY(nft_delete_table(e.peer_ns, guard));
	libsoccr_resume(rsk);
	if (sc->non_excl)
		libsoccr_release(sk); /* the dump handle owned the buffers until now */
	CHECK(in_repair(fd) == 0, "repair off after resume");
	TRY(netns_enter(home));
	close(home);
	if (cli_locked)
		TRY(unlock_socket(p.cli));

	/* ---- traffic both ways, then the FIN exchange ---- */
	TRY(set_nonblock(fd));
	struct pump_end srv_end = {.fd = fd, .out = &s2c, .in = &c2s,
				   .extra = our_fin_state(sc->state) ? 0 : sc->extra,
				   .wr_shut = our_fin_state(sc->state)};
	struct pump_end cli_end = {.fd = p.cli, .out = &c2s, .in = &s2c,
				   .extra = peer_fin_state(sc->state) ? 0 : sc->extra,
				   .wr_shut = peer_fin_state(sc->state)};
	if (pump_until_closed(&srv_end, &cli_end, 20000)) {
		/* Leave evidence in the test log: socket internals and neighbours per netns. */
		for (int i = 0; i < (sc->veth ? 3 : 1); i++)
			run_in_ns(i == 0 ? e.peer_ns : i == 1 ? e.src_ns : e.dst_ns,
				  "echo '--- netns %d'; ss -tinoem; ip neigh; ip addr; "
				  "nft list ruleset; cat /proc/net/netstat | head -2 1>&2", i);
		FAIL("traffic after the restore");
	}
	/* Both FINs sent and acknowledged: both sockets leave the connection (TIME_WAIT or
	 * CLOSE, which an fd reports as TCP_CLOSE). */
	TRY(wait_state(fd, TCP_CLOSE, 10000));
	TRY(wait_state(p.cli, TCP_CLOSE, 10000));
	for (int i = 0; i < nns; i++) {
		TRY(counters_in(nss[i], &c1[i]));
		CHECK(rst_counters_equal(&c0[i], &c1[i]), "no RST in netns %d", i);
	}
	NOTE("%s %s: in %u out %u unsent %u; moved c2s %llu s2c %llu bytes", family_name(sc->fam),
	     sc->veth ? "veth" : "lo", d.inq_len, d.outq_len, d.unsq_len,
	     (unsigned long long)c2s.read, (unsigned long long)s2c.read);
	close(fd);
	close(p.cli);
	for (int i = 0; i < 3; i++)
		if (nss[i] >= 0)
			close(nss[i]);
	CHECK(count_fds() == fds_before, "fd leak: %d -> %d", fds_before, count_fds());
	if (sc->veth)
		for (int i = 0; i < 3; i++)
			TRY(netns_delete(e.names[i]));
	return 0;
}

