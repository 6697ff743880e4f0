/* The C allocation API's rules, checked under LD_PRELOAD=librseq_alloc.so.
 * Prints one line per failed check and exits 1 if any failed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* C23; glibc 2.36 does not have them, so they are weak here and must come
 * from the preloaded library. */
void free_sized(void *ptr, size_t size) __attribute__((weak));
void free_aligned_sized(void *ptr, size_t align, size_t size) __attribute__((weak));

static int failures;
#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fputc('\n', stderr);                           \
        }                                                  \
    } while (0)

static int ours(void *fn) {
    Dl_info info;
    return dladdr(fn, &info) && info.dli_fname && strstr(info.dli_fname, "librseq_alloc");
}

int main(void) {
    /* The allocator in use is ours. */
    CHECK(ours((void *)malloc), "malloc is not librseq_alloc's");
    CHECK(ours((void *)free), "free is not librseq_alloc's");
    CHECK(ours((void *)posix_memalign), "posix_memalign is not librseq_alloc's");

    /* Alignment, usable size, and every usable byte writable. */
    for (size_t size = 0; size < 70000; size = size * 3 / 2 + 1) {
        unsigned char *p = malloc(size);
        CHECK(p != NULL, "malloc(%zu) failed", size);
        CHECK(((uintptr_t)p & 15) == 0, "malloc(%zu) = %p not 16-aligned", size, (void *)p);
        size_t usable = malloc_usable_size(p);
        CHECK(usable >= size, "usable %zu < %zu", usable, size);
        memset(p, 0xab, usable);
        free(p);
    }

    /* malloc(0) is unique; free(NULL) is a no-op. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2, "malloc(0) not unique: %p %p", z1, z2);
    free(z1);
    free(z2);
    free(NULL);

    /* Impossible sizes: NULL with ENOMEM. */
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM, "malloc(SIZE_MAX)");
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM, "malloc(SIZE_MAX/2)");
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM, "calloc overflow");
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM, "reallocarray overflow");

    /* calloc zeroes, also memory that was dirty before. */
    for (int round = 0; round < 3; round++) {
        for (size_t size = 1; size < 3000000; size *= 7) {
            unsigned char *d = malloc(size);
            memset(d, 0xff, size);
            free(d);
            unsigned char *c = calloc(1, size);
            size_t nonzero = 0;
            for (size_t i = 0; i < size; i++) nonzero += c[i] != 0;
            CHECK(nonzero == 0, "calloc(%zu) has %zu nonzero bytes", size, nonzero);
            free(c);
        }
    }

    /* realloc: contents kept; failure leaves the block; size 0 frees (glibc). */
    char *r = malloc(10);
    strcpy(r, "123456789");
    for (size_t size = 16; size < (8u << 20); size *= 4) {
        r = realloc(r, size);
        CHECK(r && strcmp(r, "123456789") == 0, "realloc to %zu lost contents", size);
    }
    errno = 0;
    char *same = r;
    CHECK(realloc(r, SIZE_MAX / 2) == NULL && errno == ENOMEM, "huge realloc did not fail with ENOMEM");
    CHECK(strcmp(same, "123456789") == 0, "failed realloc touched the block");
    CHECK(realloc(r, 0) == NULL, "realloc(p, 0) did not return NULL");
    char *fresh = realloc(NULL, 100);
    CHECK(fresh != NULL, "realloc(NULL, n) failed");
    free(fresh);

    /* free preserves errno. */
    void *e = malloc(100);
    errno = 12345;
    free(e);
    CHECK(errno == 12345, "free changed errno to %d", errno);

    /* posix_memalign: EINVAL for a bad alignment, aligned otherwise. */
    void *pm = (void *)1;
    CHECK(posix_memalign(&pm, 3, 100) == EINVAL && pm == (void *)1, "posix_memalign(3)");
    CHECK(posix_memalign(&pm, 4, 100) == EINVAL, "posix_memalign(4): not a multiple of sizeof(void*)");
    CHECK(posix_memalign(&pm, 24, 100) == EINVAL, "posix_memalign(24)");
    for (size_t align = sizeof(void *); align <= (1u << 21); align *= 2) {
        for (size_t size = 1; size < 300000; size *= 9) {
            void *a = NULL;
            int rc = posix_memalign(&a, align, size);
            CHECK(rc == 0 && ((uintptr_t)a % align) == 0, "posix_memalign(%zu, %zu) = %d %p", align, size, rc, a);
            memset(a, 1, size);
            free(a);
        }
    }
    CHECK(posix_memalign(&pm, 64, SIZE_MAX / 2) == ENOMEM, "posix_memalign huge");

    /* aligned_alloc, memalign, valloc, pvalloc. */
    void *aa = aligned_alloc(4096, 10);
    CHECK(aa && ((uintptr_t)aa & 4095) == 0, "aligned_alloc(4096)");
    free(aa);
    errno = 0;
    CHECK(aligned_alloc(3, 10) == NULL && errno == EINVAL, "aligned_alloc(3) accepted");
    void *ma = memalign(100, 10); /* glibc rounds 100 up to 128 */
    CHECK(ma && ((uintptr_t)ma & 127) == 0, "memalign(100)");
    free(ma);
    long page = sysconf(_SC_PAGESIZE);
    void *va = valloc(10);
    CHECK(va && ((uintptr_t)va % page) == 0, "valloc");
    free(va);
    void *pv = pvalloc(1);
    CHECK(pv && ((uintptr_t)pv % page) == 0 && malloc_usable_size(pv) >= (size_t)page, "pvalloc");
    free(pv);

    /* C23 sized frees. */
    CHECK(free_sized && ours((void *)free_sized), "free_sized is not librseq_alloc's");
    CHECK(free_aligned_sized && ours((void *)free_aligned_sized), "free_aligned_sized is not ours");
    if (!free_sized || !free_aligned_sized) return 1;
    for (size_t size = 1; size < 200000; size = size * 2 + 3) {
        void *s = malloc(size);
        free_sized(s, size);
        void *al = aligned_alloc(256, size);
        free_aligned_sized(al, 256, size);
    }
    free_sized(NULL, 10);

    /* The glibc extras answer harmlessly. */
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt");
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.arena > 0, "mallinfo2.arena");
    (void)malloc_trim(0);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    puts("conformance: ok");
    return 0;
}
