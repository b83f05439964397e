"""A real development dataset from the music21 corpus: Irish and American
fiddle tunes labeled by tune type (see docs/datasets/music.md).

    python python/import_music.py --out DIR [--seed 0] [--row-len 512]

writes DIR/music.parquet in the raw-input contract of schemas/README.md
(`id` string, `values` list<uint8> in 0..=40, `label` int32 or null,
`split` train/valid/test) and DIR/stats.json, and prints the stats.

Sources: music21's `oneills1850/` (O'Neill's Music of Ireland, 1903; the
tune type is the book's section, found from the tune number) and
`ryansMammoth/` (Ryan's Mammoth Collection, 1883; the type is the tune's
`R:` field). No other corpus directory is read; `palestrina/` in particular
is reserved for evaluation and never opened.

One value per 16th note: the highest MIDI pitch sounding at that grid point,
minus 51 and clipped into 1..40 (1 = E3, 40 = G6), 0 for a rest. Repeats
and first/second endings are played out with ABC semantics (a `:|` without
a `|:` goes back to the last `||`, `:|` or the start). Folk tunes are short
(a double jig played once with its repeats is 384 steps), so by default each
row is the tune played round, as at a session, until `--row-len` steps and
cut there: every row has the same length and length says nothing about the
class. `--row-len 0` keeps each tune's own length (one pass with repeats)
and drops tunes shorter than 512 steps.

Only the standard library, numpy, pyarrow and music21 are needed; nothing
is cached outside DIR. Parsing runs in --workers processes.
"""
import argparse
import collections
import hashlib
import json
import math
import os
import random
import re
import sys
import time
import unicodedata
import warnings

import numpy as np

MIN_LEN, MAX_LEN = 512, 30720
PITCH_SHIFT = 51  # MIDI 52 (E3) -> 1, MIDI 91 (G6) -> 40
COLLECTIONS = ("oneills1850", "ryansMammoth")
MIN_CLASS = 30  # classes with fewer tunes are dropped (rows kept, unlabeled)
SPLITS = (("train", 0.7), ("valid", 0.1), ("test", 0.2))
NGRAM = 32  # n-gram length (steps) of the leakage check

# O'Neill's Music of Ireland: sections by tune number (the `R:` field is
# missing for about half of the tunes). 1-700 are airs and songs (some
# marked `R:jig`, `R:waltz`, ...: those stay unlabeled), 1781-1800 set
# dances and 1801-1850 marches and miscellany (unlabeled).
ONEILL_SECTIONS = ((1, 700, "air"), (701, 1115, "jig"), (1116, 1175, "slip jig"),
                   (1176, 1555, "reel"), (1556, 1780, "hornpipe"))
# Ryan's `R:` values. A clog is a (clog) hornpipe; flings, walkarounds and
# the one slide stay unlabeled. For both books a "jig" in 9/8 is a slip jig
# and a "jig" in 2/4 or C| (Ryan's American jigs) stays unlabeled.
RYAN_TYPES = {"reel": "reel", "hornpipe": "hornpipe", "clog": "hornpipe", "jig": "jig",
              "slip jig": "slip jig", "slipjig": "slip jig", "strathspey": "strathspey"}
TYPE_WORDS = r"(reel|jig|double jig|slip jig|slipjig|hornpipe|clog|strathspey|fling|highland fling|" \
             r"set dance|march|air|waltz|polka|walk ?around|the)"


def need_music21():
    try:
        import music21  # noqa: F401
    except ImportError:
        sys.exit("import_music.py needs music21 (ops/requirements.txt pins it): "
                 "pip install -r ops/requirements.txt")
    return music21


# ---------------------------------------------------------------- reading


def split_tunes(path):
    """The tunes (`X:` blocks) of an ABC file; the files have no file header."""
    with open(path, encoding="latin-1") as f:
        text = f.read()
    return re.split(r"(?m)^(?=X:)", text)[1:]


def fields(text, key):
    return [m.group(1).strip() for m in re.finditer(r"(?m)^%s:[ \t]*(.*)$" % key, text)]


