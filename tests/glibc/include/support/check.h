/* Checks for glibc's malloc tests: the macros of glibc's <support/check.h>
   those tests use, reporting through support_record_failure so a failed
   check in any process of the test fails the test.  */
#ifndef SUPPORT_CHECK_H
#define SUPPORT_CHECK_H

#include <stdnoreturn.h>

/* Prints "error: FILE:LINE: message" and exits with STATUS.  */
#define FAIL_EXIT(status, ...) support_exit_failure_impl (status, __FILE__, __LINE__, __VA_ARGS__)
#define FAIL_EXIT1(...) FAIL_EXIT (1, __VA_ARGS__)

#define TEST_VERIFY(expr)                                                    \
  ((expr) ? (void) 0 : support_test_verify_impl (__FILE__, __LINE__, #expr))
#define TEST_VERIFY_EXIT(expr)                                               \
  ((expr) ? (void) 0 : support_test_verify_exit_impl (1, __FILE__, __LINE__, #expr))

/* Compares two integers of any type by value, printing both on a mismatch.  */
#define TEST_COMPARE(left, right)                                            \
  ({                                                                         \
    __typeof__ (left) support_left = (left);                                 \
    __typeof__ (right) support_right = (right);                              \
    if (!(support_left == support_right))                                    \
      support_test_compare_failure (__FILE__, __LINE__, #left,               \
                                    (long long) support_left, #right,        \
                                    (long long) support_right);              \
  })

void support_record_failure (void);
void support_record_failure_reset (void);
int support_record_failure_is_failed (void);

noreturn void support_exit_failure_impl (int status, const char *file, int line,
                                         const char *format, ...)
  __attribute__ ((format (printf, 4, 5)));
void support_test_verify_impl (const char *file, int line, const char *expr);
noreturn void support_test_verify_exit_impl (int status, const char *file, int line,
                                             const char *expr);
void support_test_compare_failure (const char *file, int line,
                                   const char *left_expr, long long left,
                                   const char *right_expr, long long right);

#endif
