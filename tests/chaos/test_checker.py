#!/usr/bin/env python3
"""The chaos checker against logs built by hand, so that each of its verdicts is shown to
fire: a checker that cannot fail would make every chaos run pass."""
import os
import struct
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402


class FakeRun:
    def __init__(self, rid, first_seq, durable, sent, local=0, spool_dir=None):
        self.id, self.slot, self.spool_dir, self.end_note = rid, "plain", spool_dir, "test"
        self.first = {"epoch": rid, "recovered_seq": first_seq - 2, "control_seq": first_seq - 1,
                      "first_seq": first_seq}
        self.durable, self.local, self.sent = durable, local, sent

    def ack_time(self, seq):
        return 1.0


def log(commits, controls, drop_verify=0):
    """cat output, cat --control stderr and verify's JSON for commits in log order."""
    out = b"".join(checker.LEN.pack(len(c)) + c for c in commits)
    err = b"".join(b'{"control_seq":%d,"epoch":1,"record":{}}\n' % s for s in controls)
    verify = {"ok": True, "commits": len(commits) - drop_verify,
              "last_seq": len(commits) + len(controls),
              "epochs": [{"control_seq": s} for s in controls]}
    return out, err, verify


def check(runs, commits, controls=(1,), refused=()):
    out, err, verify = log(commits, list(controls))
    return checker.check({r.id: r for r in runs}, out, err, verify, set(refused), lambda t: [])


def run_commits(rid, n):
    return [checker.commit_bytes(rid, k) for k in range(n)]


class CheckerTest(unittest.TestCase):
    def test_sound_log(self):
        r = check([FakeRun(1, 2, durable=11, sent=12)], run_commits(1, 12))
        self.assertEqual((r.acked, r.lost, r.duplicated, r.out_of_order, r.corrupt,
                          r.unacked_present), (10, 0, 0, 0, 0, 2))

    def test_lost_tail(self):
        r = check([FakeRun(1, 2, durable=11, sent=12)], run_commits(1, 9))
        self.assertEqual((r.lost, r.lost_list[0]["first_seq"], r.lost_list[0]["last_seq"]),
                         (1, 11, 11))

    def test_duplicate(self):
        c = run_commits(1, 10)
        r = check([FakeRun(1, 2, durable=11, sent=10)], c + [c[4]])
        self.assertEqual((r.duplicated, r.lost), (1, 0))

    def test_corrupt_byte(self):
        c = run_commits(1, 10)
        c[9] = c[9][:-1] + bytes([c[9][-1] ^ 1]) if len(c[9]) > 16 else c[9] + b"x"
        r = check([FakeRun(1, 2, durable=10, sent=10)], c)
        self.assertEqual((r.corrupt, r.lost), (1, 0))

    def test_swapped(self):
        c = run_commits(1, 10)
        c[3], c[4] = c[4], c[3]
        r = check([FakeRun(1, 2, durable=11, sent=10)], c)
        self.assertEqual((r.out_of_order, r.lost), (2, 0))

    def test_two_runs_and_a_control_record(self):
        a, b = run_commits(1, 5), run_commits(2, 5)  # run 2's control record at seq 7
        runs = [FakeRun(1, 2, durable=6, sent=5), FakeRun(2, 8, durable=12, sent=5)]
        r = check(runs, a + b, controls=(1, 7))
        self.assertEqual((r.acked, r.lost, r.out_of_order), (10, 0, 0))
        runs[1] = FakeRun(2, 9, durable=13, sent=5)  # the log has run 2 one seq early
        r = check(runs, a + b, controls=(1, 7))
        self.assertEqual((r.out_of_order, r.lost), (5, 0))

    def test_local_acks_stranded_only_after_a_refusal(self):
        run = FakeRun(1, 2, durable=5, sent=10, local=11, spool_dir="/s")
        commits = run_commits(1, 4)
        r = check([run], commits)
        self.assertEqual((r.lost, r.stranded), (6, 0))
        r = check([run], commits, refused=("/s",))
        self.assertEqual((r.lost, r.stranded), (0, 6))
        r = check([run], run_commits(1, 3), refused=("/s",))  # S3-durable is never stranded
        self.assertEqual((r.lost, r.stranded), (1, 6))

    def test_ack_past_what_was_sent(self):
        r = check([FakeRun(1, 2, durable=11, sent=5)], run_commits(1, 5))
        self.assertEqual(r.corrupt, 1)


