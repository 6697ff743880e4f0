/* Allocator workloads for `rseq-alloc-bench compare`, run under LD_PRELOAD
 * of each allocator. Usage: workloads NAME THREADS SCALE
 * Each prints "checksum N" (the same under every correct allocator: a
 * fast wrong answer is a failure, not a win) and "peak_rss_kib N" (VmHWM),
 * and `trim` also prints "rss_after_trim_kb N". SCALE multiplies the work
 * (1 = about 1-5 s here). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double scale = 1.0;
static int threads = 1;

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Mostly small, a tail up to `max` (a Pareto-like mix). */
static size_t pareto_size(uint64_t *s, size_t max) {
    uint64_t r = rng_next(s) % 1000;
    if (r < 700) return 8 + rng_next(s) % 120;
    if (r < 950) return 128 + rng_next(s) % 896;
    if (r < 995) return 1024 + rng_next(s) % 15360;
    return 16384 + rng_next(s) % (max - 16384);
}

static long iterations(double base) { return (long)(base * scale); }

/* Every block starts with its size and a stamp; reading them back proves the
 * block was not handed to someone else meanwhile. The empty asm tells the
 * compiler the block's memory is used, so the stores and the loads in
 * `check` happen: where a block lives only between a malloc and a free in
 * one loop (tight, oversub), GCC folded them away and the loop never
 * touched the memory it allocated. */
static void *make(size_t size, uint64_t stamp) {
    uint64_t *p = malloc(size < 16 ? 16 : size);
    if (!p) { fprintf(stderr, "malloc(%zu) failed\n", size); exit(2); }
    p[0] = size;
    p[1] = stamp;
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static uint64_t check(void *block, uint64_t stamp) {
    uint64_t *p = block;
    if (p[1] != stamp) { fprintf(stderr, "block %p: stamp %lu, expected %lu\n", block, (unsigned long)p[1], (unsigned long)stamp); exit(3); }
    return p[0] + p[1];
}

/* 1. tight: one thread, malloc/free pairs of small sizes. */
static uint64_t tight(void) {
    uint64_t sum = 0;
    long n = iterations(200e6);
    for (long i = 0; i < n; i++) {
        void *p = make(16 + (i & 15) * 16, i);
        sum += check(p, i);
        free(p);
    }
    return sum;
}

/* 2. pareto: a live set of 200k blocks of Pareto-like sizes, replaced at random. */
static uint64_t pareto(void) {
    enum { LIVE = 200000 };
    void **live = calloc(LIVE, sizeof *live);
    uint64_t *stamps = calloc(LIVE, sizeof *stamps);
    uint64_t s = 42, sum = 0;
    long n = iterations(12e6);
    for (long i = 0; i < n; i++) {
        size_t slot = rng_next(&s) % LIVE;
        if (live[slot]) { sum += check(live[slot], stamps[slot]); free(live[slot]); }
        stamps[slot] = i;
        live[slot] = make(pareto_size(&s, 65536), i);
    }
    for (size_t i = 0; i < LIVE; i++) if (live[i]) { sum += check(live[i], stamps[i]); free(live[i]); }
    free(live);
    free(stamps);
    return sum;
}

/* Per-thread sums, added at the end. */
static uint64_t thread_sums[1024];

/* 3. larson: server-style churn; each thread replaces random slots of its own
 * array, and a fifth of the blocks it replaces were allocated by another
 * thread (slots are swapped between threads through a shared exchange). */
enum { EXCHANGE = 4096 };
static void *exchange[EXCHANGE];
static uint64_t exchange_stamp[EXCHANGE];
static pthread_mutex_t exchange_lock[64];

static void *larson_thread(void *arg) {
    long id = (long)arg;
    enum { SLOTS = 2000 };
    void *slots[SLOTS] = {0};
    uint64_t stamps[SLOTS] = {0};
    uint64_t s = 1000 + id, sum = 0;
    long n = iterations(60e6) / threads;
    for (long i = 0; i < n; i++) {
        size_t k = rng_next(&s) % SLOTS;
        if (slots[k]) { sum += check(slots[k], stamps[k]); free(slots[k]); }
        stamps[k] = (uint64_t)id << 40 | i;
        slots[k] = make(16 + rng_next(&s) % 500, stamps[k]);
        if (rng_next(&s) % 5 == 0) {
            size_t e = rng_next(&s) % EXCHANGE;
            pthread_mutex_t *m = &exchange_lock[e % 64];
            pthread_mutex_lock(m);
            void *theirs = exchange[e];
            uint64_t their_stamp = exchange_stamp[e];
            exchange[e] = slots[k];
            exchange_stamp[e] = stamps[k];
            pthread_mutex_unlock(m);
            slots[k] = theirs;
            stamps[k] = their_stamp;
        }
    }
    for (size_t k = 0; k < SLOTS; k++) if (slots[k]) { sum += check(slots[k], stamps[k]); free(slots[k]); }
    thread_sums[id] = sum;
    return NULL;
}

/* 4. prodcons: half the threads allocate, the other half free everything
 * through bounded queues: every free is remote. */
struct queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    void *items[1024];
    int head, count, done;
};
static struct queue queues[512];

