"""`plmscale score` and `plmscale generate`: scores agree with the model's own loss, sampling is valid FASTA."""

import math

import numpy as np
import pytest
import torch

from plmscale.alphabet import CLS_ID, EOS_ID, MASK_ID, RESIDUE_LETTERS, TOKEN_TO_ID, encode
from plmscale.errors import PlmscaleError
from plmscale.export.runs import LoadedRun, load_run
from plmscale.export.score import mlm_pseudo_log_likelihood, score_fasta, score_sequence
from plmscale.export.generate import sample, to_fasta
from plmscale.train.masking import causal_labels
from test_export import random_model, write_finished_run


SEQUENCE = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALR"
            "PDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVG"
            "IGGKLSDGHRHDVRAPDYDDWUTPSSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSR"
            "LTMLLLQLPHIGQVQAGVWPAACRESVPALL")


def loaded_run(objective, seq_len=128, seed=0):
    return LoadedRun("test_run", random_model(seed=seed, seq_len=seq_len), objective, seq_len)


def clm_loss_sum(model, residues: np.ndarray) -> float:
    """The training loss of one framed sequence, summed over its labelled positions (what the loop minimises)."""
    tokens = np.concatenate([[CLS_ID], residues, [EOS_ID]]).astype(np.int64)
    with torch.no_grad():
        _, loss = model(torch.from_numpy(tokens)[None], causal=True,
                        labels=torch.from_numpy(causal_labels(tokens))[None])
    return float(loss)


# --- score ---

def test_clm_score_is_minus_the_models_own_loss():
    loaded = loaded_run("clm")
    residues = encode(SEQUENCE[:100])
    score = score_sequence(loaded, "s", residues)
    assert score.n_scored == 101 and score.windows == 1  # 100 residues and <eos>
    assert score.log_likelihood == pytest.approx(-clm_loss_sum(loaded.model, residues), rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(clm_loss_sum(loaded.model, residues) / 101), rel=1e-5)


def test_clm_scores_of_a_file_batch_several_records_without_changing_them(tmp_path):
    loaded = loaded_run("clm")
    lengths = [5, 40, 126, 17, 90]
    fasta = tmp_path / "s.fa"
    fasta.write_text("".join(f">r{i} some description\n{SEQUENCE[i:i + n].lower()}\n" for i, n in enumerate(lengths)))
    rows = []
    assert score_fasta(loaded, fasta, rows.append, batch_tokens=400) == len(lengths)
    assert [r.record_id for r in rows] == [f"r{i}" for i in range(len(lengths))]
    for i, (row, n) in enumerate(zip(rows, lengths)):
        expected = -clm_loss_sum(loaded.model, encode(SEQUENCE[i:i + n]))
        assert row.length == n and row.log_likelihood == pytest.approx(expected, rel=1e-5, abs=1e-4)


def _summed_log_p_after_first(model, row) -> float:
    tokens = torch.tensor([list(row)])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(tokens, causal=True)[0].float(), dim=-1)
    return float(sum(log_probs[t, row[t + 1]] for t in range(len(row) - 1)))


def test_long_sequence_is_scored_in_windows_framed_as_training_crops():
    """Issue 27: windows are cut from <cls> residues <eos> as training crops are, so only the first holds <cls>
    and only the last <eos>; CLM windows overlap by one token, so each token is predicted exactly once."""
    loaded = loaded_run("clm", seq_len=64)
    residues = encode(SEQUENCE[:150])
    stream = [CLS_ID, *residues.tolist(), EOS_ID]  # 152 tokens: windows at 0, 63, 126
    score = score_sequence(loaded, "long", residues)
    assert score.windows == 3 and score.n_scored == 151
    pieces = [stream[0:64], stream[63:127], stream[126:152]]
    assert sum(len(p) - 1 for p in pieces) == 151
    expected = sum(_summed_log_p_after_first(loaded.model, p) for p in pieces)
    assert score.log_likelihood == pytest.approx(expected, rel=1e-5)
    mlm = loaded_run("mlm", seq_len=64)
    assert score_sequence(mlm, "long", residues).windows == 3  # 152 tokens in windows of 64, no overlap
    assert score_sequence(mlm, "long", residues).n_scored == 150


def test_mlm_pseudo_perplexity_batched_equals_masking_one_position_at_a_time():
    loaded = loaded_run("mlm")
    residues = encode(SEQUENCE[:23])
    framed = [CLS_ID, *residues.tolist(), EOS_ID]
    expected = 0.0
    for position in range(1, len(framed) - 1):
        masked = list(framed)
        masked[position] = MASK_ID
        with torch.no_grad():
            logits = loaded.model(torch.tensor([masked]), causal=False)[0, position]
        expected += float(torch.log_softmax(logits, dim=-1)[framed[position]])
    for batch_tokens in (25, 60, 10_000):  # one copy per pass, a few per pass, all at once
        assert mlm_pseudo_log_likelihood(loaded.model, np.array(framed), batch_tokens) == pytest.approx(expected,
                                                                                                     rel=1e-5)
    score = score_sequence(loaded, "m", residues)
    assert score.n_scored == 23 and score.perplexity == pytest.approx(math.exp(-expected / 23), rel=1e-5)


