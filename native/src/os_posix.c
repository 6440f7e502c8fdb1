/* The OS layer for POSIX systems (os.h): O_NOFOLLOW | O_NONBLOCK opens, fstat checks, openat in the
 * model's folder, pread. */
#define _GNU_SOURCE
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct os_dir { int fd; };
struct os_file { int fd; };

void os_buffer_free(os_buffer *b) {
    if (b->data) ortseal_free(b->data, b->len);
    b->data = NULL;
    b->len = 0;
}

static ortseal_code open_failed(const char *what, ortseal_error *err) {
    if (errno == ELOOP) return FAIL(err, ORTSEAL_E_FORMAT, "%s is a symbolic link; refusing to follow it", what);
    if (errno == ENOENT) return FAIL(err, ORTSEAL_E_FORMAT, "%s does not exist", what);
    return FAIL(err, ORTSEAL_E_IO, "cannot open %s: %s", what, strerror(errno));
}

/* O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it. */
static ortseal_code check_regular(int fd, const char *what, uint64_t *size, ortseal_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return FAIL(err, ORTSEAL_E_IO, "cannot stat %s: %s", what, strerror(errno));
    if (!S_ISREG(st.st_mode)) return FAIL(err, ORTSEAL_E_FORMAT, "%s is not a regular file", what);
    *size = (uint64_t)st.st_size;
    return ORTSEAL_OK;
}

static ortseal_code read_all(int fd, const char *what, uint64_t size, uint64_t max, os_buffer *out, ortseal_error *err) {
    if (size > max || size > SIZE_MAX - 1) return FAIL(err, ORTSEAL_E_FORMAT, "%s is too large", what);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory reading %s", what);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got > (1u << 30) ? (1u << 30) : size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { ortseal_free(buf, got); return FAIL(err, ORTSEAL_E_IO, "%s changed size while it was read", what); }
        got += (size_t)n;
    }
    out->data = buf;
    out->len = got;
    return ORTSEAL_OK;
}

ortseal_code os_read_regular(const char *path, uint64_t max, os_buffer *out, ortseal_error *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return open_failed(path, err);
    uint64_t size = 0;
    ortseal_code code = check_regular(fd, path, &size, err);
    if (!code) code = read_all(fd, path, size, max, out, err);
    close(fd);
    return code;
}

ortseal_code os_open_dir(const char *path, os_dir **dir, ortseal_error *err) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return FAIL(err, ORTSEAL_E_IO, "cannot open folder %s: %s", path, strerror(errno));
    if (!(*dir = malloc(sizeof **dir))) { close(fd); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    (*dir)->fd = fd;
    return ORTSEAL_OK;
}

ortseal_code os_read_model(const char *path, os_buffer *out, os_dir **dir, ortseal_error *err) {
    *dir = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return open_failed(path, err);
    uint64_t size = 0;
    ortseal_code code = check_regular(fd, path, &size, err);
    if (!code) code = read_all(fd, path, size, UINT64_MAX, out, err);
    close(fd);
    if (code) return code;
    /* The data files are looked up in the folder the model path names, held open from here on. */
    char *copy = strdup(path);
    code = copy ? os_open_dir(dirname(copy), dir, err) : FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    free(copy);
    if (code) os_buffer_free(out);
    return code;
}

void os_dir_close(os_dir *dir) {
    if (dir) { close(dir->fd); free(dir); }
}

