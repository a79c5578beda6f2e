"""MMseqs2 clustering with the real binary: planted families recovered, output sorted and reproducible,
clear errors for a missing binary or a failing run."""

import json
import random
import shutil
from collections import Counter

import numpy as np
import pytest
from scipy.special import comb

from plmscale.data import engine
from plmscale.data.demo import generate
from plmscale.data.mmseqs import (_coarse_level, _fine_level, _load_members, _number_records, _write_clusters,
                                  _write_one_level, cluster_sequences, mmseqs_memory_floor_mb, read_clusters,
                                  warn_if_short_of_memory)
from plmscale.errors import PlmscaleError

pytestmark = pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary")


def adjusted_rand_index(truth, found):
    pairs = lambda counts: sum(comb(n, 2) for n in counts.values())  # noqa: E731
    together = pairs(Counter(zip(truth, found)))
    truth_pairs, found_pairs = pairs(Counter(truth)), pairs(Counter(found))
    expected = truth_pairs * found_pairs / comb(len(truth), 2)
    return (together - expected) / ((truth_pairs + found_pairs) / 2 - expected)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Members of a demo corpus (both sources) as FASTA, with the planted labels."""
    records = generate(seed=11, n_families=16, members_per_family=8, n_exact_duplicates=0, n_malformed=0)
    path = tmp_path_factory.mktemp("corpus") / "members.fasta"
    truth = {}
    with open(path, "w") as handle:
        for source, items in records.items():
            for r in items:
                seq_id = f"{source}|{r.seq_id}"
                truth[seq_id] = (r.family, r.subfamily)
                handle.write(f">{seq_id}\n{r.sequence}\n")
    return path, truth


def _run(fasta, out, **settings):
    cluster_sequences(fasta, out / "clusters.tsv", out / "sizes.tsv", out / "stats.json", threads=2,
                      mem_mb=4000, **settings)
    return list(read_clusters(out / "clusters.tsv"))


def _agreement(rows, truth, level, column=0):
    ids = [row[-1] for row in rows]
    return adjusted_rand_index([truth[i][level] for i in ids], [row[column] for row in rows])


def test_cluster_at_50_percent_recovers_families(corpus, tmp_path):
    fasta, truth = corpus
    rows = _run(fasta, tmp_path, method="cluster", min_seq_id=0.5)
    assert _agreement(rows, truth, level=0) >= 0.95
    assert len({r[0] for r in rows}) == pytest.approx(len({f for f, _ in truth.values()}), abs=2)


def test_linclust_at_90_percent_recovers_subfamilies(corpus, tmp_path):
    fasta, truth = corpus
    rows = _run(fasta, tmp_path, method="linclust", min_seq_id=0.9)
    assert _agreement(rows, truth, level=1) >= 0.95


def test_second_level_gives_families_over_subfamilies(corpus, tmp_path):
    fasta, truth = corpus
    rows = _run(fasta, tmp_path, method="linclust", min_seq_id=0.9,
                second_level={"min_seq_id": 0.5, "method": "cluster"})
    assert (tmp_path / "clusters.tsv").read_text().startswith("cluster_id\tsubcluster_id\tmember_id\n")
    assert _agreement(rows, truth, level=0, column=0) >= 0.95
    assert _agreement(rows, truth, level=1, column=1) >= 0.95
    # A subcluster lies inside one cluster.
    parents = {}
    for cluster_id, subcluster_id, _ in rows:
        assert parents.setdefault(subcluster_id, cluster_id) == cluster_id


def test_sorted_complete_and_reproducible(corpus, tmp_path):
    fasta, truth = corpus
    first = _run(fasta, tmp_path / "1", method="linclust", min_seq_id=0.5)
    _run(fasta, tmp_path / "2", method="linclust", min_seq_id=0.5)
    assert first == sorted(first)
    assert sorted(r[-1] for r in first) == sorted(truth)
    for name in ("clusters.tsv", "sizes.tsv", "stats.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_missing_binary_says_how_to_install(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no mmseqs anywhere
    with pytest.raises(PlmscaleError, match=r"mmseqs2.*envs/mmseqs2.yaml"):
        _run(corpus[0], tmp_path / "out")
    assert not (tmp_path / "out" / "clusters.tsv").exists()


def test_failing_mmseqs_shows_log_tail(corpus, tmp_path):
    with pytest.raises(PlmscaleError, match=r"(?s)MMseqs2 failed.*mmseqs.log") as caught:
        _run(corpus[0], tmp_path, extra_args=["--no-such-option", "1"])
    assert "no-such-option" in str(caught.value)
    assert not (tmp_path / "clusters.tsv").exists()


def _dead_pid():
    import subprocess
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_clusters_are_named_by_their_smallest_member(corpus, tmp_path):
    """The name must not depend on MMseqs2's choice of representative (which varies with threads)."""
    for settings in ({"method": "linclust", "min_seq_id": 0.5},
                     {"method": "linclust", "min_seq_id": 0.9, "second_level": {"min_seq_id": 0.5}}):
        out = tmp_path / settings["method"] / str(len(settings))
        rows = _run(corpus[0], out, **settings)
        # Issue 27: the second level runs easy-cluster -s 4, yet stats.json said sensitivity null.
        used = json.loads((out / "stats.json").read_text())["settings"]["sensitivity"]
        assert used == (4.0 if "second_level" in settings else None)
        for column in range(len(rows[0]) - 1):
            members = {}
            for row in rows:
                members.setdefault(row[column], []).append(row[-1])
            assert all(name == min(group) for name, group in members.items())


