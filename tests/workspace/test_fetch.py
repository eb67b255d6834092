"""qemu-submodule/fetch.sh and scripts/add-deb-src.sh against stand-in
apt-get, apt-cache, dpkg-source and id (tests/workspace/stubs), placed
first on PATH: no network, no root, a few seconds.

Each case builds a small top directory (the real fetch.sh and
add-deb-src.sh, a pin for a fixture source package, a one-patch queue)
and a fake archive, runs fetch.sh, and checks the exact outcome: the tree
materialised with the queue applied, or exactly one line on stderr and a
non-zero status, with nothing left behind.
"""

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import unittest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
STUBS = os.path.join(TOP, 'tests', 'workspace', 'stubs')

PIN = '1:7.2+dfsg-7+deb12u18'
DEB822 = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
OTHER_REPO = """Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""
PATCH = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: A Developer <dev@example.org>
Date: Mon, 1 Jan 2024 00:00:00 +0000
Subject: [PATCH] hello: add a file

Signed-off-by: A Developer <dev@example.org>
---
 hello.txt | 1 +
 1 file changed, 1 insertion(+)
 create mode 100644 hello.txt

diff --git a/hello.txt b/hello.txt
new file mode 100644
index 0000000..ce01362
--- /dev/null
+++ b/hello.txt
@@ -0,0 +1 @@
+hello
--
2.39.5

"""


