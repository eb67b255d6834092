#!/usr/bin/env python3
"""make bench: what crash recovery costs, measured on this machine.

  stall     SIGKILL of the virtiofsd worker under guest load, with 10,000
            live inodes, to the completion of the first guest request that
            had to reach the new worker (the workload's probe, timestamped
            in the guest); per restart, broken down by the daemon's log
            lines (polled every millisecond), next to the old end point
            (the next workload step, which cached steps can give); with
            QEMU reconnect-ms=10 (the figure) and again with reconnect-ms=1
  upgrade   planned upgrades under the same load: a new binary (a copy,
            a new inode) renamed onto the path the holder was started as,
            SIGUSR1 to the holder; the same probe gives the stall from
            SIGUSR1 to the first guest request the upgraded daemon served
  cost      virtiofsd CPU per guest operation (all the daemon's threads,
            with recovery the holder's and its worker's, from
            /proc/<pid>/task/*/schedstat) for a metadata and a data
            workload, recovery on against the unpatched base virtiofsd
            (and, not QUICK, recovery off); 5 rounds, configurations
            interleaved, the figure the ratio of the medians (a run that
            fails or times out is reported as failed and left out; a
            figure with no run left reads "failed"); and system calls
            per operation (strace -c -f, one more run of each
            configuration)
  restore   restart time and memory against the number of inodes, and
            kept_max: the guest looks up names until the daemon's fd
            ceiling (RLIMIT_NOFILE less its headroom) answers EMFILE, the
            worker is killed, and the inodes restored with none stale
            (a sample of them served by the new worker) are kept_max

Writes docs/benchmarks.md and PNG plots (gnuplot) next to it, and ends
with "bench: stall_p99_ms=X meta_cost_pct=Y data_cost_pct=Z
restore_us_per_entry=W kept_max=K upgrade_stall_p99_ms=U" (a figure that
could not be measured reads "failed"; the other parts go on).  QUICK=1
(--quick) runs a smaller version (fewer kills, smaller cost workloads
without "off", fewer restore sizes: named on the line before the closing
line); --stall-only [--kills N] runs only
the reconnect-ms=10 stall part and rewrites only its section of
docs/benchmarks.md (and the stall figure of the last line).
"""

import argparse
import datetime
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'torture'))
import vmharness  # noqa: E402
import torture  # noqa: E402

TOP = vmharness.TOP
DOCS = os.path.join(TOP, 'docs')
OUT_MD = os.path.join(DOCS, 'benchmarks.md')
BASE_SRC = os.path.join(TOP, 'build', 'base-src')
BASE_BIN = os.path.join(BASE_SRC, 'build', 'tools', 'virtiofsd', 'virtiofsd')
NOFILE = 1048576
STALL_INODES = 10000
UPGRADES = 10           # planned upgrades, QUICK too
COST_ROUNDS = 5
COST_ROUNDS_QUICK = 5


def say(msg):
    print('[bench] ' + msg, flush=True)


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# -- processes ----------------------------------------------------------------

def cpu_ns(pid):
    """CPU time of pid's process tree (all threads), in ns."""
    total = 0
    for p in vmharness.process_tree(pid):
        try:
            for t in os.listdir('/proc/%d/task' % p):
                with open('/proc/%d/task/%s/schedstat' % (p, t)) as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def rss_kb(pid):
    best = 0
    for p in vmharness.process_tree(pid):
        try:
            with open('/proc/%d/status' % p) as f:
                m = re.search(r'^VmRSS:\s+(\d+)', f.read(), re.M)
            best = max(best, int(m.group(1)) if m else 0)
        except OSError:
            pass
    return best


