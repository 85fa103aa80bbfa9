import torch
from conftest import tiny_model
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

EOS, PAD, FIRST_SYMBOL = 2, 0, 4


def reverse_task(n: int, vocab_size: int, seed: int, min_len: int = 3, max_len: int = 7) -> list[dict]:
    """Source: random symbols; target: the same symbols reversed, then </s>."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        symbols = torch.randint(FIRST_SYMBOL, vocab_size, (length,), generator=generator).tolist()
        examples.append({"input_ids": symbols + [EOS], "labels": symbols[::-1] + [EOS]})
    return examples


def token_budget_trainer(model, data: list[dict], output_dir, token_batches: bool = True, use_cpu: bool = True):
    """The main job's `TokenBudgetTrainer` for a d_model-32 `model` on `data` (e.g. `reverse_task`), with token-count
    batches of at most 64 tokens a side (`token_batches`) or Trainer's own batches."""
    from vaswani.scripts.data import TokenBatchSampler
    from vaswani.scripts.recipe import TokenBudgetTrainer

    sampler = None
    if token_batches:
        sampler = TokenBatchSampler([len(f["input_ids"]) for f in data], [len(f["labels"]) for f in data], 64)
    args = Seq2SeqTrainingArguments(output_dir=str(output_dir), report_to=[], use_cpu=use_cpu)
    return TokenBudgetTrainer(model=model, args=args, train_dataset=data, batch_sampler=sampler, d_model=32,
                              warmup_steps=10, data_collator=DataCollatorForSeq2Seq(CollatorTokenizer()))  # fmt: skip


class LossRecorder(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


class CollatorTokenizer:
    """The collator only needs to pad: ids arrive already tokenized, so a pad id is all it reads."""

    pad_token_id = PAD
    padding_side = "right"

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), PAD)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in features[0]:
            labels = [torch.tensor(f["labels"]) for f in features]
            batch["labels"] = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
        return batch


def test_seq2seq_trainer_with_accumulation_and_label_smoothing(tmp_path):
    model = tiny_model(vocab_size=16, d_model=32)
    model.train()
    data = reverse_task(64, vocab_size=16, seed=0)
    collator = DataCollatorForSeq2Seq(CollatorTokenizer(), model=model, label_pad_token_id=-100)
    recorder = LossRecorder()
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2,
        label_smoothing_factor=0.1, learning_rate=5e-3, max_steps=60, logging_steps=10, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[recorder])
    trainer.train()
    losses = recorder.losses
    assert len(losses) == 6
    assert losses == sorted(losses, reverse=True), losses  # every logged loss lower than the one before
    assert losses[-1] < losses[0] - 0.25, losses
    batch = collator(data[:2])
    assert "decoder_input_ids" in batch  # label smoothing pops labels; the decoder still gets its inputs
    assert torch.equal(batch["decoder_input_ids"][:, 0], torch.tensor([1, 1]))


def test_a_tiny_model_learns_to_reverse_exactly():
    """Proves the whole stack learns: embeddings, both attentions, masks, loss, cache and beam search."""
    torch.manual_seed(0)
    vocab_size = 14
    model = tiny_model(vocab_size=vocab_size, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0)
    model.train()
    collate = CollatorTokenizer()
    train = reverse_task(64 * 400, vocab_size, seed=1, max_len=6)
    # Section 5.3: Adam(0.9, 0.98, 1e-9), linear warmup then inverse square-root decay.
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / 100, (100 / (step + 1)) ** 0.5)
    )
    for start in range(0, len(train), 64):
        loss = model(**collate.pad(train[start : start + 64])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    test = reverse_task(32, vocab_size, seed=2, max_len=6)
    batch = collate.pad([{"input_ids": f["input_ids"]} for f in test])
    generated = model.generate(**batch, num_beams=4, max_new_tokens=10)
    correct = 0
    for row, example in zip(generated.tolist(), test, strict=True):
        output = row[1:]  # drop the decoder start token
        output = output[: output.index(EOS) + 1] if EOS in output else output
        correct += output == example["labels"]
    assert correct / len(test) >= 0.9, f"exact match {correct}/{len(test)}"
