#define _GNU_SOURCE
#include "netutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *family_name(enum family fam)
{
	return fam == FAM_V4 ? "v4" : fam == FAM_V6 ? "v6" : "v4mapped";
}

socklen_t addr_len(const union libsoccr_addr *a)
{
	return a->sa.sa_family == AF_INET ? sizeof(a->v4) : sizeof(a->v6);
}

int make_addr(union libsoccr_addr *out, socklen_t *len, int domain, const char *host, int port)
{
	memset(out, 0, sizeof(*out));
	if (domain == AF_INET) {
		out->v4.sin_family = AF_INET;
		out->v4.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &out->v4.sin_addr) != 1)
			return -1;
	} else {
		char mapped[64];
		out->v6.sin6_family = AF_INET6;
		out->v6.sin6_port = htons((uint16_t)port);
		if (!strchr(host, ':')) {
			snprintf(mapped, sizeof(mapped), "::ffff:%s", host);
			host = mapped;
		}
		if (inet_pton(AF_INET6, host, &out->v6.sin6_addr) != 1)
			return -1;
	}
	if (len)
		*len = addr_len(out);
	return 0;
}

int srv_domain(enum family fam)
{
	return fam == FAM_V4 ? AF_INET : AF_INET6;
}

int netns_self(void)
{
	return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

int netns_enter(int nsfd)
{
	if (nsfd < 0)
		return 0;
	if (setns(nsfd, CLONE_NEWNET) < 0) {
		perror("setns");
		return -1;
	}
	return 0;
}

static int socket_in(int nsfd, int domain, int type)
{
	int home = -1, fd, saved;

	if (nsfd >= 0) {
		home = netns_self();
		if (home < 0 || netns_enter(nsfd) < 0) {
			if (home >= 0)
				close(home);
			return -1;
		}
	}
	fd = socket(domain, type | SOCK_CLOEXEC, 0);
	saved = errno;
	if (home >= 0) {
		netns_enter(home);
		close(home);
	}
	errno = saved;
	return fd;
}

int make_pair(struct pair *p, const struct pair_opts *o)
{
	const char *v4 = o->srv_v4 ? o->srv_v4 : "127.0.0.1";
	const char *v6 = o->srv_v6 ? o->srv_v6 : "::1";
	int ldom = srv_domain(o->fam), cdom = o->fam == FAM_V6 ? AF_INET6 : AF_INET;
	union libsoccr_addr la;
	socklen_t len;
	int lfd, off = 0;

	p->fam = o->fam;
	p->cli = p->srv = -1;
	lfd = socket_in(o->srv_ns, ldom, SOCK_STREAM);
	if (lfd < 0) {
		perror("listener socket");
		return -1;
	}
	if (o->fam == FAM_MAPPED) {
		/* Dual-stack listener on :: accepts IPv4 clients as ::ffff:a.b.c.d. */
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
		make_addr(&la, &len, AF_INET6, "::", 0);
	} else {
		make_addr(&la, &len, ldom, ldom == AF_INET ? v4 : v6, 0);
	}
	if (o->srv_rcvbuf > 0)
		setsockopt(lfd, SOL_SOCKET, SO_RCVBUFFORCE, &o->srv_rcvbuf, sizeof(int));
	if (bind(lfd, &la.sa, len) < 0 || listen(lfd, 4) < 0 || getsockname(lfd, &la.sa, &len) < 0) {
		perror("listener bind/listen");
		close(lfd);
		return -1;
	}
	int port = ntohs(ldom == AF_INET ? la.v4.sin_port : la.v6.sin6_port);
	union libsoccr_addr ca;
	make_addr(&ca, &len, cdom, cdom == AF_INET ? v4 : v6, port);
	p->cli = socket_in(o->cli_ns, cdom, SOCK_STREAM);
	if (p->cli < 0) {
		perror("client socket");
		close(lfd);
		return -1;
	}
	if (o->cli_rcvbuf > 0)
		setsockopt(p->cli, SOL_SOCKET, SO_RCVBUF, &o->cli_rcvbuf, sizeof(int));
	if (connect(p->cli, &ca.sa, len) < 0) {
		perror("connect");
		close(lfd);
		close(p->cli);
		return -1;
	}
	p->srv = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	close(lfd);
	if (p->srv < 0) {
		perror("accept");
		close(p->cli);
		return -1;
	}
	return 0;
}

int lock_socket(int fd)
{
	struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = {.len = 1, .filter = &drop};

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0) {
		perror("SO_ATTACH_FILTER");
		return -1;
	}
	return 0;
}

int unlock_socket(int fd)
{
	int zero = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero)) < 0) {
		perror("SO_DETACH_FILTER");
		return -1;
	}
	return 0;
}

int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int tcp_state_of(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	return ti.tcpi_state;
}

void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

int wait_state(int fd, int state, int timeout_ms)
{
	int s = -1;
	for (int t = 0; t <= timeout_ms; t += 2) {
		s = tcp_state_of(fd);
		if (s == state)
			return 0;
		sleep_ms(2);
	}
	fprintf(stderr, "  fd %d in state %d, waited for %d\n", fd, s, state);
	return -1;
}

int wait_queue(int fd, bool outq, int want, int timeout_ms)
{
	int v = -1;
	for (int t = 0; t <= timeout_ms; t += 2) {
		if (ioctl(fd, outq ? SIOCOUTQ : SIOCINQ, &v) < 0)
			return -1;
		if (v == want)
			return 0;
		sleep_ms(2);
	}
	fprintf(stderr, "  fd %d %s is %d, waited for %d\n", fd, outq ? "outq" : "inq", v, want);
	return -1;
}

