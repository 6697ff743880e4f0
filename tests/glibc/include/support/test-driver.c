/* The main function of a glibc test, included at the end of its source as
   glibc's <support/test-driver.c>: the test defines do_test, or names
   another function in TEST_FUNCTION, and may set TIMEOUT in seconds.  */
#include <support/test-driver.h>

#if defined EXPECTED_SIGNAL || defined EXPECTED_STATUS || defined TEST_FUNCTION_ARGV
#error "this stand-in runs tests that exit 0 on success, through do_test (void)"
#endif

#ifndef TEST_FUNCTION
#define TEST_FUNCTION do_test
#endif

#ifndef TIMEOUT
#define TIMEOUT DEFAULT_TIMEOUT
#endif

int
main (void)
{
  return support_test_main (TEST_FUNCTION, TIMEOUT);
}