static void *producer(void *arg) {
    long id = (long)arg;
    struct queue *q = &queues[id];
    long n = iterations(8e6) / (threads / 2);
    uint64_t s = 7 + id;
    for (long i = 0; i < n; i++) {
        void *p = make(16 + rng_next(&s) % 300, i);
        pthread_mutex_lock(&q->lock);
        while (q->count == 1024) pthread_cond_wait(&q->not_full, &q->lock);
        q->items[(q->head + q->count++) % 1024] = p;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_lock(&q->lock);
    q->done = 1;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static void *consumer(void *arg) {
    long id = (long)arg;
    struct queue *q = &queues[id];
    uint64_t sum = 0;
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (q->count == 0 && !q->done) pthread_cond_wait(&q->not_empty, &q->lock);
        if (q->count == 0) { pthread_mutex_unlock(&q->lock); break; }
        void *p = q->items[q->head];
        q->head = (q->head + 1) % 1024;
        q->count--;
        pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->lock);
        sum += ((uint64_t *)p)[0];
        free(p);
    }
    thread_sums[256 + id] = sum;
    return NULL;
}

/* 5. oversub: 8 threads per CPU, each a tight loop. */
static void *tight_thread(void *arg) {
    long id = (long)arg;
    uint64_t sum = 0;
    long n = iterations(400e6) / threads;
    for (long i = 0; i < n; i++) {
        void *p = make(16 + (i & 15) * 16, i);
        sum += check(p, i);
        free(p);
    }
    thread_sums[id] = sum;
    return NULL;
}

/* 6. generations: threads exit leaving live objects that the next
 * generation frees; memory must not grow with the generations. */
static void *generation_handoff[64][2000];
static void *generation_thread(void *arg) {
    long id = (long)arg;
    uint64_t sum = 0;
    for (int i = 0; i < 2000; i++) {
        if (generation_handoff[id][i]) { sum += ((uint64_t *)generation_handoff[id][i])[0]; free(generation_handoff[id][i]); }
        generation_handoff[id][i] = make(16 + (i * 37) % 700, i);
    }
    thread_sums[id] += sum;
    return NULL;
}

/* 7. false sharing: each thread allocates small objects and hammers them;
 * objects of different threads sharing a cache line slow everyone. */
static void *false_sharing_thread(void *arg) {
    long id = (long)arg;
    enum { OBJECTS = 64 };
    volatile uint64_t *mine[OBJECTS];
    for (int i = 0; i < OBJECTS; i++) mine[i] = make(16, i);
    long n = iterations(600e6);
    for (long r = 0; r < n; r++)
        for (int i = 0; i < 4; i++) mine[(r + i) % OBJECTS][1] += 1;
    uint64_t sum = 0;
    for (int i = 0; i < OBJECTS; i++) { sum += mine[i][1]; free((void *)mine[i]); }
    thread_sums[id] = sum;
    return NULL;
}

static uint64_t run_threads(void *(*fn)(void *), int count) {
    pthread_t t[1024];
    memset(thread_sums, 0, sizeof thread_sums);
    for (long i = 0; i < count; i++) pthread_create(&t[i], NULL, fn, (void *)i);
    for (int i = 0; i < count; i++) pthread_join(t[i], NULL);
    uint64_t sum = 0;
    for (int i = 0; i < 1024; i++) sum += thread_sums[i];
    return sum;
}

