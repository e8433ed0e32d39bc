/*
 * libFuzzer harness for vendor/libsoccr's input checks (clang -fsanitize=fuzzer,address,undefined).
 *
 * Each input is read as a little program: a header selects what to exercise and the rest
 * supplies a struct libsoccr_sk_data, sizes, flags, queue ids and addresses. Every call's result
 * is checked against the API contract (vendor/libsoccr/README.md): return codes, errno on
 * failure, ownership of buffers and addresses (LeakSanitizer catches a leak or double free), and
 * that a refused restore leaves the handle usable. Paths:
 *   0  one-call restore (set_addr x2, set_queue_bytes x2, libsoccr_restore) on a paused fresh
 *      socket, then release or resume;
 *   1  staged restore calls in an order taken from the input;
 *   2  save on a real loopback connection (data_size from the input, queues with bytes from the
 *      input), get_queue_bytes / get_addr with input ids and flags, then release or resume;
 *   3  argument checks: NULL handles and data, bad ids, flags and families, short data_size.
 *
 * Safety: it refuses to run unless the network namespace has no interface but lo (run it under
 * `unshare -n`, see scripts/fuzz-libsoccr.sh), so nothing it sends can leave the machine; and it
 * aborts (a reported crash) when an input leaves a socket open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <dirent.h>
#include <unistd.h>

#include "soccr.h"

/* Queues above this are passed as NULL (the harness cannot lend a buffer it does not have). */
#define MAX_QUEUE (256u * 1024u)
#define MAX_DATA_SIZE 512u

static int listen_v4 = -1, listen_v6 = -1;
static uint16_t port_v4, port_v6;
static int baseline_fds;

/* ---- input reader: never fails, returns zeros past the end ---- */
struct input {
	const uint8_t *p;
	size_t len, pos;
};

static uint8_t u8(struct input *in)
{
	return in->pos < in->len ? in->p[in->pos++] : 0;
}

static uint32_t u32(struct input *in)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)u8(in) << (8 * i);
	return v;
}

static void bytes(struct input *in, void *out, size_t n)
{
	uint8_t *o = out;
	for (size_t i = 0; i < n; i++)
		o[i] = u8(in);
}

/* ---- checks ---- */
static void fail(const char *what)
{
	fprintf(stderr, "fuzz_soccr: contract violated: %s (errno %d)\n", what, errno);
	abort();
}

/* Open sockets (libsoccr and this harness create nothing else; the sanitizers' symbolizer opens
 * pipes of its own, which are not ours to count). */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	struct dirent *e;
	char path[300], target[64];

	if (!d)
		fail("opendir /proc/self/fd");
	while ((e = readdir(d))) {
		ssize_t len;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len > 7 && memcmp(target, "socket:", 7) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static void list_fds(void)
{
	char path[64], target[256];
	for (int fd = 0; fd < 1024; fd++) {
		ssize_t n;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		fprintf(stderr, "  fd %d -> %s\n", fd, target);
	}
}

static void log_nothing(unsigned int level, const char *fmt, ...)
{
	(void)level;
	(void)fmt;
}

/* The harness's own blocking calls. libFuzzer's -timeout runs a SIGALRM timer whose handler has
 * no SA_RESTART, so a loopback connect that sleeps for the handshake can end in EINTR while the
 * handshake goes on in the kernel: wait for it to finish instead of calling that a finding. */
static int connect_retrying(int fd, const struct sockaddr *to, socklen_t len)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t errlen = sizeof(err);

	if (connect(fd, to, len) == 0)
		return 0;
	if (errno != EINTR)
		return -1;
	while (poll(&pfd, 1, -1) < 0)
		if (errno != EINTR)
			return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
		return -1;
	errno = err;
	return err ? -1 : 0;
}

static int accept_retrying(int lfd)
{
	int fd;

	do
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	return fd;
}

static int make_listener(int family, uint16_t *port)
{
	union libsoccr_addr a;
	socklen_t len = sizeof(a);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&a, 0, sizeof(a));
	a.sa.sa_family = (sa_family_t)family;
	if (family == AF_INET)
		a.v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		a.v6.sin6_addr = in6addr_loopback;
	if (fd < 0 || bind(fd, &a.sa, family == AF_INET ? sizeof(a.v4) : sizeof(a.v6)) < 0 ||
	    listen(fd, 64) < 0 || getsockname(fd, &a.sa, &len) < 0)
		fail("listener");
	*port = ntohs(family == AF_INET ? a.v4.sin_port : a.v6.sin6_port);
	return fd;
}

