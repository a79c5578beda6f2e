"""Two CPU processes (gloo): DDP and FSDP give the one-process loss at the same global batch; FSDP resumes."""

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from train_fixtures import member_split, tiny_spec

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, spec, out, stop_after):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from plmscale.train import train_run
    train, valid = member_split(n_families=4)
    train_run(spec, train, valid, f"{out}/out", f"{out}/ck", threads=1, stop_after_steps=stop_after)


def two_processes(spec, out, stop_after=None):
    mp.spawn(_worker, args=(2, _free_port(), spec, str(out), stop_after), nprocs=2, join=True)
    path = out / "out" / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def one_process(spec, out):
    from plmscale.train import train_run
    train, valid = member_split(n_families=4)
    return train_run(spec, train, valid, out / "out", out / "ck", threads=1)


def spec_for(strategy):
    # global batch 8 sequences: 1 process = 2 micro-batches of 4; 2 processes = 1 micro-batch of 4 each
    return tiny_spec("mlm", tokens=6000, checkpoint_every_steps=4, eval_every_steps=4,
                     distributed={"strategy": strategy})


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return one_process(spec_for("none"), tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(strategy, single, tmp_path):
    metrics = two_processes(spec_for(strategy), tmp_path)
    assert metrics["world_size"] == 2 and metrics["strategy"] == strategy
    assert metrics["steps"] == single["steps"] and metrics["tokens"] == single["tokens"]
    assert metrics["batch_sequences"] == single["batch_sequences"] == 8
    assert metrics["final_valid_loss"] == pytest.approx(single["final_valid_loss"], abs=1e-5)
    assert metrics["train_loss"] == pytest.approx(single["train_loss"], abs=1e-5)


def test_fsdp_stops_and_resumes_to_the_same_loss(single, tmp_path):
    assert two_processes(spec_for("fsdp"), tmp_path, stop_after=6) is None
    assert (tmp_path / "ck" / "last.pt").exists()
    resumed = two_processes(spec_for("fsdp"), tmp_path)
    assert resumed["final_valid_loss"] == pytest.approx(single["final_valid_loss"], abs=1e-5)
    assert resumed["train_loss"] == pytest.approx(single["train_loss"], abs=1e-5)
