"""The fd holder of virtiofsd -o reconnect (tools/virtiofsd/fd_holder.c).

The process started as "virtiofsd ... -o reconnect -o state_dir=X" stays
as the holder: it keeps the listening socket and shares its fd table with
the worker it clones (CLONE_FILES; with the default sandbox the worker is
in new pid, mount and net namespaces) and restarts.  These tests check
what the holder promises, each against the real daemon:

  test_restart_under_guest     SIGKILL of the worker under a guest: the
                               guest's I/O carries on, the holder stays,
                               its fd count is flat over 20 restarts,
                               every fd the state records name is open in
                               the new worker, on the right file, and the
                               new worker is in the kept mount namespace
  test_conn_closed_at_death    the front-end sees EOF at the worker's
                               death, from the holder (also while no next
                               worker runs), and can connect again at once
  test_never_two_workers       at no time two workers; a new one only
                               after the old pid is gone
  test_backoff                 workers that die before serving a request
                               are restarted after 0, 10, 20, 40 ... ms
  test_refused_state           refused state: exit 1, one line, no loop
  test_stop_signals            SIGTERM/SIGINT/SIGHUP stop holder and worker
  test_live_upgrade            SIGUSR1 executes the binary installed at
                               argv[0]; the guest's open files, unlinked
                               open file, flock and POSIX lock survive; the
                               stall of 10 upgrades is printed

Guests only where a test needs one (three of them), one at a time.  Every
process a test starts is killed by pid when the test ends (the holder,
then its process group: the workers are in it, and die with the holder
through PR_SET_PDEATHSIG too).
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import sys
import threading
import time
import unittest

import vmharness
from vmharness import children, wait_until, pid_alive, host_can_lock

# As tests/functional/test_restart_idle.py: QEMU reconnects every 100 ms
RECONNECT = ',reconnect-ms=100'
# cache=none: every guest read reaches the daemon, so what the guest
# checks after a restart comes from the restarted worker
DAEMON_OPTS = ('cache=none', 'flock', 'posix_lock')
KIB = 1024

RESTORED = re.compile(
    r'^state: restored session from (\S+): (\d+) inodes, (\d+) files, '
    r'(\d+) dirs, (\d+) POSIX lock fds \((\d+) stale\) in (\d+) us$', re.M)
CLEAN = re.compile(r'^state: no saved session in (\S+), starting clean$',
                   re.M)
REFUSING = re.compile(r'^state: refusing .+$', re.M)
STATE_LINE = re.compile(r'^state: .*$', re.M)
RESTART_SERVED = re.compile(r'^holder: worker (\d+) ended \((signal|exit '
                            r'status) (\d+)\) after (\d+) ms: restarting$',
                            re.M)
RESTART_FAST = re.compile(r'^holder: worker (\d+) ended \([^)]*\) before serving a '
                          r'request \((\d+) in a row\): restarting in '
                          r'(\d+) ms$', re.M)
# Any line of the holder about a worker (its end, one it had to kill)
RESTART_ANY = re.compile(r'^holder: worker \d+ .*$', re.M)
ACCEPTING = re.compile(r'^virtio_session_mount: Waiting for vhost-user '
                       r'socket connection', re.M)
UPGRADE = re.compile(r'^holder: upgrade: executing (.+)$', re.M)

# The state directory's record files (lo_map.c, passthrough_ll.c): a
# 64-byte header (magic "VFSDMAP1", version, kind, record size, reserved,
# number of records, owner), then records of a 4-byte state ("USED" or
# 0) and 4 reserved bytes before the payload.  The payload starts with
# the inode (host ino for "inodes", FUSE ino for the others); where it
# keeps the fd:
MAP_MAGIC = b'VFSDMAP1'
REC_USED = 0x44455355
RECORD_FD = {
    'inodes': 36,   # dev, ino, mnt_id, nlookup, filetype, fd
    'files': 20,    # fuse ino, unique, flags, fd
    'dirs': 16,     # fuse ino, unique, fd
    'plocks': 16,   # fuse ino, owner, fd
}



class MntnsRef:
    """A reference to a process's mount namespace: while it is open the
    namespace lives on, so no new namespace can reuse its inode number
    and a comparison by inode is a comparison of namespaces."""

    def __init__(self, pid):
        self.fd = os.open('/proc/%d/ns/mnt' % pid, os.O_RDONLY)
        self.ino = os.fstat(self.fd).st_ino

    def same(self, pid):
        return os.stat('/proc/%d/ns/mnt' % pid).st_ino == self.ino

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def settled_fd_count(pid, quiet=0.5, timeout=10):
    """pid's fd count once it has not changed for quiet seconds."""
    last = [fd_count(pid), time.monotonic()]

    def stable():
        n = fd_count(pid)
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] >= quiet and n
    return wait_until(stable, 'a stable fd count of pid %d' % pid, timeout)


