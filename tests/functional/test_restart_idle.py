"""virtiofsd crash recovery while the guest is idle (issue 4, step 6).

Each test boots the guest in "workload hold" mode: the host sends it one
command a line on ttyS1 and reads one WL line per command on the console.
The guest builds up state on the share (open files, an unlinked-but-open
file, a directory half read, a cwd, a flock, an xattr), the host SIGKILLs
the daemon of virtiofsd -o reconnect, and the guest carries on against
the restarted daemon.  Also: damaged, foreign, badly protected and
shared (inside the source) state directories are refused, and so is a
session started with other options than the daemon's, recovery off
behaves as QEMU 7.2 did, and the holder's fd table holds no more fds
after 50 restarts than after one.

With -o reconnect the process started is the holder: it keeps the fd
table and the listening socket, and runs the daemon proper as a worker,
a child sharing its fd table (CLONE_FILES) that it clones again when the
worker dies (tools/virtiofsd/fd_holder.c).  With the namespace sandbox
(the default) the worker is the init of a pid namespace of its own.  A
crash is simulated by stopping the worker and anything below it first
and then SIGKILLing them, so that no process of it sees another one die
and acts on it.

Every process a test starts is killed by pid when the test ends (the
holder, then every process below it, then its process group); every
wait has a deadline; on failure the test prints the ends of the console,
QEMU and daemon logs.
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import struct
import sys
import time
import unittest

import vmharness
from vmharness import children, process_tree, wait_until, pid_alive

RECONNECT = ',reconnect-ms=100'
# cache=none: every read, write and readdir of the guest reaches the daemon,
# so what the guest sees after a restart comes from the restarted daemon.
DAEMON_OPTS = ('cache=none', 'xattr', 'flock')
STATE_FILES = {'session', 'inodes', 'files', 'dirs'}
RESTORE_WAIT = 30       # seconds from SIGKILL to the restored line
KIB = 1024

# A directory whose readdir needs more than one FUSE_READDIR: the guest
# kernel asks for one page (4 KiB) a request, and a fuse_dirent with a
# 100-character name takes 128 bytes, so a page holds 32 of the 52
# entries (50 files, "." and "..") and reading the rest after the restart
# continues the daemon's directory stream in the middle.
DIR_ENTRIES = 50
DIR_NAME_LEN = 100

# The daemon's lines about its state directory (%s: the directory)
STATE = 'state: '
RESTORED = ('^' + STATE + r'restored session from %s: (\d+) inodes, '
            r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds \((\d+) '
            r'stale\) in (\d+) us$')
CLEAN = '^' + STATE + r'no saved session in %s, starting clean$'
REFUSING = '^' + STATE + r'refusing %s: (.+)$'
# The holder's lines about a worker SIGKILLed after it served the guest
# (%d: its pid)
KILLED = r'^holder: worker %d ended \(signal 9\) after \d+ ms: restarting$'
# ... SIGKILLed, whether or not it had answered a request yet (%s: its pid
# or \d+)
KILLED_ANY = (r'^holder: worker %s ended \(signal 9\) (after \d+ ms: '
              r'restarting|before serving a request \(\d+ in a row\): '
              r'restarting in \d+ ms)$')
HOLDER = 'holder: '



def send_signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def crash_tree(pid):
    """Stop pid and its descendants, then SIGKILL them, children first.
    Returns the pids killed."""
    tree = []
    while True:
        now = process_tree(pid)
        if now == tree:
            break
        tree = now
        send_signal(tree, signal.SIGSTOP)
    send_signal(reversed(tree), signal.SIGKILL)
    return tree


def host_flock(path):
    """Try flock(LOCK_EX | LOCK_NB) on path from the host and release it at
    once; returns 0 or the errno."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def make_state_dir(path, mode=0o700):
    os.mkdir(path)
    os.chmod(path, mode)
    return path


