/*
 * workload.c - guest-side filesystem workload for virtio-fs restart tests
 *
 * This program runs inside a minimal Linux guest on a virtio-fs mount while
 * the host kills and restarts the virtio-fs daemon.  The host reads the
 * guest serial console and checks the log, so every step is logged with its
 * result, one line each, on stdout.
 *
 * Build (on the host):
 *   gcc -static -O2 -Wall -Wextra -Werror -std=gnu11 -o workload \
 *       workload.c -lpthread
 *
 * Subcommands:
 *   data --dir D --workers N --files F --size BYTES --bs BLOCK [--seed S]
 *        [--verify-only [--gen G | --gens G,G,...]] [--gen G]
 *        [--duration-ms MS]
 *   meta --dir D --workers N --iters K [--seed S] [--require-xattr]
 *        [--duration-ms MS]    (stop after K iterations or MS ms)
 *   all  --dir D --workers N --files F --size BYTES --bs BLOCK --iters K
 *        [any of the optional data and meta options]
 *   data, meta and all take --stat-dir D2: first stat every entry of D2
 *   (keeps that many inodes in the session, for benchmarks), and
 *   --stop-file F: finish the current round once F exists, and
 *   --probe-ms P: a probe thread (see below)
 *   hold --dir D            (commands on stdin, see hold_cmd())
 * BYTES and BLOCK accept a k/m/g suffix (binary units).
 *
 * Log format (one line per step; lines of threads never interleave):
 *   WL START <argv joined by spaces>
 *   WL <worker> <seq> <op> <path-or-dash> <result> [ms=<ms>] [key=value ...]
 *   WL SUMMARY ops=<N> errors=<E> mismatches=<M> bytes_written=<B>
 *      bytes_verified=<V> elapsed_ms=<T>                 (a single line)
 *
 *   worker   "main", "hold" or "w<N>"; seq is a per-worker counter from 0
 *   result   "ok", "err=<ERRNO_NAME>" (e.g. err=EIO; err=<number> if the
 *            name is not in the table) or "err=MISMATCH" (wrong content)
 *   ms       duration of the op in ms (absent on "mismatch" lines)
 *
 * data: worker i owns the files D/w<i>.f<j>.  Each block of BLOCK bytes
 * (the last one may be shorter but holds at least the header) starts with
 * a 32-byte little-endian header:
 *   0 magic "WLBLK001", 8 worker, 12 file, 16 block index, 20 generation,
 *   24 CRC32 of the payload, 28 CRC32 of header bytes 0..27
 * followed by a pseudo-random payload derived from (seed, worker, file,
 * block, generation).  One "write" and one "verify" line is logged per
 * file, plus one line per failing syscall (with block=<k> where it applies)
 * and one line per bad block, e.g.
 *   WL w0 7 mismatch D/w0.f1 err=MISMATCH block=3 what=payloadcrc at=100
 * Generation g is used in round g (--duration-ms loops over rounds; --gen
 * sets the first one).  --verify-only without --gen takes the generation
 * from block 0 of each file and requires every block to carry it (so a
 * whole file rolled back to an older generation passes); with --gen G
 * every block of every file must carry G, with --gens one generation per
 * file, workers x files of them, w0.f0 first then w0.f1, ... (the hosts
 * pass what the guest's last "write ... ok ... gen=G" line of each file
 * says; commas, so not through the guest's wl.run).  A file whose length
 * is not --size is a mismatch (what=size).
 *
 * meta: worker i works in D/m<i> (in "all", meta workers are numbered after
 * the N data workers) and removes it at the end.
 *
 * probe (--probe-ms P, with data, meta or all): one more thread, "probe",
 * measures when the daemon serves the guest again.  Probe k creates
 * D/probe/p<k> (O_CREAT|O_EXCL: the guest's caches cannot answer it, the
 * daemon must), closes it and unlinks p<k-1>, then sleeps P ms (not after
 * a probe that took longer than P, so that the probe after a stall follows
 * at once).  One line per probe, with the guest's CLOCK_MONOTONIC in us at
 * its start and end:
 *   WL probe <k> create D/probe/p<k> <result> ms=<ms> t0=<us> t1=<us>
 * The host, having killed the daemon, lists D/probe: the probes whose file
 * it does not find there had to reach the new daemon.  The probe stops
 * once the other workers are done and removes its file and D/probe.
 * Its lines do not match "WL w<N>"/"WL m<N>" (the hosts' step counts);
 * their failures count as errors like any other.
 *
 * Counting: ops counts all WL op lines, errors those with an errno result
 * and mismatches those with err=MISMATCH, except that the "write"/"verify"
 * summary lines only repeat a failure already logged (and counted) on its
 * own line, and an unsupported-xattr line counts only with --require-xattr.
 * Exit status: 0 iff errors == 0 and mismatches == 0; 1 otherwise; 2 for
 * argument errors.
 */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define RES_MISMATCH    (-1)
#define LOG_NOMS        1       /* no ms= field */
#define LOG_NOCOUNT     2       /* failure is not counted in the summary */
#define BLK_HDR         32
#define MAX_WORKERS     1024
#define MAX_BS          (64u << 20)
#define HOLD_SLOTS      64
#define HOLD_MAX_LEN    (64u << 20)
#define GEN_AUTO        UINT64_MAX
#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))

enum { CMD_DATA = 1, CMD_META = 2, CMD_ALL = 4, CMD_HOLD = 8 };

typedef struct Options {
    int cmd;
    const char *dir;
    const char *stat_dir;       /* --stat-dir: look every entry up first */
    const char *stop_file;      /* --stop-file: stop once it exists */
    uint64_t workers, files, iters, seed;
    uint64_t size, bs;          /* bytes */
    uint64_t gen;               /* GEN_AUTO unless --gen */
    const char *gens_arg;       /* --gens */
    uint32_t *gens;             /* its values, workers x files */
    uint64_t duration_ms;       /* 0: one round */
    uint64_t probe_ms;          /* --probe-ms: 0 for no probe thread */
    bool verify_only, require_xattr;
} Options;

typedef struct Worker {
    char name[16];
    unsigned id;
    uint64_t seq;
    int64_t mark;               /* start of the op being timed */
    bool xattr_off;
    pthread_t thread;
} Worker;

typedef struct HoldSlot {
    bool used;
    char key[64];
    char path[PATH_MAX];
    int fd;
    DIR *dir;
} HoldSlot;

static Options opts = { .seed = 1, .gen = GEN_AUTO };
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t stat_ops, stat_errors, stat_mismatches;
static uint64_t stat_written, stat_verified;
static uint32_t crc_table[256];
static HoldSlot hold_slots[HOLD_SLOTS];
static bool probe_done;         /* the other workers have finished */

/* ---- helpers ---------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const struct {
    int num;
    const char *name;
} errno_names[] = {
#define E(x) { x, #x }
    E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG),
    E(EBADF), E(EAGAIN), E(ENOMEM), E(EACCES), E(EFAULT), E(EBUSY),
    E(EEXIST), E(EXDEV), E(ENODEV), E(ENOTDIR), E(EISDIR), E(EINVAL),
    E(ENFILE), E(EMFILE), E(ENOTTY), E(ETXTBSY), E(EFBIG), E(ENOSPC),
    E(ESPIPE), E(EROFS), E(EMLINK), E(EPIPE), E(ERANGE), E(EDEADLK),
    E(ENAMETOOLONG), E(ENOLCK), E(ENOSYS), E(ENOTEMPTY), E(ELOOP),
    E(ENODATA), E(EOPNOTSUPP), E(EOVERFLOW), E(EBADMSG), E(ETIMEDOUT),
    E(ESTALE), E(ENOTCONN), E(ECONNREFUSED), E(ECONNRESET),
    E(ECONNABORTED), E(EDQUOT), E(ECANCELED), E(ENOTSOCK), E(EPROTO),
    E(ENOMSG), E(EIDRM), E(ENOLINK), E(ESHUTDOWN), E(EHOSTDOWN),
#undef E
};

/* Copy @src to @dst replacing blanks and non-printables by '?'. */
static void sanitize(char *dst, size_t len, const char *src)
{
    size_t i;

    for (i = 0; src[i] && i + 1 < len; i++) {
        unsigned char c = src[i];
        dst[i] = (c <= ' ' || c >= 0x7f) ? '?' : (char)c;
    }
    dst[i] = '\0';
}