def norm_title(t):
    """A title for grouping: ASCII, lower case, without punctuation, articles,
    "No. 2", "(... setting)" or tune-type words."""
    t = unicodedata.normalize("NFKD", t).encode("ascii", "ignore").decode().lower()
    t = re.sub(r"\(.*?\)|\[.*?\]", " ", t)
    t = re.sub(r"\b(no\.?|#)\s*\d+\b|\b\d+(st|nd|rd|th)? setting\b|\bsetting\b", " ", t)
    t = re.sub(r"['`]", "", t)
    t = re.sub(r"[^a-z0-9]+", " ", t)
    t = re.sub(r"\b%s\b" % TYPE_WORDS, " ", t)
    t = re.sub(r"\b(a|an|of|s)\b", " ", t)
    return " ".join(t.split())


def oneill_label(number, rfield):
    for lo, hi, name in ONEILL_SECTIONS:
        if lo <= number <= hi:
            r = rfield.lower().replace("double ", "")
            if name == "air" and r and r != "air":
                return None
            return name
    return None


def list_tunes(corpus):
    """Every tune of the two collections: (meta, ABC text). O'Neill tunes
    that appear in two files (two transcriptions, overlapping ranges) are
    kept once, from the first file in name order."""
    out = []
    seen = set()
    for coll in COLLECTIONS:
        d = os.path.join(corpus, coll)
        for fname in sorted(os.listdir(d)):
            if not fname.endswith(".abc"):
                continue
            path = os.path.join(d, fname)
            for i, text in enumerate(split_tunes(path)):
                x = (fields(text, "X") or [""])[0]
                r = (fields(text, "R") or [""])[0].strip().lower()
                meter = (fields(text, "M") or [""])[0].replace(" ", "")
                titles = fields(text, "T")
                meta = {"collection": coll, "file": fname, "index": i, "X": x,
                        "title": titles[0] if titles else "", "titles": titles,
                        "meter": meter, "R": r, "number": None}
                if coll == "oneills1850":
                    lo, hi = (int(v) for v in re.match(r"(\d+)-(\d+)", fname).groups())
                    if x.isdigit() and lo <= int(x) <= hi:
                        if int(x) in seen:
                            continue
                        seen.add(int(x))
                        meta["number"] = int(x)
                        meta["type"] = oneill_label(int(x), r)
                    else:  # a mistyped X: (X:800 among 626-700): no number, no label
                        meta["type"] = None
                    meta["id"] = "oneills1850/%s#%s" % (fname, x)
                else:
                    meta["type"] = RYAN_TYPES.get(re.sub(r"\s+", " ", r))
                    meta["id"] = "ryansMammoth/%s" % fname[:-4] + ("" if i == 0 else "#%d" % i)
                if meta["type"] == "jig" and meter == "9/8":
                    meta["type"] = "slip jig"  # a slip jig is a jig in 9/8
                elif meta["type"] == "jig" and meter not in ("6/8", "12/8"):
                    meta["type"] = None  # Ryan's American "jigs" in 2/4 or C|
                if r == "slide":
                    meta["type"] = None
                out.append((meta, text))
    return out


# ---------------------------------------------------------------- converting

SECTION_END = {"double", "final", "heavy-light", "light-light", "light-heavy", "heavy-heavy", "heavy"}


def play_order(measures, brackets):
    """Indices of the measures in playing order: `|:`/`:|` repeats (`times`),
    first/second endings (`brackets`: measure index -> ending numbers), and
    a `:|` without `|:` going back to the last section end or the start."""
    from music21 import bar

    n = len(measures)
    out, i, start, pas, steps = [], 0, 0, 1, 0
    while i < n:
        steps += 1
        if steps > 8 * n + 16:
            raise RuntimeError("repeats do not terminate")
        m = measures[i]
        lb, rb = m.leftBarline, m.rightBarline
        if pas == 1 and lb is not None:
            if isinstance(lb, bar.Repeat):
                if lb.direction == "start":
                    start = i
            elif lb.type in SECTION_END and i not in brackets:
                start = i
        ending = brackets.get(i)
        if ending is not None and pas not in ending:
            i += 1
            continue
        out.append(i)
        if isinstance(rb, bar.Repeat) and rb.direction == "end":
            if pas < (rb.times or 2):
                pas += 1
                i = start
                continue
            pas, start = 1, i + 1
        elif ending is not None and (i + 1) not in brackets:
            pas, start = 1, i + 1  # left the last ending
        elif pas == 1 and rb is not None and not isinstance(rb, bar.Repeat) and rb.type in SECTION_END:
            start = i + 1
        i += 1
    return out


