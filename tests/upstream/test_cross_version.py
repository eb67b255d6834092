"""The upstream queue's QEMU (qemu-upstream, patches/upstream) with the
7.2 series' virtiofsd under crash recovery: the QEMU half on current
QEMU is what the daemon half needs.  The daemon is SIGKILLed under guest
I/O while the guest writes and verifies checksummed blocks; every kill
must be restored, the guest must see no error and no bad block, and the
host must find exactly what the guest wrote.
"""

import os
import re
import signal
import time
import unittest

import vmharness

UPSTREAM_BUILD = os.environ.get(
    'UPSTREAM_BUILD', os.path.join(vmharness.TOP, 'qemu-upstream', 'build'))
UPSTREAM_QEMU = os.path.join(UPSTREAM_BUILD, 'qemu-system-x86_64')
KILLS = 5
WORKERS, FILES, SIZE, BS = 2, 2, 1 << 20, 65536
DATA_ARGS = ['--dir', '/mnt/d', '--workers', str(WORKERS), '--files',
             str(FILES), '--size', str(SIZE), '--bs', str(BS), '--seed', '3']
RESTORED = re.compile(r'^state: restored session from ', re.M)


def wl_steps(console):
    return len(re.findall(r'^WL w\d+ ', console, re.M))


class CrossVersionTest(unittest.TestCase):

    def test_kills_under_load(self):
        self.assertTrue(os.access(UPSTREAM_QEMU, os.X_OK),
                        UPSTREAM_QEMU + ' is not built (make build-upstream)')
        with vmharness.Harness('upstream-cross') as h:
            h.qemu_bin = UPSTREAM_QEMU
            os.mkdir(os.path.join(h.shared, 'd'))
            state = os.path.join(h.dir, 'state')
            os.mkdir(state, 0o700)
            sup = h.start_supervised_virtiofsd(state,
                                               options=('cache=none',))
            # The workload loops over rounds until the stop file appears
            run = ','.join(['data'] + DATA_ARGS +
                           ['--duration-ms', '600000',
                            '--stop-file', '/mnt/stop'])
            h.start_qemu('wl.run=' + run, chardev_opts=',reconnect-ms=10')
            h.wait_console(r'^GUEST MOUNT ok', 90, 'the mount')
            for i in range(KILLS):
                # Guest I/O in progress: new steps since the last restore
                base = wl_steps(h.read_console())
                vmharness.wait_until(
                    lambda: wl_steps(h.read_console()) >= base + 2,
                    'guest I/O before kill %d' % (i + 1), 60)
                os.kill(h.supervised_child_pid(), signal.SIGKILL)
                vmharness.wait_until(
                    lambda: len(RESTORED.findall(sup.output())) >= i + 1,
                    'restore %d' % (i + 1), 30)
            base = wl_steps(h.read_console())
            vmharness.wait_until(
                lambda: wl_steps(h.read_console()) >= base + 2,
                'guest I/O after the last restore', 60)
            open(os.path.join(h.shared, 'stop'), 'w').close()
            m = h.wait_console(r'^GUEST DONE rc=(\d+)', 120, 'the end')
            console = h.read_console()
            self.assertNotRegex(console, r'err=', h.log_tail())
            summary, bad = vmharness.parse_workload(console)
            self.assertIsNotNone(summary, h.log_tail())
            self.assertEqual(bad, [])
            self.assertEqual((summary['errors'], summary['mismatches']),
                             (0, 0))
            self.assertEqual(m.group(1), '0', h.log_tail())
            self.assertEqual(len(RESTORED.findall(sup.output())), KILLS)
            qlog = h.qemu.output()
            self.assertNotRegex(qlog, r'(?i)assert|abort|core dumped|'
                                r'vhost-user-fs:', qlog)
            rc, out, hs = vmharness.host_verify(h, console, DATA_ARGS,
                                                WORKERS, FILES)
            self.assertEqual(rc, 0, out[-2000:])
            self.assertEqual(hs['mismatches'], 0)
            self.assertGreaterEqual(hs['bytes_verified'],
                                    WORKERS * FILES * SIZE)


if __name__ == '__main__':
    unittest.main()
