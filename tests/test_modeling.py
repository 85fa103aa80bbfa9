import math

import pytest
import torch
from conftest import random_batch, tiny_config, tiny_model
from transformers import AutoModel, AutoModelForSeq2SeqLM
from transformers.modeling_outputs import Seq2SeqModelOutput

import vaswani
from vaswani.modeling import scaled_dot_product_attention, sinusoid_table


def test_sinusoid_table_is_the_papers_formula():
    d_model, positions = 10, 60
    table = sinusoid_table(positions, d_model)
    for pos in range(positions):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_positions_extrapolate_beyond_the_table():
    model = tiny_model()  # table of max_position_embeddings=256 rows
    encoding = model.model.encoder.embed_positions
    far = encoding(past_length=250, length=20)  # positions 250..269
    assert torch.allclose(far, sinusoid_table(270, 32)[250:], atol=1e-6)
    input_ids = torch.randint(4, 128, (1, 300))
    out = model(input_ids=input_ids, decoder_input_ids=input_ids[:, :5])
    assert torch.isfinite(out.logits).all()


def test_learned_positions_have_a_clear_limit():
    model = tiny_model(position_embedding_type="learned", max_position_embeddings=16)
    model(input_ids=torch.randint(4, 128, (1, 16)), decoder_input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"learned positions stop at 15 \(`max_position_embeddings`\)"):
        model(input_ids=torch.randint(4, 128, (1, 17)), decoder_input_ids=torch.ones(1, 3, dtype=torch.long))


def test_scaled_dot_product_attention_is_equation_1():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)  # (B, h, T|L, d_k)
    module = torch.nn.Module().eval()
    output, weights = scaled_dot_product_attention(module, q, k, v, None, scaling=8**-0.5)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v  # (B, h, T, d_k)
    assert torch.allclose(output, expected.transpose(1, 2), atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 4))


def test_embeddings_are_scaled_and_shared():
    model = tiny_model()
    shared = model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is shared
    assert model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared  # Section 3.4: same matrix for both embeddings and the output projection
    # With dropout off and one layer's worth of arithmetic bypassed, the embedding sum is sqrt(d_model)*E + PE.
    ids = torch.tensor([[5, 6, 7]])
    expected = shared[ids] * math.sqrt(32) + sinusoid_table(3, 32)
    captured = {}
    model.model.encoder.layers[0].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    model(input_ids=ids, decoder_input_ids=ids)
    assert torch.allclose(captured["x"], expected, atol=1e-6)


def test_untied_output_projection_keeps_source_target_sharing():
    model = tiny_model(tie_word_embeddings=False)
    assert model.lm_head.weight is not model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is model.model.decoder.embed_tokens.weight


def test_post_layer_norm_is_the_default_wiring():
    model = tiny_model()
    outputs = {}
    model.model.encoder.layers[0].register_forward_hook(lambda m, a, out: outputs.setdefault("y", out))
    model(input_ids=torch.randint(4, 128, (2, 6)), decoder_input_ids=torch.ones(2, 2, dtype=torch.long))
    y = outputs["y"]  # LayerNorm(x + Sublayer(x)) with fresh LayerNorm parameters: zero mean, unit variance
    assert torch.allclose(y.mean(-1), torch.zeros(2, 6), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(2, 6), atol=1e-3)
    assert model.model.encoder.layer_norm is None
    pre = tiny_model(pre_layer_norm=True)
    assert pre.model.encoder.layer_norm is not None and pre.model.decoder.layer_norm is not None


@pytest.mark.parametrize("overrides", [{}, {"pre_layer_norm": True}, {"activation_function": "gelu"}])
def test_eager_and_sdpa_agree(overrides):
    input_ids, attention_mask = random_batch()
    eager = tiny_model("eager", **overrides)
    sdpa = tiny_model("sdpa", **overrides)
    sdpa.load_state_dict(eager.state_dict())
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4])
    assert torch.allclose(eager(**kwargs).logits, sdpa(**kwargs).logits, atol=1e-5)


