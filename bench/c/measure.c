/* Runs a command in a process of its own and reports that process's
 * resource usage, as wait4 gives it:
 *
 *     measure PROGRAM ARGS...
 *
 * prints `rusage maxrss_kib N user_us U sys_us S` on stdout after the
 * command's own output, and exits as the command did (128 + N if signal N
 * killed it).
 *
 * Why a launcher: Linux folds into ru_maxrss the resident size the process
 * had before its exec (exec_mmap keeps the old mm's high-water mark). A
 * workload forked or vforked straight from the benchmark harness reported
 * at least the harness's own size, which hid the differences between
 * allocators on small workloads. This program is small, and it forks (a
 * vfork child shares, and would report, our whole mm): the child's mm
 * holds only copies of our few anonymous pages when it execs.
 *
 * MEASURE_PRELOAD=LIB sets LD_PRELOAD for the command only, so that the
 * launcher itself runs on glibc's malloc (it barely allocates).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: measure PROGRAM ARGS...\n");
        return 2;
    }
    const char *preload = getenv("MEASURE_PRELOAD");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("measure: fork");
        return 2;
    }
    if (pid == 0) {
        if (preload && *preload) setenv("LD_PRELOAD", preload, 1);
        unsetenv("MEASURE_PRELOAD");
        execv(argv[1], argv + 1);
        fprintf(stderr, "measure: exec %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            perror("measure: wait4");
            return 2;
        }
    }
    printf("rusage maxrss_kib %ld user_us %lld sys_us %lld\n", usage.ru_maxrss,
           (long long)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec,
           (long long)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "measure: %s killed by signal %d (%s)\n", argv[1], WTERMSIG(status),
                strsignal(WTERMSIG(status)));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
