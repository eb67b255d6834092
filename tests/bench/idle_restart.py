#!/usr/bin/env python3
"""Idle restart cost against the number of inodes in the session.

For each N: a share with N files in one directory, a guest that reads the
directory (READDIRPLUS looks every entry up, so the session holds N + 2
inodes) and keeps one file open; then SIGKILL of virtiofsd under
virtiofsd-supervisor, and:
  restore_us  the daemon's own figure ("restored session ... in N us")
  stall_ms    SIGKILL to the guest's next request completed (a "check"
              of the open file sent right after the kill)
  rss_kb      the restarted daemon's VmRSS once restored

Usage: tests/bench/idle_restart.py [N ...]   (default 1000 10000 50000)
Prints one line per N and ends with "idle-restart: ..." figures.
"""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
import vmharness  # noqa: E402

RESTORED = re.compile(r'restored session from \S+: (\d+) inodes, (\d+) files, '
                      r'(\d+) dirs \((\d+) fds from the store, (\d+) reopened '
                      r'by handle, (\d+) stale\) in (\d+) us')


def child_of(pid):
    with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
        kids = f.read().split()
    return int(kids[0]) if kids else None


def wait_for(pred, what, timeout):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


def rss_kb(pid):
    """VmRSS of the sandboxed daemon (the supervisor's grandchild)."""
    pids = [pid]
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        with open('/proc/%d/status' % p) as f:
            m = re.search(r'^VmRSS:\s+(\d+)', f.read(), re.M)
            total = max(total, int(m.group(1)) if m else 0)
    return total


def one(n):
    with vmharness.Harness('idle-restart-%d' % n) as h:
        big = os.path.join(h.shared, 'big')
        os.mkdir(big)
        for i in range(n):
            open(os.path.join(big, 'f%07d' % i), 'w').close()
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(state) \
            if hasattr(h, 'start_supervised_virtiofsd') else None
        if sup is None:
            b = os.path.dirname(vmharness.VIRTIOFSD_BIN)
            argv = [os.path.join(b, 'virtiofsd-supervisor'), '--',
                    vmharness.VIRTIOFSD_BIN, '--socket-path=' + h.sock,
                    '-o', 'source=' + h.shared, '-o', 'cache=auto',
                    '-o', 'reconnect', '-o', 'state_dir=' + state]
            sup = vmharness.Proc('supervisor', argv,
                                 os.path.join(h.dir, 'supervisor.log'))
            h.procs.append(sup)
            wait_for(lambda: os.path.exists(h.sock), 'socket', 10)
        hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
        for c in ('open a 1', 'write 1 0 4096 3'):
            assert hold.cmd(c).ok, h.log_tail()
        line = hold.cmd('statdir big', timeout=900)
        assert line.ok and int(line.fields['count']) == n + 2, line
        victim = child_of(sup.pid)
        before = sup.output().count('restored session')
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seq = hold.send('check 1 0 4096 3')
        line = hold.wait(seq, 60)
        stall = (time.monotonic() - t0) * 1000
        assert line.ok, (line, h.log_tail())
        m = wait_for(lambda: sup.output().count('restored session') > before
                     and RESTORED.findall(sup.output())[-1], 'restore', 30)
        inodes, restore_us = int(m[0]), int(m[6])
        kid = child_of(sup.pid)
        rss = rss_kb(kid) if kid else 0
        assert int(m[5]) == 0, m
        return inodes, restore_us, stall, rss


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000, 50000]
    rows = []
    for n in sizes:
        print('[idle-restart] N=%d: booting, reading the directory ...' % n,
              flush=True)
        inodes, us, stall, rss = one(n)
        rows.append((inodes, us, stall, rss))
        print('N=%-7d inodes=%-7d restore_us=%-8d stall_ms=%-7.1f '
              'rss_kb=%d' % (n, inodes, us, stall, rss), flush=True)
    if len(rows) > 1:
        (i0, u0, _, _), (i1, u1, _, _) = rows[0], rows[-1]
        per = (u1 - u0) / (i1 - i0)
        print('idle-restart: restore_us_per_inode=%.2f fixed_us=%.0f'
              % (per, u0 - per * i0))


if __name__ == '__main__':
    main()