def test_repeated_clustering_with_threads_gives_identical_tables(corpus, tmp_path):
    outputs = []
    for k in range(3):
        out = tmp_path / str(k)
        cluster_sequences(corpus[0], out / "clusters.tsv", out / "sizes.tsv", out / "stats.json", threads=4,
                          method="linclust", min_seq_id=0.5)
        stats = json.loads((out / "stats.json").read_text())
        del stats["commands"]   # they name the threads and memory
        outputs.append([(out / name).read_bytes() for name in ("clusters.tsv", "sizes.tsv")] + [stats])
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("source", ["ref", "sp", "gb", "pdb", "lcl", "tr"])
def test_ids_that_mmseqs2_would_rewrite_are_clustered_under_their_own_names(source, tmp_path):
    """MMseqs2 parses `ref|x` and friends as accessions; the ids it is given must not depend on that."""
    fasta = tmp_path / "in.fasta"
    sequences = ["MKVLAAGIVGLLLAACSSEPKTEAPAAAEAPKAE", "MKVLAAGIVGLLLAACSSEPKTEAPAAAEAPKAQ",
                 "WWYHHRRCCDDEEPPGGNNQQTTSSWWYHHRRCCD"]
    fasta.write_text("".join(f">{source}|p{k} desc\n{s}\n" for k, s in enumerate(sequences)))
    rows = _run(fasta, tmp_path / "out", method="linclust", min_seq_id=0.9)
    assert sorted(r[-1] for r in rows) == [f"{source}|p0", f"{source}|p1", f"{source}|p2"]
    assert dict((r[1], r[0]) for r in rows)[f"{source}|p1"] == f"{source}|p0"