def test_bad_fasta_and_unknown_residues_are_named(tmp_path):
    loaded = loaded_run("clm")
    unknown = tmp_path / "unknown.fa"
    unknown.write_text(">ok\nMKT\n>bad_one\nMKJL\n")
    with pytest.raises(PlmscaleError, match=r"unknown.fa, line 3: record 'bad_one' has letter 'J'.*X for an unknown"):
        score_fasta(loaded, unknown, lambda row: None)
    headless = tmp_path / "headless.fa"
    headless.write_text("MKTAYIAK\n")
    with pytest.raises(PlmscaleError, match=r"headless.fa, line 1: sequence data before the first header"):
        score_fasta(loaded, headless, lambda row: None)
    empty_record = tmp_path / "empty_record.fa"
    empty_record.write_text(">empty\n>next\nMKT\n")
    with pytest.raises(PlmscaleError, match=r"record 'empty' has no residues"):
        score_fasta(loaded, empty_record, lambda row: None)


def test_score_command_on_a_trained_run(tmp_path, capsys):
    """A real (tiny) training run through the CLI: the table has a row per record and the run's own framing."""
    from plmscale.cli import main
    from plmscale.train.loop import train_run
    from train_fixtures import demo_split, tiny_spec

    results = tmp_path / "results"
    train, valid = demo_split()
    train_run(tiny_spec("mlm", tokens=4000, run_id="mlm_t"), train, valid, results / "runs" / "mlm_t",
              results / "checkpoints" / "mlm_t", threads=1)
    fasta = tmp_path / "q.fa"
    fasta.write_text(">a\nMKTAYIAKQR\n>b\nGGGG\n")
    assert main(["score", str(fasta), "--run", "mlm_t", "--results", str(results), "--out",
                 str(tmp_path / "s.tsv")]) == 0
    lines = (tmp_path / "s.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["id", "length", "n_scored", "pseudo_log_likelihood",
                                    "mean_pseudo_log_likelihood", "pseudo_perplexity", "windows"]
    cells = [line.split("\t") for line in lines[1:]]
    assert [(c[0], c[1], c[6]) for c in cells] == [("a", "10", "1"), ("b", "4", "1")]
    loaded = load_run("mlm_t", results)
    assert float(cells[0][3]) == pytest.approx(score_sequence(loaded, "a", encode("MKTAYIAKQR")).log_likelihood)
    # exported or not, the same model gives the same scores
    assert main(["export", "mlm_t", "--results", str(results)]) == 0
    capsys.readouterr()
    assert main(["score", str(fasta), "--run", str(results / "export" / "mlm_t")]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert main(["generate", "--run", "mlm_t", "--results", str(results)]) == 2
    assert "masked language model" in capsys.readouterr().err


# --- generate ---

class ScriptedModel(torch.nn.Module):
    """Next-token logits that spell row i as i + 2 copies of L, then <eos>: a known answer for sampling."""

    def forward(self, tokens, causal):
        assert causal
        batch, length = tokens.shape
        logits = torch.full((batch, length, 33), -1e4)
        logits[..., TOKEN_TO_ID["C"]] = 0.0  # also allowed, but far less likely than the scripted token
        for row in range(batch):
            for t in range(length):
                logits[row, t, EOS_ID if t >= row + 2 else TOKEN_TO_ID["L"]] = 30.0
        logits[..., MASK_ID] = 1e4  # never sampled, however likely: not a residue
        return logits


class AlwaysEos(torch.nn.Module):
    def forward(self, tokens, causal):
        logits = torch.zeros(*tokens.shape, 33)
        logits[..., EOS_ID] = 50.0
        return logits


def test_generation_stops_at_eos_per_sequence():
    loaded = LoadedRun("scripted", ScriptedModel(), "clm", seq_len=64)
    sequences = sample(loaded, 4, seed=0)
    assert [(len(r), ended) for r, ended in sequences] == [(2, True), (3, True), (4, True), (5, True)]
    assert all(set(r.tolist()) == {TOKEN_TO_ID["L"]} for r, _ in sequences)
    # <eos> never comes before the first residue, however likely
    always_eos = LoadedRun("eos", AlwaysEos(), "clm", seq_len=64)
    assert [(len(r), ended) for r, ended in sample(always_eos, 3, seed=0)] == [(1, True)] * 3
    # a limit shorter than the script ends sequences without <eos>
    assert [(len(r), ended) for r, ended in sample(loaded, 4, max_length=3, seed=0)] == \
        [(2, True), (3, True), (3, False), (3, False)]


def test_generation_is_valid_fasta_and_deterministic_by_seed(tmp_path):
    from plmscale.data.fasta import read_fasta

    loaded = loaded_run("clm", seq_len=48)
    first = to_fasta(sample(loaded, 6, seed=5, temperature=1.2, top_p=0.95), "r", 5)
    assert to_fasta(sample(loaded, 6, seed=5, temperature=1.2, top_p=0.95), "r", 5) == first
    assert to_fasta(sample(loaded, 6, seed=6, temperature=1.2, top_p=0.95), "r", 6) != first
    path = tmp_path / "generated.fa"
    path.write_text(first)
    records = list(read_fasta(path))
    assert [i.decode() for i, _ in records] == [f"r_sample{i}" for i in range(6)]
    assert all(0 < len(s) <= 46 and set(s.decode()) <= set(RESIDUE_LETTERS) for _, s in records)


def test_generation_refuses_masked_models_and_lengths_beyond_the_context():
    with pytest.raises(PlmscaleError, match="masked language model.*use a CLM run"):
        sample(loaded_run("mlm"), 2)
    with pytest.raises(PlmscaleError, match="--max-length 500: give 1 to 126 residues"):
        sample(loaded_run("clm"), 2, max_length=500)


def test_generate_command(tmp_path, capsys):
    from plmscale.cli import main

    write_finished_run(tmp_path / "results", "clm_g", "clm", seq_len=40)
    argv = ["generate", "--run", "clm_g", "--results", str(tmp_path / "results"), "-n", "3", "--seed", "7",
            "--top-p", "0.9"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert main(argv) == 0 and capsys.readouterr().out == out
    headers = [line for line in out.splitlines() if line.startswith(">")]
    assert len(headers) == 3 and all("seed=7" in h for h in headers)


def test_a_directory_that_is_no_export_is_named(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(PlmscaleError, match=r"half is a directory but not an export"):
        load_run(tmp_path / "half")


# --- issue 27: messages and bounded generation ---

def test_score_names_a_missing_directory_or_empty_fasta(tmp_path, capsys):
    import gzip

    from plmscale.cli import main

    write_finished_run(tmp_path / "results", "clm_s", "clm", seq_len=40)
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.fa").write_bytes(b"")
    (tmp_path / "empty.fa.gz").write_bytes(gzip.compress(b""))
    cases = {"missing.fa": "does not exist; give the FASTA file of the sequences to score",
             "folder": "is a directory; give the FASTA file of the sequences to score",
             "empty.fa": "is empty: it holds no FASTA records — give a FASTA file holding the sequences to score",
             "empty.fa.gz": "is empty: it holds no FASTA records — give a FASTA file holding the sequences"}
    for name, expected in cases.items():
        argv = ["score", str(tmp_path / name), "--run", "clm_s", "--results", str(tmp_path / "results")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name} {expected}" in err and "download" not in err
        with pytest.raises(PlmscaleError, match=expected):
            score_fasta(loaded_run("clm"), tmp_path / name, lambda row: None)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0])
def test_generate_refuses_a_temperature_that_is_not_a_finite_number_of_zero_or_more(temperature):
    with pytest.raises(PlmscaleError, match=rf"--temperature {temperature}: give 0 .* or a finite positive number"):
        sample(loaded_run("clm"), 2, temperature=temperature)


def test_generation_runs_in_bounded_batches_and_streams_them(tmp_path, capsys, monkeypatch):
    """Issue 27: -n 100000000 sampled everything in one batch and was killed for memory."""
    import plmscale.export.generate as generate
    from plmscale.cli import main
    from plmscale.export.generate import iter_samples

    loaded = loaded_run("clm", seq_len=24)
    parts = list(iter_samples(loaded, 5, seed=3, batch_size=2))
    assert [len(p) for p in parts] == [2, 2, 1]
    # Batch 0 is seeded by the seed itself: up to a batch's worth, the samples of one unbatched draw.
    one_batch = sample(loaded, 2, seed=3, batch_size=256)
    assert all(np.array_equal(a, b) and x == y for (a, x), (b, y) in zip(parts[0], one_batch))
    batched = sample(loaded, 5, seed=3, batch_size=2)  # the same batches, collected
    assert len(batched) == 5
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(batched, [s for p in parts for s in p]))
    write_finished_run(tmp_path / "results", "clm_b", "clm", seq_len=24)
    writes = []
    monkeypatch.setattr(generate, "BATCH_SIZE", 2)
    monkeypatch.setattr("sys.stdout.write", lambda text: writes.append(text) or len(text))
    assert main(["generate", "--run", "clm_b", "--results", str(tmp_path / "results"), "-n", "5",
                 "--seed", "1"]) == 0
    assert len(writes) == 3  # one write per batch, as each finishes
    headers = [line for text in writes for line in text.splitlines() if line.startswith(">")]
    assert [h.split()[0] for h in headers] == [f">clm_b_sample{i}" for i in range(5)]


def test_an_unreadable_final_checkpoint_says_what_retrains_the_run(tmp_path):
    """Issue 27: it said 'delete the file to start the run over', but then metrics.json still marks the run done."""
    results = tmp_path / "results"
    write_finished_run(results, "clm_t", "clm")
    final = results / "checkpoints" / "clm_t" / "final.pt"
    final.write_bytes(final.read_bytes()[:1000])
    with pytest.raises(PlmscaleError) as caught:
        load_run("clm_t", results)
    message = str(caught.value)
    assert f"retrain the run: delete its directory {results / 'runs' / 'clm_t'}/" in message
    assert f"snakemake --forcerun {results / 'runs' / 'clm_t' / 'metrics.json'}" in message
    assert "start the run over" not in message