def _tar_xz(path, files):
    """A .tar.xz with FILES ({name: text}) under their names."""
    with tarfile.open(path, 'w:xz') as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class _FetchBase(unittest.TestCase):
    """A top directory, a fake archive and the commands to check them."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='workspace-')
        self.addCleanup(shutil.rmtree, self.dir)
        self.top = os.path.join(self.dir, 'top')
        self.apt = os.path.join(self.dir, 'apt')
        for d in ('qemu-submodule', 'scripts', 'patches'):
            os.makedirs(os.path.join(self.top, d))
        shutil.copy(os.path.join(TOP, 'qemu-submodule', 'fetch.sh'),
                    os.path.join(self.top, 'qemu-submodule'))
        shutil.copy(os.path.join(TOP, 'scripts', 'add-deb-src.sh'),
                    os.path.join(self.top, 'scripts'))
        with open(os.path.join(self.top, 'patches', '0001-hello.patch'),
                  'w') as f:
            f.write(PATCH)
        with open(os.path.join(self.top, 'patches', 'series'), 'w') as f:
            f.write('0001-hello.patch\n')
        os.makedirs(os.path.join(self.apt, 'etc', 'sources.list.d'))
        self.write_sources('debian.sources', DEB822)
        self.write_sources('nodesource.sources', OTHER_REPO)
        self.archive = os.path.join(self.apt, 'archive')
        os.makedirs(self.archive)
        self.versions = []
        self.sums = self.add_version(PIN)
        self.write_pin(*self.sums)

    # -- fixtures ----------------------------------------------------------

    def write_sources(self, name, text):
        with open(os.path.join(self.apt, 'etc', 'sources.list.d', name),
                  'w') as f:
            f.write(text)

    def add_version(self, version, qemu_version='7.2.22', suite=None):
        """Put a source package of VERSION into the fake archive; returns
        the sha256 of its orig and debian tarballs."""
        d = os.path.join(self.archive, version.replace(':', '_'))
        os.makedirs(d)
        nv = version.split(':', 1)[1]
        upver = nv.rsplit('-', 1)[0]
        orig = os.path.join(d, 'qemu_%s.orig.tar.xz' % upver)
        deb = os.path.join(d, 'qemu_%s.debian.tar.xz' % nv)
        _tar_xz(orig, {'qemu-%s/VERSION' % upver: qemu_version + '\n',
                       'qemu-%s/README.rst' % upver: 'QEMU\n'})
        _tar_xz(deb, {'debian/changelog': 'qemu (%s) bookworm\n' % version})
        with open(os.path.join(d, 'qemu_%s.dsc' % nv), 'w') as f:
            f.write('Source: qemu\nVersion: %s\n' % version)
        self.versions.append(version if suite is None
                             else '%s %s' % (version, suite))
        with open(os.path.join(self.archive, 'versions'), 'w') as f:
            f.write(''.join(v + '\n' for v in self.versions))
        return _sha256(orig), _sha256(deb)

    def write_pin(self, sha_orig, sha_debian):
        with open(os.path.join(self.top, 'qemu-submodule', 'pin'), 'w') as f:
            f.write('PIN_PACKAGE=qemu\nPIN_VERSION=%s\nPIN_UPSTREAM=7.2.22\n'
                    'PIN_SHA256_orig=%s\nPIN_SHA256_debian=%s\n'
                    'PIN_COMMIT_DATE=2025-01-01T00:00:00Z\n'
                    % (PIN, sha_orig, sha_debian))

    def deb_src_present(self):
        """The machine already has a deb-src entry and up-to-date lists."""
        self.write_sources('debian.sources',
                           DEB822.replace('Types: deb\n',
                                          'Types: deb deb-src\n'))
        os.makedirs(os.path.join(self.apt, 'lists'))
        with open(os.path.join(self.apt, 'lists', 'deb-src'), 'w') as f:
            f.write('bookworm\nbookworm-updates\nbookworm-security\n')

    def fetch(self, uid=0, pin=None):
        env = dict(os.environ, PATH=STUBS + ':' + os.environ['PATH'],
                   FAKE_APT=self.apt, FAKE_UID=str(uid),
                   APT_ETC=os.path.join(self.apt, 'etc'))
        p = subprocess.run(['bash', os.path.join(self.top, 'qemu-submodule',
                                                 'fetch.sh'), self.top] +
                           ([pin] if pin else []),
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def git(self, *args):
        return subprocess.run(['git', '-C', os.path.join(self.top, 'qemu')] +
                              list(args), check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE).stdout.decode().strip()

    # -- checks ------------------------------------------------------------

    def assert_materialised(self, rc, out, err, version=PIN):
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(err, '')
        tree = os.path.join(self.top, 'qemu')
        with open(os.path.join(tree, 'VERSION')) as f:
            self.assertEqual(f.read(), '7.2.22\n')
        with open(os.path.join(tree, 'hello.txt')) as f:
            self.assertEqual(f.read(), 'hello\n')
        self.assertFalse(os.path.exists(os.path.join(tree, 'debian')))
        self.assertEqual(self.git('rev-list', '--count', 'base..HEAD'), '1')
        self.assertEqual(self.git('log', '-1', '--format=%s', 'base'),
                         "QEMU 7.2.22 as in Debian's qemu %s" % version)
        self.assertEqual(self.git('status', '--porcelain'), '')
        self.assertTrue(out.rstrip().endswith(
            '[qemu] ./qemu ready: base %s + 1 patches'
            % self.git('rev-parse', '--short', 'base')), out)
        # Nothing but the tree and the queue beside it (dpkg-source copies
        # the tarballs next to the directory it unpacks into)
        self.assertEqual(sorted(os.listdir(self.top)),
                         ['.cache', 'patches', 'qemu', 'qemu-submodule',
                          'scripts'])

    def assert_refused(self, rc, out, err, line):
        self.assertNotEqual(rc, 0, out + err)
        self.assertEqual(err, 'make qemu: ' + line + '\n')
        self.assertFalse(os.path.exists(os.path.join(self.top, 'qemu')))
        self.assertFalse(os.path.exists(os.path.join(self.top, 'qemu.tmp')))

    def calls(self):
        with open(os.path.join(self.apt, 'calls')) as f:
            return f.read()



class FetchTest(_FetchBase):
    """fetch.sh from a machine with no deb-src entry up to ./qemu."""

    def test_no_deb_src_as_root(self):
        """A new Debian 12 machine: only 'deb' entries.  The entry is added
        for Debian's archives only, apt-get update runs, the tree comes."""
        rc, out, err = self.fetch(uid=0)
        self.assert_materialised(rc, out, err)
        self.assertIn("[qemu] no deb-src entry: adding one for the machine's "
                      "Debian archive\n", out)
        with open(os.path.join(self.apt, 'etc', 'sources.list.d',
                               'qemu-reconnect-deb-src.sources')) as f:
            added = f.read()
        self.assertEqual(added.count('Types: deb-src\n'), 2)
        self.assertIn('URIs: http://deb.debian.org/debian-security\n', added)
        self.assertIn('Suites: bookworm bookworm-updates\n', added)
        self.assertNotIn('nodesource', added)
        self.assertIn('apt-get update', self.calls())

    def test_deb_src_present(self):
        """With a deb-src entry, nothing is added and apt is not updated."""
        self.deb_src_present()
        rc, out, err = self.fetch(uid=1000)
        self.assert_materialised(rc, out, err)
        self.assertNotIn('apt-get update', self.calls())
        self.assertEqual(os.listdir(os.path.join(self.apt, 'etc',
                                                 'sources.list.d')).count(
            'qemu-reconnect-deb-src.sources'), 0)

    def test_no_deb_src_not_root(self):
        rc, out, err = self.fetch(uid=1000)
        self.assert_refused(
            rc, out, err,
            "no deb-src entry for Debian's archive, and not root to add one: "
            "run as root, or add 'Types: deb deb-src' to "
            "/etc/apt/sources.list.d/debian.sources and run 'apt-get update'")

    def test_update_fails(self):
        open(os.path.join(self.apt, 'unreachable'), 'w').close()
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            "apt-get update failed: is Debian's archive reachable? "
            "(log: .cache/src/apt-update.log)")

    def test_source_download_fails(self):
        self.deb_src_present()
        open(os.path.join(self.apt, 'unreachable'), 'w').close()
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            "apt-get source qemu=%s failed: is Debian's archive reachable? "
            "(log: .cache/src/apt-source.log)" % PIN)

    def test_pin_gone(self):
        """The pinned revision has left the archive: the newest 7.2
        revision is used (sort -V: u20 after u9), and the output says so."""
        shutil.rmtree(os.path.join(self.archive, PIN.replace(':', '_')))
        self.versions = []
        self.add_version('1:7.2+dfsg-7+deb12u9')
        self.add_version('1:7.2+dfsg-7+deb12u20')
        self.add_version('1:10.2.2+ds-1', qemu_version='10.2.2')
        rc, out, err = self.fetch(uid=0)
        self.assert_materialised(rc, out, err, '1:7.2+dfsg-7+deb12u20')
        self.assertIn('[qemu] pinned %s has left the archive; using the newest '
                      '7.2 revision, 1:7.2+dfsg-7+deb12u20 (update '
                      'qemu-submodule/pin)\n' % PIN, out)

    def test_no_7_2(self):
        shutil.rmtree(os.path.join(self.archive, PIN.replace(':', '_')))
        self.versions = []
        self.add_version('1:8.2.1+ds-1', qemu_version='8.2.1')
        self.add_version('1:10.2.2+ds-1', qemu_version='10.2.2')
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            "Debian's archive offers no qemu 7.2 source (it has: "
            "1:8.2.1+ds-1 1:10.2.2+ds-1); the series needs 7.2: point apt "
            "at bookworm")

    def test_checksum_mismatch(self):
        self.write_pin('0' * 64, self.sums[1])
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            "checksum of qemu_7.2+dfsg.orig.tar.xz does not match "
            "qemu-submodule/pin (got %s): remove .cache/src to download it "
            "again, or check the pin" % self.sums[0])

    def test_debian_checksum_mismatch(self):
        self.write_pin(self.sums[0], 'f' * 64)
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            "checksum of qemu_7.2+dfsg-7+deb12u18.debian.tar.xz does not "
            "match qemu-submodule/pin (got %s): remove .cache/src to "
            "download it again, or check the pin" % self.sums[1])

    def test_tree_not_7_2(self):
        """A 7.2 revision whose tree says otherwise is refused."""
        self.deb_src_present()
        shutil.rmtree(os.path.join(self.archive, PIN.replace(':', '_')))
        self.versions = []
        self.add_version('1:7.2+dfsg-7+deb12u19', qemu_version='8.0.0')
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(
            rc, out, err,
            'the unpacked tree is QEMU 8.0.0, not 7.2.x; this series needs 7.2')

    def test_missing_patch(self):
        with open(os.path.join(self.top, 'patches', 'series'), 'a') as f:
            f.write('0002-gone.patch\n')
        rc, out, err = self.fetch(uid=0)
        self.assert_refused(rc, out, err,
                            'patches/series names 0002-gone.patch, which is '
                            'missing')

    def test_second_run_and_unexported_work(self):
        """A second run finds the tree up to date; work in ./qemu that is
        not in patches/ is never overwritten."""
        rc, out, err = self.fetch(uid=0)
        self.assert_materialised(rc, out, err)
        rc, out, err = self.fetch(uid=0)
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(out, '[qemu] ./qemu is up to date with patches/ '
                              '(1 patches on base)\n')
        with open(os.path.join(self.top, 'qemu', 'hello.txt'), 'a') as f:
            f.write('work\n')
        with open(os.path.join(self.top, 'patches', 'series'), 'w') as f:
            f.write('')
        rc, out, err = self.fetch(uid=0)
        self.assertNotEqual(rc, 0)
        self.assertEqual(err, "make qemu: ./qemu has uncommitted changes; "
                              "commit them there and run 'make "
                              "export-patches', or remove ./qemu\n")
        with open(os.path.join(self.top, 'qemu', 'hello.txt')) as f:
            self.assertEqual(f.read(), 'hello\nwork\n')


