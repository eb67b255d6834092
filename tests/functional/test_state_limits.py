"""Crash recovery when a resource runs out (issue 16), with the fd holder.

virtiofsd -o reconnect -o state_dir=DIR is the holder (tools/virtiofsd/
fd_holder.c): the process started keeps the listening socket and the fd
table it shares with the worker it clones and restarts.  The worker
writes its record files through MAP_SHARED mappings; a page the file
system cannot back raises SIGBUS instead of an error.  These tests
create each limit for real and check that one SIGKILL of the worker
never turns into a dead share:

- a full state directory (a small tmpfs, filled up on the host while the
  guest works): the requests that need a new record get ENOSPC and make
  nothing, everything recorded keeps working, a restart restores it all
  without new space, and the share creates again once space is back;
- a restart that would need space it cannot get (a state file with holes,
  on a full tmpfs): one line naming the state directory and what is
  missing, the worker exits 75 (EX_TEMPFAIL) and the holder starts the
  next one backing off (0, 10, 20 ... ms), and the first start after
  space came back restores the session;
- no saved session and no space for the record files (no guest: a
  client connecting as QEMU does): one line, exit 75, and the first start
  after space came back starts clean;
- a state directory read-only (a read-only bind mount over it: the tmpfs
  itself cannot be made read-only while the holder's table holds the
  record files open for writing) or missing (renamed away) between two
  workers: one line per failed start, exit 75, backing off, and the first
  start once it is back restores the session;
- RLIMIT_NOFILE reached: EMFILE for the requests that need an fd, a
  restart restores everything recorded;
- a FUSE_INIT whose session cannot be saved (full) where an earlier
  session's file is: one line, the old file removed, and a restart
  starts clean (one line) instead of carrying the old session on; the
  guest gets EIO, not a hang.

Every test checks that no worker died of SIGBUS (a holder line with
"signal 7" or "exit status 135"), that every worker's end is accounted
for (our SIGKILL, or a start that lacked a resource: exit 75 after
exactly one line; a worker that dies of a signal before serving a
request has no signal in the holder's line), that the holder did not
loop and is still running.  "Between two workers" is: SIGSTOP the
holder, SIGKILL the worker, wait until it is a zombie (the stopped
holder cannot reap it, so it starts no other), change the state
directory, SIGCONT.  The tmpfs is unmounted (lazily, with what is
mounted on it: the holder may still hold files) even when a test fails;
every process is killed by pid by the harness.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import vmharness
from vmharness import process_tree, wait_until, proc_state

RECONNECT = ',reconnect-ms=100'
CLEAN = re.compile(r'^state: no saved session in (\S+), starting clean$',
                   re.M)
RESTORED = re.compile(r'^state: restored session from (\S+): (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds '
                      r'\((\d+) stale\) in (\d+) us$', re.M)
# The one line of a worker that could not save the session at FUSE_INIT
SAVE_FAILED = re.compile(r'^state: cannot save the session in (\S+): (.+): '
                         r'a restart would start clean \(the guest would '
                         r'have to mount the share again\)$', re.M)
# The one line of a worker that could not use its state directory: a
# refusal, or (lo_state_open()) a directory it cannot open
FAILED_START = re.compile(r'^state: (?:refusing|cannot open) (\S+): (.+)$',
                          re.M)
# The holder's lines about a worker's end (fd_holder.c)
ENDED = re.compile(r'^holder: worker (\d+) ended \((signal|exit status) '
                   r'(\d+)\) after (\d+) ms: restarting$', re.M)
FAST = re.compile(r'^holder: worker (\d+) ended \([^)]*\) before serving a request '
                  r'\((\d+) in a row\): restarting in (\d+) ms$', re.M)
NOSTART = re.compile(r'^holder: worker (\d+) could not start \(exit status '
                     r'(\d+)\)$', re.M)
WORKER_OF = re.compile(r'^holder: worker (\d+) ')
# Every worker that gets as far as the vhost-user connection prints this
STARTED = 'virtio_session_mount: Waiting for vhost-user socket connection'
# A worker that could not start for want of a resource (EX_TEMPFAIL)
EXIT_RETRY = 75
# How a worker killed by SIGBUS ends: by the signal, or with status
# 128 + the signal (as crash points report it)
SIGBUS_ENDS = (('signal', signal.SIGBUS),
               ('exit status', 128 + signal.SIGBUS))
BACKOFF_MAX_MS = 5000
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
    """A tmpfs of size (mount(8) syntax), mode 0700, for a state
    directory; unmounted at the end, with what is mounted on it, even on
    failure."""
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
            # Lazy: the holder is killed by the harness after this; also
            # detaches a bind mount on the state directory
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
    """'signal 9, exit status 75 x 80' for a list of strings."""
    out = []
    for i in items:
        if out and out[-1][0] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return ', '.join(i if n == 1 else '%s x %d' % (i, n) for i, n in out)



def alive(pid):
    """pid exists and is not a zombie."""
    return proc_state(pid) not in (None, 'Z')


def backoff(n):
    """The holder's delay after the n-th worker in a row that ended before
    serving a request."""
    return 0 if n == 1 else min(10 << (n - 2), BACKOFF_MAX_MS)


class Workers:
    """What the holder's log says about its workers: for each worker that
    ended, in order, how (('signal', 9), ('exit status', 75), ...; None
    where only "ended before serving a request" says it), its holder
    lines, and the lines the workers printed between the previous
    worker's end and its own (the last entry, pid None, is the worker
    running now)."""

    def __init__(self, log):
        self.order = []
        self.how = {}
        self.lines = {}
        self.before = {}
        self.unknown = []
        cur = []
        for line in log.splitlines():
            m = WORKER_OF.match(line)
            if not m:
                if line.startswith('holder: '):
                    self.unknown.append(line)
                else:
                    cur.append(line)
                continue
            pid = int(m.group(1))
            if pid not in self.lines:
                self.order.append(pid)
                self.lines[pid] = []
                self.how[pid] = None
                self.before[pid] = cur
                cur = []
            self.lines[pid].append(line)
            e, n, f = (ENDED.match(line), NOSTART.match(line),
                       FAST.match(line))
            if e:
                self.how[pid] = (e.group(2), int(e.group(3)))
            elif n:
                self.how[pid] = ('exit status', int(n.group(2)))
            elif not f:
                self.unknown.append(line)
        self.before[None] = cur

    def failed_start_lines(self, pid):
        return [l for l in self.before[pid] if FAILED_START.match(l)]


class StateLimitsTest(unittest.TestCase):

    @contextlib.contextmanager
    def on_tmpfs(self, name, size='640k'):
        """A tmpfs and a state directory in it, and a Harness whose logs
        are printed if the test fails.  Yields (harness, tmpfs, state)."""
        # The workers this test SIGKILLed: every other end of a worker
        # must be a start that lacked a resource
        self.killed = set()
        with tmpfs(size) as mnt, vmharness.Harness(name) as h:
            state = os.path.join(mnt, 'state')
            os.mkdir(state, 0o700)
            try:
                yield h, mnt, state
            except BaseException:
                sys.stderr.write('\n--- logs of %s (%s)\n%s\n'
                                 % (self.id(), h.dir, h.log_tail(60)))
                raise

    @contextlib.contextmanager
    def setup(self, name, size='640k', options=('cache=auto',), wrapper=()):
        """on_tmpfs(), the holder on its state directory and a guest in
        hold mode.  Yields (harness, tmpfs, state dir, hold)."""
        t0 = time.monotonic()
        with self.on_tmpfs(name, size) as (h, mnt, state):
            h.start_supervised_virtiofsd(state, options=options,
                                         wrapper=wrapper)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            yield h, mnt, state, hold
        print('functional       %s: test %.1f s'
              % (name, time.monotonic() - t0), flush=True)

    def hung(self, h, what):
        log = h.supervisor.output()
        w = Workers(log)
        self.fail('the guest hung %s; holder %s, %d worker starts, worker '
                  'ends: %s' % (what, 'running' if h.supervisor.alive()
                                else 'exited (%s)'
                                % h.supervisor.popen.returncode,
                                log.count(STARTED),
                                collapse(['%s %s' % w.how[p] if w.how[p]
                                          else 'before serving'
                                          for p in w.order])))

    def run_ok(self, h, hold, commands, timeout=30):
        for c in commands:
            try:
                line = hold.cmd(c, timeout)
            except TimeoutError:
                self.hung(h, 'at %r' % c)
            self.assertTrue(line.ok, '%r: %s\n%s' % (c, line, h.log_tail()))

    def pipelined(self, h, hold, commands, first_timeout=30, timeout=10):
        """Send every command at once, then collect the WL lines.  A guest
        that stops getting answers fails on what the workers did."""
        seqs = [hold.send(c) for c in commands]
        lines = []
        try:
            for s in seqs:
                lines.append(hold.wait(s, timeout if lines else
                                       first_timeout))
        except TimeoutError:
            self.hung(h, 'after %d of %d requests' % (len(lines), len(seqs)))
        return lines

    def assert_no_sigbus_no_loop(self, h, max_restarts):
        """No worker died of SIGBUS; every worker's end is one of our
        SIGKILLs or a start that lacked a resource (exit 75 after exactly
        one line); at most max_restarts restarts; the holder runs."""
        log = h.supervisor.output()
        w = Workers(log)
        self.assertEqual([(p, w.how[p]) for p in w.order
                          if w.how[p] in SIGBUS_ENDS], [],
                         'a worker died of SIGBUS:\n' + log[-3000:])
        self.assertEqual(w.unknown, [], 'holder lines not expected here:\n'
                         + log[-3000:])
        for p in w.order:
            if p in self.killed:
                self.assertEqual(w.how[p], ('signal', signal.SIGKILL),
                                 'worker %d: %s\n%s' % (p, w.lines[p],
                                                        log[-3000:]))
                self.assertEqual(w.failed_start_lines(p), [], log[-3000:])
            else:
                # Not ours: it must say why, with one line.  A worker
                # that died of a signal before serving a request (SIGBUS
                # in its restore) has only "ended before serving"
                self.assertEqual(w.how[p], ('exit status', EXIT_RETRY),
                                 'worker %d ended, not by our SIGKILL nor '
                                 'for want of a resource: %s\n%s'
                                 % (p, w.lines[p], log[-3000:]))
                self.assertEqual(len(w.failed_start_lines(p)), 1,
                                 'worker %d: %s\n%s'
                                 % (p, w.before[p], log[-3000:]))
        self.assertEqual(w.failed_start_lines(None), [], log[-3000:])
        self.assertLessEqual(len(w.order), max_restarts,
                             'the holder loops:\n' + log[-3000:])
        self.assertLessEqual(log.count(STARTED), 1 + max_restarts,
                             'the worker restarts in a loop:\n'
                             + log[-3000:])
        self.assertTrue(h.supervisor.alive(), 'the holder exited (%s):\n%s'
                        % (h.supervisor.popen.returncode, log[-3000:]))

    def assert_failed_starts(self, h, since, killed, reason):
        """After our SIGKILL of worker killed (log offset since): it ended
        by signal 9, each next worker but the last could not start (one
        line with reason, exit 75) and was restarted after 0, 10, 20 ...
        ms; the last restored.  Returns the number of failed starts."""
        log = h.supervisor.output()[since:]
        w = Workers(log)
        self.assertEqual(w.order[:1], [killed], log)
        self.assertEqual(w.how[killed], ('signal', signal.SIGKILL), log)
        self.assertRegex(w.lines[killed][0], r'after \d+ ms: restarting$')
        failed = w.order[1:]
        self.assertTrue(failed, 'no start failed:\n' + log)
        for n, p in enumerate(failed, 1):
            self.assertEqual(w.how[p], ('exit status', EXIT_RETRY), log)
            self.assertEqual(w.lines[p], [
                'holder: worker %d could not start (exit status %d)'
                % (p, EXIT_RETRY),
                'holder: worker %d ended (exit status %d) before serving a '
                'request (%d in a row): restarting in %d ms'
                % (p, EXIT_RETRY, n, backoff(n))], log)
            lines = w.failed_start_lines(p)
            self.assertEqual(len(lines), 1, log)
            self.assertIn(reason, lines[0])
        self.assertEqual(w.unknown, [], log)
        # The worker running now restored, and said nothing else
        self.assertEqual(len(RESTORED.findall('\n'.join(w.before[None]))),
                         1, log)
        self.assertEqual(w.failed_start_lines(None), [], log)
        return len(failed)

    def kill_worker(self, h):
        """SIGKILL the holder's worker (and anything in its pid
        namespace); returns the worker's pid, the log offset before the
        kill and the processes killed."""
        pid = h.supervised_child_pid()
        since = len(h.supervisor.output())
        tree = process_tree(pid)
        for p in tree:
            os.kill(p, signal.SIGSTOP)
        for p in reversed(tree):
            os.kill(p, signal.SIGKILL)
        self.killed.add(pid)
        return pid, since, tree

    @contextlib.contextmanager
    def between_workers(self, h):
        """SIGSTOP the holder, SIGKILL its worker and wait until the worker
        is a zombie: the stopped holder cannot reap it, so no other
        worker starts until the holder gets SIGCONT at the end (also on
        failure).  Yields (worker pid, log offset before the kill)."""
        holder = h.supervisor.pid
        os.kill(holder, signal.SIGSTOP)
        try:
            wait_until(lambda: proc_state(holder) == 'T',
                       'holder %d stopped' % holder, 10, 0.001)
            pid, since, tree = self.kill_worker(h)
            wait_until(lambda: not any(map(alive, tree)),
                       'worker %d a zombie' % pid, 10)
            # Nothing else: the holder is stopped
            self.assertEqual(vmharness.children(holder), [pid])
            yield pid, since
        finally:
            os.kill(holder, signal.SIGCONT)

    def wait_line(self, h, rx, since, what, timeout=30):
        def seen():
            log = h.supervisor.output()[since:]
            if not h.supervisor.alive():
                raise AssertionError('the holder exited (%s) waiting for '
                                     '%s:\n%s' % (h.supervisor.popen
                                                  .returncode, what, log))
            return rx.search(log)
        return wait_until(seen, what, timeout, 0.01)

    def wait_restored(self, h, since, timeout=30):
        return self.wait_line(h, RESTORED, since, 'the restored line',
                              timeout)

    def outage_cmd(self, h, hold, seq, what, timeout=60):
        """The WL line of a command the guest sent while no worker could
        serve it: answered, and right, once one restored."""
        try:
            line = hold.wait(seq, timeout)
        except TimeoutError:
            self.hung(h, 'at the request sent %s' % what)
        self.assertTrue(line.ok, '%s: %s' % (what, line))
        return line

    def test_full_state_dir(self):
        """The state tmpfs fills up under guest load: ENOSPC for the
        requests that need a new record, no SIGBUS, a restart restores
        everything, creates work again once space is back."""
        with self.setup('state-full') as (h, mnt, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir pre'])
            fill(mnt)
            # Far more new names than the records the worker still has
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

            pid, since, _ = self.kill_worker(h)
            m = self.wait_restored(h, since)
            self.assertEqual(m.group(1), state, m.group(0))
            self.assertGreaterEqual(int(m.group(2)), len(made) + 2,
                                    m.group(0))
            # Restored at the first start: no new space needed
            log = h.supervisor.output()[since:]
            w = Workers(log)
            self.assertEqual([(p, w.how[p]) for p in w.order],
                             [(pid, ('signal', signal.SIGKILL))], log)
            self.assertEqual(FAILED_START.findall(log), [], log)
            self.run_ok(h, hold, ['check a 0 64k 5', 'check a 64k 4k 6',
                                  'stat pre'] +
                        ['stat %s' % n for n in made[::50] + made[-1:]])
            for n in made + ['pre']:
                self.assertTrue(os.path.isdir(os.path.join(h.shared, n)), n)
            line = hold.cmd('mkdir still-full')
            self.assertEqual(line.result, 'err=ENOSPC', line)
            self.assertFalse(os.path.exists(os.path.join(h.shared,
                                                         'still-full')))

            # Space back: the share creates again
            remount(mnt, 'size=4m')
            self.run_ok(h, hold, ['mkdir after', 'open after/x b',
                                  'write b 0 4k 9', 'check b 0 4k 9'])
            self.assertTrue(os.path.isfile(os.path.join(h.shared, 'after',
                                                        'x')))
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, 1)
            print('functional       state-full: %d mkdirs ok, %d ENOSPC; '
                  '"%s"' % (len(made), len(refused), m.group(0)), flush=True)

    def test_restart_without_space(self):
        """A restart that would need new space on a full state dir: the
        worker stops with one line and exit 75, the holder backs off;
        space back, the next start restores the session."""
        with self.setup('state-nospace') as (h, mnt, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir d1', 'open d1/f b',
                                  'write b 0 4k 7'])
            with self.between_workers(h) as (pid, since):
                # Holes where the next worker writes (the intent slots,
                # all idle), as a state file copied sparse or written by
                # a daemon that did not reserve its blocks; then no space
                intents = os.path.join(state, 'intents')
                size = os.path.getsize(intents)
                punch_hole(intents, 4096, size - 4096)
                fill(mnt)
                # The guest's next request, sent while no worker runs
                seq = hold.send('check a 0 64k 5')
            t_cont = time.monotonic()
            m = self.wait_line(h, FAILED_START, since, 'a refusal')
            remount(mnt, 'size=4m')
            self.assertEqual(m.group(0), 'state: refusing %s: cannot back '
                             'state file intents (%d bytes) with blocks: No '
                             'space left on device' % (state, size))
            r = self.wait_restored(h, since)
            outage = self.outage_cmd(h, hold, seq, 'during the refusals')
            t_answer = time.monotonic()
            nfailed = self.assert_failed_starts(h, since, pid,
                                                'No space left on device')
            self.run_ok(h, hold, ['check a 0 64k 5', 'check b 0 4k 7',
                                  'write b 4k 4k 8', 'mkdir d2',
                                  'stat d1'])
            self.assertTrue(os.path.isdir(os.path.join(h.shared, 'd2')))
            time.sleep(0.5)
            # The kill, then one failed start or a few (backing off)
            self.assert_no_sigbus_no_loop(h, 5)
            print('functional       state-nospace: %d failed start(s): '
                  '"%s"; then "%s"; the guest\'s request sent during it: %s '
                  'after %.0f ms' % (nfailed, m.group(0), r.group(0),
                                     outage.result,
                                     (t_answer - t_cont) * 1000), flush=True)

    def test_restart_state_dir_unusable(self):
        """A state dir made read-only, then one renamed away, between two
        workers: each next worker stops with one line and exit 75, the
        holder backs off; the first start once it is back restores the
        session."""
        with self.setup('state-unusable') as (h, mnt, state, hold):
            self.run_ok(h, hold, ['open keep a', 'write a 0 64k 5',
                                  'mkdir d1', 'open d1/f b',
                                  'write b 0 4k 7', 'write b 4k 4k 8'])
            report = []
            # Read-only: the kernel refuses while a holder's table holds
            # the record files writable (mount point is busy), also
            # between two workers: the table is the holder's too.  A
            # read-only bind mount over the state directory: the next
            # worker opens it read-only
            with self.assertRaises(RuntimeError):
                remount(mnt, 'ro')
            ends = len(Workers(h.supervisor.output()).order)
            with self.between_workers(h) as (pid, since):
                with self.assertRaises(RuntimeError):
                    remount(mnt, 'ro')
                run('mount', '--bind', state, state)
                run('mount', '-o', 'remount,bind,ro', state)
                seq = hold.send('check b 4k 4k 8')
            t_cont = time.monotonic()
            m = self.wait_line(h, FAILED_START, since,
                               'a refusal (read-only)')
            run('umount', '-l', state)
            self.assertEqual(m.group(1), state, m.group(0))
            self.assertIn('Read-only file system', m.group(2))
            r = self.wait_restored(h, since)
            outage = self.outage_cmd(h, hold, seq, 'while read-only')
            t_answer = time.monotonic()
            nfailed = self.assert_failed_starts(h, since, pid,
                                                'Read-only file system')
            self.run_ok(h, hold, ['check a 0 64k 5', 'check b 0 4k 7',
                                  'check b 4k 4k 8', 'mkdir d3'])
            self.assertTrue(os.path.isdir(os.path.join(h.shared, 'd3')))
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, ends + 10)
            report.append('state-readonly: %d failed start(s): "%s"; then '
                          '"%s"; the guest\'s request sent during it: %s '
                          'after %.0f ms'
                          % (nfailed, m.group(0), r.group(0), outage.result,
                             (t_answer - t_cont) * 1000))

            # Missing (renamed away): the worker cannot open it, one line,
            # exit 75, back off; renamed back, the next start restores
            away = state + '.away'
            ends = len(Workers(h.supervisor.output()).order)
            with self.between_workers(h) as (pid, since):
                os.rename(state, away)
                seq = hold.send('check a 0 64k 5')
            t_cont = time.monotonic()
            try:
                m = self.wait_line(h, FAILED_START, since,
                                   'a refusal (missing)')
            finally:
                os.rename(away, state)
            self.assertEqual(m.group(0), 'state: cannot open %s: No such '
                             'file or directory' % state)
            r = self.wait_restored(h, since)
            outage = self.outage_cmd(h, hold, seq, 'while missing')
            t_answer = time.monotonic()
            nfailed = self.assert_failed_starts(h, since, pid,
                                                'No such file or directory')
            self.run_ok(h, hold, ['check a 0 64k 5', 'check b 0 4k 7',
                                  'check b 4k 4k 8', 'stat d3', 'mkdir d4'])
            self.assertTrue(os.path.isdir(os.path.join(h.shared, 'd4')))
            time.sleep(0.5)
            self.assert_no_sigbus_no_loop(h, ends + 10)
            report.append('state-missing: %d failed start(s): "%s"; then '
                          '"%s"; the guest\'s request sent during it: %s '
                          'after %.0f ms'
                          % (nfailed, m.group(0), r.group(0), outage.result,
                             (t_answer - t_cont) * 1000))
            for line in report:
                print('functional       ' + line, flush=True)

    def test_clean_start_without_space(self):
        """No saved session, and no space for the record files: the worker
        stops with one line and exit 75 (a resource, not a refusal of the
        state: the holder stays), the holder backs off; space back, the
        next worker starts clean.  No guest: a client that connects as
        QEMU does is enough for a worker to read its state."""
        t0 = time.monotonic()
        with self.on_tmpfs('state-clean-full') as (h, mnt, state):
            fill(mnt)
            h.start_supervised_virtiofsd(state)
            client = vmharness.unix_connect(h.sock)
            m = self.wait_line(h, FAILED_START, 0, 'a refusal')
            self.wait_line(h, FAST, 0, 'the restart')
            client.close()
            remount(mnt, 'size=4m')
            # (the failed worker printed a clean start too, before
            # its refusal)
            since = len(h.supervisor.output())
            client = vmharness.unix_connect(h.sock)
            c = self.wait_line(h, CLEAN, since, 'a clean start')
            # Past the state: its files made, serving the connection
            self.wait_line(h, re.compile(r'^virtio_loop: Entry$', re.M),
                           since, 'the worker serving')
            self.assertEqual(FAILED_START.findall(
                h.supervisor.output()[since:]), [])
            self.assertLessEqual({'inodes', 'files', 'dirs', 'plocks',
                                  'intents'}, set(os.listdir(state)))
            client.close()
            self.assertEqual(m.group(1), state, m.group(0))
            self.assertIn('No space left on device', m.group(2))
            w = Workers(h.supervisor.output())
            self.assertEqual(len(w.order), 1, w.lines)
            self.assertEqual(w.lines[w.order[0]], [
                'holder: worker %d could not start (exit status %d)'
                % (w.order[0], EXIT_RETRY),
                'holder: worker %d ended (exit status %d) before serving '
                'a request (1 in a row): restarting in 0 ms'
                % (w.order[0], EXIT_RETRY)])
            self.assert_no_sigbus_no_loop(h, 1)
        print('functional       state-clean-full: "%s"; then "%s"; test %.1f s'
              % (m.group(0), c.group(0), time.monotonic() - t0), flush=True)

    def test_session_save_fails(self):
        """FUSE_INIT cannot save the session (a full state directory) where
        an earlier session's file is: one line, the old file is gone, and
        a SIGKILL later the restarted worker starts clean (one line), not
        carrying on the old session against the guest's; the guest gets
        EIO, not a hang, and the holder does not loop.

        A guest that mounts the share again while the daemon serves a
        session: the guest of a first holder mounts (its session saved),
        that holder and its worker are SIGKILLed (the session file
        stays), QEMU too; the state fills up; a second holder's worker
        carries the session on, and a new guest's FUSE_INIT starts a
        new one, which cannot be saved."""
        t0 = time.monotonic()
        with self.on_tmpfs('state-session-save') as (h, mnt, state):
            session = os.path.join(state, 'session')
            # cache=none: the guest's stat and read reach the daemon
            opts = ('cache=none',)
            h.start_supervised_virtiofsd(state, options=opts)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.run_ok(h, hold, ['mkdir d1', 'open d1/f a',
                                  'write a 0 4k 3'])
            self.assertTrue(os.path.exists(session))
            # The daemon first (QEMU's end would end the session)
            first = h.supervisor
            tree = process_tree(first.pid)
            for p in tree:
                os.kill(p, signal.SIGSTOP)
            for p in reversed(tree):
                os.kill(p, signal.SIGKILL)
            first.wait(10)
            wait_until(lambda: not any(map(alive, tree)),
                       'the first holder\'s processes gone', 10)
            hold.close()
            h.hold = None
            h.qemu.kill()
            self.assertTrue(os.path.exists(session))
            fill(mnt)

            since = len(first.output())
            h.start_supervised_virtiofsd(state, options=opts)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.run_ok(h, hold, ['stat d1', 'mkdir d2', 'open d2/g b',
                                  'write b 0 4k 4'])
            saving = h.supervisor.output()[since:]
            old_file = os.path.exists(session)

            pid, since, _ = self.kill_worker(h)
            m = self.wait_line(h, re.compile('|'.join(
                r.pattern for r in (CLEAN, RESTORED, FAILED_START)),
                re.M), since, 'the restarted worker\'s state line')
            self.assertRegex(m.group(0), CLEAN,
                             'the restart carried on the old session')
            self.assertEqual(m.group(0), 'state: no saved session in '
                             '%s, starting clean' % state)
            # The guest's session is gone: EIO, not a hang
            for c in ('stat d1', 'check b 0 4k 4'):
                try:
                    line = hold.cmd(c, 60)
                except TimeoutError:
                    self.hung(h, 'at %r after the restart' % c)
                self.assertEqual(line.result, 'err=EIO', line)
            # One line when the save failed, and no old session left
            failed = SAVE_FAILED.findall(saving)
            self.assertEqual(len(failed), 1, saving)
            self.assertEqual(failed[0][0], state, saving)
            self.assertFalse(old_file, 'the old session file stayed')
            time.sleep(0.5)
            log = h.supervisor.output()[since:]
            self.assertEqual([l for l in log.splitlines()
                              if l.startswith('state: ')],
                             [m.group(0)], log)
            # (the first holder's worker started too)
            self.assert_no_sigbus_no_loop(h, 2)
            self.assertEqual(len(Workers(h.supervisor.output()).order),
                             1)
            save_line = SAVE_FAILED.search(saving).group(0)
        print('functional       session-save-fails: "%s"; then "%s"; test '
              '%.1f s' % (save_line, m.group(0), time.monotonic() - t0),
              flush=True)

    def test_fd_limit(self):
        """RLIMIT_NOFILE reached: EMFILE for the requests that need a new
        fd, nothing made for them; a restart restores everything recorded
        and serves (it needs fds of its own before its first request)."""
        limit = 128
        # prlimit for the holder (and so its workers); --rlimit-nofile, or
        # root's virtiofsd would raise its limit again
        wrapper = ('prlimit', '--nofile=%d:%d' % (limit, limit), 'sh', '-c',
                   'exec "$0" "$@" --rlimit-nofile=%d' % limit)
        with self.setup('state-nofile', size='4m',
                        wrapper=wrapper) as (h, mnt, state, hold):
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

            pid, since, _ = self.kill_worker(h)
            m = self.wait_restored(h, since)
            self.assertGreaterEqual(int(m.group(2)), len(made) + 2,
                                    m.group(0))
            self.assertEqual(FAILED_START.findall(
                h.supervisor.output()[since:]), [])
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
            # The restarted worker holds about as many fds: new names
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
