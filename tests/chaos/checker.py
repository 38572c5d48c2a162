"""The chaos suite's half that never touches a process: the bytes of each commit (derived
from the writer run and the commit's index in that run, so any commit read back can be
checked and attributed), the spool's torn tail, and the lost-ack check against the log
read back with `s3commit cat --control` and `s3commit verify` (docs/reliability.md).
It must never count a missing acknowledged commit as anything but lost, except the
stranded case the spool documents (a refused start on a spool whose log was taken over)."""
import hashlib
import json
import os
import struct

MAGIC = 0x4F414843  # "CHAO", little-endian
HEAD = struct.Struct("<IIQ")  # magic, writer run id, index of the commit within its run
LEN = struct.Struct("<I")


def commit_bytes(run_id, index):
    """The commit a producer sends as frame `index` of run `run_id`: a 16-byte header, then
    0 to about 5.6 KB of filler, both derived from (run_id, index) alone."""
    head = HEAD.pack(MAGIC, run_id, index)
    h = hashlib.blake2b(head, digest_size=64).digest()
    n = (h[0] | h[1] << 8) % 700
    if h[2] < 8:
        n = 0
    elif h[2] > 250:
        n = 1500 + (h[3] << 4)
    return head + (h * (n // 64 + 1))[:n]


def frames(run_id, first, count):
    """Frames first..first+count-1 of a run, as `s3commit run` reads them."""
    out = []
    for i in range(first, first + count):
        c = commit_bytes(run_id, i)
        out.append(LEN.pack(len(c)))
        out.append(c)
    return b"".join(out)


def split_frames(data):
    """The commits of `s3commit cat` output; a trailing partial frame raises ValueError."""
    out, off = [], 0
    while off < len(data):
        if off + 4 > len(data):
            raise ValueError(f"cat output ends inside a length prefix at byte {off}")
        (n,) = LEN.unpack_from(data, off)
        if off + 4 + n > len(data):
            raise ValueError(f"cat output ends inside a frame at byte {off}")
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


# ---- the spool's segment files (docs/spool.md, "Segment format")
SEG_MAGIC = 0x50533353
SEG_HEAD = 48
SEG_CHUNK, SEG_SEAL, SEG_OBJECT, SEG_BEGIN, SEG_END, SEG_SKIP = 1, 2, 3, 4, 5, 6
SEG_CRC_PAYLOAD, SEG_CRC_TAG = 1, 2
SEG_FRAME = struct.Struct("<IBBxxIIQQQII")  # magic type flags len count first last epoch crc tag


def seg_frames(name, data):
    """The frames of a segment's current life, as the open reads them (docs/spool.md,
    "Segment format"): (offset, size, type, first, last, payload length) each, and the
    life's tag (None: a segment without a BEGIN). They stop where the writer left off: at
    an END, at 8 zero bytes, at a frame of another tag (a recycled file's old life), at
    bytes that are not a frame. A BEGIN naming another seq is an old life: no frames."""
    out, off, tag = [], 0, None
    while off + SEG_HEAD <= len(data):
        if data[off:off + 8] == bytes(8):
            break
        magic, typ, flags, plen, _, first, last, _, _, ftag = SEG_FRAME.unpack_from(data, off)
        if magic != SEG_MAGIC:
            break
        ftag = ftag if flags & SEG_CRC_TAG else None
        if not out and typ == SEG_BEGIN:
            if first != int(name.split(".")[0]):
                return [], None
            tag = ftag
        elif ftag != tag:
            break
        size = SEG_HEAD + ((plen + 7) & ~7)
        if off + size > len(data):
            break
        out.append((off, size, typ, first, last, plen))
        off += size
        if typ == SEG_END:
            break
    return out, tag


def skip_frames(spool_dir):
    """SKIP frames in a spool's segments (commits S3 took before the spool's writer got to
    them), as the open would read them: a crash over such a spool is what they must
    survive."""
    n = 0
    try:
        names = sorted(f for f in os.listdir(spool_dir) if f.endswith(".seg"))
    except FileNotFoundError:
        return 0
    for name in names:
        try:
            with open(os.path.join(spool_dir, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # deleted meanwhile
        n += sum(1 for fr in seg_frames(name, data)[0] if fr[2] == SEG_SKIP)
    return n


def tear_tail(spool_dir, acked, nbytes, junk):
    """Tears the last segment of a killed writer's spool the way a crash inside a write
    does, never touching a frame that holds an acknowledged seq (<= acked): the last frame,
    when it is a seal or a chunk past `acked`, gets `nbytes` of its bytes (a chunk's
    payload, a seal's CRC) replaced by junk; else a frame header of this segment's life
    whose payload never came (a junk CRC) is written where the frames end. Either way the
    next open must cut it and say so (a frame of the life's tag whose CRC fails, or that the
    file's end cuts short). Returns what it did, or None (no spool, no segment); "left ..."
    when there was nothing it could tear (a closed segment, one with no frames)."""
    try:
        segs = sorted(f for f in os.listdir(spool_dir) if f.endswith(".seg"))
    except FileNotFoundError:
        return None
    if not segs:
        return None
    # the last segment with frames of its own (not one renamed into place before its BEGIN
    # was written)
    for seg in reversed(segs):
        path = os.path.join(spool_dir, seg)
        with open(path, "rb") as f:
            data = f.read()
        got, tag = seg_frames(seg, data)
        if got:
            break
    if not got:
        return f"left {segs[-1]} alone: no frames of its own"
    off, size, typ, first, last, plen = got[-1]
    if typ == SEG_END:
        return f"left {seg} alone: closed (it ends in an END frame)"
    bad = (junk * (64 // len(junk) + 2))
    if typ == SEG_CHUNK and first > acked and plen > 0:
        n = max(1, min(nbytes, plen))
        at = off + SEG_HEAD + plen - n
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(bytes(data[at + i] ^ (bad[i] | 1) for i in range(n)))  # each byte changes
        return f"tore {n} bytes of the last frame of {seg} (chunk, seq {first})"
    if typ == SEG_SEAL:
        (crc,) = struct.unpack_from("<I", data, off + 40)
        with open(path, "r+b") as f:
            f.seek(off + 40)
            f.write(struct.pack("<I", crc ^ 0xA5A5A5A5))
        return f"tore the CRC of the last frame of {seg} (seal, seq {first})"
    end = off + size
    nxt = max(f[4] for f in got) + 1 if any(f[2] in (SEG_CHUNK, SEG_SKIP) for f in got) else first
    flags = SEG_CRC_PAYLOAD | (SEG_CRC_TAG if tag is not None else 0)
    (crc,) = struct.unpack_from("<I", bad, 0)
    head = SEG_FRAME.pack(SEG_MAGIC, SEG_CHUNK, flags, 64 + (nbytes & 0xFF), 1, nxt, nxt, 1,
                          crc, tag or 0)
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(head)
    return f"wrote a frame header with no payload after the frames of {seg} (at {end})"


class Result:
    def __init__(self):
        self.acked = self.lost = self.duplicated = self.out_of_order = self.corrupt = 0
        self.unacked_present = self.stranded = self.commits = 0
        self.lost_list, self.stranded_list, self.notes = [], [], []


def add_range(out, run, seq, ack, end, faults_near):
    """Missing acknowledged seqs, one record per run of consecutive seqs of one run."""
    last = out[-1] if out else None
    if last and last["run"] == run.id and last["ack"] == ack and last["last_seq"] == seq - 1:
        last["last_seq"], last["count"] = seq, last["count"] + 1
        return
    rec = {"first_seq": seq, "last_seq": seq, "count": 1, "run": run.id, "slot": run.slot,
           "epoch": run.first["epoch"], "ack": ack, "acked_at": run.ack_time(seq),
           "log_ends_at": end, "run_end": run.end_note}
    if faults_near:
        rec["faults_around"] = faults_near(rec["acked_at"])
    out.append(rec)


def check(runs, cat_out, cat_err, verify, refused_dirs, faults_near):
    """runs: {id: Run} with .first (the first stdout line), .durable, .local, .sent,
    .spool_dir, .acks [(t, kind, value)]; cat_out/cat_err: `s3commit cat --control`;
    verify: its JSON; refused_dirs: spool dirs whose start was refused because another
    writer took the log over; faults_near(t) -> what was active around time t."""
    res = Result()
    commits = split_frames(cat_out)
    controls = set()
    for line in cat_err.splitlines():
        if line.startswith(b'{"control_seq"'):
            controls.add(json.loads(line)["control_seq"])
    res.commits = len(commits)
    vctl = {e["control_seq"] for e in verify.get("epochs", [])}
    if vctl != controls:
        res.notes.append(f"cat --control and verify disagree on the control records: "
                         f"{sorted(controls ^ vctl)[:10]}")
        res.corrupt += 1
    if verify.get("commits") != len(commits):
        res.notes.append(f"verify counts {verify.get('commits')} commits, cat printed {len(commits)}")
        res.corrupt += 1
    # The chain is dense from seq 1 (verify checks it): the j-th commit sits at the j-th
    # seq that is not a control record.
    where = {}  # (run, index) -> seq it sits at
    seq, prev_assigned = 0, 0
    for data in commits:
        seq += 1
        while seq in controls:
            seq += 1
        if len(data) < HEAD.size:
            res.corrupt += 1
            res.notes.append(f"seq {seq}: {len(data)} bytes, shorter than a commit header")
            continue
        magic, rid, idx = HEAD.unpack_from(data)
        run = runs.get(rid)
        if magic != MAGIC or run is None or data != commit_bytes(rid, idx):
            res.corrupt += 1
            res.notes.append(f"seq {seq}: bytes are not those of run {rid} index {idx}")
            continue
        if (rid, idx) in where:
            res.duplicated += 1
            res.notes.append(f"seq {seq}: run {rid} index {idx} again (first at {where[(rid, idx)]})")
            continue
        where[(rid, idx)] = seq
        assigned = run.first["first_seq"] + idx if run.first else None
        if assigned != seq or assigned <= prev_assigned:
            res.out_of_order += 1
            res.notes.append(f"seq {seq}: run {rid} index {idx} belongs at seq {assigned}")
        prev_assigned = assigned or prev_assigned
    end = verify.get("last_seq", 0)
    for run in runs.values():
        if not run.first:
            continue
        first = run.first["first_seq"]
        top = max(run.durable, run.local)
        if top >= first + run.sent:
            res.notes.append(f"run {run.id} acknowledged seq {top}, past the "
                             f"{run.sent} commits sent to it (from seq {first})")
            res.corrupt += 1
        for s in range(first, top + 1):
            res.acked += 1
            if (run.id, s - first) in where:
                continue
            ack = "durable" if s <= run.durable else "local"
            if ack == "local" and run.spool_dir in refused_dirs:
                res.stranded += 1
                add_range(res.stranded_list, run, s, ack, end, None)
            else:
                res.lost += 1
                add_range(res.lost_list, run, s, ack, end, faults_near)
        for idx in range(max(top - first + 1, 0), run.sent):
            if (run.id, idx) in where:
                res.unacked_present += 1
    return res
