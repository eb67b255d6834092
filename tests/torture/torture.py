#!/usr/bin/env python3
"""Kill virtiofsd at random moments under guest load; nothing may be lost.

One guest runs the verified workload ("all": data workers write, fsync
and verify checksummed blocks, meta workers churn names, links, xattrs and
locks) while virtiofsd -o reconnect runs under virtiofsd-supervisor and
QEMU reconnects with reconnect-ms.  The host SIGKILLs the daemon every
0.2-1.2 s (random, seeded), CYCLES times, then lets the workload finish,
verifies the data again on the host, and checks the keeper:

  io-errors    workload steps that failed with an errno (EIO, ESTALE, ...)
  mismatches   blocks or metadata whose content was wrong
  hung         1 if the guest made no progress for HANG_S seconds
  leaked-fds   fds in the supervisor beyond what the restored daemon holds

Last line: "torture: N cycles, E io-errors, M mismatches, H hung,
L leaked-fds"; the exit status is 0 only if E, M, H and L are all 0.

Usage: torture.py [--cycles N] [--seed S] [--keep]
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
RESTORED = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs \((\d+) fds from the store, '
                      r'(\d+) reopened by handle, (\d+) stale\) in (\d+) us',
                      re.M)
WORKERS, FILES, SIZE, BS = 2, 2, 1 << 20, 65536


def progress(msg):
    print('[torture] ' + msg, flush=True)


def wl_steps(h):
    return len(re.findall(r'^WL (?:w|m)\d+ ', h.read_console(), re.M))


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def restores(sup):
    return RESTORED.findall(sup.output())


def wait_restore(h, sup, n, timeout=30):
    deadline = time.monotonic() + timeout
    while len(restores(sup)) < n:
        if not sup.alive():
            raise RuntimeError('the supervisor exited\n' + h.log_tail())
        if time.monotonic() > deadline:
            raise TimeoutError('restart %d not restored within %d s\n%s'
                               % (n, timeout, h.log_tail()))
        time.sleep(0.005)


def run(cycles, seed, keep):
    rng = random.Random(seed)
    hung = 0
    with vmharness.Harness('torture', keep=keep) as h:
        os.mkdir(os.path.join(h.shared, 'data'))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'xattr', 'flock'))
        base_fds = fd_count(sup.pid)
        # The workload runs until the host creates the stop file after the
        # last kill; the duration is only a bound
        duration = int((cycles * 5 + 120) * 1000)
        stop = os.path.join(h.shared, 'stop')
        args = ['all', '--dir', '/mnt/data', '--workers', str(WORKERS),
                '--files', str(FILES), '--size', str(SIZE), '--bs', str(BS),
                '--iters', '100000000', '--duration-ms', str(duration),
                '--stop-file', '/mnt/stop', '--seed', str(seed)]
        h.start_qemu('wl.run=' + ','.join(args),
                     chardev_opts=',reconnect-ms=10')
        h.wait_console(r'^GUEST MOUNT ok', 120, 'the mount')
        t_start = time.monotonic()
        for cycle in range(1, cycles + 1):
            time.sleep(rng.uniform(0.2, 1.2))
            if re.search(r'^GUEST DONE', h.read_console(), re.M):
                progress('the workload ended before cycle %d' % cycle)
                break
            steps = wl_steps(h)
            os.kill(h.supervised_child_pid(), signal.SIGKILL)
            wait_restore(h, sup, cycle)
            # The guest must make progress again
            deadline = time.monotonic() + HANG_S
            while wl_steps(h) <= steps and \
                    not re.search(r'^GUEST DONE', h.read_console(), re.M):
                if time.monotonic() > deadline:
                    hung = 1
                    break
                time.sleep(0.01)
            if hung:
                progress('cycle %d: no guest progress within %d s'
                         % (cycle, HANG_S))
                break
            if cycle % 10 == 0 or cycle == cycles:
                progress('%d/%d cycles, %d workload steps, %.0f s'
                         % (cycle, cycles, wl_steps(h),
                            time.monotonic() - t_start))
        done = cycle
        if not hung:
            open(stop, 'w').close()
            try:
                h.wait_console(r'^GUEST DONE rc=\d+', 300,
                               'the end of the workload')
            except TimeoutError:
                hung = 1
        summary, bad = vmharness.parse_workload(h.read_console())
        errors = summary['errors'] if summary else len(bad) or 1
        mismatches = summary['mismatches'] if summary else 0
        for line in bad[:20]:
            progress('guest: ' + line)

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

        # Leaked fds: one more restart at rest, then the keeper must hold
        # exactly what the restored daemon claims
        leaked = 0
        if sup.alive() and not hung:
            n = len(restores(sup))
            os.kill(h.supervised_child_pid(), signal.SIGKILL)
            wait_restore(h, sup, n + 1)
            last = restores(sup)[-1]
            held = int(last[3]) + int(last[4])
            time.sleep(0.2)
            leaked = max(0, fd_count(sup.pid) - base_fds - held)
            if leaked:
                progress('supervisor holds %d fds, %d at start, the daemon '
                         'claims %d' % (fd_count(sup.pid), base_fds, held))
        print('torture: %d cycles, %d io-errors, %d mismatches, %d hung, '
              '%d leaked-fds' % (done, errors, mismatches, hung, leaked),
              flush=True)
        return 0 if not (errors or mismatches or hung or leaked) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cycles', type=int, default=20)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR',
                          os.path.join(vmharness.TOP, 'build', 'results',
                                       'work'))
    return run(a.cycles, a.seed, a.keep)


if __name__ == '__main__':
    sys.exit(main())