def test_mmseqs_temporaries_stay_next_to_the_outputs_and_leftovers_are_removed(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / f".mmseqs.tmp-{_dead_pid()}"
    (leftover / "tmp1").mkdir(parents=True)
    (leftover / "tmp1" / "big.db").write_bytes(b"x" * 100)
    _run(corpus[0], out, method="linclust", min_seq_id=0.5)
    assert not leftover.exists()
    assert sorted(p.name for p in out.iterdir()) == ["clusters.tsv", "mmseqs.log", "sizes.tsv", "stats.json"]
    assert "/tmp/" not in (out / "stats.json").read_text()


def _random_clustering(record_numbers, n_clusters, rng):
    """MMseqs2-like (representative, member) pairs: each cluster's representative is one of its members."""
    groups = {}
    for number in record_numbers:
        groups.setdefault(rng.randrange(n_clusters), []).append(number)
    pairs = [(rng.choice(members), member) for members in groups.values() for member in members]
    rng.shuffle(pairs)
    return pairs


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_naming_equals_the_in_memory_result(tmp_path, threads):
    """Ids whose numeric and lexicographic orders differ ("10" < "9"), upper and lower case, punctuation,
    record numbers past 9 (so MMseqs2's numbers too sort differently as text), and many clusters: DuckDB's
    joins and sorts must give the rows a plain in-memory pass in Python gives, at 1 and 2 threads."""
    rng = random.Random(3)
    ids = ([str(n) for n in rng.sample(range(1, 2000), 400)] + [f"s{n}" for n in range(30)] +
           [f"S{n}" for n in range(30)] + [f"x|{n}_A.b-{n}" for n in range(30)] + ['q"1', "q'2", "r,3", "~z"])
    rng.shuffle(ids)
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i} description\nMKV\n" for i in ids))
    work = tmp_path / "work"
    work.mkdir()
    assert _number_records(fasta, work / "numbered.fasta", work / "ids.txt") == len(ids)
    fine_pairs = _random_clustering(range(len(ids)), 120, rng)
    (work / "level1.tsv").write_text("".join(f"{rep}\t{member}\n" for rep, member in fine_pairs))

    # In memory, as the starting commit did it: {member: representative}, then the smallest member names.
    rep_of = {ids[member]: ids[rep] for rep, member in fine_pairs}
    fine_name = {}
    for member, rep in rep_of.items():
        fine_name[rep] = min(fine_name.get(rep, member), member)
    fine = {member: fine_name[rep] for member, rep in rep_of.items()}
    expected_fine = sorted((fine[m], m) for m in fine)
    assert len({name for name, _ in expected_fine}) > 50

    coarse_pairs = _random_clustering(sorted(ids.index(name) for name in set(fine.values())), 15, rng)
    (work / "level2.tsv").write_text("".join(f"{rep}\t{member}\n" for rep, member in coarse_pairs))
    coarse_rep_of = {ids[member]: rep for rep, member in coarse_pairs}
    coarse_rep = {m: coarse_rep_of[fine[m]] for m in fine}
    coarse_name = {}
    for member, rep in coarse_rep.items():
        coarse_name[rep] = min(coarse_name.get(rep, member), member)
    expected_coarse = sorted((coarse_name[coarse_rep[m]], fine[m], m) for m in fine)

    with engine.connect(work, threads=threads, mem_mb=200) as con:
        _load_members(con, work / "level1.tsv", work / "ids.txt", len(ids), fasta)
        _fine_level(con)
        canonical = [n for (n,) in con.execute("SELECT canonical FROM fine_names ORDER BY canonical").fetchall()]
        assert canonical == sorted(ids.index(name) for name in set(fine.values()))
        _write_clusters(con, tmp_path / "fine.tsv", tmp_path / "fine_sizes.tsv",
                        "SELECT cluster AS cluster_id, id AS member_id FROM fine", False)
        _coarse_level(con, work / "level2.tsv", len(ids), fasta, "mmseqs.log")
        con.execute("DROP TABLE rows; DROP TABLE sizes")
        summary = _write_clusters(con, tmp_path / "coarse.tsv", tmp_path / "coarse_sizes.tsv",
                                  "SELECT cluster AS cluster_id, subcluster AS subcluster_id, member AS member_id "
                                  "FROM coarse", True)
    assert (tmp_path / "fine.tsv").read_text() == "cluster_id\tmember_id\n" + "".join(
        f"{c}\t{m}\n" for c, m in expected_fine)
    # One level, as cluster_sequences writes it (ranks of the ids instead of sorting them four times).
    with engine.connect(work, threads=threads, mem_mb=200) as con:
        _load_members(con, work / "level1.tsv", work / "ids.txt", len(ids), fasta)
        one_level = _write_one_level(con, tmp_path / "one.tsv", tmp_path / "one_sizes.tsv")
    assert (tmp_path / "one.tsv").read_text() == (tmp_path / "fine.tsv").read_text()
    fine_sizes = Counter(name for name, _ in expected_fine)
    assert (tmp_path / "one_sizes.tsv").read_text() == "cluster_id\tsize\n" + "".join(
        f"{name}\t{fine_sizes[name]}\n" for name in sorted(fine_sizes, key=lambda n: (-fine_sizes[n], n)))
    assert (tmp_path / "one_sizes.tsv").read_text() == (tmp_path / "fine_sizes.tsv").read_text()
    assert one_level == {"n_sequences": len(ids), "n_clusters": len(fine_sizes), "n_subclusters": 0,
                         "n_singletons": sum(size == 1 for size in fine_sizes.values()),
                         "largest_cluster": max(fine_sizes.values()),
                         "size_histogram": {str(k): v for k, v in sorted(Counter(fine_sizes.values()).items())}}
    assert (tmp_path / "coarse.tsv").read_text() == "cluster_id\tsubcluster_id\tmember_id\n" + "".join(
        "\t".join(row) + "\n" for row in expected_coarse)
    sizes = Counter(name for name, _, _ in expected_coarse)
    subclusters = {name: len({sub for c, sub, _ in expected_coarse if c == name}) for name in sizes}
    assert (tmp_path / "coarse_sizes.tsv").read_text() == "cluster_id\tsize\tn_subclusters\n" + "".join(
        f"{name}\t{sizes[name]}\t{subclusters[name]}\n" for name in sorted(sizes, key=lambda n: (-sizes[n], n)))
    assert summary["n_subclusters"] == len(set(fine.values())) and summary["n_sequences"] == len(ids)
    assert sorted(p.name for p in work.iterdir()) == ["ids.txt", "level1.tsv", "level2.tsv",
                                                     "numbered.fasta"]  # no spill folder left


