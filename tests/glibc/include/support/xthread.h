/* pthread calls that end the test on failure, as glibc's <support/xthread.h>.  */
#ifndef SUPPORT_XTHREAD_H
#define SUPPORT_XTHREAD_H

#include <pthread.h>
#include <signal.h>

pthread_t xpthread_create (pthread_attr_t *attr, void *(*thread_func) (void *), void *closure);
void *xpthread_join (pthread_t thr);
void xpthread_barrier_init (pthread_barrier_t *barrier, pthread_barrierattr_t *attr,
                            unsigned int count);
int xpthread_barrier_wait (pthread_barrier_t *barrier);
void xpthread_barrier_destroy (pthread_barrier_t *barrier);
void xpthread_barrierattr_init (pthread_barrierattr_t *attr);
void xpthread_barrierattr_setpshared (pthread_barrierattr_t *attr, int pshared);
void xpthread_barrierattr_destroy (pthread_barrierattr_t *attr);
void xpthread_kill (pthread_t thr, int signo);

#endif
