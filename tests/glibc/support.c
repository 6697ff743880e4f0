/* A small stand-in for glibc's libsupport, enough for the malloc tests of
   glibc's source (malloc/tst-*.c) to build and run outside glibc's tree:
   the driver that runs a test under a time limit, failure recording shared
   with forked children, and the x* wrappers that end the test on error.
   The test runs in the driver's own process, so an interposed allocator
   sees the whole program.  */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <support/check.h>
#include <support/support.h>
#include <support/temp_file.h>
#include <support/test-driver.h>
#include <support/xsignal.h>
#include <support/xthread.h>
#include <support/xunistd.h>

/* Set by any process of the test that saw a check fail: a shared page, so
   a child's failure counts even if the child exits 0.  */
static volatile int *failure_flag;

static void
failure_flag_init (void)
{
  if (failure_flag != NULL)
    return;
  void *page = mmap (NULL, sizeof (int), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_SHARED, -1, 0);
  if (page == MAP_FAILED)
    {
      printf ("error: mmap of the failure flag: %m\n");
      exit (1);
    }
  failure_flag = page;
}

void
support_record_failure (void)
{
  failure_flag_init ();
  __atomic_store_n (failure_flag, 1, __ATOMIC_RELAXED);
}

void
support_record_failure_reset (void)
{
  failure_flag_init ();
  __atomic_store_n (failure_flag, 0, __ATOMIC_RELAXED);
}

int
support_record_failure_is_failed (void)
{
  failure_flag_init ();
  return __atomic_load_n (failure_flag, __ATOMIC_RELAXED);
}

static void
print_failure (const char *file, int line, const char *format, va_list ap)
{
  int saved_errno = errno;
  printf ("error: %s:%d: ", file, line);
  errno = saved_errno;
  vprintf (format, ap);
  puts ("");
}

void
support_exit_failure_impl (int status, const char *file, int line, const char *format, ...)
{
  support_record_failure ();
  va_list ap;
  va_start (ap, format);
  print_failure (file, line, format, ap);
  va_end (ap);
  exit (status);
}

void
support_test_verify_impl (const char *file, int line, const char *expr)
{
  int saved_errno = errno;
  support_record_failure ();
  printf ("error: %s:%d: not true: %s\n", file, line, expr);
  errno = saved_errno;
}

void
support_test_verify_exit_impl (int status, const char *file, int line, const char *expr)
{
  support_test_verify_impl (file, line, expr);
  exit (status);
}

void
support_test_compare_failure (const char *file, int line, const char *left_expr, long long left,
                              const char *right_expr, long long right)
{
  support_record_failure ();
  printf ("error: %s:%d: value of %s (%lld) != value of %s (%lld)\n", file, line, left_expr, left,
          right_expr, right);
}

/* Allocation.  */

static void
oom (const char *function, size_t size)
{
  printf ("error: %s (%zu): %m\n", function, size);
  support_record_failure ();
  exit (1);
}

void *
xmalloc (size_t size)
{
  void *p = malloc (size);
  if (p == NULL)
    oom ("malloc", size);
  return p;
}

void *
xcalloc (size_t nmemb, size_t size)
{
  void *p = calloc (nmemb, size);
  if (p == NULL)
    oom ("calloc", nmemb * size);
  return p;
}

char *
xstrdup (const char *s)
{
  char *p = strdup (s);
  if (p == NULL)
    oom ("strdup", strlen (s));
  return p;
}

char *
xasprintf (const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  char *p;
  int n = vasprintf (&p, format, ap);
  va_end (ap);
  if (n < 0)
    oom ("asprintf", 0);
  return p;
}

/* The mapping's length sits in front of the caller's part, which stays
   aligned for any type.  */
struct shared_header
{
  size_t length;
} __attribute__ ((aligned (__alignof__ (max_align_t))));

void *
support_shared_allocate (size_t size)
{
  size_t length = sizeof (struct shared_header) + size;
  struct shared_header *h
    = mmap (NULL, length, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_SHARED, -1, 0);
  if (h == MAP_FAILED)
    FAIL_EXIT1 ("mmap of %zu shared bytes: %m", length);
  h->length = length;
  return h + 1;
}

void
support_shared_free (void *ptr)
{
  struct shared_header *h = (struct shared_header *) ptr - 1;
  xmunmap (h, h->length);
}

void
write_message (const char *message)
{
  int saved_errno = errno;
  size_t left = strlen (message);
  while (left > 0)
    {
      ssize_t n = write (STDOUT_FILENO, message, left);
      if (n <= 0)
        break;
      message += n;
      left -= n;
    }
  errno = saved_errno;
}

/* Threads: pthread functions return the error number, not -1 and errno.  */

static void
check_pthread (int ret, const char *function)
{
  if (ret != 0)
    {
      errno = ret;
      FAIL_EXIT1 ("%s: %m", function);
    }
}

pthread_t
xpthread_create (pthread_attr_t *attr, void *(*thread_func) (void *), void *closure)
{
  pthread_t thr;
  check_pthread (pthread_create (&thr, attr, thread_func, closure), "pthread_create");
  return thr;
}

void *
xpthread_join (pthread_t thr)
{
  void *result;
  check_pthread (pthread_join (thr, &result), "pthread_join");
  return result;
}

