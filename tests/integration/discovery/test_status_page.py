"""The token status page, rendered by a real headless Chromium.

muster-discovery answers a browser (Accept: text/html) on a token URL with a
page: the token's size, registrations, status, age and expiry, and each
member.  Chromium (Debian's) loads the token URL exactly as an operator's
browser would, dumps the DOM it built, and takes a screenshot; the test reads
the DOM's text and checks the screenshot's pixels (decoded here: PNG with
zlib) for the page's colours -- the "waiting" box and the late joiner's red
-- so a page that did not render fails.  The screenshot is kept in
MUSTER_ARTIFACT_DIR (the build's artifacts/) for a person to look at.
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import unittest
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from harness import Discovery, ProcessGroup, request  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(group, *args):
    profile = group.path("chromium-profile")
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--user-data-dir=" + profile] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


def png_pixels(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB/RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return width, height, rows


@unittest.skipUnless(os.path.exists(CHROMIUM), "Debian's chromium is needed")
class StatusPageTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-status-page-")
        self.addCleanup(self.group.close)
        self.disc = Discovery(self.group)

    def test_chromium_renders_the_token_page(self):
        url = self.disc.new_token(2)
        path = url[len(self.disc.url):]
        for i, (mid, name) in enumerate([("4d59f8148bb377e2", "infra0"),
                                         ("91bc3c398fb3c146", "infra1"),
                                         ("a1b2c3d4e5f60718", "infra2")]):
            st, _, body = request(self.disc.url, "PUT", "%s/%s?prevExist=false" % (path, mid),
                                  "value=%s%%3Dhttp%%3A%%2F%%2F10.0.1.%d%%3A2380" % (name, 10 + i))
            self.assertEqual(st, 201, body)
        # etcd's client still gets JSON on the same URL.
        st, h, body = request(self.disc.url, "GET", path)
        self.assertEqual((st, h["content-type"].split(";")[0]), (200, "application/json"))

        dom = chromium(self.group, "--dump-dom", url)
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        text = re.sub(r"<[^>]+>", " ", dom.stdout)
        text = re.sub(r"\s+", " ", text)
        self.assertIn("cluster size 2", text)
        self.assertIn("registered 3", text)
        self.assertIn("status complete", text)
        self.assertRegex(text, r"age \d+ seconds? created \d{4}-\d\d-\d\d")
        # 168 h from now, less the seconds since: "6 days 23 hours".
        self.assertRegex(text, r"expires in 6 days 23 hours at \d{4}-\d\d-\d\d")
        for name, ip in (("infra0", "10.0.1.10"), ("infra1", "10.0.1.11")):
            self.assertRegex(text, name + r" http://" + re.escape(ip) + r":2380 \d+ seconds? ago member")
        self.assertRegex(text, r"infra2 http://10\.0\.1\.12:2380 \d+ seconds? ago late joiner")

        shot = self.group.path("token-page.png")
        r = chromium(self.group, "--window-size=1100,640", "--screenshot=" + shot, url)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        width, height, rows = png_pixels(shot)
        self.assertEqual((width, height), (1100, 640))
        colours = {}
        for row in rows:
            for px in row:
                colours[px] = colours.get(px, 0) + 1
        # The complete box's green (#e7f6e7) fills an area, the late joiner's
        # row has red text (#a33 family), the table header its grey.
        near = lambda want, tol=6: sum(n for c, n in colours.items()
                                       if all(abs(c[i] - want[i]) <= tol for i in range(3)))
        self.assertGreater(near((0xe7, 0xf6, 0xe7)), 2000, "no green status box")
        self.assertGreater(near((0xf3, 0xf4, 0xf8)), 2000, "no table header")
        reds = sum(n for c, n in colours.items() if c[0] > 120 and c[1] < 90 and c[2] < 90)
        self.assertGreater(reds, 50, "no late-joiner row in red")
        out = os.environ.get("MUSTER_ARTIFACT_DIR")
        if out:
            os.makedirs(out, exist_ok=True)
            shutil.copy(shot, os.path.join(out, "discovery-token-page.png"))

    def test_waiting_token_shows_how_many_are_missing(self):
        url = self.disc.new_token(3)
        dom = chromium(self.group, "--dump-dom", url)
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom.stdout))
        self.assertIn("status waiting for 3 more members", text)
        self.assertIn("No member has registered yet.", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
