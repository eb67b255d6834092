"""Crash recovery when a record does not match its fd: the entry is stale
(ESTALE for the guest), and never another file.

With -o reconnect the holder keeps the dead worker's whole fd table, so
after a plain restart every record finds its own fd and nothing is stale
(test_restart_idle, test_restart_mntns).  The records themselves are not
trusted: a compromised worker may have written anything in them before
it died.  Here the records are forged while no worker runs (the holder
stopped, its worker SIGKILLed, the "inodes" record file edited, the
holder continued), each inode record in one way:

  v1  its dev/ino name another inode of the share (the file b)
  v3  its dev/ino name a file of another device (/proc)
  d2  its dev/ino and type name the host's root directory (the guest's
      cwd, with an open directory handle on it)
  v4  its fd is b's fd: the number of another file of the share
  v5  its fd is a number that is not open
  v6  its fd is 1, the holder's stdout

The restarted worker finds each one stale: the guest gets ESTALE for
those inodes and the files opened on them (EBADF for the directory
handle), never the data, the
attributes or the entries of the forged target; what it looks up again
by name is the real file; and the other inodes (a, b) serve as before.
"""

import os
import re
import signal
import stat
import struct
import unittest

import vmharness
from vmharness import proc_state

RESTORED = re.compile(
    r'^state: restored session from \S+: (\d+) inodes, (\d+) files, '
    r'(\d+) dirs, (\d+) POSIX lock fds \((\d+) stale\) in \d+ us$',
    re.M)

# tools/virtiofsd/lo_map.c: LoMapFileHeader, then records of rec_size
# bytes, each a LoMapRecord header (u32 state, u32 reserved) and the
# payload; passthrough_ll.c: the payload of "inodes" is LoInodeRecord
MAP_HEADER = struct.Struct('<8sIIIIQ32s')
MAP_MAGIC = b'VFSDMAP1'
REC_USED = 0x44455355
REC_STATE = struct.Struct('<II')
INODE_REC = struct.Struct('<QQQQIi')     # dev ino mnt_id nlookup type fd
PAGE = 4096



def read_inode_records(path):
    """{(dev, ino): (offset of the payload, (dev, ino, mnt_id, nlookup,
    filetype, fd))} of the used records of an "inodes" file."""
    with open(path, 'rb') as f:
        data = f.read()
    magic, version, kind, rec_size, _, nelems, _ = \
        MAP_HEADER.unpack_from(data, 0)
    assert magic == MAP_MAGIC, magic
    res = {}
    for key in range(nelems):
        off = MAP_HEADER.size + key * rec_size
        state, _ = REC_STATE.unpack_from(data, off)
        if state == REC_USED:
            rec = INODE_REC.unpack_from(data, off + REC_STATE.size)
            res[rec[:2]] = (off + REC_STATE.size, rec)
    return res


