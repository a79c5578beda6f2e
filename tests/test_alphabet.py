import numpy as np
import pytest

from plmscale import alphabet


def test_esm2_order_and_size():
    assert alphabet.VOCAB_SIZE == 33
    assert alphabet.TOKENS[:5] == ("<cls>", "<pad>", "<eos>", "<unk>", "L")
    assert alphabet.TOKENS[-1] == "<mask>" and alphabet.MASK_ID == 32


def test_encode_decode_round_trip_and_case():
    ids = alphabet.encode("mkTAYIAkqrX")
    assert ids.dtype == np.uint8
    assert alphabet.decode(ids) == "MKTAYIAKQRX"


def test_illegal_letter_is_reported():
    with pytest.raises(ValueError, match="'J'"):
        alphabet.encode("MKJ")
