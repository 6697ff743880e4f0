/* The allocator registers its fork handlers on a program's first fork, in
 * its wrappers of fork, daemon and forkpty, not at start-up. Each check runs
 * in a fresh copy of this program (started by posix_spawn, which runs no
 * fork handlers), whose *first* fork is the one under test, taken while
 * other threads allocate:
 *
 *   daemon    the daemonized process allocates (it hangs if a lock was held
 *             at the fork without the handlers);
 *   forkpty   the child on its terminal allocates;
 *   handlers  fork handlers the program registered before its first
 *             allocation allocate in prepare, parent and child: ours run
 *             first, holding every lock, and let them through.
 *
 * A copy that hangs is killed by its alarm, and the check fails. On a machine
 * without pseudo-terminals (posix_openpt fails) the forkpty check is skipped,
 * and says so. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "churn.h"

extern char **environ;

/* Starts the threads and lets them get going. */
static void start_churn(struct churn *churn) {
    churn_start(churn, 3);
    for (volatile int spin = 0; spin < 2000000; spin++) {
    }
}

/* What a process that survived a fork does: allocate through every path. */
static int allocate_after_fork(void) {
    void *blocks[400];
    for (int j = 0; j < 400; j++) blocks[j] = malloc(j % 50 == 0 ? (size_t)(j + 1) << 14 : (size_t)j * 13 + 1);
    for (int j = 0; j < 400; j++) free(blocks[j]);
    return 0;
}

/* daemon: the survivor writes one byte to `fd` once it has allocated. */
static int check_daemon(int fd) {
    struct churn churn;
    start_churn(&churn);
    if (daemon(1, 1) != 0) {
        perror("daemon");
        return 1;
    }
    /* Only the daemonized process gets here, with one thread. */
    alarm(60);
    allocate_after_fork();
    char ok = 'y';
    return write(fd, &ok, 1) == 1 ? 0 : 1;
}

static int check_forkpty(void) {
    struct churn churn;
    start_churn(&churn);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid < 0) {
        perror("forkpty");
        return 1;
    }
    if (pid == 0) {
        alarm(60);
        _exit(allocate_after_fork());
    }
    int status;
    int waited = waitpid(pid, &status, 0) == pid;
    churn_stop(&churn);
    close(master);
    return waited && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int handler_allocations;

static void allocate_in_handler(void) {
    void *small[300];
    for (int i = 0; i < 300; i++) small[i] = malloc(48);
    void *medium = malloc(100000);
    void *huge = malloc(5 << 20);
    free(huge);
    free(medium);
    for (int i = 0; i < 300; i++) free(small[i]);
    handler_allocations++;
}

static int check_handlers(void) {
    /* Registered before anything allocates (the checks run before stdio
     * has a buffer), so before ours. */
    pthread_atfork(allocate_in_handler, allocate_in_handler, allocate_in_handler);
    struct churn churn;
    start_churn(&churn);
    int failed = 0;
    for (int i = 0; i < 20 && !failed; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(60);
            _exit(handler_allocations == 2 ? allocate_after_fork() : 3);
        }
        int status;
        failed = pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        if (failed) fprintf(stderr, "fork %d: child status %#x\n", i, status);
        handler_allocations = 0;
    }
    churn_stop(&churn);
    return failed;
}

/* Runs `self check arg` and returns its exit status (-1 if it did not exit). */
static int run_copy(const char *self, const char *check, const char *arg) {
    char *argv[] = {(char *)self, (char *)check, (char *)arg, NULL};
    pid_t pid;
    if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0) return -1;
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* Whether this machine has pseudo-terminals (a container may not); asked
 * without forkpty, so that a broken wrapper cannot pass for a missing pty. */
static int have_ptys(void) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (fd < 0) return 0;
    close(fd);
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "daemon")) return check_daemon(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "forkpty")) return check_forkpty();
    if (argc == 3 && !strcmp(argv[1], "handlers")) return check_handlers();
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    for (int round = 0; round < rounds; round++) {
        int pipe_fds[2];
        if (pipe(pipe_fds) != 0) return 1;
        char fd[16];
        snprintf(fd, sizeof fd, "%d", pipe_fds[1]);
        if (run_copy(argv[0], "daemon", fd) != 0) {
            fprintf(stderr, "round %d: daemon failed\n", round);
            return 1;
        }
        close(pipe_fds[1]);
        /* The daemon says it allocated; a hang ends with its alarm (EOF). */
        char ok = 0;
        struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
        if (poll(&p, 1, 90000) != 1 || read(pipe_fds[0], &ok, 1) != 1 || ok != 'y') {
            fprintf(stderr, "round %d: the daemonized process did not allocate\n", round);
            return 1;
        }
        close(pipe_fds[0]);
        if (!have_ptys()) {
            if (round == 0) fprintf(stderr, "no pseudo-terminals here: forkpty not checked\n");
        } else if (run_copy(argv[0], "forkpty", "-") != 0) {
            fprintf(stderr, "round %d: forkpty failed\n", round);
            return 1;
        }
        if (run_copy(argv[0], "handlers", "-") != 0) {
            fprintf(stderr, "round %d: fork handlers that allocate failed\n", round);
            return 1;
        }
    }
    printf("fork_wrappers: ok (%d rounds)\n", rounds);
    return 0;
}
