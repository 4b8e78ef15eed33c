/*
 * powerloss.so: an LD_PRELOAD shim that gives a SIGKILL of redis-server the
 * effect of a power loss on its append-only file.
 *
 * A process killed by SIGKILL loses nothing it wrote: the kernel's page
 * cache still has it. A machine that loses power loses whatever was not yet
 * on the disk, which is, in the worst case, everything written since the
 * last fsync. This shim keeps every byte written to an AOF file in process
 * memory until the file is fsynced (fsync or fdatasync: Redis calls
 * fdatasync on Linux, from a background thread with `appendfsync everysec`,
 * from the main thread with `always`); the fsync then writes the bytes for
 * real and syncs them. So killing the process loses exactly what was not
 * fsynced, which is what a machine crash loses in the worst case.
 *
 * Tracked files: those opened for writing (open, open64, openat, openat64,
 * creat, creat64) whose name contains ".aof" (the AOF parts and the
 * manifest of Redis 7's multi-part AOF). Writes through stdio (fopen and
 * fwrite, as the AOF rewrite and RDB code use) do not go through these
 * symbols and pass unchanged; those paths fsync before they rename anyway.
 * Intercepted on tracked descriptors: write, pwrite (and pwrite64), writev,
 * fsync, fdatasync, close. Bytes still held when a tracked descriptor is
 * closed are written (to the page cache, as a close does), not synced.
 *
 * Limits: a write counts as durable once its fsync has written it, a few
 * microseconds before the real fdatasync returns; offsets given to pwrite
 * are honoured by holding the write as (offset, bytes) pairs in order.
 * Every tracked open (and a close with bytes still held) is logged to
 * stderr, the server's log, as "powerloss: ...", so a test can see the shim
 * at work.
 *
 * Build: cc -shared -fPIC -O2 -o powerloss.so powerloss.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536

/* One held write: append (offset < 0) or at an offset (pwrite). */
struct chunk {
    off_t offset;
    size_t len;
    struct chunk *next;
    char data[];
};

struct held {
    struct chunk *head, *tail;
    size_t bytes;
};

/* Read without the lock on every write (most descriptors are not tracked:
 * a forked child must never wait on a lock a parent's thread held). */
static unsigned char tracked[MAX_FD];
static struct held held[MAX_FD];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_creat64)(const char *, mode_t);

static void *next_symbol(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        static const char msg[] = "powerloss: a libc symbol is missing\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        abort();
    }
    return f;
}

#define RESOLVE(name)                                   \
    do {                                                \
        if (!real_##name)                               \
            real_##name = next_symbol(#name);           \
    } while (0)

__attribute__((constructor)) static void init(void) {
    RESOLVE(write);
    RESOLVE(pwrite);
    RESOLVE(fsync);
    RESOLVE(fdatasync);
    RESOLVE(close);
    RESOLVE(open);
    RESOLVE(open64);
    RESOLVE(openat);
    RESOLVE(openat64);
    RESOLVE(creat);
    RESOLVE(creat64);
}

static int is_tracked(int fd) {
    return fd >= 0 && fd < MAX_FD && __atomic_load_n(&tracked[fd], __ATOMIC_ACQUIRE);
}

static void say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) {
        RESOLVE(write);
        real_write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
}

static void drop_held(int fd) {
    struct chunk *c = held[fd].head;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    held[fd].head = held[fd].tail = NULL;
    held[fd].bytes = 0;
}

static void track(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= MAX_FD || !path || !strstr(path, ".aof"))
        return;
    if ((flags & O_ACCMODE) == O_RDONLY)
        return;
    pthread_mutex_lock(&lock);
    drop_held(fd);
    __atomic_store_n(&tracked[fd], 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
    say("powerloss: holding writes to %s (fd %d) until fsync\n", path, fd);
}

/* Appends a copy of buf to fd's held writes; caller holds the lock. */
static int hold(int fd, const void *buf, size_t len, off_t offset) {
    struct chunk *c = malloc(sizeof *c + len);
    if (!c)
        return -1;
    c->offset = offset;
    c->len = len;
    c->next = NULL;
    memcpy(c->data, buf, len);
    if (held[fd].tail)
        held[fd].tail->next = c;
    else
        held[fd].head = c;
    held[fd].tail = c;
    held[fd].bytes += len;
    return 0;
}

