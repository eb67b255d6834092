#!/usr/bin/env python3
"""make check: every test stage of the project, one line per test, and a
closing line "N passed, N failed, N skipped".

Stages:
  workspace   the workspace scripts (fetch.sh, add-deb-src.sh) against
              stand-in apt commands: no network, no root, no build
  unit        unit tests the series adds (meson suite "virtiofsd" in ./qemu)
  qtest       QEMU's vhost-user qtests and the series' new ones (qos-test)
  functional  host-side tests: QEMU + virtiofsd + the guest workload
  avocado     the series' tests/avocado tests, through QEMU's check-avocado
  fuzz        the series' fuzz targets, briefly (tests/fuzz, libFuzzer)
  torture     kill virtiofsd 20 times under guest load (tests/torture)
  checkpatch  scripts/checkpatch.pl over every patch in patches/
  upstream    the QEMU half on current QEMU (qemu-upstream, patches/upstream):
              that tree's vhost-user qtests, the cross-version test (its
              QEMU with the 7.2 virtiofsd, SIGKILLs under guest load), and
              that tree's checkpatch over patches/upstream

Usage: run-check.py [--stage NAME ...] [-k SUBSTRING]
"""

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import time
import unittest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'lib'))
import vmharness  # noqa: E402

BUILD = vmharness.QEMU_BUILD
RESULTS = os.path.join(TOP, 'build', 'results')
STAGES = ['workspace', 'unit', 'qtest', 'functional', 'avocado', 'fuzz',
          'torture', 'checkpatch', 'upstream']
TORTURE_CYCLES = int(os.environ.get('TORTURE_CYCLES', '20'))
FUZZ_SECONDS = int(os.environ.get('FUZZ_SECONDS', '15'))
# Functional tests of the project (modules under tests/functional).
FUNCTIONAL_DIR = os.path.join(TOP, 'tests', 'functional')
WORKSPACE_DIR = os.path.join(TOP, 'tests', 'workspace')


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def record(self, stage, name, status, secs, detail=''):
        print('%-10s %-6s %-60s %6.1fs' % (stage, status.upper(), name, secs),
              flush=True)
        if status == 'pass':
            self.passed += 1
        elif status == 'skip':
            self.skipped += 1
            if detail:
                print('           skipped: ' + detail, flush=True)
        else:
            self.failed += 1
            self.failures.append('%s %s' % (stage, name))
            if detail:
                for line in detail.rstrip().splitlines()[-40:]:
                    print('           | ' + line, flush=True)


def run(argv, timeout, cwd=None, env=None):
    """Run a command with a deadline; returns (rc, output).  On timeout the
    process group gets SIGTERM, so that a harness kills the guests and
    daemons it started (each in a session of its own), then SIGKILL; rc
    is None."""
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out.decode('utf-8', 'replace')
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        return None, out.decode('utf-8', 'replace') + \
            '\n[killed after %d s]' % timeout


# -- unit ------------------------------------------------------------------

# Unit tests of QEMU that the series changes, run as built binaries.
UNIT_BINARIES = ['tests/unit/test-char']
# The series' unit tests: meson suite "virtiofsd"
UNIT_SUITE = ['test-virtiofsd-lo-map', 'test-virtiofsd-fd-restore',
              'test-virtiofsd-session']


def tap_ok(rc, out):
    return rc == 0 and re.search(r'^ok ', out, re.M) and \
        not re.search(r'^(not ok|Bail out)', out, re.M)