/* Refuse to run where packets could leave the machine: only lo may exist, and it must be up. */
static void require_private_netns(void)
{
	struct if_nameindex *ifs = if_nameindex(), *i;

	if (!ifs)
		fail("if_nameindex");
	for (i = ifs; i->if_index; i++) {
		if (strcmp(i->if_name, "lo") != 0) {
			fprintf(stderr, "fuzz_soccr: interface %s exists: run me inside `unshare -n` "
					"(scripts/fuzz-libsoccr.sh)\n", i->if_name);
			exit(2);
		}
	}
	if_freenameindex(ifs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	require_private_netns();
	libsoccr_set_log(SOCCR_LOG_DBG, log_nothing); /* the log paths run too, silently */
	listen_v4 = make_listener(AF_INET, &port_v4);
	listen_v6 = make_listener(AF_INET6, &port_v6);
	baseline_fds = count_fds();
	return 0;
}

/* ---- helpers ---- */

/* An address from the input: mostly loopback (127.0.0.1, ::1, ::ffff:127.0.0.1) with the
 * listener's port or a port from the input; sometimes raw bytes (any family, any address). */
static union libsoccr_addr *input_addr(struct input *in, int family)
{
	union libsoccr_addr *a = calloc(1, sizeof(*a));
	uint8_t how = u8(in);

	if (!a)
		fail("calloc");
	bytes(in, a, sizeof(*a));
	if (how & 0x80)
		return a; /* raw: any family, any bytes */
	a->sa.sa_family = (sa_family_t)family;
	{
		/* Loopback (an unspecified address would bind and connect but never get the peer's
		 * injected FIN: every such input would wait out libsoccr's 1 s check). */
		uint16_t port = (how & 3) == 1 ? (family == AF_INET ? port_v4 : port_v6) : (uint16_t)(20000 + (how & 0x3f) * 10 + (how & 3));
		if (family == AF_INET) {
			a->v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			a->v4.sin_port = htons(port);
		} else {
			a->v6.sin6_addr = in6addr_loopback;
			if (how & 0x40) { /* ::ffff:127.0.0.1 */
				memset(&a->v6.sin6_addr, 0, sizeof(a->v6.sin6_addr));
				a->v6.sin6_addr.s6_addr[10] = 0xff;
				a->v6.sin6_addr.s6_addr[11] = 0xff;
				a->v6.sin6_addr.s6_addr[12] = 127;
				a->v6.sin6_addr.s6_addr[15] = 1;
			}
			a->v6.sin6_port = htons(port);
			a->v6.sin6_scope_id = 0;
			a->v6.sin6_flowinfo = 0;
		}
	}
	return a;
}

/* A queue buffer of exactly len bytes (so ASan sees any over-read), or NULL when too big. */
static char *queue_buf(struct input *in, uint32_t len)
{
	char *b;

	if (len == 0 || len > MAX_QUEUE)
		return NULL;
	b = malloc(len);
	if (!b)
		fail("malloc");
	for (uint32_t i = 0; i < len; i++)
		b[i] = (char)(in->pos < in->len ? in->p[in->pos + (i % (in->len - in->pos))] : (char)i);
	return b;
}

static void read_sk_data(struct input *in, struct libsoccr_sk_data *d)
{
	bytes(in, d, sizeof(*d));
	/* Keep queue lengths mostly small (a few get through large to hit the "missing buffer"
	 * and buffer-room checks). */
	if (!(d->flags & 0x80000000u)) {
		d->inq_len %= 4096;
		d->outq_len %= 4096;
	}
	if (!(d->flags & 0x40000000u)) {
		/* Mostly a state libsoccr restores, so the kernel paths run. */
		static const uint32_t states[] = {TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
						  TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING};
		d->state = states[d->state % 6];
		d->flags &= SOCCR_FLAGS_WINDOW;
		d->snd_wscale %= 15;
		d->rcv_wscale %= 15;
		d->opt_mask &= 0xff; /* all of tcpi_options: the bits restore ignores too */
		if (d->outq_len)
			d->unsq_len = (uint32_t)(d->unsq_len % ((uint64_t)d->outq_len + 1));
		else
			d->unsq_len = 0;
		if (d->state == TCP_FIN_WAIT2)
			d->outq_len = d->unsq_len = 0;
	}
}

static int fresh_socket(int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("socket");
	if (family == AF_INET6) {
		int off = 0;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	}
	return fd;
}

/* Ends a handle the way the input says: resume (only after a complete restore: traffic stays
 * on lo) or release. */
static void finish(struct libsoccr_sk *sk, int restored, uint8_t how)
{
	if (restored && (how & 1))
		libsoccr_resume(sk);
	else
		libsoccr_release(sk);
}

/* ---- path 0: one-call restore ---- */
static void one_call_restore(struct input *in, int family)
{
	struct libsoccr_sk_data d;
	unsigned data_size;
	int fd = fresh_socket(family), restored = 0;
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	union libsoccr_addr *src, *dst;
	char *inq, *outq;
	uint8_t flags = u8(in);

	if (!sk)
		fail("pause of a fresh socket");
	read_sk_data(in, &d);
	data_size = (flags & 0x10) ? u32(in) % MAX_DATA_SIZE : sizeof(d);
	src = input_addr(in, family);
	dst = input_addr(in, family);
	inq = queue_buf(in, d.inq_len);
	outq = queue_buf(in, d.outq_len);

	/* EXCL hands ownership over on success; otherwise the harness frees after restore. */
	if (libsoccr_set_addr(sk, 1, src, SOCCR_MEM_EXCL) < 0) {
		if (errno != EINVAL)
			fail("set_addr errno");
		free(src);
	}
	if (libsoccr_set_addr(sk, 0, dst, SOCCR_MEM_EXCL) < 0) {
		if (errno != EINVAL)
			fail("set_addr errno");
		free(dst);
	}
	if (inq && libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, inq, (flags & 1) ? SOCCR_MEM_EXCL : 0) < 0)
		fail("set_queue_bytes recv");
	if (outq && libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, outq, (flags & 2) ? SOCCR_MEM_EXCL : 0) < 0)
		fail("set_queue_bytes send");

	{
		/* data lives in a buffer of exactly data_size bytes (ASan: no read beyond it). */
		unsigned alloc = data_size < sizeof(d) ? sizeof(d) : data_size;
		struct libsoccr_sk_data *heap = calloc(1, alloc);
		if (!heap)
			fail("calloc");
		memcpy(heap, &d, sizeof(d));
		errno = 0;
		if (libsoccr_restore(sk, heap, data_size) == 0) {
			restored = 1;
			if (data_size < sizeof(d))
				fail("restore accepted a short data_size");
		} else if (errno == 0) {
			fail("restore failed without errno");
		}
		if (!restored && (flags & 4)) {
			/* A refused restore leaves the handle usable: a second attempt is allowed. */
			errno = 0;
			if (libsoccr_restore(sk, heap, data_size) == 0)
				restored = 1;
			else if (errno == 0)
				fail("second restore failed without errno");
		}
		free(heap);
	}
	finish(sk, restored, flags >> 5);
	if (!(flags & 1))
		free(inq);
	if (!(flags & 2))
		free(outq);
	close(fd);
}

