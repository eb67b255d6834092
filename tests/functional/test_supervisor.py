#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Tests for virtiofsd-supervisor (Python 3 standard library only).

Run by make check (functional stage), or on its own:

    make check STAGE=functional K=Supervisor

The binary is taken from $SUPERVISOR or qemu/build/tools/virtiofsd/.  Each test
runs the supervisor with a dummy child (a Python script written into a
private temporary directory).  The child writes a JSON report about what
it received (environment, fds 3.., its whole fd table) into a state
directory and then acts according to its mode.  The test synchronises on
those reports and on the supervisor's "<prog> pid N ready" log line, which
is printed once the supervisor has processed the child's READY=1 and
therefore every message the child sent before it.

Every process a test starts is killed by pid in tearDown, and every wait
has a timeout.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

import vmharness

SUPERVISOR = os.environ.get('SUPERVISOR',
                            os.path.join(vmharness.QEMU_BUILD, 'tools',
                                         'virtiofsd', 'virtiofsd-supervisor'))

WAIT = 10.0          # default timeout of every wait, in seconds

CHILD_SOURCE = r'''
import os
import sys
import time
T_START = time.monotonic()
import _socket

MODE = sys.argv[1]
STATE = sys.argv[2]
NOTIFY = os.environ.get('NOTIFY_SOCKET')

T_SENT = None

if MODE == 'latency':
    # First thing: tell the supervisor we are alive.
    _s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    T_SENT = time.monotonic()
    _s.sendto(b'READY=1', NOTIFY)


def list_open_fds():
    fds = [int(x) for x in os.listdir('/proc/self/fd')]
    # The directory fd used by listdir() is closed again by now.
    res = []
    for fd in sorted(fds):
        try:
            os.fstat(fd)
        except OSError:
            continue
        res.append(fd)
    return res


OPEN_FDS = list_open_fds()

sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
sock.connect(NOTIFY)


def notify(text, fds=()):
    anc = []
    if fds:
        data = b''.join(fd.to_bytes(4, sys.byteorder, signed=True)
                        for fd in fds)
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)]
    sock.sendmsg([text.encode()], anc)


def memfd(content):
    fd = os.memfd_create('test')
    os.write(fd, content.encode())
    return fd


def write_json(name, data):
    import json
    tmp = os.path.join(STATE, '.%s.tmp' % name)
    with open(tmp, 'w') as f:
        json.dump(data, f)
    os.rename(tmp, os.path.join(STATE, name))


def report(**extra):
    n = os.environ.get('LISTEN_FDS')
    fds = []
    for i in range(int(n) if n else 0):
        fd = 3 + i
        d = {'fd': fd}
        try:
            d['target'] = os.readlink('/proc/self/fd/%d' % fd)
            d['inheritable'] = os.get_inheritable(fd)
        except OSError as e:
            d['target'] = 'error: %s' % e
        try:
            d['content'] = os.pread(fd, 4096, 0).decode('latin-1')
        except OSError:
            d['content'] = None
        fds.append(d)
    data = {
        'pid': os.getpid(),
        'mode': MODE,
        't_start': T_START,
        't_sent': T_SENT,
        'notify_socket': NOTIFY,
        'listen_fds': os.environ.get('LISTEN_FDS'),
        'listen_pid': os.environ.get('LISTEN_PID'),
        'listen_fdnames': os.environ.get('LISTEN_FDNAMES'),
        'open_fds': OPEN_FDS,
        'fds': fds,
    }
    data.update(extra)
    write_json('report-%d.json' % os.getpid(), data)


def wait_go():
    path = os.path.join(STATE, 'go-%d' % os.getpid())
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.005)


def wait_eof(rfds, timeout):
    """Return the read ends whose write ends have all been closed."""
    import select
    done = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(rfds) and time.monotonic() < deadline:
        p = select.poll()
        for r in rfds:
            if r not in done:
                p.register(r, select.POLLIN)
        for fd, ev in p.poll(20):
            if os.read(fd, 1) == b'':
                done.add(fd)
    return sorted(done)


def pipes(n):
    rs, ws = [], []
    for i in range(n):
        r, w = os.pipe()
        rs.append(r)
        ws.append(w)
    return rs, ws


def sleep_forever():
    while True:
        time.sleep(3600)


def finish_after_eof(rs):
    """Report how many of the read ends rs saw EOF (their write ends were
    closed by the supervisor), then wait to be killed."""
    eof = wait_eof(rs, 5.0)
    write_json('result-%d.json' % os.getpid(),
               {'sent': len(rs), 'eof': len(eof)})
    notify('READY=1')
    sleep_forever()


names = os.environ.get('LISTEN_FDNAMES')
names = names.split(':') if names else []

if MODE == 'store':
    report()
    if not names:
        fd = os.open(os.path.join(STATE, 'secret.txt'), os.O_RDONLY)
        notify('FDSTORE=1\nFDNAME=secret', [fd])
        a, b = memfd('pair-0'), memfd('pair-1')
        notify('FDSTORE=1\nFDNAME=pair', [a, b])
        notify('FDSTORE=1', [memfd('noname')])
    notify('READY=1')
    sleep_forever()

elif MODE == 'remove':
    report()
    if not names:
        notify('FDSTORE=1\nFDNAME=alpha', [memfd('alpha')])
        notify('FDSTORE=1\nFDNAME=beta', [memfd('beta-0'), memfd('beta-1')])
    elif 'beta' in names:
        notify('FDSTOREREMOVE=1\nFDNAME=beta')
    notify('READY=1')
    sleep_forever()

elif MODE == 'shuffle':
    report()
    if not names:
        for k in range(6):
            fd = memfd('s%d' % k)
            notify('FDSTORE=1\nFDNAME=s%d' % k, [fd])
            os.close(fd)
        notify('FDSTOREREMOVE=1\nFDNAME=s1')
        notify('FDSTOREREMOVE=1\nFDNAME=s3')
        fd = memfd('s6')
        notify('FDSTORE=1\nFDNAME=s6', [fd])
        os.close(fd)
    notify('READY=1')
    sleep_forever()

elif MODE == 'nostore':
    report()
    wait_go()
    texts = ['STATUS=hello', 'FDNAME=foo', 'FDSTORE=0\nFDNAME=bar',
             'FDSTOREREMOVE=1\nFDNAME=bar', 'X=1\nFDSTORE=1 \nFDNAME=baz',
             '']
    all_r = []
    for rep in range(5):
        for text in texts:
            rs, ws = pipes(10)
            notify(text, ws)
            for w in ws:
                os.close(w)
            all_r += rs
    finish_after_eof(all_r)

elif MODE == 'cycle':
    report()
    for name in dict.fromkeys(names):
        notify('FDSTOREREMOVE=1\nFDNAME=%s' % name)
    for i in range(20):
        name = 'p%d-%d' % (os.getpid(), i)
        fd = memfd(name)
        notify('FDSTORE=1\nFDNAME=%s' % name, [fd])
        os.close(fd)
    notify('READY=1')
    sleep_forever()

elif MODE == 'badname':
    report()
    wait_go()
    bad = ['a:b', '', 'x' * 256, 'ctl\x01', 'del\x7f', 'tab\tname']
    rs, ws = pipes(len(bad))
    for name, w in zip(bad, ws):
        notify('FDSTORE=1\nFDNAME=%s' % name, [w])
        os.close(w)
    notify('FDSTORE=1\nFDNAME=good', [memfd('good')])
    notify('FDSTORE=1\nFDNAME=' + 'x' * 255, [memfd('long')])
    finish_after_eof(rs)

elif MODE == 'limit':
    report()
    wait_go()
    rs, ws = pipes(8)
    notify('FDSTORE=1\nFDNAME=lim', ws)
    for w in ws:
        os.close(w)
    eof = wait_eof(rs, 2.0)
    write_json('result-%d.json' % os.getpid(),
               {'eof_index': [rs.index(r) for r in eof]})
    notify('READY=1')
    sleep_forever()

elif MODE == 'foreign':
    report()
    wait_go()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            notify('FDSTORE=1\nFDNAME=foreign', [w])
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    eof = wait_eof([r], 5.0)
    write_json('result-%d.json' % os.getpid(), {'eof': len(eof)})
    notify('READY=1')
    sleep_forever()

elif MODE == 'crashstore':
    report()
    if not names:
        notify('FDSTORE=1\nFDNAME=crash', [memfd('crash')])
        os.kill(os.getpid(), 9)
    notify('READY=1')
    sleep_forever()

elif MODE == 'many':
    report()
    if not names:
        for k in range(4):
            fd = memfd('m%d' % k)
            dups = [os.dup(fd) for i in range(253)]
            notify('FDSTORE=1\nFDNAME=m%d' % k, dups)
            for d in dups + [fd]:
                os.close(d)
    notify('READY=1')
    sleep_forever()

elif MODE == 'longnames':
    report()
    if not names:
        fd = memfd('long')
        for k in range(3):
            dups = [os.dup(fd) for i in range(253)]
            notify('FDSTORE=1\nFDNAME=' + 'n' * 255, dups)
            for d in dups:
                os.close(d)
        os.close(fd)
    notify('READY=1')
    sleep_forever()

elif MODE == 'exit0':
    report()
    notify('READY=1')
    sys.exit(0)

elif MODE == 'refuse':
    # As a daemon that waits for its front-end's reconnection, then
    # refuses its state: an exit of its own, not within 1 s of starting
    report()
    time.sleep(1.2)
    sys.exit(1)

elif MODE == 'ignoreterm':
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report()
    notify('READY=1')
    sleep_forever()

else:  # 'sleep' and 'latency'
    report()
    notify('READY=1')
    sleep_forever()
'''