class RestartLostFdsTest(unittest.TestCase):

    def cmd_ok(self, h, hold, c):
        line = hold.cmd(c)
        self.assertTrue(line.ok, '%s: %s\n%s' % (c, line, h.log_tail()))
        return line

    def test_forged_records_are_stale(self):
        with vmharness.Harness('restart-forged') as h:
            share = h.shared
            d2 = os.path.join(share, 'd2')
            os.mkdir(d2)
            with open(os.path.join(d2, 'x'), 'w') as f:
                f.write('in d2\n')
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            # cache=none: every read after the restart reaches the
            # restored daemon, never the guest's page cache
            sup = h.start_supervised_virtiofsd(state, options=('cache=none',))
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            # b (the forged target) is 8 KiB, the others 4 KiB: its
            # attributes would show
            seeds = {'a': 1, 'b': 2, 'v1': 11, 'v3': 13, 'v4': 14,
                     'v5': 15, 'v6': 16}
            sizes = {n: 2 * PAGE if n == 'b' else PAGE for n in seeds}
            for n, s in seeds.items():
                self.cmd_ok(h, hold, 'open %s k%s' % (n, n))
                self.cmd_ok(h, hold, 'write k%s 0 %d %d' % (n, sizes[n], s))
            self.cmd_ok(h, hold, 'opendir d2 kd2')
            self.cmd_ok(h, hold, 'chdir d2')
            self.cmd_ok(h, hold, 'stat ./x')
            before = {n: open(os.path.join(share, n), 'rb').read()
                      for n in seeds}
            for n, s in seeds.items():
                self.assertEqual(before[n],
                                 vmharness.hold_pattern(0, sizes[n], s), n)

            # No worker runs while the records are edited: the holder is
            # stopped (it cannot start another), its worker killed
            worker = h.supervised_child_pid()
            since = len(sup.output())
            os.kill(sup.pid, signal.SIGSTOP)
            try:
                vmharness.wait_until(lambda: proc_state(sup.pid) == 'T',
                                     'the holder stopped', 10, 0.01)
                state_fd = self.fd_of(worker, state)
                os.kill(worker, signal.SIGKILL)
                vmharness.wait_until(
                    lambda: proc_state(worker) in (None, 'Z'),
                    'the worker dead', 10, 0.01)
                forged = self.forge(os.path.join(state, 'inodes'), share, d2,
                                    state_fd)
            finally:
                os.kill(sup.pid, signal.SIGCONT)

            m = vmharness.wait_output(sup, RESTORED, 30, 'the restore')
            log = sup.output()[since:]
            self.assertIn('holder: worker %d ended (signal 9) after '
                          % worker, log)
            inodes, files, dirs, plocks, stale = map(int, m.groups())
            # Stale: the 6 forged inodes, the 5 files and the directory
            # handle opened on them; nothing else
            self.assertEqual((files, dirs, plocks), (7, 1, 0), m.group(0))
            self.assertGreaterEqual(inodes, 8, m.group(0))
            self.assertEqual(stale, len(forged) + 5 + 1, m.group(0))

            # The untouched inodes serve as before
            for n in ('a', 'b'):
                self.cmd_ok(h, hold, 'check k%s 0 %d %d'
                            % (n, sizes[n], seeds[n]))
            self.cmd_ok(h, hold, 'write ka %d %d 3' % (PAGE, PAGE))
            self.cmd_ok(h, hold, 'check ka %d %d 3' % (PAGE, PAGE))

            # The forged ones: ESTALE, never the forged target
            for n in ('v1', 'v3', 'v4', 'v5', 'v6'):
                for c in ('check k%s 0 %d %d' % (n, sizes[n], seeds[n]),
                          'check k%s 0 %d %d' % (n, sizes['b'], seeds['b']),
                          'write k%s 0 %d 99' % (n, PAGE)):
                    line = hold.cmd(c)
                    self.assertEqual(line.result, 'err=ESTALE',
                                     '%s (%s): %s' % (c, forged.get(n), line))
            # d2 as the host's root: its handle and the cwd on it are
            # stale; neither lists nor looks up anything of the host's /
            # (the directory handle answers EBADF, the daemon's errno for
            # a handle it does not have; the 2 entries are what the guest's
            # libc buffered before the restart: ".." and "x" of d2)
            line = hold.cmd('readdir kd2')
            self.assertIn(line.result, ('err=ESTALE', 'err=EBADF'), line)
            self.assertLessEqual(int(line.fields['count']), 2, line)
            for c in ('stat ./etc', 'stat ./x', 'statdir ./'):
                line = hold.cmd(c)
                self.assertEqual(line.result, 'err=ESTALE',
                                 '%s: %s' % (c, line))

            # Looked up again by name: the real files, not the targets
            for n in ('v1', 'v3', 'v4', 'v5', 'v6'):
                line = self.cmd_ok(h, hold, 'stat %s' % n)
                host = os.stat(os.path.join(share, n))
                self.assertEqual((int(line.fields['size']),
                                  int(line.fields['ino'])),
                                 (host.st_size, host.st_ino), line)
                self.cmd_ok(h, hold, 'open %s r%s' % (n, n))
                self.cmd_ok(h, hold, 'check r%s 0 %d %d'
                            % (n, sizes[n], seeds[n]))
            self.cmd_ok(h, hold, 'chdir d2')
            line = self.cmd_ok(h, hold, 'stat ./x')
            self.assertEqual(int(line.fields['size']), 6, line)
            line = self.cmd_ok(h, hold, 'statdir ./')
            self.assertEqual(line.fields['count'], '3', line)  # . .. x
            line = hold.cmd('stat ./etc')
            self.assertEqual(line.result, 'err=ENOENT', line)

            # Nothing reached another file through a forged record
            after = {n: open(os.path.join(share, n), 'rb').read()
                     for n in seeds}
            self.assertEqual(after['b'], before['b'])
            for n in ('v1', 'v3', 'v4', 'v5', 'v6'):
                self.assertEqual(after[n], before[n], n)
            self.assertEqual(after['a'], before['a'] +
                             vmharness.hold_pattern(PAGE, PAGE, 3))
            self.assertEqual(sorted(os.listdir(d2)), ['x'])
            self.assertTrue(h.qemu.alive())
            print('functional       forged records: %s; "%s"'
                  % (', '.join('%s: %s' % kv for kv in sorted(forged.items())),
                     m.group(0)), flush=True)

    def fd_of(self, pid, path):
        """(fd, mount id) of pid's fd on path: the worker's state dir"""
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                if os.readlink('/proc/%d/fd/%s' % (pid, fd)) != path:
                    continue
                with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                    mnt = re.search(r'^mnt_id:\s*(\d+)$', f.read(), re.M)
                return int(fd), int(mnt.group(1))
            except OSError:
                continue
        self.fail('worker %d has no fd on %s' % (pid, path))

    def forge(self, path, share, d2, state_fd):
        """Edit the records of v1, v3, v4, v5, v6 and d2 in the inodes
        file at path; returns {name: what its record names now}.  d2's
        names the dead worker's own state directory fd, with that fd's
        exact device, inode, mount id and type: only the restore's own
        checks (the share's mount, not a state file) can refuse it."""
        recs = read_inode_records(path)

        def rec_of(p):
            st = os.lstat(p)
            self.assertIn((st.st_dev, st.st_ino), recs,
                          'no record for %s' % p)
            return recs[(st.st_dev, st.st_ino)]

        def name(n):
            return os.path.join(share, n)

        b_fd = rec_of(name('b'))[1][5]
        state_st = os.stat(os.path.dirname(path))
        other = os.stat('/proc/self/status')
        self.assertNotEqual(other.st_dev, os.stat(share).st_dev)
        forged = {}
        edits = []
        for n, what in (('v1', 'b'), ('v3', 'other device'),
                        ('d2', 'state dir fd'), ('v4', 'fd of b'),
                        ('v5', 'fd not open'), ('v6', 'fd 1')):
            off, (dev, ino, mnt_id, nlookup, ftype, fd) = \
                rec_of(d2 if n == 'd2' else name(n))
            if what == 'b':
                bst = os.lstat(name('b'))
                dev, ino = bst.st_dev, bst.st_ino
            elif what == 'other device':
                dev, ino = other.st_dev, other.st_ino
            elif what == 'state dir fd':
                dev, ino = state_st.st_dev, state_st.st_ino
                fd, mnt_id = state_fd
                ftype = stat.S_IFDIR
            elif what == 'fd of b':
                self.assertNotEqual(fd, b_fd)
                fd = b_fd
            elif what == 'fd not open':
                fd = 4000
            else:
                fd = 1
            edits.append((off, INODE_REC.pack(dev, ino, mnt_id, nlookup,
                                              ftype, fd)))
            forged[n] = '%s (dev %d ino %d fd %d)' % (what, dev, ino, fd)
        with open(path, 'r+b') as f:
            for off, data in edits:
                f.seek(off)
                f.write(data)
        return forged


if __name__ == '__main__':
    unittest.main()
