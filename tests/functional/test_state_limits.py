"""Crash recovery when a resource runs out (issue 16).

virtiofsd -o reconnect writes its record files through MAP_SHARED
mappings; a page the file system cannot back raises SIGBUS instead of
an error.  These tests create each limit for real and check that one
SIGKILL never turns into a dead share:

- a full state directory (a small tmpfs, filled up on the host while the
  guest works): the requests that need a new record get ENOSPC and make
  nothing, everything recorded keeps working, a restart restores it all
  without new space, and the share creates again once space is back;
- a restart that would need space it cannot get (a state file with holes,
  on a full tmpfs): one line naming the state directory and what is
  missing, the supervisor backs off, and the next start after space came
  back restores the session;
- RLIMIT_NOFILE reached: EMFILE for the requests that need an fd, a
  restart restores everything recorded;
- a state directory made read-only between two daemons: one line, back
  off, the next start after it is writable again restores the session.

Every test checks that no daemon died of SIGBUS (signal 7) and that the
supervisor did not loop.  The tmpfs is unmounted (lazily: a daemon that
is killed later may still hold files) even when a test fails; every
process is killed by pid by the harness.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import vmharness
from vmharness import process_tree, wait_until

RECONNECT = ',reconnect-ms=100'
RESTORED = re.compile(r'^state: restored session from (\S+): (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs \((\d+) fds from the store, '
                      r'(\d+) reopened by handle, (\d+) stale\)', re.M)
REFUSING = re.compile(r'^state: refusing (\S+): (.+)$', re.M)
EXITED = re.compile(r' pid (\d+) exited \(([^)]*)\)')
# Every daemon start prints this once
STARTED = 'virtio_session_mount: Waiting for vhost-user socket connection'
# How a daemon killed by SIGBUS exits: by the signal, or (the namespace
# sandbox's parent, for its child) with status 128 + the signal
SIGBUS = ('signal %d' % signal.SIGBUS, 'status %d' % (128 + signal.SIGBUS))
KIB = 1024

_libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                            ctypes.c_int64]
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def run(*argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    if r.returncode:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(argv), r.returncode,
                                                r.stdout.decode()))


@contextlib.contextmanager
def tmpfs(size):
    """A tmpfs of size (mount(8) syntax), mode 0700, as a state directory;
    unmounted at the end even on failure."""
    base = os.environ.get('VIRTIOFS_TEST_WORKDIR')
    if base:
        os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix='state-limits.', dir=base)
    try:
        run('mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size,
            'virtiofsd-state', path)
        try:
            yield path
        finally:
            # Lazy: the daemons are killed by the harness after this
            subprocess.run(['umount', '-l', path], timeout=30)
    finally:
        try:
            os.rmdir(path)
        except OSError as e:
            sys.stderr.write('cannot remove %s: %s\n' % (path, e))


def remount(path, opts):
    run('mount', '-o', 'remount,' + opts, path)


def fill(state, name='filler'):
    """Fill state's file system from the host until ENOSPC; returns the
    filler's path."""
    path = os.path.join(state, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chunk = b'\xa5' * (64 * KIB)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[:len(chunk) // 2]
    finally:
        os.close(fd)
    return path


def punch_hole(path, offset, length):
    fd = os.open(path, os.O_RDWR)
    try:
        if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           offset, length) < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)


def collapse(items):
    """'signal 9, status 135 x 80' for a list of strings."""
    out = []
    for i in items:
        if out and out[-1][0] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return ', '.join(i if n == 1 else '%s x %d' % (i, n) for i, n in out)


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


