/* The OS layer for Windows (os.h), the counterpart of os_posix.c:
 *   - paths are UTF-8 and converted to UTF-16 for the W functions (a name that is not UTF-8 is refused);
 *   - every file is opened for reading with share mode FILE_SHARE_READ only, so nobody can write, rename
 *     or delete it while it is open: what we check is what we read;
 *   - the opened handle is checked: a disk file (GetFileType: not a pipe, console or device), not a folder,
 *     not a reparse point (GetFileInformationByHandleEx FileAttributeTagInfo);
 *   - files a model names are opened *inside* its folder's open handle (NtCreateFile with RootDirectory,
 *     Windows' openat) with FILE_OPEN_REPARSE_POINT, so a symbolic link, junction or other reparse point
 *     planted in the folder is opened as itself and refused, never followed; the folder handle is held
 *     without FILE_SHARE_DELETE, so the folder cannot be renamed or replaced while the model opens;
 *   - the model path and plain paths a caller names are followed as the caller gave them (as os_posix.c
 *     does), then checked on the handle;
 *   - engine files are opened with FILE_FLAG_OPEN_REPARSE_POINT (O_NOFOLLOW) and refused unless a regular,
 *     non-sparse disk file;
 *   - engine writes go to a new temporary file beside the target (CREATE_NEW: never an existing file) shared
 *     with nobody while written (the role of os_posix.c's flock), flushed, and renamed over the target
 *     through that same handle (FileRenameInfo, ReplaceIfExists): atomic, and nothing half-written is left.
 *     It is created locked (share mode none from its first instant), so it is made under its ".tmp" name at
 *     once: os_posix.c's ".new" step covers the gap between creating and flock-ing, which Windows does not have;
 *   - stale cleanup lists the folder through its handle and deletes a temp file only if it can open it with
 *     a share mode of none (no live writer), as itself (reparse points not followed);
 *   - os_parallel runs on Windows threads (CreateThread), indices handed out by an atomic counter;
 *   - buffers are wiped (errors.c's wipe) before they are freed.
 * Compiled by the mingw-w64 cross build in CI (tests/test_native_portability.py), and run under Wine by the
 * Windows test host (native/tests/win_host.c); see docs/support-matrix.md for what has been run where. */
#define __USE_MINGW_ANSI_STDIO 1 /* C99 printf on Windows (mingw-w64) */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef UNICODE
#define UNICODE
#endif
#include "os.h"

#include <windows.h>
#include <winternl.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ntdll's relative open (declared in winternl.h; the flags below are in ntifs.h, which mingw and the SDK's
 * user-mode headers do not all ship). */
#ifndef FILE_OPEN
#define FILE_OPEN 0x00000001
#endif
#ifndef FILE_NON_DIRECTORY_FILE
#define FILE_NON_DIRECTORY_FILE 0x00000040
#endif
#ifndef FILE_SYNCHRONOUS_IO_NONALERT
#define FILE_SYNCHRONOUS_IO_NONALERT 0x00000020
#endif
#ifndef FILE_OPEN_REPARSE_POINT
#define FILE_OPEN_REPARSE_POINT 0x00200000
#endif
#ifndef FILE_OPEN_FOR_BACKUP_INTENT
#define FILE_OPEN_FOR_BACKUP_INTENT 0x00004000
#endif
#ifndef OBJ_CASE_INSENSITIVE
#define OBJ_CASE_INSENSITIVE 0x00000040
#endif
#ifndef STATUS_OBJECT_NAME_NOT_FOUND
#define STATUS_OBJECT_NAME_NOT_FOUND ((NTSTATUS)0xC0000034L)
#endif
#ifndef STATUS_FILE_IS_A_DIRECTORY
#define STATUS_FILE_IS_A_DIRECTORY ((NTSTATUS)0xC00000BAL)
#endif

struct os_dir { HANDLE h; };
struct os_file { HANDLE h; };

void os_buffer_free(os_buffer *b) {
    if (b->data) ortseal_free(b->data, b->len);
    b->data = NULL;
    b->len = 0;
}

/* UTF-8 to a malloc'd UTF-16 string; NULL when not valid UTF-8 (or out of memory). */
static wchar_t *widen(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) { free(w); w = NULL; }
    return w;
}

