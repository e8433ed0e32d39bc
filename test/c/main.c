/* libsoccr C test suite entry: registers every test, runs them (NCR_JOBS parallel children,
 * default 2; optional name filter as argv[1]) and prints "c-tests: N passed, N failed".
 * NCR_VERBOSE=1 prints every test's output, NCR_SOCCR_LOG=2 adds libsoccr's debug log. */
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "soccr.h"

static void log_to_stderr(unsigned int level, const char *fmt, ...)
{
	va_list ap;
	(void)level;
	va_start(ap, fmt);
	fputs("  libsoccr: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

void register_matrix_tests(void);
void register_api_tests(void);
void register_restore_tests(void);
void register_negative_tests(void);
void register_upstream_tests(void);

int main(int argc, char **argv)
{
	const char *jobs = getenv("NCR_JOBS");

	if (geteuid() != 0) {
		printf("c-tests: must run as root\nc-tests: 0 passed, 1 failed\n");
		return 1;
	}
	/* NCR_SOCCR_LOG=1|2: libsoccr's own log (errors / debug) in each test's output. */
	if (getenv("NCR_SOCCR_LOG"))
		libsoccr_set_log((unsigned)atoi(getenv("NCR_SOCCR_LOG")), log_to_stderr);
	register_upstream_tests();
#ifndef NCR_UPSTREAM /* CRIU's libsoccr (NODE_CRIU_LIBSOCCR): only the tests of its API */
	register_api_tests();
	register_restore_tests();
	register_negative_tests();
	register_matrix_tests();
#endif
	return test_run_all(argc > 1 ? argv[1] : NULL, jobs ? atoi(jobs) : 2) ? 1 : 0;
}
