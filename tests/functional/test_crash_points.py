"""Crash-point matrix: every non-idempotent FUSE request virtiofsd serves,
killed at every point of its handling, gives the guest and the host tree
the same result as one clean run.

virtiofsd runs with -o reconnect (the process started is the holder, which
restarts its worker, the daemon proper, when it dies) and with
VIRTIOFSD_CRASH_POINTS=1: the worker dies at the point a file "crash-at" in its
state directory names ("MKDIR:syscall": opcode and point), once.  Points:
  before   the intent is recorded, the syscall has not run
  syscall  the syscall ran, its result is not recorded
  record   the result is recorded, the reply is not sent
  reply    the reply is sent
QEMU keeps the request in the inflight region, the restarted daemon gets
it again, and must neither run it twice nor lose it.

For each case the guest runs the same commands twice, in two fresh
directories: once clean, once with the crash armed.  The WL results and a
snapshot of each directory on the host (names, types, modes, owners,
sizes, link counts, file contents, symlink targets, the xattr user.t)
must be equal, and the daemon must have died at the armed point and been
restored.
"""

import fcntl
import hashlib
import os
import re
import signal
import stat
import struct
import time
import unittest

import vmharness
from vmharness import proc_state

POINTS = ('before', 'syscall', 'record', 'reply')
# Requests that are idempotent record nothing: no "record" point
IPOINTS = ('before', 'syscall', 'reply')
# Creates make the object under a temporary name first ("tmp": made, not
# yet renamed to its name)
CPOINTS = ('before', 'tmp', 'syscall', 'record', 'reply')

