/* Threads that allocate and free until stopped, through every slow path
 * (small, medium and huge sizes), so that a fork finds them mid-allocation. */
#ifndef CHURN_H
#define CHURN_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct churn {
    pthread_t threads[4];
    int count;
    volatile int stop;
};

static void *churn_run(void *arg) {
    struct churn *churn = arg;
    unsigned seed = (unsigned)(size_t)pthread_self();
    void *keep[64] = {0};
    while (!churn->stop) {
        int i = rand_r(&seed) % 64;
        free(keep[i]);
        size_t size = rand_r(&seed) % 8 == 0 ? (size_t)(rand_r(&seed) % (3 << 20)) : (size_t)(rand_r(&seed) % 5000);
        keep[i] = malloc(size + 1);
        memset(keep[i], i, 1);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

/* Starts `count` (at most 4) threads. */
static void churn_start(struct churn *churn, int count) {
    churn->count = count;
    churn->stop = 0;
    for (int t = 0; t < count; t++) pthread_create(&churn->threads[t], NULL, churn_run, churn);
}

static void churn_stop(struct churn *churn) {
    churn->stop = 1;
    for (int t = 0; t < churn->count; t++) pthread_join(churn->threads[t], NULL);
}

#endif
