"""The data stage: FASTA in, cleaned FASTA, token shards out."""