class Supervised(vmharness.Proc):
    """virtiofsd -o reconnect: the holder, which runs the daemon as its
    worker.  kill() kills the holder, then every process below it by pid,
    then its process group."""

    def __init__(self, h, state_dir, name='holder',
                 options=DAEMON_OPTS, source=None, sock=None, env=None):
        self.state_dir = state_dir
        self.sock = sock or h.sock
        argv = [vmharness.VIRTIOFSD_BIN, '--socket-path=' + self.sock,
                 '-o', 'source=' + (source or h.shared)]
        for o in list(options) + ['reconnect', 'state_dir=' + state_dir]:
            argv += ['-o', o]
        env = {k: v for k, v in dict(os.environ, **(env or {})).items()
               if k not in ('NOTIFY_SOCKET', 'LISTEN_FDS', 'LISTEN_PID',
                            'LISTEN_FDNAMES')}
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.client = None
        super().__init__(name, argv, os.path.join(h.dir, name + '.log'), env)
        h.procs.append(self)

    def kill(self):
        if self.client is not None:
            self.client.close()
        tree = process_tree(self.pid) if self.alive() else []
        send_signal(tree[:1], signal.SIGKILL)
        send_signal(tree[1:], signal.SIGKILL)
        super().kill()
        try:
            wait_until(lambda: not any(map(pid_alive, tree[1:])),
                       'the end of %s' % tree, 10)
        except TimeoutError as e:
            sys.stderr.write('%s: %s\n' % (self.name, e))

    def lines(self, since=0):
        """The log lines from byte offset since."""
        with open(self.log_path, 'rb') as f:
            f.seek(since)
            return f.read().decode('utf-8', 'replace').splitlines()

    def log_size(self):
        return os.path.getsize(self.log_path)

    def matches(self, pattern, since=0):
        if '%s' in pattern:
            pattern = pattern % re.escape(self.state_dir)
        rx = re.compile(pattern)
        return [m for m in map(rx.match, self.lines(since)) if m]

    def wait_line(self, pattern, since=0, count=1, timeout=RESTORE_WAIT):
        """Wait until pattern (with %s for the state dir) matched count log
        lines after offset since; returns the last match."""
        def seen():
            found = self.matches(pattern, since)
            if len(found) >= count:
                return found[count - 1]
            if not self.alive():
                raise AssertionError('holder exited (%s) while waiting '
                                     'for %r' % (self.popen.returncode,
                                                 pattern))
            return None
        return wait_until(seen, 'log line %r (#%d)' % (pattern, count),
                          timeout)

    def daemon(self, timeout=10):
        """The pid of the holder's child, the worker serving the guest."""
        def one():
            c = children(self.pid)
            return c[0] if len(c) == 1 else None
        return wait_until(one, 'a worker under holder pid %d'
                          % self.pid, timeout, 0.01)

    def fd_count(self):
        """The fds in the holder's table (the worker's too: they share
        it)."""
        return len(os.listdir('/proc/%d/fd' % self.pid))

    def settled_fd_count(self, timeout=10):
        """The holder's fd count once it has not changed for 1 s."""
        last = [self.fd_count(), time.monotonic()]

        def stable():
            n = self.fd_count()
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return time.monotonic() - last[1] >= 1.0 and n
        return wait_until(stable, 'a stable holder fd count', timeout)

    def wait_socket(self, timeout=10):
        def there():
            if not self.alive():
                raise AssertionError('holder exited (%s) before it '
                                     'listened' % self.popen.returncode)
            return os.path.exists(self.sock)
        wait_until(there, 'socket %s' % self.sock, timeout, 0.02)

    def connect(self, timeout=10):
        """Connect to the daemon as QEMU does, without a guest: the daemon
        may load its state only once it has a connection.  Does nothing
        if the holder exits before it listens."""
        def connected():
            if not self.alive():
                return True
            try:
                self.client = vmharness.unix_connect(self.sock)
                return True
            except (FileNotFoundError, ConnectionRefusedError):
                return False
        wait_until(connected, 'a connection to %s' % self.sock, timeout,
                   0.02)


