#!/usr/bin/env python3
"""make demo: boot a guest on the series' QEMU with a virtio-fs share, run
the verified workload, then kill virtiofsd in the middle of guest I/O and
show what the guest sees.

The second act shows today's behaviour (virtiofsd without -o reconnect,
QEMU without reconnect-ms): the guest's I/O hangs.  The third act shows the
QEMU side of the series on its own: QEMU reconnects to a new stock daemon.
The fourth shows crash recovery while the guest is idle: with
-o reconnect the virtiofsd started holds the fd table and serves in a
worker; the worker is killed, the holder starts the next, which restores
the session, and the guest carries on with every file, directory, lock
and xattr it held.  The fifth kills the worker 5 times in the middle of
guest I/O: per kill, the stall the guest sees; at the end, the proof that
nothing was lost.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'lib'))
import vmharness  # noqa: E402

HANG_WATCH = 15     # seconds the demo watches a guest that makes no progress


def say(msg=''):
    print('[demo] ' + msg if msg else '', flush=True)


def virtiofsd_has_recovery():
    out = subprocess.run([vmharness.VIRTIOFSD_BIN, '--help'],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=10).stdout.decode()
    return re.search(r'\breconnect\b', out) is not None


def qemu_version():
    out = subprocess.run([vmharness.QEMU_BIN, '--version'],
                         stdout=subprocess.PIPE, timeout=10).stdout.decode()
    return out.splitlines()[0]


def wl_count(h):
    return len(re.findall(r'^WL w\d+ ', h.read_console(), re.M))


def start_busy_guest(h, run, chardev_opts=''):
    """Start virtiofsd and a guest running the given workload, and return
    once the workload is visibly doing I/O."""
    os.mkdir(os.path.join(h.shared, 'data'))
    h.start_virtiofsd(options=('cache=none', 'xattr'))
    h.start_qemu('wl.run=' + run, chardev_opts=chardev_opts)
    h.wait_console(r'^GUEST MOUNT ok', 90, 'the mount')
    deadline = time.monotonic() + 60
    while wl_count(h) < 6:
        if time.monotonic() > deadline:
            raise TimeoutError('the guest workload made no progress')
        time.sleep(0.1)


def act_one():
    say('Act 1: a guest writes and verifies 50 MiB and churns metadata on '
        'a virtio-fs share')
    with vmharness.Harness('demo-verify') as h:
        os.mkdir(os.path.join(h.shared, 'data'))
        h.start_virtiofsd(options=('cache=auto', 'xattr'))
        say('virtiofsd pid %d serves %s' % (h.virtiofsd.pid, h.shared))
        t0 = time.monotonic()
        h.start_qemu('wl.run=all,--dir,/mnt/data,--workers,2,--files,5,'
                     '--size,5242880,--bs,262144,--iters,20')
        say('QEMU pid %d boots the guest (TCG)' % h.qemu.pid)
        h.wait_console(r'^GUEST MOUNT ok', 90, 'the mount')
        say('guest mounted the share after %.1f s' % (time.monotonic() - t0))
        h.wait_console(r'^GUEST DONE rc=\d+', 120, 'the end of the workload')
        summary, bad = vmharness.parse_workload(h.read_console())
        say('workload finished after %.1f s: %d steps, %d errors, '
            '%d mismatches, %.1f MiB verified'
            % (time.monotonic() - t0, summary['ops'], summary['errors'],
               summary['mismatches'], summary['bytes_verified'] / 2**20))
        ok = summary['errors'] == 0 and summary['mismatches'] == 0 and not bad
        h.qemu.wait(30)
        return ok


def act_two():
    say('Act 2: kill -9 virtiofsd while the guest is in the middle of I/O')
    with vmharness.Harness('demo-kill') as h:
        start_busy_guest(h, 'data,--dir,/mnt/data,--workers,2,--files,2,'
                         '--size,4194304,--bs,65536,--duration-ms,60000')
        before = wl_count(h)
        say('guest workload running (%d steps logged); SIGKILL virtiofsd '
            'pid %d' % (before, h.virtiofsd.pid))
        h.virtiofsd.signal(signal.SIGKILL)
        t_kill = time.monotonic()
        say('no crash recovery (as in QEMU 7.2): watching the guest for '
            '%d s' % HANG_WATCH)
        last = before
        while time.monotonic() - t_kill < HANG_WATCH:
            time.sleep(3)
            n = wl_count(h)
            say('  %4.1f s after the kill: %d new workload steps'
                % (time.monotonic() - t_kill, n - last))
            last = n
        qlog = [l for l in h.qemu.output().splitlines() if l.strip()]
        for l in qlog[-3:]:
            say('  QEMU says: ' + l)
        hung = wl_count(h) - before <= 2 and h.qemu.alive()
        if hung:
            say('the guest I/O is hung: without crash recovery the share '
                'is lost until the guest reboots.  This is what the series '
                'fixes.')
        else:
            say('the guest went on without the daemon?  Unexpected for an '
                'unpatched virtiofsd.')
        say('killing QEMU pid %d' % h.qemu.pid)
        return hung


def act_three():
    say('Act 3: the same kill with this series\' QEMU: -chardev '
        '...,reconnect-ms=100, and a new virtiofsd started after the kill')
    with vmharness.Harness('demo-reconnect') as h:
        start_busy_guest(h, 'data,--dir,/mnt/data,--workers,2,--files,2,'
                         '--size,1048576,--bs,65536,--duration-ms,10000',
                         chardev_opts=',reconnect-ms=100')
        say('SIGKILL virtiofsd pid %d during guest I/O' % h.virtiofsd.pid)
        h.virtiofsd.signal(signal.SIGKILL)
        h.virtiofsd.wait(10)
        before = wl_count(h)
        h.start_virtiofsd(options=('cache=none', 'xattr'), extra=['-d'])
        say('new virtiofsd pid %d; QEMU pid %d %s'
            % (h.virtiofsd.pid, h.qemu.pid,
               'is still running' if h.qemu.alive() else 'DIED'))
        h.wait_console(r'^GUEST DONE rc=\d+', 90, 'the end of the workload')
        served = len(re.findall(r'opcode: (?!INIT)', h.virtiofsd.output()))
        errors = sorted(set(re.findall(r'err=(\w+)', h.read_console())))
        say('the guest went on: %d more workload steps; %d guest requests '
            'reached the new daemon' % (wl_count(h) - before, served))
        say('what the guest sees: %s.  QEMU restored the transport; the '
            'stock daemon has no FUSE session, so it answers with errors. '
            'The virtiofsd patches of the series make this transparent.'
            % ('errors ' + ', '.join(errors) if errors else 'no errors'))
        return served > 0 and not re.search(r'(?i)abort|assert',
                                             h.qemu.output())


IDLE_BEFORE = [
    ('open a 1', 'open file a read-write'),
    ('write 1 0 1048576 7', 'write 1 MiB to it'),
    ('opendir sub 2', 'open directory sub, read its first entry'),
    ('chdir sub', 'cd into sub'),
    ('open b 3', 'open file b'),
    ('write 3 0 65536 9', 'write 64 KiB to b'),
    ('unlink b', 'unlink b (it stays open)'),
    ('flock 1', 'flock a'),
    ('setxattr a user.demo hello', 'set xattr user.demo on a'),
]
IDLE_AFTER = [
    ('check 1 0 1048576 7', 'a still has its 1 MiB'),
    ('write 1 1048576 65536 5', 'a takes more data'),
    ('check 1 1048576 65536 5', 'and reads it back'),
    ('check 3 0 65536 9', 'the unlinked b is still readable'),
    ('write 3 65536 4096 4', 'and writable'),
    ('readdir 2', 'sub\'s readdir resumes'),
    ('stat sub/f05', 'lookups work'),
    ('getxattr a user.demo hello', 'the xattr is there'),
    ('funlock 1', 'the flock is released'),
    ('close 1', 'close a'),
    ('close 2', 'close sub'),
    ('close 3', 'close b'),
]


def act_four():
    say('Act 4: crash recovery, guest idle: virtiofsd -o reconnect (the '
        'process started holds the fds, a worker it restarts serves); the '
        'guest holds files, a directory, a flock')
    with vmharness.Harness('demo-idle-restart') as h:
        os.mkdir(os.path.join(h.shared, 'sub'))
        for i in range(20):
            open(os.path.join(h.shared, 'sub', 'f%02d' % i), 'w').close()
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'flock', 'xattr'))
        hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
        for cmd, what in IDLE_BEFORE:
            line = hold.cmd(cmd)
            say('  guest: %-44s %s' % (what, line.result))
            if not line.ok:
                return False
        victim = h.supervised_child_pid()
        say('SIGKILL the virtiofsd worker pid %d (the holder, pid %d, stays)'
            % (victim, sup.pid))
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seq = hold.send(IDLE_AFTER[0][0])
        results = [hold.wait(seq, 60)]
        stall = (time.monotonic() - t_kill) * 1000
        for l in sup.output().splitlines():
            if 'restored session' in l or l.startswith('holder: worker'):
                say('  ' + l.strip())
        say('the guest\'s next request completed %.0f ms after the kill'
            % stall)
        for cmd, _ in IDLE_AFTER[1:]:
            results.append(hold.cmd(cmd))
        for (cmd, what), line in zip(IDLE_AFTER, results):
            say('  guest: %-44s %s' % (what, line.result))
        ok = all(line.ok for line in results)
        say('every file, directory, lock and xattr the guest held survived '
            'the kill' if ok else 'the guest saw errors after the restart')
        return ok


KILLS = 5


def act_five():
    say('Act 5: kill -9 the virtiofsd worker %d times during guest I/O (2 writers '
        'verifying checksummed blocks, 2 metadata churners)' % KILLS)
    with vmharness.Harness('demo-kill-load') as h:
        os.mkdir(os.path.join(h.shared, 'data'))
        state = os.path.join(h.dir, 'state')
        os.mkdir(state, 0o700)
        sup = h.start_supervised_virtiofsd(
            state, options=('cache=auto', 'xattr', 'flock'))
        data = ['--dir', '/mnt/data', '--workers', '2', '--files', '2',
                '--size', '1048576', '--bs', '65536']
        h.start_qemu('wl.run=' + ','.join(
            ['all'] + data + ['--iters', '1000000', '--duration-ms',
                              str((KILLS * 2 + 4) * 1000)]),
            chardev_opts=',reconnect-ms=10')
        h.wait_console(r'^GUEST MOUNT ok', 90, 'the mount')
        rx = re.compile(r'^state: restored session.* in (\d+) us', re.M)
        stalls = []
        for k in range(1, KILLS + 1):
            time.sleep(1.5)
            pid = h.supervised_child_pid()
            restored = len(rx.findall(sup.output()))
            steps = len(re.findall(r'^WL [wm]\d+ ', h.read_console(), re.M))
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            deadline = t_kill + 30
            while len(rx.findall(sup.output())) == restored:
                if time.monotonic() > deadline:
                    raise TimeoutError('the worker was not restarted\n'
                                       + h.log_tail())
                time.sleep(0.002)
            restore_us = int(rx.findall(sup.output())[-1])
            while len(re.findall(r'^WL [wm]\d+ ', h.read_console(),
                                 re.M)) <= steps:
                if time.monotonic() > deadline:
                    raise TimeoutError('the guest made no progress')
                time.sleep(0.002)
            stalls.append((time.monotonic() - t_kill) * 1000)
            say('  kill %d: SIGKILL pid %d; restored the session in %d us; '
                'guest I/O going again %.0f ms after the kill'
                % (k, pid, restore_us, stalls[-1]))
        h.wait_console(r'^GUEST DONE rc=\d+', 120, 'the end of the workload')
        summary, bad = vmharness.parse_workload(h.read_console())
        say('guest: %d steps, %d errors, %d mismatches, %d bytes '
            'verified by the guest'
            % (summary['ops'], summary['errors'], summary['mismatches'],
               summary['bytes_verified']))
        wl = os.path.join(vmharness.TOP, 'tests', 'guest', 'workload')
        r = subprocess.run([wl, 'data', '--verify-only'] +
                           [a.replace('/mnt', h.shared) for a in data],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        hs, _ = vmharness.parse_workload(r.stdout.decode())
        say('host: the same files verified again on the host side: %d '
            'mismatches' % (hs['mismatches'] if hs else -1))
        ok = (not bad and summary['errors'] == 0 and
              summary['mismatches'] == 0 and r.returncode == 0)
        say('stall per kill: %s ms; %s' % (
            ', '.join('%.0f' % x for x in stalls),
            'nothing was lost' if ok else 'SOMETHING WAS LOST'))
        return ok


def main():
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR',
                          os.path.join(vmharness.TOP, 'build', 'results',
                                       'work'))
    say(qemu_version())
    recovery = virtiofsd_has_recovery()
    say('virtiofsd crash recovery: %s' % ('present' if recovery else
                                          'missing'))
    say()
    ok1 = act_one()
    say()
    ok2 = act_two()
    say()
    ok3 = act_three()
    say()
    ok4 = recovery and act_four()
    say()
    ok5 = recovery and act_five()
    say()
    ok = ok1 and ok2 and ok3 and ok4 and ok5
    say('demo %s' % ('complete' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (TimeoutError, RuntimeError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        print('\n'.join(str(e).splitlines()[1:]), file=sys.stderr)
        print('make demo: %s (logs above; work directories under '
              'build/results/work with VIRTIOFS_TEST_KEEP=1)' % first,
              file=sys.stderr)
        sys.exit(1)