def part_events(part, expand):
    """(onset, end, midi or 0 for a rest) in quarter notes, and the total."""
    from music21 import chord, note, stream

    ms = list(part.getElementsByClass(stream.Measure))
    if not ms:
        return [], 0.0
    index = {id(m): k for k, m in enumerate(ms)}
    brackets = {}
    for rb in part.spannerBundle.getByClass("RepeatBracket"):
        # The ABC reader puts an ending's first and last measure in the
        # spanner: the ending is every measure from the one to the other.
        ks = [index[id(m)] for m in rb.getSpannedElements() if id(m) in index]
        for k in range(min(ks), max(ks) + 1) if ks else ():
            brackets.setdefault(k, set()).update(rb.numberRange or [1])
    order = play_order(ms, brackets) if expand else range(len(ms))
    events, t = [], 0.0
    for k in order:
        m = ms[k]
        for n in m.flatten().notesAndRests:
            ql = float(n.duration.quarterLength)
            if ql <= 0:  # grace notes
                continue
            if isinstance(n, note.Rest):
                v = 0
            elif isinstance(n, chord.Chord):
                v = max(p.midi for p in n.pitches)
            else:
                v = n.pitch.midi
            o = t + float(n.offset)
            events.append((o, o + ql, v))
        t += float(m.duration.quarterLength)
    return events, t


def grid(events, total):
    """The highest MIDI pitch sounding at each 16th-note grid point (0: rest)."""
    n = math.ceil(total * 4 - 1e-6)
    a = np.zeros(n, np.int16)
    for on, off, v in events:
        i, j = math.ceil(on * 4 - 1e-6), min(n, math.ceil(off * 4 - 1e-6))
        if j > i:
            a[i:j] = np.maximum(a[i:j], v)
    return a


def convert(job):
    """One tune's ABC text -> its MIDI grid, played once with its repeats."""
    meta_id, text = job
    warnings.simplefilter("ignore")
    from music21 import converter, stream

    try:
        s = converter.parseData(text, format="abc")
        if isinstance(s, stream.Opus):
            s = s.scores[0]
        grids = []
        for p in list(s.parts) or [s]:
            try:
                ev, total = part_events(p, True)
                expanded = True
            except RuntimeError:
                ev, total = part_events(p, False)
                expanded = False
            if ev:
                grids.append(grid(ev, total))
        if not grids:
            return meta_id, None, "no notes"
        a = np.zeros(max(len(g) for g in grids), np.int16)
        for g in grids:
            a[: len(g)] = np.maximum(a[: len(g)], g)
        return meta_id, a, None if expanded else "repeats not expanded"
    except Exception as e:  # a tune music21 cannot read is skipped and counted
        return meta_id, None, "%s: %s" % (type(e).__name__, str(e)[:80])


def to_values(midi):
    v = np.where(midi > 0, np.clip(midi.astype(np.int32) - PITCH_SHIFT, 1, 40), 0).astype(np.uint8)
    clipped = int(((midi > 0) & ((midi - PITCH_SHIFT < 1) | (midi - PITCH_SHIFT > 40))).sum())
    return v, clipped


def make_row(values, row_len):
    if row_len == 0:
        return values if MIN_LEN <= len(values) <= MAX_LEN else None
    reps = -(-row_len // len(values))
    return np.tile(values, reps)[:row_len]


# ---------------------------------------------------------------- grouping and split


class UnionFind:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, a):
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


SHARED_NGRAMS = 8  # tunes sharing this many distinct n-grams are related


