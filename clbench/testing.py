"""The strategy contract, checked on tiny backbones of every kind; public so third-party strategies run it too.

:func:`check_strategy` sets a strategy up on a backbone bound to a two-task stream and checks what
the runner relies on:

* ``setup`` succeeds (or fails with one :class:`~clbench.errors.UsageError` line, which the caller
  may declare expected);
* one task of training (two optimizer steps) changes only parameters the strategy said it trains
  (:meth:`Strategy.trainable_parameters` when the task starts), and changes at least one of them;
* ``telemetry()`` is JSON-serialisable;
* ``state_dict()`` survives ``torch.save`` / ``torch.load(weights_only=True)`` (what checkpoints
  do) and ``load_state_dict`` gives it back;
* a run "killed" after the first task's checkpoint and resumed in a fresh process (a fresh backbone
  and strategy, the saved strategy state and changed model tensors loaded as the runner loads them)
  ends the second task with exactly the model and telemetry of the uninterrupted run.

:func:`tiny_cases` builds the tiny backbones and streams the built-in strategies are checked on:
``mlp`` and ``encoder`` (kind ``classic``), ``vit``, ``clip``, ``causal-lm`` and ``seq2seq`` (kind
``llm``), all random, saved and reloaded through the real backbone specs, in about a second.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from clbench import checkpoint, registry
from clbench.api import (
    Backbone,
    ExampleListDataset,
    Experience,
    RunContext,
    Strategy,
    StrategyConfig,
    Stream,
    TensorTaskDataset,
    TrainSettings,
)
from clbench.runner import seed_everything, task_seed
from clbench.training import evaluate, train_task

CASE_KINDS = {"mlp": "classic", "encoder": "classic", "vit": "vit", "clip": "clip", "causal-lm": "llm", "seq2seq": "llm"}
"""Each tiny case and the backbone kind a strategy must claim to be checked on it."""

SETTINGS = TrainSettings(epochs=1, batch_size=4, eval_batch_size=8)
"""The benchmark settings of the contract stream: one epoch of 8 examples, batch 4 (2 steps per task)."""


@dataclass
class ContractCase:
    """A backbone (built fresh on every call) and the stream it is bound to."""

    name: str
    stream: Stream
    make_backbone: Callable[[], Backbone]
    kind: str = field(default="")


def _tensor_stream(shape: tuple[int, ...], protocol: str = "class-incremental") -> Stream:
    """Two tasks of two classes each over random tensors whose mean depends on the class."""
    generator = torch.Generator().manual_seed(0)
    experiences = []
    for t in range(2):
        classes = (2 * t, 2 * t + 1)
        sets = []
        for n in (8, 2):
            y = torch.tensor([classes[i % 2] for i in range(n)])
            x = torch.randn(n, *shape, generator=generator) * 0.5 + y.view(-1, *([1] * len(shape))).float() / 4
            sets.append(TensorTaskDataset(x, y, t))
        experiences.append(Experience(index=t, name=f"t{t}", train=sets[0], test=sets[1], class_ids=classes,
                                      templates=("a photo of a {}.",)))
    return Stream(protocol=protocol, experiences=tuple(experiences), class_names=("red", "green", "blue", "gray"), input_shape=shape)


def _text_stream(generation: bool) -> Stream:
    """Two tasks of short texts: labelled sentences (classification) or prompt/answer pairs (generation)."""
    words = (("sun", "rain"), ("cat", "dog"))
    experiences = []
    for t, pair in enumerate(words):
        def examples(n: int, t: int = t, pair: tuple[str, str] = pair) -> list[dict[str, Any]]:
            if generation:
                return [{"prompt": f"Say {pair[i % 2]}:", "answer": pair[i % 2], "task_id": t, "max_new_tokens": 2} for i in range(n)]
            return [{"text": f"the {pair[i % 2]} is here {i}", "y": 2 * t + i % 2, "task_id": t} for i in range(n)]
        experiences.append(Experience(index=t, name=f"t{t}", train=ExampleListDataset(examples(8)), test=ExampleListDataset(examples(2)),
                                      metric="exact_match" if generation else "accuracy", class_ids=() if generation else (2 * t, 2 * t + 1)))
    names = () if generation else ("sun", "rain", "cat", "dog")
    return Stream(protocol="class-incremental" if not generation else "domain-incremental", experiences=tuple(experiences), class_names=names)


def byte_tokenizer() -> Any:
    """A byte-level tokenizer with no merges (every UTF-8 byte is a token), made offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _save_hf(folder: Path, which: str) -> Path:
    """A random tiny Llama, T5 or BERT and the byte tokenizer, saved with ``save_pretrained``."""
    import transformers as tf

    if (folder / "config.json").exists():
        return folder
    tok = byte_tokenizer()
    torch.manual_seed(0)
    if which == "causal-lm":
        model: Any = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, eos_token_id=1,
                                                        bos_token_id=None, max_position_embeddings=64))
    elif which == "seq2seq":
        model = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                                                          num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    else:
        model = tf.BertModel(tf.BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _save_clip(folder: Path) -> str:
    """A tiny open_clip model (registered config, random weights in a file); returns its backbone spec."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    name = "clbench-contract-clip"
    config = folder / f"{name}.json"
    if not config.exists():
        config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
                                      "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(config)
    weights = folder / "clip.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(name).state_dict(), weights)
    return f"clip:{config}@{weights}"


def _fresh(spec: str) -> Callable[[], Backbone]:
    """Build ``spec`` once; every call returns a deep copy (the tokenizer is shared: it holds no weights)."""
    built: list[Backbone] = []

    def make() -> Backbone:
        if not built:
            built.append(registry.build_backbone(spec))
        pristine = built[0]
        tokenizer = getattr(pristine, "tokenizer", None)
        return copy.deepcopy(pristine, {id(tokenizer): tokenizer} if tokenizer is not None else {})

    return make


def tiny_cases(folder: Path) -> dict[str, ContractCase]:
    """The contract's tiny backbones and streams, with their saved models under ``folder``."""
    folder = Path(folder)
    specs = {
        "mlp": ("mlp:16", _tensor_stream((16,))),
        "vit": ("vit:tiny", _tensor_stream((3, 16, 16))),
        "clip": (_save_clip(folder / "clip"), _tensor_stream((3, 16, 16))),
        "causal-lm": (f"hf:{_save_hf(folder / 'llama', 'causal-lm')}", _text_stream(generation=True)),
        "seq2seq": (f"hf-seq2seq:{_save_hf(folder / 't5', 'seq2seq')}", _text_stream(generation=True)),
        "encoder": (f"encoder:{_save_hf(folder / 'bert', 'encoder')}", _text_stream(generation=False)),
    }
    return {name: ContractCase(name, stream, _fresh(spec), CASE_KINDS[name]) for name, (spec, stream) in specs.items()}


def _round_trip(value: Any) -> Any:
    """``value`` through ``torch.save`` and ``torch.load(weights_only=True)``, as checkpoints store it."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same(a: Any, b: Any, what: str) -> None:
    """Exact equality of nested dicts/lists of tensors and plain values."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b), f"{what} differs"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{what}: keys differ ({sorted(set(a) ^ set(b))})"
        for key in a:
            _assert_same(a[key], b[key], f"{what}[{key!r}]")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


@dataclass
class _Run:
    strategy: Strategy
    backbone: Backbone
    case: ContractCase
    seed: int


def _set_up(strategy_cls: type[Strategy], config: StrategyConfig, case: ContractCase, seed: int) -> _Run:
    seed_everything(seed)  # classic and ViT heads (and the MLP) are initialised at bind time, as in the runner
    backbone = case.make_backbone()
    backbone.bind(case.stream)
    overrides = {k: v for k, v in config.train_overrides(backbone.kind).items() if v is not None}
    # The contract's budget wins over any per-kind step count or batch: 2 steps of 4 examples.
    settings = dataclasses.replace(SETTINGS.updated(**overrides), epochs=1, iterations=None, batch_size=4, grad_accum=1, amp="none")
    torch.manual_seed(seed)
    ctx = RunContext(stream=case.stream, train=settings, device=torch.device("cpu"), seed=seed, benchmark="contract")
    strategy = strategy_cls(config, ctx)
    strategy.setup(backbone)
    return _Run(strategy, backbone, case, seed)


def _task(run: _Run, t: int, check_changes: bool) -> None:
    """Train task ``t`` as the runner does (seeded, hooks in order), then evaluate every task."""
    strategy, backbone, stream = run.strategy, run.backbone, run.case.stream
    exp = stream.tasks[t]
    seed_everything(task_seed(run.seed, t))
    generator = torch.Generator().manual_seed(task_seed(run.seed, t))
    strategy.before_task(exp)
    data = strategy.training_data(exp, stream.tasks[: t + 1])
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    trained = {id(p) for p in strategy.trainable_parameters()}
    settings = strategy.ctx.train
    stats = strategy.fit_task(data, exp, partial(train_task, strategy, backbone, experience=exp, settings=settings, generator=generator,
                                                 progress=False))
    if check_changes:
        params = dict(backbone.model.named_parameters())
        changed = {n for n, p in params.items() if n in before and not torch.equal(before[n], p.detach())}
        undeclared = sorted(n for n in changed if id(params[n]) not in trained and not _parametrized_by(n, params, trained))
        assert not undeclared, f"a training step changed parameters the strategy does not train: {undeclared[:5]}"
        if strategy.trains and stats.steps:
            assert changed, "the strategy trained (steps > 0) but no parameter changed"
    strategy.after_task(exp)
    evaluate(backbone, stream.experiences, settings, False, strategy=strategy)


def _parametrized_by(name: str, params: dict[str, torch.nn.Parameter], trained: set[int]) -> bool:
    """``name`` is the ``original`` of a torch parametrization that has trained parameters of its own
    (a sparse update written into the weight it parametrizes, as SaRA commits its selection)."""
    if not name.endswith(".original") or ".parametrizations." not in name:
        return False
    prefix = name[: -len("original")]
    return any(n.startswith(prefix) and id(p) in trained for n, p in params.items() if n != name)


def check_strategy(strategy_cls: type[Strategy], case: ContractCase, config: StrategyConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Check the strategy contract (module docstring) of ``strategy_cls`` on ``case``; returns the telemetry.

    Raises:
        AssertionError: naming the broken part of the contract.
        UsageError: the strategy refuses this backbone in ``setup`` (callers may expect it).
    """
    config = config if config is not None else strategy_cls.Config()
    first = _set_up(strategy_cls, config, case, seed)
    reference = checkpoint.fingerprints(first.backbone.model)
    _task(first, 0, check_changes=True)
    json.dumps(first.strategy.telemetry())
    state = _round_trip(first.strategy.state_dict())
    delta = _round_trip(checkpoint.changed_state(first.backbone.model, reference))
    resumed = _set_up(strategy_cls, config, case, seed)
    resumed.strategy.load_state_dict(state)
    checkpoint.restore_model(resumed.backbone.model, delta)
    _assert_same(_round_trip(resumed.strategy.state_dict()), state, "state_dict after load_state_dict")
    for run in (first, resumed):
        _task(run, 1, check_changes=run is first)
    _assert_same(resumed.backbone.model.state_dict(), first.backbone.model.state_dict(), "model after resuming")
    telemetry = first.strategy.telemetry()
    _assert_same(json.loads(json.dumps(resumed.strategy.telemetry())), json.loads(json.dumps(telemetry)), "telemetry after resuming")
    return telemetry
