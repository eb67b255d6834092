"""The mount namespace of the sandbox across restarts.

With -o reconnect the process started is the holder: it runs the daemon
as a worker sharing its fd table (CLONE_FILES), cloned into new pid,
mount and net namespaces with the namespace sandbox.  A restarted worker
joins the mount namespace the first one built, which the holder keeps
as an fd, so the kept fds are on its own mounts and serve as they are:
every record finds its fd (nothing stale), and link() and rename()
between inodes from before and after the restart work (on two mounts
they fail with EXDEV).  With the chroot sandbox the workers share the
holder's mount namespace: the same holds there.

(The sandbox of a holder's workers cannot change across restarts: every
worker is a clone of the same holder, so a daemon whose kept fds are on
another namespace's mounts no longer happens, and nothing moves.)
"""

import os
import re
import signal
import unittest

import vmharness

RESTORED = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs, (\d+) POSIX lock fds '
                      r'\((\d+) stale\) in \d+ us$', re.M)
# The worker's lines when it could not join the kept mount namespace
NOT_JOINED = re.compile(r'^state: (cannot join the kept mount namespace|'
                        r'the kept mount namespace is not )', re.M)


def sandbox_pid(worker):
    """The sandboxed process: the worker itself (the holder cloned it into
    its namespaces), or a child if it ever forks one."""
    kids = vmharness.children(worker)
    return kids[0] if kids else worker


def mnt_ns(pid):
    return os.readlink('/proc/%d/ns/mnt' % pid)


def pid_ns(pid):
    return os.readlink('/proc/%d/ns/pid' % pid)


def mount_points(pid):
    """What the sandboxed process sees mounted: (id, mount point)."""
    with open('/proc/%d/mountinfo' % pid) as f:
        return [tuple(line.split()[i] for i in (0, 4)) for line in f]


# cache=none: the checks after a restart read through the restored
# daemon, never the guest's page cache
CACHE = ('cache=none',)


class RestartMntNsTest(unittest.TestCase):

    def run_ok(self, h, hold, commands):
        for c in commands:
            line = hold.cmd(c)
            self.assertTrue(line.ok, '%s: %s\n%s' % (c, line, h.log_tail()))

    def crash(self, h, sup):
        """SIGKILL the daemon; returns the log since then and the restore
        line's numbers."""
        since = len(sup.output())
        os.kill(h.supervised_child_pid(), signal.SIGKILL)
        m = vmharness.wait_until(
            lambda: RESTORED.search(sup.output()[since:]), 'the restore', 30,
            0.01)
        log = sup.output()[since:]
        return log, [int(x) for x in m.groups()]

    def across_restart(self, h, hold, tag):
        """Files from before the restart meet directories made after it."""
        self.run_ok(h, hold, [
            'mkdir new%s' % tag,
            'check k%s 0 8192 5' % tag,
            'rename old%s/f new%s/f' % (tag, tag),
            'link new%s/f old%s/l' % (tag, tag),
            'rename new%s old%s/n' % (tag, tag),
            'check k%s 0 8192 5' % tag])
        old = os.path.join(h.shared, 'old' + tag)
        self.assertEqual(sorted(os.listdir(old)), ['l', 'n'])
        self.assertEqual(os.listdir(os.path.join(old, 'n')), ['f'])
        self.assertEqual(os.stat(os.path.join(old, 'l')).st_nlink, 2)
        with open(os.path.join(old, 'l'), 'rb') as f:
            self.assertEqual(f.read(), vmharness.hold_pattern(0, 8192, 5))

    def before_restart(self, h, hold, tag):
        self.run_ok(h, hold, ['mkdir old%s' % tag,
                              'open old%s/f k%s' % (tag, tag),
                              'write k%s 0 8192 5' % tag])

    def test_namespace_is_joined(self):
        with vmharness.Harness('restart-mntns') as h:
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            sup = h.start_supervised_virtiofsd(state, options=CACHE)
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            self.before_restart(h, hold, '1')
            first = sandbox_pid(h.supervised_child_pid())
            ns = mnt_ns(first)
            mounts = mount_points(first)
            self.assertEqual([m for _, m in mounts], ['/'])
            # The sandbox is in effect: namespaces of its own
            self.assertNotEqual(ns, mnt_ns(sup.pid))
            self.assertNotEqual(pid_ns(first), pid_ns(sup.pid))
            shared = os.stat(h.shared)

            for restart in (1, 2):
                log, (inodes, files, dirs, plocks, stale) = \
                    self.crash(h, sup)
                child = sandbox_pid(h.supervised_child_pid())
                self.assertNotEqual(child, first)
                self.assertEqual(mnt_ns(child), ns)
                self.assertEqual(mount_points(child), mounts)
                root = os.stat('/proc/%d/root' % child)
                self.assertEqual((root.st_dev, root.st_ino),
                                 (shared.st_dev, shared.st_ino))
                # Every record found its fd, on the joined mounts
                self.assertGreaterEqual(inodes, 2 * restart, log)
                self.assertEqual((files, plocks, stale), (restart, 0, 0),
                                 log)
                self.assertIsNone(NOT_JOINED.search(log), log)
                self.across_restart(h, hold, str(restart))
                if restart == 1:
                    self.before_restart(h, hold, '2')

    def test_chroot_sandbox_keeps_mounts(self):
        """-o sandbox=chroot: the workers run in the holder's mount
        namespace, chrooted to the shared directory; the kept fds are on
        its mounts and serve as they are after each restart."""
        with vmharness.Harness('restart-mntns-chroot') as h:
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            sup = h.start_supervised_virtiofsd(
                state, options=CACHE + ('sandbox=chroot',))
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            self.before_restart(h, hold, '1')
            shared = os.stat(h.shared)
            first = h.supervised_child_pid()
            self.assertEqual(mnt_ns(first), mnt_ns(sup.pid))

            for restart in (1, 2):
                log, (inodes, files, dirs, plocks, stale) = \
                    self.crash(h, sup)
                child = h.supervised_child_pid()
                self.assertNotEqual(child, first)
                self.assertEqual(mnt_ns(child), mnt_ns(sup.pid))
                root = os.stat('/proc/%d/root' % child)
                self.assertEqual((root.st_dev, root.st_ino),
                                 (shared.st_dev, shared.st_ino))
                self.assertGreaterEqual(inodes, 2 * restart, log)
                self.assertEqual((files, plocks, stale), (restart, 0, 0),
                                 log)
                self.across_restart(h, hold, str(restart))
                if restart == 1:
                    self.before_restart(h, hold, '2')


if __name__ == '__main__':
    unittest.main()