/* Writes fd's held bytes for real, in order; caller holds the lock. */
static int flush_held(int fd) {
    while (held[fd].head) {
        struct chunk *c = held[fd].head;
        size_t done = 0;
        while (done < c->len) {
            ssize_t n = c->offset < 0
                            ? real_write(fd, c->data + done, c->len - done)
                            : real_pwrite(fd, c->data + done, c->len - done,
                                          c->offset + (off_t)done);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                /* Keep what is left for the next fsync. */
                memmove(c->data, c->data + done, c->len - done);
                c->len -= done;
                if (c->offset >= 0)
                    c->offset += (off_t)done;
                held[fd].bytes -= done;
                return -1;
            }
            done += (size_t)n;
        }
        held[fd].bytes -= c->len;
        held[fd].head = c->next;
        if (!held[fd].head)
            held[fd].tail = NULL;
        free(c);
    }
    return 0;
}

static ssize_t hold_or_fail(int fd, const void *buf, size_t len, off_t offset) {
    pthread_mutex_lock(&lock);
    int r = tracked[fd] ? hold(fd, buf, len, offset) : 1;
    pthread_mutex_unlock(&lock);
    if (r < 0) {
        errno = ENOSPC;
        return -1;
    }
    if (r > 0) /* closed meanwhile: write through */
        return offset < 0 ? real_write(fd, buf, len) : real_pwrite(fd, buf, len, offset);
    return (ssize_t)len;
}

ssize_t write(int fd, const void *buf, size_t len) {
    RESOLVE(write);
    if (!is_tracked(fd))
        return real_write(fd, buf, len);
    return hold_or_fail(fd, buf, len, -1);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset) {
    RESOLVE(pwrite);
    if (!is_tracked(fd))
        return real_pwrite(fd, buf, len, offset);
    return hold_or_fail(fd, buf, len, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t offset) {
    return pwrite(fd, buf, len, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    if (!is_tracked(fd)) {
        static ssize_t (*real_writev)(int, const struct iovec *, int);
        if (!real_writev)
            real_writev = next_symbol("writev");
        return real_writev(fd, iov, count);
    }
    size_t total = 0;
    for (int i = 0; i < count; i++)
        total += iov[i].iov_len;
    char *flat = malloc(total ? total : 1);
    if (!flat) {
        errno = ENOMEM;
        return -1;
    }
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        memcpy(flat + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    ssize_t r = hold_or_fail(fd, flat, total, -1);
    free(flat);
    return r;
}

static int sync_with(int fd, int (*real)(int)) {
    if (is_tracked(fd)) {
        pthread_mutex_lock(&lock);
        int r = tracked[fd] ? flush_held(fd) : 0;
        pthread_mutex_unlock(&lock);
        if (r < 0)
            return -1;
    }
    return real(fd);
}

int fsync(int fd) {
    RESOLVE(fsync);
    return sync_with(fd, real_fsync);
}

int fdatasync(int fd) {
    RESOLVE(fdatasync);
    return sync_with(fd, real_fdatasync);
}

int close(int fd) {
    RESOLVE(close);
    if (!is_tracked(fd))
        return real_close(fd);
    pthread_mutex_lock(&lock);
    if (held[fd].bytes)
        say("powerloss: fd %d closed with %zu bytes not fsynced (written, not synced)\n", fd,
            held[fd].bytes);
    flush_held(fd);
    drop_held(fd);
    __atomic_store_n(&tracked[fd], 0, __ATOMIC_RELEASE);
    int r = real_close(fd);
    pthread_mutex_unlock(&lock);
    return r;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    RESOLVE(open);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_open(path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    RESOLVE(open64);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_open64(path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int openat(int dir, const char *path, int flags, ...) {
    RESOLVE(openat);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_openat(dir, path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int openat64(int dir, const char *path, int flags, ...) {
    RESOLVE(openat64);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_openat64(dir, path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int creat(const char *path, mode_t mode) {
    RESOLVE(creat);
    int fd = real_creat(path, mode);
    track(fd, path, O_WRONLY);
    return fd;
}

int creat64(const char *path, mode_t mode) {
    RESOLVE(creat64);
    int fd = real_creat64(path, mode);
    track(fd, path, O_WRONLY);
    return fd;
}
