/* The migration matrix: every family x every state x queue sizes x options, on loopback (one
 * netns), plus migrations across namespaces over veth with the server address moved. */
#include <netinet/tcp.h>
#include <stdlib.h>

#include "harness.h"
#include "migrate.h"

void register_matrix_tests(void);

static int run(const void *arg)
{
	return run_scenario(arg);
}

static const char *state_name(int st)
{
	switch (st) {
	case TCP_ESTABLISHED: return "ESTABLISHED";
	case TCP_FIN_WAIT1: return "FIN_WAIT1";
	case TCP_FIN_WAIT2: return "FIN_WAIT2";
	case TCP_CLOSE_WAIT: return "CLOSE_WAIT";
	case TCP_LAST_ACK: return "LAST_ACK";
	case TCP_CLOSING: return "CLOSING";
	default: return "?";
	}
}

static void add(struct scenario sc, const char *what)
{
	struct scenario *copy = malloc(sizeof(*copy));
	*copy = sc;
	static const char *const off_names[] = {"", " ts-off", " sack-off", " ts+sack-off",
						" wscale-off", " ts+wscale-off", " sack+wscale-off",
						" opts-off"};
	test_add(run, copy, "migrate %s %s %s%s%s%s recvq=%u sendq=%u%s",
		 sc.veth ? (sc.veth_same_ns ? "veth-same-ns" : "veth") : "lo",
		 family_name(sc.fam), state_name(sc.state), off_names[sc.opts_off & 7], sc.api == API_STAGED ? " staged" : "",
		 sc.non_excl ? " non-excl" : "", sc.recvq, sc.sendq, what);
}

void register_matrix_tests(void)
{
	static const int states[] = {TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
				     TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING};
	const uint32_t big = 4u << 20;

	/* a receive queue far above the new socket's default buffers */
	struct scenario huge = {.fam = FAM_V4, .state = TCP_ESTABLISHED, .recvq = 12u << 20,
				.sendq = 8u << 20, .extra = 1 << 20};
	add(huge, " huge");

	for (int f = FAM_V4; f <= FAM_MAPPED; f++) {
		for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
			for (unsigned opts_off = 0; opts_off <= OPT_OFF_ALL; opts_off += OPT_OFF_ALL) {
				/* empty queues, 1 byte each way */
				for (uint32_t q = 0; q <= 1; q++) {
					struct scenario sc = {.fam = f, .state = states[s],
							      .recvq = q, .sendq = q,
							      .opts_off = opts_off, .extra = 4096};
					add(sc, "");
				}
			}
			/* several MB in the receive queue and in the send queue */
			struct scenario sc = {.fam = f, .state = states[s], .recvq = big,
					      .sendq = states[s] == TCP_FIN_WAIT2 ? 16384 : big,
					      .extra = 1 << 20};
			add(sc, "");
		}
		/* unsent data: the peer's window is zero */
		struct scenario zw = {.fam = f, .state = TCP_ESTABLISHED, .recvq = 1000,
				      .sendq = 1 << 20, .zero_window = true, .extra = 65536};
		add(zw, " zero-window");
		zw.state = TCP_FIN_WAIT1;
		add(zw, " zero-window");
		/* the staged 2016 API and caller-owned (non-EXCL) buffers */
		struct scenario st = {.fam = f, .state = TCP_ESTABLISHED, .recvq = 3000,
				      .sendq = 5000, .api = API_STAGED, .extra = 65536};
		add(st, "");
		st.state = TCP_LAST_ACK;
		add(st, "");
		st.state = TCP_ESTABLISHED;
		st.api = API_ONE_CALL;
		st.non_excl = true;
		add(st, "");
		/* across namespaces over veth, address moved to a third namespace */
		struct scenario ve = {.fam = f, .state = TCP_ESTABLISHED, .recvq = 70000,
				      .sendq = 90000, .veth = true, .extra = 1 << 20};
		add(ve, "");
		ve.state = TCP_CLOSE_WAIT;
		add(ve, "");
		ve.state = TCP_FIN_WAIT1;
		ve.opts_off = OPT_OFF_ALL;
		add(ve, "");
		/* over veth without moving: restored in the server's own netns */
		struct scenario vs = {.fam = f, .state = TCP_ESTABLISHED, .recvq = 5000,
				      .sendq = 7000, .veth = true, .veth_same_ns = true,
				      .extra = 1 << 20};
		add(vs, "");
	}
	/* the remaining half-closed states over veth, and MB queues at a 1500-byte MTU */
	static const int more[] = {TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_CLOSING};
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
		struct scenario sc = {.fam = FAM_V6, .state = more[i], .recvq = 3000, .sendq = 3000,
				      .veth = true, .extra = 65536};
		add(sc, "");
	}
	/* Sent data unacknowledged (ACKs dropped), more waiting for the congestion window, and
	 * 60 ms between save and close: the tail loss probe fires on the paused socket. It must
	 * not transmit new data the saved state does not know about (the peer would then ACK
	 * beyond the restored snd_nxt and the connection would stall). */
	for (int f = FAM_V4; f <= FAM_V6; f++) {
		struct scenario tlp = {.fam = f, .state = TCP_ESTABLISHED, .recvq = 1000,
				       .sendq = 90000, .veth = true, .close_delay_ms = 60,
				       .extra = 65536};
		add(tlp, " probe-after-save");
	}
	struct scenario mb = {.fam = FAM_V4, .state = TCP_ESTABLISHED, .recvq = 4u << 20,
			      .sendq = 4u << 20, .veth = true, .extra = 1 << 20};
	add(mb, "");
	/* each TCP option off on its own */
	for (unsigned off = OPT_OFF_TS; off <= OPT_OFF_WSCALE; off <<= 1) {
		struct scenario one = {.fam = FAM_V4, .state = TCP_ESTABLISHED, .recvq = 20000,
				       .sendq = 30000, .opts_off = off, .extra = 1 << 20};
		add(one, "");
		one.fam = FAM_V6;
		one.state = TCP_CLOSE_WAIT;
		add(one, "");
	}
}