def group_rows(rows):
    """Connected components of rows that share a normalised title (any of
    the tune's `T:` lines), an O'Neill tune number, or music: at least
    SHARED_NGRAMS distinct 32-step n-grams of their one-pass sequences, up to
    transposition (the same tune under another name or in another key;
    unrelated tunes share almost none)."""
    uf = UnionFind(len(rows))
    postings = collections.defaultdict(list)
    for i, r in enumerate(rows):
        for k in ngram_keys(r["once"], relative=True):
            postings[k].append(i)
    for i, r in enumerate(rows):
        shared = collections.Counter()
        for k in ngram_keys(r["once"], relative=True):
            for j in postings[k]:
                if j > i:
                    shared[j] += 1
        for j, n in shared.items():
            if n >= SHARED_NGRAMS:
                uf.union(i, j)
    first = {}
    for i, r in enumerate(rows):
        keys = {("title", t) for t in map(norm_title, r["titles"]) if t}
        if r["number"] is not None:
            keys.add(("oneill", r["number"]))
        keys.add(("seq", hashlib.sha1(r["once"].tobytes()).hexdigest()))
        for k in keys:
            if k in first:
                uf.union(first[k], i)
            else:
                first[k] = i
    return [uf.find(i) for i in range(len(rows))]


def assign_splits(rows, groups, seed):
    """Whole groups to train/valid/test, ~70/10/20 of the rows within each
    stratum (the group's most common label; unlabeled groups are a stratum):
    groups in a seeded random order, each to the split furthest below its
    share."""
    rng = random.Random(seed)
    members = collections.defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata = collections.defaultdict(list)
    for g, idx in members.items():
        labels = collections.Counter(rows[i]["label"] for i in idx if rows[i]["label"] is not None)
        key = min(labels.items(), key=lambda kv: (-kv[1], kv[0]))[0] if labels else -1
        strata[key].append(g)
    split = [None] * len(rows)
    for key in sorted(strata):
        gs = sorted(strata[key], key=lambda g: rows[g]["id"])
        rng.shuffle(gs)
        have = {name: 0 for name, _ in SPLITS}
        total = 0
        for g in gs:
            n = len(members[g])
            total += n
            name = max(SPLITS, key=lambda s: (s[1] * total - have[s[0]], s[1]))[0]
            have[name] += n
            for i in members[g]:
                split[i] = name
    return split


# ---------------------------------------------------------------- stats


def ngram_keys(v, n=NGRAM, relative=False):
    """The distinct n-grams of a row (optionally transposed so their lowest
    note is 1: the same phrase in another key gives the same key)."""
    if len(v) < n:
        return set()
    w = np.lib.stride_tricks.sliding_window_view(v.astype(np.int16), n)
    if relative:
        low = np.where(w > 0, w, 99).min(axis=1, keepdims=True)
        w = np.where(w > 0, w - low + 1, 0)
    return {bytes(x) for x in w.astype(np.uint8)}


def leakage(rows, split, n=NGRAM, relative=False):
    """How much of each test row's distinct n-grams occur in some train row."""
    train = set()
    for r, s in zip(rows, split):
        if s == "train":
            train |= ngram_keys(r["values"], n, relative)
    fr = []
    for r, s in zip(rows, split):
        if s == "test":
            k = ngram_keys(r["values"], n, relative)
            fr.append(len(k & train) / max(1, len(k)))
    fr = np.array(fr)
    return {"mean_fraction_in_train": round(float(fr.mean()), 4),
            "median_fraction_in_train": round(float(np.median(fr)), 4),
            "test_rows_over_50pct": round(float((fr > 0.5).mean()), 4),
            "test_rows_over_90pct": round(float((fr > 0.9).mean()), 4)}


def features(v):
    """Simple rhythm/contour features of a row, for the separability check."""
    v = v.astype(np.int32)
    change = np.flatnonzero(np.diff(v) != 0) + 1
    runs = np.diff(np.concatenate([[0], change, [len(v)]]))
    f = [np.bincount(np.minimum(runs, 16), minlength=17)[1:] / len(runs)]
    onset = np.zeros(len(v))
    onset[change] = 1
    onset[0] = 1
    oc = onset - onset.mean()
    ac = np.array([(oc[:-k] * oc[k:]).mean() for k in range(1, 49)]) / max(1e-9, (oc * oc).mean())
    f.append(ac)
    p = v[v > 0]
    steps = np.diff(p) if len(p) > 1 else np.zeros(1)
    f.append(np.bincount(np.clip(steps, -12, 12) + 12, minlength=25) / len(steps))
    f.append([(v == 0).mean(), p.mean() / 40 if len(p) else 0, (p.max() - p.min()) / 40 if len(p) else 0])
    return np.concatenate([np.asarray(x, float) for x in f])