/*
 * Log one op line for worker @w.  @res is 0, an errno value or
 * RES_MISMATCH; @flags is a mask of LOG_*.  ms= is the time since w->mark,
 * which is then reset so that back-to-back ops time themselves.
 */
static void __attribute__((format(printf, 6, 7)))
wl_logx(Worker *w, const char *op, const char *path, int res, int flags,
        const char *fmt, ...)
{
    char extra[600] = "", spath[PATH_MAX], result[48] = "ok", ms[40] = "";
    int64_t now = now_ns();
    va_list ap;
    size_t i;

    if (!(flags & LOG_NOMS)) {
        snprintf(ms, sizeof(ms), " ms=%" PRId64, (now - w->mark) / 1000000);
    }
    if (fmt) {
        extra[0] = ' ';
        va_start(ap, fmt);
        vsnprintf(extra + 1, sizeof(extra) - 1, fmt, ap);
        va_end(ap);
    }
    sanitize(spath, sizeof(spath), path && path[0] ? path : "-");
    if (res == RES_MISMATCH) {
        snprintf(result, sizeof(result), "err=MISMATCH");
    } else if (res) {
        snprintf(result, sizeof(result), "err=%d", res);
        for (i = 0; i < ARRAY_SIZE(errno_names); i++) {
            if (errno_names[i].num == res) {
                snprintf(result, sizeof(result), "err=%s",
                         errno_names[i].name);
            }
        }
    }

    pthread_mutex_lock(&log_lock);
    printf("WL %s %" PRIu64 " %s %s %s%s%s\n", w->name, w->seq++, op, spath,
           result, ms, extra);
    fflush(stdout);
    stat_ops++;
    if (!(flags & LOG_NOCOUNT) && res == RES_MISMATCH) {
        stat_mismatches++;
    } else if (!(flags & LOG_NOCOUNT) && res > 0) {
        stat_errors++;
    }
    pthread_mutex_unlock(&log_lock);
    w->mark = now_ns();
}

#define wl_log(w, op, path, res, ...) \
    wl_logx(w, op, path, res, 0, __VA_ARGS__)

/* Log the result of a syscall that returned @rc (errno set if < 0). */
static bool step(Worker *w, const char *op, const char *path, const char *to,
                 long rc)
{
    int err = rc < 0 ? errno : 0;

    if (to) {
        wl_log(w, op, path, err, "to=%s", to);
    } else {
        wl_log(w, op, path, err, NULL);
    }
    return err == 0;
}

/* Log the failure in errno of @op (on block @block if >= 0). */
static int log_errno(Worker *w, const char *op, const char *path,
                     int64_t block)
{
    int err = errno;

    if (block >= 0) {
        wl_log(w, op, path, err, "block=%" PRId64, block);
    } else {
        wl_log(w, op, path, err, NULL);
    }
    return err;
}

static void __attribute__((format(printf, 2, 3)))
path_fmt(char *buf, const char *fmt, ...)
{
    va_list ap;

    /* --dir is limited in length, so this cannot truncate */
    va_start(ap, fmt);
    vsnprintf(buf, PATH_MAX, fmt, ap);
    va_end(ap);
}

static uint32_t crc32(const uint8_t *p, size_t len)
{
    uint32_t c = 0xffffffffu;

    while (len--) {
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    }
    return c ^ 0xffffffffu;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v;
    p[1] = v >> 8;
    p[2] = v >> 16;
    p[3] = v >> 24;
}

static uint32_t get_le32(const uint8_t *p)
{
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

/*
 * pread/pwrite all of @len bytes, retrying on EINTR and short transfers.
 * Returns the byte count (short only for a read at EOF) or -1.
 */
static ssize_t io_full(bool wr, int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    ssize_t n;

    while (done < len) {
        n = wr ? pwrite(fd, (char *)buf + done, len - done, off + done) :
                 pread(fd, (char *)buf + done, len - done, off + done);
        if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 || (n == 0 && wr)) {
            errno = n < 0 ? errno : EIO;
            return -1;
        } else if (n == 0) {
            break;
        }
        done += n;
    }
    return done;
}

