"""plmscale.data.engine: the sorted rows dedup and the split hand from DuckDB to their write passes."""

import numpy as np
import pytest

from plmscale.data import engine
from plmscale.errors import PlmscaleError


def test_rows_copied_to_parquet_come_back_complete_in_the_query_order(tmp_path):
    # More rows than one Parquet row group and one read batch, at two threads and the smallest budget: the
    # write passes pair these rows with FASTA records by position, so order and count must survive.
    keys = np.random.default_rng(5).permutation(400_000)
    with engine.connect(tmp_path, threads=2, mem_mb=256) as con:
        con.register("shuffled", {"key": keys, "value": keys * 3 + 1})
        con.execute("CREATE TABLE t AS SELECT key::BIGINT AS key, value::BIGINT AS value FROM shuffled")
        engine.copy_to_parquet(con, "SELECT key, value FROM t ORDER BY key", tmp_path / "rows.parquet")
    batches = list(engine.parquet_numpy_batches(tmp_path / "rows.parquet", batch_rows=50_000))
    assert len(batches) > 2 and all(len(b["key"]) <= 50_000 for b in batches)
    key = np.concatenate([b["key"] for b in batches])
    value = np.concatenate([b["value"] for b in batches])
    np.testing.assert_array_equal(key, np.arange(400_000))
    np.testing.assert_array_equal(value, key * 3 + 1)


def test_running_out_of_memory_and_scratch_disk_names_the_folder_and_the_key(tmp_path):
    # A sort that must spill, with DuckDB's temporary space capped as a full disk would cap it.
    with pytest.raises(PlmscaleError) as caught:
        with engine.connect(tmp_path, threads=1, mem_mb=256, settings_key="data.cluster") as con:
            con.execute("SET max_temp_directory_size = '1MiB'")
            con.execute("CREATE TABLE t AS SELECT i, md5(i::VARCHAR) AS s FROM range(3000000) t(i) ORDER BY s")
    message = str(caught.value)
    assert message.startswith("DuckDB ran out of room: its memory limit is 128 MB (data.cluster.mem_mb)")
    assert str(tmp_path / "duckdb.tmp") in message and "raise data.cluster.mem_mb" in message
    assert not (tmp_path / "duckdb.tmp").exists()  # the spill folder is still removed
