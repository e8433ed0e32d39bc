/* Test runner: fork per test, own network namespace per test, parallel jobs, time limit, output
 * captured per test and printed when it fails (or always with NCR_VERBOSE=1). */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 512
#define TEST_TIMEOUT_S 60

static struct test_case tests[MAX_TESTS];
static int ntests;
static char netns_prefix[64];
static char test_prefix[80]; /* in a test child: run prefix + "t<index>-" */

void test_add(test_fn fn, const void *arg, const char *fmt, ...)
{
	va_list ap;

	if (ntests >= MAX_TESTS) {
		fprintf(stderr, "too many tests\n");
		exit(2);
	}
	va_start(ap, fmt);
	vsnprintf(tests[ntests].name, sizeof(tests[ntests].name), fmt, ap);
	va_end(ap);
	tests[ntests].fn = fn;
	tests[ntests].arg = arg;
	ntests++;
}

static const char *run_prefix(void)
{
	if (!netns_prefix[0]) {
		const char *env = getenv("NCR_NETNS_PREFIX");
		if (env && *env)
			snprintf(netns_prefix, sizeof(netns_prefix), "%s", env);
		else
			snprintf(netns_prefix, sizeof(netns_prefix), "ncr-c%d-", (int)getpid());
	}
	return netns_prefix;
}

const char *test_netns_prefix(void)
{
	return test_prefix[0] ? test_prefix : run_prefix();
}

int test_lo_up(void)
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret;

	if (fd < 0)
		return -1;
	strcpy(ifr.ifr_name, "lo");
	ret = ioctl(fd, SIOCGIFFLAGS, &ifr);
	if (!ret) {
		ifr.ifr_flags |= IFF_UP;
		ret = ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	close(fd);
	return ret;
}

/* Deletes every named netns whose name starts with prefix (a failed or crashed test cannot
 * leave one behind). */
static void cleanup_netns(const char *prefix)
{
	DIR *d = opendir("/run/netns");
	struct dirent *e;
	char cmd[512];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)))
			continue;
		snprintf(cmd, sizeof(cmd), "ip netns del '%s'", e->d_name);
		if (system(cmd) != 0)
			fprintf(stderr, "netns cleanup failed: %s\n", e->d_name);
	}
	closedir(d);
}

static void test_prefix_of(int idx, char *buf, size_t len)
{
	snprintf(buf, len, "%st%d-", run_prefix(), idx);
}

struct running {
	pid_t pid;
	int idx;
	char log[64];
	struct timespec start;
};

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static pid_t start_test(int idx, const char *log)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	/* Child: private netns, output to the log file, time limit. */
	test_prefix_of(idx, test_prefix, sizeof(test_prefix));
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGPIPE, SIG_IGN);
	alarm(TEST_TIMEOUT_S);
	if (unshare(CLONE_NEWNET) < 0 || test_lo_up() < 0) {
		perror("unshare/lo");
		_exit(3);
	}
	/* exit(), not _exit(): LeakSanitizer checks at exit. */
	exit(tests[idx].fn(tests[idx].arg) ? 1 : 0);
}

static double elapsed(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void print_log(const char *path)
{
	char buf[4096];
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stdout);
	fclose(f);
}

int test_run_all(const char *filter, int jobs)
{
	struct running run[16];
	int nrun = 0, next = 0, passed = 0, failed = 0;
	bool verbose = getenv("NCR_VERBOSE") && atoi(getenv("NCR_VERBOSE"));
	char dir[] = "/tmp/ncr-ctest-XXXXXX";

	/* Fix the run prefix now: children must inherit it, not compute it from their own pid. */
	run_prefix();
	if (jobs < 1)
		jobs = 1;
	if (jobs > 16)
		jobs = 16;
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	while (!stop_requested && (next < ntests || nrun > 0)) {
		while (nrun < jobs && next < ntests) {
			int i = next++;
			if (filter && !strstr(tests[i].name, filter))
				continue;
			struct running *r = &run[nrun];
			r->idx = i;
			snprintf(r->log, sizeof(r->log), "%s/%d.log", dir, i);
			clock_gettime(CLOCK_MONOTONIC, &r->start);
			fflush(stdout);
			r->pid = start_test(i, r->log);
			if (r->pid < 0) {
				perror("fork");
				failed++;
				continue;
			}
			nrun++;
		}
		if (!nrun)
			break;
		int status;
		pid_t pid = wait(&status);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int k = 0; k < nrun; k++) {
			if (run[k].pid != pid)
				continue;
			bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
			printf("%s %s (%.2fs)\n", ok ? "ok  " : "FAIL", tests[run[k].idx].name,
			       elapsed(&run[k].start));
			if (!ok) {
				if (WIFSIGNALED(status))
					printf("  killed by signal %d%s\n", WTERMSIG(status),
					       WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
				print_log(run[k].log);
			} else if (verbose) {
				print_log(run[k].log);
			}
			ok ? passed++ : failed++;
			char prefix[96];
			test_prefix_of(run[k].idx, prefix, sizeof(prefix));
			cleanup_netns(prefix);
			unlink(run[k].log);
			run[k] = run[--nrun];
			break;
		}
	}
	if (stop_requested) {
		for (int k = 0; k < nrun; k++)
			kill(run[k].pid, SIGKILL);
		while (wait(NULL) > 0)
			;
		for (int k = 0; k < nrun; k++)
			unlink(run[k].log); /* else the rmdir below fails and the directory stays */
		failed++;
	}
	rmdir(dir);
	cleanup_netns(run_prefix());
	printf("c-tests: %d passed, %d failed\n", passed, failed);
	return failed;
}