/* 8. realloc: grow a block from 16 B to 1 MiB by doubling, again and
 * again, while small blocks are allocated in between (as in a program whose
 * vector grows among other allocations, so the block is rarely at the end of
 * the heap). */
static uint64_t realloc_growth(void) {
    enum { RING = 64 };
    void *ring[RING] = {0};
    uint64_t sum = 0;
    long n = iterations(1500000), k = 0;
    for (long r = 0; r < n; r++) {
        size_t size = 16;
        unsigned char *p = malloc(size);
        p[0] = (unsigned char)r;
        while (size < (1 << 20)) {
            size *= 2;
            p = realloc(p, size);
            p[size - 1] = 1;
            free(ring[k % RING]);
            ring[k++ % RING] = malloc(64);
        }
        sum += p[0] + p[size - 1];
        free(p);
    }
    for (int i = 0; i < RING; i++) free(ring[i]);
    return sum;
}

/* 9. large: blocks of 1 to 8 MiB, touched and freed. */
static uint64_t large(void) {
    uint64_t sum = 0, s = 9;
    long n = iterations(3e6);
    for (long i = 0; i < n; i++) {
        size_t size = (1 + rng_next(&s) % 8) << 20;
        unsigned char *p = malloc(size);
        for (size_t off = 0; off < size; off += 65536) p[off] = (unsigned char)off;
        sum += p[size / 2 & ~(size_t)65535] + size;
        free(p);
    }
    return sum;
}

/* 12. many_threads: THREADS threads alive at once (a barrier holds them
 * until all have started, another until all have finished), each keeping a
 * small working set and allocating in bursts, yielding between bursts. The
 * work in all is the same for any count: per-thread caches grow with the
 * threads, per-CPU ones with the CPUs. */
static pthread_barrier_t many_started, many_finished;
static uint64_t *many_sums;

static void *many_thread(void *arg) {
    long id = (long)arg;
    enum { SET = 16, BURST = 32 };
    void *set[SET], *burst[BURST];
    uint64_t stamps[SET], s = 77 + id, sum = 0;
    for (int k = 0; k < SET; k++) { stamps[k] = (uint64_t)id << 32 | k; set[k] = make(16 + rng_next(&s) % 240, stamps[k]); }
    pthread_barrier_wait(&many_started);
    long bursts = iterations(1e6) / threads;
    if (bursts < 1) bursts = 1;
    for (long b = 0; b < bursts; b++) {
        for (int k = 0; k < BURST; k++) burst[k] = make(16 + rng_next(&s) % 496, b << 8 | k);
        for (int k = 0; k < BURST; k++) { sum += check(burst[k], b << 8 | k); free(burst[k]); }
        size_t k = rng_next(&s) % SET;
        sum += check(set[k], stamps[k]);
        free(set[k]);
        stamps[k] = (uint64_t)id << 32 | (b + SET);
        set[k] = make(16 + rng_next(&s) % 240, stamps[k]);
        sched_yield();
    }
    pthread_barrier_wait(&many_finished);
    for (int k = 0; k < SET; k++) { sum += check(set[k], stamps[k]); free(set[k]); }
    many_sums[id] = sum;
    return NULL;
}

static uint64_t many_threads(void) {
    pthread_t *t = malloc(threads * sizeof *t);
    many_sums = calloc(threads, sizeof *many_sums);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* Small stacks, so that ten thousand fit whatever the stack limit. */
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_barrier_init(&many_started, NULL, threads);
    pthread_barrier_init(&many_finished, NULL, threads);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], &attr, many_thread, (void *)i)) { fprintf(stderr, "thread %ld: cannot create\n", i); exit(2); }
    uint64_t sum = 0;
    for (long i = 0; i < threads; i++) { pthread_join(t[i], NULL); sum += many_sums[i]; }
    free(many_sums);
    free(t);
    return sum;
}

static long rss_kb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 10. trim: 512 MiB in 256-byte blocks (at scale 1), all freed, then
 * malloc_trim(0): how much stays resident. */
