"""The ESM-2 vocabulary, in ESM order, so token ids line up with the ESM ecosystem."""

import numpy as np

TOKENS = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)
VOCAB_SIZE = len(TOKENS)
TOKEN_TO_ID = {token: i for i, token in enumerate(TOKENS)}
CLS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MASK_ID = TOKEN_TO_ID["<mask>"]

STANDARD_RESIDUES = "LAGVSERTIDPKQNFYMHWC"
AMBIGUOUS_RESIDUES = "XBUZO"
RESIDUE_LETTERS = STANDARD_RESIDUES + AMBIGUOUS_RESIDUES
RESIDUE_IDS = np.array([TOKEN_TO_ID[c] for c in RESIDUE_LETTERS], dtype=np.uint8)

INVALID = 0xFF


def _encode_table() -> bytes:
    table = bytearray([INVALID] * 256)
    for letter in RESIDUE_LETTERS:
        table[ord(letter)] = TOKEN_TO_ID[letter]
        table[ord(letter.lower())] = TOKEN_TO_ID[letter]
    return bytes(table)


# For bytes.translate: residue letter (either case) -> token id; anything else -> INVALID.
ENCODE_TABLE = _encode_table()
_DECODE = np.array([t if len(t) == 1 else "?" for t in TOKENS])


def encode(seq) -> np.ndarray:
    """Residue letters -> uint8 token ids; raises ValueError on a letter outside the alphabet."""
    raw = seq.encode("ascii") if isinstance(seq, str) else bytes(seq)
    ids = np.frombuffer(raw.translate(ENCODE_TABLE), dtype=np.uint8)
    if (ids == INVALID).any():
        bad = raw[int(np.argmax(ids == INVALID))]
        raise ValueError(f"letter {chr(bad)!r} is not in the ESM-2 residue alphabet {RESIDUE_LETTERS}")
    return ids.copy()


def decode(ids) -> str:
    """Token ids -> text; special tokens other than residues print as their full name."""
    return "".join(TOKENS[int(i)] for i in np.asarray(ids).ravel())
