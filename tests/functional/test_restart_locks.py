"""POSIX locks across a crash: with -o posix_lock virtiofsd holds a guest's
fcntl() lock as an OFD lock on an fd of its own; with -o reconnect that fd
is in the fd table the holder shares with its worker, so the lock
outlives the worker and the restarted worker still releases it when the
guest unlocks."""

import errno
import fcntl
import os
import re
import signal
import unittest

import vmharness
from vmharness import host_can_lock

RESTORED = re.compile(r'^state: restored session from \S+: \d+ inodes, '
                      r'(\d+) files, \d+ dirs, (\d+) POSIX lock fds '
                      r'\((\d+) stale\) in \d+ us$', re.M)



class RestartLocksTest(unittest.TestCase):

    def test_posix_lock_survives(self):
        with vmharness.Harness('restart-locks') as h:
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            # cache=none: the check after the restart reads through the
            # restored daemon, not the guest's page cache
            sup = h.start_supervised_virtiofsd(
                state, options=('cache=none', 'posix_lock'))
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            path = os.path.join(h.shared, 'a')
            for c in ('open a 1', 'write 1 0 4096 1', 'lock 1'):
                line = hold.cmd(c)
                self.assertTrue(line.ok, '%s: %s\n%s' % (c, line,
                                                         h.log_tail()))
            self.assertFalse(host_can_lock(path), 'the guest lock is not '
                             'held on the host')

            os.kill(h.supervised_child_pid(), signal.SIGKILL)
            m = vmharness.wait_output(sup, RESTORED, 30, 'the restore')
            # The open file and its lock fd, both found in the table
            self.assertEqual(tuple(map(int, m.groups())), (1, 1, 0),
                             m.group(0))
            self.assertFalse(host_can_lock(path), 'the lock was lost in the '
                             'restart')
            for c in ('check 1 0 4096 1', 'unlock 1', 'lock 1', 'unlock 1'):
                line = hold.cmd(c)
                self.assertTrue(line.ok, '%s: %s\n%s' % (c, line,
                                                         h.log_tail()))
            self.assertTrue(host_can_lock(path), 'the restarted daemon did '
                            'not release the lock')
            line = hold.cmd('close 1')
            self.assertTrue(line.ok, line)
            with open(path, 'rb') as f:
                self.assertEqual(f.read(), vmharness.hold_pattern(0, 4096, 1))


if __name__ == '__main__':
    unittest.main()