static void count_bytes(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* ---- data: patterned block writes and verification -------------------- */

static void block_build(uint8_t *buf, size_t len, uint32_t worker,
                        uint32_t file, uint32_t block, uint32_t gen)
{
    uint64_t st, v;
    size_t i, b;

    st = mix64(opts.seed ^ 0x574c424c4b303031ULL);
    st = mix64(st ^ worker);
    st = mix64(st ^ file);
    st = mix64(st ^ block);
    st = mix64(st ^ gen);
    for (i = BLK_HDR; i < len; i += 8) {
        st += 0x9e3779b97f4a7c15ULL;
        v = mix64(st);
        for (b = 0; b < 8 && i + b < len; b++) {
            buf[i + b] = v >> (8 * b);
        }
    }
    memcpy(buf, "WLBLK001", 8);
    put_le32(buf + 8, worker);
    put_le32(buf + 12, file);
    put_le32(buf + 16, block);
    put_le32(buf + 20, gen);
    put_le32(buf + 24, crc32(buf + BLK_HDR, len - BLK_HDR));
    put_le32(buf + 28, crc32(buf, 28));
}

/*
 * Classify how block @got differs from @exp (NULL if identical): "magic"
 * (no header, e.g. zeroes), "header"/"payloadcrc" (does not match its own
 * CRC: corrupted), "identity" (another worker/file/block), "generation"
 * (stale data) or "payload" (consistent but unexpected, e.g. another
 * seed).  @at gets the offset of the first differing byte.
 */
static const char *block_diff(const uint8_t *got, const uint8_t *exp,
                              size_t len, size_t *at)
{
    if (memcmp(got, exp, len) == 0) {
        return NULL;
    }
    for (*at = 0; got[*at] == exp[*at]; (*at)++) {
        /* find the first differing byte */
    }
    if (*at < 8 || get_le32(got + 28) != crc32(got, 28)) {
        return *at < 8 ? "magic" : "header";
    }
    if (*at < 24) {
        return *at < 20 ? "identity" : "generation";
    }
    return get_le32(got + 24) != crc32(got + BLK_HDR, len - BLK_HDR) ?
           "payloadcrc" : "payload";
}

/*
 * Write (@wr) or verify generation @gen of file @j.  When verifying with
 * @gen_auto, the generation is taken from the header of block 0.  One
 * "write"/"verify" line is logged at the end.  Returns true if all is well.
 */
static bool data_file(Worker *w, unsigned j, bool wr, uint32_t gen,
                      bool gen_auto, uint8_t *exp, uint8_t *got)
{
    char path[PATH_MAX];
    int64_t t0 = now_ns();
    uint32_t k, nb = (opts.size + opts.bs - 1) / opts.bs;
    uint64_t bytes = 0, bad = 0;
    const char *what;
    size_t len, at = 0;
    ssize_t n;
    int fd, err = 0;

    path_fmt(path, "%s/w%u.f%u", opts.dir, w->id, j);
    w->mark = t0;
    fd = open(path, wr ? O_RDWR | O_CREAT : O_RDONLY, 0644);
    if (fd < 0) {
        err = log_errno(w, "open", path, -1);
        goto out;
    }
    w->mark = now_ns();
    if (wr && ftruncate(fd, opts.size) < 0) {
        err = log_errno(w, "ftruncate", path, -1);
    }
    if (!wr) {
        struct stat st;

        if (fstat(fd, &st) < 0) {
            err = log_errno(w, "fstat", path, -1);
        } else if ((uint64_t)st.st_size != opts.size) {
            bad++;
            wl_logx(w, "mismatch", path, RES_MISMATCH, LOG_NOMS,
                    "what=size got=%lld want=%" PRIu64,
                    (long long)st.st_size, opts.size);
        }
    }
    for (k = 0; k < nb && !err; k++) {
        len = opts.size - (uint64_t)k * opts.bs;
        len = len < opts.bs ? len : opts.bs;
        if (wr) {
            block_build(exp, len, w->id, j, k, gen);
        }
        w->mark = now_ns();
        n = io_full(wr, fd, wr ? exp : got, len, (off_t)k * opts.bs);
        if (n < 0) {
            err = log_errno(w, wr ? "pwrite" : "pread", path, k);
            break;
        }
        if ((size_t)n < len) {
            bad++;
            wl_logx(w, "mismatch", path, RES_MISMATCH, LOG_NOMS,
                    "block=%" PRIu32 " what=short got=%zd", k, n);
            break;
        }
        if (!wr) {
            if (gen_auto && k == 0 && memcmp(got, "WLBLK001", 8) == 0 &&
                get_le32(got + 28) == crc32(got, 28)) {
                gen = get_le32(got + 20);
            }
            block_build(exp, len, w->id, j, k, gen);
            what = block_diff(got, exp, len, &at);
            if (what) {
                bad++;
                wl_logx(w, "mismatch", path, RES_MISMATCH, LOG_NOMS,
                        "block=%" PRIu32 " what=%s at=%zu found_gen=%"
                        PRIu32, k, what, at, get_le32(got + 20));
                continue;
            }
        }
        bytes += len;
        count_bytes(wr ? &stat_written : &stat_verified, len);
    }
    w->mark = now_ns();
    if (wr && !err && fsync(fd) < 0) {
        err = log_errno(w, "fsync", path, -1);
    }
    /* drop cached pages so that verification reads from the daemon */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    w->mark = now_ns();
    if (close(fd) < 0 && !err) {
        err = log_errno(w, "close", path, -1);
    }
out:
    w->mark = t0;
    wl_logx(w, wr ? "write" : "verify", path, err ? err : bad ?
            RES_MISMATCH : 0, LOG_NOCOUNT, "gen=%" PRIu32 " bytes=%" PRIu64
            " mismatches=%" PRIu64, gen, bytes, bad);
    return !err && !bad;
}

/* --stop-file: the host asks the workers to finish */
static bool stop_requested(void)
{
    return opts.stop_file && access(opts.stop_file, F_OK) == 0;
}

static void *data_worker(void *arg)
{
    Worker *w = arg;
    uint8_t *exp = malloc(opts.bs);
    uint8_t *got = malloc(opts.bs);
    bool *wrote = calloc(opts.files, sizeof(bool));
    bool gen_auto = opts.gen == GEN_AUTO && !opts.gens;
    uint32_t gen0 = gen_auto ? 0 : opts.gen;
    int64_t t_start = now_ns();
    uint32_t round, gen;
    unsigned j;

    if (!exp || !got || !wrote) {
        wl_log(w, "malloc", NULL, ENOMEM, NULL);
        goto out;
    }
    for (round = 0;; round++) {
        gen = opts.verify_only ? gen0 : gen0 + round;
        for (j = 0; j < opts.files && !opts.verify_only; j++) {
            wrote[j] = data_file(w, j, true, gen, false, exp, got);
        }
        for (j = 0; j < opts.files; j++) {
            if (opts.verify_only || wrote[j]) {
                data_file(w, j, false,
                          opts.gens ? opts.gens[w->id * opts.files + j] : gen,
                          opts.verify_only && gen_auto, exp, got);
            }
        }
        if ((now_ns() - t_start) / 1000000 >= (int64_t)opts.duration_ms ||
            stop_requested()) {
            break;
        }
    }
out:
    free(exp);
    free(got);
    free(wrote);
    return NULL;
}

/* ---- meta: namespace operations --------------------------------------- */

static __thread unsigned long cleanup_count;

static int cleanup_cb(const char *path, const struct stat *sb, int type,
                      struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if ((type == FTW_DP ? rmdir(path) : unlink(path)) == 0) {
        cleanup_count++;
    }
    return 0;
}

/*
 * Read directory @path and compare its entries with @expect[@n].
 * Returns 0, an errno value or RES_MISMATCH; @info gets a description.
 */
static int dir_check(const char *path, const char *const *expect, size_t n,
                     char *info, size_t info_len)
{
    char extra[NAME_MAX + 1] = "";
    unsigned count = 0, found = 0;
    struct dirent *de;
    DIR *d;
    size_t i;
    int err;

    snprintf(info, info_len, "count=0");
    d = opendir(path);
    if (!d) {
        return errno;
    }
    for (errno = 0; (de = readdir(d)) != NULL; errno = 0) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        count++;
        for (i = 0; i < n && strcmp(de->d_name, expect[i]); i++) {
            /* look the name up */
        }
        if (i < n) {
            found |= 1u << i;
        } else if (!extra[0]) {
            sanitize(extra, sizeof(extra), de->d_name);
        }
    }
    err = errno;
    closedir(d);
    for (i = 0; i < n && (found & (1u << i)); i++) {
        /* look for a missing name */
    }
    snprintf(info, info_len, "count=%u%s%s%s%s", count,
             i < n ? " missing=" : "", i < n ? expect[i] : "",
             extra[0] ? " extra=" : "", extra);
    return err ? err : (i < n || extra[0]) ? RES_MISMATCH : 0;
}

/*
 * One meta iteration in directory @base: create f<it>, mkdir d<it>, move
 * the file to d<it>/f, hard link d<it>/l, symlink d<it>/s -> f, check
 * everything, then remove it all.  Steps after a failed syscall are skipped.
 */