def read_records(state_dir, name):
    """The used records of a record file: a list of (index, payload)."""
    with open(os.path.join(state_dir, name), 'rb') as f:
        data = f.read()
    if data[:8] != MAP_MAGIC:
        raise AssertionError('%s/%s is not a map file' % (state_dir, name))
    rec_size = struct.unpack_from('<I', data, 16)[0]
    nelems = struct.unpack_from('<Q', data, 24)[0]
    res = []
    for i in range(nelems):
        off = 64 + i * rec_size
        if struct.unpack_from('<I', data, off)[0] == REC_USED:
            res.append((i, data[off + 8:off + rec_size]))
    return res



class WorkerWatch:
    """Samples the holder's children in a thread: the largest number
    seen at once, every worker pid in the order they appeared, and any
    worker that appeared while an older one still had a /proc entry
    (alive or zombie).  It may miss a worker that lived a few ms."""

    def __init__(self, holder_pid, interval=0.0002):
        self.pid = holder_pid
        self.interval = interval
        self.max_seen = 0
        self.most = []
        self.order = []
        self.overlaps = []
        self.samples = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        kids = children(self.pid)
        self.samples += 1
        if len(kids) > self.max_seen:
            self.max_seen = len(kids)
            self.most = kids
        for k in kids:
            if k not in self.order:
                older = [o for o in self.order
                         if os.path.exists('/proc/%d' % o)]
                if older:
                    self.overlaps.append((k, older))
                self.order.append(k)

    def _run(self):
        try:
            while not self._stop.is_set():
                self._sample()
                time.sleep(self.interval)
        except BaseException as e:
            self.error = repr(e)
            raise

    def __enter__(self):
        # The worker running now, before the caller can kill it
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        # A thread starved under load may not have seen the last worker
        self._sample()
        return False


