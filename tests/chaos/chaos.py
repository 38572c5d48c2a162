#!/usr/bin/env python3
"""The chaos suite (issue 15, docs/reliability.md): for a seed and a duration, real
s3commit-mock and `s3commit run` processes under a seeded schedule of faults, several at
once, then the whole log read back and every acknowledgement checked (lost, duplicated,
out of order, corrupt). Same seed, same schedule; the schedule is printed first.

  chaos.py --bin build/bin --seed S --duration D        one episode (exit 1 on a finding)
  chaos.py --bin build/bin --total T --duration D       random seeds until T seconds pass
Processes it starts it stops by pid; nothing but 127.0.0.1 is contacted."""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from episode import SLOTS, Episode  # noqa: E402

NET_FAULTS = ("storm", "written_error", "reset", "stall", "latency", "conflict")


def make_schedule(seed, duration):
    """Every random choice of an episode, from the seed alone: process events (kill -9,
    SIGTERM, takeover, mock restart, spool fill) and windows of store faults, which overlap."""
    rng = random.Random(seed)
    events, windows = [], []
    t = rng.uniform(0.8, 2.0)
    while t < duration - 1.0:
        kind = rng.choices(("kill9", "sigterm", "takeover", "mock_restart", "spool_full"),
                           weights=(44, 12, 22, 12, 10))[0]
        e = {"t": round(t, 2), "kind": kind}
        if kind == "kill9":
            e.update(delay=round(rng.uniform(0.0, 0.8), 2), torn=rng.random() < 0.5,
                     torn_bytes=rng.randint(1, 60), junk=rng.getrandbits(32))
        elif kind == "sigterm":
            e.update(delay=round(rng.uniform(0.0, 0.5), 2))
        elif kind == "takeover":
            e.update(to=rng.choice(SLOTS), strand=rng.random() < 0.12)
        elif kind == "mock_restart":
            e.update(sig=rng.choice(("KILL", "KILL", "TERM")), down=round(rng.uniform(0.1, 2.0), 2))
        else:
            e.update(storm=round(rng.uniform(2.0, 4.0), 2))
        events.append(e)
        t += rng.uniform(0.8, 3.0)
    t = rng.uniform(0.3, 1.5)
    while t < duration - 1.0:
        kind = rng.choice(NET_FAULTS)
        length = rng.uniform(1.0, 5.0)
        scope = "log" if kind == "storm" else rng.choice(("log", "all"))
        s = {"storm": lambda: {"error_rate": 1.0, "error_status": 503},
             "written_error": lambda: {"written_error_rate": round(rng.uniform(0.05, 0.4), 3)},
             "reset": lambda: {"reset_rate": round(rng.uniform(0.03, 0.25), 3)},
             "stall": lambda: {"stall_rate": round(rng.uniform(0.02, 0.12), 3)},
             "latency": lambda: {"latency_ms": rng.randint(30, 400),
                                 "latency_jitter_ms": rng.randint(0, 200)},
             "conflict": lambda: {"conflict_rate": round(rng.uniform(0.1, 0.5), 3)}}[kind]()
        windows.append({"t": round(t, 2), "end": round(min(t + length, duration), 2),
                        "kind": kind, "scope": scope, "set": s})
        t += rng.uniform(0.8, 3.5)
    knobs = {"batch_size_threshold": rng.choice((20, 100, 500)),
             "max_in_flight_requests": rng.choice((1, 2, 4)), "rate": rng.choice((400, 800, 1500)),
             "first_slot": rng.choice(SLOTS)}
    return {"seed": seed, "duration": duration, "events": events, "windows": windows,
            "knobs": knobs, "mock_seed": seed & 0x7FFFFFFF}


def log_line(msg):
    print(msg, flush=True)


