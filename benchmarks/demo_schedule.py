"""How long a finished demo run would have taken on more (or fewer) cores: its own jobs, rescheduled.

Reads the Snakemake log of a finished `snakemake --cores 2` run of the demo (the newest in
<workdir>/.snakemake/log/), takes each job's measured wall time, and replays the workflow's phases on N cores
with longest-job-first list scheduling: the data stage (corpus to identity search), the training runs the fit
waits for (grid, MLM, transfer), the fit, and the tail (closed-loop runs, repetition study, exports, plots;
the workflow's priorities put the repetition runs there). The baseline is the run's own measured wall time:
the replay at the cores it ran on should land next to it, which is what makes the other rows worth reading.

The data stage's MMseqs2 jobs use the cores they are given, with less than linear gain, so it is shown two
ways: as measured (an upper bound) and shrunk in proportion to the cores (a lower bound). Jobs keep their
measured durations, so a replay also inherits the machine's speed during the run.

    python benchmarks/demo_schedule.py /tmp/demo/main --cores 2 3 4 --markdown docs/benchmarks.md
"""

import argparse
import datetime
import re
from pathlib import Path

from markdown_table import publish

TAIL_RULES = {"closed_loop_train", "closed_loop_score", "predict", "plot", "export_run", "sample_sequences",
              "repetition"}
FIT_RULES = {"collect", "fit"}
STAMP = re.compile(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]")


def read_jobs(log_path: Path):
    """[(rule, wildcards, start_s, end_s)] of every finished job, seconds from the first timestamp."""
    started, rule_of, jobs, now, origin, rule = {}, {}, [], None, None, None
    for line in log_path.read_text().splitlines():
        stamp = STAMP.match(line)
        if stamp:
            now = datetime.datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
            origin = origin or now
            continue
        if (match := re.match(r"\s*(?:local)?rule (\S+):", line)):
            rule = match.group(1)
        elif (match := re.match(r"\s*jobid: (\d+)", line)):
            started[match.group(1)], rule_of[match.group(1)] = (now - origin).total_seconds(), [rule, ""]
        elif (match := re.match(r"\s*wildcards: (.*)", line)) and rule_of:
            rule_of[list(rule_of)[-1]][1] = match.group(1)
        elif (match := re.match(r"Finished jobid: (\d+)", line)):
            job = match.group(1)
            jobs.append((*rule_of[job], started[job], (now - origin).total_seconds()))
    return jobs


def phases(jobs):
    """(data-stage wall, grid durations, fit durations, tail durations)."""
    trains = [j for j in jobs if j[0] == "train"]
    data_wall = min(start for _, _, start, _ in trains)
    is_tail = [j[0] in TAIL_RULES or (j[0] == "train" and re.search(r"run_id=(rep|mix)_", j[1])) for j in jobs]
    grid = [end - start for (rule, _, start, end), tail in zip(jobs, is_tail) if rule == "train" and not tail]
    fit = [end - start for rule, _, start, end in jobs if rule in FIT_RULES]
    tail = [end - start for (_, _, start, end), flag in zip(jobs, is_tail) if flag]
    return data_wall, grid, fit, tail


def list_schedule(durations, cores: int) -> float:
    """Makespan of longest-first list scheduling, one core per job (the demo's runs are 1-thread jobs)."""
    ends = [0.0] * cores
    for duration in sorted(durations, reverse=True):
        ends[ends.index(min(ends))] += duration
    return max(ends)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="the finished run's working directory (holds .snakemake/)")
    parser.add_argument("--ran-on", type=int, default=2, help="cores the run had (--cores)")
    parser.add_argument("--cores", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logs = sorted((args.workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"{args.workdir}/.snakemake/log has no Snakemake log: run the workflow there first")
    jobs = read_jobs(logs[-1])
    measured = max(end for *_, end in jobs)
    data_wall, grid, fit, tail = phases(jobs)
    rows = []
    for cores in args.cores:
        rest = list_schedule(grid, cores) + sum(fit) + list_schedule(tail, cores)
        slow, fast = data_wall + rest, data_wall * args.ran_on / cores + rest
        label = f"{cores}" + (f" (ran on {args.ran_on}: measured {measured / 60:.1f} min, baseline)"
                              if cores == args.ran_on else "")
        rows.append(f"| {label} | {fast / 60:.1f}-{slow / 60:.1f} min | {list_schedule(grid, cores):.0f} s | "
                    f"{list_schedule(tail, cores):.0f} s |")
    lines = [f"Replay of {logs[-1].name} ({len(jobs)} jobs; data stage {data_wall:.0f} s, grid {sum(grid):.0f} "
             f"run-seconds in {len(grid)} jobs, fit {sum(fit):.0f} s, tail {sum(tail):.0f} job-seconds in "
             f"{len(tail)} jobs):", "",
             "| cores | projected wall (data stage scaled - as measured) | grid | tail |", "|---|---:|---:|---:|",
             *rows]
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