void
xpthread_barrier_init (pthread_barrier_t *barrier, pthread_barrierattr_t *attr, unsigned int count)
{
  check_pthread (pthread_barrier_init (barrier, attr, count), "pthread_barrier_init");
}

int
xpthread_barrier_wait (pthread_barrier_t *barrier)
{
  int ret = pthread_barrier_wait (barrier);
  if (ret != PTHREAD_BARRIER_SERIAL_THREAD)
    check_pthread (ret, "pthread_barrier_wait");
  return ret == PTHREAD_BARRIER_SERIAL_THREAD;
}

void
xpthread_barrier_destroy (pthread_barrier_t *barrier)
{
  check_pthread (pthread_barrier_destroy (barrier), "pthread_barrier_destroy");
}

void
xpthread_barrierattr_init (pthread_barrierattr_t *attr)
{
  check_pthread (pthread_barrierattr_init (attr), "pthread_barrierattr_init");
}

void
xpthread_barrierattr_setpshared (pthread_barrierattr_t *attr, int pshared)
{
  check_pthread (pthread_barrierattr_setpshared (attr, pshared), "pthread_barrierattr_setpshared");
}

void
xpthread_barrierattr_destroy (pthread_barrierattr_t *attr)
{
  check_pthread (pthread_barrierattr_destroy (attr), "pthread_barrierattr_destroy");
}

void
xpthread_kill (pthread_t thr, int signo)
{
  check_pthread (pthread_kill (thr, signo), "pthread_kill");
}

/* Processes, files and mappings.  */

pid_t
xfork (void)
{
  pid_t pid = fork ();
  if (pid < 0)
    FAIL_EXIT1 ("fork: %m");
  return pid;
}

int
xopen (const char *path, int flags, mode_t mode)
{
  int fd = open (path, flags, mode);
  if (fd < 0)
    FAIL_EXIT1 ("open (\"%s\", 0x%x, 0%o): %m", path, flags, mode);
  return fd;
}

void *
xmmap (void *addr, size_t length, int prot, int flags, int fd)
{
  void *p = mmap (addr, length, prot, flags, fd, 0);
  if (p == MAP_FAILED)
    FAIL_EXIT1 ("mmap of %zu bytes, prot=0x%x, flags=0x%x: %m", length, prot, flags);
  return p;
}

void
xmunmap (void *addr, size_t length)
{
  if (munmap (addr, length) != 0)
    FAIL_EXIT1 ("munmap of %zu bytes: %m", length);
}

sighandler_t
xsignal (int sig, sighandler_t handler)
{
  sighandler_t old = signal (sig, handler);
  if (old == SIG_ERR)
    FAIL_EXIT1 ("signal (%d): %m", sig);
  return old;
}

/* Temporary files.  */

/* The files to remove at exit, and the process that removes them (not a
   forked child that exits).  */
static char *temp_files[16];
static size_t temp_file_count;
static pid_t temp_files_owner;

static void
remove_temp_files (void)
{
  if (getpid () != temp_files_owner)
    return;
  for (size_t i = 0; i < temp_file_count; ++i)
    {
      unlink (temp_files[i]);
      free (temp_files[i]);
    }
  temp_file_count = 0;
}

void
add_temp_file (const char *name)
{
  if (temp_file_count == 0 && temp_files_owner == 0)
    {
      temp_files_owner = getpid ();
      atexit (remove_temp_files);
    }
  if (temp_file_count == sizeof temp_files / sizeof temp_files[0])
    FAIL_EXIT1 ("too many temporary files");
  temp_files[temp_file_count++] = xstrdup (name);
}

int
create_temp_file (const char *base, char **filename)
{
  const char *dir = getenv ("TMPDIR");
  if (dir == NULL || dir[0] == '\0')
    dir = "/tmp";
  char *name = xasprintf ("%s/%sXXXXXX", dir, base);
  int fd = mkstemp (name);
  if (fd < 0)
    {
      printf ("error: mkstemp (\"%s\"): %m\n", name);
      free (name);
      return -1;
    }
  add_temp_file (name);
  if (filename != NULL)
    *filename = name;
  else
    free (name);
  return fd;
}

/* The driver.  */

static void
timed_out (int sig)
{
  (void) sig;
  write_message ("error: timed out: killing the test and its child processes\n");
  /* The test leads its own process group, so this takes any children
     stuck in a deadlock with it.  */
  kill (0, SIGKILL);
}

int
support_test_main (int (*test_function) (void), int timeout)
{
  /* Unbuffered, so a forked child never prints its parent's output again
     and a killed test has printed all it said.  */
  setvbuf (stdout, NULL, _IONBF, 0);
  failure_flag_init ();
  if (setpgid (0, 0) != 0)
    FAIL_EXIT1 ("setpgid: %m");

  const char *factor = getenv ("TIMEOUTFACTOR");
  if (factor != NULL && atoi (factor) > 0)
    timeout *= atoi (factor);
  xsignal (SIGALRM, timed_out);
  alarm (timeout);

  int status = test_function ();

  alarm (0);
  if (status == 0 && support_record_failure_is_failed ())
    status = 1;
  return status;
}
