#include "harness.h"
void register_negative_tests(void);
void register_negative_tests(void) {}
