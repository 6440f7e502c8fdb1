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

/* ---- the private RAM folder (os.h; ortseal/model/ramdir.py is the same code in Python) ------------- */
#include <dirent.h>
#include <sys/statvfs.h>
#include <time.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#define RUNTIME_DIR_ENV "ORTSEAL_RUNTIME_DIR"
#define SHARED_RAM_DIR "/dev/shm"
#define USER_BASE_PREFIX "ortseal-"            /* /dev/shm/ortseal-<uid> */
#define FOLDER_PREFIX "ortseal-open-"
#define NEW_PREFIX ".ortseal-open-new-"         /* made, not yet locked: stale cleanup waits STALE_NEW_SECONDS */
#define STALE_NEW_SECONDS 60
#define TMPFS_MAGIC 0x01021994L                 /* linux/magic.h */
#define RAMFS_MAGIC 0x858458F6L
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)

/* "This user" is the effective uid throughout: it owns what this process creates, and a host whose real
 * uid differs (a set-user-ID program, a service that seteuid()s) must not trust a base of the real uid's,
 * who could swap the opening folder out of it while ORT reads it (tests/test_attack_native_ramdir.py). */

struct os_ram {
    int base_fd, fd;           /* the base and the folder (flock-ed while it exists), both O_NOFOLLOW */
    char name[64];             /* the folder's name in the base */
    char path[PATH_MAX + 64];
    pthread_mutex_t mu;
    char **names;              /* files made, for the parallel unlink */
    size_t n_names;
};

static bool ram_backed(int fd) {
#ifdef __linux__
    struct statfs s;
    if (fstatfs(fd, &s) != 0) return false;
    unsigned long type = (unsigned long)s.f_type & 0xFFFFFFFFul;
    return type == (unsigned long)TMPFS_MAGIC || type == (unsigned long)RAMFS_MAGIC;
#else
    (void)fd;
    return false; /* no tmpfs magic to check: models open in memory */
#endif
}

/* A folder above a base: no other user may rename or replace what is in it. */
static ortseal_code check_above(int fd, const char *shown, ortseal_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return FAIL(err, ORTSEAL_E_IO, "cannot stat %s: %s", shown, strerror(errno));
    if (st.st_uid != 0 && st.st_uid != geteuid())
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is owned by uid %u, who could replace the folders in it", shown, (unsigned)st.st_uid);
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is writable by other users (mode %04o, no sticky bit), who could replace "
                    "the folders in it", shown, (unsigned)(st.st_mode & 07777));
    return ORTSEAL_OK;
}

static ortseal_code check_base(int fd, const char *shown, ortseal_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return FAIL(err, ORTSEAL_E_IO, "cannot stat %s: %s", shown, strerror(errno));
    if (!ram_backed(fd))
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is not on tmpfs or ramfs: plaintext weights would reach a persistent disk", shown);
    if (st.st_uid != geteuid())
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is owned by uid %u, not by this user (uid %u)", shown, (unsigned)st.st_uid, (unsigned)geteuid());
    if ((st.st_mode & 07777) != 0700)
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s has mode %04o; it must be 0700 (chmod 700 %s)", shown, (unsigned)(st.st_mode & 07777), shown);
    return ORTSEAL_OK;
}

/* Open the folder name in parent without following a link; ENOENT is left in errno for the caller. */
static ortseal_code open_child(int parent, const char *name, const char *shown, int *out, ortseal_error *err) {
    int fd = openat(parent, name, DIR_FLAGS);
    if (fd >= 0) { *out = fd; return ORTSEAL_OK; }
    if (errno == ENOENT) return FAIL(err, ORTSEAL_E_IO, "%s does not exist", shown);
    if (errno != ELOOP && errno != ENOTDIR) return FAIL(err, ORTSEAL_E_IO, "cannot open %s: %s", shown, strerror(errno));
    struct stat st; /* O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a link too: look (for the message only) */
    mode_t mode = fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_mode : 0;
    return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is %s", shown,
                S_ISLNK(mode) ? "a symbolic link" : S_ISFIFO(mode) ? "a FIFO" : "not a folder");
}

/* Open the base folder path after checking it and every folder above it; with create, make it (0700) if
 * missing. *real gets its path with the links above it resolved. */
