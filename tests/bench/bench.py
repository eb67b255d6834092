#!/usr/bin/env python3
"""make bench: what crash recovery costs, measured on this machine.

  stall     SIGKILL of virtiofsd under guest load, with many live inodes,
            to the completion of the first guest request that had to
            reach the new daemon (the workload's probe, timestamped in the
            guest); per restart, broken down by the daemon's log lines
            (polled every millisecond), next to the old end point (the
            next workload step, which cached steps can give)
  cost      virtiofsd CPU per guest operation (all the daemon's threads,
            with recovery the holder's and its worker's, from
            /proc/<pid>/task/*/schedstat) for
            a metadata and a data workload, recovery on against the same
            tree with recovery off and against the unpatched base
            virtiofsd; configurations interleaved, median of the rounds
            (a run that fails or times out is reported as failed and
            left out; a figure with no run left reads "failed")
  restore   restart time and memory against the number of inodes

Writes docs/benchmarks.md and PNG plots (gnuplot) next to it, and ends
with "bench: stall_p99_ms=X meta_cost_pct=Y data_cost_pct=Z
restore_us_per_entry=W".  QUICK=1 (--quick) runs a smaller version;
--stall-only [--kills N] runs only the stall part and rewrites only its
section of docs/benchmarks.md (and the stall figure of the last line).
"""

import argparse
import datetime
import os
import platform
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import time

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
    configs = (['base'] if have_base else []) + ['off', 'on']
    rounds = 1 if quick else 3
    loads = {
        'meta': ['meta', '--dir', '/mnt/w', '--workers', '1', '--iters',
                 '150' if quick else '600'],
        'data': ['data', '--dir', '/mnt/w', '--workers', '1', '--files',
                 '1', '--size', '4m' if quick else '16m', '--bs', '4k'],
    }
    res = {}
    calls = {}
    failed = []
    for load, args in loads.items():
        for r in range(rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for c in order:
                what = 'cost %s/%s round %d' % (load, c, r + 1)
                run = try_workload(what, c, args)
                if run is None:
                    failed.append(what)
                    continue
                ops, ms, ns, _ = run
                res.setdefault((load, c), []).append((ops, ms, ns))
                say('%s: %d ops, %.0f ops/s, %.1f us CPU per op'
                    % (what, ops, ops * 1000.0 / ms, ns / 1000.0 / ops))
        if quick:
            continue
        # Syscalls per operation: exact, unlike the CPU time on this VM
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
    for (load, c), runs in res.items():
        table[(load, c)] = (
            statistics.median(o * 1000.0 / m for o, m, _ in runs),
            statistics.median(n / 1000.0 / o for o, _, n in runs))
    return configs, table, calls, failed


def cost_pct(table, load, ref):
    """"on" against ref in CPU per operation, in %; None if either has no
    run that completed."""
    if (load, 'on') not in table or (load, ref) not in table:
        return None
    return (table[(load, 'on')][1] / table[(load, ref)][1] - 1) * 100


# -- stall --------------------------------------------------------------------

LISTEN = r'Waiting for vhost-user socket connection'
CONN = r'Received vhost-user socket connection'
RESTORED_LINE = r'^state: restored session'
STARTED = r'fv_queue_set_started: qidx=1 started=1'
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


def stall(quick, kills=None):
    kills = kills or (20 if quick else 100)
    inodes = 2000 if quick else 10000
    with vmharness.Harness('bench-stall') as h:
        big = os.path.join(h.shared, 'big')
        os.mkdir(big)
        for i in range(inodes):
            open(os.path.join(big, 'f%06d' % i), 'w').close()
        os.mkdir(os.path.join(h.shared, 'w'))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'xattr', 'flock'))
        duration = int((kills * 5 + 120) * 1000)
        h.start_qemu('wl.run=' + ','.join(
            ['all', '--dir', '/mnt/w', '--workers', '2', '--files', '2',
             '--size', '1m', '--bs', '64k', '--iters', '100000000',
             '--duration-ms', str(duration), '--stat-dir', '/mnt/big',
             '--stop-file', '/mnt/stop', '--probe-ms',
             str(torture.PROBE_MS)]),
            chardev_opts=',reconnect-ms=10')
        h.wait_console(r'^WL main \d+ statdir .* ok', 300, 'the warm-up')
        log = LogTail(sup.log_path,
                      [LISTEN, CONN, RESTORED_LINE, STARTED])
        t_start = time.monotonic()
        series, marks, rows = [], [], []
        rng = random.Random(7)

        console = LogTail(h.console, [r'^WL [wm]\d+ '])
        probe = ProbeTail(h.console)
        probe_dir = os.path.join(h.shared, 'w', 'probe')

        def steps():
            return console.count(r'^WL [wm]\d+ ')

        def sample():
            series.append((time.monotonic() - t_start, steps()))

        count = log.count

        for k in range(kills):
            until = time.monotonic() + rng.uniform(0.3, 0.8)
            while time.monotonic() < until:
                sample()
                time.sleep(0.1)
            pids = vmharness.process_tree(h.supervised_child_pid())
            pid = pids[0]
            n_listen = count(LISTEN)
            n_conn = count(CONN)
            n_rest = count(RESTORED_LINE)
            n_start = count(STARTED)
            s0 = steps()
            t = {'kill': time.monotonic()}
            os.kill(pid, signal.SIGKILL)
            marks.append(t['kill'] - t_start)
            deadline = t['kill'] + 30
            need = None
            calib = None
            while calib is None or now < calib:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError('restart %d did not complete' % k)
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
                    # the old daemon can do no more: what it left undone
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
            rows.append({
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
            })
            if (k + 1) % 10 == 0:
                say('stall: %d/%d restarts, last %.1f ms (old end point '
                    '%.1f ms)' % (k + 1, kills, rows[-1]['stall'],
                                   rows[-1]['total']))
        for _ in range(20):
            sample()
            time.sleep(0.1)
        open(os.path.join(h.shared, 'stop'), 'w').close()
        h.wait_console(r'^GUEST DONE rc=\d+', 300, 'the end of the workload')
        summary, bad = vmharness.parse_workload(h.read_console())
        ok = not bad and summary and summary['errors'] == 0 and \
            summary['mismatches'] == 0
        return rows, series, marks, inodes, ok