ortseal_code os_open_in(os_dir *dir, const char *name, os_file **f, uint64_t *size, ortseal_error *err) {
    *f = NULL;
    if (!dir) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s: the model was given as bytes with no folder", name);
    if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return FAIL(err, ORTSEAL_E_FORMAT, "data file %s is not inside the model's folder", name);
    int fd = openat(dir->fd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        char what[300];
        snprintf(what, sizeof what, "data file %s", name);
        if (errno == ENOENT) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s is missing (a sealed model's data file keeps the name it was sealed with)", name);
        return open_failed(what, err);
    }
    ortseal_code code = check_regular(fd, name, size, err);
    if (!code && !(*f = malloc(sizeof **f))) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    if (code) { close(fd); return code; }
    (*f)->fd = fd;
    return ORTSEAL_OK;
}

ortseal_code os_pread(os_file *f, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(f->fd, buf + got, len - got > (1u << 30) ? (1u << 30) : len - got, (off_t)(offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return FAIL(err, ORTSEAL_E_TAMPERED, "a data file is shorter than the manifest says");
        got += (size_t)n;
    }
    return ORTSEAL_OK;
}

void os_close(os_file *f) {
    if (f) { close(f->fd); free(f); }
}

/* ---- the engine cache ---------------------------------------------------------------------------- */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <dirent.h>
#include <sys/file.h>
#include <time.h>

ortseal_code os_read_engine(const char *path, bool header_only, os_buffer *out, uint64_t *file_size, ortseal_error *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        if (errno == ELOOP) return FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is a symbolic link, not a regular file: refused", path);
        if (errno == ENXIO) return FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is a socket or device with nothing behind it: refused", path);
        return FAIL(err, ORTSEAL_E_IO, "cannot open engine file %s: %s", path, strerror(errno));
    }
    struct stat st;
    ortseal_code code = ORTSEAL_OK;
    if (fstat(fd, &st) != 0) code = FAIL(err, ORTSEAL_E_IO, "cannot stat engine file %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is not a regular file: refused", path);
    /* Ciphertext has no holes: far fewer blocks than bytes is a sparse file declaring what it does not hold. */
    else if (st.st_size > (1 << 20) && (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size / 2)
        code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is sparse: not a sealed engine", path);
    if (!code) {
        uint64_t want = (uint64_t)st.st_size;
        if (header_only && want > ORTSEAL_MAX_HEADER_SIZE) want = ORTSEAL_MAX_HEADER_SIZE;
        *file_size = (uint64_t)st.st_size;
        code = read_all(fd, path, want, UINT64_MAX, out, err);
        if (code == ORTSEAL_E_IO) code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s changed length while it was read: refused", path);
    }
    close(fd);
    return code;
}

bool os_canonical_dir(const char *dir, char *out, size_t cap) {
    char buf[PATH_MAX];
    struct stat st;
    /* a folder, as on Windows (os_win.c): a cache "folder" that is a file must not register */
    if (!realpath(dir, buf) || strlen(buf) >= cap || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    strcpy(out, buf);
    return true;
}

bool os_parent_dir(const char *path, char *out, size_t cap) {
    char *copy = strdup(path);
    bool ok = copy && os_canonical_dir(dirname(copy), out, cap);
    free(copy);
    return ok;
}

const char *os_base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The temp-file scheme of ortseal/_atomic.py, so a C and a Python process sharing one cache folder never
 * remove each other's writes: made as ".<name>.<random>.new" (O_EXCL, never an existing file), flock-ed,
 * then renamed to ".tmp", the only name stale cleanup removes while young; everything relative to the
 * folder's descriptor. The lock dies with this process, so a cleaner tells a killed writer's file from a
 * live one's. */
ortseal_code os_write_atomic(const char *path, const uint8_t *data, size_t len, ortseal_error *err) {
    char dir[PATH_MAX], hex[17], made[NAME_MAX + 1], tmp[NAME_MAX + 1];
    const char *name = os_base_name(path);
    uint8_t nonce[8];
    if (!os_parent_dir(path, dir, sizeof dir)) return FAIL(err, ORTSEAL_E_IO, "cannot write %s: its folder does not exist", path);
    if (!random_bytes(nonce, sizeof nonce)) return FAIL(err, ORTSEAL_E_RUNTIME, "cannot write %s: no random bytes", path);
    hex_encode(nonce, sizeof nonce, hex);
    if ((size_t)snprintf(made, sizeof made, ".%s.%s.new", name, hex) >= sizeof made)
        return FAIL(err, ORTSEAL_E_IO, "cannot write %s: the name is too long for a temp file beside it", path);
    snprintf(tmp, sizeof tmp, ".%s.%s.tmp", name, hex);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return FAIL(err, ORTSEAL_E_IO, "cannot write %s: %s", path, strerror(errno));
    int fd = openat(dfd, made, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        int saved = errno;
        close(dfd);
        return FAIL(err, ORTSEAL_E_IO, "cannot write %s: %s", path, strerror(saved));
    }
    const char *at = made; /* the name the file has now, removed on failure */
    bool ok = flock(fd, LOCK_EX) == 0 && renameat(dfd, made, dfd, tmp) == 0;
    if (ok) at = tmp;
    ok = ok && fchmod(fd, 0600) == 0;
    for (size_t done = 0; ok && done < len;) {
        ssize_t n = write(fd, data + done, len - done > (1u << 30) ? (1u << 30) : len - done);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) done += (size_t)n;
    }
    ok = ok && fsync(fd) == 0 && renameat(dfd, tmp, dfd, name) == 0;
    int saved = errno;
    if (!ok) unlinkat(dfd, at, 0);
    close(fd); /* after the unlink: a cleaner never finds our file unlocked */
    if (ok) fsync(dfd);
    close(dfd);
    if (!ok) return FAIL(err, ORTSEAL_E_IO, "cannot write %s: %s", path, strerror(saved));
    return ORTSEAL_OK;
}

/* One entry a cleaner found under a temp name: removed if this user owns it and no writer holds it. */
static bool remove_if_stale(int dfd, const char *name, os_temp_kind kind, time_t young) {
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != geteuid()) return false;
    if (kind == OS_TEMP_NEW && st.st_mtime >= young) return false; /* may be a writer about to lock it */
    if (S_ISDIR(st.st_mode)) return false;
    if (!S_ISREG(st.st_mode)) return unlinkat(dfd, name, 0) == 0; /* a link, FIFO, socket: removed as itself */
    int fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return false;
    struct stat held, now;
    bool removed = false;
    /* The name is removed while we hold the lock, and only if it still names the file we locked. */
    if (fstat(fd, &held) == 0 && held.st_dev == st.st_dev && held.st_ino == st.st_ino && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == held.st_dev && now.st_ino == held.st_ino)
        removed = unlinkat(dfd, name, 0) == 0;
    close(fd);
    return removed;
}

size_t os_remove_stale_temps(const char *dir, os_temp_kind (*kind_of)(const char *name),
                             void (*removed)(void *ctx, const char *name), void *ctx) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    int list_fd = dup(dfd);
    DIR *d = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (!d) {
        if (list_fd >= 0) close(list_fd);
        close(dfd);
        return 0;
    }
    time_t young = time(NULL) - OS_NEW_STALE_SECONDS;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        os_temp_kind kind = kind_of(e->d_name);
        if (kind != OS_NOT_TEMP && remove_if_stale(dfd, e->d_name, kind, young)) {
            n++;
            if (removed) removed(ctx, e->d_name);
        }
    }
    closedir(d);
    close(dfd);
    return n;
}