# opcode, points, host set-up, guest commands ({d}: the case directory,
# {k}: a key for held files).  The opcode's request must be one of them.
CASES = [
    ('MKDIR', CPOINTS, [], ['mkdir {d}/x']),
    ('RMDIR', POINTS, [('dir', 'x')], ['rmdir {d}/x']),
    ('UNLINK', POINTS, [('file', 'x')], ['unlink {d}/x']),
    ('RENAME', POINTS, [('file', 'a'), ('file', 'b')],
     ['rename {d}/a {d}/b']),
    ('LINK', POINTS, [('file', 'a')], ['link {d}/a {d}/b']),
    ('SYMLINK', CPOINTS, [], ['symlink target {d}/s']),
    ('MKNOD', CPOINTS, [], ['mkfifo {d}/p']),
    ('CREATE', CPOINTS, [], ['create {d}/c {k}', 'write {k} 0 4096 5',
                             'close {k}']),
    ('OPEN', POINTS, [('file', 'a')], ['stat {d}/a', 'openrw {d}/a {k}',
                                       'write {k} 0 100 3', 'close {k}']),
    ('RELEASE', POINTS, [('file', 'a')], ['openrw {d}/a {k}', 'close {k}',
                                          'sleep 300']),
    ('OPENDIR', POINTS, [('dir', 'x'), ('file', 'x/f')],
     ['opendir {d}/x {k}', 'readdir {k}', 'close {k}']),
    ('RELEASEDIR', POINTS, [('dir', 'x')], ['opendir {d}/x {k}',
                                            'close {k}', 'sleep 300']),
    ('SETATTR', POINTS, [('file', 'a', 100)], ['truncate {d}/a 10']),
    ('SETXATTR', POINTS, [('file', 'a')], ['setxattrc {d}/a user.t v']),
    ('REMOVEXATTR', POINTS, [('file', 'a', 0, 'old')],
     ['removexattr {d}/a user.t']),
    # Forgets have no reply and are applied after their record
    ('BATCH_FORGET', ('record',), [('file', 'f%d' % i) for i in range(8)],
     ['statdir {d}', 'dropcaches', 'sleep 300']),
    # EEXIST caused by someone else must still reach the guest.  "!!kind
    # name" is someone else making the name on the host: in the clean
    # run before the next command, in the crash run while the daemon is
    # dead, after the guest's request reached it: the holder, stopped
    # (SIGSTOP) before the request, starts no worker until the name is
    # there.  Once the create took
    # effect (syscall and later) nobody else can make the name, so only
    # the earlier points.
    ('MKDIR', ('before', 'tmp'), [], ['!!dir x', 'mkdir {d}/x'],
     ['err=EEXIST']),
    ('CREATE', ('before', 'tmp'), [], ['!!file c', 'create {d}/c {k}'],
     ['err=EEXIST']),
    ('SETXATTR', POINTS, [('file', 'a', 0, 'other')],
     ['setxattrc {d}/a user.t v'], ['err=EEXIST']),
    # The open flags real programs use.  "openf NAME KEY FLAGS": open(2)
    # with those flags.  A create without O_EXCL (creat(2), a shell's
    # ">" and ">>" on a new name) goes without a temporary name: creating
    # again opens what the first run made.
    ('CREATE', POINTS, [], ['openf {d}/c {k} rdwr,creat',
                            'write {k} 0 4096 5', 'close {k}']),
    ('CREATE', POINTS, [], ['openf {d}/c {k} wronly,creat,trunc',
                            'write {k} 0 4096 5', 'close {k}']),
    ('CREATE', POINTS, [], ['openf {d}/c {k} wronly,creat,append',
                            'write {k} 0 100 5', 'write {k} 100 100 6',
                            'close {k}']),
    ('CREATE', CPOINTS, [], ['openf {d}/c {k} rdwr,creat,excl,trunc',
                             'write {k} 0 4096 5', 'close {k}']),
    # ">" and ">>" on a file that is there: OPEN with O_TRUNC, O_APPEND
    ('OPEN', POINTS, [('file', 'a', 100)],
     ['stat {d}/a', 'openf {d}/a {k} wronly,creat,trunc',
      'write {k} 0 10 3', 'close {k}']),
    ('OPEN', POINTS, [('file', 'a', 100)],
     ['stat {d}/a', 'openf {d}/a {k} wronly,append', 'write {k} 0 10 3',
      'close {k}']),
    ('OPEN', POINTS, [('file', 'a', 100)],
     ['stat {d}/a', 'openf {d}/a {k} rdonly', 'close {k}']),
    # A write to an O_APPEND file lands at the end whatever its offset:
    # running it again would append it twice
    ('WRITE', POINTS, [('file', 'a', 100)],
     ['openf {d}/a {k} wronly,append', 'write {k} 100 4096 3',
      'close {k}']),
    ('WRITE', POINTS, [('file', 'a', 100)],
     ['openf {d}/a {k} rdwr', 'write {k} 50 4096 3', 'close {k}']),
    # A rename that took effect, its source moved on by someone on the
    # host while the daemon is down: still done.  And the source moved
    # away before the rename ran: ENOENT, as a clean run says.
    ('RENAME', ('syscall',), [('file', 'a', 10), ('file', 'b')],
     ['!>rename b z', 'rename {d}/a {d}/b']),
    ('RENAME', ('before',), [('file', 'a', 10), ('file', 'b')],
     ['!!rename a z', 'rename {d}/a {d}/b'], ['err=ENOENT']),
    # A truncation cannot be run again: someone may have written since.
    # "!>kind name": someone else on the host after the next command took
    # effect: in the clean run once it returned, in the crash run while
    # the daemon is dead (so only points where the command had taken
    # effect).  The host's 50 bytes must survive the replay.
    ('SETATTR', ('syscall',), [('file', 'a', 100)],
     ['!>append a 50', 'truncate {d}/a 10']),
    ('OPEN', ('syscall',), [('file', 'a', 100)],
     ['stat {d}/a', '!>append a 50', 'openf {d}/a {k} wronly,trunc',
      'close {k}']),
    ('CREATE', ('syscall',), [],
     ['!>append c 50', 'openf {d}/c {k} wronly,creat,trunc',
      'close {k}']),
    # Someone on the host appends while the daemon is dead, after the
    # guest's append reached it: the file grew, but not by our write,
    # which must still land (after the host's bytes)
    ('WRITE', ('before',), [('file', 'a', 100)],
     ['openf {d}/a {k} wronly,append', '!!append a 50',
      'write {k} 100 4096 3', 'close {k}']),
    # FALLOCATE, locks and COPY_FILE_RANGE (issue 13).  "fallocate KEY
    # MODES OFF LEN": the modes a Linux guest sends (COLLAPSE_RANGE and
    # INSERT_RANGE it refuses itself, EOPNOTSUPP, before sending) make
    # their range allocated, a hole or zeros and the size at least OFF +
    # LEN, whatever was there: a replay changes nothing
    ('FALLOCATE', POINTS, [('append', 'a', 16384)],
     ['openrw {d}/a {k}', 'fallocate {k} alloc 12288 8192', 'close {k}']),
    ('FALLOCATE', POINTS, [('append', 'a', 16384)],
     ['openrw {d}/a {k}', 'fallocate {k} keep 8192 16384', 'close {k}']),
    ('FALLOCATE', POINTS, [('append', 'a', 16384)],
     ['openrw {d}/a {k}', 'fallocate {k} punch,keep 4096 8192',
      'close {k}']),
    ('FALLOCATE', POINTS, [('append', 'a', 16384)],
     ['openrw {d}/a {k}', 'fallocate {k} zero 8192 16384', 'close {k}']),
    # ... but what someone on the host wrote or cut after the request
    # took effect must survive its replay (judged as a truncation)
    ('FALLOCATE', ('syscall',), [('append', 'a', 16384)],
     ['openrw {d}/a {k}', '!>append a 50',
      'fallocate {k} punch,keep 8192 16384', 'close {k}']),
    ('FALLOCATE', ('syscall',), [('append', 'a', 16384)],
     ['openrw {d}/a {k}', '!>append a 50',
      'fallocate {k} zero,keep 8192 16384', 'close {k}']),
    ('FALLOCATE', ('syscall',), [('append', 'a', 16384)],
     ['openrw {d}/a {k}', '!>truncate a 100',
      'fallocate {k} alloc 12288 8192', 'close {k}']),
    # COLLAPSE_RANGE and INSERT_RANGE move the data after the range and
    # change the size: run twice, they would move it twice.  A Linux
    # guest cannot send them; a crash-point build runs the guest's
    # KEEP_SIZE allocation as one of them while the state directory holds
    # "fallocate-shift" ("state" setup entries, for both runs).  Offsets
    # and lengths in file-system blocks (ext4 here)
    ('FALLOCATE', POINTS, [('append', 'a', 16384),
                           ('state', 'fallocate-shift', 'insert')],
     ['openrw {d}/a {k}', 'fallocate {k} keep 4096 4096', 'close {k}']),
    ('FALLOCATE', POINTS, [('append', 'a', 16384),
                           ('state', 'fallocate-shift', 'collapse')],
     ['openrw {d}/a {k}', 'fallocate {k} keep 4096 4096', 'close {k}']),
    # "?lock NAME OFF LEN": what another process on the host finds there
    # (free, rd, wr).  A lock is set on the lock owner's own open file
    # description, kept across the crash: setting it again is a no-op
    ('SETLK', IPOINTS, [('file', 'a', 100)],
     ['openrw {d}/a {k}', 'setlk {k} wr 0 50', '?lock a 0 50',
      '?lock a 50 50', 'close {k}', '?lock a 0 100']),
    # "!arm": the crash is armed there (a later request of the opcode);
    # downgrading the middle of a lock splits it, and again is the same
    ('SETLK', IPOINTS, [('file', 'a', 100)],
     ['openrw {d}/a {k}', 'setlk {k} wr 0 100', '!arm',
      'setlk {k} rd 25 50', '?lock a 0 25', '?lock a 25 50',
      '?lock a 75 25', 'close {k}']),
    # "hostlock NAME OFF LEN": another owner (this test) holds a write
    # lock there.  Unlocking again never drops another owner's lock,
    # and a conflict is answered the same
    ('SETLK', IPOINTS, [('file', 'a', 100), ('hostlock', 'a', 50, 50)],
     ['openrw {d}/a {k}', 'setlk {k} wr 0 50', '!arm',
      'setlk {k} un 0 100', '?lock a 0 50', '?lock a 50 50', 'close {k}']),
    ('SETLK', IPOINTS, [('file', 'a', 100), ('hostlock', 'a', 0, 50)],
     ['openrw {d}/a {k}', 'setlk {k} wr 0 100', 'close {k}'],
     ['ok', 'err=EAGAIN', 'ok']),
    ('GETLK', IPOINTS, [('file', 'a', 100), ('hostlock', 'a', 0, 50)],
     ['openrw {d}/a {k}', 'getlk {k} wr 0 100 wr', 'close {k}']),
    # virtiofsd refuses blocking locks: nothing to do twice
    ('SETLKW', ('before', 'reply'), [('file', 'a', 100)],
     ['openrw {d}/a {k}', 'setlkw {k} wr 0 100', 'close {k}'],
     ['ok', 'err=EOPNOTSUPP', 'ok']),
    # "copyrange KEY OFF KEY-OUT OFF-OUT LEN": the same bytes to the same
    # place, to another file and past the end of the same file
    ('COPY_FILE_RANGE', POINTS, [('append', 'a', 8192), ('file', 'b', 100)],
     ['openrw {d}/a {k}', 'openrw {d}/b {k}o',
      'copyrange {k} 1000 {k}o 50 5000', 'close {k}o', 'close {k}']),
    ('COPY_FILE_RANGE', POINTS, [('append', 'a', 8192)],
     ['openrw {d}/a {k}', 'write {k} 0 4096 7',
      'copyrange {k} 0 {k} 8192 4096', 'close {k}']),
    # "!>": someone on the host, after the request took effect (in the
    # clean run right after it): the source shrinks.  A replay copying
    # again would answer 0 with the first run's bytes in the destination;
    # it answers the recorded count.  (A crash between the copy and its
    # record, at "syscall", copies again: nothing tells what was copied.)
    ('COPY_FILE_RANGE', ('record', 'reply'),
     [('append', 'a', 8192), ('file', 'b')],
     ['openrw {d}/a {k}', 'openrw {d}/b {k}o', '!>truncate a 0',
      'copyrange {k} 0 {k}o 0 8192', 'close {k}o', 'close {k}']),
]

