/* A power cut below the page cache, for tests/api/power_loss.rs.
 *
 * Loaded into the server with LD_PRELOAD, it watches the files of one directory whose names end in one of
 * POWERCUT_SUFFIXES (the database and its WAL). Before every write or truncation of such a file it appends to
 * an undo log (one per file, in POWERCUT_LOG_DIR) the bytes about to be overwritten or cut off and the file's
 * length; an fsync or fdatasync of the file empties its log, since what was written before it is now on
 * disk. When the test kills the server and plays the logs back (newest record first), every file holds what
 * it held at its last sync: the state a disk that had written nothing unsynced would come back with after a
 * power cut. The files themselves stay real, so reads, locks and mmaps see what they always see.
 *
 * Record order makes the log safe against the kill: the undo record is written before the write it undoes
 * (a kill in between only restores bytes that were never changed), and a sync empties the log only after the
 * real sync returned (no caller learns of a sync before that). One lock serialises writes and syncs of the
 * watched files, so a sync covers exactly the writes that came before it.
 *
 * Calls handled: open/open64/openat/openat64/creat (to learn which descriptors are watched), close, write,
 * pwrite/pwrite64, writev/pwritev (SQLite and Rust's std do not use them for these files, handled anyway),
 * ftruncate/ftruncate64, fallocate/posix_fallocate (and their 64-bit names), fsync, fdatasync, syncfs/sync
 * (sync everything). sync_file_range does not make data durable and is left alone. Not handled: rename,
 * unlink and directory syncs (the test never creates or removes the watched files while it runs), and
 * writes through a shared writable mmap (SQLite maps only the -shm file, which is not watched: it is rebuilt
 * from the WAL after a crash).
 *
 * A full disk, for the disk-full test: while the file named by POWERCUT_FULL_FLAG exists, a write to a watched
 * file that would make it longer fails with ENOSPC, as on a filesystem with no free block (rewriting bytes the
 * file already has still works there too).
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
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define MAX_FILES 16

struct watched {
    dev_t dev;
    ino_t ino;
    int log_fd; /* the undo log, opened O_APPEND */
};

static struct watched files[MAX_FILES];
static int file_count;
/* fd -> index into files + 1 (0: not watched) */
static unsigned char fd_file[MAX_FDS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_pread64)(int, void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static void (*real_sync)(void);
static int (*real_close)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);

static const char *watch_dir;
static const char *log_dir;
static const char *suffixes;
static const char *full_flag;

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pread64 = dlsym(RTLD_NEXT, "pread64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    real_sync = dlsym(RTLD_NEXT, "sync");
    real_close = dlsym(RTLD_NEXT, "close");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    watch_dir = getenv("POWERCUT_WATCH_DIR");
    log_dir = getenv("POWERCUT_LOG_DIR");
    suffixes = getenv("POWERCUT_SUFFIXES");
    full_flag = getenv("POWERCUT_FULL_FLAG");
}


static void die(const char *what) {
    char message[256];
    int n = snprintf(message, sizeof message, "powercut shim: %s: %s\n", what, strerror(errno));
    real_write(2, message, n > 0 ? (size_t)n : 0);
    abort();
}

/* Would writing up to `end` make the file longer while the disk is "full"? */
static int no_room(int fd, uint64_t end) {
    if (!full_flag || access(full_flag, F_OK) != 0) return 0;
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    return end > (uint64_t)st.st_size;
}

/* Does `path` name a file in the watched directory with a watched suffix? */
static int wanted(const char *path) {
    if (!watch_dir || !log_dir || !suffixes || !path) return 0;
    size_t dir_len = strlen(watch_dir);
    if (strncmp(path, watch_dir, dir_len) != 0 || path[dir_len] != '/') return 0;
    const char *name = path + dir_len + 1;
    if (strchr(name, '/')) return 0;
    size_t name_len = strlen(name);
    const char *s = suffixes;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len && name_len >= len && memcmp(name + name_len - len, s, len) == 0) return 1;
        if (!end) break;
        s = end + 1;
    }
    return 0;
}