static ortseal_code open_base(const char *path, bool create, int *out, char real[PATH_MAX], ortseal_error *err) {
    char copy[PATH_MAX], above[PATH_MAX];
    size_t n = strlen(path);
    if (path[0] != '/') return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is not an absolute path", path);
    if (n >= sizeof copy) return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s is too long", path);
    memcpy(copy, path, n + 1);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *name = slash + 1;
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s names no folder of its own", path);
    *slash = '\0';
    /* Links above the base are resolved once; each folder on the resolved path is then opened without
     * following links and checked, so none of them can be swapped afterwards by another user. */
    if (!realpath(copy[0] ? copy : "/", above)) return FAIL(err, ORTSEAL_E_IO, "cannot use %s: %s", path, strerror(errno));
    int fd = open("/", DIR_FLAGS);
    if (fd < 0) return FAIL(err, ORTSEAL_E_IO, "cannot open /: %s", strerror(errno));
    ortseal_code code = check_above(fd, "/", err);
    char shown[PATH_MAX] = "";
    char *save = NULL;
    for (char *part = strtok_r(above, "/", &save); !code && part; part = strtok_r(NULL, "/", &save)) {
        size_t at = strlen(shown);
        snprintf(shown + at, sizeof shown - at, "/%s", part);
        int child = -1;
        code = open_child(fd, part, shown, &child, err);
        close(fd);
        fd = child;
        if (!code) code = check_above(fd, shown, err);
    }
    if (code) { if (fd >= 0) close(fd); return code; }
    snprintf(real, PATH_MAX, "%s/%s", shown, name);
    bool created = false;
    int base = openat(fd, name, DIR_FLAGS);
    if (base < 0 && errno == ENOENT && create) {
        if (!ram_backed(fd)) { /* checked first: nothing is made on a persistent disk */
            close(fd);
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s would not be on tmpfs or ramfs: plaintext weights would reach a persistent disk", real);
        }
        created = mkdirat(fd, name, 0700) == 0; /* EEXIST: someone else's is refused below */
    }
    code = base >= 0 ? ORTSEAL_OK : open_child(fd, name, real, &base, err);
    close(fd);
    if (code) return code;
    struct stat st;
    if (created && fstat(base, &st) == 0 && st.st_uid == geteuid()) fchmod(base, 0700); /* undo the umask; no link followed */
    if ((code = check_base(base, real, err))) { close(base); return code; }
    *out = base;
    return ORTSEAL_OK;
}

/* A folder every user may create entries in, protected by the sticky bit (like /dev/shm, /tmp). */
static bool shared_sticky(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 002) && (st.st_mode & S_ISVTX);
}

static bool same_file(const struct stat *a, const struct stat *b) { return a->st_dev == b->st_dev && a->st_ino == b->st_ino; }

/* Remove what the open folder fd holds: only entries this user owns, never through a link. */
static void clear_folder(int fd, int depth) {
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* not dup(): a child spawned meanwhile would inherit it */
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) { if (dup_fd >= 0) close(dup_fd); return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != geteuid()) continue; /* another uid's: left */
        if (!S_ISDIR(st.st_mode)) { unlinkat(fd, e->d_name, 0); continue; } /* a link is removed itself */
        int child = depth < 16 ? openat(fd, e->d_name, DIR_FLAGS) : -1;
        if (child < 0) continue;
        struct stat cst;
        if (fstat(child, &cst) == 0 && same_file(&cst, &st)) {
            clear_folder(child, depth + 1);
            unlinkat(fd, e->d_name, AT_REMOVEDIR);
        }
        close(child);
    }
    closedir(d);
}

