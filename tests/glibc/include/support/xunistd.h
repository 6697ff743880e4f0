/* System calls that end the test on failure, as glibc's <support/xunistd.h>.  */
#ifndef SUPPORT_XUNISTD_H
#define SUPPORT_XUNISTD_H

#include <sys/types.h>
#include <unistd.h>

pid_t xfork (void);
int xopen (const char *path, int flags, mode_t mode);
void *xmmap (void *addr, size_t length, int prot, int flags, int fd);
void xmunmap (void *addr, size_t length);

#endif
