"""Baseline: a guest boots, mounts virtio-fs and verifies its workload
against the daemon, and the host sees the same data."""

import os
import time
import unittest

import vmharness

MIB = 1024 * 1024
# 2 data workers x 5 files x 5 MiB = 50 MiB of verified I/O, plus metadata
# churn from 2 meta workers, all at once.
WORKERS, FILES, SIZE, BS, ITERS = 2, 5, 5 * MIB, 256 * 1024, 20
DATA_ARGS = ['--dir', '/mnt/data', '--workers', str(WORKERS),
             '--files', str(FILES), '--size', str(SIZE), '--bs', str(BS),
             '--seed', '7']
BOOT_BUDGET = 90        # seconds; the target is 30 s, measured below


class BaselineTest(unittest.TestCase):

    def test_boot_mount_verify(self):
        with vmharness.Harness('baseline') as h:
            os.mkdir(os.path.join(h.shared, 'data'))
            h.start_virtiofsd(options=('cache=auto', 'xattr'))
            t0 = time.monotonic()
            run = ','.join(['all'] + DATA_ARGS + ['--iters', str(ITERS)])
            h.start_qemu('wl.run=' + run)
            h.wait_console(r'^GUEST MOUNT ok', BOOT_BUDGET, 'the mount')
            t_mount = time.monotonic() - t0
            m = h.wait_console(r'^GUEST DONE rc=(\d+)', BOOT_BUDGET, 'the end')
            t_done = time.monotonic() - t0
            console = h.read_console()
            summary, bad = vmharness.parse_workload(console)
            self.assertIsNotNone(summary, 'no WL SUMMARY line\n' + h.log_tail())
            self.assertEqual(bad, [], 'failing workload steps')
            self.assertEqual(summary['errors'], 0)
            self.assertEqual(summary['mismatches'], 0)
            self.assertGreaterEqual(summary['bytes_verified'],
                                    WORKERS * FILES * SIZE)
            self.assertEqual(m.group(1), '0', h.log_tail())
            self.assertEqual(h.qemu.wait(30), 0, 'QEMU exit status')
            # The host sees exactly what the guest wrote: verify it again
            # with the same program, on the host side of the share.
            rc, out, hs = vmharness.host_verify(h, console, DATA_ARGS,
                                                WORKERS, FILES)
            self.assertEqual(rc, 0, out[-2000:])
            self.assertEqual(hs['mismatches'], 0)
            self.assertGreaterEqual(hs['bytes_verified'],
                                    WORKERS * FILES * SIZE)
            print('functional       baseline: mount after %.1f s, 50 MiB + '
                  'metadata verified, guest done after %.1f s'
                  % (t_mount, t_done), flush=True)
            self.assertLess(t_done, BOOT_BUDGET)


if __name__ == '__main__':
    unittest.main()
