/* Signal calls that end the test on failure, as glibc's <support/xsignal.h>.  */
#ifndef SUPPORT_XSIGNAL_H
#define SUPPORT_XSIGNAL_H

#include <signal.h>

sighandler_t xsignal (int sig, sighandler_t handler);

#endif
