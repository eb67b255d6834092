/*
 * libFuzzer target: virtiofsd's record-file loader (tools/virtiofsd/lo_map.c)
 *
 * A restarted virtiofsd loads its maps from files in the state directory.
 * Whatever those files hold, the loader must refuse them or produce a
 * map that works: no crash, no read or write outside the mapping, no
 * record accepted that its owner's check rejects.  Each input is written
 * as a state file and loaded; a loaded map is then used (lookups of
 * every key and beyond, allocations that grow it, removals) and must
 * load again afterwards.
 *
 * With FUZZ_SEED_DIR set, LLVMFuzzerInitialize() writes valid files
 * there first, so that the fuzzer starts from maps that load.
 *
 * Copyright (c) 2026 The virtio-fs reconnect authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "lo_map.h"

#define PAYLOAD_SIZE 16

static const uint8_t owner[LO_MAP_OWNER_SIZE] = "fuzz-lo-map";
static char *dir_path;
static int dir_fd = -1;

typedef struct FuzzRecord {
    uint64_t key;
    uint64_t check;
} FuzzRecord;

static bool fuzz_check(void *opaque, size_t key, const void *payload,
                       Error **errp)
{
    const FuzzRecord *rec = payload;

    if (rec->key != key || rec->check != ~key) {
        error_setg(errp, "record does not match its key");
        return false;
    }
    return true;
}

static void fuzz_add(struct lo_map *map)
{
    struct lo_map_elem *elem = lo_map_alloc_elem(map);
    FuzzRecord *rec;
    size_t key;

    if (!elem) {
        return;
    }
    key = elem - map->elems;
    rec = lo_map_payload(map, key);
    rec->key = key;
    rec->check = ~key;
    lo_map_commit(map, key);
}

static bool fuzz_load(struct lo_map *map, Error **errp)
{
    lo_map_init(map);
    return lo_map_load_file(map, dir_fd, "fd.map", LO_MAP_KIND_FD,
                            PAYLOAD_SIZE, owner, fuzz_check, NULL, errp);
}

static void write_seeds(const char *seed_dir)
{
    int sfd = open(seed_dir, O_RDONLY | O_DIRECTORY);
    int n;

    if (sfd < 0) {
        return;
    }
    for (n = 0; n < 3; n++) {
        g_autofree char *name = g_strdup_printf("seed-%d", n);
        g_autofree char *path = g_strdup_printf("%s/%s", seed_dir, name);
        g_autofree char *contents = NULL;
        gsize len;
        struct lo_map map;
        int i;

        lo_map_init(&map);
        if (!lo_map_create_file(&map, sfd, name, LO_MAP_KIND_FD, PAYLOAD_SIZE,
                                owner, NULL)) {
            break;
        }
        for (i = 0; i < n * 5; i++) {
            fuzz_add(&map);
        }
        if (n) {
            lo_map_remove(&map, 1);
        }
        lo_map_destroy(&map);
        /* Keep seeds small: the header and the records in use */
        if (g_file_get_contents(path, &contents, &len, NULL)) {
            len = MIN(len, 64 + 24 * (n * 5 + 1));
            g_file_set_contents(path, contents, len, NULL);
        }
    }
    close(sfd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    dir_path = g_dir_make_tmp("fuzz-lo-map-XXXXXX", NULL);
    g_assert(dir_path);
    dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY);
    g_assert(dir_fd >= 0);
    if (getenv("FUZZ_SEED_DIR")) {
        write_seeds(getenv("FUZZ_SEED_DIR"));
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lo_map map;
    Error *err = NULL;
    size_t key, nelems;
    int fd, i;

    fd = openat(dir_fd, "fd.map", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                0600);
    g_assert(fd >= 0);
    g_assert(write(fd, data, size) == size);
    close(fd);

    if (!fuzz_load(&map, &err)) {
        /* Refused: one line, and nothing half-loaded */
        g_assert(err && !strchr(error_get_pretty(err), '\n'));
        g_assert(!map.file && !map.elems && map.nelems == 0);
        error_free(err);
        return 0;
    }

    /* Loaded: every used record passed the check, and the map works */
    nelems = map.nelems;
    for (key = 0; key < nelems + 300; key++) {
        if (lo_map_get(&map, key)) {
            g_assert(fuzz_check(NULL, key, lo_map_payload(&map, key), NULL));
        }
    }
    lo_map_get(&map, SIZE_MAX);
    for (i = 0; i < 300; i++) {
        fuzz_add(&map);
    }
    for (key = 0; key < map.nelems; key += 7) {
        lo_map_remove(&map, key);
    }
    lo_map_destroy(&map);

    /* What the map wrote loads again */
    g_assert(fuzz_load(&map, &error_abort));
    lo_map_destroy(&map);
    return 0;
}