static const char *win_message(DWORD code, char *buf, size_t size) {
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, buf,
                             (DWORD)size, NULL);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == '.')) buf[--n] = '\0';
    if (n == 0) snprintf(buf, size, "Windows error %lu", (unsigned long)code);
    return buf;
}

static ortseal_code open_failed(const char *what, DWORD code, ortseal_error *err) {
    char msg[200];
    if (code == ERROR_FILE_NOT_FOUND || code == ERROR_PATH_NOT_FOUND)
        return FAIL(err, ORTSEAL_E_FORMAT, "%s does not exist", what);
    if (code == ERROR_SHARING_VIOLATION)
        return FAIL(err, ORTSEAL_E_IO, "cannot open %s: another process has it open for writing", what);
    return FAIL(err, ORTSEAL_E_IO, "cannot open %s: %s", what, win_message(code, msg, sizeof msg));
}

/* The checks of os_posix.c's fstat, on the opened handle: a disk file, not a folder, not a reparse point. */
static ortseal_code check_regular(HANDLE h, const char *what, uint64_t *size, ortseal_error *err) {
    if (GetFileType(h) != FILE_TYPE_DISK) return FAIL(err, ORTSEAL_E_FORMAT, "%s is not a regular file", what);
    FILE_ATTRIBUTE_TAG_INFO tag;
    if (!GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag))
        return FAIL(err, ORTSEAL_E_IO, "cannot read the attributes of %s", what);
    if (tag.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT)
        return FAIL(err, ORTSEAL_E_FORMAT, "%s is a symbolic link or other reparse point; refusing to follow it", what);
    if (tag.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) return FAIL(err, ORTSEAL_E_FORMAT, "%s is not a regular file", what);
    LARGE_INTEGER n;
    if (!GetFileSizeEx(h, &n) || n.QuadPart < 0) return FAIL(err, ORTSEAL_E_IO, "cannot read the size of %s", what);
    *size = (uint64_t)n.QuadPart;
    return ORTSEAL_OK;
}

static ortseal_code read_at(HANDLE h, uint8_t *buf, size_t len, uint64_t offset, bool *short_read) {
    size_t got = 0;
    *short_read = false;
    while (got < len) {
        DWORD want = len - got > (1u << 30) ? (1u << 30) : (DWORD)(len - got), n = 0;
        OVERLAPPED at;
        memset(&at, 0, sizeof at);
        at.Offset = (DWORD)(offset + got);
        at.OffsetHigh = (DWORD)((offset + got) >> 32);
        if (!ReadFile(h, buf + got, want, &n, &at) || n == 0) { *short_read = true; return ORTSEAL_E_IO; }
        got += n;
    }
    return ORTSEAL_OK;
}

static ortseal_code read_all(HANDLE h, const char *what, uint64_t size, uint64_t max, os_buffer *out, ortseal_error *err) {
    if (size > max || size > SIZE_MAX - 1) return FAIL(err, ORTSEAL_E_FORMAT, "%s is too large", what);
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory reading %s", what);
    bool short_read;
    if (read_at(h, buf, (size_t)size, 0, &short_read)) {
        ortseal_free(buf, (size_t)size);
        return FAIL(err, ORTSEAL_E_IO, "%s changed size while it was read", what);
    }
    out->data = buf;
    out->len = (size_t)size;
    return ORTSEAL_OK;
}

/* A path the caller named: followed as given, then checked on the handle. Writers are denied while it is open. */
static ortseal_code open_named(const char *path, HANDLE *h, ortseal_error *err) {
    wchar_t *w = widen(path);
    if (!w) return FAIL(err, ORTSEAL_E_IO, "cannot open %s: the path is not UTF-8", path);
    *h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, FILE_FLAG_SEQUENTIAL_SCAN, NULL);
    DWORD code = GetLastError();
    /* CreateFileW refuses a folder without FILE_FLAG_BACKUP_SEMANTICS (access denied): say what it is. */
    DWORD attrs = *h == INVALID_HANDLE_VALUE && code == ERROR_ACCESS_DENIED ? GetFileAttributesW(w) : INVALID_FILE_ATTRIBUTES;
    free(w);
    if (*h != INVALID_HANDLE_VALUE) return ORTSEAL_OK;
    if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY))
        return FAIL(err, ORTSEAL_E_FORMAT, "%s is not a regular file", path);
    return open_failed(path, code, err);
}

