"""Shared by the benchmark scripts: print a result table and, with --markdown, append it to a file."""


def publish(text: str, markdown_path: str | None = None) -> None:
    print(text)
    if markdown_path:
        with open(markdown_path, "a") as handle:
            handle.write("\n" + text + "\n")
