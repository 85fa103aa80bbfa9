"""Pictures a person would rather look at than read: training curves and attention heatmaps.

    python -m vaswani.scripts.plots CHECKPOINT "The house is small." [--output-dir DIR]

draws the encoder self-attention, decoder self-attention and encoder-decoder attention of every layer and head
for one sentence (translated by the checkpoint itself), one PNG per kind.
"""

import argparse
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ATTENTION_KINDS = {
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention (masked)",
    "cross_attentions": "encoder-decoder attention",
}


def plot_curves(
    log_history: list[dict], path: Path, final_note: str | None = None, label_smoothing: float = 0.0
) -> Path:
    """Training and validation loss, and the learning rate, against the training step; `final_note` (e.g. the final
    model's validation BLEU) goes in the loss panel's title. Both losses are computed alike, smoothed by
    `label_smoothing` where it is not 0, as the legend says."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    valid = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    rate = [(e["step"], e["learning_rate"]) for e in log_history if "learning_rate" in e]
    figure, (loss_axes, rate_axes) = plt.subplots(1, 2, figsize=(11, 4))
    smoothed = f" (label smoothing {label_smoothing:g})" if label_smoothing else ""
    for points, label in ((train, f"training loss{smoothed}"), (valid, f"validation loss{smoothed}")):
        if points:
            loss_axes.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=label)
    loss_axes.set(
        xlabel="step", ylabel="cross-entropy per token", title="Loss" + (f" ({final_note})" if final_note else "")
    )
    if train or valid:  # a legend without lines is a warning
        loss_axes.legend()
    if rate:
        rate_axes.plot(*zip(*rate, strict=True), color="tab:green")
    rate_axes.set(xlabel="step", ylabel="learning rate", title="Learning rate (warmup, then 1/sqrt(step))")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


@torch.no_grad()
def attention_maps(model, tokenizer, sentence: str, max_new_tokens: int = 60):
    """The model's translation of `sentence`, its attention weights in one teacher-forced pass over it, and each
    kind's axis labels {kind: (rows, columns)}. A decoder row is labelled with the token it predicts: its input is
    the token before, and rows labelled with their inputs read shifted by one ("Gott" lit up "the")."""
    model.eval()
    batch = tokenizer([sentence], return_tensors="pt").to(model.device)
    generated = model.generate(**batch, num_beams=4, max_new_tokens=max_new_tokens)
    inputs = generated[:, :-1]  # the decoder start token and the translation; row i predicts generated[i + 1]
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")  # only eager attention returns its weights
    try:
        out = model(**batch, decoder_input_ids=inputs, output_attentions=True)
    finally:
        model.set_attn_implementation(implementation)
    source = token_labels(tokenizer, batch["input_ids"][0])
    predicted, fed = token_labels(tokenizer, generated[0, 1:]), token_labels(tokenizer, inputs[0])
    labels = {"encoder_attentions": (source, source), "decoder_attentions": (predicted, fed),
              "cross_attentions": (predicted, source)}  # fmt: skip
    return out, labels, generated


def token_labels(tokenizer, ids) -> list[str]:
    """Each token as text, "▁" marking a word's start as sentencepiece does. Byte-level BPE stores a token as its
    bytes written as characters ("ä" is "Ã¤", a space "Ġ"), so each token is decoded on its own; a token holding
    part of a character shows "�"."""
    special = set(tokenizer.all_special_tokens)  # a property that rebuilds its list on every access
    labels = []
    for token in tokenizer.convert_ids_to_tokens(ids):
        if token in special:
            labels.append(token)
            continue
        text = tokenizer.convert_tokens_to_string([token])
        starts_word = text.startswith(" ") or token.startswith("▁")  # sentencepiece's decoding drops its "▁"
        labels.append("▁" + text.lstrip(" ") if starts_word else text)
    return labels


def panel_size(queries: int, keys: int) -> tuple[float, float]:
    """Inches (width, height) of one heatmap of `queries` x `keys` tokens: a fixed size per token, so that cells
    stay square and labels readable however long the sentence is (a long output is tall, a long input wide)."""
    inches_per_token = 0.17
    return max(1.6, inches_per_token * keys + 0.6), max(1.6, inches_per_token * queries + 0.5)


def plot_attention(model, tokenizer, sentence: str, output_dir: Path) -> list[Path]:
    """One PNG per attention kind: a grid of layers (rows) x heads (columns), each panel sized from its tokens."""
    out, labels, _ = attention_maps(model, tokenizer, sentence)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, title in ATTENTION_KINDS.items():
        layers = getattr(out, kind)  # per layer: (1, h, queries, keys)
        rows, cols = len(layers), layers[0].shape[1]
        queries, keys = labels[kind]
        width, height = panel_size(len(queries), len(keys))
        # constrained layout keeps the title above the panels and the labels out of each other's way
        figure, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.8), squeeze=False,
                                    layout="constrained")  # fmt: skip
        for layer, weights in enumerate(layers):
            for head in range(cols):
                ax = axes[layer][head]
                image = ax.imshow(weights[0, head].float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
                ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
                # Every panel has the same tokens on its axes, so only the outer panels carry them: the keys under
                # the bottom row, the queries left of the first column. (Tick labels are most of the drawing time:
                # on every panel, a 60-token output took 12 s to draw on 2 cores.)
                if layer == rows - 1:
                    ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
                else:
                    ax.set_xticks([])
                if head == 0:
                    ax.set_yticks(range(len(queries)), queries, fontsize=6)
                else:
                    ax.set_yticks([])
        figure.colorbar(image, ax=axes, shrink=min(1.0, 3 / rows), label="attention weight")  # every panel: 0 to 1
        if kind != "encoder_attentions":
            figure.supylabel("each row: the output token it predicts", fontsize=8)
        wrapped = textwrap.fill(f"{title}: {sentence!r}", width=max(40, int(12 * width * cols)))
        figure.suptitle(wrapped, fontsize=10)
        path = output_dir / f"{kind.removesuffix('s')}.png"  # encoder_attention.png, ...
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    import vaswani  # noqa: F401  (registers the Auto classes)
    from vaswani.scripts.recipe import command_line_logging, load_model_and_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a folder (or Hub id) with the model and its tokenizer")
    parser.add_argument("sentence", help="the source sentence to translate and draw")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/attention"),
        help="where the PNGs go (default: runs/attention, which git ignores as every run's output)",
    )
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    command_line_logging()
    try:
        model, tokenizer = load_model_and_tokenizer(args.checkpoint, trust_remote_code=args.trust_remote_code)
    except ValueError as error:
        parser.error(str(error))
    for path in plot_attention(model, tokenizer, args.sentence, args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