ortseal_code os_read_regular(const char *path, uint64_t max, os_buffer *out, ortseal_error *err) {
    HANDLE h;
    ortseal_code code = open_named(path, &h, err);
    if (code) return code;
    uint64_t size = 0;
    code = check_regular(h, path, &size, err);
    if (!code) code = read_all(h, path, size, max, out, err);
    CloseHandle(h);
    return code;
}

static ortseal_code open_dir_w(wchar_t *w, const char *path, os_dir **dir, ortseal_error *err) {
    /* FILE_FLAG_BACKUP_SEMANTICS opens a folder; no FILE_SHARE_DELETE: it cannot be renamed while held. */
    HANDLE h = CreateFileW(w, FILE_LIST_DIRECTORY | FILE_TRAVERSE | SYNCHRONIZE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           NULL, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        char msg[200];
        DWORD code = GetLastError();
        free(w);
        return FAIL(err, ORTSEAL_E_IO, "cannot open folder %s: %s", path, win_message(code, msg, sizeof msg));
    }
    FILE_ATTRIBUTE_TAG_INFO tag;
    if (!GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag) ||
        !(tag.FileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        CloseHandle(h);
        free(w);
        return FAIL(err, ORTSEAL_E_IO, "cannot open folder %s: not a folder", path);
    }
    if (!(*dir = malloc(sizeof **dir))) { CloseHandle(h); free(w); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    (*dir)->h = h;
    free(w);
    return ORTSEAL_OK;
}

ortseal_code os_open_dir(const char *path, os_dir **dir, ortseal_error *err) {
    *dir = NULL;
    wchar_t *w = widen(path);
    if (!w) return FAIL(err, ORTSEAL_E_IO, "cannot open folder %s: the path is not UTF-8", path);
    return open_dir_w(w, path, dir, err);
}

/* The folder part of path ("." when it has none; a drive or share root keeps its trailing separator). */
static char *parent_of(const char *path) {
    const char *slash = NULL;
    for (const char *p = path; *p; p++)
        if (*p == '\\' || *p == '/') slash = p;
    if (!slash) {
        if (path[0] && path[1] == ':') { /* "C:model.onnx": the current folder of drive C */
            char *d = malloc(3);
            if (d) { d[0] = path[0]; d[1] = ':'; d[2] = '\0'; }
            return d;
        }
        return _strdup(".");
    }
    size_t n = (size_t)(slash - path);
    if (n == 0 || (n == 2 && path[1] == ':')) n++; /* "\\x" -> "\\", "C:\\x" -> "C:\\" */
    char *d = malloc(n + 1);
    if (d) { memcpy(d, path, n); d[n] = '\0'; }
    return d;
}

ortseal_code os_read_model(const char *path, os_buffer *out, os_dir **dir, ortseal_error *err) {
    *dir = NULL;
    HANDLE h;
    ortseal_code code = open_named(path, &h, err);
    if (code) return code;
    uint64_t size = 0;
    code = check_regular(h, path, &size, err);
    if (!code) code = read_all(h, path, size, UINT64_MAX, out, err);
    CloseHandle(h);
    if (code) return code;
    /* The data files are looked up in the folder the model path names, held open from here on. */
    char *folder = parent_of(path);
    code = folder ? os_open_dir(folder, dir, err) : FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    free(folder);
    if (code) os_buffer_free(out);
    return code;
}

void os_dir_close(os_dir *dir) {
    if (dir) { CloseHandle(dir->h); free(dir); }
}

/* One path component: no separators, no drive or stream (':'), not "." or "..", no trailing dot or space
 * (Windows strips those, so "a." would open "a"), none of the names Windows maps to devices. */
static bool plain_name(const char *name) {
    if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return false;
    for (const char *p = name; *p; p++)
        if (*p == '/' || *p == '\\' || *p == ':' || (unsigned char)*p < 32 || strchr("<>\"|?*", *p)) return false;
    char last = name[strlen(name) - 1];
    if (last == '.' || last == ' ') return false;
    /* CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$, alone or before an extension, name devices. */
    static const char *const devices[] = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"};
    size_t stem = strcspn(name, ".");
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++)
        if (stem == strlen(devices[i]) && _strnicmp(name, devices[i], stem) == 0) return false;
    if (stem == 4 && (_strnicmp(name, "COM", 3) == 0 || _strnicmp(name, "LPT", 3) == 0) && name[3] >= '0' && name[3] <= '9')
        return false;
    return true;
}