# -- restore scaling ------------------------------------------------------------

def restore_one(n):
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
        if not line.ok:
            raise RuntimeError('statdir failed: %s' % line)
        rss_before = rss_kb(h.supervised_child_pid())
        os.kill(h.supervised_child_pid(), signal.SIGKILL)
        rx = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                        r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds '
                        r'\((\d+) stale\) in (\d+) us', re.M)
        deadline = time.monotonic() + 120
        while not rx.search(sup.output()):
            if time.monotonic() > deadline:
                raise TimeoutError('no restore of %d inodes' % n)
            time.sleep(0.01)
        m = rx.search(sup.output())
        line = hold.cmd('stat big/f0000001', timeout=60)
        if not line.ok:
            raise RuntimeError('guest after restore: %s' % line)
        disk = sum(os.path.getsize(os.path.join(state, f))
                   for f in os.listdir(state))
        inodes, files, dirs, plocks, stale, us = map(int, m.groups())
        return {'inodes': inodes, 'us': us,
                'kept': inodes + files + dirs + plocks - stale,
                'stale': stale, 'rss_kb': rss_kb(
                    h.supervised_child_pid()), 'rss_before_kb': rss_before,
                'state_bytes': disk}


def restore(quick, nofile):
    """Restore time against the number of inodes.  Returns the rows, and
    the least-squares fit (us per inode, fixed us) over the runs with no
    stale record (every inode's fd found in the table)."""
    rows = []
    # One fd per inode, in the table the holder and its worker share
    sizes = [n for n in ([1000, 10000] if quick
                         else [1000, 5000, 10000, 13000])
             if n + 1000 < nofile]
    beyond = int(nofile * 0.9) // 1000 * 1000
    if not quick and beyond > 13000:
        sizes.append(beyond)
    for n in sizes:
        say('restore: %d inodes (the guest stats them first)' % n)
        rows.append(restore_one(n))
        say('restore: %(inodes)d inodes in %(us)d us (%(kept)d fds kept, '
            '%(stale)d stale), worker RSS %(rss_kb)d kB, '
            'state files %(state_bytes)d bytes' % rows[-1])
    fit = [r for r in rows if not r['stale']]
    if len(fit) < 2:
        say('restore: %d runs with no stale record, no fit' % len(fit))
        return rows, float('nan'), float('nan')
    mx = statistics.mean(r['inodes'] for r in fit)
    my = statistics.mean(r['us'] for r in fit)
    per = (sum((r['inodes'] - mx) * (r['us'] - my) for r in fit) /
           sum((r['inodes'] - mx) ** 2 for r in fit))
    return rows, per, my - per * mx


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


