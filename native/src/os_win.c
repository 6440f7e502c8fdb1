/* The OS layer for Windows (os.h). Files are opened with CreateFileW: FILE_FLAG_OPEN_REPARSE_POINT so a
 * symbolic link or junction is opened as itself (and then refused: no reparse point is followed), share
 * mode FILE_SHARE_READ so nobody may write or delete the file while we read it, and the handle's type and
 * attributes checked (a disk file, not a folder or reparse point) before a byte is read. */
#define WIN32_LEAN_AND_MEAN
#define __USE_MINGW_ANSI_STDIO 1
#include <windows.h>

#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct os_dir { wchar_t *path; };
struct os_file { HANDLE h; };

void os_buffer_free(os_buffer *b) {
    if (b->data) ortseal_free(b->data, b->len);
    b->data = NULL;
    b->len = 0;
}

static wchar_t *widen(const char *utf8) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8, -1, NULL, 0);
    wchar_t *w = n > 0 ? malloc((size_t)n * sizeof *w) : NULL;
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8, -1, w, n) != n) { free(w); w = NULL; }
    return w;
}

/* Open for reading, refusing reparse points and anything but a disk file; *size from the same handle. */
static ortseal_code open_checked(const wchar_t *path, const char *what, ortseal_code not_regular, HANDLE *out,
                                 uint64_t *size, ortseal_error *err) {
    HANDLE h = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                           FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_SEQUENTIAL_SCAN, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND) return FAIL(err, ORTSEAL_E_FORMAT, "%s does not exist", what);
        if (e == ERROR_SHARING_VIOLATION) return FAIL(err, ORTSEAL_E_IO, "%s is open for writing by another program", what);
        return FAIL(err, ORTSEAL_E_IO, "cannot open %s (error %lu)", what, (unsigned long)e);
    }
    FILE_ATTRIBUTE_TAG_INFO tag;
    LARGE_INTEGER li;
    ortseal_code code = ORTSEAL_OK;
    if (GetFileType(h) != FILE_TYPE_DISK) code = FAIL(err, not_regular, "%s is not a regular file (a pipe or device)", what);
    else if (!GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag))
        code = FAIL(err, ORTSEAL_E_IO, "cannot inspect %s", what);
    else if (tag.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT)
        code = FAIL(err, not_regular, "%s is a symbolic link or junction; refusing to follow it", what);
    else if (tag.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) code = FAIL(err, not_regular, "%s is a folder", what);
    else if (!GetFileSizeEx(h, &li)) code = FAIL(err, ORTSEAL_E_IO, "cannot size %s", what);
    if (code) { CloseHandle(h); return code; }
    *out = h;
    *size = (uint64_t)li.QuadPart;
    return ORTSEAL_OK;
}

static ortseal_code read_at(HANDLE h, uint8_t *buf, size_t len, uint64_t offset, ortseal_code short_code, ortseal_error *err) {
    size_t got = 0;
    while (got < len) {
        OVERLAPPED ov = {0};
        uint64_t at = offset + got;
        ov.Offset = (DWORD)at;
        ov.OffsetHigh = (DWORD)(at >> 32);
        DWORD n = 0, want = len - got > (1u << 30) ? (1u << 30) : (DWORD)(len - got);
        if (!ReadFile(h, buf + got, want, &n, &ov) || n == 0)
            return FAIL(err, short_code, "a file is shorter than it says (it changed while it was read?)");
        got += n;
    }
    return ORTSEAL_OK;
}

static ortseal_code read_whole(const char *path, uint64_t max, ortseal_code not_regular, bool header_only, os_buffer *out,
                               uint64_t *file_size, ortseal_error *err) {
    wchar_t *w = widen(path);
    if (!w) return FAIL(err, ORTSEAL_E_MISUSE, "%s is not valid UTF-8", path);
    HANDLE h;
    uint64_t size = 0;
    ortseal_code code = open_checked(w, path, not_regular, &h, &size, err);
    free(w);
    if (code) return code;
    if (file_size) *file_size = size;
    uint64_t want = header_only && size > ORTSEAL_MAX_HEADER_SIZE ? ORTSEAL_MAX_HEADER_SIZE : size;
    if (want > max || want > SIZE_MAX - 1) code = FAIL(err, ORTSEAL_E_FORMAT, "%s is too large", path);
    uint8_t *buf = code ? NULL : malloc(want ? (size_t)want : 1);
    if (!code && !buf) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory reading %s", path);
    if (!code) code = read_at(h, buf, (size_t)want, 0, not_regular == ORTSEAL_E_TAMPERED ? ORTSEAL_E_TAMPERED : ORTSEAL_E_IO, err);
    CloseHandle(h);
    if (code) { if (buf) ortseal_free(buf, (size_t)want); return code; }
    out->data = buf;
    out->len = (size_t)want;
    return ORTSEAL_OK;
}

