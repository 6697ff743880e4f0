/* A thread that keeps sending a signal to one target thread until stopped. */
#ifndef SIGNAL_STORM_H
#define SIGNAL_STORM_H

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

struct signal_storm {
    pthread_t target, thread;
    int signal;
    useconds_t period;
    volatile int stop;
};

static void *signal_storm_run(void *arg) {
    struct signal_storm *storm = arg;
    while (!storm->stop) {
        pthread_kill(storm->target, storm->signal);
        usleep(storm->period);
    }
    return NULL;
}

/* Installs `handler` for `signal` and starts signalling the calling thread. */
static void signal_storm_start(struct signal_storm *storm, int signal, void (*handler)(int), useconds_t period) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigaction(signal, &sa, NULL);
    storm->target = pthread_self();
    storm->signal = signal;
    storm->period = period;
    storm->stop = 0;
    pthread_create(&storm->thread, NULL, signal_storm_run, storm);
}

static void signal_storm_stop(struct signal_storm *storm) {
    storm->stop = 1;
    pthread_join(storm->thread, NULL);
}

#endif
