/* Temporary files removed when the test exits, as glibc's
   <support/temp_file.h>.  */
#ifndef SUPPORT_TEMP_FILE_H
#define SUPPORT_TEMP_FILE_H

/* Creates a file named after BASE in $TMPDIR (or /tmp), registered for
   removal; returns its descriptor (-1 on error) and, if FILENAME is not
   NULL, its name in a block the caller frees.  */
int create_temp_file (const char *base, char **filename);
void add_temp_file (const char *name);

#endif
