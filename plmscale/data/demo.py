"""The embedded demo corpus: protein families with a known answer, generated from a seed.

Each family starts from a random ancestor (UniProt background amino-acid frequencies, lognormal length).
The ancestor gives rise to 2-5 subfamily ancestors at a larger distance, and each member descends from one
subfamily ancestor at a small distance, so both clustering levels have a planted answer:

    identity(member, member of another subfamily)  ~ (1 - family_divergence)^2  ~ 64% at the default 0.2
    identity(member, member of its own subfamily)  ~ (1 - MEMBER_DIVERGENCE)^2  ~ 94%
    identity(members of different families)        ~ 6% (random)

so 50% identity recovers families and 90% recovers subfamilies. Two sources: "reference" (fewer families,
fewer subfamilies) and "metagenomic" (more families of its own, more subfamilies). Half of the families are
shared, with independent members in each source. Exact duplicates are planted across and within sources
(some with the same id in both sources), and a handful of malformed records per source exercises the clean
step. Every record is listed in {source}.truth.tsv with what the clean step should do with it.
"""

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmscale.data.atomic import write_gzip_text, write_text

log = logging.getLogger(__name__)

SOURCES = ("reference", "metagenomic")
# UniProtKB/Swiss-Prot amino-acid composition (percent), the usual "background" frequencies.
BACKGROUND = {
    "A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07, "H": 2.27,
    "I": 5.96, "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56, "T": 5.34, "W": 1.08,
    "Y": 2.92, "V": 6.87,
}
LETTERS = np.array(list(BACKGROUND), dtype="<U1")
FREQUENCIES = np.array(list(BACKGROUND.values())) / sum(BACKGROUND.values())
MEMBER_DIVERGENCE = 0.03     # member vs its subfamily ancestor: subfamilies stay > 90% identical
LENGTH_MEDIAN, LENGTH_SIGMA = 260, 0.45   # lognormal, roughly UniProt's length distribution
LINE_WIDTH = 60
# The shared motif library: structure common to all families, so a model can learn on training families
# something that transfers to held-out ones. Ancestors are motifs (Zipf-weighted draws from the library)
# joined by random background linkers; a bigger model memorises more of the library's long tail.
N_MOTIFS = 128
MOTIF_LENGTH = (6, 20)          # inclusive
MOTIF_ZIPF = 1.0                # usage weight of the k-th motif ~ 1 / k**MOTIF_ZIPF
LINKER_MEAN = 4                 # geometric linker length (residues) between motifs
# Malformed record kinds, and what the clean step should do with each (DESIGN.md's alphabet policy).
MALFORMED = (
    ("illegal_letter", "dropped_invalid"),
    ("lowercase", "kept"),
    ("stop_codon", "kept"),
    ("too_short", "dropped_length"),
    ("internal_stop", "dropped_invalid"),
    ("crlf", "kept"),
    ("too_long", "dropped_length"),
)
DEFAULTS = dict(seed=7, n_families=60, members_per_family=12, family_divergence=0.2, indel_rate=0.01,
                n_exact_duplicates=20, n_malformed=6)


@dataclass
class DemoRecord:
    seq_id: str
    sequence: str          # as written to the file (malformed records keep their defect)
    family: str            # "" for records with no family (random junk)
    subfamily: str
    kind: str              # member | duplicate | one of MALFORMED
    expected: str          # kept | dropped_invalid | dropped_length | duplicate
    line_end: str = "\n"