static void meta_iter(Worker *w, const char *base, unsigned it)
{
    static const char *const expect[] = { "f", "l", "s" };
    char f0[PATH_MAX], d[PATH_MAX], f[PATH_MAX], l[PATH_MAX], s[PATH_MAX];
    char content[128], xval[64], buf[256], info[300];
    const char *rm[] = { s, l, f };
    struct stat st, st2 = { 0 };
    size_t clen, xlen, i;
    ssize_t n = 0;
    int fd, res = 0;

    path_fmt(f0, "%s/f%u", base, it);
    path_fmt(d, "%s/d%u", base, it);
    path_fmt(f, "%s/f", d);
    path_fmt(l, "%s/l", d);
    path_fmt(s, "%s/s", d);
    clen = snprintf(content, sizeof(content), "wl-meta %s iter %u seed %"
                    PRIu64 "\n", w->name, it, opts.seed);
    xlen = snprintf(xval, sizeof(xval), "%s-%u-%" PRIu64, w->name, it,
                    opts.seed);

    w->mark = now_ns();
    fd = open(f0, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0 || io_full(true, fd, content, clen, 0) < 0) {
        res = errno;
    }
    if (fd >= 0 && close(fd) < 0 && !res) {
        res = errno;
    }
    wl_log(w, "create", f0, res, "bytes=%zu", clen);
    if (res) {
        goto fail;
    }
    count_bytes(&stat_written, clen);
    if (!step(w, "mkdir", d, NULL, mkdir(d, 0755)) ||
        !step(w, "rename", f0, f, rename(f0, f)) ||
        !step(w, "link", f, l, link(f, l)) ||
        !step(w, "symlink", s, NULL, symlink("f", s))) {
        goto fail;
    }

    n = readlink(s, buf, sizeof(buf) - 1);
    res = n < 0 ? errno : (n != 1 || buf[0] != 'f') ? RES_MISMATCH : 0;
    buf[n < 0 ? 0 : n] = '\0';
    sanitize(info, sizeof(info), buf);
    wl_log(w, "readlink", s, res, "target=%s", info);
    if (res > 0) {
        goto fail;
    }

    /* stat checks: type, size, nlink; the symlink resolves to the file */
    if (stat(f, &st) < 0) {
        log_errno(w, "stat", f, -1);
        goto fail;
    }
    res = (!S_ISREG(st.st_mode) || (size_t)st.st_size != clen ||
           st.st_nlink != 2) ? RES_MISMATCH : 0;
    wl_log(w, "stat", f, res, "size=%" PRIu64 " nlink=%" PRIu64,
           (uint64_t)st.st_size, (uint64_t)st.st_nlink);
    res = lstat(s, &st2) < 0 ? errno : S_ISLNK(st2.st_mode) ? 0 :
          RES_MISMATCH;
    if (!res) {
        res = stat(s, &st2) < 0 ? errno :
              st2.st_ino == st.st_ino ? 0 : RES_MISMATCH;
    }
    wl_log(w, "stat", s, res, "ino=%" PRIu64, (uint64_t)st2.st_ino);
    if (res > 0) {
        goto fail;
    }

    /* read the content back through the hard link */
    res = 0;
    n = -1;
    fd = open(l, O_RDONLY);
    if (fd < 0 || (n = io_full(false, fd, buf, sizeof(buf), 0)) < 0) {
        res = errno;
    } else if ((size_t)n != clen || memcmp(buf, content, clen)) {
        res = RES_MISMATCH;
    } else {
        count_bytes(&stat_verified, clen);
    }
    if (fd >= 0) {
        close(fd);
    }
    wl_log(w, "read", l, res, "bytes=%zd", n);

    /* xattrs, unless the filesystem does not support them */
    if (!w->xattr_off && setxattr(f, "user.wl", xval, xlen, 0) < 0) {
        res = errno;
        if (res == EOPNOTSUPP || res == ENOTSUP) {
            wl_logx(w, "setxattr", f, res,
                    opts.require_xattr ? 0 : LOG_NOCOUNT,
                    "xattr=unsupported");
            w->xattr_off = true;
        } else {
            wl_log(w, "setxattr", f, res, "name=user.wl");
            goto fail;
        }
    } else if (!w->xattr_off) {
        wl_log(w, "setxattr", f, 0, "name=user.wl");
        n = getxattr(f, "user.wl", buf, sizeof(buf) - 1);
        res = n < 0 ? errno : ((size_t)n != xlen || memcmp(buf, xval, xlen))
              ? RES_MISMATCH : 0;
        buf[n < 0 ? 0 : n] = '\0';
        sanitize(info, sizeof(info), buf);
        wl_log(w, "getxattr", f, res, "value=%s", info);
        if (res > 0) {
            goto fail;
        }
    }

    /* advisory lock and unlock */
    fd = open(f, O_RDONLY);
    if (fd < 0) {
        log_errno(w, "open", f, -1);
        goto fail;
    }
    if (step(w, "flock", f, NULL, flock(fd, LOCK_EX | LOCK_NB))) {
        step(w, "funlock", f, NULL, flock(fd, LOCK_UN | LOCK_NB));
    }
    close(fd);

    /* readdir must show exactly the expected entries */
    res = dir_check(d, expect, ARRAY_SIZE(expect), info, sizeof(info));
    wl_log(w, "readdir", d, res, "%s", info);

    for (i = 0; i < ARRAY_SIZE(rm); i++) {
        if (!step(w, "unlink", rm[i], NULL, unlink(rm[i]))) {
            goto fail;
        }
    }
    if (step(w, "rmdir", d, NULL, rmdir(d))) {
        return;
    }
fail:
    /* silent best-effort cleanup so that the next iteration can run */
    for (i = 0; i < ARRAY_SIZE(rm); i++) {
        unlink(rm[i]);
    }
    unlink(f0);
    rmdir(d);
}

static void *meta_worker(void *arg)
{
    Worker *w = arg;
    char base[PATH_MAX], info[300];
    int64_t t_start = now_ns();
    struct stat st;
    unsigned it;
    int res;

    path_fmt(base, "%s/m%u", opts.dir, w->id);
    w->mark = now_ns();
    if (lstat(base, &st) == 0) {
        /* leftovers of an earlier, interrupted run */
        cleanup_count = 0;
        res = nftw(base, cleanup_cb, 16, FTW_DEPTH | FTW_PHYS) < 0 ? errno : 0;
        wl_log(w, "cleanup", base, res, "removed=%lu", cleanup_count);
    }
    if (!step(w, "mkdir", base, NULL, mkdir(base, 0755))) {
        return NULL;
    }
    for (it = 0; it < opts.iters; it++) {
        if ((opts.duration_ms &&
             (now_ns() - t_start) / 1000000 >= (int64_t)opts.duration_ms) ||
            stop_requested()) {
            break;
        }
        meta_iter(w, base, it);
    }
    res = dir_check(base, NULL, 0, info, sizeof(info));
    wl_log(w, "readdir", base, res, "%s", info);
    step(w, "rmdir", base, NULL, rmdir(base));
    return NULL;
}

/* ---- probe: when does the daemon serve the guest ----------------------- */

static void *probe_worker(void *arg)
{
    Worker *w = arg;
    char dir[PATH_MAX], path[PATH_MAX], prev[PATH_MAX] = "";
    struct timespec ts;
    int64_t t0, t1;
    int fd, res;

    path_fmt(dir, "%s/probe", opts.dir);
    w->mark = now_ns();
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        log_errno(w, "mkdir", dir, -1);
        return NULL;
    }
    while (!__atomic_load_n(&probe_done, __ATOMIC_ACQUIRE)) {
        path_fmt(path, "%s/p%" PRIu64, dir, w->seq);
        t0 = now_ns();
        w->mark = t0;
        res = 0;
        fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0 || close(fd) < 0) {
            res = errno;
        }
        if (!res && prev[0] && unlink(prev) < 0) {
            res = errno;
        }
        t1 = now_ns();
        wl_log(w, "create", path, res, "t0=%" PRId64 " t1=%" PRId64,
               t0 / 1000, t1 / 1000);
        if (!res) {
            snprintf(prev, sizeof(prev), "%s", path);
        } else if (fd >= 0) {
            unlink(path);
        }
        if (t1 - t0 < (int64_t)opts.probe_ms * 1000000) {
            ts.tv_sec = opts.probe_ms / 1000;
            ts.tv_nsec = (opts.probe_ms % 1000) * 1000000;
            nanosleep(&ts, NULL);
        }
    }
    if (prev[0]) {
        step(w, "unlink", prev, NULL, unlink(prev));
    }
    step(w, "rmdir", dir, NULL, rmdir(dir));
    return NULL;
}

/* ---- hold: interactive commands from stdin ---------------------------- */

/* Pattern bytes for file offsets @off.. (independent of write ranges). */
static void hold_pattern(uint8_t *buf, uint64_t off, size_t len,
                         uint64_t seed)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        uint64_t o = off + i;

        if (i == 0 || (o & 7) == 0) {
            v = mix64(mix64(seed ^ 0x484f4c44ULL) ^ (o >> 3));
        }
        buf[i] = v >> (8 * (o & 7));
    }
}

/* Names starting with '/' or "./" are used as is, others are in --dir. */
static void hold_path(char *buf, const char *name)
{
    if (name[0] == '/' || !strncmp(name, "./", 2)) {
        snprintf(buf, PATH_MAX, "%s", name);
    } else {
        path_fmt(buf, "%s/%s", opts.dir, name);
    }
}