def raise_nofile():
    """Raise RLIMIT_NOFILE as far as allowed; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        return NOFILE
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


# -- the unpatched daemon -------------------------------------------------------

def build_base(quick):
    if os.access(BASE_BIN, os.X_OK):
        return True
    if quick:
        say('no base virtiofsd built yet: QUICK compares recovery on/off '
            'only (run "make bench" once to build it)')
        return False
    say('building the unpatched base virtiofsd (tag "base") in '
        'build/base-src, once')
    qemu = os.path.join(TOP, 'qemu')
    if not os.path.isdir(BASE_SRC):
        subprocess.run(['git', '-C', qemu, 'worktree', 'add', '-q',
                        '--detach', BASE_SRC, 'base'], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(TOP, 'configure-wrapper.sh'), BASE_SRC,
                    os.path.join(BASE_SRC, 'build')], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(TOP, 'scripts', 'ninja-progress.sh'),
                    os.path.join(BASE_SRC, 'build'),
                    'tools/virtiofsd/virtiofsd'], check=True)
    return os.access(BASE_BIN, os.X_OK)


# -- one guest ------------------------------------------------------------------

def start_daemon(h, config, state=None, extra_opts=()):
    """config: base, off or on.  Returns the Proc whose tree is the daemon
    (for on, the holder, with its worker below it)."""
    opts = ('cache=auto', 'xattr', 'flock') + tuple(extra_opts)
    if config == 'on':
        return h.start_supervised_virtiofsd(state, options=opts)
    binary = BASE_BIN if config == 'base' else vmharness.VIRTIOFSD_BIN
    saved = vmharness.VIRTIOFSD_BIN
    vmharness.VIRTIOFSD_BIN = binary
    try:
        return h.start_virtiofsd(options=opts)
    finally:
        vmharness.VIRTIOFSD_BIN = saved


def strace_tree(h, pid):
    """strace -c -f the process tree of pid; returns (Popen, output path).
    Stopped with SIGINT, it writes its per-syscall counts."""
    out = os.path.join(h.dir, 'strace.txt')
    argv = ['strace', '-c', '-f', '-o', out]
    for p in vmharness.process_tree(pid):
        argv += ['-p', str(p)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    # strace is attached once the tracees show a tracer
    try:
        vmharness.wait_until(
            lambda: all(tracer_pid(p) for p in vmharness.process_tree(pid)),
            'strace attached', 10, 0.01)
    except BaseException:
        st.kill()
        st.wait()
        raise
    return st, out


def tracer_pid(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            return int(re.search(r'^TracerPid:\s+(\d+)', f.read(),
                                 re.M).group(1))
    except OSError:
        return 1


def strace_counts(st, out):
    """Stop strace; return {syscall: calls}.  Raises TimeoutError (strace
    killed) if it does not detach and write its counts within 30 s."""
    st.send_signal(signal.SIGINT)
    try:
        st.wait(30)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()
        raise TimeoutError('strace did not detach within 30 s') from None
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r'\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?'
                         r'(\w+)$', line)
            if m and m.group(2) != 'total':
                counts[m.group(2)] = int(m.group(1))
    return counts


def run_workload(config, args, count_syscalls=False):
    """Boot a guest running args against the config's daemon; returns
    (ops, elapsed_ms, daemon CPU ns during the workload, {syscall: calls}
    if count_syscalls)."""
    with vmharness.Harness('bench-' + config) as h:
        os.mkdir(os.path.join(h.shared, 'w'))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        d = start_daemon(h, config, state)
        st = strace_tree(h, d.pid) if count_syscalls else None
        try:
            h.start_qemu('wl.run=' + ','.join(args),
                         chardev_opts=',reconnect-ms=10')
            h.wait_console(r'^GUEST MOUNT ok', 120, 'the mount')
            c0 = cpu_ns(d.pid)
            last = c0
            deadline = time.monotonic() + 600
            while not re.search(r'^GUEST DONE', h.read_console(), re.M):
                last = cpu_ns(d.pid) or last
                if time.monotonic() > deadline:
                    raise TimeoutError('workload did not end')
                time.sleep(0.02)
        except BaseException:
            if st:
                st[0].kill()
                st[0].wait()
            raise
        summary, bad = vmharness.parse_workload(h.read_console())
        if (bad or not summary or summary['errors'] or
                summary['mismatches']):
            raise RuntimeError('workload failed: %s' % bad[:3])
        ops = summary['ops']
        if args[0] == 'data':
            # One guest request per 4 KiB block written or read back
            ops = (summary['bytes_written'] + summary['bytes_verified']) // 4096
        counts = strace_counts(*st) if st else None
        return ops, summary['elapsed_ms'], last - c0, counts


def try_workload(what, config, args, count_syscalls=False):
    """run_workload(), but a run that fails or times out is reported as
    failed and returns None: the other runs and their figures go on."""
    try:
        return run_workload(config, args, count_syscalls)
    except Exception as e:
        lines = str(e).splitlines() or ['']
        say('%s: FAILED (%s: %s)' % (what, type(e).__name__, lines[0]))
        return None


def cost(quick, have_base):
    """CPU per operation, median of interleaved rounds, and system calls
    per operation.  Returns (configs, {(load, config): (ops/s, CPU us per
    op)}, {(load, config): {syscall: calls per op}}, failed runs, rounds,
    {(load, config): [CPU us per op of each round]}, {(load, config):
    ["on" against config in each round, CPU per op in %]})."""
    ref = 'base' if have_base else 'off'
    # QUICK: the reference and "on" only; make bench: base, off and on
    configs = [ref, 'on'] if quick else \
        (['base'] if have_base else []) + ['off', 'on']
    rounds = COST_ROUNDS_QUICK if quick else COST_ROUNDS
    loads = {
        'meta': ['meta', '--dir', '/mnt/w', '--workers', '1', '--iters',
                 '150' if quick else '600'],
        'data': ['data', '--dir', '/mnt/w', '--workers', '1', '--files',
                 '1', '--size', '4m' if quick else '16m', '--bs', '4k'],
    }
    res = {}
    calls = {}
    failed = []
    # Interleaved: each round runs every load under every configuration,
    # the configurations in an order rotated by one each round, so that
    # a drift of the machine's load spreads over all of them
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for load, args in loads.items():
            for c in order:
                what = 'cost %s/%s round %d/%d' % (load, c, r + 1, rounds)
                run = try_workload(what, c, args)
                if run is None:
                    failed.append(what)
                    continue
                ops, ms, ns, _ = run
                res.setdefault((load, c), {})[r] = (ops, ms, ns)
                say('%s: %d ops, %.0f ops/s, %.1f us CPU per op'
                    % (what, ops, ops * 1000.0 / ms, ns / 1000.0 / ops))
    # System calls per operation: exact, unlike the CPU time on this VM
    for load, args in loads.items():
        for c in configs:
            what = 'syscalls %s/%s' % (load, c)
            run = try_workload(what, c, args, count_syscalls=True)
            if run is None:
                failed.append(what)
                continue
            ops, _, _, counts = run
            calls[(load, c)] = {k: v / float(ops) for k, v in counts.items()}
            say('%s: %.2f per op' % (what, sum(calls[(load, c)].values())))
    table = {}
    per_round = {}
    for (load, c), by_round in res.items():
        runs = [by_round[r] for r in sorted(by_round)]
        table[(load, c)] = (
            statistics.median(o * 1000.0 / m for o, m, _ in runs),
            statistics.median(n / 1000.0 / o for o, _, n in runs))
        per_round[(load, c)] = [n / 1000.0 / o for o, _, n in runs]
    # "on" against each other configuration within each round: the two
    # ran a few seconds apart, so a change of the machine's load between
    # rounds (other jobs share its 2 CPUs) cancels out
    paired = {}
    for load in loads:
        on = res.get((load, 'on'), {})
        for c in configs:
            other = res.get((load, c), {})
            if c == 'on':
                continue
            paired[(load, c)] = [
                ((on[r][2] / on[r][0]) / (other[r][2] / other[r][0]) - 1) *
                100 for r in sorted(set(on) & set(other))]
    return configs, table, calls, failed, rounds, per_round, paired


def paired_pct(paired, load, ref):
    """"on" against ref in CPU per operation, in %: the median over the
    rounds of the two's ratio in that round; None if no round has both."""
    xs = paired.get((load, ref))
    return statistics.median(xs) if xs else None


def least_pct(per_round, load, ref):
    """"on" against ref, the least CPU per op of each, in %, or None."""
    on, other = per_round.get((load, 'on')), per_round.get((load, ref))
    return (min(on) / min(other) - 1) * 100 if on and other else None


def cost_pct(table, load, ref, c='on'):
    """c against ref in CPU per operation, the ratio of their medians
    over the rounds, in %; None if either has no run that completed."""
    if (load, c) not in table or (load, ref) not in table:
        return None
    return (table[(load, c)][1] / table[(load, ref)][1] - 1) * 100


# -- stall --------------------------------------------------------------------

LISTEN = r'Waiting for vhost-user socket connection'
CONN = r'Received vhost-user socket connection'
RESTORED_LINE = r'^state: restored session'
STARTED = r'fv_queue_set_started: qidx=1 started=1'
UPGRADE_LINE = r'^holder: upgrade: executing '
RESTORE_US = re.compile(r'^state: restored session.* in (\d+) us')

def read_new_lines(tail):
    """The complete lines appended to tail.path since the last call
    (tail.pos, tail.rest: where it stopped, and a partial last line)."""
    with open(tail.path, 'rb') as f:
        f.seek(tail.pos)
        new = f.read()
    tail.pos += len(new)
    data = tail.rest + new
    cut = data.rfind(b'\n') + 1
    tail.rest = data[cut:]
    return data[:cut].decode('utf-8', 'replace')


class LogTail:
    """Counts of log lines matching patterns, reading only what is new
    (polling every millisecond must stay cheap)."""

    def __init__(self, path, patterns):
        self.path, self.pos, self.rest = path, 0, b''
        self.rx = {p: re.compile(p) for p in patterns}
        self.counts = {p: 0 for p in patterns}
        self.last_us = 0

    def poll(self):
        for line in read_new_lines(self).splitlines():
            for p, rx in self.rx.items():
                if rx.search(line):
                    self.counts[p] += 1
            m = RESTORE_US.search(line)
            if m:
                self.last_us = int(m.group(1))

    def count(self, pattern):
        self.poll()
        return self.counts[pattern]


