/* Test only (tests/test_native_engine.py), LD_PRELOAD'ed into a C engine writer: with ORTSEAL_TEST_PAUSED
 * set, the first fsync of a regular file (the temp file, written and locked, not yet renamed over the
 * engine) creates the file that variable names and then waits until the process is killed. So a test can
 * run a cleaner against a live writer, then SIGKILL it and find exactly what a killed writer leaves. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync(int fd) {
    const char *marker = getenv("ORTSEAL_TEST_PAUSED");
    struct stat st;
    if (marker && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        int m = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (m >= 0) close(m);
        for (;;) pause();
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real ? real(fd) : -1;
}
