/* The test driver's constants, as glibc's <support/test-driver.h>.  */
#ifndef SUPPORT_TEST_DRIVER_H
#define SUPPORT_TEST_DRIVER_H

/* Seconds a test may run unless it defines TIMEOUT, scaled by the
   environment's TIMEOUTFACTOR.  */
#define DEFAULT_TIMEOUT 20
/* The exit status of a test that cannot run here.  */
#define EXIT_UNSUPPORTED 77

/* Runs TEST_FUNCTION with a time limit of TIMEOUT seconds and returns the
   test's exit status.  */
int support_test_main (int (*test_function) (void), int timeout);

#endif