class HolderTest(unittest.TestCase):

    # -- helpers ----------------------------------------------------------

    @contextlib.contextmanager
    def harness(self, name):
        """A Harness whose logs are printed if the test fails."""
        with vmharness.Harness(name) as h:
            try:
                yield h
            except BaseException:
                sys.stderr.write('\n--- logs of %s (%s)\n%s\n'
                                 % (self.id(), h.dir, h.log_tail(60)))
                raise

    def state_dir(self, h, name='state'):
        path = os.path.join(h.dir, name)
        os.mkdir(path)
        os.chmod(path, 0o700)
        return path

    def holder(self, h, options=DAEMON_OPTS, binary=None, timeout=10):
        """Start virtiofsd -o reconnect with a fresh state dir (as
        Harness.start_supervised_virtiofsd does, and with binary: another
        virtiofsd); returns (the holder's Proc, the state dir).  The
        holder is killed with the harness, its workers through its
        process group and their parent-death signal."""
        state = self.state_dir(h)
        argv = [binary or vmharness.VIRTIOFSD_BIN, '--socket-path=' + h.sock,
                '-o', 'source=' + h.shared, '-o', 'reconnect',
                '-o', 'state_dir=' + state]
        for o in options:
            argv += ['-o', o]
        p = vmharness.Proc('holder', argv, os.path.join(h.dir, 'holder.log'))
        h.procs.append(p)
        h.supervisor = p
        deadline = time.monotonic() + timeout
        while not os.path.exists(h.sock):
            if not p.alive() or time.monotonic() > deadline:
                self.fail('virtiofsd is not listening:\n' + self.log(p))
            time.sleep(0.02)
        return p, state

    def log(self, p, since=0):
        with open(p.log_path, 'rb') as f:
            f.seek(since)
            return f.read().decode('utf-8', 'replace')

    def log_size(self, p):
        return os.path.getsize(p.log_path)

    def wait_log(self, p, rx, since=0, count=1, timeout=30, interval=0.005):
        """The count-th match of rx in p's log after offset since."""
        def seen():
            found = list(rx.finditer(self.log(p, since)))
            if len(found) >= count:
                return found[count - 1]
            if not p.alive():
                raise AssertionError('holder exited (%s) while waiting for '
                                     '%r:\n%s' % (p.popen.returncode,
                                                  rx.pattern, self.log(p)))
            return None
        return wait_until(seen, '%r (#%d) in the holder log' % (rx.pattern,
                                                               count),
                          timeout, interval)

    def worker(self, p, not_pid=None, timeout=10):
        """The holder's only child, other than not_pid."""
        def one():
            if not p.alive():
                raise AssertionError('holder exited (%s):\n%s'
                                     % (p.popen.returncode, self.log(p)))
            kids = children(p.pid)
            if len(kids) > 1:
                raise AssertionError('two workers at once under holder %d: '
                                     '%s' % (p.pid, kids))
            return kids[0] if len(kids) == 1 and kids[0] != not_pid \
                else None
        return wait_until(one, 'a worker under holder %d (not %s)'
                          % (p.pid, not_pid), timeout, 0.001)

    def connect(self, h, timeout=10):
        def attempt():
            try:
                return vmharness.unix_connect(h.sock)
            except (FileNotFoundError, ConnectionRefusedError):
                return None
        return wait_until(attempt, 'a connection to ' + h.sock, timeout,
                          0.01)

    def run_ok(self, hold, commands, timeout=60):
        res = []
        for c in commands:
            line = hold.cmd(c, timeout)
            self.assertTrue(line.ok, '%r failed: %s' % (c, line))
            res.append(line)
        return res

    def wait_cmd_fast(self, h, hold, seq, timeout=60):
        """hold.wait(seq), but the console is polled every 2 ms, so that
        the time it returns is the time the guest finished (+2 ms)."""
        rx = re.compile(r'^WL hold %d \S+ \S+ \S+[^\n]*\n' % seq, re.M)
        wait_until(lambda: rx.search(h.read_console()),
                   'WL line %d' % seq, timeout, 0.002)
        return hold.wait(seq, 5)

    def check_records(self, state, worker):
        """Every fd the state records name is open in worker's fd table,
        on the file the record is of.  Returns the number of fds."""
        inodes = {}
        for i, pl in read_records(state, 'inodes'):
            dev, ino = struct.unpack_from('<QQ', pl, 0)
            fd = struct.unpack_from('<i', pl, RECORD_FD['inodes'])[0]
            inodes[i] = (dev, ino)
            try:
                st = os.stat('/proc/%d/fd/%d' % (worker, fd))
            except OSError as e:
                self.fail('inode record %d (ino %d) names fd %d, not open '
                          'in worker %d: %s' % (i, ino, fd, worker, e))
            self.assertEqual((st.st_dev, st.st_ino), (dev, ino),
                             'inode record %d: fd %d is another file'
                             % (i, fd))
        n = len(inodes)
        for name in ('files', 'dirs', 'plocks'):
            for i, pl in read_records(state, name):
                fuse_ino = struct.unpack_from('<Q', pl, 0)[0]
                fd = struct.unpack_from('<i', pl, RECORD_FD[name])[0]
                try:
                    st = os.stat('/proc/%d/fd/%d' % (worker, fd))
                except OSError as e:
                    self.fail('%s record %d names fd %d, not open in worker '
                              '%d: %s' % (name, i, fd, worker, e))
                if fuse_ino in inodes:
                    self.assertEqual(st.st_ino, inodes[fuse_ino][1],
                                     '%s record %d: fd %d is not the file '
                                     'of inode %d' % (name, i, fd, fuse_ino))
                n += 1
        return n

    def expect_exit(self, p, timeout=10):
        try:
            return p.wait(timeout)
        except TimeoutError:
            self.fail('holder still running after %d s; children %s:\n%s'
                      % (timeout, children(p.pid), self.log(p)))

    # -- 1 ----------------------------------------------------------------

    def test_restart_under_guest(self):
        """20 SIGKILLs of the worker under a guest holding an open file,
        an unlinked open file, a directory and a POSIX lock."""
        t0 = time.monotonic()
        with self.harness('holder-restart') as h:
            p, state = self.holder(h)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.wait_log(p, CLEAN)
            fa = os.path.join(h.shared, 'fa')
            fc = os.path.join(h.shared, 'fc')
            self.run_ok(hold, ['open fa a', 'write a 0 16k 41',
                               'open fb b', 'write b 0 16k 42', 'unlink fb',
                               'open fc c', 'lock c',
                               'opendir . d'])
            self.assertFalse(host_can_lock(fc), 'no host POSIX lock')
            holder_pid = p.pid
            # The mount namespace the first worker built: the holder keeps
            # it (an fd of its table) and every next worker joins it
            mntns = MntnsRef(self.worker(p))
            self.addCleanup(mntns.close)
            self.assertFalse(mntns.same(os.getpid()))
            fds = {}
            restore_us = []
            size = 16 * KIB
            with WorkerWatch(p.pid, 0.001) as watch:
                for k in range(1, 21):
                    old = self.worker(p)
                    if k == 1:
                        workers = [old]
                    since = self.log_size(p)
                    # A write in flight at the kill (written again by the
                    # restarted worker, or not yet sent)
                    seq = hold.send('write a %d 4k 41' % size)
                    os.kill(old, signal.SIGKILL)
                    m = self.wait_log(p, RESTORED, since)
                    new = self.worker(p, not_pid=old)
                    workers.append(new)
                    self.assertEqual(p.pid, holder_pid)
                    self.assertTrue(p.alive())
                    self.assertFalse(pid_alive(old))
                    lines = RESTART_ANY.findall(self.log(p, since))
                    self.assertEqual(
                        [(int(x.group(1)), x.group(2), int(x.group(3)))
                         for x in RESTART_SERVED.finditer(self.log(p,
                                                                   since))],
                        [(old, 'signal', 9)], lines)
                    self.assertEqual(len(lines), 1, lines)
                    inodes, files, dirs, plocks, stale, us = \
                        map(int, m.groups()[1:])
                    # a, the unlinked b, c; the directory; c's lock
                    self.assertEqual((files, dirs, plocks, stale),
                                     (3, 1, 1, 0), m.group(0))
                    restore_us.append(us)
                    line = hold.wait(seq, 60)
                    self.assertTrue(line.ok, line)
                    size += 4 * KIB
                    self.run_ok(hold, ['check a 0 %d 41' % size,
                                       'check b 0 16k 42'])
                    self.assertFalse(host_can_lock(fc),
                                     'POSIX lock lost in restart %d' % k)
                    nrec = self.check_records(state, new)
                    self.assertTrue(mntns.same(new), 'restart %d: the '
                                    'worker is in another mount namespace'
                                    % k)
                    self.assertEqual(STATE_LINE.findall(self.log(p, since)),
                                     [m.group(0)])
                    if k in (1, 20):
                        fds[k] = settled_fd_count(p.pid)
            self.assertEqual(fds[20], fds[1], 'holder fds after restart 1 '
                             'and 20: %s' % fds)
            self.assertEqual(watch.max_seen, 1, 'two workers at once: %s'
                             % watch.most)
            self.assertEqual(watch.overlaps, [])
            self.assertEqual(len(set(workers)), 21, workers)
            self.assertIsNone(watch.error)
            self.assertEqual(set(watch.order), set(workers),
                             'workers %s, sampled %s (%d samples)'
                             % (workers, watch.order, watch.samples))
            # The data, from the host side too
            with open(fa, 'rb') as f:
                self.assertEqual(f.read(),
                                 vmharness.hold_pattern(0, size, 41))
            self.run_ok(hold, ['unlock c'])
            self.assertTrue(host_can_lock(fc), 'unlock did not reach the '
                            'host after the restarts')
            self.assertEqual(REFUSING.findall(self.log(p)), [])
            mntns.close()
            restore_us.sort()
            print('functional       holder restarts: 20 SIGKILLs, holder '
                  'fds %s, %d record fds checked; restore p50 %d us, max %d '
                  'us; %d samples of the holder\'s children; test %.1f s'
                  % (fds, nrec, restore_us[9], restore_us[-1],
                     watch.samples, time.monotonic() - t0), flush=True)

    # -- 2 ----------------------------------------------------------------

    def test_conn_closed_at_death(self):
        """A client connected as QEMU sees EOF when the worker dies, from
        the holder: also while the holder waits out a backoff delay,
        before any next worker (which would close fds no record names)
        exists.  It connects again at once: the socket is the holder's."""
        with self.harness('holder-conn') as h:
            p, state = self.holder(h)
            sock_ino = os.stat(h.sock).st_ino
            eof_ms = []
            client = self.connect(h)
            for k in range(1, 8):
                # The worker reads its state once it accepted the
                # connection; it never serves a request, so its death
                # is followed by a delay of 0, 10, 20, 40 ... ms
                self.wait_log(p, CLEAN, count=k)
                old = self.worker(p)
                delay = 0 if k == 1 else 10 << (k - 2)
                client.settimeout(5)
                t_kill = time.monotonic()
                os.kill(old, signal.SIGKILL)
                try:
                    data = client.recv(1)
                except socket.timeout:
                    self.fail('no EOF on the connection 5 s after the '
                              'worker died')
                t_eof = time.monotonic()
                kids = children(p.pid)
                self.assertEqual(data, b'')
                eof_ms.append((t_eof - t_kill) * 1000)
                self.assertLess(t_eof - t_kill, 1.0, 'EOF only after %.0f ms'
                                % eof_ms[-1])
                if delay >= 80:
                    self.assertEqual(kids, [], 'EOF %.0f ms after the kill, '
                                     'not before the next worker (delay %d '
                                     'ms)' % (eof_ms[-1], delay))
                    self.assertLess(eof_ms[-1], delay / 2)
                client.close()
                # One attempt, no retry: the socket still listens, also
                # while no worker runs
                self.assertEqual(os.stat(h.sock).st_ino, sock_ino)
                t_conn = time.monotonic()
                client = vmharness.unix_connect(h.sock, timeout=1)
                self.assertLess(time.monotonic() - t_conn, 0.2)
                # ... and the next worker accepts that connection
                self.assertNotEqual(self.worker(p, not_pid=old), old)
            self.wait_log(p, CLEAN, count=8)
            client.close()
            fast = [int(m.group(3))
                    for m in RESTART_FAST.finditer(self.log(p))]
            self.assertEqual(fast, [0, 10, 20, 40, 80, 160, 320])
            print('functional       holder conn: EOF %s ms after SIGKILL'
                  % ' '.join('%.1f' % x for x in eof_ms), flush=True)

    # -- 3 ----------------------------------------------------------------

    def test_never_two_workers(self):
        with self.harness('holder-two') as h:
            p, state = self.holder(h)
            client = self.connect(h)
            self.wait_log(p, CLEAN)
            pids = [self.worker(p)]
            cleans = 1
            with WorkerWatch(p.pid) as watch:
                for k in range(8):
                    # Half of them killed once they accepted a connection
                    # and read their state, half waiting in accept()
                    os.kill(pids[-1], signal.SIGKILL)
                    pids.append(self.worker(p, not_pid=pids[-1]))
                    self.assertFalse(os.path.exists('/proc/%d' % pids[-2]),
                                     'worker %d appeared while %d was there'
                                     % (pids[-1], pids[-2]))
                    if k % 2:
                        client.close()
                        client = self.connect(h)
                        cleans += 1
                        self.wait_log(p, CLEAN, count=cleans)
                time.sleep(0.2)
            client.close()
            self.assertEqual(watch.max_seen, 1, 'two workers at once: %s'
                             % watch.most)
            self.assertEqual(watch.overlaps, [], 'a worker appeared while '
                             'the previous one still had a /proc entry')
            # The sampler may miss a worker killed within a few ms, never
            # see one that is not a worker
            self.assertLessEqual(set(watch.order), set(pids), watch.order)
            self.assertGreater(len(watch.order), len(pids) // 2,
                               (watch.order, pids))
            self.assertGreater(watch.samples, 1000)

    # -- 4 ----------------------------------------------------------------

    def test_backoff(self):
        """Workers SIGKILLed as soon as they appear (they never serve a
        request) are restarted after 0, 10, 20, 40 ... ms, and the holder
        does not spin."""
        with self.harness('holder-backoff') as h:
            p, state = self.holder(h)
            worker = self.worker(p)
            kills = []
            seen = []
            t_first = time.monotonic()
            while time.monotonic() - t_first < 2.0:
                kills.append(time.monotonic())
                os.kill(worker, signal.SIGKILL)
                worker = self.worker(p, not_pid=worker, timeout=15)
                seen.append(time.monotonic())
            log = self.log(p)
            fast = [(int(m.group(2)), int(m.group(3)))
                    for m in RESTART_FAST.finditer(log)]
            # 0+10+...+640 ms: 8 restarts in 1.27 s, the 9th at 2.55 s
            self.assertLessEqual(len(kills), 10, 'the holder restarted %d '
                                 'workers in 2 s; delays %s'
                                 % (len(kills), fast[:20]))
            self.assertGreaterEqual(len(kills), 7)
            self.assertEqual(len(fast), len(kills), log)
            self.assertEqual(RESTART_SERVED.findall(log), [])
            want = [(n, 0 if n == 1 else min(10 << (n - 2), 5000))
                    for n in range(1, len(kills) + 1)]
            self.assertEqual(fast, want)
            # Each worker came after its delay at the earliest
            gaps = [(s - k) * 1000 for k, s in zip(kills, seen)]
            for (n, delay), gap in zip(want, gaps):
                self.assertGreaterEqual(gap, delay, 'restart %d after %.1f '
                                        'ms, its delay is %d ms'
                                        % (n, gap, delay))
            print('functional       holder backoff: %d restarts in 2 s, '
                  'delays %s ms, measured %s ms'
                  % (len(kills), [d for _, d in want],
                     ' '.join('%.0f' % g for g in gaps)), flush=True)

    # -- 5 ----------------------------------------------------------------

    def assert_refused(self, p, since=0, killed=0):
        """The holder exits 1 after one "state: refusing" line, with
        killed restart lines (for our SIGKILLs) before it and none after.
        Returns the line."""
        rc = self.expect_exit(p, 15)
        log = self.log(p, since)
        refusals = REFUSING.findall(log)
        self.assertEqual(len(refusals), 1, log)
        self.assertEqual(STATE_LINE.findall(log), refusals, log)
        after = log[log.index(refusals[0]):]
        self.assertEqual(RESTART_ANY.findall(after), [], log)
        self.assertEqual(len(RESTART_ANY.findall(log)), killed, log)
        self.assertEqual(rc, 1, log)
        return refusals[0]

    def test_refused_state(self):
        lines = []
        # A state dir inside the shared directory: refused at start
        with self.harness('holder-inside') as h:
            state = os.path.join(h.shared, 'state')
            os.mkdir(state, 0o700)
            argv = [vmharness.VIRTIOFSD_BIN, '--socket-path=' + h.sock,
                    '-o', 'source=' + h.shared, '-o', 'reconnect',
                    '-o', 'state_dir=' + state]
            p = vmharness.Proc('holder', argv,
                               os.path.join(h.dir, 'holder.log'))
            h.procs.append(p)
            line = self.assert_refused(p)
            self.assertIn('the state directory is inside the shared '
                          'directory', line)
            lines.append(line)

        # A corrupt record file of a live session, found by the worker
        # that restarts after a SIGKILL
        with self.harness('holder-corrupt') as h:
            p, state = self.holder(h)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.wait_log(p, CLEAN)
            self.run_ok(hold, ['open f1 a', 'write a 0 16k 5',
                               'check a 0 16k 5'])
            worker = self.worker(p)
            os.kill(worker, signal.SIGSTOP)
            with open(os.path.join(state, 'inodes'), 'r+b') as f:
                magic = f.read(8)
                self.assertEqual(magic, MAP_MAGIC)
                f.seek(0)
                f.write(bytes(b ^ 0xff for b in magic))
            since = self.log_size(p)
            os.kill(worker, signal.SIGKILL)
            line = self.assert_refused(p, since, killed=1)
            self.assertIn('inodes', line)
            lines.append(line)
        print('functional       holder refusals: %s' % ' / '.join(
            '"%s"' % l for l in lines), flush=True)

    # -- 5b ---------------------------------------------------------------

    def test_state_in_use(self):
        """Never two workers on one state, across holders too: a second
        virtiofsd on the same state directory waits, asks for a later
        start (exit 75, back-off) and serves only once the first one's
        last process is gone.  A holder killed first leaves its worker to
        die asynchronously (parent-death signal); the lock on the state
        directory lives as long as that worker's fd table."""
        with self.harness('holder-in-use') as h:
            a, state = self.holder(h)
            client = self.connect(h)
            self.wait_log(a, CLEAN)
            worker_a = self.worker(a)

            sock_b = os.path.join(h.dir, 'b.sock')
            argv = [vmharness.VIRTIOFSD_BIN, '--socket-path=' + sock_b,
                    '-o', 'source=' + h.shared, '-o', 'reconnect',
                    '-o', 'state_dir=' + state]
            for o in DAEMON_OPTS:
                argv += ['-o', o]
            b = vmharness.Proc('holder-b', argv,
                               os.path.join(h.dir, 'holder-b.log'))
            h.procs.append(b)
            self.wait_log(b, re.compile(r'^state: \S+ is in use by another '
                                        r'virtiofsd$', re.M), timeout=10)
            self.wait_log(b, re.compile(r'^holder: worker \d+ could not '
                                        r'start \(exit status 75\)$', re.M))
            self.assertIsNone(ACCEPTING.search(self.log(b)),
                              'a second worker used the state:\n'
                              + self.log(b))

            # The first holder dies; its worker follows asynchronously
            a.signal(signal.SIGKILL)
            wait_until(lambda: not pid_alive(worker_a),
                       'the end of worker %d' % worker_a, 10)
            self.wait_log(b, ACCEPTING, timeout=20)
            client.close()
            in_use = len(re.findall(r'(?m)^state: \S+ is in use', self.log(b)))
            print('functional       state in use: %d failed start(s) of the '
                  'second virtiofsd, which started once the first was gone'
                  % in_use, flush=True)

    # -- 6 ----------------------------------------------------------------

    def test_stop_signals(self):
        stops = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            for connected in (True, False):
                with self.subTest(sig=sig.name, connected=connected), \
                        self.harness('holder-stop') as h:
                    p, state = self.holder(h)
                    client = None
                    if connected:
                        client = self.connect(h)
                        self.wait_log(p, CLEAN)
                    else:
                        # In accept(), its signal handlers in place: a
                        # signal before they are would find the worker
                        # past its handler and not yet in accept(), to
                        # be stopped only by the holder's SIGKILL 10 s
                        # later
                        self.wait_log(p, ACCEPTING)
                        time.sleep(0.05)
                    worker = self.worker(p)
                    t0 = time.monotonic()
                    os.kill(p.pid, sig)
                    rc = self.expect_exit(p, 5)
                    t = time.monotonic() - t0
                    wait_until(lambda: not os.path.exists('/proc/%d'
                                                          % worker),
                               'the end of worker %d' % worker, 2)
                    log = self.log(p)
                    if connected:
                        self.assertEqual(rc, 0, log)
                    else:
                        # A worker still in accept() takes the signal
                        # there and exits 1 ("vhost socket accept:
                        # Interrupted system call"), as 7.2 does
                        self.assertIn(rc, (0, 1), log)
                    self.assertEqual(RESTART_ANY.findall(log), [], log)
                    stops.append('%s%s %.0f ms rc %d' % (
                        sig.name, '' if connected else ' (idle)', t * 1000,
                        rc))
                    if client:
                        client.close()
        print('functional       holder stop: %s' % ', '.join(stops),
              flush=True)

    # -- 7 ----------------------------------------------------------------

    def test_live_upgrade(self):
        t0 = time.monotonic()
        with self.harness('holder-upgrade') as h:
            bindir = os.path.join(h.dir, 'bin')
            os.mkdir(bindir)
            path = os.path.join(bindir, 'virtiofsd')

            def install(k):
                """A new file at path: a copy with k+1 bytes appended."""
                tmp = path + '.new'
                shutil.copy2(vmharness.VIRTIOFSD_BIN, tmp)
                with open(tmp, 'ab') as f:
                    f.write(b'\0' * (k + 1))
                os.rename(tmp, path)
                return os.stat(path).st_ino

            install(0)
            p, state = self.holder(h, binary=path)
            holder_pid = p.pid
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.wait_log(p, CLEAN)
            fa = os.path.join(h.shared, 'fa')
            fc = os.path.join(h.shared, 'fc')
            self.run_ok(hold, ['open fa a', 'write a 0 16k 51', 'flock a',
                               'open fb b', 'write b 0 16k 52', 'unlink fb',
                               'open fc c', 'write c 0 4k 53', 'lock c'])
            self.assertFalse(host_can_lock(fa, flock=True), 'no host flock')
            self.assertFalse(host_can_lock(fc), 'no host POSIX lock')
            size = 16 * KIB
            mntns = MntnsRef(self.worker(p))
            self.addCleanup(mntns.close)
            to_restored, to_op = [], []
            watch = WorkerWatch(p.pid, 0.001).__enter__()
            self.addCleanup(watch.__exit__)
            for k in range(1, 11):
                ino = install(k)
                old = self.worker(p)
                since = self.log_size(p)
                t_sig = time.monotonic()
                os.kill(p.pid, signal.SIGUSR1)
                # The next guest operation waits for the new worker
                seq = hold.send('check a 0 %d 51' % size)
                m = self.wait_log(p, RESTORED, since, interval=0.002)
                t_restored = time.monotonic()
                line = self.wait_cmd_fast(h, hold, seq)
                t_op = time.monotonic()
                self.assertTrue(line.ok, line)
                to_restored.append((t_restored - t_sig) * 1000)
                to_op.append((t_op - t_sig) * 1000)

                log = self.log(p, since)
                self.assertEqual(UPGRADE.findall(log), [path], log)
                self.assertEqual(RESTART_ANY.findall(log), [], log)
                self.assertEqual(p.pid, holder_pid)
                self.assertTrue(p.alive())
                exe = os.readlink('/proc/%d/exe' % p.pid)
                self.assertEqual(exe, path, 'upgrade %d: exe %s' % (k, exe))
                self.assertEqual(os.stat('/proc/%d/exe' % p.pid).st_ino, ino)
                new = self.worker(p, not_pid=old)
                self.assertFalse(os.path.exists('/proc/%d' % old),
                                 'worker %d of the old binary is still there'
                                 % old)
                self.assertEqual(os.stat('/proc/%d/exe' % new).st_ino, ino)
                # The new binary got the whole table: the kept mount
                # namespace too, and no state line but the restore
                self.assertTrue(mntns.same(new), 'upgrade %d: the worker '
                                'is in another mount namespace:\n%s'
                                % (k, log))
                self.assertEqual(STATE_LINE.findall(log), [m.group(0)], log)
                _, _, files, dirs, plocks, stale, _ = m.groups()
                self.assertEqual((files, plocks, stale), ('3', '1', '0'),
                                 m.group(0))
                self.assertFalse(host_can_lock(fa, flock=True),
                                 'flock lost in upgrade %d' % k)
                self.assertFalse(host_can_lock(fc),
                                 'POSIX lock lost in upgrade %d' % k)
                self.run_ok(hold, ['write a %d 4k 51' % size,
                                   'check b 0 16k 52', 'check c 0 4k 53'])
                size += 4 * KIB
                self.check_records(state, new)
            watch.__exit__()
            self.assertEqual(watch.max_seen, 1, 'two workers at once: %s'
                             % watch.most)
            self.assertEqual(watch.overlaps, [])

            # The upgraded holder still restarts a killed worker
            old = self.worker(p)
            since = self.log_size(p)
            os.kill(old, signal.SIGKILL)
            self.wait_log(p, RESTORED, since)
            self.assertEqual(len(RESTART_SERVED.findall(self.log(p, since))),
                             1)
            self.run_ok(hold, ['check a 0 %d 51' % size, 'check b 0 16k 52',
                               'unlock c'])
            self.assertTrue(host_can_lock(fc), 'unlock lost')
            with open(fa, 'rb') as f:
                self.assertEqual(f.read(),
                                 vmharness.hold_pattern(0, size, 51))
            self.assertEqual(REFUSING.findall(self.log(p)), [])
            mntns.close()
            to_restored.sort()
            to_op.sort()

            def pct(xs, q):
                return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]
            print('functional       holder upgrade stall (10 upgrades): '
                  'SIGUSR1 -> restored line p50 %.0f ms, p99 %.0f ms; '
                  'SIGUSR1 -> next guest op done p50 %.0f ms, p99 %.0f ms '
                  '(all: %s); test %.1f s'
                  % (statistics.median(to_restored), pct(to_restored, 0.99),
                     statistics.median(to_op), pct(to_op, 0.99),
                     ' '.join('%.0f' % x for x in to_op),
                     time.monotonic() - t0), flush=True)


if __name__ == '__main__':
    unittest.main()