def stage_unit(t, args):
    for binary in UNIT_BINARIES:
        t0 = time.monotonic()
        rc, out = run([os.path.join(BUILD, binary), '--tap'], 300, cwd=BUILD)
        n = len(re.findall(r'^ok ', out, re.M))
        t.record('unit', '%s (%d cases)' % (binary.split('/')[-1], n),
                 'pass' if tap_ok(rc, out) else 'fail',
                 time.monotonic() - t0, '' if tap_ok(rc, out) else out)
    # The series' own unit tests (virtiofsd's) form the meson suite
    # "virtiofsd"; each one expected here must be listed and must run
    # its cases: a skipped test (exit 77, or TAP cases marked SKIP) fails.
    rc, out = run(['meson', 'test', '--no-rebuild', '--list', '--suite',
                   'virtiofsd'], 60, cwd=BUILD)
    # Lines read "qemu:unit+virtiofsd / test-name"
    listed = [l.split(' / ')[-1].strip() for l in out.splitlines()
              if ' / ' in l] if rc == 0 else []
    for extra in sorted(set(listed) - set(UNIT_SUITE)):
        t.record('unit', extra, 'fail', 0,
                 'not in UNIT_SUITE of tests/run-check.py: add it there')
    for short in UNIT_SUITE:
        if args.k and args.k not in short:
            continue
        t0 = time.monotonic()
        if short not in listed:
            t.record('unit', short, 'fail', 0,
                     'meson test --list --suite virtiofsd does not list '
                     'it:\n' + out)
            continue
        rc, out = run(['meson', 'test', '--no-rebuild', '--verbose',
                       '--print-errorlogs', '--suite', 'virtiofsd', short],
                      300, cwd=BUILD)
        ran = re.search(r'^\s*\d+/\d+ .*%s\s+OK\s' % re.escape(short), out,
                        re.M)
        skipped = re.search(r'^\s*(?:\S+\s+)?ok \d+.*# SKIP', out,
                            re.M | re.I)
        ok = rc == 0 and ran and not skipped
        t.record('unit', short, 'pass' if ok else 'fail',
                 time.monotonic() - t0, '' if ok else out)


# -- qtest -----------------------------------------------------------------

# The series' qtests on the vhost-user-fs node (vhost-user/<name>)
QTEST_FS_EXPECTED = ['read-guest-mem/memfile', 'reconnect-server',
                     'connect-fail', 'reconnect', 'inflight', 'reconnect-ms',
                     'reconnect-stopped', 'reset-disconnected', 'stop-cont',
                     'unplug-disconnected', 'resume-idle',
                     'no-inflight-stall', 'packed', 'inflight-refused',
                     'handshake-death', 'inflight-death', 'multiqueue',
                     'multiqueue-inflight', 'flags-mismatch', 'stop-death']


def qtest_paths(build):
    qos = os.path.join(build, 'tests', 'qtest', 'qos-test')
    env = dict(os.environ, QTEST_QEMU_BINARY='./qemu-system-x86_64')
    rc, out = run([qos, '-l'], 60, cwd=build, env=env)
    if rc != 0:
        raise RuntimeError('qos-test -l failed:\n' + out)
    return [l.strip() for l in out.splitlines()
            if 'vhost-user' in l and l.strip().startswith('/')]


def run_qtests(t, args, stage, build, expected_fs):
    """Every qos-test path with vhost-user in it, in BUILD; the names in
    EXPECTED_FS must be among the vhost-user-fs node's paths."""
    qos = os.path.join(build, 'tests', 'qtest', 'qos-test')
    src = os.path.dirname(build)
    env = dict(os.environ, QTEST_QEMU_BINARY='./qemu-system-x86_64',
               QTEST_QEMU_IMG='./qemu-img',
               QTEST_QEMU_STORAGE_DAEMON_BINARY='./storage-daemon/qemu-storage-daemon',
               G_TEST_DBUS_DAEMON=os.path.join(src, 'tests', 'dbus-vmstate-daemon.sh'))
    try:
        paths = qtest_paths(build)
    except RuntimeError as e:
        t.record(stage, 'qos-test -l', 'fail', 0, str(e))
        return
    if not paths:
        t.record(stage, 'vhost-user paths', 'fail', 0,
                 'qos-test -l lists no vhost-user test')
        return
    # The series' vhost-user-fs tests must be among them: a path that
    # vanished (a test no longer registered, a node no longer found) fails
    for name in expected_fs:
        if args.k and args.k not in name:
            continue
        if not any('/vhost-user-fs' in p and p.endswith('/vhost-user/' + name)
                   for p in paths):
            t.record(stage, 'vhost-user-fs/.../vhost-user/' + name, 'fail',
                     0, 'qos-test -l does not list it:\n' + '\n'.join(paths))
    for path in paths:
        if args.k and args.k not in path:
            continue
        t0 = time.monotonic()
        rc, out = run([qos, '--tap', '-k', '-p', path], 120, cwd=build,
                      env=env)
        ok = tap_ok(rc, out)
        skipped = re.search(r'^ok \d+ .*# SKIP', out, re.M)
        status = 'pass' if ok and not skipped else 'fail'
        t.record(stage, '/'.join(path.split('/')[-3:]), status,
                 time.monotonic() - t0, '' if status == 'pass' else out)