static uint64_t trim(void) {
    size_t count = (size_t)(scale * (512u << 20) / 256);
    void **blocks = malloc(count * sizeof *blocks);
    uint64_t sum = 0;
    for (size_t i = 0; i < count; i++) { blocks[i] = make(256, i); }
    long peak = rss_kb();
    for (size_t i = 0; i < count; i++) { sum += check(blocks[i], i); free(blocks[i]); }
    free(blocks);
    malloc_trim(0);
    printf("rss_peak_kb %ld\nrss_after_trim_kb %ld\n", peak, rss_kb());
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: workloads NAME THREADS SCALE\n"); return 2; }
    const char *name = argv[1];
    threads = atoi(argv[2]);
    scale = atof(argv[3]);
    int many = !strcmp(name, "many_threads");
    if (threads < 1 || threads > (many ? 100000 : 256)) { fprintf(stderr, "threads must be 1..256 (many_threads: 1..100000)\n"); return 2; }
    for (int i = 0; i < 64; i++) pthread_mutex_init(&exchange_lock[i], NULL);
    uint64_t sum;
    if (!strcmp(name, "tight")) sum = tight();
    else if (!strcmp(name, "pareto")) sum = pareto();
    else if (!strcmp(name, "larson")) {
        sum = run_threads(larson_thread, threads);
        /* Blocks still in the exchange are counted and freed too, so every
         * block allocated is checked exactly once whatever the interleaving. */
        for (int e = 0; e < EXCHANGE; e++)
            if (exchange[e]) { sum += check(exchange[e], exchange_stamp[e]); free(exchange[e]); }
    }
    else if (!strcmp(name, "prodcons")) {
        int pairs = threads < 2 ? 1 : threads / 2;
        threads = pairs * 2;
        pthread_t t[512];
        for (int i = 0; i < pairs; i++) {
            pthread_mutex_init(&queues[i].lock, NULL);
            pthread_cond_init(&queues[i].not_empty, NULL);
            pthread_cond_init(&queues[i].not_full, NULL);
        }
        for (long i = 0; i < pairs; i++) pthread_create(&t[i], NULL, producer, (void *)i);
        for (long i = 0; i < pairs; i++) pthread_create(&t[pairs + i], NULL, consumer, (void *)i);
        for (int i = 0; i < 2 * pairs; i++) pthread_join(t[i], NULL);
        sum = 0;
        for (int i = 0; i < 1024; i++) sum += thread_sums[i];
    } else if (!strcmp(name, "oversub")) sum = run_threads(tight_thread, threads);
    else if (!strcmp(name, "generations")) {
        memset(thread_sums, 0, sizeof thread_sums);
        long gens = iterations(10000);
        for (long g = 0; g < gens; g++) {
            pthread_t t[64];
            for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, generation_thread, (void *)i);
            for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
        }
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 2000; j++) free(generation_handoff[i][j]);
        sum = 0;
        for (int i = 0; i < 64; i++) sum += thread_sums[i];
    } else if (!strcmp(name, "false_sharing")) sum = run_threads(false_sharing_thread, threads);
    else if (!strcmp(name, "realloc")) sum = realloc_growth();
    else if (!strcmp(name, "large")) sum = large();
    else if (!strcmp(name, "trim")) sum = trim();
    else if (many) sum = many_threads();
    /* 11. startup: nothing; its peak RSS is what the allocator costs a
     * program before its first block (library pages, first metadata). */
    else if (!strcmp(name, "startup")) sum = 0;
    else { fprintf(stderr, "unknown workload %s\n", name); return 2; }
    printf("checksum %llu\n", (unsigned long long)sum);
    /* The peak as /proc reads it: there Linux sums its per-CPU RSS
     * counters, where the rusage maxrss reads the shared count alone,
     * which lags by up to 32 pages per CPU (+-128 KiB: 10% of the
     * smallest workloads). The peak tracked before now is that same
     * approximation; the size at exit, usually the peak here, is exact. */
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    long hwm = -1;
    while (status && fgets(line, sizeof line, status))
        if (sscanf(line, "VmHWM: %ld kB", &hwm) == 1) break;
    if (status) fclose(status);
    if (hwm >= 0) printf("peak_rss_kib %ld\n", hwm);
    return 0;
}
