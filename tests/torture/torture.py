#!/usr/bin/env python3
"""Kill virtiofsd at random moments under guest load; nothing may be lost.

One guest runs the verified workload ("all": data workers write, fsync
and verify checksummed blocks, meta workers churn names, links, xattrs and
locks) and, each in a directory of its own, two standard clients from
Debian that we did not write: fio (randrw, --verify=crc32c with a verify
backlog, O_DIRECT so reads go to the daemon) and stress-ng's file-system
stressors with --verify (see STRESS).  virtiofsd -o reconnect runs as
the holder of the fd table with the daemon proper in a worker it
restarts (tools/virtiofsd/fd_holder.c), and QEMU reconnects with
reconnect-ms.  The host SIGKILLs the worker every 0.2-1.2 s (random,
seeded), CYCLES times, then creates the stop file.  The guest finishes
and waits ("GUEST IDLE", share still mounted, nothing running, wl.idle):
the host kills the worker twice more and counts the holder's fds at rest
after each restore, so that nothing changes under the count, lets the
guest power off and verifies the data on the host:

  cycles        kills done under load; fewer than asked fails (the
                workload ending first is a failure, not a shorter run)
  io-errors     workload lines with an errno result (every err= line
                counts, also those the workload leaves out of its summary)
  mismatches    blocks or metadata whose content was wrong (guest or host)
  hung          1 if the guest made no progress for HANG_S seconds after
                a kill: progress is the completion of the first probe
                request that had to reach the restarted daemon (see
                PROBE_MS), not any workload line (steps that completed
                before the kill, or that the guest's caches answered,
                would pass with no daemon at all)
  leaked-fds    fds in the holder's table (which is the worker's too)
                beyond what the records claim (inodes, files, dirs and
                POSIX lock fds of the restore line, less the stale ones)
                plus the fixed set of one connected worker (FIXED_FDS
                more than the table held before QEMU connected), counted
                at rest after each of two restores, plus any growth from
                the first to the second (a dead worker's fds left
                behind); "?" (a failure) when the check could not run
  fio-errors    fio verify failures and I/O errors (a failed run with no
                error line counts 1; no result line from the guest counts 1)
  stress-errors stress-ng "fail:" and "error:" lines, failed or skipped
                stressors (likewise)
  daemon-crashes  worker deaths the host did not cause (a worker it did
                not kill, a signal other than its SIGKILL, an exit
                status), and the holder ending with a status
                other than 0 (a worker's exit status ends it), or with
                0 while QEMU still runs the guest

Last line: "torture: N cycles, E io-errors, M mismatches, H hung,
L leaked-fds, F fio-errors, S stress-errors, C daemon-crashes"; the exit
status is 0 only if N is the number asked and all the others are 0.

Usage: torture.py [--cycles N] [--seed S] [--keep] [--no-clients]
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
import vmharness  # noqa: E402

HANG_S = 30
# The workload's probe thread (--probe-ms): probe k creates probe/p<k>
# with O_EXCL and unlinks p<k-1>, one at a time, PROBE_MS apart, one line
# each.  Once the killed daemon is gone the host lists probe/: the probes
# whose create (or unlink) it finds undone there had to reach the new
# daemon, and the first of them completing is the guest's progress.
PROBE_MS = 10
PROBE = re.compile(r'^WL probe (\d+) create \S+ (\S+) ms=\d+ t0=(\d+) '
                   r't1=(\d+)', re.M)
RESTORED = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds '
                      r'\((\d+) stale\) in (\d+) us', re.M)
# What one worker with a connected front-end holds besides the records'
# fds and what the table held before QEMU connected (the holder's own
# fds, its listening socket, the first worker's state directory): the
# sandbox's mount namespace, its root and /proc fds (3), the five record
# maps (inodes, files, dirs, plocks and, a record file of lo_map since
# patch 0052, intents), the vhost-user connection and its back-end
# channel, the inflight region's memfd, and 4 eventfds for each of the 2
# queues (kick, call, err, the queue thread's kill).  Measured: 26 fds at
# rest, 6 at start.
FIXED_FDS = 20
WORKERS, FILES, SIZE, BS = 2, 2, 1 << 20, 65536
# fio: random 4 KiB reads and writes on a 2 MiB file, each written block
# verified (crc32c header) within 64 writes and again at the end of a run;
# O_DIRECT so that reads come from the daemon, not the guest's page cache
FIO = ['--name=torture', '--directory=/mnt/fio', '--rw=randrw', '--bs=4k',
       '--size=2m', '--ioengine=psync', '--direct=1', '--verify=crc32c',
       '--verify_backlog=64']
# stress-ng's file-system stressors, one instance each, with --verify.
# All ten asked for work on virtiofs here: --xattr needs the daemon's
# -o xattr (set below); --flock takes locks with LOCK_NB where it can and
# the daemon answers a blocking flock EOPNOTSUPP, which stress-ng
# tolerates; --lockf's POSIX locks stay in the guest kernel (no
# -o posix_lock).  --link and --symlink make 8192 names per bogo op, so a
# run lasts about 45 s under TCG whatever --timeout says; 30 s lets the
# others (--xattr does 0 to 2 bogo ops in 10 s) do more in that time.
STRESS = ['--dir', '1', '--rename', '1', '--link', '1', '--symlink', '1',
          '--dentry', '1', '--flock', '1', '--lockf', '1', '--xattr', '1',
          '--chmod', '1', '--utime', '1', '--verify', '--timeout', '30s',
          '--temp-path', '/mnt/stress', '--metrics-brief']
CLIENTS_INITRD = os.path.join(vmharness.GUEST_DIR, 'initrd-clients.img')
# The holder's lines about a dead worker ("... killed by signal 9 after
# N ms: restarting", "... ended (signal 9) after ...", "... ended before
# serving a request ...", "... could not start (exit status N)"), each
# naming its pid
WORKER_LINE = re.compile(r'^holder: worker (\d+) (.*)$', re.M)


def worker_crashes(text, killed):
    """The holder's lines about workers the host did not kill (pids not in
    killed), or that died of something else than SIGKILL (another
    signal, an exit status)."""
    bad = []
    for pid, rest in WORKER_LINE.findall(text):
        sig = re.search(r'signal (\d+)', rest)
        if (int(pid) not in killed or 'exit status' in rest or
                (sig and int(sig.group(1)) != signal.SIGKILL)):
            bad.append('worker %s %s' % (pid, rest))
    return bad


def progress(msg):
    print('[torture] ' + msg, flush=True)


def wl_steps(h):
    return len(re.findall(r'^WL (?:w|m)\d+ ', h.read_console(), re.M))


def dead(pids):
    """True once none of pids can run any more (gone, or a zombie whose
    threads have all exited)."""
    for p in pids:
        try:
            with open('/proc/%d/stat' % p) as f:
                st = f.read().rsplit(')', 1)[1].split()[0]
            if st != 'Z' or len(os.listdir('/proc/%d/task' % p)) > 1:
                return False
        except (OSError, IndexError):
            pass
    return True


def wait_dead(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while not dead(pids):
        if time.monotonic() > deadline:
            raise TimeoutError('the killed daemon %s did not exit within '
                               '%d s' % (pids, timeout))
        time.sleep(0.0005)


def first_needing(probe_dir):
    """Call with the killed daemon dead: the sequence number of the first
    probe that must reach the new daemon.  The newest file p<M> there was
    created by the old daemon; if p<M-1> is there too, probe M's unlink of
    it was not done, so probe M needs the new daemon, else probe M+1."""
    try:
        seqs = sorted(int(n[1:]) for n in os.listdir(probe_dir)
                      if re.match(r'^p\d+$', n))
    except FileNotFoundError:
        seqs = []
    if not seqs:
        return 0
    m = seqs[-1]
    return m if m - 1 in seqs else m + 1


def probes(text):
    """{seq: (result, t0_us, t1_us)} of the probe lines in text"""
    return {int(m.group(1)): (m.group(2), int(m.group(3)), int(m.group(4)))
            for m in PROBE.finditer(text)}


def probe_done(h, seq):
    """Whether a probe numbered seq or later has completed"""
    return any(int(m.group(1)) >= seq
               for m in PROBE.finditer(h.read_console()))


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def fd_targets(pid):
    """fd number -> what it is, for the report of a leak"""
    res = {}
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            res[int(fd)] = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            pass
    return res


def restores(sup):
    return RESTORED.findall(sup.output())


def restores_text(sup):
    return [m.group(0) for m in RESTORED.finditer(sup.output())]


def wait_restore(h, sup, n, timeout=30):
    deadline = time.monotonic() + timeout
    while len(restores(sup)) < n:
        if not sup.alive():
            raise RuntimeError('the holder exited (%s)\n%s'
                               % (sup.popen.returncode, h.log_tail()))
        if time.monotonic() > deadline:
            raise TimeoutError('restart %d not restored within %d s\n%s'
                               % (n, timeout, h.log_tail()))
        time.sleep(0.005)


def settled_fd_count(pid, timeout=5):
    """The number of fds in pid's table once it has not changed for
    0.5 s (the guest is idle), or after timeout."""
    deadline = time.monotonic() + timeout
    last_n, same = None, 0
    while same < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
        n = fd_count(pid)
        same = same + 1 if n == last_n else 0
        last_n = n
    return fd_count(pid)


def base_fd_count(h, sup):
    """The holder's table before QEMU connects: its own fds, the
    listening socket and what the first worker opens before it waits for
    the connection (its state directory)."""
    vmharness.wait_output(sup, r'Waiting for vhost-user socket connection',
                          10, 'the first worker waiting for QEMU')
    return settled_fd_count(sup.pid, 2)


def guest_progress(h, need, timeout=HANG_S):
    """Wait until probe need (the first that had to reach the new daemon)
    or a later one has completed, or the guest is done; False if neither
    happened within timeout."""
    deadline = time.monotonic() + timeout
    while not probe_done(h, need) and \
            not re.search(r'^GUEST DONE', h.read_console(), re.M):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def check_fds(h, sup, base_fds, killed):
    """Kill the worker twice more while the guest is idle (it waits in
    "GUEST IDLE", share mounted, nothing open) and, after each restore,
    compare the holder's fd table (the worker's too) with what the
    records claim.  Returns the number of leaked fds, or None (with the
    reason printed) if the check could not run."""
    if not sup.alive() or not h.qemu.alive():
        progress('leak check could not run: the %s is gone'
                 % ('holder' if not sup.alive() else 'guest'))
        return None
    bound = base_fds + FIXED_FDS
    unclaimed = []
    try:
        for _ in range(2):
            n = len(restores(sup))
            pids = vmharness.process_tree(h.supervised_child_pid())
            os.kill(pids[0], signal.SIGKILL)
            killed.add(pids[0])
            wait_dead(pids)
            wait_restore(h, sup, n + 1)
            inodes, files, dirs, plocks, stale, _us = map(
                int, restores(sup)[-1])
            # Each record restored holds one fd; a stale one holds none
            # (the POSIX lock records that go stale are not in plocks)
            held = inodes + files + dirs + plocks - stale
            total = settled_fd_count(sup.pid)
            unclaimed.append(total - held)
            progress('at rest: the holder holds %d fds, the records claim '
                     '%d (%s), %d unclaimed (at most %d: %d before QEMU '
                     'connected + %d of a connected worker)'
                     % (total, held, restores_text(sup)[-1].split(': ', 1)[1],
                        unclaimed[-1], bound, base_fds, FIXED_FDS))
    except (RuntimeError, TimeoutError, OSError, ValueError) as e:
        progress('leak check could not run: %s' % str(e).splitlines()[0])
        return None
    # More than the fixed set after the first restore: fds of the dead
    # workers under load; growth from the first to the second: fds of the
    # worker killed in between
    first, second = unclaimed
    leaked = max(0, first - bound) + max(0, second - max(first, bound))
    if leaked or second < first:
        progress('holder fds after the last restore:')
        for fd, what in sorted(fd_targets(sup.pid).items()):
            progress('  fd %d: %s' % (fd, what))
    # Fewer unclaimed fds after a restart than before it is as wrong as
    # more (the accounting is off, or the worker lost fds): count it
    return leaked + max(0, first - second)


def workload_counts(console):
    """io-errors and mismatches from the workload's lines: the larger of
    its summary and the err= lines themselves (the summary leaves some
    out: an unsupported xattr, the write/verify lines that repeat a
    failure logged before them)."""
    summary, bad = vmharness.parse_workload(console)
    mism_lines = [b for b in bad if ' err=MISMATCH' in b]
    errno_lines = [b for b in bad if b not in mism_lines]
    # "write"/"verify" lines repeat a failure logged on its own line; they
    # count alone only if no other line carries it
    own = [b for b in errno_lines if b.split()[3] not in ('write', 'verify')]
    errors = max(len(own), 1 if errno_lines else 0)
    mism_own = [b for b in mism_lines
                if b.split()[3] not in ('write', 'verify')]
    mismatches = max(len(mism_own), 1 if mism_lines else 0)
    if summary:
        errors = max(errors, summary['errors'])
        mismatches = max(mismatches, summary['mismatches'])
    else:
        progress('no workload summary')
        errors = max(errors, 1)
    for line in bad[:20]:
        progress('guest: ' + line)
    return errors, mismatches


def client_errors(console, name):
    """A client's error count from its END line; 1 if there is none."""
    for line in re.findall(r'^GUEST %s\| .*$' % name, console, re.M)[:20]:
        progress('guest: ' + line)
    # stress-ng's last run: bogo ops per stressor (one doing nothing shows)
    if name == 'STRESS':
        last = console.rfind('\nGUEST STRESS run=')
        for line in re.findall(r'^GUEST STRESS: .*$', console[:last],
                               re.M)[-11:]:
            progress('guest: ' + line)
    runs = re.findall(r'^GUEST %s run=\d+ rc=(\d+) errors=\d+' % name,
                      console, re.M)
    m = re.search(r'^GUEST %s END runs=(\d+) errors=(\d+)' % name,
                  console, re.M)
    if not m:
        progress('%s: no result line from the guest' % name.lower())
        return 1
    progress('%s: %s runs, %s errors' % (name.lower(), m.group(1),
                                         m.group(2)))
    return int(m.group(2)) + (0 if runs else 1)