void *os_library_symbol(const char *path, const char *symbol, ortseal_error *err) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL); /* kept loaded: ORT loads the same instance by path */
    void *sym = lib ? dlsym(lib, symbol) : NULL;
    if (!sym) FAIL(err, ORTSEAL_E_IO, "cannot load %s from the shim %s: %s", symbol, path, dlerror());
    return sym;
}

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
void os_registry_lock(void) { pthread_mutex_lock(&registry_mutex); }
void os_registry_unlock(void) { pthread_mutex_unlock(&registry_mutex); }

size_t os_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (size_t)n;
}

typedef struct parallel_job {
    void (*fn)(void *, size_t);
    void *ctx;
    size_t n, next;
    pthread_mutex_t mu;
} parallel_job;

static void *parallel_worker(void *arg) {
    parallel_job *job = arg;
    for (;;) {
        pthread_mutex_lock(&job->mu);
        size_t i = job->next++;
        pthread_mutex_unlock(&job->mu);
        if (i >= job->n) return NULL;
        job->fn(job->ctx, i);
    }
}

void os_parallel(size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
    parallel_job job = {fn, ctx, n, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t threads[64];
    size_t extra = os_cores() - 1, started = 0;
    if (extra > n) extra = n ? n - 1 : 0;
    for (; started < extra; started++)
        if (pthread_create(&threads[started], NULL, parallel_worker, &job) != 0) break; /* fewer threads: still correct */
    parallel_worker(&job);
    for (size_t i = 0; i < started; i++) pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&job.mu);
}