def run_one(args, seed, duration):
    sched = make_schedule(seed, duration)
    for e in sched["events"]:
        log_line("schedule: " + json.dumps(e, sort_keys=True))
    for w in sched["windows"]:
        log_line("schedule: " + json.dumps(w, sort_keys=True))
    log_line("schedule: knobs " + json.dumps(sched["knobs"], sort_keys=True))
    work = tempfile.mkdtemp(prefix=f"s3c-chaos-{seed}.", dir=args.work)
    ep = Episode(args.bin, work, sched, args.verbose, strand=not args.no_strand)
    try:
        summary = ep.run()
    except Exception as exc:  # a driver failure is a failed seed, with its files kept
        ep.kill_all()
        log_line(f"chaos: seed={seed} driver error: {exc!r}; files in {work}")
        return {"seed": seed, "ok": False, "error": repr(exc)}
    log_line(json.dumps(summary, sort_keys=True))
    r = summary
    log_line(f"chaos: seed={seed} duration={duration} faults={r['faults']} acked={r['acked']} "
             f"lost={r['lost']} duplicated={r['duplicated']} out_of_order={r['out_of_order']} "
             f"corrupt={r['corrupt']} epochs={r['epochs']} unacked_present={r['unacked_present']} "
             f"stranded={r['stranded']} seeks={r.get('seeks', 0)}")
    if r["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log_line(f"chaos: files in {work}; replay: make chaos SEED={seed} EPISODE={duration}")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("S3C_BIN_DIR", "build/bin"))
    ap.add_argument("--seed", type=int, action="append", help="replay these seeds (repeatable)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of faults per seed")
    ap.add_argument("--total", type=float, help="random seeds until this many seconds passed")
    ap.add_argument("--work", default=None, help="where episode directories go (default: TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep every episode's files")
    ap.add_argument("--no-strand", action="store_true",
                    help="never take over from (or switch away from) a spool writer with a "
                         "backlog: skip that event instead")
    ap.add_argument("--verbose", action="store_true", help="print what the driver does")
    ap.add_argument("--expect", action="append", default=[], metavar="CLASS",
                    help="fail unless this fault class was applied at least once over all the "
                         "seeds (repeatable): a fault whose code stopped applying it is a check "
                         "that cannot fail")
    args = ap.parse_args()
    if not args.seed and not args.total:
        ap.error("give --seed S or --total SECONDS")
    results, t0 = [], time.monotonic()
    seeds = list(args.seed or [])
    while True:
        if seeds:
            seed = seeds.pop(0)
        elif args.total and time.monotonic() - t0 + args.duration <= args.total:
            seed = random.SystemRandom().randrange(1, 2**31)
        else:
            break
        log_line(f"chaos: seed={seed} duration={args.duration} "
                 f"(replay: make chaos SEED={seed} EPISODE={args.duration:g})")
        results.append(run_one(args, seed, args.duration))
    tot = {"seeds": [r["seed"] for r in results], "failed_seeds": [r["seed"] for r in results if not r["ok"]],
           "seconds": round(time.monotonic() - t0, 1)}
    for k in ("faults", "acked", "lost", "duplicated", "out_of_order", "corrupt", "epochs",
              "unacked_present", "stranded", "commits_in_log", "seeks"):
        tot[k] = sum(r.get(k, 0) for r in results)
    counts = {}
    for r in results:
        for k, v in r.get("fault_counts", {}).items():
            counts[k] = counts.get(k, 0) + v
    tot["fault_counts"] = counts
    if len(results) > 1:
        log_line("chaos total: " + json.dumps(tot, sort_keys=True))
        log_line(f"chaos total: seeds={len(results)} failed={len(tot['failed_seeds'])} "
                 f"seconds={tot['seconds']} faults={tot['faults']} acked={tot['acked']} "
                 f"lost={tot['lost']} duplicated={tot['duplicated']} "
                 f"out_of_order={tot['out_of_order']} corrupt={tot['corrupt']} "
                 f"kill9={counts.get('kill9', 0)} takeovers={counts.get('takeover', 0)} "
                 f"torn_tails={counts.get('torn_tail', 0)} cut={counts.get('torn_tail_cut', 0)} "
                 f"unopened={counts.get('torn_unopened', 0)} "
                 f"kill9_over_skips={counts.get('kill9_over_skips', 0)} "
                 f"seeks={tot['seeks']}")
    missing = [k for k in args.expect if not counts.get(k)]
    if missing:
        log_line(f"chaos: fault classes never applied over these seeds: {', '.join(missing)} "
                 "(fault_counts above; a schedule or a fault's code changed)")
    return 0 if results and all(r["ok"] for r in results) and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
