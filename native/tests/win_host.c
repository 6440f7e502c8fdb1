/* The Windows test host (tests/test_native_portability.py runs it under Wine, where Wine is installed):
 * loads ortseal_shim.dll as ORT's TensorRT EP does (LoadLibrary, GetProcAddress "decrypt"/"encrypt") and
 * drives os_win.c's file checks and engine writes directly. It links os_win.c and errors.c, not ortseal.dll,
 * which needs a Windows libcrypto this build does not have: random_bytes, hex_encode and wipe below stand
 * in for crypto.c's. Prints one line per check, "ok NAME", "unsupported NAME: why" (what Wine cannot do) or
 * "FAIL NAME: why", and exits 1 if any check failed.
 *   ortseal_win_host.exe FOLDER_FOR_FILES */
#define _CRT_RAND_S
#define __USE_MINGW_ANSI_STDIO 1
#ifndef UNICODE
#define UNICODE
#endif
#include "os.h"

#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool random_bytes(uint8_t *out, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned int r;
        if (rand_s(&r)) return false;
        out[i] = (uint8_t)r;
    }
    return true;
}

void wipe(void *p, size_t n) { if (p && n) SecureZeroMemory(p, n); }

void hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = digits[in[i] >> 4]; out[2 * i + 1] = digits[in[i] & 15]; }
    out[2 * n] = '\0';
}

static int failures;

static void check(const char *name, bool ok, const char *why) {
    printf("%s %s%s%s\n", ok ? "ok" : "FAIL", name, ok ? "" : ": ", ok ? "" : why);
    if (!ok) failures++;
}

/* ---- the shim, as ORT loads it ------------------------------------------------------------------- */
static char seen_path[512];

static int on_decrypt(void *user, const char *path, char *buf, size_t *size) {
    snprintf(seen_path, sizeof seen_path, "%s", path);
    if (!buf) *size = 5;
    else memcpy(buf, "plain", 5);
    return 1;
}

static int on_encrypt(void *user, const char *path, const char *data, size_t size) {
    return size == 6 && memcmp(data, "engine", 6) == 0;
}

static void shim_checks(void) {
    HMODULE shim = LoadLibraryW(L"ortseal_shim.dll");
    check("shim-loads", shim != NULL, "LoadLibrary failed");
    if (!shim) return;
    typedef int (*dec_fn)(const char *, char *, size_t *);
    typedef int (*enc_fn)(const char *, char *, size_t);
    typedef int (*reg_fn)(int (*)(void *, const char *, char *, size_t *), int (*)(void *, const char *, const char *, size_t), void *);
    dec_fn dec = (dec_fn)(void *)GetProcAddress(shim, "decrypt");
    enc_fn enc = (enc_fn)(void *)GetProcAddress(shim, "encrypt");
    reg_fn reg = (reg_fn)(void *)GetProcAddress(shim, "ortseal_shim_register");
    void (*unreg)(void) = (void (*)(void))(void *)GetProcAddress(shim, "ortseal_shim_unregister");
    check("shim-exports", dec && enc && reg && unreg, "GetProcAddress found no decrypt/encrypt/register/unregister");
    if (!(dec && enc && reg && unreg)) return;
    size_t size = 0;
    char buf[5], engine[] = "engine";
    check("shim-refuses-unregistered", dec("C:\\cache\\a.engine.encrypted", NULL, &size) == 0, "decrypt answered with no vault");
    check("shim-registers", reg(on_decrypt, on_encrypt, NULL) == 1, "the shim refused the callbacks");
    check("shim-routes-decrypt", dec("C:\\cache\\a.engine.encrypted", NULL, &size) == 1 && size == 5 &&
          dec("C:\\cache\\a.engine.encrypted", buf, &size) == 1 && memcmp(buf, "plain", 5) == 0 &&
          strcmp(seen_path, "C:\\cache\\a.engine.encrypted") == 0, "decrypt did not reach the callback");
    check("shim-routes-encrypt", enc("C:\\cache\\a.engine.encrypted", engine, 6) == 1, "encrypt did not reach the callback");
    unreg();
    check("shim-unregisters", dec("C:\\cache\\a.engine.encrypted", NULL, &size) == 0, "decrypt still answered");
}

/* ---- os_win.c -------------------------------------------------------------------------------------- */
static char folder[1024];

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s\\%s", folder, name); }

