/*
 * libFuzzer target: virtiofsd's session file loader (lo_session_decode()).
 *
 * The first input byte chooses whether the harness fixes up the CRC of
 * the rest, so the fuzzer also reaches the checks behind the checksum.
 * A session that decodes must encode back to the very same bytes: the
 * loader accepts nothing the daemon would not have written.
 *
 * With FUZZ_SEED_DIR set, LLVMFuzzerInitialize() writes a valid file
 * there as a seed.
 *
 * Copyright (c) 2026 The virtio-fs reconnect authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/crc32c.h"
#include "lo_session.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("FUZZ_SEED_DIR");
    uint8_t seed[1 + LO_SESSION_FILE_SIZE];
    LoSession s = {
        .root_dev = 0x801, .root_ino = 2, .bufsize = (1 << 20) + 4096,
        .flags = LO_SESSION_KILLPRIV_V2,
        .options = LO_SESSION_OPT_XATTR | LO_SESSION_OPT_FLOCK,
        .cache = LO_SESSION_CACHE_AUTO,
        .conn = {
            .proto_major = 7, .proto_minor = 36, .max_write = 1 << 20,
            .max_readahead = 1 << 17, .capable = 0xffff, .want = 0x1234,
            .max_background = 12, .congestion_threshold = 9, .time_gran = 1,
        },
    };
    g_autofree char *path = NULL;

    if (!dir) {
        return 0;
    }
    seed[0] = 1;
    lo_session_encode(&s, seed + 1);
    path = g_strdup_printf("%s/valid", dir);
    g_assert_true(g_file_set_contents(path, (const char *)seed, sizeof(seed),
                                      NULL));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t buf[LO_SESSION_FILE_SIZE + 64];
    uint8_t again[LO_SESSION_FILE_SIZE];
    Error *err = NULL;
    LoSession s;
    size_t len;

    if (size < 1 || size - 1 > sizeof(buf)) {
        return 0;
    }
    len = size - 1;
    memcpy(buf, data + 1, len);
    if ((data[0] & 1) && len == LO_SESSION_FILE_SIZE) {
        stl_le_p(buf + len - 4, crc32c(0xffffffff, buf, len - 4));
    }
    if (!lo_session_decode(buf, len, &s, &err)) {
        /* One line, always */
        g_assert_nonnull(err);
        g_assert_null(strchr(error_get_pretty(err), '\n'));
        error_free(err);
        return 0;
    }
    g_assert_null(err);
    g_assert_cmpuint(len, ==, LO_SESSION_FILE_SIZE);
    lo_session_encode(&s, again);
    g_assert_true(memcmp(again, buf, LO_SESSION_FILE_SIZE) == 0);
    return 0;
}
