"""Shared by the benchmark scripts: a markdown table from rows; print it and, with --markdown, append it to a file."""


def publish(text: str, markdown_path: str | None = None) -> None:
    print(text)
    if markdown_path:
        with open(markdown_path, "a") as handle:
            handle.write("\n" + text + "\n")


def markdown_table(header, rows) -> str:
    """A markdown table: header cells, then one line per row."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])
