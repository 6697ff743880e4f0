/* Threads that exit while memory they allocated is still live, and
 * threads whose memory is freed by others, over many generations. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PER_THREAD 2000
static void *handoff[8][PER_THREAD];

static void *worker(void *arg) {
    void **mine = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        free(mine[i]); /* allocated by the previous generation */
        mine[i] = malloc(i % 500 + 1);
        memset(mine[i], i, 1);
    }
    return NULL;
}

int main(void) {
    for (int generation = 0; generation < 50; generation++) {
        pthread_t threads[8];
        for (int t = 0; t < 8; t++) pthread_create(&threads[t], NULL, worker, handoff[t]);
        for (int t = 0; t < 8; t++) pthread_join(threads[t], NULL);
    }
    for (int t = 0; t < 8; t++)
        for (int i = 0; i < PER_THREAD; i++) free(handoff[t][i]);
    puts("threads_exit: ok");
    return 0;
}
