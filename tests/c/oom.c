/* Out of memory under RLIMIT_AS: for small, medium and huge blocks, every
 * allocation call fails with NULL and errno = ENOMEM once the address space
 * is used up (posix_memalign returns ENOMEM), a failed realloc leaves its
 * block as it was, and once memory is freed the program allocates again as
 * much as before. Prints "oom: ok". */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define CHECK(c)                                                                       \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "oom: line %d: check failed: %s (errno %d)\n", __LINE__, #c, \
                    errno);                                                            \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

#define HEADROOM ((size_t)256 << 20)
#define MAX_BLOCKS (HEADROOM / 64 + 1024)

static void **blocks;

/* Allocates blocks of `size` (touching each) until malloc fails; returns
 * how many, with errno as the failing call left it. */
static size_t fill(size_t size) {
    size_t n = 0;
    while (n < MAX_BLOCKS) {
        errno = 0;
        char *p = malloc(size);
        if (p == NULL) break;
        p[0] = 1;
        p[size - 1] = 2;
        blocks[n++] = p;
    }
    return n;
}

static void empty(size_t n) {
    for (size_t i = 0; i < n; i++) free(blocks[i]);
}

static size_t address_space_in_use(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * 4096;
}

int main(void) {
    blocks = mmap(NULL, MAX_BLOCKS * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(blocks != MAP_FAILED);
    printf("oom: limiting the address space to what is in use + %zu MiB\n", HEADROOM >> 20);
    fflush(stdout);
    free(malloc(1)); /* the allocator's own start-up mappings come first */
    struct rlimit limit;
    limit.rlim_cur = limit.rlim_max = address_space_in_use() + HEADROOM;
    CHECK(setrlimit(RLIMIT_AS, &limit) == 0);

    const size_t sizes[] = {64, 200 * 1000, 3 << 20};
    for (int s = 0; s < 3; s++) {
        size_t size = sizes[s];
        size_t first = fill(size);
        CHECK(errno == ENOMEM);
        CHECK(first > 0 && first < MAX_BLOCKS);
        errno = 0;
        CHECK(malloc(size) == NULL && errno == ENOMEM);
        errno = 0;
        CHECK(calloc(1, size) == NULL && errno == ENOMEM);
        void *aligned = (void *)1;
        CHECK(posix_memalign(&aligned, 16, size) == ENOMEM && aligned == (void *)1);
        /* A failed realloc keeps the block and its contents. */
        char *kept = blocks[first - 1];
        errno = 0;
        CHECK(realloc(kept, (size_t)1 << 30) == NULL && errno == ENOMEM);
        CHECK(kept[0] == 1 && kept[size - 1] == 2);
        empty(first);
        /* Everything freed: as much fits again. */
        size_t again = fill(size);
        CHECK(errno == ENOMEM);
        CHECK(again >= first - first / 10);
        empty(again);
        printf("oom: %zu-byte blocks: %zu fit, then %zu after freeing them\n", size, first, again);
    }
    /* Requests that can never succeed. */
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(SIZE_MAX / 4, 8) == NULL && errno == ENOMEM);
    /* And the program goes on. */
    char *p = malloc(1000);
    CHECK(p != NULL);
    memset(p, 3, 1000);
    free(p);
    printf("oom: ok\n");
    return 0;
}
