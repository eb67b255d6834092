"""The mount namespace of the sandbox across restarts.

A restarted virtiofsd joins the mount namespace its predecessor built,
which the fd keeper holds as "mntns", so the kept fds are on its own
mounts and serve as they are: no reopening by handle, and link() and
rename() between inodes from before and after the restart work (on two
mounts they fail with EXDEV).  When the kept fds are on other mounts (here:
the daemon before ran the chroot sandbox), the inodes move to the new
daemon's mounts once, and the restart after that joins again.
"""

import os
import re
import signal
import unittest

import vmharness

RESTORED = re.compile(r'^state: restored session from \S+: (\d+) inodes, '
                      r'(\d+) files, (\d+) dirs \((\d+) fds from the store, '
                      r'(\d+) reopened by handle, (\d+) stale\)', re.M)
MOVED = re.compile(r'^state: the kept fds are on the mounts of another '
                   r'namespace: moved (\d+) inodes to this one\'s$', re.M)


def sandbox_pid(daemon):
    """The sandboxed process: the namespace sandbox forks a child."""
    kids = vmharness.children(daemon)
    return kids[0] if kids else daemon


def mnt_ns(pid):
    return os.readlink('/proc/%d/ns/mnt' % pid)


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
            ns = mnt_ns(sandbox_pid(h.supervised_child_pid()))
            mounts = mount_points(sandbox_pid(h.supervised_child_pid()))
            self.assertEqual([m for _, m in mounts], ['/'])
            shared = os.stat(h.shared)

            log, (inodes, files, dirs, kept, by_handle, stale) = \
                self.crash(h, sup)
            child = sandbox_pid(h.supervised_child_pid())
            self.assertEqual(mnt_ns(child), ns)
            self.assertEqual(mount_points(child), mounts)
            root = os.stat('/proc/%d/root' % child)
            self.assertEqual((root.st_dev, root.st_ino),
                             (shared.st_dev, shared.st_ino))
            self.assertEqual((by_handle, stale), (0, 0))
            self.assertEqual(kept, inodes + files + dirs)
            self.assertIsNone(MOVED.search(log), log)
            self.across_restart(h, hold, '1')

    def test_inodes_move_once(self):
        with vmharness.Harness('restart-mntns-move') as h:
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            mode = os.path.join(h.dir, 'sandbox')
            with open(mode, 'w') as f:
                f.write('chroot')
            wrapper = ['/bin/sh', '-c',
                       'exec "$0" "$@" -o sandbox=$(cat %s)' % mode]
            sup = h.start_supervised_virtiofsd(state, options=CACHE,
                                               wrapper=wrapper)
            hold = h.start_qemu_hold(chardev_opts=',reconnect-ms=10')
            self.before_restart(h, hold, '1')

            # chroot -> namespace: the kept fds are on the host's mount
            with open(mode, 'w') as f:
                f.write('namespace')
            log, (inodes, _, _, kept, by_handle, stale) = self.crash(h, sup)
            moved = MOVED.findall(log)
            self.assertEqual(moved, [str(inodes)], log)
            self.assertEqual((by_handle, stale), (0, 0))
            ns = mnt_ns(sandbox_pid(h.supervised_child_pid()))
            self.across_restart(h, hold, '1')
            self.before_restart(h, hold, '2')

            # namespace -> namespace: joined, nothing moves
            log, (inodes, files, dirs, kept, by_handle, stale) = \
                self.crash(h, sup)
            self.assertEqual(mnt_ns(sandbox_pid(h.supervised_child_pid())),
                             ns)
            self.assertIsNone(MOVED.search(log), log)
            self.assertEqual((by_handle, stale), (0, 0))
            self.across_restart(h, hold, '2')


if __name__ == '__main__':
    unittest.main()