/* The slot in use for @key, or with @path a new one (NULL if failed). */
static HoldSlot *hold_slot(Worker *w, const char *op, const char *path,
                           const char *key)
{
    HoldSlot *free_slot = NULL, *hs;

    for (hs = hold_slots; hs < hold_slots + HOLD_SLOTS; hs++) {
        if (hs->used && !strcmp(hs->key, key)) {
            break;
        }
        free_slot = free_slot || hs->used ? free_slot : hs;
    }
    if (!path) {
        return hs < hold_slots + HOLD_SLOTS ? hs : NULL;
    }
    if (hs < hold_slots + HOLD_SLOTS || !free_slot ||
        strlen(key) >= sizeof(hs->key)) {
        wl_log(w, op, path, hs < hold_slots + HOLD_SLOTS ? EEXIST :
               free_slot ? ENAMETOOLONG : EMFILE, "key=%s", key);
        return NULL;
    }
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->fd = -1;
    snprintf(free_slot->key, sizeof(free_slot->key), "%s", key);
    snprintf(free_slot->path, PATH_MAX, "%s", path);
    return free_slot;
}

static bool parse_u64(const char *s, uint64_t *out, bool suffix)
{
    static const char units[] = "kKmMgG";
    const char *u;
    char *end;
    int shift;

    errno = 0;
    *out = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || errno) {
        return false;
    }
    if (suffix && *end && (u = strchr(units, *end)) != NULL && !end[1]) {
        shift = 10 * (1 + (u - units) / 2);
        if (*out > (UINT64_MAX >> shift)) {
            return false;
        }
        *out <<= shift;
        end++;
    }
    return *end == '\0';
}

/* A name for a flag value, in tables ending with { NULL, 0 } */
typedef struct NamedFlag {
    const char *name;
    int flag;
} NamedFlag;

static bool lookup_flag(const char *name, const NamedFlag *table, int *out)
{
    for (; table->name && strcmp(table->name, name); table++) {
        /* look the name up */
    }
    *out = table->flag;
    return table->name != NULL;
}

/* A comma list of names from @table: their flags or-ed */
static bool parse_flags(const char *arg, const NamedFlag *table, int *out)
{
    char list[300], *tok, *save;
    int flag;

    *out = 0;
    snprintf(list, sizeof(list), "%s", arg);
    for (tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!lookup_flag(tok, table, &flag)) {
            return false;
        }
        *out |= flag;
    }
    return true;
}

/*
 * Execute one hold command, split into @av[0..@ac-1]:
 *   open <name> <key>                  open(O_RDWR|O_CREAT), keep the fd
 *   write|check <key> <off> <len> <seed>   pwrite / pread+compare pattern;
 *                                      check logs got=<n> at=<1st bad off>
 *   fsync|flock|funlock|close <key>    (flock is LOCK_EX|LOCK_NB, funlock
 *                                      LOCK_UN|LOCK_NB: virtiofsd refuses
 *                                      a blocking flock)
 *   opendir <name> <key>               keep a DIR*, log its first entry
 *   readdir <key>                      read the rest, log count=<n>
 *   unlink|chdir|stat <name>
 *   statdir <name>                     stat every entry, log count=<n>
 *   mkdir|rmdir|mkfifo <name>
 *   rename|link|symlink <from> <to>    (symlink: from is the target)
 *   truncate <name> <len>
 *   create <name> <key>                open(O_RDWR|O_CREAT|O_EXCL)
 *   openrw <name> <key>                open(O_RDWR) an existing file
 *   openf <name> <key> <flags>         open() with flags, a comma list of
 *                                      rdonly wronly rdwr creat excl trunc
 *                                      append (mode 0644), as creat(2),
 *                                      ">" and ">>" do; logs flags=
 *   setxattrc <name> <attr> <value>    setxattr(XATTR_CREATE)
 *   removexattr <name> <attr>
 *   dropcaches                         drop the guest's dentries/inodes
 *   lock|unlock <key>                  fcntl(F_SETLK) write lock / unlock
 *                                      of the whole file
 *   setlk|setlkw <key> <type> <off> <len>  fcntl(F_SETLK/F_SETLKW), type
 *                                      rd, wr or un (len 0: to the end)
 *   getlk <key> <type> <off> <len> <expected-type>  fcntl(F_GETLK): the
 *                                      type found (un: none) is compared,
 *                                      logs type= start= len=
 *   fallocate <key> <mode> <off> <len> fallocate(2), mode a comma list of
 *                                      alloc (0) keep punch zero collapse
 *                                      insert; logs size= after
 *   copyrange <key> <off> <key-out> <off-out> <len>  copy_file_range(2);
 *                                      fewer bytes than len: err=MISMATCH,
 *                                      logs copied=
 *   setxattr <name> <attr> <value>
 *   getxattr <name> <attr> <expected-value>
 *   sleep <ms>
 *   quit                               returns false
 * Empty lines and '#' comments are skipped by run_hold().
 */
