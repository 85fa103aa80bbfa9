"""Side-by-side: vaswani vs transformers' MarianMTModel configured to the identical architecture, trained with the
same data, tokenizer, recipe and time budget, evaluated the same way. Prints both scores.

    python -m vaswani.scripts.compare_marian                  # two default runs: about 2 x 20 minutes on 2 CPU cores
    python -m vaswani.scripts.compare_marian --time-budget 5m --output-dir runs/compare

Any option of `vaswani.scripts.train_translation` passes through. The tokenizer is trained once (by the first run)
and reused by the second, so both see identical token ids.
"""

import argparse
import json
from pathlib import Path

from vaswani.scripts import train_translation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/compare"))
    args, passthrough = parser.parse_known_args(argv)
    for flag in ("--model-type", "--tokenizer"):
        if flag in passthrough:
            parser.error(f"{flag} is set by the comparison itself")
    results = {}
    for model_type in ("vaswani", "marian"):
        run_args = [*passthrough, "--model-type", model_type, "--output-dir", str(args.output_dir / model_type)]
        if model_type == "marian":  # the same vocabulary, token for token
            run_args += ["--tokenizer", str(args.output_dir / "vaswani" / "tokenizer")]
        results[model_type] = train_translation.run(train_translation.parse_args(run_args))
    rows = [f"| {name} | {r['bleu']} | {r['chrf']} | {r['steps']} | {r['parameters'] / 1e6:.2f}M |"
            for name, r in results.items()]  # fmt: skip
    table = "\n".join(["| model | BLEU | chrF | steps | parameters |", "| --- | --- | --- | --- | --- |", *rows])
    (args.output_dir / "comparison.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\n{table}\n\n{results['vaswani']['bleu_signature']}\n{results['vaswani']['chrf_signature']}")


if __name__ == "__main__":
    main()