class FetchUpstreamTest(_FetchBase):
    """The upstream pin: its line comes from sid, whose deb-src entry is
    added next to bookworm's; its tree and queue have their own places."""

    UP = '1:10.2.2+ds-1'

    def setUp(self):
        super().setUp()
        self.deb_src_present()
        sums = self.add_version(self.UP, qemu_version='10.2.2', suite='sid')
        os.makedirs(os.path.join(self.top, 'patches', 'upstream'))
        os.rename(os.path.join(self.top, 'patches', '0001-hello.patch'),
                  os.path.join(self.top, 'patches', 'upstream',
                               '0001-hello.patch'))
        os.rename(os.path.join(self.top, 'patches', 'series'),
                  os.path.join(self.top, 'patches', 'upstream', 'series'))
        self.pin = os.path.join(self.top, 'qemu-submodule', 'pin-upstream')
        with open(self.pin, 'w') as f:
            f.write('PIN_PACKAGE=qemu\nPIN_VERSION=%s\nPIN_LINE=10.2\n'
                    'PIN_SHA256_orig=%s\nPIN_SHA256_debian=%s\n'
                    'PIN_COMMIT_DATE=2025-01-01T00:00:00Z\n'
                    'PIN_TREE=qemu-upstream\nPIN_PATCHES=patches/upstream\n'
                    'PIN_SUITES=sid\nPIN_HINT="update the pin"\n'
                    % ((self.UP,) + sums))

    def test_sid_added(self):
        rc, out, err = self.fetch(uid=0, pin=self.pin)
        self.assertEqual((rc, err), (0, ''), out)
        tree = os.path.join(self.top, 'qemu-upstream')
        with open(os.path.join(tree, 'VERSION')) as f:
            self.assertEqual(f.read(), '10.2.2\n')
        self.assertTrue(os.path.exists(os.path.join(tree, 'hello.txt')))
        self.assertFalse(os.path.exists(os.path.join(self.top, 'qemu')))
        self.assertIn('[qemu-upstream] no deb-src entry for sid: adding one '
                      "for the machine's Debian archive\n", out)
        with open(os.path.join(self.apt, 'etc', 'sources.list.d',
                               'qemu-reconnect-deb-src-sid.sources')) as f:
            self.assertEqual(f.read(),
                             'Types: deb-src\n'
                             'URIs: http://deb.debian.org/debian\n'
                             'Suites: sid\nComponents: main\n'
                             'Signed-By: /usr/share/keyrings/'
                             'debian-archive-keyring.gpg\n\n')
        self.assertTrue(out.endswith('[qemu-upstream] ./qemu-upstream ready: '
                                     'base %s + 1 patches\n' % self.git_up(
                                         'rev-parse', '--short', 'base')))

    def test_line_gone(self):
        rm = os.path.join(self.archive, self.UP.replace(':', '_'))
        shutil.rmtree(rm)
        with open(os.path.join(self.archive, 'versions'), 'w') as f:
            f.write('%s\n1:11.1.3+ds-1 sid\n' % PIN)
        rc, out, err = self.fetch(uid=0, pin=self.pin)
        self.assertNotEqual(rc, 0)
        self.assertEqual(err, "make qemu-upstream: Debian's archive offers no "
                              "qemu 10.2 source (it has: %s 1:11.1.3+ds-1); "
                              "the series needs 10.2: update the pin\n" % PIN)

    def git_up(self, *args):
        return subprocess.run(['git', '-C', os.path.join(self.top,
                                                         'qemu-upstream')] +
                              list(args), check=True, stdout=subprocess.PIPE
                              ).stdout.decode().strip()