class _Evolver:
    """Random sequences and their mutated descendants, all drawn from one generator."""

    def __init__(self, rng, indel_rate, min_length, max_length, motifs=None):
        self.rng = rng
        self.motifs = motifs or []
        if self.motifs:
            weights = 1.0 / np.arange(1, len(self.motifs) + 1) ** MOTIF_ZIPF
            self.motif_p = weights / weights.sum()
        self.indel_rate = indel_rate
        # Keep ancestors clear of the clean step's limits so indels never push a member across them.
        self.low = min(int(min_length * 1.3) + 10, max_length)
        self.high = max(self.low, int(max_length * 0.9))

    def random_residues(self, n) -> np.ndarray:
        return self.rng.choice(len(LETTERS), size=n, p=FREQUENCIES)

    def ancestor(self) -> np.ndarray:
        length = int(np.clip(self.rng.lognormal(np.log(LENGTH_MEDIAN), LENGTH_SIGMA), self.low, self.high))
        if not self.motifs:
            return self.random_residues(length)
        pieces, total = [], 0
        while total < length:
            linker = self.random_residues(int(self.rng.geometric(1 / (LINKER_MEAN + 1))) - 1)
            motif = self.motifs[int(self.rng.choice(len(self.motifs), p=self.motif_p))]
            pieces += [linker, motif]
            total += len(linker) + len(motif)
        return np.concatenate(pieces)[:length]

    def substitute(self, seq: np.ndarray, rate: float) -> np.ndarray:
        """Change exactly the chosen positions (never to the same residue), so `rate` is the divergence."""
        out = seq.copy()
        where = np.flatnonzero(self.rng.random(len(seq)) < rate)
        new = self.random_residues(len(where))
        same = new == out[where]
        while same.any():
            new[same] = self.random_residues(int(same.sum()))
            same = new == out[where]
        out[where] = new
        return out

    def indels(self, seq: np.ndarray) -> np.ndarray:
        """Delete or insert (1-3 residues) at each position with probability indel_rate/2 each."""
        if self.indel_rate <= 0:
            return seq
        draws = self.rng.random(len(seq))
        pieces = []
        for i, residue in enumerate(seq):
            if draws[i] < self.indel_rate / 2:
                continue
            pieces.append([residue])
            if draws[i] > 1 - self.indel_rate / 2:
                pieces.append(self.random_residues(int(self.rng.integers(1, 4))))
        return np.concatenate(pieces) if pieces else seq

    def descendant(self, parent: np.ndarray, rate: float, with_indels=True) -> np.ndarray:
        child = self.substitute(parent, rate)
        if with_indels:
            child = self.indels(child)
        return child if len(child) >= self.low // 2 else parent.copy()


def _text(seq: np.ndarray) -> str:
    return "".join(LETTERS[seq])


def _family_roles(n_families):
    """Half shared by both sources, 15% reference-only, the rest (35%) metagenomic-only."""
    n_shared = max(1, round(0.5 * n_families))
    n_reference_only = round(0.15 * n_families)
    roles = []
    for f in range(n_families):
        if f < n_shared:
            roles.append(SOURCES)
        elif f < n_shared + n_reference_only:
            roles.append(("reference",))
        else:
            roles.append(("metagenomic",))
    return roles


def generate(seed=7, n_families=60, members_per_family=12, family_divergence=0.2, indel_rate=0.01,
             n_exact_duplicates=20, n_malformed=6, min_length=30, max_length=1022) -> dict:
    """Return {source: [DemoRecord, ...]} in file order. Same arguments, same corpus."""
    rng = np.random.default_rng(seed)
    library_rng = np.random.default_rng([seed, 1])   # the library: drawn once per seed, shared by all families
    motifs = [library_rng.choice(len(LETTERS), size=int(library_rng.integers(MOTIF_LENGTH[0], MOTIF_LENGTH[1] + 1)),
                                 p=FREQUENCIES) for _ in range(N_MOTIFS)]
    evolver = _Evolver(rng, indel_rate, min_length, max_length, motifs)
    member_rate = min(MEMBER_DIVERGENCE, family_divergence / 3)
    subfamily_rate = 1 - (1 - family_divergence) / (1 - member_rate)
    records = {source: [] for source in SOURCES}

    for f, holders in enumerate(_family_roles(n_families)):
        family = f"fam{f:04d}"
        ancestor = evolver.ancestor()
        more_diverse = holders == ("metagenomic",)
        n_sub = int(rng.integers(3, 6) if more_diverse else rng.integers(2, 4))
        n_sub = max(1, min(n_sub, members_per_family))
        sub_ancestors = [evolver.descendant(ancestor, subfamily_rate) for _ in range(n_sub)]
        for source in holders:
            for m in range(members_per_family):
                s = m % n_sub
                member = evolver.descendant(sub_ancestors[s], member_rate, with_indels=False)
                records[source].append(DemoRecord("", _text(member), family, f"{family}.s{s}", "member", "kept"))

    for source in SOURCES:
        order = rng.permutation(len(records[source]))
        records[source] = [records[source][i] for i in order]

    _plant_malformed(records, rng, evolver, member_rate, n_malformed, max_length)
    _name_records(records)
    _plant_duplicates(records, rng, n_exact_duplicates)
    return records


