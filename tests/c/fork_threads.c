/* fork() from a program whose other threads are allocating: the child
 * allocates, frees and exits cleanly every time. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    void *keep[64] = {0};
    while (!stop) {
        int i = rand_r(&seed) % 64;
        free(keep[i]);
        keep[i] = malloc(rand_r(&seed) % 5000 + 1);
        memset(keep[i], i, 1);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

int main(void) {
    pthread_t threads[4];
    for (size_t t = 0; t < 4; t++) pthread_create(&threads[t], NULL, churn, (void *)t);
    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *blocks[1000];
            for (int j = 0; j < 1000; j++) blocks[j] = malloc(j * 7 + 1);
            for (int j = 0; j < 1000; j++) free(blocks[j]);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed: %#x\n", i, status);
            return 1;
        }
    }
    stop = 1;
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    puts("fork_threads: ok");
    return 0;
}