class AddDebSrcTest(unittest.TestCase):
    """scripts/add-deb-src.sh mirrors Debian 'deb' entries, both formats."""

    def setUp(self):
        self.etc = tempfile.mkdtemp(prefix='apt-etc-')
        self.addCleanup(shutil.rmtree, self.etc)
        os.makedirs(os.path.join(self.etc, 'sources.list.d'))

    def run_script(self):
        p = subprocess.run(['bash', os.path.join(TOP, 'scripts',
                                                 'add-deb-src.sh')],
                           env=dict(os.environ, APT_ETC=self.etc),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def added(self):
        with open(os.path.join(self.etc, 'sources.list.d',
                               'qemu-reconnect-deb-src.sources')) as f:
            return f.read()

    def test_one_line_format(self):
        with open(os.path.join(self.etc, 'sources.list'), 'w') as f:
            f.write('# comment\n'
                    'deb [signed-by=/k.gpg] http://deb.debian.org/debian '
                    'bookworm main contrib\n'
                    'deb https://packages.example.com/apt stable main\n')
        rc, out, err = self.run_script()
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(self.added(),
                         'Types: deb-src\nURIs: http://deb.debian.org/debian\n'
                         'Suites: bookworm\nComponents: main contrib\n\n')

    def test_deb822_twice_is_idempotent(self):
        with open(os.path.join(self.etc, 'sources.list.d', 'debian.sources'),
                  'w') as f:
            f.write(DEB822)
        self.assertEqual(self.run_script()[0], 0)
        first = self.added()
        self.assertEqual(self.run_script()[0], 0)
        self.assertEqual(self.added(), first)
        self.assertEqual(first.count('Types: deb-src\n'), 2)

    def test_no_debian_entry(self):
        with open(os.path.join(self.etc, 'sources.list.d', 'other.sources'),
                  'w') as f:
            f.write(OTHER_REPO)
        rc, out, err = self.run_script()
        self.assertEqual(rc, 1)
        self.assertEqual(err, "add-deb-src: no Debian 'deb' entry found in %s "
                              "to mirror; add a deb-src entry for Debian's "
                              "archive by hand\n" % self.etc)
        self.assertFalse(os.path.exists(os.path.join(
            self.etc, 'sources.list.d', 'qemu-reconnect-deb-src.sources')))


if __name__ == '__main__':
    unittest.main()