/* NtCreateFile relative to dir, links not followed: Windows' openat(dirfd, name, O_NOFOLLOW). */
static NTSTATUS open_relative(os_dir *dir, const wchar_t *name, ACCESS_MASK access, ULONG share, ULONG disposition,
                              ULONG options, HANDLE *h) {
    UNICODE_STRING uname;
    size_t bytes = wcslen(name) * sizeof(wchar_t);
    if (bytes > 0xFFF0) return STATUS_OBJECT_NAME_NOT_FOUND;
    uname.Buffer = (PWSTR)name;
    uname.Length = (USHORT)bytes;
    uname.MaximumLength = (USHORT)bytes;
    OBJECT_ATTRIBUTES attrs;
    memset(&attrs, 0, sizeof attrs);
    attrs.Length = sizeof attrs;
    attrs.RootDirectory = dir->h;
    attrs.ObjectName = &uname;
    attrs.Attributes = OBJ_CASE_INSENSITIVE;
    IO_STATUS_BLOCK io;
    memset(&io, 0, sizeof io);
    return NtCreateFile(h, access | SYNCHRONIZE, &attrs, &io, NULL, FILE_ATTRIBUTE_NORMAL, share, disposition,
                        options | FILE_SYNCHRONOUS_IO_NONALERT | FILE_OPEN_REPARSE_POINT, NULL, 0);
}

ortseal_code os_open_in(os_dir *dir, const char *name, os_file **f, uint64_t *size, ortseal_error *err) {
    *f = NULL;
    if (!dir) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s: the model was given as bytes with no folder", name);
    if (!plain_name(name)) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s is not inside the model's folder", name);
    wchar_t *w = widen(name);
    if (!w) return FAIL(err, ORTSEAL_E_FORMAT, "data file %s: the name is not UTF-8", name);
    HANDLE h = INVALID_HANDLE_VALUE;
    NTSTATUS st = open_relative(dir, w, GENERIC_READ, FILE_SHARE_READ, FILE_OPEN, FILE_NON_DIRECTORY_FILE, &h);
    free(w);
    char what[300];
    snprintf(what, sizeof what, "data file %s", name);
    if (!NT_SUCCESS(st)) {
        if (st == STATUS_OBJECT_NAME_NOT_FOUND)
            return FAIL(err, ORTSEAL_E_FORMAT, "data file %s is missing (a sealed model's data file keeps the name it was sealed with)", name);
        if (st == STATUS_FILE_IS_A_DIRECTORY) return FAIL(err, ORTSEAL_E_FORMAT, "%s is not a regular file", what);
        return open_failed(what, RtlNtStatusToDosError(st), err);
    }
    ortseal_code code = check_regular(h, what, size, err);
    if (!code && !(*f = malloc(sizeof **f))) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    if (code) { CloseHandle(h); return code; }
    (*f)->h = h;
    return ORTSEAL_OK;
}

ortseal_code os_pread(os_file *f, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    bool short_read;
    if (read_at(f->h, buf, len, offset, &short_read))
        return FAIL(err, ORTSEAL_E_TAMPERED, "a data file is shorter than the manifest says");
    return ORTSEAL_OK;
}

void os_close(os_file *f) {
    if (f) { CloseHandle(f->h); free(f); }
}

/* ---- the engine cache (engine.c) ------------------------------------------------------------------ */

/* UTF-16 to UTF-8 into out (cap bytes); false if it does not fit. */
static bool narrow(const wchar_t *w, char *out, size_t cap) {
    int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, out, cap > INT_MAX ? INT_MAX : (int)cap, NULL, NULL);
    return n > 0;
}

