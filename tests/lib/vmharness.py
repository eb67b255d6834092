"""Host-side harness for the virtio-fs tests: real QEMU, real virtiofsd,
the project's guest image.

Every process a Harness starts is killed by pid when the Harness closes,
whether the test passed or not; every wait has a deadline and raises
TimeoutError naming what it waited for.
"""

import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def _terminate(signum, frame):
    # SIGTERM (run-check.py's deadline) unwinds the stack, so every
    # Harness closes and kills what it started, by pid
    sys.exit(128 + signum)


if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _terminate)

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
QEMU_BUILD = os.environ.get('QEMU_BUILD', os.path.join(TOP, 'qemu', 'build'))
GUEST_DIR = os.environ.get('GUEST_DIR', os.path.join(TOP, 'build', 'guest'))
QEMU_BIN = os.path.join(QEMU_BUILD, 'qemu-system-x86_64')
VIRTIOFSD_BIN = os.environ.get(
    'VIRTIOFSD_BIN', os.path.join(QEMU_BUILD, 'tools', 'virtiofsd', 'virtiofsd'))
FIRMWARE_DIRS = ['/usr/share/qemu', '/usr/share/seabios']

WL_LINE = re.compile(r'^WL (\S+) (\S+) (\S+) (\S+) (\S+)(.*)$')
WL_SUMMARY = re.compile(r'^WL SUMMARY (.*)$')


def kvm_usable():
    """KVM is used only when a probe showed a guest really boots with it
    (set VIRTIOFS_TEST_ACCEL=kvm after such a probe); TCG otherwise."""
    return os.environ.get('VIRTIOFS_TEST_ACCEL') == 'kvm'


def children(pid):
    """The pids of pid's children (of every thread of pid)."""
    res = []
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return res
    for tid in tasks:
        try:
            with open('/proc/%d/task/%s/children' % (pid, tid)) as f:
                res += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return res


def process_tree(pid):
    """pid and all its descendants, parents before children."""
    tree = [pid]
    i = 0
    while i < len(tree):
        tree += [c for c in children(tree[i]) if c not in tree]
        i += 1
    return tree


def proc_state(pid):
    """pid's state letter in /proc (R, S, T, Z ...), None if it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except OSError:
        return None


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state != 'Z'


def host_can_lock(path, flock=False):
    """Can another process take a write lock on the file now?  A POSIX
    lock (lockf), or with flock a BSD lock (flock(2))."""
    fd = os.open(path, os.O_RDONLY if flock else os.O_RDWR)
    lock = fcntl.flock if flock else fcntl.lockf
    try:
        lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock(fd, fcntl.LOCK_UN)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)


def mix64(z):
    m = (1 << 64) - 1
    z = (z + 0x9e3779b97f4a7c15) & m
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & m
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & m
    return z ^ (z >> 31)


def hold_pattern(off, length, seed):
    """The bytes "workload hold" writes at file offsets off.. (see
    hold_pattern() in tests/guest/workload.c)."""
    base = mix64(seed ^ 0x484f4c44)
    words = b''.join(mix64(base ^ w).to_bytes(8, 'little')
                     for w in range(off >> 3, (off + length + 7) >> 3))
    return words[off & 7:(off & 7) + length]


def wait_until(pred, what, timeout, interval=0.05):
    """Poll pred until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if res:
            return res
        if time.monotonic() > deadline:
            raise TimeoutError('%s: not within %.0f s' % (what, timeout))
        time.sleep(interval)


def wait_output(proc, pattern, timeout, what=None):
    """Wait for a line of proc's log matching pattern; return the match."""
    if not hasattr(pattern, 'search'):
        pattern = re.compile(pattern, re.M)
    rx = pattern
    return wait_until(lambda: rx.search(proc.output()), what or rx.pattern,
                      timeout, 0.01)