def softmax_probe(xtr, ytr, xte, yte, k, steps=3000, lr=0.5, l2=1e-3):
    """Multinomial logistic regression (full-batch gradient descent)."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    w = np.zeros((xtr.shape[1], k))
    b = np.zeros(k)
    y = np.eye(k)[ytr]
    for _ in range(steps):
        z = xtr @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - y) / len(xtr)
        w -= lr * (xtr.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return float(((xte @ w + b).argmax(1) == yte).mean())


def measure(rows, split, classes):
    labels = [r["label"] for r in rows]
    stats = {"rows": len(rows), "classes": classes}
    per = {}
    for name in [c for c in classes] + ["unlabeled"]:
        per[name] = {s: 0 for s, _ in SPLITS}
    for r, s in zip(rows, split):
        per[classes[r["label"]] if r["label"] is not None else "unlabeled"][s] += 1
    stats["rows_per_class_and_split"] = per
    stats["rows_per_split"] = {s: sum(1 for x in split if x == s) for s, _ in SPLITS}
    lens = np.array([len(r["values"]) for r in rows])
    stats["length"] = {"min": int(lens.min()), "median": float(np.median(lens)), "max": int(lens.max()),
                       "tokens": int(lens.sum())}
    once = np.array([len(r["once"]) for r in rows])
    stats["one_pass_length"] = {"min": int(once.min()), "median": float(np.median(once)),
                                "max": int(once.max()), "rows_at_least_512": int((once >= MIN_LEN).sum())}
    def held(subset):
        runs, same, steps = [], 0, 0
        for r in subset:
            v = r["values"]
            change = np.flatnonzero(np.diff(v) != 0) + 1
            runs.append(np.diff(np.concatenate([[0], change, [len(v)]])))
            same += int((v[1:] == v[:-1]).sum())
            steps += len(v) - 1
        runs = np.concatenate(runs)
        return ({"median": float(np.median(runs)), "mean": round(float(runs.mean()), 3),
                 "p90": float(np.percentile(runs, 90))}, round(same / steps, 4))

    stats["run_length"], stats["copy_previous_accuracy"] = held(rows)
    stats["per_class_run_length_mean_and_copy_previous"] = {
        c: (lambda h: [h[0]["mean"], h[1]])(held([r for r in rows if r["label"] == k]))
        for k, c in enumerate(classes)}
    vals = np.concatenate([r["values"] for r in rows])
    stats["rest_fraction"] = round(float((vals == 0).mean()), 4)
    stats["value_range_nonrest"] = [int(vals[vals > 0].min()), int(vals.max())]
    tr = [l for l, s in zip(labels, split) if s == "train" and l is not None]
    te = [l for l, s in zip(labels, split) if s == "test" and l is not None]
    major = collections.Counter(tr).most_common(1)[0][0]
    stats["majority_class"] = classes[major]
    stats["majority_class_test_accuracy"] = round(sum(1 for l in te if l == major) / len(te), 4)
    # Leakage: the grouped split against a split of rows at random.
    # The 32-gram check is not independent of the grouping (which uses
    # 32-grams of one pass); the 16-gram one (one bar of 4/4) is.
    rng = random.Random(12345)
    rand = [rng.choices([s for s, _ in SPLITS], [w for _, w in SPLITS])[0] for _ in rows]
    stats["leakage"] = {
        "grouped_split_32gram": leakage(rows, split),
        "grouped_split_32gram_transposed": leakage(rows, split, relative=True),
        "grouped_split_16gram": leakage(rows, split, 16),
        "rows_split_at_random_32gram": leakage(rows, rand),
        "rows_split_at_random_16gram": leakage(rows, rand, 16),
    }
    train_seqs = {r["values"].tobytes() for r, s in zip(rows, split) if s == "train"}
    stats["test_rows_equal_to_a_train_row"] = sum(
        1 for r, s in zip(rows, split) if s == "test" and r["values"].tobytes() in train_seqs)
    # Separability by structure: a linear probe on run-length, onset
    # autocorrelation, interval and range features.
    lab = [(i, s) for i, (l, s) in enumerate(zip(labels, split)) if l is not None]
    feats = {i: features(rows[i]["values"]) for i, _ in lab}
    xtr = np.array([feats[i] for i, s in lab if s == "train"])
    ytr = np.array([labels[i] for i, s in lab if s == "train"])
    xte = np.array([feats[i] for i, s in lab if s == "test"])
    yte = np.array([labels[i] for i, s in lab if s == "test"])
    stats["feature_probe_test_accuracy"] = round(softmax_probe(xtr, ytr, xte, yte, len(classes)), 4)
    return stats


# ---------------------------------------------------------------- main


def write_parquet(path, rows, split, classes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("values", pa.list_(pa.field("item", pa.uint8(), nullable=False)), nullable=False),
        pa.field("label", pa.int32(), nullable=True),
        pa.field("split", pa.string(), nullable=False),
    ], metadata={"pretext.labels": json.dumps(classes), "pretext.source": "python/import_music.py"})
    table = pa.table({
        "id": [r["id"] for r in rows],
        "values": pa.array([r["values"] for r in rows], type=schema.field("values").type),
        "label": pa.array([r["label"] for r in rows], type=pa.int32()),
        "split": split,
    }, schema=schema)
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=256, compression="snappy")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--row-len", type=int, default=512,
                    help="steps per row, the tune played round and cut (512..30720); "
                         "0: each tune's own length, tunes under 512 dropped")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="parsing processes (default: 2, or 1 on one core)")
    args = ap.parse_args()
    if args.row_len and not MIN_LEN <= args.row_len <= MAX_LEN:
        ap.error("--row-len must be 0 or in %d..%d" % (MIN_LEN, MAX_LEN))
    music21 = need_music21()
    import pyarrow  # noqa: F401  (fail before parsing, not after)

    t0 = time.time()
    tunes, results = parse_all(music21, args.workers)
    t_parse = time.time() - t0
    stats = build(tunes, results, args.row_len, args.seed, args.out)
    stats["command"] = " ".join(["python", "python/import_music.py"] + sys.argv[1:])
    stats["music21"] = music21.__version__
    stats["parse_seconds"] = round(t_parse, 1)
    stats["total_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats, indent=1))


def parse_all(music21, workers):
    """Every tune's metadata and ABC text, and its conversion result."""
    tunes = list_tunes(os.path.dirname(music21.corpus.__file__))
    jobs = [(m["id"], text) for m, text in tunes]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(convert, jobs, chunksize=8)
    else:
        results = [convert(j) for j in jobs]
    return tunes, results