def stall_section(L, stall_rows, inodes, stall_ok, note=''):
    L.append('## Guest-visible stall per restart\n')
    L.append('%d SIGKILLs of the virtiofsd worker (`-o reconnect`: the '
             'process started holds the fd table and restarts its worker) '
             'while the guest runs 2 data writers and 2 '
             'metadata workers, with %d inodes looked up beforehand '
             '(`--stat-dir`); QEMU `reconnect-ms=10`.%s\n'
             % (len(stall_rows), inodes, note))
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
             'new daemon.  Workload result after all restarts: %s.\n'
             % (torture.PROBE_MS, torture.PROBE_MS,
                'no error, every block verified' if stall_ok else 'FAILED'))
    L.append('| part | what | min ms | p50 ms | p99 ms | max ms |')
    L.append('| --- | --- | --- | --- | --- | --- |')
    for key, what in STALL_PARTS:
        xs = [r[key] for r in stall_rows]
        L.append('| %s | %s | %.1f | %.1f | %.1f | %.1f |' % (
            key, what, min(xs), percentile(xs, 50), percentile(xs, 99),
            max(xs)))
    L.append('\n![stall histogram](bench-stall.png)\n')
    L.append('![guest throughput with the kills](bench-throughput.png)\n')


def write_stall_only(args, t0, stall_rows, inodes, stall_ok):
    """Replace the stall section of docs/benchmarks.md and the stall
    figure of its last line; the rest stays from the last full run."""
    with open(OUT_MD) as f:
        text = f.read()
    L = []
    stall_section(L, stall_rows, inodes, stall_ok,
                  '  This section: `python3 tests/bench/bench.py '
                  '--stall-only --kills %d` on %s, in %.0f s, load average '
                  '%.1f at its start (other jobs shared the CPUs); the '
                  'other sections are from the run named above.'
                  % (len(stall_rows), datetime.datetime.now().strftime(
                      '%Y-%m-%d %H:%M'), time.time() - t0, args.load))
    a = text.index('## Guest-visible stall per restart')
    b = text.index('## Steady-state cost')
    text = text[:a] + '\n'.join(L) + '\n' + text[b:]
    text = re.sub(r'stall_p99_ms=[\d.]+', 'stall_p99_ms=%.1f' % percentile(
        [r['stall'] for r in stall_rows], 99), text)
    with open(OUT_MD, 'w') as f:
        f.write(text)


