/* Minimal test runner for the libsoccr C tests: every test runs in a forked child inside its own
 * network namespace (fresh loopback, private sysctls and counters), with a time limit. */
#ifndef NCR_TEST_HARNESS_H
#define NCR_TEST_HARNESS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef int (*test_fn)(const void *arg);

struct test_case {
	char name[96];
	test_fn fn;
	const void *arg;
};

/* Adds a test; name is printf-formatted. */
void test_add(test_fn fn, const void *arg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Runs the registered tests whose name contains filter (NULL = all); returns failures. */
int test_run_all(const char *filter, int jobs);

/* Brings lo up in the current network namespace. */
int test_lo_up(void);

/* Prefix of every network namespace name the suite creates (unique per run). */
const char *test_netns_prefix(void);

/* Reports a failed check and makes the test function return 1. */
#define FAIL(fmt, ...)                                                                     \
	do {                                                                               \
		fprintf(stderr, "  FAIL %s:%d: " fmt " (errno %d %s)\n", __FILE__, __LINE__,   \
			##__VA_ARGS__, errno, strerror(errno));                            \
		return 1;                                                                  \
	} while (0)
#define CHECK(cond, fmt, ...)                                                              \
	do {                                                                               \
		if (!(cond))                                                               \
			FAIL("%s: " fmt, #cond, ##__VA_ARGS__);                            \
	} while (0)
/* For helpers returning int: propagate a failure. */
#define TRY(expr)                                                                          \
	do {                                                                               \
		if ((expr) != 0) {                                                         \
			fprintf(stderr, "  from %s:%d: %s\n", __FILE__, __LINE__, #expr);   \
			return 1;                                                          \
		}                                                                          \
	} while (0)

#define NOTE(fmt, ...) fprintf(stderr, "  " fmt "\n", ##__VA_ARGS__)

#endif