def test_flex_attention_agrees_with_eager():
    """Inference only: FlexAttention has no backward on CPU. One layer each keeps its compile time to seconds."""
    input_ids, attention_mask = random_batch()
    eager = tiny_model("eager", encoder_layers=1, decoder_layers=1)
    flex = tiny_model("flex_attention", encoder_layers=1, decoder_layers=1)
    flex.load_state_dict(eager.state_dict())
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4])
    with torch.no_grad():
        assert torch.allclose(eager(**kwargs).logits, flex(**kwargs).logits, atol=1e-5)


def test_padding_does_not_change_real_positions():
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=3, length=9)
    decoder_input_ids = torch.tensor([[1, 9, 10, 11]] * 3)
    batched = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    for i in range(3):
        n = int(attention_mask[i].sum())
        alone = model(input_ids=input_ids[i : i + 1, :n], decoder_input_ids=decoder_input_ids[i : i + 1])
        assert torch.allclose(batched.logits[i], alone.logits[0], atol=1e-5)
        assert torch.allclose(batched.encoder_last_hidden_state[i, :n], alone.encoder_last_hidden_state[0], atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_fully_padded_rows_never_give_nan(attn_implementation):
    model = tiny_model(attn_implementation)
    input_ids, attention_mask = random_batch()
    attention_mask[1] = 0
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    generated = model.generate(input_ids, attention_mask=attention_mask, num_beams=2, max_new_tokens=4)
    assert generated.shape[0] == 3


def test_outputs_attentions_and_hidden_states():
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4],
                output_attentions=True, output_hidden_states=True)  # fmt: skip
    layers, h = 2, 4
    assert len(out.encoder_attentions) == layers and out.encoder_attentions[0].shape == (2, h, 6, 6)
    assert len(out.decoder_attentions) == layers and out.decoder_attentions[0].shape == (2, h, 4, 4)
    assert len(out.cross_attentions) == layers and out.cross_attentions[0].shape == (2, h, 4, 6)
    assert len(out.encoder_hidden_states) == layers + 1 and len(out.decoder_hidden_states) == layers + 1
    # The decoder self-attention is causal (Section 3.2.3): nothing attends to a later position.
    assert torch.all(out.decoder_attentions[0].triu(diagonal=1) == 0)
    # Padded source positions get no encoder-decoder attention.
    assert torch.all(out.cross_attentions[0][1, :, :, attention_mask[1] == 0] == 0)


def test_base_model_through_automodel():
    model = AutoModel.from_config(tiny_config())
    assert isinstance(model, vaswani.VaswaniModel)
    input_ids, attention_mask = random_batch(batch_size=2, length=5)
    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids)
    assert isinstance(out, Seq2SeqModelOutput) and out.last_hidden_state.shape == (2, 5, 32)
    assert model.get_encoder() is model.encoder
    assert AutoModelForSeq2SeqLM.from_config(tiny_config()).get_encoder().__class__.__name__ == "VaswaniEncoder"


