"""The embedded demo corpus: protein families with a known answer, generated from a seed.

What a model can learn (in the spirit of the quantization model of neural scaling, Michaud et al. 2023): a
library of `n_motifs` short motifs (lengths motif_min_length..motif_max_length, UniProt background residues)
used with Zipf frequencies (the k-th most common motif ~ 1/k**motif_zipf). A family ancestor is a chain of
motifs drawn from the library, joined by short random linkers (geometric, mean `linker_mean`). Common motifs
are learnt by any model; each rarer one is worth less and needs more capacity and more tokens, so loss keeps
falling with both N and D over a long tail. Held-out families are new motif chains from the same library,
so what is learnt on training families transfers to them.

Evolution plants the clustering answer. Each family ancestor gives rise to 2-5 subfamily ancestors at a
larger distance (substitutions + indels), and each member descends from one subfamily ancestor at a small
distance (substitutions), so:

    identity(member, member of another subfamily)  ~ (1 - family_divergence)^2  ~ 64% at the default 0.2
    identity(member, member of its own subfamily)  ~ (1 - MEMBER_DIVERGENCE)^2  ~ 94%
    identity(members of different families)        ~ 6% plus short shared motifs (alignments < 80% coverage)

so 50% identity recovers families and 90% recovers subfamilies. Two sources: "reference" (fewer families,
fewer subfamilies) and "metagenomic" (more families of its own, more subfamilies). Half of the families are
shared, with independent members in each source. Exact duplicates are planted across and within sources
(some with the same id in both sources), and a handful of malformed records per source exercises the clean
step. Every record is listed in {source}.truth.tsv with what the clean step should do with it.

The entropy floor. The generator is a hidden Markov model over (linker | motif m at position j) with a known
substitution channel, so the Bayes loss of a model that knew the library exactly can be computed by the
forward (CLM) and forward-backward (MLM) algorithms on fresh held-out-like sequences. write_demo_floor
writes it to floor.json: the per-token loss no model of any size can beat on this corpus, the known truth
for the parametric fit's E. Indels (not in the HMM) are left out of the sequences it is measured on, so it
is the floor of the indel-free process, a hair under the real one.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmscale.categorical import Categorical
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
RESIDUES = Categorical(FREQUENCIES)  # draws exactly as rng.choice(len(LETTERS), p=FREQUENCIES), faster
LETTER_CODES = np.frombuffer("".join(LETTERS).encode("ascii"), dtype=np.uint8)
MEMBER_DIVERGENCE = 0.03     # member vs its subfamily ancestor: subfamilies stay > 90% identical
LENGTH_MEDIAN, LENGTH_SIGMA = 260, 0.45   # lognormal, roughly UniProt's length distribution
LINE_WIDTH = 60
FLOOR_FILE = "floor.json"
# Malformed record kinds, and what the clean step should do with each (the alphabet policy of clean.py).
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
                n_exact_duplicates=20, n_malformed=6, n_motifs=4000, motif_zipf=1.2, motif_min_length=6,
                motif_max_length=20, linker_mean=3.0, floor_sequences=128, floor_seq_len=128)
# Settings that shape the library (the rest shape families and the file), as generate() takes them.
LIBRARY_KEYS = ("n_motifs", "motif_zipf", "motif_min_length", "motif_max_length", "linker_mean")
FLOOR_KEYS = ("floor_sequences", "floor_seq_len")


@dataclass
class DemoRecord:
    seq_id: str
    sequence: str          # as written to the file (malformed records keep their defect)
    family: str            # "" for records with no family (random junk)
    subfamily: str
    kind: str              # member | duplicate | one of MALFORMED
    expected: str          # kept | dropped_invalid | dropped_length | duplicate
    line_end: str = "\n"


@dataclass
class MotifLibrary:
    motifs: list           # arrays of residue indices (into LETTERS)
    usage: np.ndarray      # probability of each motif at a motif slot (Zipf)
    linker_mean: float     # mean linker length; linker length ~ geometric on {0, 1, ...}

    @classmethod
    def draw(cls, seed, n_motifs=4000, motif_zipf=1.2, motif_min_length=6, motif_max_length=20,
             linker_mean=3.0):
        if n_motifs < 1 or not 1 <= motif_min_length <= motif_max_length:
            raise ValueError(f"data.demo: need n_motifs >= 1 and 1 <= motif_min_length <= motif_max_length "
                             f"(got {n_motifs}, {motif_min_length}, {motif_max_length})")
        rng = np.random.default_rng([seed, 1])   # drawn once per seed, shared by all families
        lengths = rng.integers(motif_min_length, motif_max_length + 1, size=n_motifs)
        motifs = [RESIDUES.draw(rng, int(n)) for n in lengths]
        weights = 1.0 / np.arange(1, n_motifs + 1) ** motif_zipf
        return cls(motifs, weights / weights.sum(), float(linker_mean))

    @property
    def motif_start_probability(self) -> float:
        """After a motif or a linker residue, the chance that the next residue starts a motif."""
        return 1.0 / (self.linker_mean + 1.0)


class _Evolver:
    """Random sequences and their mutated descendants, all drawn from one generator."""

    def __init__(self, rng, indel_rate, min_length, max_length, library: MotifLibrary | None = None):
        self.rng = rng
        self.library = library
        if library is not None:
            self.motif_cdf = np.cumsum(library.usage)
        self.indel_rate = indel_rate
        # Keep ancestors clear of the clean step's limits so indels never push a member across them.
        self.low = min(int(min_length * 1.3) + 10, max_length)
        self.high = max(self.low, int(max_length * 0.9))

    def random_residues(self, n) -> np.ndarray:
        return RESIDUES.draw(self.rng, n)

    def ancestor(self) -> np.ndarray:
        length = int(np.clip(self.rng.lognormal(np.log(LENGTH_MEDIAN), LENGTH_SIGMA), self.low, self.high))
        if self.library is None:
            return self.random_residues(length)
        pieces, total = [], 0
        start_p = self.library.motif_start_probability
        while total < length:
            linker = self.random_residues(int(self.rng.geometric(start_p)) - 1)
            k = min(int(np.searchsorted(self.motif_cdf, self.rng.random() * self.motif_cdf[-1], side="right")),
                    len(self.library.motifs) - 1)
            motif = self.library.motifs[k]
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
        deleted = draws < self.indel_rate / 2
        after = np.flatnonzero(draws > 1 - self.indel_rate / 2)
        sizes = self.rng.integers(1, 4, size=len(after))
        inserted = self.random_residues(int(sizes.sum()))
        # Inserted runs go right after their position; a deleted position can carry no insertion (draws
        # cannot be both below rate/2 and above 1 - rate/2).
        out = np.insert(seq, np.repeat(after + 1, sizes), inserted)
        keep = np.ones(len(out), dtype=bool)
        shift = np.searchsorted(np.repeat(after, sizes), np.arange(len(seq)), side="left")
        keep[np.flatnonzero(deleted) + shift[deleted]] = False
        out = out[keep]
        return out if len(out) else seq

    def descendant(self, parent: np.ndarray, rate: float, with_indels=True) -> np.ndarray:
        child = self.substitute(parent, rate)
        if with_indels:
            child = self.indels(child)
        return child if len(child) >= self.low // 2 else parent.copy()


def _text(seq: np.ndarray) -> str:
    return LETTER_CODES[seq].tobytes().decode("ascii")


_LETTER_INDEX = np.full(128, -1, dtype=np.int64)
_LETTER_INDEX[[ord(c) for c in LETTERS]] = np.arange(len(LETTERS))


def _indices(sequence: str) -> np.ndarray:
    return _LETTER_INDEX[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


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


def _rates(family_divergence):
    """(subfamily ancestor rate, member rate) that compose to family_divergence."""
    member_rate = min(MEMBER_DIVERGENCE, family_divergence / 3)
    return 1 - (1 - family_divergence) / (1 - member_rate), member_rate


def generate(seed=7, n_families=60, members_per_family=12, family_divergence=0.2, indel_rate=0.01,
             n_exact_duplicates=20, n_malformed=6, min_length=30, max_length=1022, n_motifs=4000,
             motif_zipf=1.2, motif_min_length=6, motif_max_length=20, linker_mean=3.0) -> dict:
    """Return {source: [DemoRecord, ...]} in file order. Same arguments, same corpus."""
    rng = np.random.default_rng(seed)
    library = MotifLibrary.draw(seed, n_motifs, motif_zipf, motif_min_length, motif_max_length, linker_mean)
    evolver = _Evolver(rng, indel_rate, min_length, max_length, library)
    subfamily_rate, member_rate = _rates(family_divergence)
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
            seq = _text(evolver.substitute(_indices(base.sequence), member_rate))
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


# ---- the entropy floor ---------------------------------------------------------------------------------------

def _channel(rate: float) -> np.ndarray:
    """P(observed b | ancestral a) of `substitute(rate)`: keep, or draw a different residue by background."""
    q = FREQUENCIES
    change = np.where(np.eye(len(q), dtype=bool), 0.0, q[None, :] / (1 - q[:, None]))
    return (1 - rate) * np.eye(len(q)) + rate * change


class _MotifHMM:
    """The generator as a hidden Markov model: one linker state, then one state per motif position.

    A linker residue or the last residue of a motif leads to the boundary, from which the next residue is a
    linker residue (probability 1 - p) or the first residue of motif m (p * usage[m]); a motif position
    leads to the next one. Emissions: the state's ancestral residue (background for a linker) through the
    composed subfamily and member substitution channels. State distributions are (states, sequences)
    arrays, so a transition is one contiguous shift plus a few row gathers.
    """

    def __init__(self, library: MotifLibrary, family_divergence: float):
        subfamily_rate, member_rate = _rates(family_divergence)
        channel = _channel(subfamily_rate) @ _channel(member_rate)
        residues = np.concatenate(library.motifs)
        lengths = np.array([len(m) for m in library.motifs])
        self.first = np.concatenate([[0], np.cumsum(lengths)[:-1]]) + 1   # state 0 is the linker
        self.last = self.first + lengths - 1
        self.n_states = 1 + len(residues)
        self.p = library.motif_start_probability
        self.start_weights = (self.p * library.usage)[:, None]
        # emission[s, x] = P(residue x | state s)
        self.emission = np.empty((self.n_states, len(LETTERS)))
        self.emission[0] = FREQUENCIES @ channel
        self.emission[1:] = channel[residues]
        self.emission_by_residue = np.ascontiguousarray(self.emission.T)
        self.start = self._stationary()

    def emit(self, residues: np.ndarray) -> np.ndarray:
        """(states, sequences): P(each sequence's residue | state)."""
        # emission[:, residues], gathered as rows of the transpose: the same values in the same (column-major)
        # layout, so the same sums, ~3x faster than gathering columns
        return self.emission_by_residue.take(residues, axis=0).T

    def advance(self, alpha: np.ndarray) -> np.ndarray:
        """One transition of state distributions (columns); emission not applied."""
        boundary = alpha[0] + alpha[self.last].sum(axis=0)
        out = np.empty_like(alpha)
        out[1:] = alpha[:-1]
        out[0] = boundary * (1 - self.p)
        out[self.first] = self.start_weights * boundary[None, :]
        return out

    def retreat(self, beta: np.ndarray) -> np.ndarray:
        """The transpose of advance: beta_t(s) = sum over s' of T(s, s') * beta_{t+1}(s')."""
        boundary = beta[0] * (1 - self.p) + (beta[self.first] * self.start_weights).sum(axis=0)
        out = np.empty_like(beta)
        out[:-1] = beta[1:]
        out[0] = boundary
        out[self.last] = boundary[None, :]
        return out

    def _stationary(self, steps=400) -> np.ndarray:
        alpha = np.zeros((self.n_states, 1))
        alpha[0] = 1.0
        for _ in range(steps):
            alpha = self.advance(alpha)
        return alpha[:, 0] / alpha[:, 0].sum()

    def next_residue_losses(self, windows: np.ndarray) -> np.ndarray:
        """-log P(x_t | x_<t) for every residue of equal-length windows (rows), in nats."""
        n, length = windows.shape
        alpha = np.repeat(self.start[:, None], n, axis=1)
        losses = np.empty((n, length))
        for t in range(length):
            if t:
                alpha = self.advance(alpha)
            alpha *= self.emit(windows[:, t])
            total = alpha.sum(axis=0)
            losses[:, t] = -np.log(total)
            alpha /= total[None, :]
        return losses

    def masked_losses(self, windows: np.ndarray, masked: np.ndarray) -> np.ndarray:
        """-log P(x_t | every unmasked residue) at masked positions (forward-backward; masked emit 1)."""
        n, length = windows.shape

        def emit(t):
            out = self.emit(windows[:, t])
            out[:, masked[:, t]] = 1.0
            return out

        alphas = np.empty((length, self.n_states, n), dtype=np.float32)   # float32: memory, not accuracy
        alpha = np.repeat(self.start[:, None], n, axis=1)
        for t in range(length):
            if t:
                alpha = self.advance(alpha)
            alpha *= emit(t)
            alpha /= alpha.sum(axis=0, keepdims=True)
            alphas[t] = alpha
        beta = np.ones((self.n_states, n))
        losses = np.full((n, length), np.nan)
        for t in range(length - 1, -1, -1):
            cols = np.flatnonzero(masked[:, t])
            if len(cols):
                posterior = alphas[t][:, cols] * beta[:, cols]      # P(state_t | all unmasked), unnormalised
                predicted = (posterior * self.emit(windows[cols, t])).sum(axis=0) / posterior.sum(axis=0)
                losses[cols, t] = -np.log(predicted)
            beta = self.retreat(beta * emit(t))
            beta /= beta.sum(axis=0, keepdims=True)
        return losses


def entropy_floor(seed=7, family_divergence=0.2, n_motifs=4000, motif_zipf=1.2, motif_min_length=6,
                  motif_max_length=20, linker_mean=3.0, floor_sequences=128, floor_seq_len=128,
                  mask_prob=0.15, mask_fraction=0.8, random_fraction=0.1, min_length=30, max_length=1022,
                  **_ignored) -> dict:
    """The Bayes loss (nats per scored token) of the demo process, CLM and MLM, as the trainer scores it.

    Measured on `floor_sequences` fresh members of new families (the library of this seed, another random
    stream, no indels), each cut to a random window of floor_seq_len - 2 residues as the trainer frames it.
    CLM: the window's residues are predicted by the exact forward algorithm, and the <eos> target counts
    as free (0 nats), so the figure is a lower bound for the trainer's per-token loss. MLM: positions are
    chosen with mask_prob; a model told which inputs were replaced (an oracle, so again a lower bound)
    predicts <mask>ed and randomised positions from every other residue (forward-backward) and an unchanged
    chosen position at 0 nats; measured on a quarter of the windows (forward-backward is the costly part).
    """
    library = MotifLibrary.draw(seed, n_motifs, motif_zipf, motif_min_length, motif_max_length, linker_mean)
    hmm = _MotifHMM(library, family_divergence)
    rng = np.random.default_rng([seed, 2])
    evolver = _Evolver(rng, 0.0, min_length, max_length, library)
    subfamily_rate, member_rate = _rates(family_divergence)
    room = floor_seq_len - 2
    windows = []
    while len(windows) < floor_sequences:
        member = evolver.substitute(evolver.substitute(evolver.ancestor(), subfamily_rate), member_rate)
        if len(member) < room:
            continue   # equal windows keep the algebra batched; lengths >= 126 are most of the corpus
        offset = int(rng.integers(0, len(member) - room + 1))
        windows.append(member[offset:offset + room])
    windows = np.array(windows)
    clm = hmm.next_residue_losses(windows)
    clm_per_token = clm.sum() / (clm.size + len(windows))         # + one free <eos> target per window
    # MLM on a quarter of the windows: forward-backward costs ~3x the forward pass, and ~15% of positions
    # scored per window still gives a standard error near the CLM figure's.
    mlm_windows = windows[: max(1, len(windows) // 4)]
    chosen = rng.random(mlm_windows.shape) < mask_prob
    hidden = chosen & (rng.random(mlm_windows.shape) < mask_fraction + random_fraction)
    mlm_losses = np.zeros(mlm_windows.shape)
    for lo in range(0, len(mlm_windows), 8):                       # chunks bound the memory of the alphas
        part = slice(lo, lo + 8)
        mlm_losses[part] = np.nan_to_num(hmm.masked_losses(mlm_windows[part], hidden[part]))
    per_window_mlm = mlm_losses.sum(axis=1) / np.maximum(chosen.sum(axis=1), 1)
    mlm_per_token = mlm_losses[chosen].sum() / max(int(chosen.sum()), 1)
    per_window_clm = clm.sum(axis=1) / (room + 1)
    return {
        "clm_floor_nats": float(clm_per_token),
        "clm_floor_standard_error": float(per_window_clm.std(ddof=1) / np.sqrt(len(windows))),
        "mlm_floor_nats": float(mlm_per_token),
        "mlm_floor_standard_error": float(per_window_mlm.std(ddof=1) / np.sqrt(len(mlm_windows)))
        if len(mlm_windows) > 1 else None,
        "residue_entropy_nats": float(-np.sum(FREQUENCIES * np.log(FREQUENCIES))),
        "sequences": int(len(windows)), "mlm_sequences": int(len(mlm_windows)), "window_residues": int(room),
        "method": "forward / forward-backward on the generator's own HMM (library known); indel-free "
                  "members of new families; <eos> (CLM) and unchanged chosen positions (MLM) count 0 nats, "
                  "so both are lower bounds for the trainer's validation loss",
    }


def _settings(settings) -> dict:
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"data.demo: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **settings}


def write_demo_corpus(out_dir, min_length=30, max_length=1022, **settings) -> dict:
    """Write {source}.fasta.gz and {source}.truth.tsv for both sources; return counts per source.
    Settings are data.demo's (the floor's are accepted and left to write_demo_floor)."""
    options = _settings(settings)
    for key in FLOOR_KEYS:
        options.pop(key)
    records = generate(min_length=min_length, max_length=max_length, **options)
    out_dir = Path(out_dir)
    summary = {}
    for source, items in records.items():
        write_fasta(items, out_dir / f"{source}.fasta.gz")
        write_truth(items, out_dir / f"{source}.truth.tsv")
        summary[source] = {"records": len(items),
                           "residues": sum(len(r.sequence) for r in items),
                           "families": len({r.family for r in items if r.family})}
        log.info("demo corpus %s: %d records, %d residues, %d families", source, summary[source]["records"],
                 summary[source]["residues"], summary[source]["families"])
    return summary


def write_demo_floor(path, min_length=30, max_length=1022, **settings) -> dict:
    """Write floor.json (entropy_floor of the process the settings describe, when floor_sequences > 0) and
    return it. Independent of write_demo_corpus (its own random stream), so the two can run side by side."""
    options = _settings(settings)
    if options["floor_sequences"] > 0:
        floor_settings = {key: options[key] for key in LIBRARY_KEYS + FLOOR_KEYS}
        floor = entropy_floor(options["seed"], options["family_divergence"], **floor_settings,
                              min_length=min_length, max_length=max_length)
        log.info("demo corpus entropy floor: CLM %.4f nats/token (se %.4f), MLM %.4f; residue entropy %.4f",
                 floor["clm_floor_nats"], floor["clm_floor_standard_error"], floor["mlm_floor_nats"],
                 floor["residue_entropy_nats"])
    else:   # the file is still written: the workflow declares it
        floor = {"clm_floor_nats": None, "mlm_floor_nats": None,
                 "method": "not measured (data.demo.floor_sequences is 0)"}
    floor["settings"] = options
    with write_text(path) as handle:
        json.dump(floor, handle, indent=2)
    return floor