def run(cycles, seed, keep, clients=True):
    if clients and not os.path.exists(CLIENTS_INITRD):
        progress('%s is missing: run "make guest" (tests/guest/'
                 'build-image.sh writes it)' % CLIENTS_INITRD)
        return 1
    rng = random.Random(seed)
    hung = 0
    kills = 0
    killed = set()      # the pids of the workers the host killed
    with vmharness.Harness('torture', keep=keep) as h:
        for d in ('data', 'fio', 'stress'):
            os.mkdir(os.path.join(h.shared, d))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'xattr', 'flock'))
        base_fds = base_fd_count(h, sup)
        progress('holder fds at start: %s' % ', '.join(
            '%d %s' % kv for kv in sorted(fd_targets(sup.pid).items())))
        # The workload runs until the host creates the stop file after the
        # last kill; the duration is only a bound
        duration = int((cycles * 5 + 120) * 1000)
        stop = os.path.join(h.shared, 'stop')
        idle = os.path.join(h.shared, 'idle')
        args = ['all', '--dir', '/mnt/data', '--workers', str(WORKERS),
                '--files', str(FILES), '--size', str(SIZE), '--bs', str(BS),
                '--iters', '100000000', '--duration-ms', str(duration),
                '--stop-file', '/mnt/stop', '--seed', str(seed),
                '--probe-ms', str(PROBE_MS)]
        append = 'wl.run=' + ','.join(args) + ' wl.idle=/mnt/idle'
        extra = []
        if clients:
            append += ' wl.stop=/mnt/stop wl.fio=%s wl.stress=%s' % (
                ','.join(FIO), ','.join(STRESS))
            # The second -initrd wins: the image with fio and stress-ng
            extra = ['-initrd', CLIENTS_INITRD]
        h.start_qemu(append, chardev_opts=',reconnect-ms=10', extra=extra)
        h.wait_console(r'^GUEST MOUNT ok', 180, 'the mount')
        t_start = time.monotonic()
        for cycle in range(1, cycles + 1):
            time.sleep(rng.uniform(0.2, 1.2))
            if re.search(r'^GUEST (RUN|DONE)', h.read_console(), re.M):
                progress('the workload ended before kill %d of %d'
                         % (cycle, cycles))
                break
            n = len(restores(sup))
            try:
                pids = vmharness.process_tree(h.supervised_child_pid())
                os.kill(pids[0], signal.SIGKILL)
                killed.add(pids[0])
                kills += 1
                wait_dead(pids)
                need = first_needing(os.path.join(h.shared, 'data', 'probe'))
                wait_restore(h, sup, n + 1)
            except (RuntimeError, TimeoutError) as e:
                # No daemon serves the share any more: the guest is stuck
                hung = 1
                progress('cycle %d: %s' % (cycle, str(e).splitlines()[0]))
                break
            # The guest must make progress again
            if not guest_progress(h, need):
                hung = 1
                progress('cycle %d: probe %d (the first to need the new '
                         'daemon) not done within %d s'
                         % (cycle, need, HANG_S))
                break
            if cycle % 10 == 0 or cycle == cycles:
                progress('%d/%d cycles, %d workload steps, %.0f s'
                         % (cycle, cycles, wl_steps(h),
                            time.monotonic() - t_start))

        # The guest finishes, then waits with the share mounted: the last
        # restart and the fd count happen at rest, before it powers off
        # (after that QEMU exits and so does the holder, with the status
        # of its worker)
        leaked = None
        if not hung:
            open(stop, 'w').close()
            try:
                h.wait_console(r'^GUEST IDLE', 300, 'the end of the workload')
                leaked = check_fds(h, sup, base_fds, killed)
                open(idle, 'w').close()
                h.wait_console(r'^GUEST DONE rc=\d+', HANG_S + 30,
                               'the end after the leak check')
            except (TimeoutError, RuntimeError) as e:
                progress(str(e).splitlines()[0])
                hung = 1
        else:
            progress('leak check could not run: the guest hung')
        console = h.read_console()
        errors, mismatches = workload_counts(console)
        fio_errors = client_errors(console, 'FIO') if clients else 0
        stress_errors = client_errors(console, 'STRESS') if clients else 0
        # Worker deaths the host did not cause; a worker's exit
        # (other than a retried start) ends the holder with its
        # status: once the guest
        # is done (QEMU ends the session) that must be 0, and before
        # that the holder must still be there
        crashes = worker_crashes(sup.output(), killed)
        done = re.search(r'^GUEST DONE', console, re.M)
        if done:
            try:
                sup.wait(HANG_S)
            except TimeoutError:
                pass
        rc = sup.popen.poll()
        if rc is not None and (rc != 0 or (not done and h.qemu.alive())):
            crashes.append('holder exit status %d%s'
                           % (rc, '' if done else ' before the guest was '
                              'done'))
        for x in sorted(set(crashes)):
            progress('daemon crash: %s' % x)

        # The host sees what the guest wrote
        if not hung:
            wl = os.path.join(vmharness.TOP, 'tests', 'guest', 'workload')
            # Each file at the generation the guest last wrote to it
            try:
                gens = vmharness.written_gens(h.read_console(), WORKERS,
                                              FILES)
            except RuntimeError as e:
                progress('host: %s' % e)
                gens = ','.join(['0'] * (WORKERS * FILES))
            r = subprocess.run([wl, 'data', '--verify-only', '--gens', gens,
                                '--dir',
                                os.path.join(h.shared, 'data'), '--workers',
                                str(WORKERS), '--files', str(FILES),
                                '--size', str(SIZE), '--bs', str(BS),
                                '--seed', str(seed)],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=300)
            hs, hbad = vmharness.parse_workload(r.stdout.decode())
            if r.returncode or not hs:
                # A block the host cannot read counts as much as a bad one
                mismatches += ((hs['mismatches'] + hs['errors']) or 1
                               if hs else 1)
                for line in hbad[:10]:
                    progress('host: ' + line)

        if kills < cycles:
            progress('%d kills of the %d asked' % (kills, cycles))
        print('torture: %d cycles, %d io-errors, %d mismatches, %d hung, '
              '%s leaked-fds, %d fio-errors, %d stress-errors, '
              '%d daemon-crashes'
              % (kills, errors, mismatches, hung,
                 '?' if leaked is None else leaked, fio_errors,
                 stress_errors, len(crashes)), flush=True)
        ok = (kills == cycles and leaked == 0 and not
              (errors or mismatches or hung or fio_errors or stress_errors
               or crashes))
        return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cycles', type=int, default=20)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--keep', action='store_true')
    ap.add_argument('--no-clients', action='store_true',
                    help='only our workload (no fio, no stress-ng): for '
                    'debugging, the torture line then reads 0 for them')
    a = ap.parse_args()
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR',
                          os.path.join(vmharness.TOP, 'build', 'results',
                                       'work'))
    return run(a.cycles, a.seed, a.keep, not a.no_clients)


if __name__ == '__main__':
    sys.exit(main())
