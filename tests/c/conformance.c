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
    /* Alignments that are not powers of two are rounded up, as glibc 2.36 does. */
    size_t odd[] = {0, 3, 24, 48};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        size_t want = 16;
        while (want < odd[i]) want *= 2;
        void *o = aligned_alloc(odd[i], 10);
        CHECK(o && ((uintptr_t)o % want) == 0, "aligned_alloc(%zu) = %p", odd[i], o);
        free(o);
    }
    errno = 0;
    CHECK(memalign((size_t)-1, 4096) == NULL && errno == EINVAL, "memalign(-1): errno %d, not EINVAL", errno);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL, "memalign(SIZE_MAX/2+2)");
    /* A failing posix_memalign leaves errno at ENOMEM, as glibc's does. */
    /* Called through a volatile pointer: gcc assumes its builtin posix_memalign leaves errno alone. */
    int (*volatile posix_memalign_call)(void **, size_t, size_t) = posix_memalign;
    errno = 0;
    void *none = (void *)1;
    CHECK(posix_memalign_call(&none, (size_t)1 << 63, 10) == ENOMEM && errno == ENOMEM && none == (void *)1,
          "posix_memalign(1 << 63): errno %d", errno);

    /* Any power-of-two alignment the address space allows: 4 MiB to 1 GiB. */
    for (size_t align = (size_t)4 << 20; align <= ((size_t)1 << 30); align *= 4) {
        for (int api = 0; api < 3; api++) {
            size_t size = api == 0 ? 100 : (size_t)5 << 20;
            void *b = NULL;
            if (api == 0) CHECK(posix_memalign(&b, align, size) == 0, "posix_memalign(%zu)", align);
            if (api == 1) b = aligned_alloc(align, size);
            if (api == 2) b = memalign(align, size);
            CHECK(b && ((uintptr_t)b % align) == 0, "alignment %zu (api %d): %p", align, api, b);
            if (!b) continue;
            CHECK(malloc_usable_size(b) >= size, "usable size of a %zu-aligned block", align);
            memset(b, 7, size);
            unsigned char *r = realloc(b, size * 3);
            CHECK(r && r[0] == 7 && r[size - 1] == 7, "realloc of a %zu-aligned block", align);
            free(r);
        }
    }

    /* A request the kernel would never back fails up front (heuristic overcommit). */
    FILE *oc = fopen("/proc/sys/vm/overcommit_memory", "r");
    int overcommit = -1;
    if (oc) {
        if (fscanf(oc, "%d", &overcommit) != 1) overcommit = -1;
        fclose(oc);
    }
    if (overcommit == 0) {
        errno = 0;
        void *tib = calloc((size_t)1 << 20, (size_t)1 << 20);
        CHECK(tib == NULL && errno == ENOMEM, "calloc of 1 TiB = %p, errno %d", tib, errno);
        free(tib);
    }
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