def stage_qtest(t, args):
    run_qtests(t, args, 'qtest', BUILD, QTEST_FS_EXPECTED)


# -- functional --------------------------------------------------------------

class _Result(unittest.TestResult):
    """Records every outcome unittest can report in the tally: a failing
    subTest, an expected failure that passed and a skip are failures (a
    skipped test hides an untested behaviour); a passing subTest counts
    with its test."""

    def __init__(self, tally, stage):
        super().__init__()
        self.tally = tally
        self.stage = stage
        self.t0 = 0
        self.sub_failed = False

    def startTest(self, test):
        super().startTest(test)
        self.t0 = time.monotonic()
        self.sub_failed = False
        print('%-10s ....   %s' % (self.stage, test.id()), flush=True)

    def _name(self, test):
        return test.id().split('.', 1)[-1]

    def _record(self, test, status, detail=''):
        self.tally.record(self.stage, self._name(test), status,
                          time.monotonic() - self.t0, detail)

    def addSuccess(self, test):
        super().addSuccess(test)
        # A test whose subtests failed reaches addSuccess too
        if not self.sub_failed:
            self._record(test, 'pass')

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, 'fail', self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, 'fail', self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.sub_failed = True
            self._record(subtest, 'fail',
                         self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, 'fail', 'skipped: ' + reason)

    def addExpectedFailure(self, test, err):
        # The project marks no test as an expected failure: one that
        # appears is a check turned off.
        super().addExpectedFailure(test, err)
        self._record(test, 'fail', 'expected failure: ' +
                     self._exc_info_to_string(err, test))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, 'fail', 'unexpected success')


def run_unittests(t, args, stage, directory):
    """Every test_*.py under DIRECTORY; a module that does not import is
    a failure, and so is a directory that yields no test."""
    sys.path.insert(0, directory)
    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = ['*%s*' % args.k]
    suite = loader.discover(directory, pattern='test_*.py',
                            top_level_dir=directory)
    result = _Result(t, stage)
    suite.run(result)
    if result.testsRun == 0 and not args.k:
        t.record(stage, '(no tests found in %s)' % directory, 'fail', 0)


def stage_workspace(t, args):
    run_unittests(t, args, 'workspace', WORKSPACE_DIR)


def stage_functional(t, args):
    run_unittests(t, args, 'functional', FUNCTIONAL_DIR)


# -- avocado ---------------------------------------------------------------

def avocado_tests():
    """The avocado tests the series adds or changes (not the upstream ones,
    which need cloud images and ssh)."""
    rc, out = run(['git', 'diff', '--name-only', '--diff-filter=AM',
                   'base..HEAD', '--', 'tests/avocado/*.py'], 60,
                  cwd=os.path.join(TOP, 'qemu'))
    if rc != 0:
        raise RuntimeError('git diff base..HEAD in ./qemu failed:\n' + out)
    return sorted(l for l in out.split() if '/avocado_qemu/' not in l)


