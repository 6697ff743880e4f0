/* Coarse classes (alloc/src/coarse.rs), under LD_PRELOAD=librseq_alloc.so:
 * a small program's requests share one class per size group (the classes
 * between two powers of two, up to 1 KiB), so sixteen sizes take five
 * spans, not sixteen; sized frees and realloc accept a group's class for
 * any size of the group; and a group whose class takes a second span gives
 * each size its own class from then on. Not in hardened mode (its blocks
 * carry a tail, and their usable size is not the class's). */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void free_sized(void *ptr, size_t size) __attribute__((weak));

static int failures;
#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            failures++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fputc('\n', stderr);                                 \
        }                                                        \
    } while (0)

static size_t power_of_two_at_least(size_t size) {
    size_t p = 16;
    while (p < size) p *= 2;
    return p;
}

int main(void) {
    /* Sixteen sizes, 16 to 256 bytes: each block is its group's class, and
     * the sixteen share five spans (one per group: 16, 32, 64, 128, 256). */
    enum { SIZES = 16 };
    char *blocks[SIZES];
    uintptr_t spans[SIZES];
    int distinct = 0;
    for (int i = 0; i < SIZES; i++) {
        size_t size = 16 + 16 * (size_t)i;
        blocks[i] = malloc(size);
        CHECK(blocks[i] != NULL, "malloc(%zu)", size);
        memset(blocks[i], i, size);
        size_t usable = malloc_usable_size(blocks[i]);
        CHECK(usable == power_of_two_at_least(size), "malloc(%zu): usable %zu, not its group's class", size, usable);
        uintptr_t span = (uintptr_t)blocks[i] >> 16;
        int seen = 0;
        for (int j = 0; j < distinct; j++) seen |= spans[j] == span;
        if (!seen) spans[distinct++] = span;
    }
    CHECK(distinct == 5, "sixteen sizes took %d spans, not 5", distinct);

    /* realloc within a group keeps the block; past it, moves it. */
    char *r = malloc(80);
    char *same = realloc(r, 100);
    CHECK(same == r, "realloc(80 -> 100) moved the block");
    same = realloc(same, 128);
    CHECK(same == r, "realloc(100 -> 128) moved the block");
    memset(same, 7, 128);
    char *moved = realloc(same, 129);
    CHECK(moved != r && moved[0] == 7 && moved[127] == 7, "realloc past the group");
    free(moved);

    /* Sized frees accept the group's class for any size of the group. */
    for (int i = 0; i < SIZES; i++) {
        if (free_sized) free_sized(blocks[i], 16 + 16 * (size_t)i);
        else free(blocks[i]);
    }

    /* Enough 80-byte blocks for two spans of the 128-byte class (512
     * objects each): the group turns fine, and 80, 96 and 112 bytes get
     * their own classes; the 144-256 group is still coarse. */
    enum { MANY = 2000 };
    static void *many[MANY];
    for (int i = 0; i < MANY; i++) many[i] = malloc(80);
    for (size_t size = 80; size <= 128; size += 16) {
        void *p = malloc(size);
        CHECK(malloc_usable_size(p) == size, "malloc(%zu) after the group's second span: usable %zu", size,
              malloc_usable_size(p));
        free(p);
    }
    void *coarse = malloc(200);
    CHECK(malloc_usable_size(coarse) == 256, "malloc(200): usable %zu, its group should still be coarse",
          malloc_usable_size(coarse));
    free(coarse);
    /* The coarse blocks of a group turned fine are still freed by size. */
    for (int i = 0; i < MANY; i++) {
        if (free_sized) free_sized(many[i], 80);
        else free(many[i]);
    }
    malloc_trim(0);

    if (failures) return 1;
    puts("coarse: ok");
    return 0;
}
