/* Local control of compiler warnings, as glibc's <libc-diag.h>.  */
#ifndef LIBC_DIAG_H
#define LIBC_DIAG_H

#define DIAG_STR_(x) #x
#define DIAG_PRAGMA_(x) _Pragma (DIAG_STR_ (x))
#define DIAG_PUSH_NEEDS_COMMENT DIAG_PRAGMA_ (GCC diagnostic push)
#define DIAG_POP_NEEDS_COMMENT DIAG_PRAGMA_ (GCC diagnostic pop)
#define DIAG_IGNORE_NEEDS_COMMENT(version, option) DIAG_PRAGMA_ (GCC diagnostic ignored option)
#define DIAG_IGNORE_Os_NEEDS_COMMENT(version, option) DIAG_IGNORE_NEEDS_COMMENT (version, option)

#endif