def stage_avocado(t, args):
    tests = avocado_tests()
    if not tests:
        t.record('avocado', '(stage)', 'fail', 0,
                 'the queue adds no tests/avocado/*.py: the series\' '
                 'avocado tests are gone')
        return
    env = dict(os.environ,
               VIRTIOFS_TEST_KERNEL=os.path.join(vmharness.GUEST_DIR, 'vmlinuz'),
               VIRTIOFS_TEST_INITRD=os.path.join(vmharness.GUEST_DIR, 'initrd.img'),
               VIRTIOFS_TEST_FIRMWARE=':'.join(vmharness.FIRMWARE_DIRS))
    results = os.path.join(BUILD, 'tests', 'results', 'latest')
    if os.path.lexists(results):
        os.unlink(results)      # never read a previous run's results
    t0 = time.monotonic()
    # QEMU's own machinery: check-venv installs tests/requirements.txt
    # (avocado-framework) from PyPI; FEDORA_31_DOWNLOAD= keeps get-vm-images
    # from downloading cloud images we do not use.
    rc, out = run(['make', '-s', 'check-avocado', 'FEDORA_31_DOWNLOAD=',
                   'AVOCADO_TESTS=' + ' '.join(tests), 'AVOCADO_SHOW=none'],
                  1200, cwd=BUILD, env=env)
    secs = time.monotonic() - t0
    results = os.path.join(results, 'results.tap')
    if not os.path.exists(results):
        t.record('avocado', 'check-avocado', 'fail', secs, out)
        return
    with open(results) as f:
        tap = f.read()
    seen = failed = 0
    for m in re.finditer(r'^(ok|not ok) \d+ (\S+)(.*)$', tap, re.M):
        seen += 1
        ok = m.group(1) == 'ok' and '# SKIP' not in m.group(3)
        failed += not ok
        t.record('avocado', m.group(2).split(':')[-1], 'pass' if ok else 'fail',
                 secs / max(1, len(tests)), '' if ok else out + tap)
    # Every test method of the files must have a result; and make must
    # not have failed although every test passed
    expected = 0
    for name in tests:
        with open(os.path.join(TOP, 'qemu', name)) as f:
            expected += len(re.findall(r'^    def test_', f.read(), re.M))
    if seen != expected or (rc != 0 and failed == 0):
        out += '\n%d results for %d test methods in %s\n' % (
            seen, expected, ' '.join(tests))
        t.record('avocado', 'check-avocado', 'fail', secs, out + tap)


# -- fuzz ------------------------------------------------------------------

def stage_fuzz(t, args):
    """Each fuzz target runs for FUZZ_SECONDS from fresh seeds; a crash,
    a leak or a sanitizer report fails it (libFuzzer exits non-zero)."""
    t0 = time.monotonic()
    targets = ['fuzz-lo-map', 'fuzz-session']
    rc, out = run(['make', '-s', '-C', os.path.join(TOP, 'tests', 'fuzz'),
                   'run', 'SECONDS=%d' % FUZZ_SECONDS],
                  len(targets) * FUZZ_SECONDS + 300)
    parts = dict(re.findall(r'^== (\S+)\n(.*?)(?=^== |\Z)', out, re.M | re.S))
    for name in targets:
        text = parts.get(name, '')
        runs = re.search(r'stat::number_of_executed_units:\s+(\d+)', text)
        ok = rc == 0 and runs is not None
        t.record('fuzz', '%s (%s runs)' % (name, runs.group(1) if runs
                                             else '?'),
                 'pass' if ok else 'fail', time.monotonic() - t0,
                 '' if ok else (text or out))


# -- torture ---------------------------------------------------------------

