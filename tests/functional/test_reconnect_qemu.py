"""QEMU's side of reconnection, against stock daemons: the device survives
the death of its back-end, reconnects to a new one and restarts the rings,
and a back-end that starts after QEMU is waited for.

A stock virtiofsd has no session state, so after a restart the guest's
requests reach the new daemon and are answered with EIO (it never saw
FUSE_INIT).  The virtiofsd issues of the series turn that into a
transparent restart; this test pins down QEMU's part on its own.
"""

import os
import re
import signal
import time
import unittest

import vmharness

RECONNECT = ',reconnect-ms=100'


def wl_lines(text):
    return re.findall(r'^WL w\d+ .*$', text, re.M)


class ReconnectQemuTest(unittest.TestCase):

    def test_backend_started_after_qemu(self):
        """Realize waits for the back-end of a reconnecting chardev."""
        with vmharness.Harness('late-backend') as h:
            os.mkdir(os.path.join(h.shared, 'd'))
            h.start_qemu('wl.run=data,--dir,/mnt/d,--workers,1,--files,1,'
                         '--size,1m,--bs,64k', chardev_opts=RECONNECT)
            time.sleep(2)
            self.assertTrue(h.qemu.alive(), 'QEMU gave up without a '
                            'back-end:\n' + h.qemu.output())
            h.start_virtiofsd()
            m = h.wait_console(r'^GUEST DONE rc=(\d+)', 90, 'the end')
            self.assertEqual(m.group(1), '0', h.log_tail())

    def test_sigkill_and_new_stock_daemon(self):
        """SIGKILL virtiofsd during guest I/O, start a new one: QEMU stays
        up, restarts the device on the new daemon, and the guest's next
        requests reach it (and get EIO from a stock daemon); the guest
        does not hang."""
        with vmharness.Harness('stock-restart') as h:
            os.mkdir(os.path.join(h.shared, 'd'))
            h.start_virtiofsd(options=('cache=none',))
            h.start_qemu('wl.run=data,--dir,/mnt/d,--workers,2,--files,2,'
                         '--size,1m,--bs,64k,--duration-ms,12000',
                         chardev_opts=RECONNECT)
            h.wait_console(r'^GUEST MOUNT ok', 90, 'the mount')
            deadline = time.monotonic() + 60
            while len(wl_lines(h.read_console())) < 4:
                self.assertLess(time.monotonic(), deadline, 'no guest I/O')
                time.sleep(0.1)
            first = h.virtiofsd
            first.signal(signal.SIGKILL)
            first.wait(10)
            time.sleep(0.5)
            self.assertTrue(h.qemu.alive(), 'QEMU died with its back-end')
            h.start_virtiofsd(options=('cache=none',), extra=['-d'])
            # The guest is not hung: its workload runs to its end.
            h.wait_console(r'^GUEST DONE rc=\d+', 90, 'the end of the workload')
            self.assertTrue(h.qemu.alive() or h.qemu.wait(30) == 0)
            log = h.virtiofsd.output()
            served = re.findall(r'opcode: (\w+)', log)
            self.assertTrue([op for op in served if op != 'INIT'],
                            'no guest request reached the new daemon:\n' +
                            h.log_tail())
            # What a stock daemon gives the guest: EIO, never a wrong answer.
            errors = set(re.findall(r'err=(\w+)', h.read_console()))
            self.assertLessEqual(errors, {'EIO'}, h.log_tail())
            qlog = h.qemu.output()
            self.assertNotRegex(qlog, r'(?i)assert|abort|core dumped')


if __name__ == '__main__':
    unittest.main()