ortseal_code os_read_engine(const char *path, bool header_only, os_buffer *out, uint64_t *file_size, ortseal_error *err) {
    wchar_t *w = widen(path);
    if (!w) return FAIL(err, ORTSEAL_E_IO, "cannot open engine file %s: the path is not UTF-8", path);
    /* FILE_FLAG_OPEN_REPARSE_POINT: a symbolic link or junction is opened as itself (O_NOFOLLOW), then refused. */
    HANDLE h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                           FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_SEQUENTIAL_SCAN, NULL);
    DWORD last = GetLastError();
    free(w);
    if (h == INVALID_HANDLE_VALUE) {
        char msg[200];
        if (last == ERROR_ACCESS_DENIED) /* a folder, or a file we may not read */
            return FAIL(err, ORTSEAL_E_IO, "cannot open engine file %s: access denied (a folder is not an engine file)", path);
        return FAIL(err, ORTSEAL_E_IO, "cannot open engine file %s: %s", path, win_message(last, msg, sizeof msg));
    }
    uint64_t size = 0;
    ortseal_error why;
    ortseal_code code = ORTSEAL_OK;
    if (check_regular(h, path, &size, &why)) {
        code = why.code == ORTSEAL_E_IO ? FAIL(err, ORTSEAL_E_IO, "%s", why.message)
                                        : FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is not a regular file: refused", path);
    } else {
        /* Ciphertext has no holes: a sparse file declaring far more than it holds is refused (os_posix.c's
         * st_blocks check; here the allocation NTFS reports for it). */
        FILE_STANDARD_INFO std;
        FILE_ATTRIBUTE_TAG_INFO tag;
        if (GetFileInformationByHandleEx(h, FileStandardInfo, &std, sizeof std) &&
            GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag) &&
            (tag.FileAttributes & FILE_ATTRIBUTE_SPARSE_FILE) && size > (1u << 20) &&
            (uint64_t)std.AllocationSize.QuadPart < size / 2)
            code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s is sparse: not a sealed engine", path);
    }
    if (!code) {
        uint64_t want = header_only && size > ORTSEAL_MAX_HEADER_SIZE ? ORTSEAL_MAX_HEADER_SIZE : size;
        *file_size = size;
        code = read_all(h, path, want, UINT64_MAX, out, err);
        if (code == ORTSEAL_E_IO) code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file %s changed length while it was read: refused", path);
    }
    CloseHandle(h);
    return code;
}

/* The final path of an open folder, without the "\\?\" prefix for a drive path (GetFinalPathNameByHandleW:
 * links and junctions resolved, as realpath does). */
static bool final_path(HANDLE h, char *out, size_t cap) {
    wchar_t buf[32768];
    DWORD n = GetFinalPathNameByHandleW(h, buf, sizeof buf / sizeof *buf, FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
    if (n == 0 || n >= sizeof buf / sizeof *buf) return false;
    const wchar_t *p = buf;
    if (wcsncmp(p, L"\\\\?\\UNC\\", 8) == 0) { p += 6; buf[6] = L'\\'; } /* \\?\UNC\server -> \\server */
    else if (wcsncmp(p, L"\\\\?\\", 4) == 0 && p[5] == L':') p += 4;
    return narrow(p, out, cap);
}

bool os_canonical_dir(const char *dir, char *out, size_t cap) {
    wchar_t *w = widen(dir);
    if (!w) return false;
    HANDLE h = CreateFileW(w, FILE_READ_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE) return false;
    FILE_ATTRIBUTE_TAG_INFO tag;
    bool ok = GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag) &&
              (tag.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) && final_path(h, out, cap);
    CloseHandle(h);
    return ok;
}

bool os_parent_dir(const char *path, char *out, size_t cap) {
    char *folder = parent_of(path);
    bool ok = folder && os_canonical_dir(folder, out, cap);
    free(folder);
    return ok;
}

const char *os_base_name(const char *path) {
    const char *base = path;
    for (const char *p = path; *p; p++)
        if (*p == '\\' || *p == '/' || (*p == ':' && p == path + 1)) base = p + 1;
    return base;
}

/* A temporary file ".<name>.<random>.tmp" beside path, created new (never one already there), shared with
 * nobody while written: a cleaner that cannot open it knows a live writer holds it (os_posix.c's flock).
 * It is renamed over path through its own handle (SetFileInformationByHandle FileRenameInfo, replacing),
 * so no other process can slip a file in between; on failure it is deleted through that handle. */