def stage_torture(t, args):
    """A short torture run with the real clients (fio, stress-ng): its
    last line must report every kill asked and all zeros."""
    t0 = time.monotonic()
    rc, out = run([sys.executable, os.path.join(TOP, 'tests', 'torture',
                                                'torture.py'),
                   '--cycles', str(TORTURE_CYCLES), '--seed', '1'],
                  TORTURE_CYCLES * 10 + 300)
    m = re.search(r'^torture: .*$', out, re.M)
    name = m.group(0) if m else 'torture (no result line)'
    ok = rc == 0 and m is not None
    if m:
        # Not only the status: the line itself (a count that is not
        # there, or a check that did not run, "?", fails)
        fields = dict((k, v) for v, k in
                      re.findall(r'(\S+) ([a-z-]+)(?:,|$)', m.group(0)))
        want = ('io-errors', 'mismatches', 'hung', 'leaked-fds',
                'fio-errors', 'stress-errors', 'daemon-crashes')
        ok = ok and fields.get('cycles') == str(TORTURE_CYCLES) and \
            all(fields.get(k) == '0' for k in want)
    t.record('torture', name, 'pass' if ok else 'fail',
             time.monotonic() - t0, '' if ok else out[-4000:])


# -- upstream ----------------------------------------------------------------

UPSTREAM_BUILD = os.path.join(TOP, 'qemu-upstream', 'build')
UPSTREAM_DIR = os.path.join(TOP, 'tests', 'upstream')
# The upstream queue's qtests on the vhost-user-fs node
QTEST_UPSTREAM_FS_EXPECTED = ['read-guest-mem/memfile', 'reconnect',
                              'reconnect-mq', 'inflight-reset',
                              'inflight-refused', 'inflight-start-death',
                              'flags-mismatch', 'handshake-death',
                              'reset-disconnected', 'stop-cont-disconnected',
                              'migrate-disconnected', 'no-inflight',
                              'no-inflight-paused', 'packed']


def stage_upstream(t, args):
    """The QEMU half on the newest QEMU Debian serves: that tree's
    vhost-user qtests (QEMU's own and the queue's), the cross-version
    test (its QEMU, our 7.2 virtiofsd under crash recovery), and
    checkpatch over the upstream queue with that tree's script."""
    run_qtests(t, args, 'upstream', UPSTREAM_BUILD, QTEST_UPSTREAM_FS_EXPECTED)
    run_unittests(t, args, 'upstream', UPSTREAM_DIR)
    run_checkpatch(t, args, 'upstream', os.path.join(TOP, 'patches', 'upstream'),
                   os.path.join(TOP, 'qemu-upstream'))


# -- checkpatch --------------------------------------------------------------

def run_checkpatch(t, args, stage, queue, tree):
    patches = sorted(p for p in glob.glob(os.path.join(queue, '*.patch'))
                     if not os.path.basename(p).startswith('0000-'))
    if not patches:
        t.record(stage, 'checkpatch (%s is empty)' % os.path.relpath(queue, TOP),
                 'fail', 0)
        return
    script = os.path.join(tree, 'scripts', 'checkpatch.pl')
    for p in patches:
        t0 = time.monotonic()
        rc, out = run(['perl', script, p], 120, cwd=tree)
        t.record(stage, os.path.basename(p), 'pass' if rc == 0 else 'fail',
                 time.monotonic() - t0, '' if rc == 0 else out)


def stage_checkpatch(t, args):
    run_checkpatch(t, args, 'checkpatch', os.path.join(TOP, 'patches'),
                   os.path.join(TOP, 'qemu'))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--stage', action='append', choices=STAGES)
    ap.add_argument('-k', help='only tests whose name contains this')
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    os.environ.setdefault('VIRTIOFS_TEST_WORKDIR', os.path.join(RESULTS, 'work'))
    t = Tally()
    t0 = time.monotonic()
    for stage in args.stage or STAGES:
        print('== %s' % stage, flush=True)
        try:
            globals()['stage_' + stage](t, args)
        except Exception as e:  # a broken stage is a failure, not a crash
            t.record(stage, '(stage)', 'fail', 0, repr(e))
    print('== done in %.0f s' % (time.monotonic() - t0))
    for f in t.failures:
        print('FAILED: ' + f)
    line = '%d passed, %d failed' % (t.passed, t.failed)
    if t.skipped:
        line += ', %d skipped' % t.skipped
    print(line, flush=True)
    sys.exit(1 if t.failed or t.passed == 0 else 0)


if __name__ == '__main__':
    main()