def _members_of(tmp_path, pairs_text, ids):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\nMKV\n" for i in ids))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    n = _number_records(fasta, work / "numbered.fasta", work / "ids.txt")
    (work / "pairs.tsv").write_text(pairs_text)
    with engine.connect(work) as con:
        _load_members(con, work / "pairs.tsv", work / "ids.txt", n, fasta)


def test_engine_check_reports_missing_and_repeated_records(tmp_path):
    ids = ("b", "a", "c", "10", "9")
    with pytest.raises(PlmscaleError, match=r"2 missing \(e\.g\. \['c', '9'\]\)"):  # "c" (2), "9" (4) left out
        _members_of(tmp_path, "0\t0\n0\t1\n3\t3\n", ids)
    with pytest.raises(PlmscaleError, match=r"1 repeated \(e\.g\. \['c'\]\)"):
        _members_of(tmp_path, "0\t0\n0\t1\n0\t2\n3\t3\n3\t4\n3\t2\n", ids)
    for bad in ("0\t0\n0\t5\n", "0\t0\n0\t-1\n", "0\t0\n0\t+1\n", "0\t0\n0\tx\n"):
        with pytest.raises(PlmscaleError, match="not record numbers"):
            _members_of(tmp_path, bad, ids)


@pytest.mark.parametrize("second_level", [None, {"min_seq_id": 0.5}], ids=["one_level", "two_levels"])
def test_tables_do_not_depend_on_threads_or_memory(second_level, tmp_path, monkeypatch):
    """End to end with MMseqs2, numeric ids: the tables are the same bytes at 1 thread with DuckDB's
    memory at 3,000 MB and at 2 threads with 8,000 MB (MMseqs2 needs ~1 GB for its prefilter)."""
    records = generate(seed=4, n_families=30, members_per_family=6, n_exact_duplicates=0, n_malformed=0)
    sequences = [r.sequence for items in records.values() for r in items]
    numbers = random.Random(0).sample(range(1, 10 * len(sequences)), len(sequences))
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in zip(numbers, sequences)))
    outputs = []
    for threads, mem_mb in ((1, 3000), (2, 8000)):
        out = tmp_path / f"{threads}"
        out.mkdir()
        cluster_sequences(fasta, out / "clusters.tsv", out / "sizes.tsv", out / "stats.json", method="linclust",
                          min_seq_id=0.9, second_level=second_level, threads=threads, mem_mb=mem_mb)
        stats = json.loads((out / "stats.json").read_text())
        del stats["commands"]   # they name the threads and memory
        outputs.append([(out / name).read_bytes() for name in ("clusters.tsv", "sizes.tsv")] + [stats])
    assert outputs[0] == outputs[1]
    rows = list(read_clusters(tmp_path / "1" / "clusters.tsv"))
    assert rows == sorted(rows) and len({row[0] for row in rows}) > 20


