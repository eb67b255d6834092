"""Crash recovery when the fd keeper lost fds: inodes come back from the
file handles recorded at lookup, checked to be the same inode; what
cannot come back (an unlinked file whose fd is gone) answers ESTALE and
never reaches another file.

The supervisor is started with --fd-limit=4, so it keeps only the first
few fds virtiofsd stores and closes the rest.
"""

import os
import re
import signal
import unittest

import vmharness

RESTORED = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs \((\d+) fds from the store, '
                      r'(\d+) reopened by handle, (\d+) stale\)', re.M)


class RestartLostFdsTest(unittest.TestCase):

    def test_handles_and_estale(self):
        with vmharness.Harness('restart-lost-fds') as h:
            sub = os.path.join(h.shared, 'sub')
            os.mkdir(sub)
            for i in range(10):
                with open(os.path.join(sub, 'f%d' % i), 'w') as f:
                    f.write('file %d\n' % i)
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            # cache=none: every read after the restart reaches the
            # restored daemon, never the guest's page cache
            sup = h.start_supervised_virtiofsd(state, options=('cache=none',),
                                               sup_opts=('--fd-limit=4',))
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            # The first four fds stored (the sandbox's mount namespace,
            # a's inode, a's open file, sub's inode) are kept, each held
            # by the guest until the end; the rest (sub's directory
            # handle, f1-f3, the unlinked file and its open file) are
            # lost.  (With cache=none the guest forgets f1-f3 soon: only
            # what it holds may take the first places.)
            before = ['open a 1', 'write 1 0 65536 7', 'opendir sub 3',
                      'stat sub/f1', 'stat sub/f2', 'stat sub/f3',
                      'open gone 2', 'write 2 0 4096 9', 'unlink gone']
            for c in before:
                line = hold.cmd(c)
                self.assertTrue(line.ok, '%s: %s\n%s' % (c, line,
                                                         h.log_tail()))
            # The unlinked file's inode must not be reachable by handle
            # and no other file may take its place: put a new file where
            # it was, with the same name
            with open(os.path.join(h.shared, 'gone'), 'w') as f:
                f.write('a different file\n')

            os.kill(h.supervised_child_pid(), signal.SIGKILL)
            m = vmharness.wait_output(sup, RESTORED, 30, 'the restore')
            inodes, files, dirs, kept, reopened, stale = map(int, m.groups())
            self.assertGreater(reopened, 0, m.group(0))
            self.assertEqual(kept, 3, m.group(0))
            self.assertEqual(kept + reopened + stale, inodes + files + dirs,
                             m.group(0))
            self.assertGreater(stale, 0, m.group(0))

            # Files whose inode came back by handle work as before
            for c in ('check 1 0 65536 7', 'write 1 65536 4096 3',
                      'check 1 65536 4096 3', 'readdir 3', 'stat sub/f1',
                      'stat sub/f9', 'getxattr a user.none x'):
                line = hold.cmd(c)
                if c.startswith('getxattr'):
                    # not set: ENODATA or EOPNOTSUPP, never ESTALE
                    self.assertNotEqual(line.result, 'err=ESTALE', line)
                    continue
                self.assertTrue(line.ok, '%s: %s\n%s' % (c, line,
                                                         h.log_tail()))
            # The unlinked file is gone for good: ESTALE, not the new file
            for c in ('check 2 0 4096 9', 'write 2 4096 10 1'):
                line = hold.cmd(c)
                self.assertEqual(line.result, 'err=ESTALE',
                                 '%s: %s' % (c, line))
            with open(os.path.join(h.shared, 'gone')) as f:
                self.assertEqual(f.read(), 'a different file\n')
            line = hold.cmd('stat gone')
            self.assertTrue(line.ok, line)
            with open(os.path.join(h.shared, 'a'), 'rb') as f:
                self.assertEqual(f.read(),
                                 vmharness.hold_pattern(0, 65536, 7) +
                                 vmharness.hold_pattern(65536, 4096, 3))


if __name__ == '__main__':
    unittest.main()