static HANDLE create(const char *name, DWORD share) {
    char path[1200];
    wchar_t w[1200];
    path_of(path, sizeof path, name);
    MultiByteToWideChar(CP_UTF8, 0, path, -1, w, 1200);
    return CreateFileW(w, GENERIC_WRITE, share, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
}

static bool exists(const char *name) {
    char path[1200];
    wchar_t w[1200];
    path_of(path, sizeof path, name);
    MultiByteToWideChar(CP_UTF8, 0, path, -1, w, 1200);
    return GetFileAttributesW(w) != INVALID_FILE_ATTRIBUTES;
}

static size_t temps_left(void) {
    char pattern[1200];
    wchar_t w[1200];
    path_of(pattern, sizeof pattern, ".e.engine.encrypted.*");
    MultiByteToWideChar(CP_UTF8, 0, pattern, -1, w, 1200);
    WIN32_FIND_DATAW found;
    HANDLE h = FindFirstFileW(w, &found);
    size_t n = 0;
    if (h != INVALID_HANDLE_VALUE) { do n++; while (FindNextFileW(h, &found)); FindClose(h); }
    return n;
}

static os_temp_kind engine_temp(const char *name) {
    size_t n = strlen(name);
    if (strncmp(name, ".e.engine.encrypted.", 20) != 0 || n < 24) return OS_NOT_TEMP;
    return strcmp(name + n - 4, ".tmp") == 0 ? OS_TEMP_LOCKED : strcmp(name + n - 4, ".new") == 0 ? OS_TEMP_NEW : OS_NOT_TEMP;
}

static void file_checks(void) {
    char path[1200];
    ortseal_error err = {0};
    os_buffer buf = {0};
    uint64_t size = 0;

    path_of(path, sizeof path, "e.engine.encrypted");
    ortseal_code code = os_write_atomic(path, (const uint8_t *)"sealed bytes", 12, &err);
    check("write-atomic", !code && temps_left() == 0, err.message);
    code = os_read_engine(path, false, &buf, &size, &err);
    check("read-engine", !code && buf.len == 12 && memcmp(buf.data, "sealed bytes", 12) == 0, err.message);
    os_buffer_free(&buf);

    /* A writer's temp file is shared with nobody: the cleaner cannot open it, so it stays; once its writer
     * is gone it is removed. A young .new stays, an old one goes. */
    HANDLE live = create(".e.engine.encrypted.live.tmp", 0);
    HANDLE young = create(".e.engine.encrypted.young.new", FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    HANDLE old = create(".e.engine.encrypted.old.new", FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    FILETIME long_ago = {0, 0x01D00000}; /* 2014 */
    SetFileTime(old, NULL, NULL, &long_ago);
    CloseHandle(young);
    CloseHandle(old);
    size_t removed = os_remove_stale_temps(folder, engine_temp, NULL, NULL);
    check("cleanup-leaves-live-writer", exists(".e.engine.encrypted.live.tmp"), "a live writer's temp file was removed");
    check("cleanup-new-rules", removed == 1 && exists(".e.engine.encrypted.young.new") && !exists(".e.engine.encrypted.old.new"),
          "a young .new was removed or an old one kept");
    CloseHandle(live);
    removed = os_remove_stale_temps(folder, engine_temp, NULL, NULL);
    check("cleanup-removes-dead-writer", removed == 1 && !exists(".e.engine.encrypted.live.tmp"), "a dead writer's temp file stayed");

    /* Share modes: a file another handle holds open for writing is not read (what we check is what we read). */
    HANDLE writer = create("held.engine.encrypted", FILE_SHARE_READ);
    path_of(path, sizeof path, "held.engine.encrypted");
    code = os_read_engine(path, false, &buf, &size, &err);
    check("refuses-file-open-for-writing", code == ORTSEAL_E_IO, "an engine held open for writing was read");
    os_buffer_free(&buf);
    CloseHandle(writer);

    path_of(path, sizeof path, "sub");
    CreateDirectoryA(path, NULL);
    code = os_read_engine(path, false, &buf, &size, &err);
    check("refuses-folder-as-engine", code != ORTSEAL_OK, "a folder was read as an engine");
    os_buffer_free(&buf);

    /* Names a model may give its data files: only plain names inside its folder. */
    os_dir *dir = NULL;
    os_file *f = NULL;
    code = os_open_dir(folder, &dir, &err);
    check("open-dir", !code, err.message);
    const char *bad[] = {"CON", "nul.txt", "COM1.data", "a.", "a ", "x:stream", "..\\up", "sub/x", ".."};
    for (size_t i = 0; !code && i < sizeof bad / sizeof *bad; i++) {
        char name[64];
        snprintf(name, sizeof name, "refuses-name %s", bad[i]);
        ortseal_code c = os_open_in(dir, bad[i], &f, &size, &err);
        check(name, c == ORTSEAL_E_FORMAT, "opened");
        os_close(f);
        f = NULL;
    }
    if (!code) {
        code = os_open_in(dir, "e.engine.encrypted", &f, &size, &err);
        check("open-in-folder", !code && size == 12, err.message);
        os_close(f);
        f = NULL;
    }

    /* A symbolic link in a data file's place or an engine's: opened as itself and refused, never followed. */
    char target[1200];
    wchar_t wlink[1200], wtarget[1200];
    path_of(target, sizeof target, "e.engine.encrypted");
    path_of(path, sizeof path, "link.engine.encrypted");
    MultiByteToWideChar(CP_UTF8, 0, target, -1, wtarget, 1200);
    MultiByteToWideChar(CP_UTF8, 0, path, -1, wlink, 1200);
    BOOL made = CreateSymbolicLinkW(wlink, wtarget, 0x2 /* SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE */);
    DWORD attrs = GetFileAttributesW(wlink);
    if (!made || attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_REPARSE_POINT)) {
        /* Wine 8 answers TRUE and makes nothing */
        printf("unsupported symlink-refused: CreateSymbolicLinkW made no reparse point (returned %d)\n", (int)made);
    } else {
        code = os_read_engine(path, false, &buf, &size, &err);
        check("symlink-engine-refused", code == ORTSEAL_E_TAMPERED, err.message);
        os_buffer_free(&buf);
        if (dir) {
            code = os_open_in(dir, "link.engine.encrypted", &f, &size, &err);
            check("symlink-data-file-refused", code == ORTSEAL_E_FORMAT, err.message);
            os_close(f);
        }
    }
    os_dir_close(dir);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    snprintf(folder, sizeof folder, "%s", argv[1]);
    shim_checks();
    file_checks();
    return failures ? 1 : 0;
}