class ProbeTail:
    """The probe lines of the console, each with the host time it was
    first seen (read only what is new)."""

    def __init__(self, path):
        self.path, self.pos, self.rest = path, 0, b''
        self.seen = {}          # seq -> (result, t0_us, t1_us, host_s)

    def poll(self):
        now = time.monotonic()
        for seq, (res, t0, t1) in torture.probes(
                read_new_lines(self)).items():
            self.seen[seq] = (res, t0, t1, now)


def install_binary(path):
    """A new file at path (a copy of VIRTIOFSD_BIN renamed onto it: a new
    inode, as a package upgrade leaves); returns its inode number."""
    tmp = path + '.new'
    shutil.copy2(vmharness.VIRTIOFSD_BIN, tmp)
    os.rename(tmp, path)
    return os.stat(path).st_ino


def stall(quick, kills=None, reconnect_ms=10, upgrades=0):
    """kills SIGKILLs of the worker, then upgrades planned upgrades
    (SIGUSR1 to the holder after a new binary was renamed onto the path
    it was started as), under guest load with STALL_INODES inodes looked
    up, QEMU reconnect-ms=reconnect_ms.  Returns a dict: rows (per kill),
    up_rows (per upgrade), series and marks (for the plots), inodes,
    reconnect_ms, ok (the workload ended with no error, every block
    verified), up_failed (why the upgrades stopped early, or None)."""
    kills = kills if kills is not None else (20 if quick else 100)
    inodes = STALL_INODES
    with vmharness.Harness('bench-stall-%dms' % reconnect_ms) as h:
        big = os.path.join(h.shared, 'big')
        os.mkdir(big)
        for i in range(inodes):
            open(os.path.join(big, 'f%06d' % i), 'w').close()
        os.mkdir(os.path.join(h.shared, 'w'))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        # Started from a path of its own, so that an upgrade can rename
        # a new binary onto it
        binpath = os.path.join(h.dir, 'bin', 'virtiofsd')
        os.mkdir(os.path.dirname(binpath))
        install_binary(binpath)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'xattr', 'flock'), binary=binpath)
        duration = int(((kills + upgrades) * 5 + 120) * 1000)
        h.start_qemu('wl.run=' + ','.join(
            ['all', '--dir', '/mnt/w', '--workers', '2', '--files', '2',
             '--size', '1m', '--bs', '64k', '--iters', '100000000',
             '--duration-ms', str(duration), '--stat-dir', '/mnt/big',
             '--stop-file', '/mnt/stop', '--probe-ms',
             str(torture.PROBE_MS)]),
            chardev_opts=',reconnect-ms=%d' % reconnect_ms)
        h.wait_console(r'^WL main \d+ statdir .* ok', 300, 'the warm-up')
        log = LogTail(sup.log_path,
                      [LISTEN, CONN, RESTORED_LINE, STARTED, UPGRADE_LINE])
        t_start = time.monotonic()
        series, marks, rows, up_rows = [], [], [], []
        rng = random.Random(7)

        console = LogTail(h.console, [r'^WL [wm]\d+ '])
        probe = ProbeTail(h.console)
        probe_dir = os.path.join(h.shared, 'w', 'probe')

        def steps():
            return console.count(r'^WL [wm]\d+ ')

        def sample():
            series.append((time.monotonic() - t_start, steps()))

        count = log.count

        def restart(k, send):
            """Wait a while under load, send() the signal that ends the
            worker (a SIGKILL, or SIGUSR1 to the holder), and time what
            follows up to the first probe the new worker served."""
            until = time.monotonic() + rng.uniform(0.3, 0.8)
            while time.monotonic() < until:
                sample()
                time.sleep(0.1)
            pids = vmharness.process_tree(h.supervised_child_pid())
            n_listen = count(LISTEN)
            n_conn = count(CONN)
            n_rest = count(RESTORED_LINE)
            n_start = count(STARTED)
            n_up = count(UPGRADE_LINE)
            s0 = steps()
            t = {'kill': time.monotonic()}
            send(pids[0])
            marks.append(t['kill'] - t_start)
            deadline = t['kill'] + 30
            need = None
            calib = None
            while calib is None or now < calib:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError('restart %d did not complete' % k)
                if 'exec' not in t and count(UPGRADE_LINE) > n_up:
                    t['exec'] = now
                if 'listen' not in t and count(LISTEN) > n_listen:
                    t['listen'] = now
                if 'conn' not in t and count(CONN) > n_conn:
                    t['conn'] = now
                if 'restored' not in t and count(RESTORED_LINE) > n_rest:
                    t['restored'] = now
                if 'started' not in t and count(STARTED) > n_start:
                    t['started'] = now
                if 'started' in t and 'progress' not in t and steps() > s0:
                    t['progress'] = now
                if need is None and torture.dead(pids):
                    # the old worker can do no more: what it left undone
                    need = torture.first_needing(probe_dir)
                probe.poll()
                if need is not None and 'probe' not in t and \
                        max(probe.seen, default=-1) >= need:
                    t['probe'] = now
                if calib is None and 'probe' in t and 'progress' in t and \
                        'started' in t:
                    # 100 ms more at 1 ms: probe lines seen fresh, to
                    # place the guest's clock on the host's
                    calib = now + 0.1
                time.sleep(0.001)
            us = log.last_us
            for key in ('listen', 'conn', 'restored'):
                t.setdefault(key, t['started'])
            # guest clock + off = host clock; every line is seen after it
            # was printed, so the least (seen - t1) over the lines seen
            # while polling every ms is the offset (plus the console's
            # least latency)
            off = min(seen - t1 / 1e6 for seq, (_, _, t1, seen)
                      in probe.seen.items() if seen >= t['kill'])
            first = min(q for q in probe.seen if q >= need)
            _, p0, p1, _ = probe.seen[first]
            end = p1 / 1e6 + off
            across = max((probe.seen[q][2] - probe.seen[q][1]) / 1000.0
                         for q in probe.seen if need - 1 <= q <= first)
            row = {
                'stall': (end - t['kill']) * 1000,
                'stall (line seen)': (t['probe'] - t['kill']) * 1000,
                'probe across kill (guest)': across,
                'started->probe': (end - t['started']) * 1000,
                'total': (t['progress'] - t['kill']) * 1000,
                'respawn': (t['listen'] - t['kill']) * 1000,
                'reconnect': (t['conn'] - t['listen']) * 1000,
                'sandbox+restore': (t['restored'] - t['conn']) * 1000,
                'restore': us / 1000.0,
                'handshake': (t['started'] - t['restored']) * 1000,
                'resubmit+guest': (t['progress'] - t['started']) * 1000,
            }
            if 'exec' in t:
                row['exec'] = (t['exec'] - t['kill']) * 1000
                row['exec->listen'] = (t['listen'] - t['exec']) * 1000
            return row, count(UPGRADE_LINE) - n_up

        for k in range(kills):
            row, _ = restart(k, lambda pid: os.kill(pid, signal.SIGKILL))
            rows.append(row)
            if (k + 1) % 10 == 0:
                say('stall (reconnect-ms=%d): %d/%d restarts, last %.1f ms '
                    '(old end point %.1f ms)' % (
                        reconnect_ms, k + 1, kills, rows[-1]['stall'],
                        rows[-1]['total']))
        up_failed = None
        holder = sup.pid
        for k in range(upgrades):
            ino = install_binary(binpath)
            try:
                row, execs = restart(kills + k,
                                     lambda pid: os.kill(holder,
                                                         signal.SIGUSR1))
            except TimeoutError as e:
                up_failed = 'upgrade %d: %s' % (k + 1, e)
                break
            # The holder executed the new binary, same pid
            exe = os.stat('/proc/%d/exe' % holder).st_ino \
                if sup.alive() else None
            if execs != 1 or 'exec' not in row or exe != ino:
                up_failed = ('upgrade %d: %d "upgrade: executing" lines, '
                             'holder %s, exe inode %s (installed %d)' % (
                                 k + 1, execs, 'alive' if sup.alive()
                                 else 'gone', exe, ino))
                break
            up_rows.append(row)
            say('upgrade %d/%d (reconnect-ms=%d): stall %.1f ms (SIGUSR1 to '
                'exec %.1f ms, to listening %.1f ms)' % (
                    k + 1, upgrades, reconnect_ms, row['stall'], row['exec'],
                    row['respawn']))
        if up_failed:
            say('upgrades: FAILED (%s)' % up_failed)
        for _ in range(20):
            sample()
            time.sleep(0.1)
        open(os.path.join(h.shared, 'stop'), 'w').close()
        try:
            h.wait_console(r'^GUEST DONE rc=\d+', 300,
                           'the end of the workload')
            summary, bad = vmharness.parse_workload(h.read_console())
            ok = not bad and summary and summary['errors'] == 0 and \
                summary['mismatches'] == 0
        except (TimeoutError, RuntimeError) as e:
            say('stall: the workload did not end: %s' % str(e).splitlines()[0])
            ok = False
        return {'rows': rows, 'up_rows': up_rows, 'series': series,
                'marks': marks, 'inodes': inodes, 'ok': bool(ok),
                'reconnect_ms': reconnect_ms, 'up_failed': up_failed}


