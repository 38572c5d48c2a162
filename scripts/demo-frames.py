#!/usr/bin/env python3
"""Framed commits for `s3commit run` on stdout (u32 little-endian length, then the bytes),
for scripts/demo.sh. Commit i of run R reads "demo run R commit i|" and is padded to 64..1087
bytes, so whose it is shows in the log. Stops quietly when the reader goes away (the demo
kills it with -9).

Usage: demo-frames.py RUN COUNT RATE
  COUNT  commits to write; 0 = until the reader goes away
  RATE   commits per second, written every 10 ms; 0 = as fast as the pipe takes them
"""
import struct
import sys
import time


FILLER = b"abcdefghijklmnopqrstuvwxyz" * 44


def commit(run, i):
    head = b"demo run %d commit %d|" % (run, i)
    size = 64 + (i * 7919 + run * 104729) % 1024
    return head + FILLER[i % 26 : i % 26 + size - len(head)]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    run, count, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    out = sys.stdout.buffer
    start = time.monotonic()
    i = 0
    try:
        while count == 0 or i < count:
            # Everything due by now (all of it without a rate), in one write.
            due = count if rate == 0 else int((time.monotonic() - start) * rate) + 1
            if count:
                due = min(due, count)
            if due > i:
                chunk = []
                for k in range(i, due):
                    c = commit(run, k)
                    chunk.append(struct.pack("<I", len(c)) + c)
                out.write(b"".join(chunk))
                out.flush()
                i = due
            elif rate:
                time.sleep(0.01)
    except BrokenPipeError:
        sys.stderr.close()  # the reader is gone: nothing to say about it
        return


if __name__ == "__main__":
    main()
