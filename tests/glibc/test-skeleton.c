/* The driver of glibc's older tests, which include "../test-skeleton.c"
   at their end: there TEST_FUNCTION is an expression, "do_test ()".  */
#include <support/check.h>
#include <support/support.h>
#include <support/temp_file.h>

#ifdef TEST_FUNCTION
static int
support_legacy_test_function (void)
{
  return TEST_FUNCTION;
}
#undef TEST_FUNCTION
#define TEST_FUNCTION support_legacy_test_function
#endif

#include <support/test-driver.c>
