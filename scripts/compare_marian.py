"""Side-by-side: vaswani vs transformers' MarianMTModel configured to the identical architecture, trained with the
same data, tokenizer, recipe and time budget, evaluated the same way, over several seeds. Prints one table of every
run and the medians, and under it whether the medians meet the project's quality target (TARGETS): PASS or FAIL.

    python -m vaswani.scripts.compare_marian                          # 2 seeds each: about 4 x 19 minutes on 2 cores
    python -m vaswani.scripts.compare_marian --time-budget 5m --seeds 0 --output-dir runs/compare
    python -m vaswani.scripts.compare_marian --update-readme README.md # and write the table into the README

Any option of `vaswani.scripts.train_translation` passes through. The runs alternate (vaswani seed 0, Marian seed 0,
vaswani seed 1, ...), so that a machine whose speed drifts slows both alike. The tokenizer is trained once, by the
first run, and reused by all, so every run sees identical token ids; `--precision auto` is resolved once, before
the first run, so that all train in one precision (the caption says which). `--update-readme` replaces the table between
the markers `<!-- compare_marian -->` and `<!-- /compare_marian -->`.
"""

import argparse
import json
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import vaswani
from vaswani.scripts import recipe, train_translation

MODELS = ("vaswani", "marian")
START, END = "<!-- compare_marian -->", "<!-- /compare_marian -->"


def machine() -> str:
    """The CPU (or GPU) this ran on, in words, for the table's caption."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    return f"{torch.get_num_threads()} threads of an {name} ({torch.backends.cpu.get_cpu_capability()})"


def summary(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per model, the median over its runs of each figure of the table."""
    figures = ("bleu", "chrf", "validation_bleu", "steps", "steps_per_second", "length_ratio", "looping_share")
    return {model: {key: statistics.median(run[key] for run in results) for key in figures}
            for model, results in runs.items()}  # fmt: skip


def row(name: str, seed: str, r: dict) -> str:
    return (f"| {name} | {seed} | {r['steps']:,.0f} | {r['steps_per_second']:.2f} | {r['bleu']:.2f} | {r['chrf']:.2f} "
            f"| {r['validation_bleu']:.2f} | {r['length_ratio']:.3f} | {100 * r['looping_share']:.1f}% |")  # fmt: skip


def table(runs: dict[str, list[dict]], medians: dict, caption: str) -> str:
    lines = [caption, "",
             "| model | seed | steps | steps/s | test BLEU | test chrF | validation BLEU | length ratio "
             "| looping |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for model, results in runs.items():
        lines += [row(model, str(r["recipe"]["seed"]), r) for r in results]
    lines += [row(f"**{model}, median**", "", medians[model]) for model in runs]
    v, m = medians["vaswani"], medians["marian"]
    lines += ["", f"vaswani - Marian, medians: {v['bleu'] - m['bleu']:+.2f} test BLEU; vaswani takes "
                  f"{v['steps'] / m['steps']:.2f}x Marian's steps.", "", verdict(medians)]  # fmt: skip
    return "\n".join(lines)


# The quality target, on the medians of the runs (vaswani against Marian): (name, figure as printed, bound as
# printed, met). Judged on medians because one run's speed and looping swing with the machine's hour.
TARGETS = "steps >= 1.2x Marian's, test BLEU >= Marian's + 1.5, looping <= 1.5%, length ratio 0.95-1.05"


def verdict(medians: dict[str, dict[str, float]]) -> str:
    """PASS/FAIL of each part of the quality target on the medians, and of the whole, as lines of Markdown."""
    v, m = medians["vaswani"], medians["marian"]
    checks = [
        ("steps", f"{v['steps'] / m['steps']:.2f}x Marian's", ">= 1.2x", v["steps"] >= 1.2 * m["steps"]),
        ("test BLEU", f"{v['bleu'] - m['bleu']:+.2f} against Marian", ">= +1.5", v["bleu"] - m["bleu"] >= 1.5),
        (
            "looping",
            f"{100 * v['looping_share']:.1f}% of outputs",
            "<= 1.5%",
            v["looping_share"] <= 0.015,
        ),
        ("length ratio", f"{v['length_ratio']:.3f}", "0.95-1.05", 0.95 <= v["length_ratio"] <= 1.05),
    ]
    whole = "PASS" if all(met for *_, met in checks) else "FAIL"
    lines = [f"Quality target, on vaswani's medians: **{whole}**", ""]
    lines += [
        f"- {name}: {figure} (target {bound}): {'PASS' if met else 'FAIL'}" for name, figure, bound, met in checks
    ]
    return "\n".join(lines)


MARKED = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)


