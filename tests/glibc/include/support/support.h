/* The helpers of glibc's <support/support.h> that its malloc tests use:
   allocation that exits on failure, memory shared with forked children,
   and async-signal-safe output.  */
#ifndef SUPPORT_SUPPORT_H
#define SUPPORT_SUPPORT_H

#include <stddef.h>

void *xmalloc (size_t size) __attribute__ ((malloc, alloc_size (1)));
void *xcalloc (size_t nmemb, size_t size) __attribute__ ((malloc, alloc_size (1, 2)));
char *xstrdup (const char *s);
char *xasprintf (const char *format, ...) __attribute__ ((format (printf, 1, 2), malloc));

/* Zeroed memory that forked children share with this process.  */
void *support_shared_allocate (size_t size);
void support_shared_free (void *ptr);

/* Writes MESSAGE to standard output with write(2): safe in signal handlers.  */
void write_message (const char *message);

#endif
