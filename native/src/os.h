/* The OS layer: the only code that touches files. os_posix.c (Linux, macOS) and os_win.c (Windows)
 * implement it; the rest of the library is plain C11. Every file is opened once, without following a
 * link another user could plant, checked to be a regular file on the opened handle, and read into memory
 * the library owns ("read once, check, then use"). */
#ifndef ORTSEAL_OS_H
#define ORTSEAL_OS_H

#include "internal.h"

typedef struct os_buffer { uint8_t *data; size_t len; } os_buffer;
typedef struct os_dir os_dir;   /* a folder, held open: files named by a model are opened inside it */
typedef struct os_file os_file;

void os_buffer_free(os_buffer *b); /* zeroizes */
/* Read a whole regular file (not a FIFO/device/folder: FORMAT; missing: IO) of at most max bytes. */
ortseal_code os_read_regular(const char *path, uint64_t max, os_buffer *out, ortseal_error *err);
/* Read a model file once and keep its folder open (as the opened descriptor shows). */
ortseal_code os_read_model(const char *path, os_buffer *out, os_dir **dir, ortseal_error *err);
ortseal_code os_open_dir(const char *path, os_dir **dir, ortseal_error *err);
void os_dir_close(os_dir *dir);
/* Open name (one path component, no separators) inside dir: a regular file, links not followed. */
ortseal_code os_open_in(os_dir *dir, const char *name, os_file **f, uint64_t *size, ortseal_error *err);
ortseal_code os_pread(os_file *f, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err);
void os_close(os_file *f);

/* The private RAM folder (docs/sealed-models.md "The private RAM folder"; the same rules and names as
 * ortseal/model/ramdir.py, so Python and C processes share a base): large opened weights go to ORT as
 * 0600 files in a fresh flock-ed 0700 folder "ortseal-open-*" inside this user's base folder on tmpfs or
 * ramfs ($ORTSEAL_RUNTIME_DIR, "none": no folder; $XDG_RUNTIME_DIR; /dev/shm/ortseal-<uid>), every
 * check made on the open folder descriptor. Windows has no such folder (os_win.c: memory only). */
typedef struct os_ram os_ram;
typedef enum os_ram_mode {
    OS_RAM_CHECK,   /* only check $ORTSEAL_RUNTIME_DIR if set (a misconfiguration shows at once); no folder */
    OS_RAM_AUTO,    /* a folder in the first base that passes and has room; *out NULL if none */
    OS_RAM_REQUIRED /* the same, but no usable folder is an error */
} os_ram_mode;
/* Remove this user's stale opening folders in the base (their process is gone: the lock is free), then
 * make a folder with room for need bytes. A refused $ORTSEAL_RUNTIME_DIR: UNSAFE_OPTION; else *out NULL
 * and OK when no base passes (mode AUTO). */
ortseal_code os_ram_open(uint64_t need, os_ram_mode mode, os_ram **out, ortseal_error *err);
/* A new file name in the folder (O_CREAT|O_EXCL|O_NOFOLLOW, 0600), open for writing; safe from any thread.
 * No room for it (ENOSPC, EDQUOT) is NOMEM, as for os_pwrite. */
ortseal_code os_ram_create(os_ram *r, const char *name, os_file **f, ortseal_error *err);
/* Write all of buf at offset; no room on the file system (ENOSPC, EFBIG, EDQUOT) is NOMEM (the caller
 * then opens in memory), any other failure IO. */
ortseal_code os_pwrite(os_file *f, const uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err);
const char *os_ram_path(const os_ram *r); /* absolute, the links above it resolved: ORT opens files under it */
/* Unlink the files made (a thread per core: tmpfs frees their pages now), whatever else this user put in
 * the folder (never following a link), then the folder, still locked; free r. */
void os_ram_remove(os_ram *r);

/* The engine cache (engine.c). An engine file: opened without following a link or waiting on a FIFO,
 * a regular, non-sparse file (TAMPERED otherwise, as ortseal/tensorrt/vault.py), read whole (or, with
 * header_only, its first ORTSEAL_MAX_HEADER_SIZE bytes) once; *file_size from the same fstat. */
ortseal_code os_read_engine(const char *path, bool header_only, os_buffer *out, uint64_t *file_size, ortseal_error *err);
/* Write data to path atomically, as ortseal/_atomic.py does: a temp file beside it made as
 * ".<name>.<random>.new", held with an exclusive lock (flock; on Windows a share mode of none), renamed to
 * ".<name>.<random>.tmp" once locked, mode 0600, written, fsync, renamed over path, fsync of the folder. */
ortseal_code os_write_atomic(const char *path, const uint8_t *data, size_t len, ortseal_error *err);
/* Stale cleanup (ortseal/_atomic.py remove_stale_temps): each entry of dir that kind_of names a temp file is
 * looked up relative to the opened folder, links not followed, and left alone unless this user owns it
 * (POSIX). A regular file is removed only while no process holds its lock (taken, the name then removed
 * while it is held), an OS_TEMP_NEW one only once older than OS_NEW_STALE_SECONDS (a writer may be about to
 * lock it); anything else under a temp name (a link, a FIFO) is removed as itself, never followed; folders
 * are left. removed(ctx, name) is called for each; returns how many. */
typedef enum os_temp_kind { OS_NOT_TEMP, OS_TEMP_LOCKED, OS_TEMP_NEW } os_temp_kind;
#define OS_NEW_STALE_SECONDS 60
size_t os_remove_stale_temps(const char *dir, os_temp_kind (*kind_of)(const char *name),
                             void (*removed)(void *ctx, const char *name), void *ctx);
/* The canonical folder of path (realpath of its dirname) into out. */
bool os_parent_dir(const char *path, char *out, size_t cap);
bool os_canonical_dir(const char *dir, char *out, size_t cap);
const char *os_base_name(const char *path);
/* The shim: load the library at path (the same instance ORT loads by that path) and look up a symbol. */
void *os_library_symbol(const char *path, const char *symbol, ortseal_error *err);
/* Run fn(ctx, i) for i in [0, n) on up to os_cores() threads (the caller's included); returns when all ran. */
void os_parallel(size_t n, void (*fn)(void *ctx, size_t i), void *ctx);
size_t os_cores(void);
/* One process-wide lock for the engine-cache registry. */
void os_registry_lock(void);
void os_registry_unlock(void);

#endif