RESTORED = re.compile(r'^state: restored session from ', re.M)




# Locks "hostlock" holds until the case ends: (fd)
HELD = []


def ofd_lock(fd, cmd, ltype, start, length):
    """fcntl(2) with an OFD lock command; returns the struct's l_type."""
    fl = struct.pack('hh4xqqi4x', ltype, os.SEEK_SET, start, length, 0)
    return struct.unpack('hh4xqqi4x', fcntl.fcntl(fd, cmd, fl))[0]


def probe_lock(path, start, length):
    """What another owner finds at the range: free, rd or wr."""
    fd = os.open(path, os.O_RDWR)
    try:
        t = ofd_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start, length)
    finally:
        os.close(fd)
    return {fcntl.F_UNLCK: 'free', fcntl.F_RDLCK: 'rd',
            fcntl.F_WRLCK: 'wr'}[t]


def make(root, spec):
    kind, name = spec[0], spec[1]
    path = os.path.join(root, name)
    if kind == 'dir':
        os.mkdir(path)
        return
    if kind == 'rename':
        os.rename(path, os.path.join(root, spec[2]))
        return
    if kind == 'hostlock':
        fd = os.open(path, os.O_RDWR)
        HELD.append(fd)
        ofd_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, int(spec[2]),
                 int(spec[3]))
        return
    if kind == 'truncate':
        os.truncate(path, int(spec[2]))
        return
    if kind == 'append':
        with open(path, 'ab') as f:
            f.write(b'h' * int(spec[2]))
        return
    with open(path, 'wb') as f:
        f.write(b'\0' * (spec[2] if len(spec) > 2 else 0))
    if len(spec) > 3:
        os.setxattr(path, 'user.t', spec[3].encode())