def test_repeated_ids_are_refused_before_clustering(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\nMKV\n" for i in ["x", "y", "z", "u", "v", "w", "y", "t", "s"]))
    with pytest.raises(PlmscaleError, match=r"ids must be unique before clustering; repeated: \['y'\]"):
        _run(fasta, tmp_path / "out")
    assert not (tmp_path / "out" / "clusters.tsv").exists()


def test_too_little_memory_names_the_key_to_raise_first(tmp_path):
    """Issue 27: the error quoted MMseqs2's log but did not lead with the config key to raise."""
    rng = np.random.default_rng(4)
    fasta = tmp_path / "random.fasta"
    fasta.write_text("".join(f">r{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), 200))}\n"
                             for i in range(300)))
    with pytest.raises(PlmscaleError) as caught:
        cluster_sequences(fasta, tmp_path / "clusters.tsv", tmp_path / "sizes.tsv", tmp_path / "stats.json",
                          method="cluster", threads=1, mem_mb=1)
    assert str(caught.value).splitlines()[0] == ("MMseqs2 ran out of memory: raise data.cluster.mem_mb (now 1 MB) "
                                                 "in the config, e.g. double it.")


def test_a_cluster_job_below_what_mmseqs2_was_measured_to_need_is_warned(corpus, tmp_path, caplog):
    """--split-memory-limit bounds only MMseqs2's k-mer table (at 10M sequences, told 480 MB, it held 1 GB of
    its own): a job given less than the measured floor is told so, with the value to raise it to."""
    fasta = tmp_path / "ten_mib.fasta"
    fasta.write_bytes(b">0\n" + b"A" * (10 * 2 ** 20 - 4) + b"\n")
    floor = mmseqs_memory_floor_mb(fasta.stat().st_size)
    assert floor == pytest.approx(280 + 1.16 * 10)
    with caplog.at_level("WARNING", logger="plmscale.data.mmseqs"):
        assert warn_if_short_of_memory(fasta, int(floor) - 1)
        assert not warn_if_short_of_memory(fasta, int(floor) + 1) and not warn_if_short_of_memory(fasta, None)
    assert len(caplog.records) == 1
    assert f"data.cluster.mem_mb is {int(floor) - 1} MB" in caplog.text and f"at least {floor:.0f}" in caplog.text
    caplog.clear()
    # The cluster step warns and still clusters: a small corpus fits in what MMseqs2 is given.
    with caplog.at_level("WARNING", logger="plmscale.data.mmseqs"):
        cluster_sequences(corpus[0], tmp_path / "clusters.tsv", tmp_path / "sizes.tsv", tmp_path / "stats.json",
                          min_seq_id=0.9, threads=1, mem_mb=250)
    assert "data.cluster.mem_mb is 250 MB" in caplog.text
    assert {member for _, member in read_clusters(tmp_path / "clusters.tsv")} == set(corpus[1])


def test_numbering_for_mmseqs2_in_blocks_gives_the_line_by_line_bytes(tmp_path, monkeypatch):
    """The numbered copy (record k as `>k`) and the ids file, written a block of records at a time, are what
    a pass line by line writes: headers with descriptions, tabs and leading blanks, numbers past 9 and 99,
    blocks of a few records (every block boundary)."""
    monkeypatch.setattr("plmscale.data.recordblocks.BLOCK_BYTES", 61)
    headers = [f"id{k} some description" if k % 3 else f" \tlead{k}\tx" for k in range(150)]
    sequences = ["MKV" * (1 + k % 7) for k in range(150)]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{h}\n{s}\n" for h, s in zip(headers, sequences)))
    assert _number_records(fasta, tmp_path / "numbered.fasta", tmp_path / "ids.txt") == 150
    assert (tmp_path / "numbered.fasta").read_text() == "".join(f">{k}\n{s}\n" for k, s in enumerate(sequences))
    assert (tmp_path / "ids.txt").read_text() == "".join(f"{h.split()[0]}\n" for h in headers)
