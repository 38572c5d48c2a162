#!/usr/bin/env python3
"""The chaos driver's tears (checker.tear_tail) against the spool's own open. On real
segments (chaos-segtool mk: frames with their CRCs and the life's tag, then the padding
zeros of an O_DIRECT write, an old life's frame, or nothing), every tear the driver makes
must be cut by the open (the scan's cut, which the stage logs as event=spool_tail_cut), and
every commit it was told was acknowledged must stay. test_checker.py checks which bytes a tear changes; this checks
that the spool reads each tear as one."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402

TOOL = os.environ.get("S3C_SEGTOOL")  # set by ctest: build/tests/chaos-segtool
SEG = 2
# (frames after the BEGIN, the last commit seq they hold: a CHUNK's or a SKIP's)
LAYOUTS = [
    (["chunk:2-4:50", "chunk:5-6:50"], 6),
    (["chunk:2-4:50", "block:5"], 5),  # the frames end on a block boundary
    (["chunk:2-4:50", "chunk:5-5:0"], 5),  # a last chunk of one empty commit
    (["chunk:2-4:50", "seal:2-4"], 4),
    (["chunk:2-4:50", "skip:5-9"], 9),
    (["chunk:2-4:50", "block:5", "seal:2-5"], 5),
    (["object:2:100"], 0),
    ([], 0),
]
TAILS = ["none", "zeros", "old", "oldnear"]


@unittest.skipUnless(TOOL, "S3C_SEGTOOL is not set (run through ctest)")
class TearScanTest(unittest.TestCase):
    def open_spool(self, d):
        out = subprocess.run([TOOL, "open", d], capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout)

    def test_every_tear_is_cut_and_keeps_the_acknowledged(self):
        tears = lefts = 0
        for frames, last_commit in LAYOUTS:
            for tail in TAILS:
                for acked in sorted({0, 3, last_commit}):
                    for nbytes in (1, 7, 36, 60):
                        d = tempfile.mkdtemp(prefix="s3c-tear-")
                        try:
                            subprocess.run([TOOL, "mk", d, str(SEG), "0x1234abcd", tail] + frames,
                                           check=True, timeout=30)
                            what = checker.tear_tail(d, acked, nbytes,
                                                     random.Random(nbytes).randbytes(64))
                            got = self.open_spool(d)
                        finally:
                            shutil.rmtree(d)
                        case = f"{frames} tail={tail} acked={acked} nbytes={nbytes}: {what}; {got}"
                        self.assertEqual(got["rc"], 0, case)
                        if what.startswith("left"):
                            lefts += 1
                            self.assertEqual(got["cut"], 0, case)
                            continue
                        tears += 1
                        self.assertEqual(got["cut"], 1, case)
                        self.assertGreaterEqual(got["last_commit_seq"], min(acked, last_commit),
                                                case)
        self.assertGreater(tears, 0)
        print(f"{tears} tears cut, {lefts} segments left alone", file=sys.stderr)

    def test_layouts_open_whole_untorn(self):
        for frames, last_commit in LAYOUTS:
            for tail in TAILS:
                d = tempfile.mkdtemp(prefix="s3c-tear-")
                try:
                    subprocess.run([TOOL, "mk", d, str(SEG), "0x1234abcd", tail] + frames,
                                   check=True, timeout=30)
                    got = self.open_spool(d)
                finally:
                    shutil.rmtree(d)
                self.assertEqual((got["rc"], got["cut"]), (0, 0), f"{frames} {tail}: {got}")
                self.assertEqual(got["last_commit_seq"], last_commit, f"{frames} {tail}: {got}")


if __name__ == "__main__":
    unittest.main()