def wait_until(pred, what, timeout=WAIT, interval=0.002):
    return vmharness.wait_until(pred, what, timeout, interval)


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'


class SupervisorTest(unittest.TestCase):

    def setUp(self):
        if not os.access(SUPERVISOR, os.X_OK):
            self.fail('%s not built' % SUPERVISOR)
        self.tmp = tempfile.mkdtemp(prefix='vsup-test-')
        self.state = os.path.join(self.tmp, 'state')
        self.rundir = os.path.join(self.tmp, 'run')
        os.mkdir(self.state)
        os.mkdir(self.rundir)
        self.child_py = os.path.join(self.tmp, 'child.py')
        with open(self.child_py, 'w') as f:
            f.write(CHILD_SOURCE)
        self.log_path = os.path.join(self.tmp, 'supervisor.log')
        self.proc = None
        self.seen = set()

    def tearDown(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                # First the supervisor, so that it cannot start new children
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=WAIT)
        finally:
            self.kill_leftover_children()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def kill_leftover_children(self):
        """Kill, by pid, every process running our private child script."""
        pids = set(self.seen)
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                pids.add(int(entry))
        for pid in pids:
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    cmdline = f.read()
            except OSError:
                continue
            if self.child_py.encode() in cmdline.split(b'\0'):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # Helpers

    def start(self, mode, *options, pass_fds=(), preexec_fn=None):
        args = [SUPERVISOR, '--runtime-dir=' + self.rundir]
        args += list(options)
        args += ['--', sys.executable, '-S', self.child_py, mode, self.state]
        self.log = open(self.log_path, 'wb')
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     pass_fds=pass_fds,
                                     preexec_fn=preexec_fn,
                                     # What preexec_fn puts in place stays
                                     # (other fds are non-inheritable)
                                     close_fds=preexec_fn is None)

    def log_text(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def wait_log(self, text, timeout=WAIT):
        wait_until(lambda: text in self.log_text(),
                   'log line %r; log so far:\n%s' % (text, self.log_text()),
                   timeout)

    def wait_ready(self, pid):
        self.wait_log(' pid %d ready' % pid)

    def new_reports(self):
        res = []
        for name in os.listdir(self.state):
            if name.startswith('report-') and name.endswith('.json'):
                pid = int(name[len('report-'):-len('.json')])
                if pid not in self.seen:
                    with open(os.path.join(self.state, name)) as f:
                        res.append(json.load(f))
        return sorted(res, key=lambda r: r['t_start'])

    def next_reports(self, n, timeout=WAIT):
        """The next N children's reports, in the order they started."""
        def check():
            if self.proc.poll() is not None:
                raise AssertionError('supervisor exited with %d; log:\n%s'
                                     % (self.proc.returncode,
                                        self.log_text()))
            reports = self.new_reports()
            return reports if len(reports) >= n else None
        reports = wait_until(check, '%d new child report(s)' % n, timeout)
        self.assertEqual(len(reports), n, reports)
        for report in reports:
            self.seen.add(report['pid'])
        return reports

    def next_report(self, timeout=WAIT):
        return self.next_reports(1, timeout)[0]

    def go(self, pid):
        open(os.path.join(self.state, 'go-%d' % pid), 'w').close()

    def result(self, pid):
        path = os.path.join(self.state, 'result-%d.json' % pid)
        wait_until(lambda: os.path.exists(path), 'result of pid %d' % pid)
        with open(path) as f:
            return json.load(f)

    def sup_fd_count(self):
        return len(os.listdir('/proc/%d/fd' % self.proc.pid))

    def kill_child(self, pid):
        os.kill(pid, signal.SIGKILL)

    def wait_exit(self, timeout=WAIT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('supervisor did not exit; log:\n%s'
                                 % self.log_text())

    def check_listen_env(self, report, names):
        """The child got exactly @names as fds 3.. and nothing else."""
        n = len(names)
        self.assertEqual(report['listen_fds'], str(n))
        self.assertEqual(report['listen_pid'], str(report['pid']))
        self.assertEqual(report['listen_fdnames'], ':'.join(names))
        self.assertEqual(report['open_fds'], list(range(3 + n)))
        self.assertEqual([d['fd'] for d in report['fds']],
                         list(range(3, 3 + n)))
        for d in report['fds']:
            self.assertTrue(d['inheritable'], d)

    def check_no_listen_env(self, report):
        self.assertIsNone(report['listen_fds'])
        self.assertIsNone(report['listen_pid'])
        self.assertIsNone(report['listen_fdnames'])
        self.assertEqual(report['open_fds'], [0, 1, 2])

    # Tests

    def test_a_stored_fds_survive_sigkill(self):
        secret = os.urandom(16).hex()
        with open(os.path.join(self.state, 'secret.txt'), 'w') as f:
            f.write(secret)
        self.start('store')
        r1 = self.next_report()
        self.check_no_listen_env(r1)
        self.assertTrue(r1['notify_socket'].startswith(self.rundir + '/'))
        self.assertTrue(r1['notify_socket'].endswith('/notify'))
        self.wait_ready(r1['pid'])

        # Only the stored fd can give access to the file from now on
        os.unlink(os.path.join(self.state, 'secret.txt'))
        self.kill_child(r1['pid'])
        r2 = self.next_report()
        self.check_listen_env(r2, ['secret', 'pair', 'pair', 'stored'])
        self.assertEqual([d['content'] for d in r2['fds']],
                         [secret, 'pair-0', 'pair-1', 'noname'])
        self.assertIn('(deleted)', r2['fds'][0]['target'])
        self.assertEqual(r2['notify_socket'], r1['notify_socket'])
        self.assertIn('pid %d exited (signal 9); restart 1 in 0 ms, '
                      'holding 4 fds' % r1['pid'], self.log_text())

        # Stored fds are passed on again after the next crash too
        self.wait_ready(r2['pid'])
        self.kill_child(r2['pid'])
        r3 = self.next_report()
        self.check_listen_env(r3, ['secret', 'pair', 'pair', 'stored'])
        self.assertEqual(r3['fds'][0]['content'], secret)

    def test_b_fdstoreremove(self):
        self.start('remove')
        r1 = self.next_report()
        self.check_no_listen_env(r1)
        self.wait_ready(r1['pid'])
        self.kill_child(r1['pid'])

        r2 = self.next_report()
        self.check_listen_env(r2, ['alpha', 'beta', 'beta'])
        self.wait_ready(r2['pid'])
        self.kill_child(r2['pid'])

        r3 = self.next_report()
        self.check_listen_env(r3, ['alpha'])
        self.assertEqual(r3['fds'][0]['content'], 'alpha')
        self.assertIn('holding 1 fds', self.log_text())

    def check_shuffle(self, pass_fds=(), preexec_fn=None):
        """Removals in the middle of the store: the rest keep their
        names and files, at 3.. and inheritable."""
        self.start('shuffle', pass_fds=pass_fds, preexec_fn=preexec_fn)
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        self.kill_child(r1['pid'])
        r2 = self.next_report()
        names = r2['listen_fdnames'].split(':')
        self.assertEqual(sorted(names), ['s0', 's2', 's4', 's5', 's6'])
        self.assertEqual(r2['listen_fds'], '5')
        self.assertEqual([d['content'] for d in r2['fds']], names)
        self.assertEqual([d['inheritable'] for d in r2['fds']], [True] * 5)
        self.assertEqual([d['fd'] for d in r2['fds']], list(range(3, 8)))
        return r2

    def test_n_removal_keeps_the_rest(self):
        self.check_shuffle()

    def test_n2_inherited_fds_in_the_way(self):
        # The supervisor inherits fds at 3 and 4: the store cannot keep
        # its fds in place and the child is given them at 3.. all the same
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)

        def at_3_and_4():
            os.dup2(r, 3)
            os.dup2(w, 4)

        r2 = self.check_shuffle(preexec_fn=at_3_and_4)
        self.assertNotIn('pipe:', ' '.join(d['target'] for d in r2['fds']))

    def start_and_check_closed(self, mode):
        """Start a child in mode, let it send fds the supervisor must
        close, and check that every one was closed.  Returns the child's
        first report, the supervisor's fd count before the sends and the
        child's result."""
        self.start(mode)
        r1 = self.next_report()
        base = self.sup_fd_count()
        self.go(r1['pid'])
        res = self.result(r1['pid'])
        self.assertEqual(res['eof'], res['sent'])
        self.wait_ready(r1['pid'])
        return r1, base, res

    def test_c_fds_without_fdstore_are_closed(self):
        r1, base, _ = self.start_and_check_closed('nostore')
        self.assertEqual(self.sup_fd_count(), base)
        self.kill_child(r1['pid'])

        r2 = self.next_report()
        self.check_no_listen_env(r2)
        self.go(r2['pid'])
        res = self.result(r2['pid'])
        self.assertEqual(res['eof'], res['sent'])
        self.wait_ready(r2['pid'])
        self.assertEqual(self.sup_fd_count(), base)

    def test_d_50_restart_cycles_do_not_leak(self):
        self.start('cycle')
        prev = self.next_report()
        self.check_no_listen_env(prev)
        self.wait_ready(prev['pid'])
        counts = {}
        for cycle in range(1, 51):
            self.kill_child(prev['pid'])
            r = self.next_report()
            names = ['p%d-%d' % (prev['pid'], i) for i in range(20)]
            self.check_listen_env(r, names)
            self.assertEqual([d['content'] for d in r['fds']], names)
            self.wait_ready(r['pid'])
            counts[cycle] = self.sup_fd_count()
            prev = r
        self.assertEqual(counts[50], counts[1], counts)
        self.assertEqual(len(set(counts.values())), 1, counts)
        self.assertEqual(self.log_text().count('holding 20 fds'), 50)

    def test_d2_store_then_crash_immediately(self):
        # Message queued just before the death must still be honoured
        # The first child dies right after its message, and the second
        # may have started before this test reads the first report: take
        # both, in the order they started
        self.start('crashstore')
        r1, r2 = self.next_reports(2)
        self.check_no_listen_env(r1)
        self.check_listen_env(r2, ['crash'])
        self.assertEqual(r2['fds'][0]['content'], 'crash')
        # ... and the second one lives: no third child
        self.wait_ready(r2['pid'])
        self.assertEqual(self.new_reports(), [])

    def test_d3_many_fds(self):
        self.start('many')
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        self.kill_child(r1['pid'])
        r2 = self.next_report()
        names = ['m%d' % (i // 253) for i in range(4 * 253)]
        self.check_listen_env(r2, names)
        self.assertEqual([d['content'] for d in r2['fds']], names)

    def test_d4_fdnames_fit_into_execve(self):
        # 759 fds named with 255 characters would need 194 KiB of
        # LISTEN_FDNAMES, more than execve() accepts for one string:
        # only as many as fit are kept, and the restart still works.
        self.start('longnames')
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        self.assertEqual(self.log_text().count('fd store is full'), 1)
        self.kill_child(r1['pid'])
        r2 = self.next_report()
        kept = (32 * 4096 - len('LISTEN_FDNAMES=')) // 256
        self.check_listen_env(r2, ['n' * 255] * kept)

    def test_e_exit_0_stops_supervisor(self):
        self.start('exit0')
        self.next_report()
        self.assertEqual(self.wait_exit(), 0)
        self.assertEqual(os.listdir(self.rundir), [])

    def test_e2_failed_starts_back_off(self):
        """A child that exits 1 (too late to be given up as a fast
        failure) is restarted after 100, 200, 400 ms...: a failed start
        does not spin; a crash is restarted at once."""
        self.start('refuse')
        reports = self.next_reports(4, timeout=20)
        log = self.log_text()
        for n, delay in ((1, 100), (2, 200), (3, 400)):
            self.assertIn('exited (status 1); restart %d in %d ms (failed '
                          'start %d in a row)' % (n, delay, n), log)
        for prev, r, delay in zip(reports, reports[1:], (100, 200, 400)):
            self.assertGreater(r['t_start'] - prev['t_start'],
                               1.2 + delay / 1000.0)
        self.kill_child(reports[-1]['pid'])
        self.wait_log('exited (signal 9); restart 4 in 0 ms,')

    def test_f_sigterm_stops_child_and_supervisor(self):
        self.start('sleep')
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        self.assertEqual(len(os.listdir(self.rundir)), 1)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0)
        self.assertFalse(pid_alive(r1['pid']))
        self.assertEqual(os.listdir(self.rundir), [])
        self.assertEqual(self.new_reports(), [])

    def test_f2_sigterm_escalates_to_sigkill(self):
        self.start('ignoreterm')
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(timeout=20), 0)
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 9.5)
        self.assertFalse(pid_alive(r1['pid']))
        self.assertIn('sending SIGKILL', self.log_text())
        self.assertEqual(os.listdir(self.rundir), [])

    def test_f3_sighup_is_forwarded(self):
        self.start('sleep')
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        self.proc.send_signal(signal.SIGHUP)
        r2 = self.next_report()      # SIGHUP kills the dummy child
        self.assertIn('pid %d exited (signal 1)' % r1['pid'],
                      self.log_text())
        self.assertIsNone(self.proc.poll())
        self.wait_ready(r2['pid'])

    def test_g_max_restarts(self):
        self.start('sleep', '--max-restarts=2')
        for death in range(1, 4):
            r = self.next_report()
            self.wait_ready(r['pid'])
            self.kill_child(r['pid'])
        self.assertEqual(self.wait_exit(), 1)
        self.assertEqual(self.new_reports(), [])
        self.assertEqual(len(self.seen), 3)
        self.assertIn('restart limit 2 reached', self.log_text())
        self.assertEqual(os.listdir(self.rundir), [])

    def test_h_invalid_fdname_refused(self):
        r1, base, res = self.start_and_check_closed('badname')
        self.assertEqual(self.sup_fd_count(), base + 2)
        log = self.log_text()
        self.assertIn("closing 1 fds with invalid FDNAME 'a:b'", log)
        self.assertEqual(log.count('invalid FDNAME'), res['sent'])
        self.kill_child(r1['pid'])

        r2 = self.next_report()
        self.check_listen_env(r2, ['good', 'x' * 255])
        self.assertEqual([d['content'] for d in r2['fds']], ['good', 'long'])

    def test_i_restart_latency(self):
        self.start('latency', '--restart-delay-ms=0')
        prev = self.next_report()
        self.wait_ready(prev['pid'])
        to_msg, to_start = [], []
        for i in range(20):
            t0 = time.monotonic()
            self.kill_child(prev['pid'])
            r = self.next_report()
            self.wait_ready(r['pid'])
            to_msg.append((r['t_sent'] - t0) * 1000)
            to_start.append((r['t_start'] - t0) * 1000)
            prev = r
        # Order, not wall time (a loaded machine may take long): each
        # restarted child started after its predecessor's SIGKILL and
        # sent its first message after it started
        for m, s in zip(to_msg, to_start):
            self.assertGreater(s, 0)
            self.assertGreaterEqual(m, s)
        sys.stderr.write(
            '\n  restart latency, SIGKILL -> first NOTIFY_SOCKET message '
            '(20 restarts): p50 %.1f ms, max %.1f ms\n'
            '  SIGKILL -> first line of the child script (reap + fork + '
            'exec + Python start-up): p50 %.1f ms, max %.1f ms\n'
            % (statistics.median(to_msg), max(to_msg),
               statistics.median(to_start), max(to_start)))

    def test_j_foreign_uid_dropped(self):
        if os.getuid() != 0:
            self.skipTest('needs root to send from another uid')
        self.start('foreign')
        r1 = self.next_report()
        base = self.sup_fd_count()
        self.go(r1['pid'])
        self.assertEqual(self.result(r1['pid'])['eof'], 1)
        self.wait_ready(r1['pid'])
        self.assertEqual(self.sup_fd_count(), base)
        self.assertIn('with uid 65534', self.log_text())
        self.kill_child(r1['pid'])
        self.check_no_listen_env(self.next_report())

    def test_m_exec_failure_retried(self):
        """A restart whose exec() fails (the binary being replaced) is
        tried again; the stored fds are still handed over."""
        with open(os.path.join(self.state, 'secret.txt'), 'w') as f:
            f.write('s')
        prog = os.path.join(self.tmp, 'prog.sh')
        with open(prog, 'w') as f:
            f.write('#!/bin/sh\nexec %s -S %s "$@"\n'
                    % (sys.executable, self.child_py))
        os.chmod(prog, 0o755)
        self.log = open(self.log_path, 'wb')
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(
            [SUPERVISOR, '--runtime-dir=' + self.rundir, '--', prog, 'store',
             self.state], stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        r1 = self.next_report()
        self.wait_ready(r1['pid'])
        os.chmod(prog, 0o644)
        self.kill_child(r1['pid'])
        self.wait_log('cannot execute')
        os.chmod(prog, 0o755)
        r2 = self.next_report()
        self.assertNotEqual(r2['pid'], r1['pid'])
        self.check_listen_env(r2, ['secret', 'pair', 'pair', 'stored'])
        self.assertIsNone(self.proc.poll())

    def test_k_fd_limit(self):
        self.start('limit', '--fd-limit=5')
        r1 = self.next_report()
        self.go(r1['pid'])
        self.assertEqual(self.result(r1['pid'])['eof_index'], [5, 6, 7])
        self.wait_ready(r1['pid'])
        self.assertEqual(self.log_text().count('fd store is full'), 1)
        self.kill_child(r1['pid'])
        r2 = self.next_report()
        self.check_listen_env(r2, ['lim'] * 5)

    def test_l_argument_errors(self):
        cases = [[], ['--bogus', '--', 'true'], ['--fd-limit=x', '--', 'true'],
                 ['--max-restarts=-1', '--', 'true'], ['--'],
                 ['--restart-delay-ms', '--', 'true']]
        for args in cases:
            p = subprocess.run([SUPERVISOR] + args, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=WAIT)
            self.assertEqual(p.returncode, 2, args)
            lines = p.stderr.decode().splitlines()
            self.assertTrue(lines[0].startswith('virtiofsd-supervisor: '),
                            lines)
            self.assertTrue(lines[1].startswith('Usage: '), lines)


if __name__ == '__main__':
    unittest.main()
