/* Memory crosses the library boundary both ways, and a library that
 * allocates is dlopen'ed and dlclose'd many times. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *helper_strdup(const char *s);
void helper_free(void *p);

int main(int argc, char **argv) {
    for (int i = 0; i < 10000; i++) {
        char *s = helper_strdup("from the library");
        if (strcmp(s, "from the library") != 0) return 1;
        free(s); /* allocated in the library, freed here */
        char *mine = malloc(64);
        strcpy(mine, "from the program");
        helper_free(mine); /* allocated here, freed in the library */
    }
    for (int i = 0; i < 200; i++) {
        void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
        char *(*dup)(const char *) = (char *(*)(const char *))dlsym(lib, "helper_strdup");
        char *s = dup("x");
        free(s);
        if (dlclose(lib) != 0) return 1;
    }
    puts("across_libraries: ok");
    return 0;
}