def snapshot(root):
    """What the host tree holds under root, comparable between cases."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = [os.path.relpath(path, root), stat.S_IFMT(st.st_mode),
                     oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid,
                     st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                entry.append(st.st_size)
                with open(path, 'rb') as f:
                    entry.append(hashlib.sha256(f.read()).hexdigest()[:16])
            if stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            else:
                try:
                    entry.append(os.getxattr(path, 'user.t'))
                except OSError:
                    entry.append(None)
            out.append(tuple(entry))
    return out


def write_spec(arm):
    """Arm the crash: arm is (line, path of "crash-at")."""
    fd = os.open(arm[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, arm[0].encode())
    os.close(fd)


POISON = re.compile(r'^request (\S+) unique (\d+) killed the daemon (\d+) '
                    r'times: answering EIO, not running it again$', re.M)


class CrashPointsTest(unittest.TestCase):
    """One guest and one holder (virtiofsd -o reconnect) for the matrix
    and the poison
    request (the matrix runs first: test names sort)."""

    @classmethod
    def setUpClass(cls):
        cls.h = vmharness.Harness('crash-points')
        try:
            cls.state = os.path.join(cls.h.dir, 'state')
            os.mkdir(cls.state, 0o700)
            env = dict(os.environ, VIRTIOFSD_CRASH_POINTS='1')
            cls.sup = cls.h.start_supervised_virtiofsd(
                cls.state, options=('cache=auto', 'xattr', 'posix_lock'),
                env=env)
            cls.hold = cls.h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.h.close()

    def test_matrix(self):
        h, sup, hold, state = self.h, self.sup, self.hold, self.state
        n = 0
        failures = []
        t0 = time.monotonic()
        # CRASH_CASES=OPCODE,...: cases of those opcodes, or whose
        # commands contain the string ("openf", "append"; separated by
        # ";" if one holds a comma: "rdwr,creat ;OPEN");
        # CRASH_POINTS=point,...: only those points
        only = os.environ.get('CRASH_CASES')
        only_points = os.environ.get('CRASH_POINTS')
        for case in CASES:
            opcode, points, setup, cmds = case[:4]
            expect = case[4] if len(case) > 4 else None
            if only and not any(o and (o == opcode or o in ' '.join(cmds))
                                for o in only.split(';' if ';' in only
                                                    else ',')):
                continue
            for point in points:
                if only_points and point not in only_points.split(','):
                    continue
                n += 1
                msg = self.run_case(h, sup, hold, state, n, opcode,
                                    point, setup, cmds, expect)
                if msg:
                    failures.append('%s:%s %s: %s' % (opcode, point,
                                                      cmds[0], msg))
                    print('functional       crash point ' +
                          failures[-1], flush=True)
        self.assertGreater(n, 0, 'CRASH_CASES=%s matches no case' % only)
        print('functional       crash points: %d cases in %.0f s, %d '
              'failed' % (n, time.monotonic() - t0, len(failures)),
              flush=True)
        self.assertEqual(failures, [], '\n' + h.log_tail(60))

    def poison_mkdir(self, d, spec_line):
        """mkdir d/p in a fresh directory d with "crash-at" holding
        spec_line while it runs; returns its HoldLine and the
        holder's log since the directory was there."""
        h, sup, hold = self.h, self.sup, self.hold
        os.mkdir(os.path.join(h.shared, d))
        self.assertTrue(hold.cmd('stat %s' % d, timeout=60).ok)
        since = len(sup.output())
        spec = os.path.join(self.state, 'crash-at')
        with open(spec, 'w') as f:
            f.write(spec_line + '\n')
        try:
            line = hold.cmd('mkdir %s/p' % d, timeout=90)
        finally:
            os.unlink(spec)
        return line, since, sup.output()[since:]

    def test_poison_request(self):
        """A request that kills every daemon that runs it: after 3 deaths
        it is answered EIO (logged once, with its opcode), and the share
        goes on: the requests after it succeed, their data checked."""
        h, sup, hold = self.h, self.sup, self.hold
        d = 'poison'
        line, since, out = self.poison_mkdir(d, 'always MKDIR:before')
        deaths = out.count('crash point MKDIR:before: dying')
        poison = POISON.findall(out)
        self.assertEqual(line.result, 'err=EIO',
                         'the guest got %s\n%s' % (line, h.log_tail(40)))
        self.assertEqual(deaths, 3, out[-3000:])
        self.assertEqual(len(poison), 1, out[-3000:])
        self.assertEqual((poison[0][0], poison[0][2]), ('MKDIR', '3'))
        # Exactly one failed request, and the share goes on
        cmds = ['mkdir %s/q' % d, 'create %s/f pz' % d,
                'write pz 0 65536 9', 'fsync pz', 'close pz', 'dropcaches',
                'openrw %s/f pz' % d, 'check pz 0 65536 9', 'close pz',
                'openf %s/g pg wronly,creat,trunc' % d, 'write pg 0 100 4',
                'close pg', 'statdir %s' % d]
        for c in cmds:
            r = hold.cmd(c, timeout=60)
            self.assertTrue(r.ok, '%s: %s\n%s' % (c, r, h.log_tail(40)))
        self.assertEqual(sorted(os.listdir(os.path.join(h.shared, d))),
                         ['f', 'g', 'q'])
        self.assertEqual(os.path.getsize(os.path.join(h.shared, d, 'f')),
                         65536)
        # Still one line, no further death
        out = sup.output()[since:]
        self.assertEqual(len(POISON.findall(out)), 1)
        self.assertEqual(out.count('crash point '), 3)

    def test_poison_abort(self):
        """The same with a real crash: abort(3), as glibc's fortify checks
        die ("invalid openat64 call"), is caught as SIGABRT and counted;
        after 3 the request is answered EIO and the share goes on."""
        h, hold = self.h, self.hold
        d = 'poison-abort'
        line, _, out = self.poison_mkdir(d, 'abort MKDIR:before')
        self.assertEqual(line.result, 'err=EIO',
                         'the guest got %s\n%s' % (line, out[-3000:]))
        self.assertEqual(out.count('crash point MKDIR:before: aborting'), 3,
                         out[-3000:])
        self.assertEqual([(p[0], p[2]) for p in POISON.findall(out)],
                         [('MKDIR', '3')], out[-3000:])
        for c in ('mkdir %s/q' % d, 'statdir %s' % d):
            r = hold.cmd(c, timeout=60)
            self.assertTrue(r.ok, '%s: %s\n%s' % (c, r, h.log_tail(40)))
        self.assertEqual(os.listdir(os.path.join(h.shared, d)), ['q'])

    def test_sigkill_replay(self):
        """SIGKILLs from outside are no crash of the daemon: a request
        whose handler runs each time the daemon is killed (replayed
        first after each restart, as a watchdog or a torture run would
        catch it) is not answered EIO, however often; once the daemon may
        finish it, it succeeds, run once."""
        h, sup, hold = self.h, self.sup, self.hold
        d = 'sigkill'
        kills = 5
        os.mkdir(os.path.join(h.shared, d))
        self.assertTrue(hold.cmd('stat %s' % d, timeout=60).ok)
        since = len(sup.output())
        stalled = 'stall point MKDIR:before: waiting'
        spec = os.path.join(self.state, 'crash-at')
        with open(spec, 'w') as f:
            f.write('stall MKDIR:before\n')
        try:
            seq = hold.send('mkdir %s/k' % d)
            for i in range(kills + 1):
                # The request's handler runs (the first time or replayed),
                # or the daemon answered it EIO instead
                vmharness.wait_until(
                    lambda: (sup.output()[since:].count(stalled) > i or
                             POISON.search(sup.output()[since:])),
                    'the mkdir running in daemon %d' % (i + 1), 30)
                self.assertEqual(POISON.findall(sup.output()[since:]), [],
                                 'after %d SIGKILLs' % i)
                if i == kills:
                    break
                tree = vmharness.process_tree(h.supervised_child_pid())
                for pid in reversed(tree):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        finally:
            os.unlink(spec)
        line = hold.wait(seq, timeout=60)
        out = sup.output()[since:]
        self.assertEqual(line.result, 'ok', 'the guest got %s\n%s'
                         % (line, out[-3000:]))
        self.assertEqual(POISON.findall(out), [])
        self.assertEqual(out.count(stalled), kills + 1)
        self.assertEqual(sorted(os.listdir(os.path.join(h.shared, d))),
                         ['k'])
        self.assertTrue(hold.cmd('statdir %s' % d, timeout=60).ok)

    def test_tmp_not_adopted(self):
        """A create's temporary name holds, at its replay, something else
        than what it made (someone replaced it while the daemon was dead):
        the replay must not give it the guest's name.  The request is
        answered EIO (one line), what is there is left alone, and the
        share goes on."""
        h, sup, hold = self.h, self.sup, self.hold
        d = 'tmp-planted'
        root = os.path.join(h.shared, d)
        os.mkdir(root)
        self.assertTrue(hold.cmd('stat %s' % d, timeout=60).ok)
        since = len(sup.output())
        planted = []

        def replace():
            tmps = [n for n in os.listdir(root)
                    if n.startswith('.virtiofsd-tmp-')]
            self.assertEqual(len(tmps), 1, os.listdir(root))
            os.rmdir(os.path.join(root, tmps[0]))
            with open(os.path.join(root, tmps[0]), 'w') as f:
                f.write('not a directory')
            planted.append(tmps[0])

        with open(os.path.join(self.state, 'crash-at'), 'w') as f:
            f.write('MKDIR:tmp\n')
        seq = self.send_while_dead('mkdir %s/x' % d, replace)
        line = hold.wait(seq, timeout=60)
        out = sup.output()[since:]
        self.assertEqual(line.result, 'err=EIO', '%s\n%s'
                         % (line, out[-3000:]))
        self.assertEqual(sorted(os.listdir(root)), planted)
        self.assertEqual(len(re.findall(r'^replay of MKDIR unique \d+: '
                                        r'\.virtiofsd-tmp-\S+ is not what '
                                        r'it made: answering EIO$', out,
                                        re.M)), 1, out[-3000:])
        r = hold.cmd('mkdir %s/y' % d, timeout=60)
        self.assertTrue(r.ok, '%s\n%s' % (r, h.log_tail(40)))
        self.assertTrue(os.path.isdir(os.path.join(root, 'y')))

    def send_while_dead(self, command, meanwhile, resume=True):
        """Send command to the guest with the holder stopped, and once the
        crash point armed for it fired and the worker died, run
        meanwhile() (someone else, while the daemon is dead); then let
        the holder start the next worker (unless resume is false: the
        caller sends SIGCONT).  Returns the command's sequence number."""
        h, sup, hold = self.h, self.sup, self.hold
        died = sup.output().count('crash point ')
        worker = h.supervised_child_pid()
        os.kill(sup.pid, signal.SIGSTOP)
        try:
            vmharness.wait_until(lambda: proc_state(sup.pid) == 'T',
                                 'the holder stopped', 10, 0.005)
            seq = hold.send(command)
            vmharness.wait_until(
                lambda: (sup.output().count('crash point ') > died and
                         proc_state(worker) in (None, 'Z')),
                'the worker dying at its crash point', 15, 0.005)
            meanwhile()
        except BaseException:
            os.kill(sup.pid, signal.SIGCONT)
            raise
        if resume:
            os.kill(sup.pid, signal.SIGCONT)
        return seq

    def run_guest(self, h, sup, hold, d, key, cmds, crash, arm=None):
        out = []
        later = after = None
        for c in cmds:
            if c == '!arm':
                if crash:
                    write_spec(arm)
                continue
            if c.startswith('?lock '):
                name, start, length = c.split()[1:]
                out.append(('?lock', probe_lock(os.path.join(h.shared, d,
                                                             name),
                                                int(start), int(length))))
                continue
            if c.startswith(('!!', '!>')) and crash:
                later = c[2:].split()
                continue
            if c.startswith('!>'):
                after = c[2:].split()
                continue
            if c.startswith('!'):
                make(os.path.join(h.shared, d), c.lstrip('!>').split())
                continue
            if later:
                spec = later
                seq = self.send_while_dead(
                    c.format(d=d, k=key),
                    lambda: make(os.path.join(h.shared, d), spec))
                later = None
            else:
                seq = hold.send(c.format(d=d, k=key))
            line = hold.wait(seq, timeout=60)
            out.append((line.op, line.result))
            if after:
                make(os.path.join(h.shared, d), after)
                after = None
        return out

    def run_case(self, h, sup, hold, state, n, opcode, point, setup, cmds,
                 expect):
        dirs = {}
        # ("state", NAME, TEXT): a file of the state directory for the
        # case (a test switch of the crash-point build)
        knobs = [spec for spec in setup if spec[0] == 'state']
        for kind in ('clean', 'crash'):
            d = 'c%d-%s' % (n, kind)
            os.mkdir(os.path.join(h.shared, d))
            for spec in setup:
                if spec[0] != 'state':
                    make(os.path.join(h.shared, d), spec)
            dirs[kind] = d
        for _, name, text in knobs:
            with open(os.path.join(state, name), 'w') as f:
                f.write(text + '\n')
        try:
            return self.run_case_dirs(h, sup, hold, state, n, opcode, point,
                                      cmds, expect, dirs)
        finally:
            for _, name, _ in knobs:
                os.unlink(os.path.join(state, name))
            while HELD:
                os.close(HELD.pop())

    def run_case_dirs(self, h, sup, hold, state, n, opcode, point, cmds,
                      expect, dirs):
        clean = self.run_guest(h, sup, hold, dirs['clean'], 'k%dc' % n, cmds,
                               False)
        since = len(sup.output())
        died = sup.output().count('crash point ')
        restored = len(RESTORED.findall(sup.output()))
        spec = os.path.join(state, 'crash-at')
        # The guest kernel sends one forget alone, more in a batch
        alt = ',FORGET:%s' % point if opcode == 'BATCH_FORGET' else ''
        arm = ('%s:%s%s\n' % (opcode, point, alt), spec)
        if '!arm' not in cmds:
            write_spec(arm)
        crash = self.run_guest(h, sup, hold, dirs['crash'], 'k%dx' % n, cmds,
                               True, arm)

        deadline = time.monotonic() + 15
        while (sup.output().count('crash point ') == died or
               len(RESTORED.findall(sup.output())) == restored):
            if time.monotonic() > deadline:
                if os.path.exists(spec):
                    os.unlink(spec)
                return 'the daemon did not die at the point and restart'
            time.sleep(0.02)
        # This case's line: several cases share an opcode and point
        if not re.search(r'crash point (BATCH_)?%s:%s'
                         % (opcode.replace('BATCH_', ''), point),
                         sup.output()[since:]):
            return 'died elsewhere'
        # The guest goes on after the restart
        probe = hold.cmd('stat ' + dirs['crash'], timeout=60)
        if not probe.ok:
            return 'guest after restart: %s' % probe
        if crash != clean:
            return 'guest saw %s, a clean run %s' % (crash, clean)
        results = [r for op, r in clean if op != '?lock']
        if results != (expect or ['ok'] * len(results)):
            return 'the clean run gave %s, expected %s' % (clean, expect)
        sc = snapshot(os.path.join(h.shared, dirs['clean']))
        sx = snapshot(os.path.join(h.shared, dirs['crash']))
        if sc != sx:
            return 'host tree %s, a clean run %s' % (sx, sc)
        return None


