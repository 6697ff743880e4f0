/* fork() from a signal handler that interrupted malloc or free: glibc
 * guarantees this works (POSIX lists fork as async-signal-safe); the child
 * must be able to allocate and the parent must go on. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signal_storm.h"

static volatile sig_atomic_t forks, failures;

static void on_signal(int sig) {
    (void)sig;
    pid_t pid = fork();
    if (pid == 0) {
        void *p = malloc(100);
        void *q = malloc(100000);
        free(p);
        free(q);
        _exit(0);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        failures++;
    forks++;
}

int main(int argc, char **argv) {
    int target = argc > 1 ? atoi(argv[1]) : 300;
    struct signal_storm storm;
    signal_storm_start(&storm, SIGUSR1, on_signal, 200);
    unsigned seed = 1;
    void *keep[256] = {0};
    while (forks < target) {
        int i = rand_r(&seed) % 256;
        free(keep[i]);
        keep[i] = malloc(rand_r(&seed) % 40000 + 1);
    }
    signal_storm_stop(&storm);
    for (int i = 0; i < 256; i++) free(keep[i]);
    if (failures) {
        fprintf(stderr, "%d children failed\n", (int)failures);
        return 1;
    }
    printf("fork_in_signal: ok (%d forks)\n", (int)forks);
    return 0;
}