static void watch(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FDS || !wanted(path)) return;
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    pthread_mutex_lock(&lock);
    int index = -1;
    for (int i = 0; i < file_count; i++)
        if (files[i].dev == st.st_dev && files[i].ino == st.st_ino) index = i;
    if (index < 0) {
        if (file_count == MAX_FILES) die("too many watched files");
        char log_path[4096];
        snprintf(log_path, sizeof log_path, "%s/%s.undo", log_dir, strrchr(path, '/') + 1);
        int log_fd = real_open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log_fd < 0) die("opening the undo log");
        index = file_count++;
        files[index] = (struct watched){st.st_dev, st.st_ino, log_fd};
    }
    fd_file[fd] = (unsigned char)(index + 1);
    pthread_mutex_unlock(&lock);
}

static struct watched *watched(int fd) {
    if (fd < 0 || fd >= MAX_FDS || !fd_file[fd]) return NULL;
    return &files[fd_file[fd] - 1];
}

static void log_all(int log_fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = real_write(log_fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("writing the undo log");
        p += n;
        len -= (size_t)n;
    }
}

/* Record what [offset, offset + len) holds now and the file's length, before a write or truncation changes
 * them. Called with the lock held. Record: u64 offset, u64 length of the file, u64 n, then n old bytes. */
