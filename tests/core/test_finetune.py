"""Fine-tuning heads against HF's GPT2ForSequenceClassification / BertForSequenceClassification; unfreezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmkit.training import finetune
from lmkit.utils import pad_batch

transformers = pytest.importorskip("transformers")
PAD = 0


def test_last_token_head_matches_hf_gpt2_for_sequence_classification() -> None:
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4, num_labels=3,
                                  pad_token_id=PAD)
    torch.manual_seed(0)
    ref = transformers.GPT2ForSequenceClassification(cfg).eval()
    ours = finetune.LastTokenClassifier(ref.transformer, 32, 3, bias=False).eval()
    ours.head.weight.data.copy_(ref.score.weight)
    ids = torch.randint(1, 50, (3, 9))
    ids[0, 6:] = PAD  # right padding: the last real token is at index 5
    mask = ids != PAD
    torch.testing.assert_close(ours(ids, mask), ref(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)


def test_last_token_index_left_and_right_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert finetune.last_token_index(mask).tolist() == [2, 4, 4]
    with pytest.raises(ValueError):
        finetune.last_token_index(torch.zeros(1, 3, dtype=torch.bool))


def test_bert_head_matches_hf_bert_for_sequence_classification() -> None:
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    ref = transformers.BertForSequenceClassification(cfg).eval()
    backbone = transformers.BertModel(cfg, add_pooling_layer=False)
    backbone.load_state_dict(ref.bert.state_dict(), strict=False)
    ours = finetune.SequenceClassifier(backbone.eval(), 32, 2, pooling="pooler").eval()
    ours.pooler.load_state_dict(ref.bert.pooler.dense.state_dict())
    ours.classifier.load_state_dict(ref.classifier.state_dict())
    ids = torch.randint(1, 60, (4, 11))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 7:] = False
    torch.testing.assert_close(ours(ids, mask), ref(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    mean_head = finetune.SequenceClassifier(backbone, 32, 2, pooling="mean").eval()
    states = backbone(ids, attention_mask=mask).last_hidden_state
    want = states[1, :7].mean(0)
    torch.testing.assert_close(mean_head.pool(states, mask)[1], want)
    with pytest.raises(ValueError, match="pooling"):
        finetune.SequenceClassifier(backbone, 32, 2, pooling="max")


def test_gpt1_loss_adds_half_the_lm_loss() -> None:
    torch.manual_seed(0)
    cls_logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    lm_logits, ids = torch.randn(4, 6, 10), torch.randint(10, (4, 6))
    task = nn.functional.cross_entropy(cls_logits, labels)
    lm = nn.functional.cross_entropy(lm_logits[:, :-1].reshape(-1, 10), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(finetune.gpt1_loss(cls_logits, labels, lm_logits, ids), task + 0.5 * lm)
    torch.testing.assert_close(finetune.gpt1_loss(cls_logits, labels), task)


def test_gradual_unfreezing_opens_one_group_per_stage() -> None:
    groups = [nn.Linear(2, 2) for _ in range(4)]
    schedule = finetune.GradualUnfreezing(groups)
    for stage, want in enumerate([[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]):
        schedule.stage(stage)
        assert [int(g.weight.requires_grad) for g in groups] == want


# A tiny hand-made task that mean-pooled MiniLM embeddings get partly wrong: sentiment with negation.
ITEMS = ["movie", "meal", "hotel", "concert", "book", "service", "trip", "game", "coffee", "show", "phone", "class",
         "party", "room", "song", "car"]
POSITIVE = ["good", "great", "excellent", "wonderful", "pleasant", "fantastic", "enjoyable", "lovely"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "horrible", "poor", "disappointing", "dreadful"]


@pytest.mark.slow
def test_lora_finetuning_of_minilm_changes_behaviour(minilm_path) -> None:  # noqa: ANN001
    from lmkit.loaders.minilm import load_minilm
    from lmkit.tokenizers import load_minilm_tokenizer
    from lmkit.training import lora

    tok = load_minilm_tokenizer(minilm_path)
    data = [(f"the {item} was {'not ' if negated else ''}{adj}.", int((adj in POSITIVE) != negated), item)
            for item in ITEMS for adj in POSITIVE + NEGATIVE for negated in (False, True)]
    train = [d for d in data if d[2] in ITEMS[:10]]
    test = [d for d in data if d[2] not in ITEMS[:10]]  # nouns never seen in training
    test_ids, test_mask = pad_batch([tok.encode(s) for s, _, _ in test])
    test_y = torch.tensor([y for _, y, _ in test])

    torch.manual_seed(0)
    encoder = load_minilm(minilm_path)
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = finetune.SequenceClassifier(encoder, 384, 2, pooling="mean", dropout=0.0)
    lora.apply_lora(model, ["q_proj", "v_proj"], r=8, alpha=16, trainable=["classifier"])
    trainable, total = lora.count_parameters(model)
    assert trainable == 6 * 2 * 8 * (384 + 384) + (384 * 2 + 2)  # LoRA on W_q, W_v of 6 layers + the head
    assert trainable / total < 0.01

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            return (model(test_ids, test_mask).argmax(-1) == test_y).float().mean().item()

    before = accuracy()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(25):
        batch = [train[i] for i in torch.randperm(len(train), generator=g)[:16]]
        ids, mask = pad_batch([tok.encode(s) for s, _, _ in batch])
        loss = nn.functional.cross_entropy(model(ids, mask), torch.tensor([y for _, y, _ in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    assert before < 0.7 and after >= 0.9, (before, after)  # held-out nouns: the behaviour really changed
    model.eval()
    with torch.no_grad():
        logits = model(test_ids, test_mask)
        lora.merge_and_unload(model)
        torch.testing.assert_close(model(test_ids, test_mask), logits, rtol=1e-4, atol=1e-4)
    base = {k: v for k, v in encoder.state_dict().items()}
    changed = [k for k in frozen if not torch.equal(frozen[k], base[k])]
    # Only the merged projections differ from the pretrained weights.
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_layer_groups_cover_every_parameter_of_an_lmkit_encoder() -> None:
    from lmkit.transformer.model import Transformer, TransformerConfig

    cfg = TransformerConfig.preset("bert", vocab_size=30, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_positions=16)
    clf = finetune.SequenceClassifier(Transformer(cfg), 16, 2, pooling="pooler")
    groups = finetune.transformer_layer_groups(clf.backbone, head=[clf.pooler, clf.classifier])
    assert len(groups) == 3 + 2
    schedule = finetune.GradualUnfreezing(groups)
    schedule.stage(0)
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {
        "pooler.weight", "pooler.bias", "classifier.weight", "classifier.bias"}
    schedule.stage(len(groups) - 1)
    assert all(p.requires_grad for p in clf.parameters())  # nothing is left outside the groups
