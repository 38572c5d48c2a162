"""One chaos episode: the mock and the writers as real processes, the schedule's events
applied in order on one thread (process faults) and its fault windows on another (the
store), every acknowledgement recorded, then faults off, every writer stopped, every
spool drained, and the log read back and checked (checker.py). It stops only the
processes it started, by pid, and never waits without a bound."""
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.request

import checker

BUCKET = "chaos"
PREFIX = "c/"
SLOTS = ("plain", "spool", "small")  # writer configs: no spool, a spool, a tiny spool
SPOOLED = ("spool", "small")
# What counts as an applied fault (the `faults=` figure); the rest of `fault_counts`
# says what the faults led to (exits, refusals, detections).
FAULT_CLASSES = ("kill9", "sigterm", "takeover", "strand", "mock_restart", "storm",
                 "written_error", "reset", "stall", "latency", "conflict", "spool_full",
                 "torn_tail")
REFUSED_WORDS = "move spool.dir aside"  # the open refused a spool (docs/spool.md)
FAULTS_OFF = {"error_rate": 0, "error_status": 503, "written_error_rate": 0, "reset_rate": 0,
              "stall_rate": 0, "latency_ms": 0, "latency_jitter_ms": 0, "conflict_rate": 0,
              "key_prefix": ""}




def merge_faults(active, prefix):
    """One /_mock/faults body from the windows active now: the highest of each setting,
    limited to the log's keys when any active window asks for that."""
    body = dict(FAULTS_OFF)
    for w in active:
        for k, v in w["set"].items():
            body[k] = v if k == "error_status" else max(body[k], v)
        if w["scope"] == "log":
            body["key_prefix"] = prefix + "log/"
    return body


class Run:
    """One `s3commit run` process and everything it printed."""

    def __init__(self, rid, slot, spool_dir, proc, t):
        self.id, self.slot, self.spool_dir, self.proc, self.start_t = rid, slot, spool_dir, proc, t
        self.first, self.durable, self.local, self.sent = None, 0, 0, 0
        self.reader = None  # the thread reading its stdout
        self.first_t = self.end_t = None
        self.acks = []  # (t, "durable"|"local", value), each a new high
        self.stop, self.paused = threading.Event(), threading.Event()
        self.end_note, self.rc, self.expect = "", None, "running"
        self.anomalies = []

    def alive(self):
        return self.proc.poll() is None

    def ack_time(self, seq):
        for t, kind, v in self.acks:
            if v >= seq:
                return round(t, 2)
        return None

    def backlog(self):
        """Commits sent to it that are not durable yet (0 when drained)."""
        if not self.first:
            return self.sent
        return max(0, self.first["first_seq"] + self.sent - 1 - self.durable) if self.sent else 0