ortseal_code os_write_atomic(const char *path, const uint8_t *data, size_t len, ortseal_error *err) {
    char dir[4096], tmp[4096 + 300], msg[200];
    if (!os_parent_dir(path, dir, sizeof dir)) return FAIL(err, ORTSEAL_E_IO, "cannot write %s: its folder does not exist", path);
    uint8_t nonce[8];
    char hex[17];
    if (!random_bytes(nonce, sizeof nonce)) return FAIL(err, ORTSEAL_E_RUNTIME, "cannot write %s: no random bytes", path);
    hex_encode(nonce, sizeof nonce, hex);
    snprintf(tmp, sizeof tmp, "%s\\.%s.%s.tmp", dir, os_base_name(path), hex);
    wchar_t *wtmp = widen(tmp), *wpath = widen(path);
    if (!wtmp || !wpath) { free(wtmp); free(wpath); return FAIL(err, ORTSEAL_E_IO, "cannot write %s: the path is not UTF-8", path); }
    HANDLE h = CreateFileW(wtmp, GENERIC_WRITE | DELETE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    ortseal_code code = ORTSEAL_OK;
    if (h == INVALID_HANDLE_VALUE) {
        code = FAIL(err, ORTSEAL_E_IO, "cannot write %s: %s", path, win_message(GetLastError(), msg, sizeof msg));
        goto done;
    }
    for (size_t done_len = 0; done_len < len && !code;) {
        DWORD want = len - done_len > (1u << 30) ? (1u << 30) : (DWORD)(len - done_len), wrote = 0;
        if (!WriteFile(h, data + done_len, want, &wrote, NULL) || wrote == 0)
            code = FAIL(err, ORTSEAL_E_IO, "cannot write %s: %s", path, win_message(GetLastError(), msg, sizeof msg));
        done_len += wrote;
    }
    if (!code && !FlushFileBuffers(h)) code = FAIL(err, ORTSEAL_E_IO, "cannot write %s: flush failed", path);
    if (!code) {
        size_t name_bytes = wcslen(wpath) * sizeof(wchar_t);
        FILE_RENAME_INFO *rename = calloc(1, sizeof *rename + name_bytes + sizeof(wchar_t));
        if (!rename) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        else {
            rename->ReplaceIfExists = TRUE;
            rename->RootDirectory = NULL;
            rename->FileNameLength = (DWORD)name_bytes;
            memcpy(rename->FileName, wpath, name_bytes + sizeof(wchar_t));
            if (!SetFileInformationByHandle(h, FileRenameInfo, rename, (DWORD)(sizeof *rename + name_bytes)))
                code = FAIL(err, ORTSEAL_E_IO, "cannot replace %s: %s", path, win_message(GetLastError(), msg, sizeof msg));
            free(rename);
        }
    }
    if (code) { /* nothing half-written is left */
        FILE_DISPOSITION_INFO gone = {TRUE};
        SetFileInformationByHandle(h, FileDispositionInfo, &gone, sizeof gone);
    }
    CloseHandle(h);
done:
    free(wtmp);
    free(wpath);
    return code;
}

/* Stale cleanup (os.h): the folder is listed through its own handle (FileFullDirectoryInfo), each temp name
 * opened relative to it with FILE_OPEN_REPARSE_POINT (a link is opened, and deleted, as itself) and
 * FILE_NON_DIRECTORY_FILE, for DELETE with a share mode of none: a live writer holds its temp file shared
 * with nobody (os_write_atomic), so the open fails with a sharing violation and the file stays. Deleted
 * through that handle (FileDispositionInfo), so the file deleted is the one opened. Ownership is not checked
 * here: the folder's ACL decides who may delete in it (the cache folder is the user's own). */
size_t os_remove_stale_temps(const char *dir, os_temp_kind (*kind_of)(const char *name),
                             void (*removed)(void *ctx, const char *name), void *ctx) {
    os_dir *d = NULL;
    ortseal_error ignored;
    if (os_open_dir(dir, &d, &ignored)) return 0;
    FILETIME now_ft;
    GetSystemTimeAsFileTime(&now_ft);
    ULARGE_INTEGER now = {.LowPart = now_ft.dwLowDateTime, .HighPart = now_ft.dwHighDateTime};
    const uint64_t stale = (uint64_t)OS_NEW_STALE_SECONDS * 10000000u; /* FILETIME ticks: 100 ns */
    size_t n = 0;
    union { FILE_FULL_DIR_INFO info; uint8_t bytes[64 * 1024]; } *page = malloc(sizeof *page);
    FILE_INFO_BY_HANDLE_CLASS cls = FileFullDirectoryRestartInfo;
    while (page && GetFileInformationByHandleEx(d->h, cls, page, sizeof *page)) {
        cls = FileFullDirectoryInfo;
        for (FILE_FULL_DIR_INFO *e = &page->info;; e = (FILE_FULL_DIR_INFO *)((uint8_t *)e + e->NextEntryOffset)) {
            wchar_t wname[MAX_PATH + 1];
            char name[4 * MAX_PATH + 1];
            size_t chars = e->FileNameLength / sizeof(wchar_t);
            if (chars <= MAX_PATH) {
                memcpy(wname, e->FileName, chars * sizeof(wchar_t));
                wname[chars] = 0;
                os_temp_kind kind = narrow(wname, name, sizeof name) ? kind_of(name) : OS_NOT_TEMP;
                uint64_t age = (uint64_t)now.QuadPart - (uint64_t)e->LastWriteTime.QuadPart;
                bool folder = (e->FileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
                HANDLE h = INVALID_HANDLE_VALUE;
                if (kind != OS_NOT_TEMP && !folder && (kind != OS_TEMP_NEW || age > stale) &&
                    NT_SUCCESS(open_relative(d, wname, DELETE, 0, FILE_OPEN, FILE_NON_DIRECTORY_FILE, &h))) {
                    FILE_DISPOSITION_INFO gone = {TRUE};
                    if (SetFileInformationByHandle(h, FileDispositionInfo, &gone, sizeof gone)) {
                        n++;
                        if (removed) removed(ctx, name);
                    }
                    CloseHandle(h);
                }
            }
            if (!e->NextEntryOffset) break;
        }
    }
    free(page);
    os_dir_close(d);
    return n;
}

void *os_library_symbol(const char *path, const char *symbol, ortseal_error *err) {
    wchar_t *w = widen(path);
    /* kept loaded: ORT loads the same instance by that path. LOAD_WITH_ALTERED_SEARCH_PATH: the DLL's own
     * dependencies are looked up beside it, not in the current folder. */
    HMODULE lib = w ? LoadLibraryExW(w, NULL, LOAD_WITH_ALTERED_SEARCH_PATH) : NULL;
    free(w);
    void *sym = lib ? (void *)GetProcAddress(lib, symbol) : NULL;
    if (!sym) {
        char msg[200];
        FAIL(err, ORTSEAL_E_IO, "cannot load %s from the shim %s: %s", symbol, path, win_message(GetLastError(), msg, sizeof msg));
    }
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

/* ---- the private RAM folder (os.h) ----------------------------------------------------------------
 * Windows has no tmpfs: a temporary file, even FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, may
 * be written to disk by the cache manager, and plaintext must never reach a persistent disk. So models
 * always open in memory here (ORT copies the weights: a higher peak, docs/benchmarks.md). */
ortseal_code os_ram_open(uint64_t need, os_ram_mode mode, os_ram **out, ortseal_error *err) {
    (void)need;
    *out = NULL;
    if (mode == OS_RAM_REQUIRED)
        return FAIL(err, ORTSEAL_E_IO, "Windows has no RAM-only file system for the opened weights: open the model in memory "
                    "(ORTSEAL_ROUTE_MEMORY or ORTSEAL_ROUTE_AUTO)");
    return ORTSEAL_OK;
}

ortseal_code os_ram_create(os_ram *r, const char *name, os_file **f, ortseal_error *err) {
    (void)r;
    *f = NULL;
    return FAIL(err, ORTSEAL_E_IO, "cannot make %s: no RAM folder on Windows", name);
}

ortseal_code os_pwrite(os_file *f, const uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    (void)f; (void)buf; (void)len; (void)offset;
    return FAIL(err, ORTSEAL_E_IO, "no RAM files on Windows");
}

const char *os_ram_path(const os_ram *r) { (void)r; return NULL; }
void os_ram_remove(os_ram *r) { (void)r; }