class TearTailTest(unittest.TestCase):
    """Segments as this version writes them: a BEGIN naming the segment, every frame with
    the life's tag, then zeros (O_DIRECT padding, a prepared file) or an old life."""
    NAME = "00000000000000000002.seg"
    TAG = 0x1234ABCD

    def frame(self, typ, first, last, plen, tag=TAG):
        head = checker.SEG_FRAME.pack(checker.SEG_MAGIC, typ, 3, plen, last - first + 1, first,
                                      last, 1, 0x11111111, tag)
        return head + b"p" * plen + b"\0" * (((plen + 7) & ~7) - plen)

    def segment(self, d, frames, tail=b"\0" * 4096, name=NAME):
        data = self.frame(checker.SEG_BEGIN, 2, 2, 0) + b"".join(frames) + tail
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def torn(self, frames, acked, says):
        """Tears a segment of these frames (10 bytes asked for); the bytes that changed."""
        with tempfile.TemporaryDirectory() as d:
            path, before = self.segment(d, frames)
            self.assertIn(says, checker.tear_tail(d, acked, 10, b"j" * 64))
            after = self.read(path)
        self.assertEqual(len(after), len(before))
        return [i for i in range(len(before)) if before[i] != after[i]]

    def test_tears_a_chunk_past_the_acks_in_its_payload(self):
        diff = self.torn([self.frame(checker.SEG_CHUNK, 2, 2, 100),
                          self.frame(checker.SEG_CHUNK, 3, 4, 100)], 2, "tore 10 bytes")
        last = 48 + 152  # the BEGIN and the first chunk
        self.assertEqual(diff, list(range(last + 48 + 90, last + 48 + 100)))

    def test_an_acked_last_chunk_gets_a_header_after_it(self):
        with tempfile.TemporaryDirectory() as d:
            path, before = self.segment(d, [self.frame(checker.SEG_CHUNK, 2, 4, 100)])
            self.assertIn("wrote a frame header", checker.tear_tail(d, 4, 10, b"j" * 64))
            after = self.read(path)
            self.assertEqual(len(after), len(before))
            end = 48 + 152
            self.assertEqual(after[:end], before[:end])
            magic, typ, flags, plen, _, first, _, _, _, tag = checker.SEG_FRAME.unpack_from(after, end)
            self.assertEqual((magic, typ, first, tag), (checker.SEG_MAGIC, checker.SEG_CHUNK, 5,
                                                        self.TAG))
            self.assertTrue(flags & checker.SEG_CRC_TAG)
            self.assertGreater(plen, 0)
            got, tag = checker.seg_frames(self.NAME, after)
            self.assertEqual(len(got), 3)  # decodes with the life's tag: its CRC must cut it

    def test_a_seal_gets_a_wrong_crc(self):
        diff = self.torn([self.frame(checker.SEG_CHUNK, 2, 4, 100),
                          self.frame(checker.SEG_SEAL, 2, 4, 0)], 4, "tore the CRC")
        self.assertEqual(diff, list(range(48 + 152 + 40, 48 + 152 + 44)))

    def test_counts_skip_frames_of_the_current_life(self):
        with tempfile.TemporaryDirectory() as d:
            old = self.frame(checker.SEG_SKIP, 9, 9, 0, tag=0x77777777)
            self.segment(d, [self.frame(checker.SEG_SKIP, 2, 3, 0),
                             self.frame(checker.SEG_CHUNK, 4, 4, 100),
                             self.frame(checker.SEG_SKIP, 5, 6, 0)], tail=old)
            self.assertEqual(checker.skip_frames(d), 2)

    def test_stops_at_an_old_life_and_leaves_closed_segments(self):
        with tempfile.TemporaryDirectory() as d:
            old = self.frame(checker.SEG_CHUNK, 9, 9, 40, tag=0x77777777)
            path, before = self.segment(d, [self.frame(checker.SEG_CHUNK, 2, 4, 100)], tail=old)
            self.assertIn("wrote a frame header", checker.tear_tail(d, 4, 10, b"j" * 64))
            self.assertEqual(self.read(path)[48 + 152:48 + 152 + 4],
                             struct.pack("<I", checker.SEG_MAGIC))
        with tempfile.TemporaryDirectory() as d:
            self.segment(d, [self.frame(checker.SEG_CHUNK, 2, 4, 100),
                             self.frame(checker.SEG_END, 2, 2, 0)])
            self.assertTrue(checker.tear_tail(d, 0, 10, b"j" * 64).startswith("left"))
        with tempfile.TemporaryDirectory() as d:  # renamed into place, nothing written yet
            self.segment(d, [], name="00000000000000000007.seg")
            self.assertTrue(checker.tear_tail(d, 0, 10, b"j" * 64).startswith("left"))
            # with a segment before it: that one is the tail
            self.segment(d, [self.frame(checker.SEG_CHUNK, 2, 4, 100)])
            self.assertIn(f"tore 10 bytes of the last frame of {self.NAME}",
                          checker.tear_tail(d, 0, 10, b"j" * 64))


if __name__ == "__main__":
    unittest.main()