def _plant_malformed(records, rng, evolver, member_rate, n_malformed, max_length):
    for offset, source in enumerate(SOURCES):
        members = [r for r in records[source] if r.kind == "member"]
        for k in range(n_malformed):
            kind, expected = MALFORMED[(k + 3 * offset) % len(MALFORMED)]
            base = members[int(rng.integers(len(members)))]
            # A fresh relative of an existing member, so a repaired record is a genuine family member.
            seq = _text(evolver.substitute(np.array([np.flatnonzero(LETTERS == c)[0] for c in base.sequence]),
                                           member_rate))
            family, subfamily, line_end = base.family, base.subfamily, "\n"
            if kind == "illegal_letter":
                seq = seq[: len(seq) // 2] + "J" + seq[len(seq) // 2:]
            elif kind == "lowercase":
                seq = seq.lower()
            elif kind == "stop_codon":
                seq = seq + "*"
            elif kind == "internal_stop":
                seq = seq[: len(seq) // 2] + "*" + seq[len(seq) // 2:]
            elif kind == "crlf":
                line_end = "\r\n"
            elif kind == "too_short":
                seq, family, subfamily = _text(evolver.random_residues(12)), "", ""
            elif kind == "too_long":
                seq, family, subfamily = _text(evolver.random_residues(max_length + 50)), "", ""
            position = int(rng.integers(len(records[source]) + 1))
            records[source].insert(position, DemoRecord("", seq, family, subfamily, kind, expected, line_end))


def _name_records(records):
    prefixes = {"reference": "ref", "metagenomic": "mg"}
    for source in SOURCES:
        for i, record in enumerate(records[source]):
            record.seq_id = f"{prefixes[source]}{i:05d}"


def _plant_duplicates(records, rng, n_exact_duplicates):
    """Three of four copy a reference record into metagenomic (half of those keeping the reference id, so
    ids collide across sources); one in four copies a metagenomic record within its own source. Each
    original is copied at most once, so ids stay unique within a source."""
    kept = {s: [r for r in records[s] if r.kind == "member"] for s in SOURCES}
    n_within = min(n_exact_duplicates // 4, len(kept["metagenomic"]))
    n_across = min(n_exact_duplicates - n_within, len(kept["reference"]))
    originals = [kept["reference"][i] for i in rng.choice(len(kept["reference"]), n_across, replace=False)]
    originals += [kept["metagenomic"][i] for i in rng.choice(len(kept["metagenomic"]), n_within, replace=False)]
    next_id = len(records["metagenomic"])
    for d, original in enumerate(originals):
        if d < n_across and d % 2 == 0:
            seq_id = original.seq_id
        else:
            seq_id, next_id = f"mg{next_id:05d}", next_id + 1
        copy = DemoRecord(seq_id, original.sequence, original.family, original.subfamily, "duplicate",
                          "duplicate")
        position = int(rng.integers(len(records["metagenomic"]) + 1))
        records["metagenomic"].insert(position, copy)


def write_fasta(records, path) -> None:
    with write_gzip_text(path) as handle:
        for record in records:
            end = record.line_end
            handle.write(f">{record.seq_id} demo protein{end}")
            for start in range(0, len(record.sequence), LINE_WIDTH):
                handle.write(record.sequence[start:start + LINE_WIDTH] + end)


def write_truth(records, path) -> None:
    with write_text(path) as handle:
        handle.write("seq_id\tfamily\tsubfamily\tkind\texpected\n")
        for r in records:
            handle.write(f"{r.seq_id}\t{r.family}\t{r.subfamily}\t{r.kind}\t{r.expected}\n")


def write_demo_corpus(out_dir, min_length=30, max_length=1022, **settings) -> dict:
    """Write {source}.fasta.gz and {source}.truth.tsv for both sources; return counts per source."""
    options = {**DEFAULTS, **settings}
    records = generate(min_length=min_length, max_length=max_length, **options)
    out_dir = Path(out_dir)
    summary = {}
    for source, items in records.items():
        write_fasta(items, out_dir / f"{source}.fasta.gz")
        write_truth(items, out_dir / f"{source}.truth.tsv")
        summary[source] = {"records": len(items),
                           "residues": sum(len(r.sequence) for r in items),
                           "families": len({r.family for r in items if r.family})}
        log.info("demo corpus %s: %d records, %d families", source, summary[source]["records"],
                 summary[source]["families"])
    return summary


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for {source}.fasta.gz and {source}.truth.tsv")
    for name, default in DEFAULTS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--min-length", type=int, default=30, help="the clean step's min_length")
    parser.add_argument("--max-length", type=int, default=1022, help="the clean step's max_length")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = {name: getattr(args, name) for name in DEFAULTS}
    write_demo_corpus(args.out, min_length=args.min_length, max_length=args.max_length, **settings)
    return 0