static bool hold_cmd(Worker *w, int ac, char **av)
{
    static const struct {
        const char *name;
        int nargs;
        bool keyed;
    } cmds[] = {
        { "open", 2, false }, { "write", 4, true }, { "check", 4, true },
        { "fsync", 1, true }, { "unlink", 1, false },
        { "opendir", 2, false }, { "readdir", 1, true },
        { "chdir", 1, false }, { "stat", 1, false }, { "flock", 1, true },
        { "statdir", 1, false },
        { "funlock", 1, true }, { "setxattr", 3, false },
        { "getxattr", 3, false }, { "close", 1, true },
        { "mkdir", 1, false }, { "rmdir", 1, false }, { "mkfifo", 1, false },
        { "rename", 2, false }, { "link", 2, false }, { "symlink", 2, false },
        { "truncate", 2, false }, { "create", 2, false },
        { "openrw", 2, false }, { "openf", 3, false },
        { "setxattrc", 3, false },
        { "removexattr", 2, false }, { "dropcaches", 0, false },
        { "lock", 1, true }, { "unlock", 1, true },
        { "setlk", 4, true }, { "setlkw", 4, true }, { "getlk", 5, true },
        { "fallocate", 4, true }, { "copyrange", 5, true },
        { "sleep", 1, false }, { "quit", 0, false },
    };
    const char *cmd = av[0];
    char path[PATH_MAX], info[300], val[300];
    uint64_t off = 0, len = 0, seed = 0;
    uint8_t *buf = NULL, *got = NULL;
    HoldSlot *slot = NULL;
    struct dirent *de;
    struct stat st;
    size_t i, at;
    ssize_t n;
    int res, fd = -1;

    w->mark = now_ns();
    for (i = 0; i < ARRAY_SIZE(cmds) && strcmp(cmds[i].name, cmd); i++) {
        /* look the command up */
    }
    if (i == ARRAY_SIZE(cmds)) {
        sanitize(info, sizeof(info), cmd);
        wl_log(w, info, NULL, EINVAL, "reason=unknown");
        return true;
    }
    if (ac - 1 != cmds[i].nargs) {
        wl_log(w, cmd, NULL, EINVAL, "reason=usage");
        return true;
    }
    if (cmds[i].keyed) {
        slot = hold_slot(w, cmd, NULL, av[1]);
        if (!slot) {
            wl_log(w, cmd, NULL, EBADF, "key=%s reason=nokey", av[1]);
            return true;
        }
        fd = slot->fd >= 0 ? slot->fd : dirfd(slot->dir);
    } else if (ac > 1) {
        hold_path(path, av[1]);
    }

    if (!strcmp(cmd, "write") || !strcmp(cmd, "check")) {
        if (!parse_u64(av[2], &off, true) || !parse_u64(av[3], &len, true) ||
            !parse_u64(av[4], &seed, false) || len > HOLD_MAX_LEN ||
            off > INT64_MAX - HOLD_MAX_LEN) {
            wl_log(w, cmd, slot->path, EINVAL, "reason=usage");
            return true;
        }
        buf = malloc(len + 1);
        got = malloc(len + 1);
        if (!buf || !got) {
            wl_log(w, cmd, slot->path, ENOMEM, NULL);
            goto out;
        }
        hold_pattern(buf, off, len, seed);
    }

    if (!strcmp(cmd, "open")) {
        slot = hold_slot(w, cmd, path, av[2]);
        if (slot) {
            slot->fd = open(path, O_RDWR | O_CREAT, 0644);
            res = slot->fd < 0 ? errno : 0;
            slot->used = !res;
            wl_log(w, cmd, path, res, "key=%s", av[2]);
        }
    } else if (!strcmp(cmd, "write")) {
        res = io_full(true, fd, buf, len, off) < 0 ? errno : 0;
        if (!res) {
            count_bytes(&stat_written, len);
        }
        wl_log(w, cmd, slot->path, res, "key=%s off=%" PRIu64 " len=%"
               PRIu64, slot->key, off, len);
    } else if (!strcmp(cmd, "check")) {
        n = io_full(false, fd, got, len, off);
        for (at = 0; n > 0 && at < (size_t)n && got[at] == buf[at]; at++) {
            /* find the first differing byte */
        }
        res = n < 0 ? errno : at < len ? RES_MISMATCH : 0;
        if (!res) {
            count_bytes(&stat_verified, len);
        }
        wl_log(w, cmd, slot->path, res, "key=%s off=%" PRIu64 " len=%" PRIu64
               " got=%zd at=%" PRIu64, slot->key, off, len, n, off + at);
    } else if (!strcmp(cmd, "fsync") || !strcmp(cmd, "flock") ||
               !strcmp(cmd, "funlock")) {
        res = !strcmp(cmd, "fsync") ? fsync(fd) :
              flock(fd, (!strcmp(cmd, "flock") ? LOCK_EX : LOCK_UN) | LOCK_NB);
        res = res < 0 ? errno : 0;
        wl_log(w, cmd, slot->path, res, "key=%s", slot->key);
    } else if (!strcmp(cmd, "mkdir") || !strcmp(cmd, "rmdir") ||
               !strcmp(cmd, "mkfifo")) {
        step(w, cmd, path, NULL, !strcmp(cmd, "mkdir") ? mkdir(path, 0755) :
             !strcmp(cmd, "rmdir") ? rmdir(path) : mkfifo(path, 0644));
    } else if (!strcmp(cmd, "rename") || !strcmp(cmd, "link") ||
               !strcmp(cmd, "symlink")) {
        char to[PATH_MAX];

        hold_path(to, av[2]);
        step(w, cmd, path, to, cmd[0] == 'r' ? rename(path, to) :
             cmd[0] == 'l' ? link(path, to) : symlink(av[1], to));
    } else if (!strcmp(cmd, "truncate")) {
        if (!parse_u64(av[2], &len, false)) {
            wl_log(w, cmd, path, EINVAL, "reason=usage");
        } else {
            step(w, cmd, path, NULL, truncate(path, len));
        }
    } else if (!strcmp(cmd, "create") || !strcmp(cmd, "openrw")) {
        slot = hold_slot(w, cmd, path, av[2]);
        if (slot) {
            slot->fd = open(path, cmd[0] == 'c' ?
                            O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0644);
            res = slot->fd < 0 ? errno : 0;
            slot->used = !res;
            wl_log(w, cmd, path, res, "key=%s", av[2]);
        }
    } else if (!strcmp(cmd, "openf")) {
        static const NamedFlag oflags[] = {
            { "rdonly", O_RDONLY }, { "wronly", O_WRONLY }, { "rdwr", O_RDWR },
            { "creat", O_CREAT }, { "excl", O_EXCL }, { "trunc", O_TRUNC },
            { "append", O_APPEND }, { NULL, 0 },
        };
        int flags;

        if (!parse_flags(av[3], oflags, &flags)) {
            wl_log(w, cmd, path, EINVAL, "reason=usage");
            goto out;
        }
        slot = hold_slot(w, cmd, path, av[2]);
        if (slot) {
            slot->fd = open(path, flags, 0644);
            res = slot->fd < 0 ? errno : 0;
            slot->used = !res;
            sanitize(info, sizeof(info), av[3]);
            wl_log(w, cmd, path, res, "key=%s flags=%s", av[2], info);
        }
    } else if (!strcmp(cmd, "setxattrc")) {
        res = setxattr(path, av[2], av[3], strlen(av[3]), XATTR_CREATE) < 0 ?
              errno : 0;
        wl_log(w, cmd, path, res, "name=%s", av[2]);
    } else if (!strcmp(cmd, "removexattr")) {
        res = removexattr(path, av[2]) < 0 ? errno : 0;
        wl_log(w, cmd, path, res, "name=%s", av[2]);
    } else if (!strcmp(cmd, "lock") || !strcmp(cmd, "unlock")) {
        struct flock fl = {
            .l_type = cmd[0] == 'l' ? F_WRLCK : F_UNLCK,
            .l_whence = SEEK_SET,
        };

        res = fcntl(fd, F_SETLK, &fl) < 0 ? errno : 0;
        wl_log(w, cmd, slot->path, res, "key=%s", slot->key);
    } else if (!strcmp(cmd, "setlk") || !strcmp(cmd, "setlkw") ||
               !strcmp(cmd, "getlk")) {
        static const NamedFlag types[] = {
            { "rd", F_RDLCK }, { "wr", F_WRLCK }, { "un", F_UNLCK },
            { NULL, 0 },
        };
        struct flock fl = { .l_whence = SEEK_SET };
        int type, want = 0;

        if (!lookup_flag(av[2], types, &type) ||
            !parse_u64(av[3], &off, true) || !parse_u64(av[4], &len, true) ||
            (ac > 5 && !lookup_flag(av[5], types, &want))) {
            wl_log(w, cmd, slot->path, EINVAL, "reason=usage");
            goto out;
        }
        fl.l_type = type;
        fl.l_start = off;
        fl.l_len = len;
        res = fcntl(fd, !strcmp(cmd, "getlk") ? F_GETLK :
                    !strcmp(cmd, "setlk") ? F_SETLK : F_SETLKW, &fl) < 0 ?
              errno : 0;
        if (!res && ac > 5 && fl.l_type != want) {
            res = RES_MISMATCH;
        }
        wl_log(w, cmd, slot->path, res, "key=%s type=%s start=%" PRId64
               " len=%" PRId64, slot->key, fl.l_type == F_RDLCK ? "rd" :
               fl.l_type == F_WRLCK ? "wr" : "un", (int64_t)fl.l_start,
               (int64_t)fl.l_len);
    } else if (!strcmp(cmd, "fallocate")) {
        static const NamedFlag modes[] = {
            { "alloc", 0 }, { "keep", FALLOC_FL_KEEP_SIZE },
            { "punch", FALLOC_FL_PUNCH_HOLE },
            { "zero", FALLOC_FL_ZERO_RANGE },
            { "collapse", FALLOC_FL_COLLAPSE_RANGE },
            { "insert", FALLOC_FL_INSERT_RANGE }, { NULL, 0 },
        };
        int mode;

        if (!parse_flags(av[2], modes, &mode) ||
            !parse_u64(av[3], &off, true) || !parse_u64(av[4], &len, true)) {
            wl_log(w, cmd, slot->path, EINVAL, "reason=usage");
            goto out;
        }
        res = fallocate(fd, mode, off, len) < 0 ? errno : 0;
        wl_log(w, cmd, slot->path, res, "key=%s mode=%#x off=%" PRIu64
               " len=%" PRIu64 " size=%" PRId64, slot->key, mode, off, len,
               fstat(fd, &st) < 0 ? (int64_t)-1 : (int64_t)st.st_size);
    } else if (!strcmp(cmd, "copyrange")) {
        HoldSlot *to = hold_slot(w, cmd, NULL, av[3]);
        loff_t in_off, out_off;

        if (!to || to->fd < 0) {
            wl_log(w, cmd, slot->path, EBADF, "key=%s reason=nokey", av[3]);
            goto out;
        }
        if (!parse_u64(av[2], &off, true) || !parse_u64(av[4], &seed, true) ||
            !parse_u64(av[5], &len, true)) {
            wl_log(w, cmd, slot->path, EINVAL, "reason=usage");
            goto out;
        }
        in_off = off;
        out_off = seed;
        n = copy_file_range(fd, &in_off, to->fd, &out_off, len, 0);
        res = n < 0 ? errno : (uint64_t)n < len ? RES_MISMATCH : 0;
        wl_log(w, cmd, slot->path, res, "key=%s to=%s copied=%zd", slot->key,
               to->key, n);
    } else if (!strcmp(cmd, "dropcaches")) {
        fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
        res = fd < 0 || write(fd, "2\n", 2) != 2 ? errno : 0;
        if (fd >= 0) {
            close(fd);
        }
        wl_log(w, cmd, NULL, res, NULL);
    } else if (!strcmp(cmd, "unlink") || !strcmp(cmd, "chdir")) {
        step(w, cmd, path, NULL, cmd[0] == 'u' ? unlink(path) : chdir(path));
    } else if (!strcmp(cmd, "opendir")) {
        slot = hold_slot(w, cmd, path, av[2]);
        if (slot) {
            de = NULL;
            slot->dir = opendir(path);
            res = slot->dir ? 0 : errno;
            if (slot->dir) {
                errno = 0;
                de = readdir(slot->dir);
                res = errno;
            }
            slot->used = slot->dir != NULL;
            sanitize(info, sizeof(info), de ? de->d_name : "-");
            wl_log(w, cmd, path, res, "key=%s first=%s", av[2], info);
        }
    } else if (!strcmp(cmd, "readdir")) {
        if (!slot->dir) {
            wl_log(w, cmd, slot->path, ENOTDIR, "key=%s", slot->key);
            goto out;
        }
        for (i = 0, errno = 0; readdir(slot->dir); i++) {
            errno = 0;
        }
        wl_log(w, cmd, slot->path, errno, "key=%s count=%zu", slot->key, i);
    } else if (!strcmp(cmd, "statdir")) {
        DIR *dir = opendir(path);

        res = dir ? 0 : errno;
        for (i = 0; dir && !res;) {
            errno = 0;
            de = readdir(dir);
            if (!de) {
                res = errno;
                break;
            }
            if (fstatat(dirfd(dir), de->d_name, &st,
                        AT_SYMLINK_NOFOLLOW) < 0) {
                res = errno;
            }
            i++;
        }
        if (dir) {
            closedir(dir);
        }
        wl_log(w, cmd, path, res, "count=%zu", i);
    } else if (!strcmp(cmd, "stat")) {
        if (stat(path, &st) < 0) {
            log_errno(w, cmd, path, -1);
        } else {
            wl_log(w, cmd, path, 0, "size=%" PRIu64 " ino=%" PRIu64
                   " nlink=%" PRIu64 " mode=%o", (uint64_t)st.st_size,
                   (uint64_t)st.st_ino, (uint64_t)st.st_nlink,
                   (unsigned)st.st_mode);
        }
    } else if (!strcmp(cmd, "setxattr")) {
        res = setxattr(path, av[2], av[3], strlen(av[3]), 0) < 0 ? errno : 0;
        wl_log(w, cmd, path, res, "name=%s", av[2]);
    } else if (!strcmp(cmd, "getxattr")) {
        n = getxattr(path, av[2], info, sizeof(info) - 1);
        res = n < 0 ? errno : 0;
        info[n < 0 ? 0 : n] = '\0';
        res = res ? res : strcmp(info, av[3]) ? RES_MISMATCH : 0;
        sanitize(val, sizeof(val), info);
        wl_log(w, cmd, path, res, "name=%s value=%s", av[2], val);
    } else if (!strcmp(cmd, "close")) {
        res = slot->dir ? closedir(slot->dir) : close(slot->fd);
        res = res < 0 ? errno : 0;
        slot->used = false;
        wl_log(w, cmd, slot->path, res, "key=%s", slot->key);
    } else if (!strcmp(cmd, "sleep")) {
        if (!parse_u64(av[1], &len, false) || len > 86400000) {
            wl_log(w, cmd, NULL, EINVAL, "reason=usage");
        } else {
            struct timespec ts = { len / 1000, (len % 1000) * 1000000 };

            while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
                /* sleep for the rest of the time */
            }
            wl_log(w, cmd, NULL, 0, NULL);
        }
    } else if (!strcmp(cmd, "quit")) {
        wl_log(w, cmd, NULL, 0, NULL);
        return false;
    }