class RestartIdleTest(unittest.TestCase):

    @contextlib.contextmanager
    def guest(self, name):
        """A Harness whose logs are printed if the test fails."""
        with vmharness.Harness(name) as h:
            try:
                yield h
            except BaseException:
                sys.stderr.write('\n--- logs of %s (%s)\n%s\n'
                                 % (self.id(), h.dir, h.log_tail(60)))
                raise

    def supervise(self, h, **kw):
        """Start the holder with its state dir in h.dir,
        boot the guest in hold mode and check that the daemon started
        clean.  Returns the Supervised and the Hold."""
        state = make_state_dir(os.path.join(h.dir, 'state'))
        sup = Supervised(h, state, **kw)
        sup.wait_socket()
        hold = h.start_qemu_hold(chardev_opts=RECONNECT)
        sup.wait_line(CLEAN)
        return sup, hold

    def crash(self, sup):
        """SIGKILL the worker; returns (its pid, log offset)."""
        pid = sup.daemon()
        since = sup.log_size()
        crash_tree(pid)
        return pid, since

    def run_ok(self, hold, commands, timeout=30):
        """Run hold commands; each must succeed.  Returns the WL lines."""
        res = []
        for c in commands:
            line = hold.cmd(c, timeout)
            self.assertTrue(line.ok, '%r failed: %s' % (c, line))
            res.append(line)
        return res

    def assert_state_files(self, state):
        names = set(os.listdir(state))
        self.assertLessEqual(STATE_FILES, names, 'state files in %s' % state)
        for n in STATE_FILES - {'session'}:
            self.assertGreaterEqual(os.path.getsize(os.path.join(state, n)),
                                    64, 'header of %s' % n)

    def finish_guest(self, h, hold):
        """quit the hold mode and wait for the guest to power off."""
        self.assertTrue(hold.cmd('quit').ok)
        h.wait_console(r'^GUEST DONE rc=\d+', 60, 'the guest to finish')
        self.assertEqual(h.qemu.wait(30), 0, 'QEMU exit status')
        summary, _ = vmharness.parse_workload(h.read_console())
        return summary

    def test_idle_restart_keeps_everything(self):
        t0 = time.monotonic()
        with self.guest('restart-idle') as h:
            f1 = os.path.join(h.shared, 'f1')
            os.mkdir(os.path.join(h.shared, 'sub'))
            with open(os.path.join(h.shared, 'sub', 'rel'), 'w') as f:
                f.write('r' * 123)
            os.mkdir(os.path.join(h.shared, 'many'))
            for i in range(DIR_ENTRIES):
                name = ('e%02d' % i).ljust(DIR_NAME_LEN, 'x')
                open(os.path.join(h.shared, 'many', name), 'w').close()
            sup, hold = self.supervise(h)

            # How this daemon answers an unlock without a restart: the
            # guest kernel sends LOCK_UN as SETLKW, which stock 7.2's
            # lo_flock refuses with EOPNOTSUPP.  The restart must not
            # change the answer.
            self.run_ok(hold, ['open f3 c', 'flock c'])
            unlock_answer = hold.cmd('funlock c').result
            self.run_ok(hold, ['close c'])

            first = self.run_ok(hold, [
                'open f1 a', 'write a 0 64k 11', 'check a 0 64k 11',
                'opendir many d',
                'chdir sub',
                'open ./g b', 'write b 0 32k 22', 'unlink ./g',
                'flock a',
                'setxattr f1 user.test held-across'])
            self.assertNotEqual(first[3].fields['first'], '-')
            self.assertFalse(os.path.exists(os.path.join(h.shared, 'sub',
                                                         'g')))
            self.assertEqual(os.getxattr(f1, 'user.test'), b'held-across')
            self.assertEqual(host_flock(f1), errno.EWOULDBLOCK,
                             'the guest flock is not a host flock')
            self.assert_state_files(sup.state_dir)

            t_kill = time.monotonic()
            pid, since = self.crash(sup)
            m = sup.wait_line(RESTORED, since)
            t_restored = time.monotonic()
            self.assertEqual(len(sup.matches(KILLED % pid, since)), 1,
                             '\n'.join(sup.lines(since)))
            self.assertNotEqual(sup.daemon(), pid)
            inodes, files, dirs, plocks, stale, us = map(int, m.groups())
            # Open: f1 and the unlinked g, the directory many; inodes the
            # guest holds: at least those and its cwd sub (the root may
            # not count).  The holder kept every fd in its table, so each
            # record found its own fd there: nothing is stale.  No
            # posix_lock: no lock fds.
            self.assertEqual((files, dirs, plocks, stale), (2, 1, 0, 0),
                             m.group(0))
            self.assertGreaterEqual(inodes, 4, m.group(0))
            self.assertEqual(host_flock(f1), errno.EWOULDBLOCK,
                             'flock lost in the restart')

            n = len(hold.lines)
            self.run_ok(hold, [
                'check a 0 64k 11', 'check b 0 32k 22',
                'write a 64k 64k 11', 'write b 32k 32k 22',
                'check a 0 128k 11', 'check b 0 64k 22'])
            t_first_op = time.monotonic()
            rest = hold.cmd('readdir d')
            self.assertTrue(rest.ok, rest)
            self.assertEqual(int(rest.fields['count']), DIR_ENTRIES + 2 - 1,
                             rest)
            stat = hold.cmd('stat ./rel')
            self.assertTrue(stat.ok, stat)
            self.assertEqual(stat.fields['size'], '123', stat)
            self.run_ok(hold, ['getxattr f1 user.test held-across'])
            self.assertEqual(host_flock(f1), errno.EWOULDBLOCK,
                             'flock lost after the restart')
            with open(f1, 'rb') as f:
                self.assertEqual(f.read(), vmharness.hold_pattern(0, 128 * KIB, 11))

            unlock = hold.cmd('funlock a')
            self.assertEqual(unlock.result, unlock_answer, unlock)
            if unlock.ok:
                self.assertEqual(host_flock(f1), 0, 'funlock kept the lock')
            self.run_ok(hold, ['close a', 'close b', 'close d'])
            # The guest sends RELEASE in the background: the lock goes away
            # once the worker closed the file (in the table it shares with
            # the holder).
            wait_until(lambda: host_flock(f1) == 0,
                       'the lock released after close', 10)

            after = [l for l in hold.lines[n:] if l.op != 'funlock']
            self.assertEqual([l for l in after if not l.ok], [])
            summary = self.finish_guest(h, hold)
            self.assertEqual(summary['mismatches'], 0, summary)
            self.assertEqual(sup.matches(REFUSING), [])
            print('functional       restart-idle: restored "%s"; SIGKILL to '
                  'restored line %.0f ms, to the first guest op done %.0f ms; '
                  'test %.1f s'
                  % (m.group(0), (t_restored - t_kill) * 1000,
                     (t_first_op - t_kill) * 1000, time.monotonic() - t0),
                  flush=True)

    def expect_refusal(self, sup, since=0, timeout=15):
        """The worker refuses state in one line and exits 1; the holder
        starts no other worker and exits 1 too.  Returns the line."""
        try:
            rc = sup.wait(timeout)
        except TimeoutError:
            self.fail('holder still running; worker pid %s\n%s'
                      % (children(sup.pid), '\n'.join(sup.lines(since))))
        lines = sup.lines(since)
        text = '\n'.join(lines)
        refusals = sup.matches(REFUSING, since)
        self.assertEqual(len(refusals), 1, text)
        self.assertEqual([l for l in lines if l.startswith(STATE)],
                         [refusals[0].group(0)], text)
        after = lines[lines.index(refusals[0].group(0)) + 1:]
        self.assertEqual([l for l in after if l.startswith(HOLDER)], [],
                         'a worker restarted after the refusal\n' + text)
        self.assertEqual(rc, 1, text)
        return refusals[0].group(0)

    def test_no_noreplace(self):
        """Where the shared directory's file system has no
        RENAME_NOREPLACE (a crash-point build simulates one while the
        state directory holds a file "no-noreplace"), no create may
        replace a name someone else made: a file gets its name with
        link() (fails if the name exists), a directory cannot and mkdir
        fails (EOPNOTSUPP, one line), nothing left on the host; and a
        daemon that starts on such a source refuses it in one line, the
        holder ends."""
        t0 = time.monotonic()
        with self.guest('restart-noreplace') as h:
            sup, hold = self.supervise(
                h, env={'VIRTIOFSD_CRASH_POINTS': '1'})
            knob = os.path.join(sup.state_dir, 'no-noreplace')
            open(knob, 'w').close()
            self.run_ok(hold, ['openf c k rdwr,creat,excl',
                               'write k 0 4k 3', 'close k'])
            r = hold.cmd('mkdir d1', timeout=60)
            self.assertEqual(r.result, 'err=EOPNOTSUPP', str(r))
            r = hold.cmd('openf c k2 rdwr,creat,excl', timeout=60)
            self.assertEqual(r.result, 'err=EEXIST', str(r))
            self.assertEqual(sorted(os.listdir(h.shared)), ['c'])
            self.assertEqual(os.path.getsize(os.path.join(h.shared, 'c')),
                             4096)
            self.assertEqual(len(sup.matches(
                '^cannot make directories exactly once where the file '
                'system has no RENAME_NOREPLACE: answering EOPNOTSUPP$')),
                1, '\n'.join(sup.lines()))

            _, since = self.crash(sup)
            line = self.expect_refusal(sup, since)
            self.assertTrue(line.endswith(
                "the shared directory's file system has no "
                'RENAME_NOREPLACE: creates cannot be replayed exactly '
                'once'), line)
            self.assertEqual(sorted(os.listdir(h.shared)), ['c'])
            print('functional       no RENAME_NOREPLACE: mkdir EOPNOTSUPP, '
                  'O_EXCL create by link(); restart "%s"; test %.1f s'
                  % (line, time.monotonic() - t0), flush=True)

    def test_corrupt_state_refused(self):
        t0 = time.monotonic()
        with self.guest('restart-refuse') as h:
            sup, hold = self.supervise(h)
            self.run_ok(hold, ['open f1 a', 'write a 0 16k 5', 'opendir . d',
                               'check a 0 16k 5'])
            self.assert_state_files(sup.state_dir)

            # A copy of a live session, for the foreign-share case below.
            foreign = os.path.join(h.dir, 'state-copy')
            shutil.copytree(sup.state_dir, foreign)
            os.chmod(foreign, 0o700)
            # Another, its intent file in another layout (72-byte
            # records; lo_map.c's header: rec_size at 16, nelems at 24)
            older = os.path.join(h.dir, 'state-older')
            shutil.copytree(sup.state_dir, older)
            os.chmod(older, 0o700)
            with open(os.path.join(older, 'intents'), 'r+b') as f:
                hdr = bytearray(f.read(64))
                nslots = struct.unpack_from('<Q', hdr, 24)[0]
                struct.pack_into('<I', hdr, 16, 72)
                f.seek(0)
                f.write(hdr)
                f.truncate(64 + nslots * 72)

            with open(os.path.join(sup.state_dir, 'inodes'), 'r+b') as f:
                magic = f.read(8)
                f.seek(0)
                f.write(bytes(b ^ 0xff for b in magic))
            _, since = self.crash(sup)
            line = self.expect_refusal(sup, since)
            # Nothing serves the guest any more: its next request does not
            # succeed (it waits for a back-end, or fails).
            seq = hold.send('check a 0 16k 5')
            try:
                late = hold.wait(seq, 5)
                self.assertFalse(late.ok, late)
            except TimeoutError:
                pass

            # The state of share A offered to a daemon of share B.
            share_b = os.path.join(h.dir, 'share-b')
            os.mkdir(share_b)
            sup_b = Supervised(h, foreign, name='holder-foreign',
                               source=share_b, sock=os.path.join(h.dir, 'b.sock'))
            sup_b.connect()
            line_b = self.expect_refusal(sup_b)

            # A state dir others can read is refused; as 0700 it is used.
            loose = make_state_dir(os.path.join(h.dir, 'state-0755'), 0o755)
            sup_c = Supervised(h, loose, name='holder-0755', source=share_b,
                               sock=os.path.join(h.dir, 'c.sock'))
            sup_c.connect()
            line_c = self.expect_refusal(sup_c)
            os.chmod(loose, 0o700)
            sup_d = Supervised(h, loose, name='holder-0700', source=share_b,
                               sock=os.path.join(h.dir, 'c.sock'))
            sup_d.connect()
            sup_d.wait_line(CLEAN)

            # The older layout, for the same share: one clear line
            sup_e = Supervised(h, older, name='holder-older',
                               sock=os.path.join(h.dir, 'e.sock'))
            sup_e.connect()
            line_e = self.expect_refusal(sup_e)
            self.assertIn('state file intents has 72-byte records, '
                          'expected 96', line_e)

            # A state dir inside the shared directory (the guest could
            # write the records) is refused, however deep
            os.mkdir(os.path.join(share_b, 'deep'))
            inside = make_state_dir(os.path.join(share_b, 'deep', 'state'))
            sup_f = Supervised(h, inside, name='holder-inside',
                               source=share_b,
                               sock=os.path.join(h.dir, 'f.sock'))
            sup_f.connect()
            line_f = self.expect_refusal(sup_f)
            self.assertEqual(line_f, '%srefusing %s: the state directory '
                             'is inside the shared directory %s'
                             % (STATE, inside, share_b))
            self.assertEqual(os.listdir(inside), [])
            print('functional       refusals: "%s" / "%s" / "%s" / "%s" / '
                  '"%s"; test %.1f s'
                  % (line, line_b, line_c, line_e, line_f,
                     time.monotonic() - t0), flush=True)

    def test_other_options_refused(self):
        """A virtiofsd started with other options than the session was (a
        new service instance with another configuration, on the state
        the killed one left) refuses the state in one line naming the
        option, and the holder ends with status 1: no restart loop, the
        session stays for a daemon with the right options, which carries
        it on."""
        t0 = time.monotonic()
        with self.guest('restart-options') as h:
            sup, hold = self.supervise(h)
            self.run_ok(hold, ['open f1 a', 'write a 0 16k 7',
                               'setxattr f1 user.t kept'])
            # The old holder, its worker and anything below them die at
            # once; QEMU keeps trying to reconnect
            crash_tree(sup.pid)
            sup.wait(10)
            session = os.path.join(sup.state_dir, 'session')
            self.assertTrue(os.path.exists(session))
            with open(session, 'rb') as f:
                saved = f.read()

            same = list(DAEMON_OPTS)
            cases = [
                ([o for o in same if o != 'xattr'], 'xattr=on', 'xattr=off'),
                (['cache=auto'] + same[1:], 'cache=none', 'cache=auto'),
                (same + ['writeback'], 'writeback=off', 'writeback=on'),
                (same + ['posix_acl'], 'posix_acl=off', 'posix_acl=on'),
                (same + ['announce_submounts'], 'announce_submounts=off',
                 'announce_submounts=on'),
            ]
            lines = []
            for n, (opts, was, now) in enumerate(cases):
                other = Supervised(h, sup.state_dir, name='holder-opts%d' % n,
                                   options=opts)
                other.wait_socket()
                # QEMU reconnects by itself (reconnect-ms)
                line = self.expect_refusal(other)
                self.assertEqual(line, '%srefusing %s: the session was '
                                 'started with %s, this daemon has %s'
                                 % (STATE, sup.state_dir, was, now))
                lines.append(line)
                # Refused, not touched: a daemon with the session's
                # options can still carry it on
                with open(session, 'rb') as f:
                    self.assertEqual(f.read(), saved)

            # The session's options again (a new holder: no fd of the
            # old table is left, every record goes stale), and an option
            # that does not change what a reply means: it carries on
            again = Supervised(h, sup.state_dir, name='holder-same',
                               options=same + ['timeout=5'])
            m = again.wait_line(RESTORED)
            self.assertEqual(again.matches(REFUSING), [])
            time.sleep(0.5)
            self.assertTrue(again.alive())
            print('functional       other options: "%s" ... (%d refusals); '
                  'then "%s"; test %.1f s'
                  % (lines[0], len(lines), m.group(0),
                     time.monotonic() - t0), flush=True)

    def test_recovery_off_is_7_2(self):
        t0 = time.monotonic()
        with self.guest('restart-off') as h:
            state = make_state_dir(os.path.join(h.dir, 'state'))
            opts = ('cache=none', 'state_dir=' + state)
            h.start_virtiofsd(options=opts)
            hold = h.start_qemu_hold(chardev_opts=RECONNECT)
            self.run_ok(hold, ['open f1 a', 'write a 0 16k 3',
                               'check a 0 16k 3', 'opendir . d',
                               'stat f1'])
            self.assertEqual(os.listdir(state), [])

            crash_tree(h.virtiofsd.pid)
            h.virtiofsd.wait(10)
            h.start_virtiofsd(options=opts)
            t_new = time.monotonic()
            # The open file is gone with the daemon: EIO, not a hang.
            line = hold.cmd('check a 0 16k 3', 60)
            self.assertEqual(line.result, 'err=EIO', line)
            line = hold.cmd('stat f1', 30)
            self.assertEqual(line.result, 'err=EIO', line)
            self.assertEqual(os.listdir(state), [])
            log = h.virtiofsd.output()
            self.assertNotIn('state: ', log)
            self.assertTrue(h.qemu.alive())
            print('functional       recovery off: EIO %.1f s after the new '
                  'daemon; test %.1f s'
                  % (time.monotonic() - t_new, time.monotonic() - t0),
                  flush=True)

    def test_holder_fds_flat_over_50_restarts(self):
        t0 = time.monotonic()
        files = {'a': 31, 'b': 32, 'c': 33}
        checks = ['check %s 0 16k %d' % kv for kv in files.items()]
        with self.guest('restart-50') as h:
            sup, hold = self.supervise(h)
            for key, seed in files.items():
                self.run_ok(hold, ['open f%s %s' % (key, key),
                                   'write %s 0 16k %d' % (key, seed)])
            counts = {}
            restore_us = []
            n = len(hold.lines)
            for restart in range(1, 51):
                pid, since = self.crash(sup)
                m = sup.wait_line(RESTORED, since)
                # One line of the holder about this worker's death, the
                # restart-th since the start (a worker killed before the
                # guest sent it anything has its own line: the holder
                # backs off from it)
                text = '\n'.join(sup.lines(since))
                self.assertEqual(len(sup.matches(KILLED_ANY % pid, since)), 1,
                                 text)
                self.assertEqual(len(sup.matches(KILLED_ANY % r'\d+')),
                                 restart, text)
                self.assertEqual(int(m.group(2)), len(files), m.group(0))
                self.assertEqual(int(m.group(5)), 0, m.group(0))
                restore_us.append(int(m.group(6)))
                if restart == 1 or restart % 10 == 0:
                    self.run_ok(hold, checks)
                    counts[restart] = sup.settled_fd_count()
            self.assertEqual([l for l in hold.lines[n:] if not l.ok], [])
            # No fd leaks across restarts: the holder's table (which the
            # worker shares) holds as many fds after 50 as after one
            self.assertEqual(counts[50], counts[1], counts)
            self.assertEqual(len(sup.matches(RESTORED)), 50)
            self.run_ok(hold, ['write a 16k 16k 31', 'check a 0 32k 31'])
            restore_us.sort()
            print('functional       50 restarts: holder fds %s; restore '
                  'p50 %d us, max %d us; test %.1f s'
                  % (counts, restore_us[24], restore_us[-1],
                     time.monotonic() - t0), flush=True)


if __name__ == '__main__':
    unittest.main()
