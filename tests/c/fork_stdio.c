/* fork() while other threads are inside stdio and the allocator at once:
 * readers grow getline's buffer (realloc with the FILE's lock held), a
 * flusher walks every FILE (stdio's list lock, then each FILE's lock), and
 * one thread forks children that allocate. Finishing at all is the test:
 * an allocator that holds its locks while fork waits for stdio's list lock
 * deadlocks here (the order glibc's own malloc keeps: its locks after the
 * list lock). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;
static char path[64];

static void *reader(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        FILE *f = fopen(path, "r");
        if (!f) abort();
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            /* A fresh buffer every few lines, so getline keeps reallocating. */
            if (cap > 4096) {
                free(line);
                line = NULL;
                cap = 0;
            }
        }
        free(line);
        fclose(f);
    }
    return NULL;
}

static void *flusher(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) fflush(NULL);
    return NULL;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 300;
    snprintf(path, sizeof path, "/tmp/fork_stdio.%d", (int)getpid());
    FILE *out = fopen(path, "w");
    if (!out) return 1;
    for (int i = 0; i < 2000; i++) {
        int len = 1 + (i * 7919) % 9000;
        for (int j = 0; j < len; j++) fputc('a' + j % 26, out);
        fputc('\n', out);
    }
    fclose(out);
    pthread_t threads[4];
    for (int i = 0; i < 3; i++) pthread_create(&threads[i], NULL, reader, NULL);
    pthread_create(&threads[3], NULL, flusher, NULL);
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *blocks[64];
            for (int j = 0; j < 64; j++) blocks[j] = malloc(16 + j * 100);
            for (int j = 0; j < 64; j++) free(blocks[j]);
            _exit(0);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed\n", i);
            return 1;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    unlink(path);
    puts("fork_stdio: ok");
    return 0;
}
