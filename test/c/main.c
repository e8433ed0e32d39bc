/* libsoccr C test suite entry: registers every test, runs them (NCR_JOBS parallel children,
 * default 2; optional name filter as argv[1]) and prints "c-tests: N passed, N failed". */
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

void register_matrix_tests(void);
void register_api_tests(void);
void register_negative_tests(void);

int main(int argc, char **argv)
{
	const char *jobs = getenv("NCR_JOBS");

	if (geteuid() != 0) {
		printf("c-tests: must run as root\nc-tests: 0 passed, 1 failed\n");
		return 1;
	}
	register_api_tests();
	register_negative_tests();
	register_matrix_tests();
	return test_run_all(argc > 1 ? argv[1] : NULL, jobs ? atoi(jobs) : 2) ? 1 : 0;
}