out:
    free(buf);
    free(got);
    return true;
}

static void run_hold(Worker *w)
{
    char line[4096], *av[8], *save, *tok;
    int ac;

    while (fgets(line, sizeof(line), stdin)) {
        ac = 0;
        for (tok = strtok_r(line, " \t\r\n", &save); tok && ac < 8;
             tok = strtok_r(NULL, " \t\r\n", &save)) {
            av[ac++] = tok;
        }
        if (ac > 0 && av[0][0] != '#' && !hold_cmd(w, ac, av)) {
            break;
        }
    }
}

/* ---- argument parsing and main ---------------------------------------- */

static void __attribute__((noreturn, format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "workload: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n"
        "usage: workload data --dir D --workers N --files F --size BYTES "
        "--bs BLOCK\n        [--seed S] [--verify-only [--gens G,G,...]] "
        "[--gen G] [--duration-ms MS]\n"
        "       workload meta --dir D --workers N --iters K [--seed S] "
        "[--require-xattr]\n"
        "       (data, meta, all: [--stat-dir D2] [--stop-file F] "
        "[--probe-ms P])\n"
        "       workload all --dir D --workers N --files F --size BYTES "
        "--bs BLOCK --iters K\n        [data and meta options]\n"
        "       workload hold --dir D   (commands on stdin)\n");
    exit(2);
}

/* --gens G,G,...: one generation per data file, workers x files */
static void parse_gens(void)
{
    const char *p = opts.gens_arg;
    uint64_t n = opts.workers * opts.files, k, v;
    char num[24];
    size_t l;

    if (!opts.verify_only || opts.gen != GEN_AUTO) {
        usage_error("--gens goes with --verify-only and without --gen");
    }
    if (n > strlen(p) / 2 + 1 || !(opts.gens = calloc(n, sizeof(uint32_t)))) {
        usage_error("--gens needs %" PRIu64 " generations (workers x files)",
                    n);
    }
    for (k = 0; k < n; k++) {
        l = strcspn(p, ",");
        if (!l || l >= sizeof(num)) {
            usage_error("--gens needs %" PRIu64 " generations (workers x "
                        "files)", n);
        }
        memcpy(num, p, l);
        num[l] = 0;
        if (!parse_u64(num, &v, false) || v > UINT32_MAX) {
            usage_error("bad generation '%s' in --gens", num);
        }
        opts.gens[k] = v;
        p += l;
        if (*p == ',' && k + 1 < n) {
            p++;
        }
    }
    if (*p) {
        usage_error("--gens needs %" PRIu64 " generations (workers x files)",
                    n);
    }
}