/* ---- path 1: staged restore, steps in input order ---- */
static void staged_restore(struct input *in, int family)
{
	struct libsoccr_sk_data d;
	int fd = fresh_socket(family), done = 0;
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	union libsoccr_addr *src, *dst;
	char *inq, *outq;
	uint8_t steps = u8(in), how = u8(in);

	if (!sk)
		fail("pause of a fresh socket");
	read_sk_data(in, &d);
	src = input_addr(in, family);
	dst = input_addr(in, family);
	inq = queue_buf(in, d.inq_len);
	outq = queue_buf(in, d.outq_len);

	for (int i = 0; i < 8; i++) {
		uint8_t op = (i == 0 && !(how & 0x80)) ? 0 : (uint8_t)((u8(in) + steps + i) % 8);
		socklen_t len = src->sa.sa_family == AF_INET ? sizeof(src->v4) : sizeof(src->v6);
		int ret = 0;

		if (how & 0x40)
			op = (uint8_t)i; /* the documented order */
		errno = 0;
		switch (op) {
		case 0:
			ret = libsoccr_set_sk_data_unbound(sk, &d, sizeof(d));
			break;
		case 1:
			ret = bind(fd, &src->sa, len);
			break;
		case 2:
			ret = connect(fd, &dst->sa, len);
			break;
		case 3:
			ret = libsoccr_set_sk_data_noq(sk, &d, sizeof(d));
			break;
		case 4:
			ret = libsoccr_restore_queue(sk, &d, sizeof(d), TCP_RECV_QUEUE, inq);
			break;
		case 5:
			ret = libsoccr_restore_queue(sk, &d, sizeof(d), TCP_SEND_QUEUE, outq);
			break;
		case 6:
			ret = libsoccr_set_sk_data(sk, &d, sizeof(d));
			if (ret == 0)
				done = 1;
			break;
		case 7: {
			/* Any queue id; the buffer is the one of that queue's length (the library
			 * cannot check a length: a shorter buffer would be the caller's bug). */
			int qid = (int)(int8_t)u8(in);
			ret = libsoccr_restore_queue(sk, &d, sizeof(d), qid, qid == TCP_SEND_QUEUE ? outq : inq);
			break;
		}
		}
		if (ret < 0 && op != 1 && op != 2 && errno == 0)
			fail("staged call failed without errno");
	}
	finish(sk, done, how);
	free(src);
	free(dst);
	free(inq);
	free(outq);
	close(fd);
}

