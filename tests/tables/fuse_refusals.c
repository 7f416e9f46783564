/* LD_PRELOAD shim: under the folder named by SPARKSHIP_FAKE_FUSE, hard links and no-replace renames fail with
 * ENOSYS, as on a FUSE mount such as a Unity Catalog volume ("Function not implemented", os error 38).
 * Everything else goes to the C library. Used by tests/test_fuse_refusals.py. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

static int under_mount(const char *path) {
    const char *mount = getenv("SPARKSHIP_FAKE_FUSE");
    char cwd[4096];
    if (!mount || !*mount || !path) return 0;
    if (path[0] != '/') {
        if (!getcwd(cwd, sizeof cwd)) return 0;
        return strncmp(cwd, mount, strlen(mount)) == 0;
    }
    return strncmp(path, mount, strlen(mount)) == 0;
}

static int refuse(void) {
    errno = ENOSYS;
    return -1;
}

int link(const char *oldpath, const char *newpath) {
    static int (*real)(const char *, const char *);
    if (under_mount(oldpath) || under_mount(newpath)) return refuse();
    if (!real) real = dlsym(RTLD_NEXT, "link");
    return real(oldpath, newpath);
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags) {
    static int (*real)(int, const char *, int, const char *, int);
    if (under_mount(oldpath) || under_mount(newpath)) return refuse();
    if (!real) real = dlsym(RTLD_NEXT, "linkat");
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int);
    if ((flags & RENAME_NOREPLACE) && (under_mount(oldpath) || under_mount(newpath))) return refuse();
    if (!real) real = dlsym(RTLD_NEXT, "renameat2");
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

long syscall(long number, ...) {
    static long (*real)(long, ...);
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_link && (under_mount((const char *)a[0]) || under_mount((const char *)a[1]))) return refuse();
    if (number == SYS_linkat && (under_mount((const char *)a[1]) || under_mount((const char *)a[3]))) return refuse();
    if (number == SYS_renameat2 && (a[4] & RENAME_NOREPLACE) &&
        (under_mount((const char *)a[1]) || under_mount((const char *)a[3]))) return refuse();
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
