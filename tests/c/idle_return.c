/* A program that frees most of its memory and then stops allocating.
 * Single-threaded, it stays so: the allocator starts no thread of its own
 * (glibc and programs rely on a single-threaded process staying one). Once
 * the program has a thread of its own, the allocator's background thread
 * gives the free memory back within a few upkeep periods, although the
 * program never calls the allocator again. Runs itself again with a 50 ms
 * period. Prints "idle_return: ok". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            printf("idle_return: line %d: check failed: %s\n", __LINE__, #c);      \
            return 1;                                                              \
        }                                                                          \
    } while (0)

#define BLOCKS 16384
static char *blocks[BLOCKS];

/* The first number after `key` in `path`, read without allocating. */
static long field(const char *path, const char *key, int nth) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = key ? strstr(buf, key) : buf;
    if (!p) return -1;
    p += key ? strlen(key) : 0;
    for (int i = 0; i < nth; i++) strtol(p, &p, 10);
    return strtol(p, NULL, 10);
}

static long resident_kib(void) { return field("/proc/self/statm", NULL, 1) * 4; }
static long threads(void) { return field("/proc/self/status", "Threads:", 0); }

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

/* 64 MiB of 4 KiB blocks, every page written, then freed. */
static long fill_and_free(void) {
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(4096);
        memset(blocks[i], i, 4096);
    }
    long peak = resident_kib();
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    return peak;
}

static int hold[2];
static void *idle(void *arg) {
    char c;
    (void)arg;
    (void)!read(hold[0], &c, 1);
    return NULL;
}

int main(int argc, char **argv) {
    (void)argc;
    if (!getenv("RSEQ_ALLOC_DECAY_MS")) {
        setenv("RSEQ_ALLOC_DECAY_MS", "50", 1);
        execv(argv[0], argv);
        return 1;
    }
    long start = resident_kib();
    long peak = fill_and_free();
    sleep_ms(500);
    long single = resident_kib();
    CHECK(threads() == 1);
    printf("idle_return: single-threaded: %ld KiB at start, %ld at peak, %ld after 10 periods idle, 1 thread\n", start,
           peak, single);

    CHECK(pipe(hold) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, idle, NULL) == 0);
    peak = fill_and_free();
    long now = resident_kib();
    int waited = 0;
    while (waited < 5000 && now - start > (peak - start) / 10) {
        sleep_ms(20);
        waited += 20;
        now = resident_kib();
    }
    long n = threads();
    printf("idle_return: with a thread: %ld KiB at peak, %ld after %d ms idle, %ld threads\n", peak, now, waited, n);
    CHECK(peak - start > 60 << 10);
    CHECK(now - start <= (peak - start) / 10);
    CHECK(n == 3);
    CHECK(write(hold[1], "x", 1) == 1);
    CHECK(pthread_join(t, NULL) == 0);
    printf("idle_return: ok\n");
    return 0;
}