# --- embeddings given instead of token ids (inputs_embeds) ----------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"scale_embedding": False, "share_encoder_decoder_embeddings": False}])
def test_inputs_embeds_give_what_input_ids_give(overrides):
    """`inputs_embeds` are the rows `get_input_embeddings()(ids)` returns; the model scales them by sqrt(d_model)
    (Section 3.4, once) and adds positions, as for ids: every class gives the same outputs both ways."""
    model = tiny_model(**overrides)
    input_ids, attention_mask = random_batch(batch_size=2, length=7)
    decoder_input_ids = input_ids[:, :5].clamp(max=model.config.decoder_vocabulary - 1)
    source = model.get_input_embeddings()(input_ids)  # (B, S, d_model)
    target = model.model.decoder.get_input_embeddings()(decoder_input_ids)  # (B, T, d_model)
    by_ids = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    by_embeds = model(inputs_embeds=source, attention_mask=attention_mask, decoder_inputs_embeds=target)
    torch.testing.assert_close(by_embeds.logits, by_ids.logits, rtol=0, atol=0)
    base = model.model(inputs_embeds=source, attention_mask=attention_mask, decoder_inputs_embeds=target)
    torch.testing.assert_close(base.last_hidden_state, model.model(input_ids, attention_mask=attention_mask,
                               decoder_input_ids=decoder_input_ids).last_hidden_state, rtol=0, atol=0)  # fmt: skip
    encoder = model.get_encoder()
    encoded = encoder(inputs_embeds=source, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(encoded, encoder(input_ids, attention_mask=attention_mask).last_hidden_state)
    decoder = model.model.decoder
    decoded = decoder(inputs_embeds=target, encoder_hidden_states=encoded, encoder_attention_mask=attention_mask)
    by_decoder_ids = decoder(decoder_input_ids, encoder_hidden_states=encoded, encoder_attention_mask=attention_mask)
    torch.testing.assert_close(decoded.last_hidden_state, by_decoder_ids.last_hidden_state)
    # generate encodes `inputs_embeds` as it encodes ids (and bounds the output by their length + 50)
    options = dict(attention_mask=attention_mask, num_beams=1, min_new_tokens=3, max_new_tokens=6)
    assert torch.equal(model.generate(inputs_embeds=source, **options), model.generate(input_ids, **options))


def test_inputs_embeds_with_ids_or_of_the_wrong_width_are_refused():
    model = tiny_model()
    input_ids = torch.tensor([[5, 6, 7]])
    embeds = model.get_input_embeddings()(input_ids)
    decoder_input_ids = torch.tensor([[1, 4]])
    with pytest.raises(ValueError, match="exactly one of `input_ids` and `inputs_embeds`; got both"):
        model(input_ids, inputs_embeds=embeds, decoder_input_ids=decoder_input_ids)
    with pytest.raises(ValueError, match=r"`inputs_embeds` must have shape \(batch_size, sequence_length, 32\)"):
        model(inputs_embeds=embeds[..., :16], decoder_input_ids=decoder_input_ids)
    with pytest.raises(ValueError, match="exactly one of `decoder_input_ids` and `decoder_inputs_embeds`.*neither"):
        model(input_ids)


def test_prompt_tuning_with_peft_trains():
    """PEFT's prompt tuning prepends trained embeddings to `inputs_embeds`: only they change, and the loss falls."""
    peft = pytest.importorskip("peft")
    model = tiny_model()  # eval mode: no dropout, so that the loss moves by the prompt alone
    tuned = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4))
    prompt = [p for p in tuned.parameters() if p.requires_grad]
    frozen = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    input_ids, attention_mask = random_batch(batch_size=4, length=9)
    labels = torch.randint(4, 128, (4, 6), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(prompt, lr=0.5)
    losses = []
    for _ in range(8):
        loss = tuned(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 5e-4, losses
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in model.state_dict().items())  # the model's own
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses


def test_the_decoder_without_encoder_states_says_so():
    model = tiny_model()
    with pytest.raises(ValueError, match="VaswaniDecoder needs `encoder_hidden_states`, the encoder's output"):
        model.model.decoder(torch.tensor([[1, 4]]))


# --- bad input: clear errors before torch sees it ------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_ids": torch.tensor([[5, 128]])}, r"`input_ids` contains token id 128, outside the vocabulary \[0, 128\)"),
        ({"input_ids": torch.tensor([[5, -1]])}, r"`input_ids` contains token id -1"),
        ({"input_ids": torch.zeros(2, 0, dtype=torch.long)}, r"`input_ids` holds empty sequences"),
        ({"input_ids": torch.tensor([[5.0, 6.0]])}, r"must hold integer token ids"),
        ({"input_ids": torch.tensor([5, 6])}, r"must have shape \(batch_size, sequence_length\)"),
        ({"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.ones(1, 3)}, r"`attention_mask` has shape \(1, 3\)"),
        ({"input_ids": torch.tensor([[5, 6]]), "decoder_input_ids": torch.tensor([[1, 999]])}, r"`decoder_input_ids` contains token id 999"),
        ({"input_ids": torch.tensor([[5, 6]]), "decoder_input_ids": torch.zeros(1, 0, dtype=torch.long)}, r"`decoder_input_ids` holds empty"),
        ({"input_ids": torch.tensor([[5, 6]]), "decoder_input_ids": torch.tensor([[1, 2]]), "decoder_attention_mask": torch.ones(1, 5)}, r"`decoder_attention_mask` has shape"),
    ],
)  # fmt: skip
def test_bad_input_raises_a_clear_error(kwargs, message):
    model = tiny_model()
    kwargs.setdefault("decoder_input_ids", torch.tensor([[1, 4]]))
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


def test_labels_and_decoder_inputs_of_different_shapes():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"`labels` has shape \(1, 4\) but `decoder_input_ids` has shape \(1, 2\)"):
        model(
            input_ids=torch.tensor([[5, 6]]),
            decoder_input_ids=torch.tensor([[1, 4]]),
            labels=torch.tensor([[4, 5, 6, 2]]),
        )


