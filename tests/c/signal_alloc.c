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

#include "signal_storm.h"

static volatile sig_atomic_t handled;

static void on_signal(int sig) {
    (void)sig;
    char *p = malloc(48);
    memset(p, 0x5a, 48);
    free(p);
    handled++;
}

int main(int argc, char **argv) {
    int target = argc > 1 ? atoi(argv[1]) : 2000;
    struct signal_storm storm;
    signal_storm_start(&storm, SIGUSR1, on_signal, 50);
    for (long i = 0; handled < target; i++) {
        void *p = malloc(48);
        free(p);
    }
    signal_storm_stop(&storm);
    printf("signal_alloc: ok (%d handlers allocated)\n", (int)handled);
    return 0;
}
