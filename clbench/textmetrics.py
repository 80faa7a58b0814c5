"""Per-example text metrics for generation tasks, in pure Python (no torch).

Every function scores one prediction against one gold answer and returns a float in [0, 1], so
an evaluation pass averages per-example scores like it averages classification hits. Which
metric a task uses is named by its benchmark (``metric = "rouge_l"``) and dispatched by
:func:`score_text`.

Definitions follow the papers' evaluation code:

* ``exact_match`` / ``accuracy`` on generated text: the answer matches after SQuAD-style
  normalisation without article removal (lowercase, drop ASCII punctuation, collapse
  whitespace), as O-LoRA's ``compute_metrics.exact_match_score`` does. TRACE compares the raw
  strings; normalising only forgives case, punctuation and surrounding whitespace.
* ``choice_accuracy``: the option letter after ``"Answer: "`` (TRACE's ScienceQA ``resolve``).
* ``rouge_l``: ROUGE-L F1 over the longest common subsequence of lowercased word tokens
  (Lin 2004). Tokens are maximal runs of Unicode letters and digits, so German and other
  non-ASCII text is scored too (``rouge-score``'s default tokenizer drops every non-ASCII
  letter); on ASCII text the value equals ``rouge_score.RougeScorer(["rougeL"])``.
* ``edit_similarity``: TRACE's Py150 metric, ``fuzz.ratio`` after its literal post-processing,
  as the normalised Indel similarity ``2·LCS_chars / (len(a) + len(b))`` (what python-Levenshtein
  and rapidfuzz compute; no rounding to whole percent).
* ``sari``: SARI (Xu et al. 2016) of one sentence with one or more references, as the Hugging
  Face ``sari`` metric that TRACE calls computes it (tensor2tensor's version with the keep-recall
  fix; sacreBLEU 13a tokenisation of lowercased text; n-grams up to 4), divided by 100.

TRACE scores an empty prediction (or empty gold) as 0 for every metric; so do these functions.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_PUNCTUATION = set(string.punctuation)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


# ---- normalisation --------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation and collapse whitespace (O-LoRA's normalisation)."""
    return " ".join("".join(ch for ch in text.lower() if ch not in _PUNCTUATION).split())


# ---- exact match and accuracy ---------------------------------------------------------------
def exact_match(prediction: str, answer: str) -> float:
    """1.0 when prediction and answer are equal after :func:`normalize_answer`, else 0.0."""
    if not prediction.strip() or not answer.strip():
        return 0.0
    return float(normalize_answer(prediction) == normalize_answer(answer))


def label_accuracy(prediction: str, answer: str) -> float:
    """Classification cast as text: the whole generated answer matches the label word.

    The same normalised match as :func:`exact_match` (O-LoRA scores its label words with it;
    TRACE's accuracy compares the raw strings), applied to the whole decoded output, so a
    model that keeps talking after the label is wrong, as in both papers.
    """
    return exact_match(prediction, answer)


def extract_choice(text: str) -> str:
    """The option letter right after ``"Answer: "`` (TRACE ScienceQA), or ``""`` if absent."""
    at = text.find("Answer: ")
    return text[at + 8: at + 9] if at >= 0 else ""


def choice_accuracy(prediction: str, answer: str) -> float:
    """1.0 when the predicted and gold option letters (after ``"Answer: "``) are equal."""
    predicted, gold = extract_choice(prediction), extract_choice(answer)
    return float(bool(predicted) and predicted == gold)


# ---- ROUGE-L --------------------------------------------------------------------------------
def word_tokens(text: str) -> list[str]:
    """Lowercased runs of Unicode letters and digits."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common subsequence of two sequences (O(len(a)·len(b)) time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, answer: str) -> float:
    """ROUGE-L F1: LCS over word tokens, harmonic mean of LCS/|pred| and LCS/|gold|."""
    pred, gold = word_tokens(prediction), word_tokens(answer)
    if not pred or not gold:
        return 0.0
    lcs = lcs_length(pred, gold)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)


# ---- edit similarity (TRACE Py150) ----------------------------------------------------------
_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def py150_postprocess(code: str) -> str:
    """TRACE's Py150 post-processing: bare literal placeholders become ``0`` or empty, and
    ``<STR_LIT:x>``-style placeholders become their value ``x``."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return _LITERAL.sub(lambda m: m.group(2), code)


