"""QEMU's side of reconnection, against stock daemons: the device survives
the death of its back-end, reconnects to a new one and restarts the rings,
and a back-end that starts after QEMU is waited for.

A stock virtiofsd has no session state and no inflight region.  Killed
while the guest has requests in flight, the device cannot resume on a
new one (requests would run twice) and stalls with NEEDS_RESET; killed
while the guest is idle, the rings resume and the guest's requests
reach the new daemon, which answers EIO (it never saw FUSE_INIT).  The
virtiofsd patches of the series turn that into a transparent restart;
this test pins down QEMU's part on its own.
"""

import os
import re
import signal
import time
import unittest

import vmharness

RECONNECT = ',reconnect-ms=100'
# QEMU's trace of the device (the log backend, on QEMU's stderr)
TRACE = ['-trace', 'vhost_user_fs_connect', '-trace', 'vhost_user_fs_start']
CONNECT = re.compile(r'vhost_user_fs_connect ', re.M)
START = re.compile(r'vhost_user_fs_start ', re.M)
NEEDS_RESET = re.compile(r'vhost-user-fs: the back-end died with requests '
                         r'in flight; .*the device needs a reset', re.M)


def eventfd_counts(pid):
    """The counters of pid's eventfds: a kick the daemon has not read
    shows as a count that changed."""
    res = {}
    for fd in os.listdir('/proc/%d/fdinfo' % pid):
        try:
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                m = re.search(r'^eventfd-count:\s+(\S+)', f.read(), re.M)
        except OSError:
            continue
        if m:
            res[fd] = int(m.group(1), 16)
    return res


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

    def test_sigkill_busy_stock_daemon(self):
        """SIGKILL a stock virtiofsd (no inflight region) with a guest
        request in flight and start a new one: QEMU stays up, says once
        that the device needs a reset, runs the handshake with the new
        daemon and does not restart the rings at the used index (the
        request would run twice, or a completed head be popped again).
        The request is made surely in flight: the daemon is stopped, the
        guest writes, and the kick shows in the daemon's eventfd.  The
        decision is read from QEMU's own trace, in order."""
        with vmharness.Harness('stock-restart-busy') as h:
            h.start_virtiofsd(options=('cache=none',))
            hold = h.start_qemu_hold(chardev_opts=RECONNECT, extra=TRACE)
            line = hold.cmd('open a 1')
            self.assertTrue(line.ok, line)
            worker = vmharness.process_tree(h.virtiofsd.pid)[-1]
            os.kill(worker, signal.SIGSTOP)
            kicks = eventfd_counts(worker)
            hold.send('write 1 0 4096 2')
            vmharness.wait_until(lambda: eventfd_counts(worker) != kicks,
                                 'the guest\'s kick', 30)
            first = h.virtiofsd
            os.kill(worker, signal.SIGKILL)
            first.wait(10)
            vmharness.wait_output(h.qemu, NEEDS_RESET, 30, 'the stall')
            h.start_virtiofsd(options=('cache=none',), extra=['-d'])
            # The second handshake: the new daemon is connected
            vmharness.wait_until(
                lambda: len(CONNECT.findall(h.qemu.output())) >= 2,
                'the handshake with the new daemon', 30)
            # A start would follow the connect trace within the same
            # main-loop callback; give its line time to reach the log
            time.sleep(1)
            qlog = h.qemu.output()
            after = qlog[[m.end() for m in CONNECT.finditer(qlog)][1]:]
            self.assertNotRegex(after, START, qlog)
            self.assertEqual(len(NEEDS_RESET.findall(qlog)), 1, qlog)
            self.assertTrue(h.qemu.alive(), 'QEMU died with its back-end')
            self.assertNotRegex(qlog, r'(?i)assert|abort|core dumped')
            # No ring, so no request reached the new daemon (its lines
            # follow the first daemon's in the same log)
            log = h.virtiofsd.output()
            mine = log[log.rindex('Waiting for vhost-user socket'):]
            self.assertNotRegex(mine, r'opcode: |Start for queue', log)

    def test_sigkill_idle_stock_daemon(self):
        """SIGKILL a stock virtiofsd while the guest has nothing in flight
        and start a new one: the rings resume (nothing can run twice) and
        the guest's next request reaches the new daemon, which never saw
        its FUSE_INIT and answers EIO; the guest does not hang."""
        with vmharness.Harness('stock-restart-idle') as h:
            h.start_virtiofsd(options=('cache=none',))
            hold = h.start_qemu_hold(chardev_opts=RECONNECT, extra=TRACE)
            for c in ('open a 1', 'write 1 0 4096 1'):
                line = hold.cmd(c)
                self.assertTrue(line.ok, '%s: %s' % (c, line))
            first = h.virtiofsd
            first.signal(signal.SIGKILL)
            first.wait(10)
            h.start_virtiofsd(options=('cache=none',), extra=['-d'])
            vmharness.wait_until(
                lambda: len(START.findall(h.qemu.output())) >= 2,
                'the rings on the new daemon', 30)
            line = hold.cmd('stat b')
            self.assertEqual(line.result, 'err=EIO', line)
            self.assertRegex(h.virtiofsd.output(), r'opcode: ')
            qlog = h.qemu.output()
            self.assertIsNone(NEEDS_RESET.search(qlog), qlog)


if __name__ == '__main__':
    unittest.main()
