/* fork() from a program whose other threads are allocating: the child
 * allocates, frees and exits cleanly every time. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "churn.h"

int main(void) {
    struct churn churn;
    churn_start(&churn, 4);
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
    churn_stop(&churn);
    puts("fork_threads: ok");
    return 0;
}
