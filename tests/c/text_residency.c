/* How much of the preloaded library's code an ordinary program has resident.
 *
 * Phase 1 does what most programs do: small blocks of many sizes allocated,
 * zeroed, aligned and freed, some freed by another thread. Phase 2 calls
 * functions of the library's cold part (malloc_trim, mallinfo2, a huge
 * block). After each phase it prints the resident KiB of the library's
 * executable mapping(s), as /proc/self/smaps counts them:
 *
 *   text_residency: plain N
 *   text_residency: unwind tables resident 0
 *   text_residency: cold M
 *   text_residency: ok
 *
 * The second line says whether the first page of the library's unwind
 * tables (PT_GNU_EH_FRAME) is mapped: it should not be, nothing unwound.
 *
 * The library file is read whole first, so every page of it is in the page
 * cache and the kernel's fault-around maps whatever it may: the figures are
 * then the most the layout lets in (tests/tests/preload.rs compares them
 * with the library's hot part). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BLOCKS = 4096 };
static void *blocks[BLOCKS];

static void *free_all(void *arg) {
    (void)arg;
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    return NULL;
}

/* The resident KiB of every executable mapping of `path`. */
static long text_rss_kib(const char *path) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) { perror("smaps"); exit(1); }
    char line[4096];
    int ours = 0;
    long total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
            char *file = strchr(line, '/');
            if (file) file[strcspn(file, "\n")] = 0;
            ours = perms[2] == 'x' && file && !strcmp(file, path);
        } else if (ours && !strncmp(line, "Rss:", 4)) {
            total += atol(line + 4);
        }
    }
    fclose(f);
    return total;
}

/* The address of the library's unwind tables, by its program headers. */
static uintptr_t eh_frame_hdr;
static int find_eh_frame_hdr(struct dl_phdr_info *info, size_t size, void *path) {
    (void)size;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "librseq_alloc")) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME) eh_frame_hdr = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
    (void)path;
    return 1;
}

/* Whether the page at `address` is mapped, by /proc/self/pagemap's bit 63. */
static int page_present(uintptr_t address) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t entry = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (fd < 0 || pread(fd, &entry, sizeof entry, (off_t)(address / page * sizeof entry)) != sizeof entry) {
        perror("pagemap");
        exit(1);
    }
    close(fd);
    return (int)(entry >> 63);
}

int main(void) {
    Dl_info info;
    if (!dladdr((void *)malloc, &info) || !info.dli_fname || !strstr(info.dli_fname, "librseq_alloc")) {
        printf("text_residency: malloc is not librseq_alloc's\n");
        return 1;
    }
    char path[4096];
    if (!realpath(info.dli_fname, path)) { perror("realpath"); return 1; }
    int fd = open(path, O_RDONLY);
    char buf[65536];
    while (fd >= 0 && read(fd, buf, sizeof buf) > 0) {}
    if (fd >= 0) close(fd);

    /* Phase 1: an ordinary program. */
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < BLOCKS; i++) {
            size_t size = 8 + (size_t)(i % 512) * 8;
            switch (i % 4) {
            case 0: blocks[i] = malloc(size); break;
            case 1: blocks[i] = calloc(1, size); break;
            case 2: if (posix_memalign(&blocks[i], 64, size)) blocks[i] = NULL; break;
            case 3: blocks[i] = aligned_alloc(32, size); break;
            }
            if (!blocks[i]) { printf("text_residency: allocation failed\n"); return 1; }
            memset(blocks[i], i, size);
        }
        if (round % 2) {
            pthread_t t;
            pthread_create(&t, NULL, free_all, NULL);
            pthread_join(t, NULL);
        } else {
            free_all(NULL);
        }
    }
    printf("text_residency: plain %ld\n", text_rss_kib(path));
    dl_iterate_phdr(find_eh_frame_hdr, NULL);
    if (!eh_frame_hdr) { printf("text_residency: no PT_GNU_EH_FRAME\n"); return 1; }
    printf("text_residency: unwind tables resident %d\n", page_present(eh_frame_hdr));

    /* Phase 2: the cold part. */
    void *huge = malloc(64 << 20);
    free(huge);
    struct mallinfo2 mi = mallinfo2();
    malloc_trim(0);
    printf("text_residency: cold %ld\n", text_rss_kib(path));
    printf("text_residency: ok (arena %zu bytes)\n", mi.arena);
    return 0;
}