def edit_similarity(prediction: str, answer: str) -> float:
    """Normalised Indel similarity of the post-processed strings: ``2·LCS / (|a| + |b|)``."""
    if not prediction or not answer:
        return 0.0
    a, b = py150_postprocess(prediction), py150_postprocess(answer)
    if not a and not b:
        return 1.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


# ---- SARI -----------------------------------------------------------------------------------
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash when preceded by a digit
)


def tokenize_13a(text: str) -> str:
    """sacreBLEU's ``13a`` tokenisation (the mteval-v13a rules), returning space-joined tokens."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:  # only the four entities mteval unescapes
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision > 0 or recall > 0 else 0.0


def _sari_ngram(source: list[str], candidate: list[str], references: list[list[str]]) -> tuple[float, float, float]:
    """Keep F1, deletion precision and addition F1 for one n-gram order.

    Source and candidate counts are multiplied by the number of references so that a
    reference's n-gram counts can be compared with multiset intersection and difference; 0/0
    counts as a perfect score, so empty candidates and references agree.
    """
    num_refs = len(references)
    ref_counts = Counter(g for ref in references for g in ref)
    src_counts = Counter(source)
    cand_counts = Counter(candidate)
    src_rep = Counter({g: c * num_refs for g, c in src_counts.items()})
    cand_rep = Counter({g: c * num_refs for g, c in cand_counts.items()})

    kept = src_rep & cand_rep
    kept_good = kept & ref_counts
    kept_all = src_rep & ref_counts
    keep_precision = sum(kept_good[g] / kept[g] for g in kept) / len(kept) if kept else 1.0
    keep_recall = sum(kept_good[g] for g in kept) / sum(kept_all.values()) if kept_all else 1.0

    deleted = src_rep - cand_rep
    deleted_good = deleted - ref_counts
    del_precision = sum(deleted_good[g] / deleted[g] for g in deleted) / len(deleted) if deleted else 1.0

    added = set(cand_counts) - set(src_counts)
    added_good = added & set(ref_counts)
    added_all = set(ref_counts) - set(src_counts)
    add_precision = len(added_good) / len(added) if added else 1.0
    add_recall = len(added_good) / len(added_all) if added_all else 1.0
    return _f1(keep_precision, keep_recall), del_precision, _f1(add_precision, add_recall)


def sari(source: str, prediction: str, references: str | Sequence[str]) -> float:
    """SARI of one simplification/rewrite against one or more references, in [0, 1].

    The arithmetic mean over n = 1..4 of keep F1, deletion precision and addition F1, each
    averaged over the orders (Xu et al. 2016, as the Hugging Face ``sari`` metric computes it).
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not prediction.strip() or not refs or not any(r.strip() for r in refs):
        return 0.0
    src = tokenize_13a(source.lower()).split()
    cand = tokenize_13a(prediction.lower()).split()
    ref_tokens = [tokenize_13a(r.lower()).split() for r in refs]
    keep = deletion = addition = 0.0
    for n in range(1, 5):
        k, d, a = _sari_ngram(_ngrams(src, n), _ngrams(cand, n), [_ngrams(r, n) for r in ref_tokens])
        keep, deletion, addition = keep + k, deletion + d, addition + a
    return (keep / 4 + deletion / 4 + addition / 4) / 3


# ---- dispatch -------------------------------------------------------------------------------
PAIR_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "accuracy": label_accuracy,
    "choice_accuracy": choice_accuracy,
    "rouge_l": rouge_l,
    "edit_similarity": edit_similarity,
}
#: Metrics a generated answer can be scored with (``sari`` also needs the source text).
GENERATION_METRICS = (*PAIR_METRICS, "sari")


def score_text(metric: str, prediction: str, answer: str, source: str = "") -> float:
    """Score one generated ``prediction`` against the gold ``answer`` with ``metric``.

    Args:
        metric: one of :data:`GENERATION_METRICS`.
        prediction: the decoded model output (special tokens removed).
        answer: the gold answer.
        source: the input text, needed by ``sari`` only.

    Raises:
        ValueError: for an unknown metric name.
    """
    if metric == "sari":
        return sari(source, prediction, answer)
    try:
        return PAIR_METRICS[metric](prediction, answer)
    except KeyError:
        raise ValueError(f"unknown text metric {metric!r}; known: {', '.join(GENERATION_METRICS)}") from None
