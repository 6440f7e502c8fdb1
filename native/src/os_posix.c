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
