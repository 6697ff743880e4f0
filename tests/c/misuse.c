/* Classic heap misuse, one probe per run: `misuse PROBE`.
 *
 * Each probe prints "ptr=0x..." (the pointer it is about to misuse, for the
 * caller to match against the allocator's report), commits the misuse, then
 * makes the calls where an allocator could notice it, and prints "survived"
 * if nothing stopped it. A probe that is caught dies before "survived".
 * Used by tests/tests/misuse.rs and by `rseq-alloc-bench misuse`, which runs
 * every probe under every allocator. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>

static char static_block[64];

static void show(const void *p) {
    printf("ptr=%p\n", p);
    fflush(stdout);
}

/* Keeps the compiler from seeing through the misuse. */
static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* Makes the misuse's writes happen: without it the compiler drops stores to
 * memory that is freed right after. */
static void commit(void *p) {
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Goes on using the heap, as a program would, then trims: every slow path
 * where an allocator could notice the misuse runs. */
static void churn(size_t size) {
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        blocks[i] = malloc(size);
        memset(blocks[i], 1, size);
    }
    for (int i = 0; i < 64; i++) free(blocks[i]);
    malloc_trim(0);
}

/* Allocates two blocks as the program would go on doing; says so if they
 * overlap (a misuse let one block out twice). */
static void reuse(size_t size) {
    char *a = malloc(size), *b = malloc(size);
    if (a && b && a < b + size && b < a + size) printf("shared %p %p\n", (void *)a, (void *)b);
    free(a);
    free(b);
}

/* The classic probes, which `--list` prints (what the comparison runs);
 * `free_sized_mismatch` is ours alone (glibc 2.36 has no free_sized). */
static const char *const PROBES[] = {
    "overflow",       "overflow_far", "underflow",    "double_free", "double_free_later", "use_after_free_write",
    "invalid_stack", "invalid_static", "invalid_mmap", "interior",    "misaligned",        "realloc_invalid",
};

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--list")) {
        for (size_t i = 0; i < sizeof PROBES / sizeof PROBES[0]; i++) printf("%s\n", PROBES[i]);
        return argc < 2 ? 2 : 0;
    }
    const char *probe = argv[1];
    if (!strcmp(probe, "overflow")) {
        /* One byte past the end: the classic off-by-one of a string copy. */
        char *p = launder(malloc(24));
        show(p);
        memset(p, 'A', 25);
        commit(p);
        free(p);
        churn(24);
    } else if (!strcmp(probe, "overflow_far")) {
        char *p = launder(malloc(100));
        show(p);
        memset(p, 'A', 100 + 24);
        commit(p);
        free(p);
        churn(100);
    } else if (!strcmp(probe, "underflow")) {
        char *a = launder(malloc(24));
        char *b = launder(malloc(24));
        char *p = a > b ? a : b; /* the later one: likely to have a neighbour below */
        show(p);
        memset(p - 8, 'A', 8);
        commit(p);
        free(p);
        free(p == a ? b : a);
        churn(24);
    } else if (!strcmp(probe, "double_free")) {
        char *p = launder(malloc(24));
        show(p);
        free(p);
        free(p);
        churn(24);
    } else if (!strcmp(probe, "double_free_reuse")) {
        /* Caught at the second free, before any block is handed out twice. */
        char *p = launder(malloc(24));
        show(p);
        free(p);
        free(p);
        reuse(24);
    } else if (!strcmp(probe, "double_free_later_reuse")) {
        /* Other frees in between: still refused before a block is shared. */
        char *p = launder(malloc(24));
        char *q = launder(malloc(24));
        show(p);
        free(p);
        free(q);
        free(p);
        reuse(24);
    } else if (!strcmp(probe, "huge_double_free_reuse")) {
        /* A block with a mapping of its own, kept for reuse once freed. */
        char *p = launder(malloc(8 << 20));
        show(p);
        free(p);
        free(p);
        reuse(8 << 20);
    } else if (!strcmp(probe, "interior_reuse")) {
        char *p = launder(malloc(64));
        show(p + 16);
        free(launder(p + 16));
        reuse(64);
    } else if (!strcmp(probe, "interior_tail_reuse")) {
        /* Blocks of 16 KiB come from spans of more than one page (64 KiB,
         * spans start at a page): a block whose offset in its page is not a
         * multiple of its class's size (its usable size) lies in a page after
         * its span's head, which free's fast path leaves to the full lookup.
         * The others are freed as they should be; a pointer into that one is
         * refused. */
        char *blocks[16], *tail = NULL;
        for (int i = 0; i < 16; i++) {
            blocks[i] = launder(malloc(16384));
            size_t size = malloc_usable_size(blocks[i]);
            if (!tail && ((uintptr_t)blocks[i] & 0xffff) % size != 0) tail = blocks[i];
        }
        for (int i = 0; i < 16; i++)
            if (blocks[i] != tail) free(blocks[i]);
        if (!tail) return 1;
        show(tail + 16);
        free(launder(tail + 16));
        reuse(16384);
    } else if (!strcmp(probe, "double_free_later")) {
        /* Another free in between defeats a check of only the last freed block. */
        char *p = launder(malloc(24));
        char *q = launder(malloc(24));
        show(p);
        free(p);
        free(q);
        free(p);
        churn(24);
    } else if (!strcmp(probe, "use_after_free_write")) {
        /* Writes where freelists keep their links. */
        char *p = launder(malloc(24));
        show(p);
        free(p);
        memset(launder(p), 'A', 16);
        commit(p);
        void *q = malloc(24);
        void *r = malloc(24);
        free(q);
        free(r);
        churn(24);
    } else if (!strcmp(probe, "invalid_stack")) {
        char local[64];
        show(local);
        free(launder(local));
    } else if (!strcmp(probe, "invalid_static")) {
        show(static_block);
        free(launder(static_block));
    } else if (!strcmp(probe, "invalid_mmap")) {
        void *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        show(p);
        free(launder(p));
    } else if (!strcmp(probe, "interior")) {
        char *p = launder(malloc(64));
        show(p + 16);
        free(launder(p + 16));
        churn(64);
    } else if (!strcmp(probe, "misaligned")) {
        char *p = launder(malloc(64));
        show(p + 1);
        free(launder(p + 1));
        churn(64);
    } else if (!strcmp(probe, "realloc_invalid")) {
        char local[64];
        show(local);
        void *q = realloc(launder(local), 100);
        free(q);
    } else if (!strcmp(probe, "free_sized_mismatch")) {
        /* C23 free_sized with a size that is not the block's (not in glibc
         * 2.36: found with dlsym, skipped where missing). */
        void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
        char *p = launder(malloc(100));
        show(p);
        if (free_sized) free_sized(p, 1000);
        churn(100);
    } else {
        fprintf(stderr, "unknown probe %s\n", probe);
        return 2;
    }
    printf("survived\n");
    return 0;
}