ortseal_code os_read_regular(const char *path, uint64_t max, os_buffer *out, ortseal_error *err) {
    return read_whole(path, max, ORTSEAL_E_FORMAT, false, out, NULL, err);
}

ortseal_code os_open_dir(const char *path, os_dir **dir, ortseal_error *err) {
    wchar_t *w = widen(path);
    DWORD attrs = w ? GetFileAttributesW(w) : INVALID_FILE_ATTRIBUTES;
    if (attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        free(w);
        return FAIL(err, ORTSEAL_E_IO, "cannot open folder %s", path);
    }
    if (!(*dir = malloc(sizeof **dir))) { free(w); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    (*dir)->path = w;
    return ORTSEAL_OK;
}

static char *parent_of(const char *path) {
    const char *a = strrchr(path, '/'), *b = strrchr(path, '\\'), *cut = a > b ? a : b;
    char *out = malloc(cut ? (size_t)(cut - path) + 1 : 2);
    if (!out) return NULL;
    if (cut) { memcpy(out, path, (size_t)(cut - path)); out[cut - path] = '\0'; }
    else strcpy(out, ".");
    return out;
}

ortseal_code os_read_model(const char *path, os_buffer *out, os_dir **dir, ortseal_error *err) {
    *dir = NULL;
    ortseal_code code = read_whole(path, UINT64_MAX, ORTSEAL_E_FORMAT, false, out, NULL, err);
    if (code) return code;
    char *parent = parent_of(path);
    code = parent ? os_open_dir(parent, dir, err) : FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    free(parent);
    if (code) os_buffer_free(out);
    return code;
}

void os_dir_close(os_dir *dir) {
    if (dir) { free(dir->path); free(dir); }
}

ortseal_code os_open_in(os_dir *dir, const char *name, os_file **f, uint64_t *size, ortseal_error *err) {
    *f = NULL;
    if (!dir) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s: the model was given as bytes with no folder", name);
    if (!name[0] || strpbrk(name, "/\\:") || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return FAIL(err, ORTSEAL_E_FORMAT, "data file %s is not inside the model's folder", name);
    wchar_t *w = widen(name);
    size_t n = w ? wcslen(dir->path) + wcslen(w) + 2 : 0;
    wchar_t *full = n ? malloc(n * sizeof *full) : NULL;
    if (!full) { free(w); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    swprintf(full, n, L"%ls\\%ls", dir->path, w);
    free(w);
    HANDLE h;
    char what[300];
    snprintf(what, sizeof what, "data file %s", name);
    ortseal_code code = open_checked(full, what, ORTSEAL_E_FORMAT, &h, size, err);
    free(full);
    if (code) return code;
    if (!(*f = malloc(sizeof **f))) { CloseHandle(h); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    (*f)->h = h;
    return ORTSEAL_OK;
}

ortseal_code os_pread(os_file *f, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    return read_at(f->h, buf, len, offset, ORTSEAL_E_TAMPERED, err);
}

void os_close(os_file *f) {
    if (f) { CloseHandle(f->h); free(f); }
}

ortseal_code os_read_engine(const char *path, bool header_only, os_buffer *out, uint64_t *file_size, ortseal_error *err) {
    return read_whole(path, UINT64_MAX, ORTSEAL_E_TAMPERED, header_only, out, file_size, err);
}

bool os_canonical_dir(const char *dir, char *out, size_t cap) {
    wchar_t *w = widen(dir), full[MAX_PATH];
    DWORD n = w ? GetFullPathNameW(w, MAX_PATH, full, NULL) : 0;
    free(w);
    return n && n < MAX_PATH && WideCharToMultiByte(CP_UTF8, 0, full, -1, out, (int)cap, NULL, NULL) > 0;
}

bool os_parent_dir(const char *path, char *out, size_t cap) {
    char *parent = parent_of(path);
    bool ok = parent && os_canonical_dir(parent, out, cap);
    free(parent);
    return ok;
}

const char *os_base_name(const char *path) {
    const char *a = strrchr(path, '/'), *b = strrchr(path, '\\'), *cut = a > b ? a : b;
    return cut ? cut + 1 : path;
}

ortseal_code os_write_atomic(const char *path, const uint8_t *data, size_t len, ortseal_error *err) {
    char tmp[4096];
    uint8_t rnd[8];
    char hex[17];
    if (!random_bytes(rnd, sizeof rnd)) return FAIL(err, ORTSEAL_E_RUNTIME, "no randomness");
    hex_encode(rnd, sizeof rnd, hex);
    char *parent = parent_of(path);
    if (!parent) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    snprintf(tmp, sizeof tmp, "%s\\.%s.%s.tmp", parent, os_base_name(path), hex);
    free(parent);
    wchar_t *wtmp = widen(tmp), *wpath = widen(path);
    /* CREATE_NEW (O_EXCL), no sharing: nobody else opens the temp file while it is written; the exclusive
     * byte-range lock marks a live writer, as flock does on POSIX. */
    HANDLE h = wtmp ? CreateFileW(wtmp, GENERIC_WRITE | DELETE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL) : INVALID_HANDLE_VALUE;
    bool ok = h != INVALID_HANDLE_VALUE;
    OVERLAPPED ov = {0};
    ok = ok && LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &ov);
    for (size_t done = 0; ok && done < len;) {
        DWORD n = 0, want = len - done > (1u << 30) ? (1u << 30) : (DWORD)(len - done);
        ok = WriteFile(h, data + done, want, &n, NULL) && n > 0;
        done += n;
    }
    ok = ok && FlushFileBuffers(h);
    if (h != INVALID_HANDLE_VALUE) CloseHandle(h);
    ok = ok && wpath && MoveFileExW(wtmp, wpath, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH);
    if (!ok && wtmp) DeleteFileW(wtmp);
    free(wtmp);
    free(wpath);
    return ok ? ORTSEAL_OK : FAIL(err, ORTSEAL_E_IO, "cannot write %s (error %lu)", path, (unsigned long)GetLastError());
}

void *os_library_symbol(const char *path, const char *symbol, ortseal_error *err) {
    wchar_t *w = widen(path);
    HMODULE lib = w ? LoadLibraryExW(w, NULL, LOAD_WITH_ALTERED_SEARCH_PATH) : NULL;
    free(w);
    void *sym = lib ? (void *)GetProcAddress(lib, symbol) : NULL;
    if (!sym) FAIL(err, ORTSEAL_E_IO, "cannot load %s from the shim %s", symbol, path);
    return sym;
}

static SRWLOCK registry_lock = SRWLOCK_INIT;
void os_registry_lock(void) { AcquireSRWLockExclusive(&registry_lock); }
void os_registry_unlock(void) { ReleaseSRWLockExclusive(&registry_lock); }

size_t os_cores(void) {
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return info.dwNumberOfProcessors < 1 ? 1 : info.dwNumberOfProcessors > 64 ? 64 : info.dwNumberOfProcessors;
}

typedef struct parallel_job { void (*fn)(void *, size_t); void *ctx; size_t n; volatile LONG64 next; } parallel_job;

static DWORD WINAPI parallel_worker(void *arg) {
    parallel_job *job = arg;
    for (;;) {
        size_t i = (size_t)(InterlockedIncrement64(&job->next) - 1);
        if (i >= job->n) return 0;
        job->fn(job->ctx, i);
    }
}

void os_parallel(size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
    parallel_job job = {fn, ctx, n, 0};
    HANDLE threads[64];
    size_t extra = os_cores() - 1, started = 0;
    if (extra > n) extra = n ? n - 1 : 0;
    for (; started < extra; started++)
        if (!(threads[started] = CreateThread(NULL, 0, parallel_worker, &job, 0, NULL))) break;
    parallel_worker(&job);
    if (started) WaitForMultipleObjects((DWORD)started, threads, TRUE, INFINITE);
    for (size_t i = 0; i < started; i++) CloseHandle(threads[i]);
}