def build(tunes, results, row_len, seed, out):
    """Rows, labels, groups and split from the parsed tunes; writes
    OUT/music.parquet and returns the stats."""
    problems = collections.Counter()
    rows, clipped, seen = [], 0, set()
    for (meta, _), (mid, midi, problem) in zip(tunes, results):
        assert mid == meta["id"]
        if problem:
            problems[problem.split(":")[0]] += 1
        if midi is None or len(midi) == 0 or not (midi > 0).any():
            continue
        once, c = to_values(midi)
        values = make_row(once, row_len)
        if values is None:
            problems["shorter than %d steps" % MIN_LEN] += 1
            continue
        key = values.tobytes()
        if key in seen:
            problems["duplicate of another row"] += 1
            continue
        seen.add(key)
        clipped += c
        rows.append(dict(meta, once=once, values=values))
    if len({r["id"] for r in rows}) != len(rows):
        sys.exit("internal error: duplicate ids")

    counts = collections.Counter(r["type"] for r in rows if r["type"])
    classes = sorted(t for t, n in counts.items() if n >= MIN_CLASS)
    dropped = {t: n for t, n in counts.items() if n < MIN_CLASS}
    for r in rows:
        r["label"] = classes.index(r["type"]) if r["type"] in classes else None
    groups = group_rows(rows)
    split = assign_splits(rows, groups, seed)

    os.makedirs(out, exist_ok=True)
    write_parquet(os.path.join(out, "music.parquet"), rows, split, classes)
    stats = {"collections": list(COLLECTIONS), "row_len": row_len, "seed": seed,
             "tunes_read": len(tunes), "skipped_or_noted": dict(problems),
             "classes_dropped_under_%d" % MIN_CLASS: dropped, "notes_clipped": clipped,
             "groups": len(set(groups)),
             "groups_with_more_than_one_row": sum(1 for n in collections.Counter(groups).values() if n > 1)}
    stats.update(measure(rows, split, classes))
    return stats


if __name__ == "__main__":
    main()