class StateLimitsTest(unittest.TestCase):

    @contextlib.contextmanager
    def setup(self, name, size='640k', options=('cache=auto',), wrapper=()):
        """A tmpfs state directory, a supervised daemon on it and a guest
        in hold mode.  Yields (harness, state dir, hold)."""
        t0 = time.monotonic()
        with contextlib.ExitStack() as stack:
            state = stack.enter_context(tmpfs(size))
            h = stack.enter_context(vmharness.Harness(name))
            try:
                h.start_supervised_virtiofsd(state, options=options,
                                             wrapper=wrapper)
                hold = h.start_qemu_hold(chardev_opts=RECONNECT)
                yield h, state, hold
            except BaseException:
                sys.stderr.write('\n--- logs of %s (%s)\n%s\n'
                                 % (self.id(), h.dir, h.log_tail(60)))
                raise
        print('functional       %s: test %.1f s'
              % (name, time.monotonic() - t0), flush=True)

    def hung(self, h, what):
        log = h.supervisor.output()
        self.fail('the guest hung %s; %d daemon starts, exits: %s'
                  % (what, log.count(STARTED),
                     collapse([how for _, how in EXITED.findall(log)])))

    def run_ok(self, h, hold, commands, timeout=30):
        for c in commands:
            try:
                line = hold.cmd(c, timeout)
            except TimeoutError:
                self.hung(h, 'at %r' % c)
            self.assertTrue(line.ok, '%r: %s\n%s' % (c, line, h.log_tail()))

    def pipelined(self, h, hold, commands, first_timeout=30, timeout=10):
        """Send every command at once, then collect the WL lines.  A guest
        that stops getting answers fails on what the daemons did."""
        seqs = [hold.send(c) for c in commands]
        lines = []
        try:
            for s in seqs:
                lines.append(hold.wait(s, timeout if lines else
                                       first_timeout))
        except TimeoutError:
            self.hung(h, 'after %d of %d requests' % (len(lines), len(seqs)))
        return lines

    def exits(self, h):
        return EXITED.findall(h.supervisor.output())

    def assert_no_sigbus_no_loop(self, h, max_restarts):
        """No daemon died of SIGBUS; at most max_restarts restarts."""
        log = h.supervisor.output()
        exits = EXITED.findall(log)
        self.assertEqual([how for _, how in exits if how in SIGBUS], [],
                         'a daemon died of SIGBUS:\n' + log[-3000:])
        self.assertLessEqual(len(exits), max_restarts,
                             'the supervisor loops:\n' + log[-3000:])
        self.assertLessEqual(log.count(STARTED), 1 + max_restarts,
                             'the daemon restarts in a loop:\n' + log[-3000:])

    def kill_daemon(self, h):
        """SIGKILL the supervised daemon and its sandbox child; returns the
        daemon's pid and the log offset before the kill."""
        pid = h.supervised_child_pid()
        since = len(h.supervisor.output())
        tree = process_tree(pid)
        for p in tree:
            os.kill(p, signal.SIGSTOP)
        for p in reversed(tree):
            os.kill(p, signal.SIGKILL)
        return pid, since, tree

    def wait_restored(self, h, since, timeout=30):
        def restored():
            log = h.supervisor.output()[since:]
            if not h.supervisor.alive():
                raise AssertionError('supervisor exited:\n' + log)
            return RESTORED.search(log)
        return wait_until(restored, 'the restored line', timeout, 0.01)

    def test_full_state_dir(self):
        """The state tmpfs fills up under guest load: ENOSPC for the
        requests that need a new record, no SIGBUS, a restart restores
        everything, creates work again once space is back."""
        with self.setup('state-full') as (h, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir pre'])
            fill(state)
            # Far more new names than the records the daemon still has
            # room for (at most 256 from its last grow)
            lines = self.pipelined(h, hold, ['mkdir d%03d' % i
                                          for i in range(400)])
            made = [l.path.rsplit('/', 1)[1] for l in lines if l.ok]
            refused = [l.path.rsplit('/', 1)[1] for l in lines
                       if l.result == 'err=ENOSPC']
            self.assertEqual([l for l in lines if not l.ok and
                              l.result != 'err=ENOSPC'], [])
            self.assertTrue(refused, 'no ENOSPC for 400 new names')
            # Refused before the mkdir ran: nothing the guest was told
            # failed is there
            self.assertEqual([n for n in refused
                              if os.path.exists(os.path.join(h.shared, n))],
                             [])
            # Everything recorded keeps working on the full state dir
            self.run_ok(h, hold, ['check a 0 64k 5', 'write a 64k 4k 6',
                                  'stat pre'] +
                        ['stat %s' % n for n in made[-3:]])

            pid, since, _ = self.kill_daemon(h)
            m = self.wait_restored(h, since)
            self.assertGreaterEqual(int(m.group(2)), len(made) + 2,
                                    m.group(0))
            self.run_ok(h, hold, ['check a 0 64k 5', 'check a 64k 4k 6',
                                  'stat pre'] +
                        ['stat %s' % n for n in made[::50] + made[-1:]])
            for n in made + ['pre']:
                self.assertTrue(os.path.isdir(os.path.join(h.shared, n)), n)
            line = hold.cmd('mkdir still-full')
            self.assertEqual(line.result, 'err=ENOSPC', line)

            # Space back: the share creates again
            remount(state, 'size=4m')
            self.run_ok(h, hold, ['mkdir after', 'open after/x b',
                                  'write b 0 4k 9', 'check b 0 4k 9'])
            self.assertTrue(os.path.isfile(os.path.join(h.shared, 'after',
                                                        'x')))
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, 1)
            print('functional       state-full: %d mkdirs ok, %d ENOSPC; '
                  '"%s"' % (len(made), len(refused), m.group(0)), flush=True)

    def test_restart_without_space(self):
        """A restart that would need new space on a full state dir stops
        with one line; the supervisor backs off; space back, the next
        start restores the session."""
        with self.setup('state-nospace') as (h, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir d1', 'open d1/f b',
                                  'write b 0 4k 7'])
            sup = h.supervisor.pid
            # Between two daemons: the supervisor waits until we are done
            os.kill(sup, signal.SIGSTOP)
            try:
                pid, since, tree = self.kill_daemon(h)
                wait_until(lambda: not any(map(alive, tree[1:])),
                           'the sandbox child gone', 10)
                # Holes where the next daemon writes (the intent slots,
                # all idle), as a state file copied sparse or written by
                # a daemon that did not reserve its blocks; then no space
                intents = os.path.join(state, 'intents')
                size = os.path.getsize(intents)
                punch_hole(intents, 4096, size - 4096)
                fill(state)
            finally:
                os.kill(sup, signal.SIGCONT)

            def refused():
                if not h.supervisor.alive():
                    raise AssertionError('supervisor exited')
                return REFUSING.search(h.supervisor.output()[since:])
            m = wait_until(refused, 'a refusal', 30, 0.01)
            remount(state, 'size=4m')
            self.assertEqual(m.group(1), state, m.group(0))
            self.assertIn('state file intents', m.group(2))
            self.assertIn('No space left on device', m.group(2))
            r = self.wait_restored(h, since)
            log = h.supervisor.output()[since:]
            self.assertRegex(log, r'exited \(status 1\); restart \d+ in '
                             r'\d+ ms \(failed start 1 in a row\)')
            self.run_ok(h, hold, ['check a 0 64k 5', 'check b 0 4k 7',
                                  'write b 4k 4k 8', 'mkdir d2',
                                  'stat d1'])
            self.assertTrue(os.path.isdir(os.path.join(h.shared, 'd2')))
            time.sleep(0.5)
            # The kill, then one refusal or a few (backing off)
            self.assert_no_sigbus_no_loop(h, 4)
            refusals = REFUSING.findall(h.supervisor.output())
            print('functional       state-nospace: %d refusal(s): "%s"; '
                  'then "%s"' % (len(refusals), m.group(0), r.group(0)),
                  flush=True)

            # Read-only: the kernel refuses while a daemon holds its
            # state files writable (mount point is busy) ...
            with self.assertRaises(RuntimeError):
                remount(state, 'ro')
            # ... so between two daemons: one line, back off, and the
            # next start once it is writable restores the session
            since = len(h.supervisor.output())
            os.kill(sup, signal.SIGSTOP)
            try:
                _, _, tree = self.kill_daemon(h)
                wait_until(lambda: not any(map(alive, tree)),
                           'the daemon gone', 10)
                remount(state, 'ro')
            finally:
                os.kill(sup, signal.SIGCONT)
            m = wait_until(refused, 'a refusal (read-only)', 30, 0.01)
            remount(state, 'rw')
            self.assertEqual(m.group(1), state, m.group(0))
            self.assertIn('Read-only file system', m.group(2))
            r = self.wait_restored(h, since)
            self.run_ok(h, hold, ['check a 0 64k 5', 'check b 0 4k 7',
                                  'check b 4k 4k 8', 'mkdir d3'])
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, 8)
            print('functional       state-readonly: "%s"; then "%s"'
                  % (m.group(0), r.group(0)), flush=True)

    def test_fd_limit(self):
        """RLIMIT_NOFILE reached: EMFILE for the requests that need a new
        fd, nothing made for them; a restart restores everything recorded
        and serves (it needs fds of its own before its first request)."""
        limit = 128
        # prlimit for the daemon; --rlimit-nofile, or root's daemon would
        # raise its limit again
        wrapper = ('prlimit', '--nofile=%d:%d' % (limit, limit), 'sh', '-c',
                   'exec "$0" "$@" --rlimit-nofile=%d' % limit)
        with self.setup('state-nofile', size='4m',
                        wrapper=wrapper) as (h, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir pre'])
            lines = self.pipelined(h, hold, ['mkdir d%03d' % i
                                          for i in range(limit)])
            made = [l.path.rsplit('/', 1)[1] for l in lines if l.ok]
            refused = [l.path.rsplit('/', 1)[1] for l in lines
                       if l.result == 'err=EMFILE']
            self.assertEqual([l for l in lines if not l.ok and
                              l.result != 'err=EMFILE'], [])
            self.assertTrue(refused, 'no EMFILE for %d new names' % limit)
            self.run_ok(h, hold, ['check a 0 64k 5', 'stat pre'])

            pid, since, _ = self.kill_daemon(h)
            m = self.wait_restored(h, since)
            self.assertGreaterEqual(int(m.group(2)), len(made) + 2,
                                    m.group(0))
            self.run_ok(h, hold, ['check a 0 64k 5', 'write a 64k 4k 6',
                                  'check a 64k 4k 6', 'stat pre'] +
                        ['stat %s' % n for n in made[::10] + made[-1:]])
            for n in made + ['pre']:
                self.assertTrue(os.path.isdir(os.path.join(h.shared, n)), n)
            # Refused before the mkdir ran: nothing the guest was told
            # failed is there
            self.assertEqual([n for n in refused
                              if os.path.exists(os.path.join(h.shared, n))],
                             [])
            # The restarted daemon holds about as many fds: new names
            # still get EMFILE once the ceiling is reached, and make
            # nothing
            lines = self.pipelined(h, hold, ['mkdir e%03d' % i
                                             for i in range(16)])
            self.assertEqual([l for l in lines if not l.ok and
                              l.result != 'err=EMFILE'], [])
            self.assertIn('err=EMFILE', [l.result for l in lines])
            for l in lines:
                self.assertEqual(os.path.exists(h.shared + l.path[4:]), l.ok,
                                 l)
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, 1)
            print('functional       state-nofile: %d mkdirs ok, %d EMFILE; '
                  '"%s"' % (len(made), len(refused), m.group(0)), flush=True)

if __name__ == '__main__':
    unittest.main()
