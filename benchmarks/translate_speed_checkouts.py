"""Did a change slow translation down? translate_speed.py from several commits, alternated.

    python benchmarks/translate_speed_checkouts.py --checkpoint RUN --commits 94d4983 HEAD
    python benchmarks/translate_speed_checkouts.py --checkpoint RUN --commits HEAD~1 HEAD --smoke

Checks each commit out into a temporary git worktree and runs that checkout's own
`benchmarks/translate_speed.py` (and `dist-lstm translate`) on one checkpoint. Commits take
turns for `--rounds` rounds, every other round in reverse order, so a drift in this
shared machine's speed reaches every commit alike; the figure per commit is the median
over rounds. Also translates the test split once per commit and search, greedy and
beam 5, and records whether every commit wrote the same translations. Writes
benchmarks/results/translate_speed_checkouts_<label>.json (committed).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_lstm.data.corpus import read_lines  # noqa: E402
from dist_lstm.translate.inference import dataset_split_files, load_model  # noqa: E402


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def in_checkout(checkout: Path, command: list[str]) -> None:
    """Run `command` with `checkout`'s package first on the path (not the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run(command, cwd=checkout, env=env, check=True)


def speed_pass(checkout: Path, checkpoint: str, repeats: int, beams: list[int]) -> dict:
    label = "checkout"
    in_checkout(
        checkout,
        [
            sys.executable,
            "benchmarks/translate_speed.py",
            "--checkpoint",
            checkpoint,
            "--repeats",
            str(repeats),
            "--beams",
            *map(str, beams),
            "--label",
            label,
        ],
    )
    written = json.loads(
        (checkout / "benchmarks" / "results" / f"translate_speed_{label}_cpu.json").read_text()
    )
    return {
        "gemm_gflops_2048": written["gemm_gflops_2048"],
        **{
            search: {
                "sentences_per_sec": figures["sentences_per_sec"],
                "seconds": figures["seconds"],
            }
            for search, figures in written["results"].items()
        },
    }


def translations(checkout: Path, checkpoint: str, source: Path, beam: int, out: Path) -> Path:
    in_checkout(
        checkout,
        [
            sys.executable,
            "-m",
            "dist_lstm",
            "translate",
            "--checkpoint",
            checkpoint,
            "--beam",
            str(beam),
            "--input",
            str(source),
            "--output",
            str(out),
        ],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    parser.add_argument("--commits", nargs="+", required=True, help="oldest first; HEAD allowed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="passes per run; median kept")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--label", default="compare", help="names the result file")
    parser.add_argument("--smoke", action="store_true", help="1 round, 1 pass, greedy, no file")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.repeats, args.beams = 1, 1, [1]
    checkpoint = str(Path(args.checkpoint).resolve())
    try:
        shas = {commit: git("rev-parse", "--short", commit) for commit in args.commits}
    except subprocess.CalledProcessError as failure:
        parser.error(f"--commits: git does not know {failure.cmd[-1]!r} in {ROOT}")
    if len(set(shas.values())) < len(shas):
        parser.error(f"--commits name the same commit twice: {shas}")
    with tempfile.TemporaryDirectory(prefix="speed-checkouts-") as scratch:
        checkouts = {}
        for commit, sha in shas.items():
            checkouts[commit] = Path(scratch) / sha
            git("worktree", "add", "--detach", str(checkouts[commit]), sha)
        try:
            rounds = []
            for number in range(args.rounds):
                # Every other round backwards (A B C, C B A, ...): a drift in this
                # machine's speed within a round then reaches each commit alike.
                order = args.commits if number % 2 == 0 else args.commits[::-1]
                measured = {
                    c: speed_pass(checkouts[c], checkpoint, args.repeats, args.beams) for c in order
                }
                rounds.append({c: measured[c] for c in args.commits})
            medians = {
                commit: {
                    search: statistics.median(
                        r[commit][search]["sentences_per_sec"] for r in rounds
                    )
                    for search in rounds[0][commit]
                    if search != "gemm_gflops_2048"
                }
                for commit in args.commits
            }
            src = Path(scratch) / "test.src"  # plain text: the shipped split is gzipped
            test_split, _ = dataset_split_files(load_model(checkpoint).data_config, "test")
            src.write_text("\n".join(read_lines(test_split)) + "\n", encoding="utf-8")
            same = {}
            for beam in args.beams:
                outputs = [
                    translations(checkouts[c], checkpoint, src, beam, Path(scratch) / f"{c}.{beam}")
                    for c in args.commits
                ]
                name = "greedy" if beam == 1 else f"beam{beam}"
                same[name] = all(filecmp.cmp(outputs[0], o, shallow=False) for o in outputs[1:])
        finally:
            for path in checkouts.values():
                git("worktree", "remove", "--force", str(path))
    report = {
        "checkpoint": checkpoint,
        "commits": shas,
        "rounds": rounds,
        "median_sentences_per_sec": medians,
        "same_translations": same,
        "command": "python benchmarks/translate_speed_checkouts.py " + " ".join(sys.argv[1:]),
    }
    write_result(f"translate_speed_checkouts_{args.label}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
