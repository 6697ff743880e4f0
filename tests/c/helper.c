/* A shared library that allocates and frees on behalf of its callers. */
#include <stdlib.h>
#include <string.h>

char *helper_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    memcpy(copy, s, n);
    return copy;
}

void helper_free(void *p) { free(p); }

/* Allocates at load time and frees at unload, like many real libraries. */
static char *loaded;
__attribute__((constructor)) static void on_load(void) { loaded = helper_strdup("loaded"); }
__attribute__((destructor)) static void on_unload(void) { free(loaded); }