# -- restore scaling ------------------------------------------------------------

RESTORED_RX = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                         r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds '
                         r'\((\d+) stale\) in (\d+) us', re.M)
CEILING_SAMPLE = 8


def restore_one(n, ceiling=False):
    """The guest stats n files, the worker is SIGKILLed, the holder starts
    the next.  ceiling: n is more than the daemon can keep, and the
    guest's statdir ends with EMFILE where the daemon's fd ceiling is;
    then a sample of the names it looked up is stat'ed again once the
    guest's attribute and entry timeouts (cache=auto: 1 s) have passed,
    so that the restored worker serves them, and checked against the
    host's inode numbers."""
    with vmharness.Harness('bench-restore-%d' % n) as h:
        big = os.path.join(h.shared, 'big')
        os.mkdir(big)
        for i in range(n):
            open(os.path.join(big, 'f%07d' % i), 'w').close()
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(state)
        hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
        line = hold.cmd('statdir big', timeout=1200)
        looked_up = int(line.fields.get('count', 0))
        if not line.ok and not (ceiling and line.result == 'err=EMFILE'):
            raise RuntimeError('statdir failed: %s' % line)
        rss_before = rss_kb(h.supervised_child_pid())
        os.kill(h.supervised_child_pid(), signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not RESTORED_RX.search(sup.output()):
            if time.monotonic() > deadline:
                raise TimeoutError('no restore of %d inodes' % n)
            time.sleep(0.01)
        m = RESTORED_RX.search(sup.output())
        sample_bad = []
        if ceiling:
            # The guest's readdir order is the host's: the first entries
            # ("." and ".." among them) are the ones it looked up
            names = os.listdir(big)[:max(0, looked_up - 2)]
            step = max(1, len(names) // CEILING_SAMPLE)
            sample = names[::step][:CEILING_SAMPLE] + names[-1:]
            time.sleep(1.2)
            for name in sample:
                line = hold.cmd('stat big/%s' % name, timeout=60)
                ino = os.stat(os.path.join(big, name)).st_ino
                if not line.ok or int(line.fields.get('ino', -1)) != ino:
                    sample_bad.append('%s: %s' % (name, line))
        else:
            line = hold.cmd('stat big/f0000001', timeout=60)
            if not line.ok:
                raise RuntimeError('guest after restore: %s' % line)
        disk = sum(os.path.getsize(os.path.join(state, f))
                   for f in os.listdir(state))
        inodes, files, dirs, plocks, stale, us = map(int, m.groups())
        return {'files_made': n, 'inodes': inodes, 'us': us,
                'kept': inodes + files + dirs + plocks - stale,
                'stale': stale, 'rss_kb': rss_kb(
                    h.supervised_child_pid()), 'rss_before_kb': rss_before,
                'state_bytes': disk, 'ceiling': ceiling,
                'looked_up': looked_up, 'sample_bad': sample_bad}


def try_restore_one(n, ceiling=False):
    try:
        return restore_one(n, ceiling)
    except Exception as e:
        say('restore %d: FAILED (%s: %s)' % (
            n, type(e).__name__, (str(e).splitlines() or [''])[0]))
        return None


def restore(quick, nofile):
    """Restore time against the number of inodes, and the ceiling run.
    Returns the rows, the least-squares fit (us per inode, fixed us) over
    the runs with no stale record (every inode's fd found in the table),
    kept_max (None if the ceiling run failed or left a stale record or
    a sample it could not serve) and the failed sizes."""
    rows, failed = [], []
    # One fd per inode, in the table the holder and its worker share
    sizes = [n for n in ([1000] if quick else [1000, 5000, 10000, 13000])
             if n + 1000 < nofile]
    for n in sizes:
        say('restore: %d inodes (the guest stats them first)' % n)
        r = try_restore_one(n)
        if r is None:
            failed.append('restore %d' % n)
            continue
        rows.append(r)
        say('restore: %(inodes)d inodes in %(us)d us (%(kept)d fds kept, '
            '%(stale)d stale), worker RSS %(rss_kb)d kB, '
            'state files %(state_bytes)d bytes' % rows[-1])
    # The ceiling: as many files as RLIMIT_NOFILE (up to 1M); the guest
    # looks them up until EMFILE
    n = min(nofile, 1000000)
    say('restore: the fd ceiling (%d files, RLIMIT_NOFILE %d; the guest '
        'stats until EMFILE)' % (n, nofile))
    kept_max = None
    r = try_restore_one(n, ceiling=True)
    if r is None:
        failed.append('restore at the ceiling')
    else:
        rows.append(r)
        say('restore: ceiling: the guest looked up %(looked_up)d entries, '
            '%(inodes)d inodes restored in %(us)d us (%(kept)d fds kept, '
            '%(stale)d stale), worker RSS %(rss_kb)d kB' % r)
        if r['sample_bad']:
            say('restore: ceiling: the restored worker did not serve '
                'the sample: %s' % '; '.join(r['sample_bad'][:3]))
        elif r['stale'] == 0:
            kept_max = r['inodes']
    fit = [r for r in rows if not r['stale']]
    if len(fit) < 2:
        say('restore: %d runs with no stale record, no fit' % len(fit))
        return rows, float('nan'), float('nan'), kept_max, failed
    mx = statistics.mean(r['inodes'] for r in fit)
    my = statistics.mean(r['us'] for r in fit)
    per = (sum((r['inodes'] - mx) * (r['us'] - my) for r in fit) /
           sum((r['inodes'] - mx) ** 2 for r in fit))
    return rows, per, my - per * mx, kept_max, failed


# -- output --------------------------------------------------------------------

def gnuplot(script):
    subprocess.run(['gnuplot'], input=script.encode(), check=True)


def plots(rows, series, marks):
    dat = os.path.join(TOP, 'build', 'bench')
    os.makedirs(dat, exist_ok=True)
    with open(os.path.join(dat, 'stall.dat'), 'w') as f:
        for r in rows:
            f.write('%.3f\n' % r['stall'])
    with open(os.path.join(dat, 'throughput.dat'), 'w') as f:
        prev = None
        for t, n in series:
            if prev and t > prev[0]:
                f.write('%.2f %.1f\n' % (t, (n - prev[1]) / (t - prev[0])))
            prev = (t, n)
    with open(os.path.join(dat, 'kills.dat'), 'w') as f:
        for t in marks:
            f.write('%.2f\n' % t)
    gnuplot('''set terminal png size 800,450
set output '%(docs)s/bench-stall.png'
set title 'Guest-visible stall per virtiofsd restart (%(n)d SIGKILLs)'
set xlabel 'stall: SIGKILL to the first guest request the new daemon served (ms)'
set ylabel 'restarts'
set style fill solid 0.6
binwidth = 5
set boxwidth binwidth
bin(x) = binwidth * floor(x / binwidth) + binwidth / 2.0
plot '%(dat)s/stall.dat' using (bin($1)):(1.0) smooth freq with boxes notitle
''' % {'docs': DOCS, 'dat': dat, 'n': len(rows)})
    arrows = ''.join("set arrow from %.2f, graph 0 to %.2f, graph 1 nohead "
                     "lc rgb 'red' lw 0.5\n" % (t, t) for t in marks)
    gnuplot('''set terminal png size 900,400
set output '%(docs)s/bench-throughput.png'
set title 'Guest workload steps per second; red lines: SIGKILL of virtiofsd'
set xlabel 'time (s)'
set ylabel 'steps/s'
set yrange [0:*]
%(arrows)s
plot '%(dat)s/throughput.dat' using 1:2 with lines lw 1.5 lc rgb 'blue' \\
     title 'guest steps/s'
''' % {'docs': DOCS, 'dat': dat, 'arrows': arrows})


def syscall_table(L, configs, calls):
    """Syscalls per operation: totals, and the calls recovery adds."""
    ref = 'base' if 'base' in configs else 'off'
    L.append('\nSystem calls per guest operation, counted with `strace -c '
             '-f` on the daemon\'s process tree (with recovery the '
             'holder and its worker) in '
             'one more run of each configuration; they include the '
             'start-up and the guest\'s mount, a few hundred calls in all.  '
             'The calls below are the ones whose count per operation '
             'differs by 0.05 or more between "on" and "%s".\n' % ref)
    for load in ('meta', 'data'):
        L.append('%s: %s.\n' % (load, ', '.join(
            '%s %.2f' % (c, sum(calls[(load, c)].values()))
            if (load, c) in calls else '%s failed' % c for c in configs)))
        if (load, 'on') not in calls or (load, ref) not in calls:
            continue
        on, other = calls[(load, 'on')], calls[(load, ref)]
        names = sorted(set(on) | set(other),
                       key=lambda k: -abs(on.get(k, 0) - other.get(k, 0)))
        names = [k for k in names
                 if abs(on.get(k, 0) - other.get(k, 0)) >= 0.05]
        if not names:
            L.append('No call differs by 0.05 per operation or more.\n')
            continue
        L.append('| syscall | %s | on | on - %s |' % (ref, ref))
        L.append('| --- | --- | --- | --- |')
        for k in names:
            L.append('| %s | %.2f | %.2f | %+.2f |' % (
                k, other.get(k, 0), on.get(k, 0),
                on.get(k, 0) - other.get(k, 0)))
        L.append('')


STALL_PARTS = (
    ('stall', 'SIGKILL to the completion of the first probe that had to '
     'reach the new daemon, at the guest\'s timestamp'),
    ('stall (line seen)', 'the same, when the host read the probe\'s line '
     'on the console'),
    ('respawn', 'SIGKILL to the new worker waiting for QEMU (the holder '
     'reaps the old one, closes its connection and clones the next)'),
    ('reconnect', 'waiting to QEMU connected (the holder kept the '
     'listening socket)'),
    ('sandbox+restore', 'connected to the session restored'),
    ('restore', 'the daemon\'s own figure, inside sandbox+restore'),
    ('handshake', 'restored to the rings started'),
    ('started->probe', 'rings started to that probe done (replay, the '
     'probe\'s own requests, up to one probe period)'),
    ('probe across kill (guest)', 'the longest guest-measured duration of '
     'the probes from the one in flight at the kill to that one (it can '
     'start before the kill, so it can exceed the stall)'),
    ('total', 'old end point: SIGKILL to the next workload step after the '
     'rings started'),
    ('resubmit+guest', 'old: rings started to that step'),
)

UPGRADE_PARTS = (
    ('stall', 'SIGUSR1 to the completion of the first probe that had to '
     'reach the upgraded daemon, at the guest\'s timestamp'),
    ('stall (line seen)', 'the same, when the host read the probe\'s line '
     'on the console'),
    ('exec', 'SIGUSR1 to the holder\'s "upgrade: executing" line (it '
     'SIGKILLs its worker and reaps it first)'),
    ('exec->listen', 'that line to the new binary\'s worker waiting for '
     'QEMU (the exec, the new holder\'s start, the clone)'),
    ('respawn', 'SIGUSR1 to the new worker waiting for QEMU (the two '
     'above)'),
    ('reconnect', 'waiting to QEMU connected'),
    ('sandbox+restore', 'connected to the session restored'),
    ('restore', 'the daemon\'s own figure, inside sandbox+restore'),
    ('handshake', 'restored to the rings started'),
    ('started->probe', 'rings started to that probe done'),
    ('probe across kill (guest)', 'the longest guest-measured duration of '
     'the probes from the one in flight at SIGUSR1 to that one'),
    ('total', 'old end point: SIGUSR1 to the next workload step after the '
     'rings started'),
)


def p99(rows, key='stall'):
    return percentile([r[key] for r in rows], 99) if rows else None


def fmt(x, spec='%.1f'):
    return 'failed' if x is None or x != x else spec % x


def parts_table(L, rows, parts):
    L.append('| part | what | min ms | p50 ms | p99 ms | max ms |')
    L.append('| --- | --- | --- | --- | --- | --- |')
    for key, what in parts:
        xs = [r[key] for r in rows]
        L.append('| %s | %s | %.1f | %.1f | %.1f | %.1f |' % (
            key, what, min(xs), percentile(xs, 50), percentile(xs, 99),
            max(xs)))
    L.append('')


def print_parts(title, rows, parts):
    for key, _ in parts:
        xs = [r[key] for r in rows]
        print('%s %s: min %.1f p50 %.1f p99 %.1f max %.1f ms' % (
            title, key, min(xs), percentile(xs, 50), percentile(xs, 99),
            max(xs)), flush=True)


def stall_head(L, title, st, failed):
    """A stall section's title; False, with a FAILED line, without rows."""
    L.append('## %s\n' % title)
    if not st or not st['rows']:
        L.append('FAILED: %s.\n' % (failed or 'no restart measured'))
        return False
    return True


def stall_section(L, st, note='', failed=None):
    if not stall_head(L, 'Guest-visible stall per restart', st, failed):
        return
    L.append('%d SIGKILLs of the virtiofsd worker (`-o reconnect`: the '
             'process started holds the fd table and restarts its worker) '
             'while the guest runs 2 data writers and 2 '
             'metadata workers, with %d inodes looked up beforehand '
             '(`--stat-dir`); QEMU `reconnect-ms=%d`.%s\n'
             % (len(st['rows']), st['inodes'], st['reconnect_ms'], note))
    L.append('Stall: from SIGKILL to the completion of the first guest '
             'request that had to reach the new daemon.  The workload\'s '
             'probe thread (`--probe-ms %d`) creates a fresh name with '
             'O_EXCL and unlinks the previous one, one probe at a time, '
             '%d ms apart (at once after a slow one), and prints the '
             'guest\'s CLOCK_MONOTONIC at its start and end.  Once the '
             'killed daemon has exited, the host lists the probe '
             'directory: a probe whose create or unlink is not done there '
             'must be served by the new daemon.  The guest\'s clock is '
             'placed on the host\'s per kill by the least (host time the '
             'line was read - guest end time) over the probe lines read '
             'while polling every millisecond (the console\'s least '
             'latency stays in it, so the stall reads that much long).  '
             'The parts come from polling (1 ms) the daemon\'s log lines '
             '(host times: when the host is busy the poll loop runs late, '
             'and "started->probe", a guest time minus a host time, can '
             'then read below 0, by as much as its min column).  The '
             'probe thread runs in the old end point\'s runs too.  The '
             'old end point '
             '("total": the next workload step after the rings started) '
             'is kept for comparison: steps the guest\'s caches answer '
             'count there, so it can end before any request reached the '
             'new daemon.  Workload result after all restarts%s: %s.\n'
             % (torture.PROBE_MS, torture.PROBE_MS,
                ' and upgrades' if st['up_rows'] else '',
                'no error, every block verified' if st['ok'] else 'FAILED'))
    parts_table(L, st['rows'], STALL_PARTS)
    L.append('![stall histogram](bench-stall.png)\n')
    L.append('![guest throughput with the kills](bench-throughput.png)\n')


def stall1_section(L, st1, failed=None):
    if not stall_head(L, 'Stall with QEMU reconnect-ms=1', st1, failed):
        return
    L.append('The same as above in a guest of its own, %d SIGKILLs, with '
             'QEMU retrying the connection every millisecond instead of '
             'every 10: what the retry period adds to the stall.  '
             'Workload result: %s.\n' % (
                 len(st1['rows']), 'no error, every block verified'
                 if st1['ok'] else 'FAILED'))
    parts_table(L, st1['rows'], STALL_PARTS)


def upgrade_section(L, st, failed=None):
    L.append('## Stall of a planned upgrade\n')
    if not st or not st['up_rows'] or st['up_failed']:
        L.append('FAILED: %s.\n' % (
            (st and st['up_failed']) or failed or 'no upgrade measured'))
        if not st or not st['up_rows']:
            return
    L.append('%d planned upgrades in the guest of the first section, '
             'after its kills, under the same load: each time a new copy '
             'of the binary is renamed onto the path the holder was '
             'started as (a new inode, as a package upgrade leaves), then '
             'SIGUSR1 to the holder: it SIGKILLs its worker, executes the '
             'new binary (same pid) with the fd table, and the new '
             'binary\'s worker restores.  Each upgrade is checked: one '
             '"holder: upgrade: executing" line, the holder alive, its '
             '/proc/PID/exe the inode installed.  Stall: from SIGUSR1 to '
             'the completion of the first probe that had to reach the '
             'upgraded daemon (the probe of the section above).\n'
             % len(st['up_rows']))
    parts_table(L, st['up_rows'], UPGRADE_PARTS)


def write_stall_only(args, t0, st):
    """Replace the stall section of docs/benchmarks.md and the stall
    figure of its last line; the rest stays from the last full run."""
    with open(OUT_MD) as f:
        text = f.read()
    L = []
    stall_section(L, st,
                  '  This section: `python3 tests/bench/bench.py '
                  '--stall-only --kills %d` on %s, in %.0f s, load average '
                  '%.1f at its start (other jobs shared the CPUs); the '
                  'other sections are from the run named above.'
                  % (len(st['rows']), datetime.datetime.now().strftime(
                      '%Y-%m-%d %H:%M'), time.time() - t0, args.load))
    a = text.index('## Guest-visible stall per restart')
    b = text.index('\n## ', a) + 1
    text = text[:a] + '\n'.join(L) + '\n' + text[b:]
    # not upgrade_stall_p99_ms
    text = re.sub(r'\bstall_p99_ms=(?:[\d.]+|failed)',
                  'stall_p99_ms=%.1f' % p99(st['rows']), text)
    with open(OUT_MD, 'w') as f:
        f.write(text)


def cost_section(L, R):
    configs, table, calls = R['configs'], R['table'], R['calls']
    ref = 'base' if 'base' in configs else 'off'
    L.append('## Steady-state cost\n')
    L.append('virtiofsd CPU per guest operation (all threads of the daemon '
             'and, with recovery, of the holder and its worker; from '
             'schedstat) and '
             'the guest\'s operations per second, median of %d interleaved '
             'rounds (each round runs every configuration, in an order '
             'rotated by one from the round before), next to the system '
             'calls per operation (one more run each, under strace).  '
             'meta: `workload meta` (create, mkdir, rename, link, '
             'symlink, readlink, stat, xattrs, flock, readdir, unlink, '
             'rmdir); data: `workload data --bs 4k` (sequential 4 KiB '
             'writes, fsync, 4 KiB verifying reads).  base: the unpatched '
             'QEMU 7.2 virtiofsd; off: this series\' virtiofsd without '
             '`-o reconnect`; on: with it (the holder and its worker).  '
             'Instruction counts are not available here: there is no PMU '
             'in this VM (`perf stat -e instructions` is not supported), '
             'and valgrind cannot run the daemon (it does not implement '
             'seccomp(2), and the sandbox hides its output file).  So CPU '
             'time is compared as ratios within one run, and the exact '
             'measure is the number of system calls per operation.  '
             '"CPU vs X" (against %s: the figure of the last line): the '
             'ratio of the medians.  Other jobs share this machine\'s 2 '
             'CPUs: the CPU per operation of one configuration varies '
             'from round to round by tens of %% (the rounds\' column), '
             'more where the guest ran slower (fewer requests per wake-up '
             'of the daemon), so a few %% is below what these figures '
             'resolve; the system calls are exact.\n'
             % (R['rounds'], ref))
    if R['cost_failed']:
        L.append('Runs that failed or timed out, left out of the figures: '
                 '%s.\n' % ', '.join(R['cost_failed']))
    others = [c for c in configs if c != 'on']
    L.append(('| workload | config | guest ops/s | daemon CPU us/op | %s'
              'CPU us/op of each round | syscalls/op | %s' % (
                  ''.join('CPU vs %s | ' % c for c in others),
                  ''.join('syscalls vs %s | ' % c for c in others))).rstrip())
    L.append('|' + ' --- |' * (6 + 2 * len(others)))
    for load in ('meta', 'data'):
        for c in configs:
            cells = [load, c]
            if (load, c) in table:
                ops, us = table[(load, c)]
                cells += ['%.0f' % ops, '%.2f' % us]
            else:
                ops = us = None
                cells += ['failed', 'failed']
            for o in others:
                x = cost_pct(table, load, o, c) if c != o else None
                cells.append('-' if x is None else '%+.1f %%' % x)
            cells.append(' '.join('%.1f' % x for x in
                                  R['per_round'].get((load, c), [])) or '-')
            sc = sum(calls[(load, c)].values()) if (load, c) in calls \
                else None
            cells.append(fmt(sc, '%.2f'))
            for o in others:
                if c == o or sc is None or (load, o) not in calls:
                    cells.append('-')
                else:
                    cells.append('%+.2f' % (
                        sc - sum(calls[(load, o)].values())))
            L.append('| ' + ' | '.join(cells) + ' |')
    L.append('\n"on" against %s in CPU per operation computed otherwise: '
             'the median over the rounds of the two\'s ratio in that round '
             '(they ran seconds apart): meta %s, data %s; the ratio of the '
             'least of the rounds: meta %s, data %s (%%).\n' % (
                 ref, *[fmt(paired_pct(R['paired'], load, ref), '%+.1f')
                        for load in ('meta', 'data')],
                 *[fmt(least_pct(R['per_round'], load, ref), '%+.1f')
                   for load in ('meta', 'data')]))
    syscall_table(L, configs, calls)


def restore_section(L, R):
    L.append('\n## Restore scaling and the most inodes kept\n')
    L.append('The guest stats N files (the session then holds N + 1 '
             'inodes: the directory too), the virtiofsd worker is killed '
             'and the holder starts '
             'the next; "restore" is the worker\'s time to rebuild its maps '
             'from the records and check each fd the dead worker left in '
             'the shared fd table (nothing is reopened).  RLIMIT_NOFILE '
             'here: %d (the table holds one fd per inode, and this host '
             'does not let root raise the hard limit).  The last row is '
             'the ceiling: %d files, which the guest stats until the '
             'daemon answers EMFILE (a new kept fd must stay below '
             'RLIMIT_NOFILE less 64, the headroom the next worker needs); '
             'after the restart the guest stats a sample of %d of the '
             'names it looked up once its caches expired (1 s), and each '
             'must give the host\'s inode number: kept_max is the inodes '
             'that run restored with none stale and the whole sample '
             'served.  "fds kept": the records\' fds found and checked in '
             'the table; "stale": records whose fd was not there or not '
             'their inode (the fit leaves such runs out).\n'
             % (R['nofile'], min(R['nofile'], 1000000), CEILING_SAMPLE + 1))
    if R['restore_failed']:
        L.append('Failed: %s.\n' % ', '.join(R['restore_failed']))
    L.append('| files | looked up | inodes | fds kept | stale | restore ms | '
             'us/inode | worker RSS kB | state files bytes |')
    L.append('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for r in R['rrows']:
        L.append('| %d%s | %s | %d | %d | %d | %.1f | %.2f | %d | %d |' % (
            r['files_made'], ' (ceiling)' if r['ceiling'] else '',
            r['looked_up'] - 2, r['inodes'], r['kept'], r['stale'],
            r['us'] / 1000.0, r['us'] / float(r['inodes']), r['rss_kb'],
            r['state_bytes']))
    L.append('\nLinear fit over the runs with no stale record: '
             '%s us + %s us per inode.  kept_max: %s%s.\n' % (
                 fmt(R['fixed'], '%.0f'), fmt(R['per'], '%.2f'),
                 fmt(R['kept_max'], '%d'),
                 ''.join('; the sample was not served: %s' % '; '.join(
                     r['sample_bad'][:3]) for r in R['rrows']
                     if r['sample_bad'])))


def write_md(args, t0, R, closing):
    cpu = ''
    with open('/proc/cpuinfo') as f:
        m = re.search(r'^model name\s*:\s*(.*)$', f.read(), re.M)
        cpu = m.group(1) if m else '?'
    qemu = subprocess.run([vmharness.QEMU_BIN, '--version'],
                          stdout=subprocess.PIPE).stdout.decode().split('\n')[0]
    L = []
    L.append('# Benchmarks: what virtiofsd crash recovery costs\n')
    L.append('Generated by `make bench%s` on %s, in %.0f s, load average '
             '%.1f at its start.  Do not edit: run it again.\n' % (
                 ' QUICK=1' if args.quick else '',
                 datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
                 time.time() - t0, args.load))
    L.append('- Machine: %d CPUs (%s), %s, kernel %s' % (
        os.cpu_count(), cpu, platform.machine(), platform.release()))
    L.append('- %s; guest: Debian 6.1 kernel under %s, 2 vCPUs, 512 MiB' % (
        qemu, 'KVM' if vmharness.kvm_usable() else 'TCG'))
    L.append('- Command: `make bench%s` (`tests/bench/bench.py`)\n' % (
        ' QUICK=1' if args.quick else ''))
    if R['quick_note']:
        L.append('%s\n' % R['quick_note'])
    stall_section(L, R['st'], failed=R['st_failed'])
    stall1_section(L, R['st1'], failed=R['st1_failed'])
    upgrade_section(L, R['st'], failed=R['st_failed'])
    if R['configs'] is not None:
        cost_section(L, R)
    else:
        L.append('## Steady-state cost\n\nFAILED: %s.\n' % R['cost_err'])
    if R['rrows'] is not None:
        restore_section(L, R)
    else:
        L.append('\n## Restore scaling and the most inodes kept\n\n'
                 'FAILED: %s.\n' % R['restore_err'])
    L.append('```\n%s\n```\n' % closing)
    with open(OUT_MD, 'w') as f:
        f.write('\n'.join(L))


def attempt(what, fn, *a):
    """fn(*a), or None (said, with the traceback on stderr) if it raised:
    one part that fails does not take the others' figures with it."""
    try:
        return fn(*a), None
    except Exception as e:
        err = '%s: %s' % (type(e).__name__, (str(e).splitlines() or [''])[0])
        say('%s: FAILED (%s)' % (what, err))
        traceback.print_exc()
        return None, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--stall-only', action='store_true',
                    help='only the stall part (reconnect-ms=10, no '
                    'upgrades); rewrites its section of docs/benchmarks.md')
    ap.add_argument('--kills', type=int, default=None,
                    help='SIGKILLs in the stall part (default 100, 20 '
                    'with --quick; at reconnect-ms=1 100, 10 with --quick)')
    args = ap.parse_args()
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR',
                          os.path.join(TOP, 'build', 'results', 'work'))
    nofile = raise_nofile()
    t0 = time.time()
    args.load = os.getloadavg()[0]
    if args.stall_only:
        say('stall under load')
        st = stall(args.quick, args.kills)
        plots(st['rows'], st['series'], st['marks'])
        write_stall_only(args, t0, st)
        say('rewrote the stall section of %s' % os.path.relpath(OUT_MD, TOP))
        print_parts('stall', st['rows'], STALL_PARTS)
        return 0 if st['ok'] else 1
    kills = args.kills if args.kills is not None else \
        (20 if args.quick else 100)
    kills1 = args.kills if args.kills is not None else \
        (10 if args.quick else 100)
    R = {'nofile': nofile, 'quick_note': None}
    if args.quick:
        R['quick_note'] = (
            'QUICK=1: %d SIGKILLs at reconnect-ms=10 and %d at '
            'reconnect-ms=1 (make bench: 100 each); cost: %d rounds of '
            'the reference and "on" only (make bench: %d rounds of base, '
            'off and on), with smaller workloads; restore at 1,000 inodes '
            'and the ceiling only; %d upgrades and %d inodes as make bench.'
            % (kills, kills1, COST_ROUNDS_QUICK, COST_ROUNDS, UPGRADES,
               STALL_INODES))
    have_base = build_base(args.quick)
    say('stall under load (reconnect-ms=10), then %d planned upgrades'
        % UPGRADES)
    R['st'], R['st_failed'] = attempt('stall (reconnect-ms=10)', stall,
                                      args.quick, kills, 10, UPGRADES)
    say('stall under load (reconnect-ms=1)')
    R['st1'], R['st1_failed'] = attempt('stall (reconnect-ms=1)', stall,
                                        args.quick, kills1, 1, 0)
    say('steady-state cost')
    c, R['cost_err'] = attempt('cost', cost, args.quick, have_base)
    (R['configs'], R['table'], R['calls'], R['cost_failed'], R['rounds'],
     R['per_round'], R['paired']) = c or (None, {}, {}, [], 0, {}, {})
    say('restore scaling and the fd ceiling')
    r, R['restore_err'] = attempt('restore', restore, args.quick, nofile)
    R['rrows'], R['per'], R['fixed'], R['kept_max'], R['restore_failed'] = \
        r or (None, None, None, None, [])
    st, st1 = R['st'], R['st1']
    if st and st['rows']:
        _, err = attempt('plots', plots, st['rows'], st['series'],
                         st['marks'])
    ref = 'base' if have_base else 'off'
    pct = {load: cost_pct(R['table'], load, ref)
           for load in ('meta', 'data')}
    up = st and not st['up_failed'] and len(st['up_rows']) == UPGRADES
    closing = ('bench: stall_p99_ms=%s meta_cost_pct=%s data_cost_pct=%s '
               'restore_us_per_entry=%s kept_max=%s upgrade_stall_p99_ms=%s'
               % (fmt(p99(st['rows']) if st else None),
                  fmt(pct['meta']), fmt(pct['data']), fmt(R['per'], '%.2f'),
                  fmt(R['kept_max'], '%d'),
                  fmt(p99(st['up_rows']) if up else None)))
    write_md(args, t0, R, closing)
    say('wrote %s' % os.path.relpath(OUT_MD, TOP))
    # The figures behind the line, for a log reader
    if st and st['rows']:
        print_parts('stall (reconnect-ms=10, %d kills)' % len(st['rows']),
                    st['rows'], STALL_PARTS)
    if st1 and st1['rows']:
        print_parts('stall (reconnect-ms=1, %d kills)' % len(st1['rows']),
                    st1['rows'], STALL_PARTS[:6])
    if st and st['up_rows']:
        print_parts('upgrade (%d)' % len(st['up_rows']), st['up_rows'],
                    UPGRADE_PARTS[:6])
    for (load, c), (ops, us) in sorted(R['table'].items()):
        calls = R['calls'].get((load, c))
        print('cost %s/%s: median %.0f ops/s, %.2f us CPU per op, %s '
              'syscalls per op' % (load, c, ops, us, fmt(
                  sum(calls.values()) if calls else None, '%.2f')),
              flush=True)
    for load in ('meta', 'data'):
        on, other = R['calls'].get((load, 'on')), R['calls'].get((load, ref))
        print('cost %s on vs %s: CPU %s %% (ratio of the medians); median '
              'of the rounds\' pairs %s %% (%s), ratio of the least %s %%; '
              'syscalls per op %s' % (
                  load, ref, fmt(pct[load], '%+.1f'),
                  fmt(paired_pct(R['paired'], load, ref), '%+.1f'),
                  ' '.join('%+.1f' % x
                           for x in R['paired'].get((load, ref), [])),
                  fmt(least_pct(R['per_round'], load, ref), '%+.1f'),
                  fmt(sum(on.values()) - sum(other.values()) if on and other
                      else None, '%+.2f')), flush=True)
    if R['quick_note']:
        say(R['quick_note'])
    print(closing, flush=True)
    ok = (st and st['ok'] and up and st1 and st1['ok'] and
          not R['cost_failed'] and R['configs'] is not None and
          R['kept_max'] is not None and not R['restore_failed'])
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