static int vrun(int nsfd, const char *fmt, va_list ap)
{
	char cmd[1024];
	pid_t pid;
	int status;

	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0)
			_exit(126);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "  command failed (%d): %s\n", status, cmd);
		return -1;
	}
	return 0;
}

int run_cmd(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int ret = vrun(-1, fmt, ap);
	va_end(ap);
	return ret;
}

int run_in_ns(int nsfd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int ret = vrun(nsfd, fmt, ap);
	va_end(ap);
	return ret;
}

int netns_create(const char *name)
{
	char path[256];
	if (run_cmd("ip netns add %s", name) < 0)
		return -1;
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		perror(path);
	return fd;
}

int netns_delete(const char *name)
{
	return run_cmd("ip netns del %s", name);
}

int set_sysctl(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		return -1;
	}
	ssize_t n = write(fd, value, strlen(value));
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

static void addr_str(const union libsoccr_addr *a, char *ip, size_t iplen, int *port,
		     bool *v4)
{
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->v4.sin_addr, ip, (socklen_t)iplen);
		*port = ntohs(a->v4.sin_port);
		*v4 = true;
	} else if (IN6_IS_ADDR_V4MAPPED(&a->v6.sin6_addr)) {
		inet_ntop(AF_INET, &a->v6.sin6_addr.s6_addr[12], ip, (socklen_t)iplen);
		*port = ntohs(a->v6.sin6_port);
		*v4 = true;
	} else {
		inet_ntop(AF_INET6, &a->v6.sin6_addr, ip, (socklen_t)iplen);
		*port = ntohs(a->v6.sin6_port);
		*v4 = false;
	}
}

int nft_drop_flow(int nsfd, const union libsoccr_addr *src, const union libsoccr_addr *dst,
		  char *table_out, size_t table_len)
{
	char sip[64], dip[64];
	int sport, dport;
	bool v4;

	addr_str(src, sip, sizeof(sip), &sport, &v4);
	addr_str(dst, dip, sizeof(dip), &dport, &v4);
	snprintf(table_out, table_len, "ncr_lock_%d_%08x", (int)getpid(), rand32());
	return run_in_ns(nsfd,
			 "nft 'add table inet %s; add chain inet %s out { type filter hook output "
			 "priority 0 ; } ; add rule inet %s out meta mark != 0x%x %s saddr %s tcp sport "
			 "%d %s daddr %s tcp dport %d drop'",
			 table_out, table_out, table_out, SOCCR_MARK, v4 ? "ip" : "ip6", sip, sport,
			 v4 ? "ip" : "ip6", dip, dport);
}

int nft_delete_table(int nsfd, const char *table)
{
	return run_in_ns(nsfd, "nft delete table inet %s", table);
}

static long field_of(const char *file, const char *prefix, const char *name)
{
	/* /proc/net/{snmp,netstat}: a header line and a value line per prefix. */
	char hdr[8192], val[8192];
	FILE *f = fopen(file, "r");
	long result = -1;

	if (!f)
		return -1;
	while (fgets(hdr, sizeof(hdr), f) && fgets(val, sizeof(val), f)) {
		if (strncmp(hdr, prefix, strlen(prefix)))
			continue;
		char *hs, *vs, *h = strtok_r(hdr, " \n", &hs), *v = strtok_r(val, " \n", &vs);
		while (h && v) {
			if (!strcmp(h, name)) {
				result = atol(v);
				break;
			}
			h = strtok_r(NULL, " \n", &hs);
			v = strtok_r(NULL, " \n", &vs);
		}
		break;
	}
	fclose(f);
	return result;
}

int read_rst_counters(struct rst_counters *c)
{
	c->out_rsts = field_of("/proc/thread-self/net/snmp", "Tcp:", "OutRsts");
	c->abort_on_data = field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortOnData");
	c->abort_on_close = field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortOnClose");
	c->abort_on_memory = field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortOnMemory");
	c->abort_on_timeout =
		field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortOnTimeout");
	c->abort_on_linger = field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortOnLinger");
	c->abort_failed = field_of("/proc/thread-self/net/netstat", "TcpExt:", "TCPAbortFailed");
	return c->out_rsts < 0 || c->abort_on_data < 0 ? -1 : 0;
}

int rst_counters_equal(const struct rst_counters *a, const struct rst_counters *b)
{
	if (memcmp(a, b, sizeof(*a)) == 0)
		return 1;
	/* Every counter, so that a rare failure (t_cycles counted one RST once in CI) says which. */
	fprintf(stderr,
		"  RST counters changed: OutRsts %ld->%ld AbortOnData %ld->%ld AbortOnClose "
		"%ld->%ld AbortOnMemory %ld->%ld AbortOnTimeout %ld->%ld AbortOnLinger %ld->%ld "
		"AbortFailed %ld->%ld\n",
		a->out_rsts, b->out_rsts, a->abort_on_data, b->abort_on_data, a->abort_on_close,
		b->abort_on_close, a->abort_on_memory, b->abort_on_memory, a->abort_on_timeout,
		b->abort_on_timeout, a->abort_on_linger, b->abort_on_linger, a->abort_failed,
		b->abort_failed);
	return 0;
}

int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", "..", and the DIR's own fd */
}

int in_repair(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, SOL_TCP, TCP_REPAIR, &v, &len) < 0)
		return -1;
	return v;
}

uint32_t rand32(void)
{
	uint32_t v;
	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		v = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	return v;
}