class Proc:
    """A child process in its own session, killed by pid on close."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, 'ab')
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError('%s (pid %d) did not exit within %.1f s'
                               % (self.name, self.pid, timeout)) from None

    def kill(self):
        """SIGKILL the process by pid, then anything left in its session
        (virtiofsd's sandbox child), and reap it."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def output(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')


class Harness:
    """One guest with one virtio-fs share.  Use as a context manager."""

    def __init__(self, name, workdir=None, keep=False):
        self.name = name
        base = workdir or os.environ.get('VIRTIOFS_TEST_WORKDIR')
        if base:
            os.makedirs(base, exist_ok=True)
        # Absolute: virtiofsd's sandbox cannot bind-mount a relative source
        self.dir = os.path.abspath(tempfile.mkdtemp(prefix=name + '.',
                                                    dir=base))
        self.keep = keep or bool(os.environ.get('VIRTIOFS_TEST_KEEP'))
        self.procs = []
        self.shared = os.path.join(self.dir, 'shared')
        os.mkdir(self.shared)
        self.sock = os.path.join(self.dir, 'vfs.sock')
        self.console = os.path.join(self.dir, 'console.log')
        self.qemu = None
        self.virtiofsd = None
        self.hold = None
        self._console_pos = 0
        # The QEMU binary: the series' 7.2 one unless a test says otherwise
        # (the upstream stage runs the upstream queue's QEMU against the
        # 7.2 virtiofsd)
        self.qemu_bin = QEMU_BIN

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self.hold is not None:
            self.hold.close()
        for p in reversed(self.procs):
            p.kill()
        self.procs = []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines=30):
        """The end of every log of this harness, for failure messages."""
        out = []
        for p in self.procs:
            text = p.output().splitlines()[-lines:]
            out.append('--- %s (pid %d) log:' % (p.name, p.pid))
            out.extend(text)
        if os.path.exists(self.console):
            out.append('--- guest console:')
            out.extend(self.read_console().splitlines()[-lines:])
        return '\n'.join(out)

    # -- processes --------------------------------------------------------

    def start_virtiofsd(self, options=('cache=auto',), extra=(), timeout=10):
        argv = [VIRTIOFSD_BIN, '--socket-path=' + self.sock,
                '-o', 'source=' + self.shared]
        for o in options:
            argv += ['-o', o]
        argv += list(extra)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        p = Proc('virtiofsd', argv, os.path.join(self.dir, 'virtiofsd.log'))
        self.procs.append(p)
        self.virtiofsd = p
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if not p.alive():
                raise RuntimeError('virtiofsd exited with %s before listening:\n%s'
                                   % (p.popen.returncode, p.output()))
            if time.monotonic() > deadline:
                raise TimeoutError('virtiofsd socket %s not there after %d s'
                                   % (self.sock, timeout))
            time.sleep(0.02)
        return p

    def qemu_argv(self, append, mem_mb=512, smp=2, chardev_opts='',
                  extra=()):
        accel = 'kvm' if kvm_usable() else 'tcg'
        argv = [self.qemu_bin]
        for d in FIRMWARE_DIRS:
            argv += ['-L', d]
        argv += [
            '-M', 'q35,accel=%s' % accel, '-m', str(mem_mb), '-smp', str(smp),
            '-object', 'memory-backend-memfd,id=mem,size=%dM,share=on' % mem_mb,
            '-numa', 'node,memdev=mem',
            '-display', 'none', '-vga', 'none', '-nic', 'none',
            '-no-reboot', '-monitor', 'none',
            '-chardev', 'file,id=con,path=' + self.console,
            '-serial', 'chardev:con',
            '-chardev', 'socket,id=vfs,path=%s%s' % (self.sock, chardev_opts),
            '-device', 'vhost-user-fs-pci,chardev=vfs,tag=share',
            '-kernel', os.path.join(GUEST_DIR, 'vmlinuz'),
            '-initrd', os.path.join(GUEST_DIR, 'initrd.img'),
            '-append', 'console=ttyS0 quiet panic=-1 ' + append,
        ]
        return argv + list(extra)

    def start_qemu(self, append, **kw):
        argv = self.qemu_argv(append, **kw)
        # A new QEMU writes its console log from the start
        self._console_pos = 0
        p = Proc('qemu', argv, os.path.join(self.dir, 'qemu.log'))
        self.procs.append(p)
        self.qemu = p
        return p

    def start_qemu_hold(self, append='', timeout=90, extra=(), **kw):
        """Start QEMU with the guest in "workload hold" mode: its commands
        come from ttyS1, a unix socket QEMU listens on, and its WL lines
        go to the console.  Waits until the guest reads commands and
        returns the Hold that sends them."""
        path = os.path.join(self.dir, 'ctl.sock')
        ctl = ['-chardev', 'socket,id=ctl,path=%s,server=on,wait=off' % path,
               '-serial', 'chardev:ctl']
        self.start_qemu(('wl.ctl=ttyS1 ' + append).strip(),
                        extra=ctl + list(extra), **kw)
        deadline = time.monotonic() + 10
        while True:
            try:
                s = unix_connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not self.qemu.alive() or time.monotonic() > deadline:
                    raise RuntimeError('no control socket from QEMU\n%s'
                                       % self.log_tail())
                time.sleep(0.05)
        self.hold = Hold(self, s)
        # Bytes that reach the UART before the workload opens ttyS1 are
        # lost (the open clears its FIFO): wait until the workload runs.
        self.wait_console(r'^WL main \d+ setup \S+ ok', timeout,
                          'the hold workload')
        return self.hold

    def start_supervised_virtiofsd(self, state_dir, options=('cache=auto',),
                                   timeout=10, env=None, wrapper=(),
                                   binary=None):
        """virtiofsd -o reconnect,state_dir=state_dir: the process started
        is the holder of the fd table, and it runs the daemon proper as a
        worker it restarts (tools/virtiofsd/fd_holder.c).  Returns the
        holder's Proc; its log has every worker's lines.  wrapper: argv
        run before virtiofsd's (it must exec it); binary: another
        virtiofsd.  Killed with the harness: the holder by pid, its
        workers through its process group and their PR_SET_PDEATHSIG."""
        argv = list(wrapper) + [binary or VIRTIOFSD_BIN,
                                '--socket-path=' + self.sock,
                                '-o', 'source=' + self.shared,
                                '-o', 'reconnect', '-o',
                                'state_dir=' + state_dir]
        for o in options:
            argv += ['-o', o]
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        p = Proc('holder', argv, os.path.join(self.dir, 'holder.log'),
                 env=env)
        self.procs.append(p)
        self.supervisor = p
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if not p.alive() or time.monotonic() > deadline:
                raise RuntimeError('virtiofsd is not listening:\n'
                                   + p.output())
            time.sleep(0.02)
        return p

    def supervised_child_pid(self, timeout=10):
        """The pid of the worker the holder runs now."""
        deadline = time.monotonic() + timeout
        while True:
            kids = children(self.supervisor.pid)
            if kids:
                return kids[0]
            if not self.supervisor.alive() or time.monotonic() > deadline:
                raise RuntimeError('the holder runs no worker')
            time.sleep(0.01)

    # -- the guest console ------------------------------------------------

    def read_console(self):
        try:
            with open(self.console, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def wait_console(self, pattern, timeout, what=None):
        """Wait for a console line matching pattern (a regex) that comes
        after the previous match; return the match."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            # Whether QEMU is gone is read first: what it printed before
            # exiting is then in the console file read next
            dead = self.qemu is not None and not self.qemu.alive()
            text = self.read_console()
            m = rx.search(text, self._console_pos)
            if m:
                self._console_pos = m.end()
                return m
            if dead:
                raise RuntimeError('QEMU exited (%s) before the guest printed %s\n%s'
                                   % (self.qemu.popen.returncode, what or pattern,
                                      self.log_tail()))
            if time.monotonic() > deadline:
                raise TimeoutError('guest did not print %s within %d s\n%s'
                                   % (what or pattern, timeout, self.log_tail()))
            time.sleep(0.05)


class HoldLine:
    """One WL line of "workload hold": op, path, result ("ok",
    "err=EIO", ...) and the key=value fields after it (ms= included)."""

    def __init__(self, text, op, path, result, rest):
        self.text = text
        self.op = op
        self.path = path
        self.result = result
        self.fields = dict(kv.split('=', 1) for kv in rest.split()
                           if '=' in kv)

    @property
    def ok(self):
        return self.result == 'ok'

    def __repr__(self):
        return repr(self.text)


class Hold:
    """The guest's "workload hold": one command a line on ttyS1, one WL
    line per command on the console, numbered from 0."""

    def __init__(self, harness, sock):
        self.h = harness
        self.sock = sock
        self.seq = 0
        self.lines = []

    def send(self, command):
        """Send a command without waiting; returns its sequence number."""
        self.sock.sendall(command.encode() + b'\n')
        self.seq += 1
        return self.seq - 1

    def wait(self, seq, timeout=30):
        """Wait for the WL line of command number seq."""
        m = self.h.wait_console(r'^WL hold %d (\S+) (\S+) (\S+)([^\n]*)\n'
                                % seq, timeout, 'WL line %d' % seq)
        line = HoldLine(m.group(0).strip(), m.group(1), m.group(2),
                        m.group(3), m.group(4))
        self.lines.append(line)
        return line

    def cmd(self, command, timeout=30):
        """Run one command and return its HoldLine."""
        return self.wait(self.send(command), timeout)

    def close(self):
        self.sock.close()


def parse_workload(text):
    """Parse the workload's WL lines: returns (summary dict, failing lines)."""
    summary = None
    bad = []
    for line in text.splitlines():
        line = line.strip()
        m = WL_SUMMARY.match(line)
        if m:
            summary = dict(kv.split('=', 1) for kv in m.group(1).split())
            summary = {k: int(v) for k, v in summary.items()}
            continue
        m = WL_LINE.match(line)
        if m and m.group(1) not in ('START', 'SUMMARY') and m.group(5) != 'ok':
            bad.append(line)
    return summary, bad


# A data worker's "write" line: its file and the generation it now holds
WL_WRITE = re.compile(r'^WL w\d+ \d+ write \S*/(w\d+\.f\d+) ok .*\bgen=(\d+)',
                      re.M)


def written_gens(text, workers, files):
    """For "workload data --verify-only --gens": the generation of each
    data file w<i>.f<j> (w0.f0, w0.f1, ...) that the last "write ... ok"
    line of it in the guest's log says, so that a file rolled back to an
    older generation, whole and consistent, fails the host's check."""
    last = dict(WL_WRITE.findall(text))
    names = ['w%d.f%d' % (i, j) for i in range(workers) for j in range(files)]
    missing = [n for n in names if n not in last]
    if missing:
        raise RuntimeError('the guest never wrote %s' % ' '.join(missing))
    return ','.join(last[n] for n in names)



def host_verify(h, console, data_args, workers, files):
    """Verify the data files the guest wrote, on the host side of the
    share, with the guest's own workload program: each file at the
    generation the guest last wrote to it (from its console), and its
    length.  data_args name the guest's paths (/mnt/...).  Returns
    (exit status, output, summary dict or None)."""
    wl = os.path.join(TOP, 'tests', 'guest', 'workload')
    host_args = [a.replace('/mnt', h.shared) for a in data_args]
    gens = written_gens(console, workers, files)
    r = subprocess.run([wl, 'data', '--verify-only', '--gens', gens] +
                       host_args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    out = r.stdout.decode()
    return r.returncode, out, parse_workload(out)[0]

def unix_connect(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s