class TmpLeftoverTest(unittest.TestCase):
    """A create killed with its object under the temporary name, whose
    guest never comes back (QEMU killed, a new one started: the request
    is never replayed): the new session must not find the leftover
    (removed when the old session ends, one line), and the name can be
    made."""

    def test_leftover_removed(self):
        with vmharness.Harness('tmp-leftover') as h:
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            env = dict(os.environ, VIRTIOFSD_CRASH_POINTS='1')
            sup = h.start_supervised_virtiofsd(state, env=env)
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            root = os.path.join(h.shared, 'd')
            os.mkdir(root)
            self.assertTrue(hold.cmd('stat d', timeout=60).ok)
            died = sup.output().count('crash point ')
            worker = h.supervised_child_pid()
            with open(os.path.join(state, 'crash-at'), 'w') as f:
                f.write('MKDIR:tmp\n')
            os.kill(sup.pid, signal.SIGSTOP)
            try:
                vmharness.wait_until(lambda: proc_state(sup.pid) == 'T',
                                     'the holder stopped', 10, 0.005)
                hold.send('mkdir d/x')
                vmharness.wait_until(
                    lambda: (sup.output().count('crash point ') > died and
                             proc_state(worker) in (None, 'Z')),
                    'the worker dying at MKDIR:tmp', 30, 0.005)
                left = [n for n in os.listdir(root)
                        if n.startswith('.virtiofsd-tmp-')]
                self.assertEqual(len(left), 1, os.listdir(root))
                hold.close()
                h.qemu.kill()
            finally:
                os.kill(sup.pid, signal.SIGCONT)
            since = len(sup.output())
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            self.assertTrue(hold.cmd('stat d', timeout=60).ok)
            self.assertEqual(os.listdir(root), [])
            out = sup.output()[since:]
            self.assertEqual(out.count('state: removed 1 temporary name(s) '
                                       "the session's unfinished creates "
                                       'left'), 1, out[-3000:])
            r = hold.cmd('mkdir d/x', timeout=60)
            self.assertTrue(r.ok, '%s\n%s' % (r, h.log_tail(40)))
            self.assertEqual(os.listdir(root), ['x'])


if __name__ == '__main__':
    unittest.main()