class Mock:
    def __init__(self, binary, data_dir, seed, log):
        self.bin, self.dir, self.seed, self.log = binary, data_dir, seed, log
        self.proc, self.port, self.lock = None, 0, threading.Lock()

    def start(self):
        for _ in range(50):
            p = subprocess.Popen([self.bin, "--listen", f"127.0.0.1:{self.port}", "--bucket",
                                  BUCKET, "--data-dir", self.dir, "--seed", str(self.seed),
                                  "--threads", "2"], stdout=subprocess.PIPE, stderr=self.log)
            line = p.stdout.readline().decode()
            if line.startswith("listening on"):
                self.port = int(line.strip().rsplit(":", 1)[1])
                self.proc = p
                threading.Thread(target=p.stdout.read, daemon=True).start()
                return
            p.wait()
            time.sleep(0.2)  # the port is still held: try again on the same one
        raise RuntimeError(f"s3commit-mock would not start on port {self.port}")

    def stop(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(20)

    def put_faults(self, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/_mock/faults",
                                     data=json.dumps(body).encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=2) as r:
            r.read()

    def metric(self, port, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None



class Episode:
    def __init__(self, bindir, work, sched, verbose=False, strand=True):
        self.bin, self.work, self.s, self.verbose = bindir, work, sched, verbose
        self.allow_strand = strand  # False: never leave a spool with a backlog behind
        self.s3commit = os.path.join(bindir, "s3commit")
        self.runs, self.next_id, self.current, self.lingering = {}, 1, None, []
        self.gen = {slot: 0 for slot in SPOOLED}
        self.refused_dirs, self.torn_pending, self.problems = set(), {}, []
        self.stranding_dirs = set()  # spools a takeover or switch left with a backlog
        self.counts = {k: 0 for k in FAULT_CLASSES}
        self.fault_log = []  # (t0, t1, what): windows and process events, for reports
        self.dyn_windows, self.seen_windows = [], set()
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.faults_set, self.faults_dirty = None, True
        self.events_log = open(os.path.join(work, "events.log"), "w")
        self.t0 = time.monotonic()

    # ---- bookkeeping
    def now(self):
        return time.monotonic() - self.t0

    def note(self, msg):
        line = f"{self.now():8.2f} {msg}"
        self.events_log.write(line + "\n")
        self.events_log.flush()
        if self.verbose:
            print("chaos: " + line, flush=True)

    def count(self, what, n=1):
        self.counts[what] = self.counts.get(what, 0) + n

    def problem(self, msg):
        self.problems.append(f"t={self.now():.2f} {msg}")
        self.note("PROBLEM " + msg)

    def event(self, what):
        t = self.now()
        self.fault_log.append((t, t, what))
        self.note(what)

    def faults_near(self, t, span=3.0):
        if t is None:
            return []
        return [f"{w} ({a:.2f}-{b:.2f})" for a, b, w in self.fault_log if a - span <= t <= b + span]

    def stderr_of(self, run):
        with open(os.path.join(self.work, f"run-{run.id}.err"), "rb") as f:
            return f.read().decode(errors="replace")

    # ---- writers
    def spool_dir(self, slot):
        return os.path.join(self.work, f"spool-{slot}-{self.gen[slot]}")

    def config(self, slot, name):
        k = self.s["knobs"]
        cfg = {"s3": {"endpoint": f"http://127.0.0.1:{self.mock.port}", "bucket": BUCKET,
                      "prefix": PREFIX, "connect_timeout_ms": 1000, "request_timeout_ms": 4000,
                      "low_speed_time_ms": 1000,
                      # S3C_TEST_DIRECT_PUT=0 (ctest's test_chaos_short_libcurl_put):
                      # libcurl's PUTs; else direct.c's, the default for http://
                      "direct_put": os.environ.get("S3C_TEST_DIRECT_PUT") != "0"},
               "persistence": {"batch_timeout_ms": 5,
                               "batch_size_threshold": k["batch_size_threshold"],
                               "batch_bytes_threshold": 65536,
                               "max_in_flight_requests": k["max_in_flight_requests"],
                               "target_pool_size": 2 * k["max_in_flight_requests"],
                               "max_retry_attempts": 3, "retry_base_delay_ms": 20,
                               "max_retry_delay_ms": 300, "heartbeat_interval_ms": 1000,
                               "manifest_interval_ms": 200, "writer_heartbeat_interval_ms": 500,
                               "shutdown_timeout_ms": 8000},
               "pipeline": {"ring_bytes": 1 << 20, "max_commit_bytes": 8192},
               "log": {"level": "info"}}
        if slot == "spool":
            cfg["spool"] = {"dir": self.spool_dir(slot), "max_bytes": 64 << 20,
                            "segment_bytes": 262144}
        elif slot == "small":  # 2 segments: full within a second of a 503 storm
            cfg["spool"] = {"dir": self.spool_dir(slot), "max_bytes": 294912,
                            "segment_bytes": 147456}
            cfg["metrics"] = {"listen": "127.0.0.1:0"}
        elif slot == "reader":
            cfg["persistence"]["max_retry_attempts"] = 20
        if slot != "reader":
            # Each run's own compression and upload checksum (an rng of its own, so the
            # seed's schedule stays as it was): a replay then re-forms a batch another run
            # sent compressed, or not, and settles that earlier attempt.
            rr = random.Random(f"{self.s['seed']}/{name}")
            cfg["s3"]["compression"] = rr.choice(("none", "zstd"))
            cfg["s3"]["checksum"] = rr.choice(("crc32c", "md5", "sha256"))
            self.count("zstd_runs" if cfg["s3"]["compression"] == "zstd" else "plain_runs")
        path = os.path.join(self.work, f"config-{name}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def start_writer(self, slot, produce=True):
        rid = self.next_id
        self.next_id += 1
        cfg = self.config(slot, rid)
        with open(os.path.join(self.work, f"run-{rid}.err"), "wb") as err:
            p = subprocess.Popen([self.s3commit, "run", "--config", cfg],
                                 stdin=subprocess.PIPE if produce else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err)
        run = Run(rid, slot, self.spool_dir(slot) if slot in SPOOLED else None, p, self.now())
        run.torn = self.torn_pending.pop(run.spool_dir, None)
        self.runs[rid] = run
        run.reader = threading.Thread(target=self.read_stdout, args=(run,), daemon=True)
        run.reader.start()
        if produce:
            threading.Thread(target=self.produce, args=(run,), daemon=True).start()
        self.note(f"run {rid} started: slot={slot} pid={p.pid} spool={run.spool_dir}")
        return run

    def read_stdout(self, run):
        for line in run.proc.stdout:
            try:
                o = json.loads(line)
            except ValueError:
                run.anomalies.append(f"not JSON on stdout: {line[:80]!r}")
                continue
            t = self.now()
            if "first_seq" in o:
                run.first, run.first_t = o, t
                continue
            kind = "durable" if "durable_seq" in o else "local" if "local_seq" in o else None
            if kind is None:
                run.anomalies.append(f"unknown stdout line {o}")
                continue
            v = o[kind + "_seq"]
            if v <= getattr(run, kind):
                run.anomalies.append(f"{kind}_seq {v} does not go up")
            elif kind == "durable" and run.first and v <= run.first["recovered_seq"]:
                run.anomalies.append(f"durable_seq {v} not past the run's recovered_seq")
            else:
                setattr(run, kind, v)
                run.acks.append((t, kind, v))
        run.proc.stdout.close()

    def produce(self, run):
        """Frames to the run's stdin at the seed's rate; `sent` is raised before a write, so
        it bounds what the run could have read. This thread alone closes the run's stdin,
        so its descriptor is never reused under a write (by the next run's pipe)."""
        try:
            self.produce_frames(run)
        finally:
            try:
                run.proc.stdin.close()
            except OSError:
                pass

    def produce_frames(self, run):
        n = max(1, int(self.s["knobs"]["rate"] * 0.02))
        deadline = time.monotonic() + 30
        while run.first is None:
            if not run.alive() or run.stop.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.01)
        fd, idx = run.proc.stdin.fileno(), 0
        while not run.stop.is_set():
            if run.paused.is_set():
                time.sleep(0.01)
                continue
            view = memoryview(checker.frames(run.id, idx, n))
            idx += n
            run.sent = idx
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                return  # the run is gone (EPIPE)
            time.sleep(0.02)

    def finish(self, run):
        """Records how a run that exited ended; checks a torn tail it was to cut."""
        run.stop.set()
        if run.rc is not None:
            return
        run.rc = run.proc.wait()
        # Every line it printed is read before anything looks at its acks (a torn tail
        # must not take a local_seq still in the pipe for unacknowledged): the pipe ends
        # with the process.
        run.reader.join(timeout=5)
        run.end_t = self.now()
        run.end_note = f"{run.expect}, exit {run.rc} at t={self.now():.2f}"
        self.note(f"run {run.id} ended: {run.end_note} durable={run.durable} local={run.local} "
                  f"sent={run.sent}")
        if run.spool_dir and run.rc == 3 and run.local > run.durable:
            # fenced while its spool held commits not in S3: they are stranded by design
            self.stranding_dirs.add(run.spool_dir)
            self.count("strand_fenced")
        if run.torn:
            err = self.stderr_of(run)
            if "event=spool_tail_cut" in err:
                self.count("torn_tail_cut")
            elif run.first is None:
                self.torn_pending[run.spool_dir] = run.torn  # never opened: the next start
            else:
                self.problem(f"run {run.id} opened {run.spool_dir} after '{run.torn}' "
                             "without cutting a torn tail")

    def wait_open(self, run, timeout=15):
        end = time.monotonic() + timeout
        while run.first is None and run.alive() and time.monotonic() < end:
            time.sleep(0.02)
        return run.first is not None

    def slot_busy(self, slot):
        d = self.spool_dir(slot)
        return any(r.alive() and r.spool_dir == d for r in self.runs.values())

    def quiesce(self, run, timeout=10):
        """Stops feeding a run and waits until everything it was sent, and everything any
        run acknowledged locally on its spool, is durable; False if not within the timeout
        (a storm, or a run still in its open): its spool then holds commits not in S3."""
        run.paused.set()
        end = time.monotonic() + timeout

        def drained():
            held = max(r.local for r in self.runs.values() if r.spool_dir == run.spool_dir)
            return run.first is not None and run.backlog() == 0 and \
                max(run.durable, run.first["recovered_seq"]) >= held

        while run.alive() and not drained() and time.monotonic() < end:
            time.sleep(0.05)
        return drained()

    def stop_run(self, run, expect, timeout=25):
        run.expect = expect
        if run.alive():
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problem(f"run {run.id} did not stop {timeout} s after SIGTERM; killed")
                run.proc.kill()
        self.finish(run)

    # ---- process events (one thread, in schedule order)
    def actor(self):
        events = list(self.s["events"])
        while not self.stopping.is_set():
            if events and self.now() >= events[0]["t"]:
                e = events.pop(0)
                getattr(self, "ev_" + e["kind"])(e)
                continue
            self.supervise()
            time.sleep(0.02)

    def ev_kill9(self, e):
        r = self.current
        if r is None or not r.alive():
            return
        r.expect = "kill -9"
        r.proc.kill()
        self.finish(r)
        self.count("kill9")
        self.event(f"kill -9 run {r.id} ({r.slot})")
        skips = checker.skip_frames(r.spool_dir) if r.spool_dir else 0
        if skips:  # the next open reads (and may replay past) SKIP frames
            self.count("kill9_over_skips")
            self.count("skip_frames_at_kill9", skips)
        if e["torn"] and r.spool_dir in self.torn_pending:
            # the last tear was never opened yet (the run after it died first): a second
            # one at the same place would be cut with it, once, and counted as uncut
            self.count("torn_left")
            self.event(f"torn tail of {os.path.basename(r.spool_dir)}: left: an earlier "
                       "tear is not opened yet")
        elif e["torn"] and r.spool_dir:
            junk = random.Random(e["junk"]).randbytes(64)
            acked = max(max(x.local, x.durable) for x in self.runs.values()
                        if x.spool_dir == r.spool_dir)  # any run's on this spool
            what = checker.tear_tail(r.spool_dir, acked, e["torn_bytes"], junk)
            if what and not what.startswith("left"):
                self.count("torn_tail")
                self.torn_pending[r.spool_dir] = what
            elif what:
                self.count("torn_left")  # nothing it could tear: counted, so it is seen
            self.event(f"torn tail of {os.path.basename(r.spool_dir)}: {what}")
        time.sleep(e["delay"])
        self.current = self.start_writer(r.slot)

    def ev_sigterm(self, e):
        r = self.current
        if r is None or not r.alive():
            return
        self.count("sigterm")
        self.event(f"SIGTERM run {r.id} ({r.slot})")
        self.stop_run(r, "SIGTERM")
        time.sleep(e["delay"])
        self.current = self.start_writer(r.slot)

    def ev_takeover(self, e):
        old, to = self.current, e["to"]
        if to in SPOOLED and self.slot_busy(to):
            to = "plain"
        if old is None or not old.alive():
            return
        if not self.wait_open(old):  # two opens racing: either may win the epoch
            self.count("takeover_skipped")
            return
        strand = e["strand"] and old.spool_dir is not None and self.allow_strand
        if old.spool_dir and not strand and not self.quiesce(old):
            self.note(f"run {old.id} still has {old.backlog()} commits not durable")
            if not self.allow_strand:
                old.paused.clear()
                self.count("takeover_skipped")
                return
            strand = True  # a storm kept it from draining: a takeover with a backlog after all
        if strand:
            self.count("strand")
            self.stranding_dirs.add(old.spool_dir)
        new = self.start_writer(to)
        self.wait_open(new)
        self.current = new
        self.count("takeover")
        self.event(f"takeover: run {new.id} ({to}) over run {old.id} ({old.slot})"
                   + (" with a backlog" if strand else ""))
        old.expect = "fenced"
        old.deadline = time.monotonic() + 20
        if old.spool_dir and not strand:
            old.proc.send_signal(signal.SIGTERM)  # fed nothing more: it would never learn
        self.lingering.append(old)

    def ev_mock_restart(self, e):
        sig = signal.SIGKILL if e["sig"] == "KILL" else signal.SIGTERM
        with self.mock.lock:
            self.mock.stop(sig)
            self.event(f"mock stopped by SIG{e['sig']}, down {e['down']} s")
            time.sleep(e["down"])
            self.mock.start()
            self.faults_dirty = True
        self.count("mock_restart")

    def ev_spool_full(self, e):
        r = self.current
        if r is None or r.slot != "small":
            if self.slot_busy("small"):
                return
            if r is not None and r.alive():
                if r.spool_dir and not self.quiesce(r):
                    self.note(f"run {r.id} still has {r.backlog()} commits not durable")
                    if not self.allow_strand:
                        r.paused.clear()
                        return
                    self.count("strand")
                    self.stranding_dirs.add(r.spool_dir)
                self.stop_run(r, "SIGTERM (switch to the small spool)")
            r = self.current = self.start_writer("small")
            if not self.wait_open(r):
                return
        t = self.now()
        with self.lock:
            self.dyn_windows.append({"t": t, "end": t + e["storm"], "kind": "storm",
                                     "scope": "log", "set": {"error_rate": 1.0, "error_status": 503}})
        self.count("spool_full")
        m = re.search(r"metrics_port=(\d+)", self.stderr_of(r))
        end = time.monotonic() + e["storm"]
        while m and time.monotonic() < end:
            try:
                if self.mock.metric(int(m.group(1)), "s3commit_spool_full") == 1:
                    self.count("spool_full_seen")
                    self.event(f"run {r.id}: the spool is full")
                    break
            except OSError:
                pass
            time.sleep(0.1)

    def supervise(self):
        for r in list(self.lingering):
            if not r.alive():
                self.finish(r)
                self.lingering.remove(r)
                self.count({3: "fenced_exit3", 0: "old_exit0"}.get(r.rc, "old_exit_other"))
            elif time.monotonic() > r.deadline:
                r.deadline = time.monotonic() + 10
                self.note(f"run {r.id} (taken over) still running: SIGTERM")
                r.proc.send_signal(signal.SIGTERM)
        r = self.current
        if r is None or r.alive():
            return
        self.finish(r)
        err = self.stderr_of(r)
        self.count({1: "writer_exit1", 4: "writer_exit4_refused"}.get(r.rc, "writer_exit_other"))
        if r.spool_dir and REFUSED_WORDS in err:
            self.refused(r, err)
        elif r.rc == 4:
            # Exit 4 says a person must act; the chaos run damages nothing, so only a spool
            # refusal may cause it: anything else is a passing fault taken for permanent.
            self.problem(f"run {r.id} exited 4 without a spool refusal: "
                         f"{err.strip().splitlines()[-1:]}")
        time.sleep(0.3 if "in use by another process" not in err else 1.0)
        self.current = self.start_writer(r.slot)

    def refused(self, r, err):
        """A start refused its spool. Expected only for a spool left with a backlog when
        another writer took the log over (its local-only acks are then stranded, not lost);
        anywhere else it is a finding. The spool is set aside either way."""
        why = next(x for x in err.splitlines() if REFUSED_WORDS in x)
        self.count("refused_takeover" if "took the log over" in why else "refused_other")
        if "cannot open the stage" in why and r.rc != 4:
            self.problem(f"run {r.id}: a refused start exited {r.rc}, not 4 (which the unit "
                         f"does not restart): {why}")
        if r.spool_dir in self.stranding_dirs:
            self.refused_dirs.add(r.spool_dir)
        else:
            self.problem(f"run {r.id}: a spool no takeover left behind was refused: {why}")
        self.gen[r.slot] += 1
        self.event(f"run {r.id}: the start on {os.path.basename(r.spool_dir)} was refused; "
                   f"the next run uses a new spool: {why}")

    # ---- store faults (the main thread)
    def apply_windows(self):
        t = self.now()
        with self.lock:
            active = [w for w in self.s["windows"] + self.dyn_windows if w["t"] <= t < w["end"]]
        body = merge_faults(active, PREFIX)
        if body == self.faults_set and not self.faults_dirty:
            return
        try:
            with self.mock.lock:
                self.mock.put_faults(body)
        except OSError:
            return  # restarting: again at the next tick
        self.faults_set, self.faults_dirty = body, False
        for w in active:
            key = (w["t"], w["kind"])
            if key not in self.seen_windows:
                self.seen_windows.add(key)
                if w not in self.dyn_windows:
                    self.count(w["kind"])
                self.fault_log.append((w["t"], w["end"], f"{w['kind']} {w['scope']} {w['set']}"))
        self.note(f"faults: {json.dumps(body, sort_keys=True)}")

    # ---- the episode
    def run(self):
        self.mock = Mock(os.path.join(self.bin, "s3commit-mock"), os.path.join(self.work, "data"),
                         self.s["mock_seed"], open(os.path.join(self.work, "mock.log"), "ab"))
        os.makedirs(self.mock.dir)
        self.mock.start()
        self.t0 = time.monotonic()
        self.current = self.start_writer(self.s["knobs"]["first_slot"])
        actor = threading.Thread(target=self.actor, daemon=True)
        actor.start()
        while self.now() < self.s["duration"]:
            self.apply_windows()
            time.sleep(0.05)
        self.stopping.set()
        actor.join()
        return self.finish_episode()

    def finish_episode(self):
        with self.lock:
            self.dyn_windows.clear()
        self.s["windows"] = []
        for _ in range(100):
            self.faults_dirty = True
            self.apply_windows()
            if not self.faults_dirty:
                break
            time.sleep(0.1)
        self.note("end: faults off; stopping every writer")
        for r in [self.current] + self.lingering:
            if r is not None and r.rc is None:
                self.stop_run(r, r.expect if r.expect == "fenced" else "SIGTERM (end)")
                if r in self.lingering:
                    self.count({3: "fenced_exit3", 0: "old_exit0"}.get(r.rc, "old_exit_other"))
        for r in self.runs.values():
            if r.rc is None and not r.alive():
                self.finish(r)
        last = self.current.slot if self.current else None
        order = sorted(SPOOLED, key=lambda slot: slot != last)  # the one with a backlog first
        for slot in order:  # whatever a spool holds goes to S3 (or is refused, stranded)
            for _ in range(3):
                if not os.path.isdir(self.spool_dir(slot)):
                    break
                r = self.start_writer(slot, produce=False)
                r.expect = "final drain"
                try:
                    r.proc.wait(60)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                self.finish(r)
                err = self.stderr_of(r)
                if REFUSED_WORDS in err:
                    self.refused(r, err)
                    break
                if r.rc == 0:
                    break
                self.problem(f"final drain run {r.id} on {slot} exited {r.rc}")
        # tears no later start opened (their spool was refused and moved aside): not
        # checked, and counted so that torn_tail = torn_tail_cut + torn_unopened
        self.count("torn_unopened", len(self.torn_pending))
        return self.read_back()

    def read_back(self):
        cfg = self.config("reader", "reader")
        cat = subprocess.run([self.s3commit, "cat", "--config", cfg, "--control"],
                             capture_output=True, timeout=600)
        ver = subprocess.run([self.s3commit, "verify", "--config", cfg],
                             capture_output=True, timeout=600)
        seeks = self.seek_checks(cfg, cat) if cat.returncode == 0 else 0
        with self.mock.lock:
            self.mock.stop(signal.SIGTERM)
        if cat.returncode != 0:
            self.problem(f"s3commit cat exited {cat.returncode}: {cat.stderr[-500:]!r}")
        try:
            verify = json.loads(ver.stdout)
        except ValueError:
            verify = {}
        if ver.returncode != 0 or not verify.get("ok"):
            self.problem(f"s3commit verify exited {ver.returncode}: {verify.get('problems')}")
        res = checker.check(self.runs, cat.stdout, cat.stderr, verify, self.refused_dirs,
                            self.faults_near)
        for r in self.runs.values():
            for a in r.anomalies:
                self.problem(f"run {r.id}: {a}")
            for b in self.runs.values():  # the writer protocol: a later open finds it all
                if b.first and r.end_t is not None and r.end_t < b.first_t and \
                        r.durable > b.first["recovered_seq"]:
                    self.problem(f"run {b.id} resumed at {b.first['recovered_seq']}, behind "
                                 f"durable_seq {r.durable} that run {r.id} printed before it ended")
        for rec in res.lost_list[:20]:
            print("chaos: LOST " + json.dumps(rec, sort_keys=True), flush=True)
        for rec in res.stranded_list[:20]:
            print("chaos: stranded (acknowledged locally on a spool whose start was refused after "
                  "a takeover; not lost) " + json.dumps(rec, sort_keys=True), flush=True)
        for n in res.notes[:20]:
            print("chaos: " + n, flush=True)
        for p in self.problems[:20]:
            print("chaos: problem: " + p, flush=True)
        ok = not (res.lost or res.duplicated or res.out_of_order or res.corrupt or self.problems)
        return {"seed": self.s["seed"], "duration": self.s["duration"], "ok": ok,
                "faults": sum(self.counts[k] for k in FAULT_CLASSES), "fault_counts": self.counts,
                "acked": res.acked, "lost": res.lost, "duplicated": res.duplicated,
                "out_of_order": res.out_of_order, "corrupt": res.corrupt,
                "epochs": len(verify.get("epochs", [])), "unacked_present": res.unacked_present,
                "stranded": res.stranded, "commits_in_log": res.commits, "runs": len(self.runs),
                "verify_ok": bool(verify.get("ok")), "seeks": seeks,
                "problems": self.problems[:20]}

    def seek_checks(self, cfg, cat):
        """Reads short ranges with `cat --from-seq` (a seek: docs/format.md, "Seeking"),
        around each control record, where takeovers leave orphans and fenced runs' objects
        beside the chain, and at random: each must be what the read from seq 1 holds
        there. Returns how many were checked."""
        controls = {json.loads(line)["control_seq"] for line in cat.stderr.splitlines()
                    if line.startswith(b'{"control_seq"')}
        by_seq, seq = {}, 0
        for data in checker.split_frames(cat.stdout):
            seq += 1
            while seq in controls:
                seq += 1
            by_seq[seq] = data
        end = max([seq] + list(controls))
        if end < 2:
            return 0
        rng = random.Random(self.s["seed"] * 7919 + 1)
        near = sorted({c + d for c in controls for d in (-1, 0, 1, 2) if 2 <= c + d <= end})
        points = rng.sample(near, min(len(near), 12)) + [rng.randint(2, end) for _ in range(6)]
        for p in sorted(set(points)):
            to = min(end, p + 50)
            out = subprocess.run([self.s3commit, "cat", "--config", cfg, "--from-seq", str(p),
                                  "--to-seq", str(to)], capture_output=True, timeout=120)
            if out.returncode != 0:
                self.problem(f"cat --from-seq {p} exited {out.returncode}: {out.stderr[-300:]!r}")
                continue
            got = checker.split_frames(out.stdout)
            want = [by_seq[s] for s in range(p, to + 1) if s in by_seq]
            if got != want:
                first_bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w),
                                 min(len(got), len(want)))
                self.problem(f"cat --from-seq {p} --to-seq {to} disagrees with the read from "
                             f"seq 1 at its commit {first_bad} ({len(got)} commits against "
                             f"{len(want)})")
        return len(set(points))

    def kill_all(self):
        for r in self.runs.values():
            if r.alive():
                r.proc.kill()
        if getattr(self, "mock", None) and self.mock.proc and self.mock.proc.poll() is None:
            self.mock.proc.kill()
