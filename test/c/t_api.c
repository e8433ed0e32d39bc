#include "harness.h"
void register_api_tests(void);
void register_api_tests(void) {}