def test_bad_input_to_generate_raises_before_decoding():
    model = tiny_model()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(torch.tensor([[5, 500]]), max_new_tokens=3)


# --- loss ------------------------------------------------------------------------------------------------------
def test_loss_is_token_cross_entropy_ignoring_minus_100():
    model = tiny_model()
    input_ids, attention_mask = random_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits.view(-1, 128), labels.view(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    # Decoder inputs come from the labels: start token, then the labels shifted right, -100 replaced by pad.
    shifted = model.prepare_decoder_input_ids_from_labels(labels)
    assert shifted[:, 0].eq(1).all() and torch.equal(shifted[0, 1:], labels[0, :-1])
    assert (shifted != -100).all()


def test_loss_with_num_items_in_batch_is_exact_under_gradient_accumulation():
    """Two micro-batches with different numbers of real tokens, each normalised by the whole batch's token count,
    give the same gradient as the whole batch at once."""
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=4, length=8)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    model.zero_grad()
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    full = model.model.shared.weight.grad.clone()
    model.zero_grad()
    num_items = (labels != -100).sum()
    for part in (slice(0, 1), slice(1, 4)):
        loss = model(input_ids=input_ids[part], attention_mask=attention_mask[part], labels=labels[part],
                     num_items_in_batch=num_items).loss  # fmt: skip
        loss.backward()
    assert torch.allclose(model.model.shared.weight.grad, full, atol=1e-6)


def test_activation_checkpointing_gives_the_same_gradients():
    model = tiny_model(dropout=0.0)
    model.train()
    input_ids, attention_mask = random_batch()
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
    model(**batch).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(**batch).loss.backward()
    for before, param in zip(plain, model.parameters(), strict=True):
        assert torch.allclose(before, param.grad, atol=1e-6)


def test_resize_token_embeddings_keeps_ties():
    model = tiny_model()
    model.resize_token_embeddings(140)
    assert model.config.vocab_size == 140
    assert model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight
    assert model.lm_head.weight.shape == (140, 32)
    out = model(input_ids=torch.tensor([[139, 5]]), decoder_input_ids=torch.tensor([[1, 139]]))
    assert out.logits.shape == (1, 2, 140)


def test_no_split_modules_are_the_layers():
    assert set(vaswani.VaswaniForConditionalGeneration._no_split_modules) == {
        "VaswaniEncoderLayer",
        "VaswaniDecoderLayer",
    }


def test_separate_target_vocabulary_and_final_logits_bias():
    """MarianMT's conventions as named options: separate embeddings, a target vocabulary of its own, a logit bias."""
    model = tiny_model(share_encoder_decoder_embeddings=False, target_vocab_size=100, add_final_logits_bias=True)
    assert model.model.shared is None
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight  # tied to the target side
    assert model.model.encoder.embed_tokens.weight is not model.model.decoder.embed_tokens.weight
    assert torch.equal(model.final_logits_bias, torch.zeros(1, 100))
    source = torch.randint(4, 128, (2, 6))
    target = torch.randint(4, 100, (2, 5))
    out = model(input_ids=source, decoder_input_ids=target)
    assert out.logits.shape == (2, 5, 100)
    model.final_logits_bias.fill_(1.5)
    torch.testing.assert_close(model(input_ids=source, decoder_input_ids=target).logits, out.logits + 1.5)
    with pytest.raises(
        ValueError, match=r"`decoder_input_ids` contains token id 120, outside the vocabulary \[0, 100\)"
    ):
        model(input_ids=source, decoder_input_ids=torch.full((2, 5), 120))