def write_md(args, t0, stall_rows, inodes, stall_ok, configs, table, calls,
             failed, rrows, per, fixed, closing):
    cpu = ''
    with open('/proc/cpuinfo') as f:
        m = re.search(r'^model name\s*:\s*(.*)$', f.read(), re.M)
        cpu = m.group(1) if m else '?'
    qemu = subprocess.run([vmharness.QEMU_BIN, '--version'],
                          stdout=subprocess.PIPE).stdout.decode().split('\n')[0]
    L = []
    L.append('# Benchmarks: what virtiofsd crash recovery costs\n')
    L.append('Generated by `make bench%s` on %s, in %.0f s.  Do not edit: '
             'run it again.\n' % (' QUICK=1' if args.quick else '',
                                  datetime.datetime.now().strftime(
                                      '%Y-%m-%d %H:%M'), time.time() - t0))
    L.append('- Machine: %d CPUs (%s), %s, kernel %s' % (
        os.cpu_count(), cpu, platform.machine(), platform.release()))
    L.append('- %s; guest: Debian 6.1 kernel under %s, 2 vCPUs, 512 MiB' % (
        qemu, 'KVM' if vmharness.kvm_usable() else 'TCG'))
    L.append('- Command: `make bench%s` (`tests/bench/bench.py`)\n' % (
        ' QUICK=1' if args.quick else ''))
    stall_section(L, stall_rows, inodes, stall_ok)
    L.append('## Steady-state cost\n')
    L.append('virtiofsd CPU per guest operation (all threads of the daemon '
             'and, with recovery, of the holder and its worker; from '
             'schedstat) and '
             'the guest\'s operations per second, median of %d interleaved '
             'rounds.  meta: `workload meta` (create, mkdir, rename, link, '
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
             'measure is the number of system calls per operation (next '
             'table).\n'
             % (1 if args.quick else 3))
    if failed:
        L.append('Runs that failed or timed out, left out of the figures: '
                 '%s.\n' % ', '.join(failed))
    L.append('| workload | config | guest ops/s | daemon CPU us/op | vs off '
             '| vs base |')
    L.append('| --- | --- | --- | --- | --- | --- |')
    for load in ('meta', 'data'):
        for c in configs:
            if (load, c) not in table:
                L.append('| %s | %s | failed | failed | - | - |' % (load, c))
                continue
            ops, us = table[(load, c)]
            if (load, 'off') not in table:
                L.append('| %s | %s | %.0f | %.2f | - | - |' % (
                    load, c, ops, us))
                continue
            off = table[(load, 'off')][1]
            base = table.get((load, 'base'), (0, 0))[1]
            L.append('| %s | %s | %.0f | %.2f | %+.1f %% | %s |' % (
                load, c, ops, us, (us / off - 1) * 100,
                '%+.1f %%' % ((us / base - 1) * 100) if base else '-'))
    syscall_table(L, configs, calls)
    L.append('\n## Restore scaling\n')
    L.append('The guest stats N files (the session then holds N + 2 '
             'inodes), the virtiofsd worker is killed and the holder starts '
             'the next; "restore" is the worker\'s time to rebuild its maps '
             'from the records and check each fd the dead worker left in '
             'the shared fd table (nothing is reopened).  RLIMIT_NOFILE '
             'here: %d (the table holds one fd per inode, and this host '
             'does not let root raise the hard limit); 1M inodes were not '
             'run: that needs the limit raised and minutes of TCG guest '
             'time and about 1 GiB of guest memory; the fit below '
             'extrapolates.  "fds kept": the records\' fds found and '
             'checked in the table; "stale": records whose fd was not '
             'there or not their inode (the fit leaves such runs out).\n'
             % args.nofile)
    L.append('| inodes | fds kept | stale | restore ms | '
             'us/inode | worker RSS kB | state files bytes |')
    L.append('| --- | --- | --- | --- | --- | --- | --- |')
    for r in rrows:
        L.append('| %d | %d | %d | %.1f | %.2f | %d | %d |' % (
            r['inodes'], r['kept'], r['stale'], r['us'] / 1000.0,
            r['us'] / float(r['inodes']), r['rss_kb'], r['state_bytes']))
    L.append('\nLinear fit over the runs with no stale record: '
             '%.0f us + %.2f us per inode.\n' % (fixed, per))
    L.append('```\n%s\n```\n' % closing)
    with open(OUT_MD, 'w') as f:
        f.write('\n'.join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--stall-only', action='store_true',
                    help='only the stall part; rewrites its section of '
                    'docs/benchmarks.md')
    ap.add_argument('--kills', type=int, default=None,
                    help='SIGKILLs in the stall part (default 100, 20 '
                    'with --quick)')
    args = ap.parse_args()
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR',
                          os.path.join(TOP, 'build', 'results', 'work'))
    nofile = raise_nofile()
    t0 = time.time()
    args.load = os.getloadavg()[0]
    if args.stall_only:
        say('stall under load')
        stall_rows, series, marks, inodes, stall_ok = stall(args.quick,
                                                            args.kills)
        plots(stall_rows, series, marks)
        write_stall_only(args, t0, stall_rows, inodes, stall_ok)
        say('rewrote the stall section of %s' % os.path.relpath(OUT_MD, TOP))
        for key, _ in STALL_PARTS:
            xs = [r[key] for r in stall_rows]
            print('stall %s: min %.1f p50 %.1f p99 %.1f max %.1f ms' % (
                key, min(xs), percentile(xs, 50), percentile(xs, 99),
                max(xs)))
        return 0 if stall_ok else 1
    have_base = build_base(args.quick)
    say('stall under load')
    stall_rows, series, marks, inodes, stall_ok = stall(args.quick,
                                                        args.kills)
    say('steady-state cost')
    configs, table, calls, failed = cost(args.quick, have_base)
    say('restore scaling')
    rrows, per, fixed = restore(args.quick, nofile)
    plots(stall_rows, series, marks)
    ref = 'base' if have_base else 'off'
    pct = {load: cost_pct(table, load, ref) for load in ('meta', 'data')}
    closing = ('bench: stall_p99_ms=%.1f meta_cost_pct=%s '
               'data_cost_pct=%s restore_us_per_entry=%.2f' % (
                   percentile([r['stall'] for r in stall_rows], 99),
                   *('failed' if pct[load] is None else '%.1f' % pct[load]
                     for load in ('meta', 'data')), per))
    args.nofile = nofile
    write_md(args, t0, stall_rows, inodes, stall_ok, configs, table, calls,
             failed, rrows, per, fixed, closing)
    say('wrote %s' % os.path.relpath(OUT_MD, TOP))
    print(closing, flush=True)
    return 0 if stall_ok and not failed else 1


if __name__ == '__main__':
    sys.exit(main())