/* Remove the folder name (in base_fd), open and locked as fd, then close fd. */
static void remove_folder(int base_fd, const char *name, int fd) {
    clear_folder(fd, 0);
    struct stat now, held;
    if (fstatat(base_fd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && fstat(fd, &held) == 0 && same_file(&now, &held))
        unlinkat(base_fd, name, AT_REMOVEDIR); /* while still locked: no one sees it unlocked */
    close(fd);
}

/* Opening folders in the base whose process died before cleaning up (their lock is free), and folders a
 * killed process left half-made. */
static void remove_stale(int base_fd) {
    int dup_fd = fcntl(base_fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) { if (dup_fd >= 0) close(dup_fd); return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        bool fresh = strncmp(e->d_name, NEW_PREFIX, strlen(NEW_PREFIX)) == 0;
        if (!fresh && strncmp(e->d_name, FOLDER_PREFIX, strlen(FOLDER_PREFIX)) != 0) continue;
        struct stat st, held;
        if (fstatat(base_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
            continue; /* not a folder ortseal made */
        if (fresh && time(NULL) - st.st_mtime < STALE_NEW_SECONDS) continue; /* a live process may be about to lock it */
        int fd = openat(base_fd, e->d_name, DIR_FLAGS);
        if (fd < 0) continue;
        if (fstat(fd, &held) != 0 || !same_file(&held, &st) || flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* replaced meanwhile, or its process is still opening a model */
            continue;
        }
        remove_folder(base_fd, e->d_name, fd); /* the lock held until removed: no one else removes it meanwhile */
    }
    closedir(d);
}

static void remove_ram(os_ram *r, bool close_base);

/* Made and locked under a name stale cleanup leaves alone for a while, then renamed: no cleanup can see
 * it unlocked under its final name. */
static ortseal_code make_locked_folder(int base_fd, const char *base, uint64_t need, os_ram **out, ortseal_error *err) {
    uint8_t token[16];
    char hex[33], fresh[64];
    if (!random_bytes(token, sizeof token)) return FAIL(err, ORTSEAL_E_RUNTIME, "no random bytes for a folder name");
    hex_encode(token, sizeof token, hex);
    snprintf(fresh, sizeof fresh, NEW_PREFIX "%s", hex);
    os_ram *r = calloc(1, sizeof *r);
    if (!r) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    snprintf(r->name, sizeof r->name, FOLDER_PREFIX "%s", hex);
    if (mkdirat(base_fd, fresh, 0700) != 0) {
        free(r);
        return FAIL(err, ORTSEAL_E_IO, "cannot make a private folder in %s: %s", base, strerror(errno));
    }
    int fd = openat(base_fd, fresh, DIR_FLAGS);
    if (fd < 0 || fchmod(fd, 0700) != 0 || flock(fd, LOCK_EX) != 0 || renameat(base_fd, fresh, base_fd, r->name) != 0) {
        /* the base is this user's alone, so this is the file system saying no (EMFILE, ENOSPC...) */
        int saved = errno;
        if (fd >= 0) remove_folder(base_fd, fresh, fd);
        else unlinkat(base_fd, fresh, AT_REMOVEDIR);
        free(r);
        return FAIL(err, ORTSEAL_E_IO, "cannot make a private folder in %s: %s", base, strerror(saved));
    }
    r->base_fd = base_fd;
    r->fd = fd;
    snprintf(r->path, sizeof r->path, "%s/%s", base, r->name);
    pthread_mutex_init(&r->mu, NULL);
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) != 0 || (uint64_t)vfs.f_bavail * vfs.f_frsize < need + (1u << 20)) {
        remove_ram(r, false); /* no room here: the next base, or memory */
        *out = NULL;
        return ORTSEAL_OK;
    }
    *out = r;
    return ORTSEAL_OK;
}

ortseal_code os_ram_open(uint64_t need, os_ram_mode mode, os_ram **out, ortseal_error *err) {
    *out = NULL;
    const char *chosen = getenv(RUNTIME_DIR_ENV);
    if (chosen && strcmp(chosen, "none") == 0) {
        if (mode == OS_RAM_REQUIRED)
            return FAIL(err, ORTSEAL_E_IO, "a RAM folder was asked for, but " RUNTIME_DIR_ENV "=none");
        return ORTSEAL_OK; /* the application asked for the in-memory route */
    }
    if (chosen && !chosen[0]) chosen = NULL;
    if (mode == OS_RAM_CHECK && !chosen) return ORTSEAL_OK;
    char candidates[2][PATH_MAX];
    bool create[2] = {true, true};
    size_t n = 0;
    if (chosen) {
        if (shared_sticky(chosen)) snprintf(candidates[n++], PATH_MAX, "%s/" USER_BASE_PREFIX "%u", chosen, (unsigned)geteuid());
        else snprintf(candidates[n++], PATH_MAX, "%s", chosen);
    } else {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && xdg[0]) { create[n] = false; snprintf(candidates[n++], PATH_MAX, "%s", xdg); }
        struct stat st;
        if (stat(SHARED_RAM_DIR, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(candidates[n++], PATH_MAX, SHARED_RAM_DIR "/" USER_BASE_PREFIX "%u", (unsigned)geteuid());
    }
    ortseal_error last = {0};
    for (size_t i = 0; i < n; i++) {
        int base_fd = -1;
        char real[PATH_MAX];
        ortseal_error why = {0};
        ortseal_code code = open_base(candidates[i], create[i], &base_fd, real, &why);
        if (code) {
            if (chosen) return FAIL(err, code, RUNTIME_DIR_ENV "=%s: %s", chosen, why.message);
            last = why; /* skipped (the Python side warns; this library never prints) */
            continue;
        }
        if (mode == OS_RAM_CHECK) { close(base_fd); return ORTSEAL_OK; }
        remove_stale(base_fd);
        code = make_locked_folder(base_fd, real, need, out, &why);
        if (code && chosen) { close(base_fd); return FAIL(err, code, RUNTIME_DIR_ENV "=%s: %s", chosen, why.message); }
        if (!code && *out) return ORTSEAL_OK; /* base_fd now belongs to *out */
        close(base_fd);
        if (code) last = why;
        else snprintf(last.message, sizeof last.message, "%.300s has less than %llu MiB free", real, (unsigned long long)(need >> 20) + 1);
    }
    if (mode == OS_RAM_REQUIRED)
        return FAIL(err, ORTSEAL_E_IO, "no private RAM folder can hold the weights (%s); set " RUNTIME_DIR_ENV
                    " to a tmpfs folder of your own (mode 0700)", last.message[0] ? last.message : "no base folder");
    return ORTSEAL_OK;
}

ortseal_code os_ram_create(os_ram *r, const char *name, os_file **f, ortseal_error *err) {
    *f = NULL;
    if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return FAIL(err, ORTSEAL_E_MISUSE, "%s is not a plain file name", name);
    char *copy = strdup(name);
    os_file *file = malloc(sizeof *file);
    pthread_mutex_lock(&r->mu);
    char **names = copy && file ? realloc(r->names, (r->n_names + 1) * sizeof *names) : NULL;
    int fd = -1;
    if (names) {
        r->names = names;
        fd = openat(r->fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) r->names[r->n_names++] = copy;
    }
    int saved = errno;
    pthread_mutex_unlock(&r->mu);
    if (fd < 0) {
        free(copy);
        free(file);
        if (!names) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        bool room = saved != ENOSPC && saved != EDQUOT; /* out of inodes: as out of room (os_pwrite) */
        return FAIL(err, room ? ORTSEAL_E_IO : ORTSEAL_E_NOMEM, "cannot make the RAM file %s in %s: %s", name, r->path,
                    strerror(saved));
    }
    file->fd = fd;
    *f = file;
    return ORTSEAL_OK;
}

const char *os_ram_path(const os_ram *r) { return r ? r->path : NULL; }

ortseal_code os_pwrite(os_file *f, const uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(f->fd, buf + done, len - done > (1u << 30) ? (1u << 30) : len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : ENOSPC;
            return FAIL(err, saved == ENOSPC || saved == EFBIG || saved == EDQUOT ? ORTSEAL_E_NOMEM : ORTSEAL_E_IO,
                        "cannot write the opened weights to a RAM file: %s", strerror(saved));
        }
        done += (size_t)n;
    }
    return ORTSEAL_OK;
}

static void unlink_one(void *ctx, size_t i) {
    os_ram *r = ctx;
    unlinkat(r->fd, r->names[i], 0); /* what is left is removed by clear_folder */
}

static void remove_ram(os_ram *r, bool close_base) {
    /* unlinking a tmpfs file frees its pages: here, on every core, so the first run() calls stay fast */
    os_parallel(r->n_names, unlink_one, r);
    for (size_t i = 0; i < r->n_names; i++) free(r->names[i]);
    free(r->names);
    remove_folder(r->base_fd, r->name, r->fd);
    if (close_base) close(r->base_fd);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void os_ram_remove(os_ram *r) {
    if (r) remove_ram(r, true);
}
