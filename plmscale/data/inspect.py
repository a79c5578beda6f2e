"""What a shard directory holds, as lines of text (`plmscale inspect-shards`, plmscale.cli.inspect_shards)."""

from plmscale.data.shards import ShardReader


def summary_lines(reader: ShardReader) -> list:
    m = reader.manifest
    lengths = reader.lengths
    lines = [
        f"split:      {m['split']}  ({reader.directory})",
        f"sequences:  {m['n_sequences']:,}",
        f"tokens:     {m['n_tokens']:,} residues"
        + (f"  (length min {int(lengths.min())}, mean {float(lengths.mean()):.1f}, max {int(lengths.max())})"
           if len(lengths) else ""),
        f"clusters:   {m['n_clusters']:,}",
        f"shards:     {len(m['shards'])}  ("
        + ", ".join(f"{s['bin']}: {s['n_sequences']:,} seq" for s in m["shards"][:4])
        + (", ..." if len(m["shards"]) > 4 else "") + ")",
        "sources:",
    ]
    for name in m["sources"]:
        counts = m["per_source"][name]
        share = counts["n_tokens"] / m["n_tokens"] if m["n_tokens"] else 0.0
        lines.append(f"  {name}: {counts['n_sequences']:,} sequences, {counts['n_tokens']:,} tokens ({share:.1%})")
    return lines