def check_markers(path: Path) -> str:
    """The text of `path`; a file without the markers raises SystemExit (checked before any run, and again
    before writing)."""
    readme = path.read_text(encoding="utf-8")
    if not MARKED.search(readme):
        raise SystemExit(f"error: --update-readme: {path} has no {START} ... {END} markers to replace.")
    return readme


def update_readme(path: Path, text: str) -> None:
    """Replaces what lies between the markers in `path` with `text`; a README without them raises SystemExit."""
    readme = check_markers(path)
    path.write_text(MARKED.sub(lambda _: f"{START}\n{text}\n{END}", readme), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    recipe.command_line_logging()  # each run logs as the job does (data, precision)
    # allow_abbrev=False: the job's own --seed would otherwise be taken for an abbreviation of --seeds.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=Path("runs/compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of each model (default: 0 1)")
    parser.add_argument("--update-readme", type=Path, help="write the table between the README's markers")
    args, passthrough = parser.parse_known_args(argv)
    for flag in ("--model-type", "--tokenizer", "--seed", "--model-name-or-path"):
        if flag in passthrough:
            parser.error(f"{flag} is set by the comparison itself")
    if args.update_readme:
        check_markers(args.update_readme)  # before any work
    parsed = train_translation.parse_args(passthrough)  # a bad option fails now, not after the first run
    if parsed.precision == "auto":  # measured once, so that every run of the comparison trains in one precision
        d_model = vaswani.PRESETS[parsed.preset or "small"]["d_model"]
        passthrough = [*passthrough, "--precision", "bf16" if train_translation.use_bf16(parsed, d_model) else "fp32"]
    runs: dict[str, list[dict]] = {model: [] for model in MODELS}
    tokenizer = args.output_dir / "tokenizer"
    for seed in args.seeds:
        for model in MODELS:  # alternating, so that a drifting machine slows both alike
            out = args.output_dir / f"{model}-seed{seed}"
            run_args = [*passthrough, "--model-type", model, "--seed", str(seed), "--output-dir", str(out)]
            if tokenizer.is_dir():  # the first run trains it; every later run reads the same vocabulary
                run_args += ["--tokenizer", str(tokenizer)]
            start = time.monotonic()
            result = train_translation.run(train_translation.parse_args(run_args))
            if not tokenizer.is_dir():
                (out / "tokenizer").rename(tokenizer)
            result["validation_bleu"] = result["validation"]["bleu"]
            result["job_minutes"] = round((time.monotonic() - start) / 60, 1)
            runs[model].append(result)
    medians = summary(runs)
    command = shlex.join(
        ["python", "-m", "vaswani.scripts.compare_marian", *(argv if argv is not None else sys.argv[1:])]
    )
    precision = "bf16 autocast" if runs["vaswani"][0]["recipe"]["bf16"] else "fp32"
    caption = (f"Measured on {time.strftime('%Y-%m-%d')} on {machine()}; torch {torch.__version__}, transformers "
               f"{transformers.__version__}, vaswani {vaswani.__version__}; {precision}; runs alternating, back to "
               f"back; `{command}`.")  # fmt: skip
    text = table(runs, medians, caption)
    (args.output_dir / "comparison.json").write_text(
        json.dumps({"runs": runs, "medians": medians, "caption": caption}, indent=2, ensure_ascii=False)
    )
    (args.output_dir / "comparison.md").write_text(text + "\n", encoding="utf-8")
    print(f"\n{text}\n\n{runs['vaswani'][0]['bleu_signature']}\n{runs['vaswani'][0]['chrf_signature']}")
    if args.update_readme:
        update_readme(args.update_readme, text)
        print(f"\nWrote the table into {args.update_readme}.")


if __name__ == "__main__":
    main()