/* ---- path 2: save on a real loopback connection ---- */
static void save_path(struct input *in, int family)
{
	int lfd = family == AF_INET ? listen_v4 : listen_v6;
	uint16_t port = family == AF_INET ? port_v4 : port_v6;
	union libsoccr_addr to;
	struct linger abort_close = {1, 0};
	int c, a, pause_client;
	struct libsoccr_sk *sk;
	uint8_t how = u8(in);
	unsigned data_size = u32(in) % MAX_DATA_SIZE;
	uint16_t to_client = (uint16_t)(u32(in) % 8192), to_server = (uint16_t)(u32(in) % 8192);
	char buf[8192];

	memset(&to, 0, sizeof(to));
	to.sa.sa_family = (sa_family_t)family;
	if (family == AF_INET) {
		to.v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		to.v4.sin_port = htons(port);
	} else {
		to.v6.sin6_addr = in6addr_loopback;
		to.v6.sin6_port = htons(port);
	}
	c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect_retrying(c, &to.sa, family == AF_INET ? sizeof(to.v4) : sizeof(to.v6)) < 0)
		fail("connect to the listener");
	a = accept_retrying(lfd);
	if (a < 0)
		fail("accept");
	/* No TIME_WAIT pile-up over a long run: the unpaused end closes with RST. */
	setsockopt(c, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
	setsockopt(a, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
	memset(buf, 0x5a, sizeof(buf));
	bytes(in, buf, 64);
	if (to_client && send(a, buf, to_client, MSG_DONTWAIT) < 0)
		fail("send");
	if (to_server && send(c, buf, to_server, MSG_DONTWAIT) < 0)
		fail("send");
	if (how & 2)
		shutdown(how & 4 ? c : a, SHUT_WR); /* a half-closed state to save */
	usleep(how & 8 ? 1000 : 0);             /* let the FIN / data land (or not) */

	pause_client = how & 1;
	sk = libsoccr_pause(pause_client ? c : a);
	if (!sk)
		fail("pause of a connected socket");
	for (int round = 0; round < 1 + ((how >> 4) & 1); round++) { /* a second save replaces */
		unsigned alloc = data_size ? data_size : 1;
		struct libsoccr_sk_data *d = malloc(alloc);
		int ret;

		if (!d)
			fail("malloc");
		errno = 0;
		ret = libsoccr_save(sk, data_size >= sizeof(*d) || (how & 0x20) ? d : NULL, data_size);
		if (data_size < sizeof(*d) && ret != -1)
			fail("save accepted a short data_size");
		if (ret >= 0 && ret != (int)sizeof(*d))
			fail("save returned neither 68 nor an error");
		if (ret < 0 && errno == 0)
			fail("save failed without errno");
		free(d);
	}
	for (int i = 0; i < 3; i++) {
		int qid = (int)(int8_t)u8(in);
		unsigned flags = u8(in) & 0x3;
		char *q;

		if (!(qid & 0x40))
			qid = qid & 1 ? TCP_RECV_QUEUE : TCP_SEND_QUEUE;
		q = libsoccr_get_queue_bytes(sk, qid, flags);
		if (!q && errno != EINVAL && errno != ENODATA)
			fail("get_queue_bytes errno");
		if (q && (flags & SOCCR_MEM_EXCL))
			free(q);
	}
	for (int i = 0; i < 2; i++) {
		unsigned flags = u8(in) & 0x3;
		union libsoccr_addr *addr = libsoccr_get_addr(sk, i, flags);
		if (addr && (flags & SOCCR_MEM_EXCL))
			free(addr);
	}
	if (how & 0x40)
		libsoccr_resume(sk);
	else
		libsoccr_release(sk);
	close(c);
	close(a);
}

/* ---- path 3: argument checks without a kernel call ---- */
static void argument_checks(struct input *in, int family)
{
	struct libsoccr_sk_data d;
	int fd = fresh_socket(family);
	struct libsoccr_sk *sk = libsoccr_pause(fd);
	int qid = (int)u32(in), self = (int)u32(in);
	unsigned flags = u32(in), size = u32(in) % MAX_DATA_SIZE;
	union libsoccr_addr *addr;
	char *q;

	if (!sk)
		fail("pause of a fresh socket");
	read_sk_data(in, &d);

	/* NULL handles and data: -1/NULL with EINVAL, never a crash. */
	errno = 0;
	if (libsoccr_save(NULL, &d, sizeof(d)) != -1 || errno != EINVAL)
		fail("save(NULL)");
	if (libsoccr_restore(NULL, &d, sizeof(d)) != -1 || errno != EINVAL)
		fail("restore(NULL)");
	if (libsoccr_restore(sk, NULL, sizeof(d)) != -1 || errno != EINVAL)
		fail("restore(sk, NULL)");
	if (libsoccr_set_sk_data_unbound(NULL, &d, sizeof(d)) != -1 ||
	    libsoccr_set_sk_data_noq(NULL, &d, sizeof(d)) != -1 ||
	    libsoccr_set_sk_data(NULL, &d, sizeof(d)) != -1 ||
	    libsoccr_restore_queue(NULL, &d, sizeof(d), TCP_RECV_QUEUE, NULL) != -1)
		fail("staged(NULL)");
	if (libsoccr_get_queue_bytes(NULL, TCP_RECV_QUEUE, 0) || libsoccr_get_addr(NULL, 1, 0))
		fail("get(NULL)");
	libsoccr_release(NULL);
	libsoccr_resume(NULL);

	/* Input ids, flags and sizes. */
	q = malloc(16);
	if (!q)
		fail("malloc");
	errno = 0;
	if (libsoccr_set_queue_bytes(sk, qid, q, flags) == 0) {
		if ((qid != TCP_RECV_QUEUE && qid != TCP_SEND_QUEUE) || (flags & ~SOCCR_MEM_EXCL))
			fail("set_queue_bytes accepted a bad id or flag");
		if (!(flags & SOCCR_MEM_EXCL))
			free(q);
	} else {
		if (errno != EINVAL)
			fail("set_queue_bytes errno");
		free(q);
	}
	addr = input_addr(in, family);
	errno = 0;
	if (libsoccr_set_addr(sk, self, addr, flags) == 0) {
		if (flags & ~SOCCR_MEM_EXCL)
			fail("set_addr accepted a bad flag");
		if (!(flags & SOCCR_MEM_EXCL)) {
			/* The handle only borrows it: it must stay valid until release. */
			libsoccr_release(sk);
			sk = NULL;
			free(addr);
		}
	} else {
		if (errno != EINVAL)
			fail("set_addr errno");
		free(addr);
	}
	if (sk) {
		char *got = libsoccr_get_queue_bytes(sk, qid, flags);
		if (got)
			fail("get_queue_bytes before any save returned a buffer");
		errno = 0;
		{
			struct libsoccr_sk_data *heap = calloc(1, size ? size : 1);
			if (!heap)
				fail("calloc");
			memcpy(heap, &d, size < sizeof(d) ? size : sizeof(d));
			if (size < sizeof(d) && (libsoccr_set_sk_data_unbound(sk, heap, size) != -1 || errno != EINVAL))
				fail("unbound accepted a short data_size");
			free(heap);
		}
		libsoccr_release(sk);
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size, 0};
	uint8_t head = u8(&in);
	int family = (head & 0x10) ? AF_INET6 : AF_INET;

	switch (head & 3) {
	case 0:
		one_call_restore(&in, family);
		break;
	case 1:
		staged_restore(&in, family);
		break;
	case 2:
		save_path(&in, family);
		break;
	case 3:
		argument_checks(&in, family);
		break;
	}
	if (count_fds() != baseline_fds) {
		fprintf(stderr, "fuzz_soccr: socket fd leak: %d open, %d at start\n", count_fds(), baseline_fds);
		list_fds();
		abort();
	}
	return 0;
}