static void parse_args(int argc, char **argv)
{
    enum { DA = CMD_DATA | CMD_ALL, MA = CMD_META | CMD_ALL };
    static const struct {
        const char *name;
        int cmds;
        char kind;              /* 's'tring, 'f'lag, 'n'umber, si'z'e */
        void *dst;
        uint64_t min, max;
    } table[] = {
        { "--dir", DA | MA | CMD_HOLD, 's', &opts.dir, 0, 0 },
        { "--workers", DA | MA, 'n', &opts.workers, 1, MAX_WORKERS },
        { "--files", DA, 'n', &opts.files, 1, 1000000 },
        { "--size", DA, 'z', &opts.size, 1, UINT64_MAX / 2 },
        { "--bs", DA, 'z', &opts.bs, 64, MAX_BS },
        { "--seed", DA | MA, 'n', &opts.seed, 0, UINT64_MAX },
        { "--verify-only", DA, 'f', &opts.verify_only, 0, 0 },
        { "--gen", DA, 'n', &opts.gen, 0, UINT32_MAX },
        { "--duration-ms", DA | MA, 'n', &opts.duration_ms, 1,
          1000000000000 },
        { "--iters", MA, 'n', &opts.iters, 1, UINT32_MAX },
        { "--require-xattr", MA, 'f', &opts.require_xattr, 0, 0 },
        { "--stat-dir", DA | MA, 's', &opts.stat_dir, 0, 0 },
        { "--stop-file", DA | MA, 's', &opts.stop_file, 0, 0 },
        { "--gens", DA, 's', &opts.gens_arg, 0, 0 },
        { "--probe-ms", DA | MA, 'n', &opts.probe_ms, 1, 60000 },
    };
    static const char *const cmd_names[] = { "data", "meta", "all", "hold" };
    /* required options of each subcommand, as bits of table[] indexes */
    static const unsigned cmd_need[] = { 0x1f, 0x203, 0x21f, 0x1 };
    unsigned seen = 0, need;
    uint64_t v;
    size_t t;
    int i;

    for (t = 0; argc > 1 && t < ARRAY_SIZE(cmd_names); t++) {
        if (!strcmp(argv[1], cmd_names[t])) {
            break;
        }
    }
    if (argc < 2 || t == ARRAY_SIZE(cmd_names)) {
        usage_error("missing or unknown subcommand");
    }
    opts.cmd = 1 << t;
    need = cmd_need[t];

    for (i = 2; i < argc; i++) {
        for (t = 0; t < ARRAY_SIZE(table) && strcmp(table[t].name, argv[i]);
             t++) {
            /* look the option up */
        }
        if (t == ARRAY_SIZE(table)) {
            usage_error("unknown option '%s'", argv[i]);
        }
        if (!(table[t].cmds & opts.cmd)) {
            usage_error("option %s not valid for '%s'", argv[i], argv[1]);
        }
        if (seen & (1u << t)) {
            usage_error("option %s given twice", argv[i]);
        }
        seen |= 1u << t;
        if (table[t].kind == 'f') {
            *(bool *)table[t].dst = true;
            continue;
        }
        if (++i >= argc) {
            usage_error("option %s needs a value", argv[i - 1]);
        }
        if (table[t].kind == 's') {
            *(const char **)table[t].dst = argv[i];
            continue;
        }
        if (!parse_u64(argv[i], &v, table[t].kind == 'z')) {
            usage_error("bad number '%s' for %s", argv[i], argv[i - 1]);
        }
        if (v < table[t].min || v > table[t].max) {
            usage_error("%s must be %" PRIu64 "..%" PRIu64, argv[i - 1],
                        table[t].min, table[t].max);
        }
        *(uint64_t *)table[t].dst = v;
    }

    for (t = 0; t < ARRAY_SIZE(table); t++) {
        if ((need & (1u << t)) && !(seen & (1u << t))) {
            usage_error("missing %s", table[t].name);
        }
    }
    if (!opts.dir[0] || strlen(opts.dir) > PATH_MAX - 128) {
        usage_error("--dir is empty or too long");
    }
    if ((opts.cmd & DA) && opts.size % opts.bs &&
        opts.size % opts.bs < BLK_HDR) {
        usage_error("the last block of --size must hold the %d-byte header",
                    BLK_HDR);
    }
    if ((opts.cmd & DA) && opts.size / opts.bs >= UINT32_MAX) {
        usage_error("too many blocks per file");
    }
    if (opts.gens_arg) {
        parse_gens();
    }
}

int main(int argc, char **argv)
{
    int64_t start = now_ns();
    Worker main_w = { .name = "main", .mark = start };
    Worker hold_w = { .name = "hold" };
    Worker probe_w = { .name = "probe" };
    bool probing = false;
    Worker *workers = NULL;
    unsigned i, n = 0;
    uint32_t c, b, crc;
    struct stat st;
    int res, k;

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    printf("WL START");
    for (k = 0; k < argc; k++) {
        printf(" %s", argv[k]);
    }
    printf("\n");

    parse_args(argc, argv);
    for (c = 0; c < 256; c++) {
        for (crc = c, b = 0; b < 8; b++) {
            crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
        }
        crc_table[c] = crc;
    }

    res = stat(opts.dir, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    wl_log(&main_w, "setup", opts.dir, res, "cmd=%s workers=%" PRIu64,
           argv[1], opts.workers);
    if (res) {
        goto summary;
    }
    if (opts.cmd == CMD_HOLD) {
        run_hold(&hold_w);
        goto summary;
    }

    if (opts.stat_dir) {
        /* Keep many inodes alive in the session (benchmarks) */
        DIR *dir = opendir(opts.stat_dir);
        struct dirent *de;
        struct stat st;
        unsigned long count = 0;

        res = dir ? 0 : errno;
        while (dir && (de = readdir(dir))) {
            if (fstatat(dirfd(dir), de->d_name, &st,
                        AT_SYMLINK_NOFOLLOW) == 0) {
                count++;
            }
        }
        if (dir) {
            closedir(dir);
        }
        wl_log(&main_w, "statdir", opts.stat_dir, res, "count=%lu", count);
    }

    n = opts.cmd == CMD_ALL ? 2 * opts.workers : opts.workers;
    workers = calloc(n, sizeof(*workers));
    if (!workers) {
        n = 0;
        wl_log(&main_w, "malloc", NULL, ENOMEM, NULL);
    }
    for (i = 0; i < n; i++) {
        bool data = opts.cmd == CMD_DATA ||
                    (opts.cmd == CMD_ALL && i < opts.workers);

        workers[i].id = i;
        snprintf(workers[i].name, sizeof(workers[i].name), "w%u", i);
        res = pthread_create(&workers[i].thread, NULL,
                             data ? data_worker : meta_worker, &workers[i]);
        if (res) {
            wl_log(&main_w, "thread", NULL, res, "worker=%s",
                   workers[i].name);
            n = i;
        }
    }
    if (opts.probe_ms) {
        res = pthread_create(&probe_w.thread, NULL, probe_worker, &probe_w);
        if (res) {
            wl_log(&main_w, "thread", NULL, res, "worker=probe");
        }
        probing = res == 0;
    }
    for (i = 0; i < n; i++) {
        pthread_join(workers[i].thread, NULL);
    }
    free(workers);
    if (probing) {
        __atomic_store_n(&probe_done, true, __ATOMIC_RELEASE);
        pthread_join(probe_w.thread, NULL);
    }

summary:
    pthread_mutex_lock(&log_lock);
    printf("WL SUMMARY ops=%" PRIu64 " errors=%" PRIu64 " mismatches=%"
           PRIu64 " bytes_written=%" PRIu64 " bytes_verified=%" PRIu64
           " elapsed_ms=%" PRId64 "\n", stat_ops, stat_errors,
           stat_mismatches, stat_written, stat_verified,
           (now_ns() - start) / 1000000);
    fflush(stdout);
    pthread_mutex_unlock(&log_lock);
    return stat_errors == 0 && stat_mismatches == 0 ? 0 : 1;
}