static void remember(int fd, struct watched *w, uint64_t offset, uint64_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    uint64_t size = (uint64_t)st.st_size;
    uint64_t n = offset >= size ? 0 : (len < size - offset ? len : size - offset);
    char *old = malloc(n ? n : 1);
    if (!old) die("malloc");
    uint64_t got = 0;
    while (got < n) {
        ssize_t r = real_pread64(fd, old + got, n - got, (off64_t)(offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("reading the bytes a write replaces");
        got += (uint64_t)r;
    }
    uint64_t header[3] = {offset, size, n};
    log_all(w->log_fd, header, sizeof header);
    log_all(w->log_fd, old, n);
    free(old);
}

static void forget(struct watched *w) {
    if (real_ftruncate(w->log_fd, 0) != 0) die("emptying the undo log");
}

static int openat_watched(int fd, int dirfd, const char *path) {
    if (fd < 0) return fd;
    if (path && path[0] == '/') {
        watch(fd, path);
    } else if (dirfd == AT_FDCWD && path) {
        char cwd[4096], full[8192];
        if (getcwd(cwd, sizeof cwd)) {
            snprintf(full, sizeof full, "%s/%s", cwd, path);
            watch(fd, full);
        }
    }
    return fd;
}

#define MODE_ARG(flags)                                             \
    mode_t mode = 0;                                                \
    if ((flags) & (O_CREAT | __O_TMPFILE)) {                        \
        va_list ap;                                                 \
        va_start(ap, flags);                                        \
        mode = va_arg(ap, mode_t);                                  \
        va_end(ap);                                                 \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG(flags);
    return openat_watched(real_open(path, flags, mode), AT_FDCWD, path);
}

int open64(const char *path, int flags, ...) {
    MODE_ARG(flags);
    return openat_watched(real_open64(path, flags, mode), AT_FDCWD, path);
}

int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags);
    return openat_watched(real_openat(dirfd, path, flags, mode), dirfd, path);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags);
    return openat_watched(real_openat64(dirfd, path, flags, mode), dirfd, path);
}

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS && fd_file[fd]) {
        pthread_mutex_lock(&lock);
        fd_file[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

ssize_t pwrite64(int fd, const void *data, size_t len, off64_t offset) {
    struct watched *w = watched(fd);
    if (!w) return real_pwrite64(fd, data, len, offset);
    pthread_mutex_lock(&lock);
    if (no_room(fd, (uint64_t)offset + len)) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    remember(fd, w, (uint64_t)offset, len);
    ssize_t n = real_pwrite64(fd, data, len, offset);
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwrite(int fd, const void *data, size_t len, off_t offset) { return pwrite64(fd, data, len, offset); }

ssize_t write(int fd, const void *data, size_t len) {
    struct watched *w = watched(fd);
    if (!w) return real_write(fd, data, len);
    pthread_mutex_lock(&lock);
    off64_t offset = lseek64(fd, 0, SEEK_CUR);
    if (offset < 0) die("lseek");
    if (no_room(fd, (uint64_t)offset + len)) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    remember(fd, w, (uint64_t)offset, len);
    ssize_t n = real_write(fd, data, len);
    pthread_mutex_unlock(&lock);
    return n;
}

static size_t iov_len(const struct iovec *iov, int count) {
    size_t len = 0;
    for (int i = 0; i < count; i++) len += iov[i].iov_len;
    return len;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    struct watched *w = watched(fd);
    if (!w) return real_writev(fd, iov, count);
    pthread_mutex_lock(&lock);
    off64_t offset = lseek64(fd, 0, SEEK_CUR);
    if (offset < 0) die("lseek");
    if (no_room(fd, (uint64_t)offset + iov_len(iov, count))) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    remember(fd, w, (uint64_t)offset, iov_len(iov, count));
    ssize_t n = real_writev(fd, iov, count);
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) {
    struct watched *w = watched(fd);
    if (!w) return real_pwritev(fd, iov, count, offset);
    pthread_mutex_lock(&lock);
    if (no_room(fd, (uint64_t)offset + iov_len(iov, count))) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    remember(fd, w, (uint64_t)offset, iov_len(iov, count));
    ssize_t n = real_pwritev(fd, iov, count, offset);
    pthread_mutex_unlock(&lock);
    return n;
}

int ftruncate64(int fd, off64_t length) {
    struct watched *w = watched(fd);
    if (!w) return real_ftruncate64(fd, length);
    pthread_mutex_lock(&lock);
    /* Only what is cut off needs keeping; a file that grows just has its old length recorded. */
    remember(fd, w, (uint64_t)length, UINT64_MAX / 2);
    int r = real_ftruncate64(fd, length);
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate(int fd, off_t length) { return ftruncate64(fd, length); }

static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);

int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
    if (!real_fallocate64) real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
    struct watched *w = watched(fd);
    if (!w) return real_fallocate64(fd, mode, offset, len);
    pthread_mutex_lock(&lock);
    if (no_room(fd, (uint64_t)offset + (uint64_t)len)) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    remember(fd, w, (uint64_t)offset, (uint64_t)len);
    int r = real_fallocate64(fd, mode, offset, len);
    pthread_mutex_unlock(&lock);
    return r;
}

int fallocate(int fd, int mode, off_t offset, off_t len) { return fallocate64(fd, mode, offset, len); }

int posix_fallocate64(int fd, off64_t offset, off64_t len) {
    if (!real_posix_fallocate64) real_posix_fallocate64 = dlsym(RTLD_NEXT, "posix_fallocate64");
    struct watched *w = watched(fd);
    if (!w) return real_posix_fallocate64(fd, offset, len);
    pthread_mutex_lock(&lock);
    if (no_room(fd, (uint64_t)offset + (uint64_t)len)) {
        pthread_mutex_unlock(&lock);
        return ENOSPC; /* posix_fallocate returns the error instead of setting errno */
    }
    remember(fd, w, (uint64_t)offset, (uint64_t)len);
    int r = real_posix_fallocate64(fd, offset, len);
    pthread_mutex_unlock(&lock);
    return r;
}

int posix_fallocate(int fd, off_t offset, off_t len) { return posix_fallocate64(fd, offset, len); }

static int synced(int fd, int (*real)(int)) {
    struct watched *w = watched(fd);
    if (!w) return real(fd);
    pthread_mutex_lock(&lock);
    int r = real(fd);
    if (r == 0) forget(w);
    pthread_mutex_unlock(&lock);
    return r;
}

int fsync(int fd) { return synced(fd, real_fsync); }

int fdatasync(int fd) { return synced(fd, real_fdatasync); }

static void sync_all(void) {
    for (int i = 0; i < file_count; i++) forget(&files[i]);
}

int syncfs(int fd) {
    pthread_mutex_lock(&lock);
    int r = real_syncfs(fd);
    if (r == 0) sync_all();
    pthread_mutex_unlock(&lock);
    return r;
}

void sync(void) {
    pthread_mutex_lock(&lock);
    real_sync();
    sync_all();
    pthread_mutex_unlock(&lock);
}
