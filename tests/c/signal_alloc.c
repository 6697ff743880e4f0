/* A signal handler that allocates and frees while the interrupted thread is
 * allocating: safe on the rseq fast path (the section is restarted before
 * the handler runs). The handler uses a size the main loop keeps warm on
 * every CPU, so it is served by the per-CPU cache. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_signal(int sig) {
    (void)sig;
    char *p = malloc(48);
    memset(p, 0x5a, 48);
    free(p);
    handled++;
}

static volatile int done;

static void *signaller(void *target) {
    while (!done) {
        pthread_kill(*(pthread_t *)target, SIGUSR1);
        usleep(50);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int target = argc > 1 ? atoi(argv[1]) : 2000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t self = pthread_self(), thread;
    pthread_create(&thread, NULL, signaller, &self);
    for (long i = 0; handled < target; i++) {
        void *p = malloc(48);
        free(p);
    }
    done = 1;
    pthread_join(thread, NULL);
    printf("signal_alloc: ok (%d handlers allocated)\n", (int)handled);
    return 0;
}
