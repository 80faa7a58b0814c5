"""Text metrics against hand-computed values and published reference numbers."""

from __future__ import annotations

import pytest

from clbench import textmetrics as tm


def test_exact_match_normalises_case_punctuation_and_space() -> None:
    assert tm.exact_match("  Science or Technology. ", "science or technology") == 1.0
    assert tm.exact_match("Sports", "World") == 0.0
    assert tm.exact_match("", "") == 0.0  # TRACE counts empty outputs as wrong


def test_label_accuracy_needs_the_whole_answer() -> None:
    assert tm.label_accuracy(" Positive.", "positive") == 1.0
    assert tm.label_accuracy("positive\nbecause the review says so", "positive") == 0.0
    assert tm.label_accuracy("very positive", "positive") == 0.0


def test_choice_accuracy_extracts_the_letter_after_answer() -> None:
    gold = "Answer: A\nBecause wax reduces friction."
    assert tm.extract_choice(gold) == "A"
    assert tm.choice_accuracy("Answer: A\nBecause something else", gold) == 1.0
    assert tm.choice_accuracy("Answer: B\nBecause", gold) == 0.0
    assert tm.choice_accuracy("A", gold) == 0.0  # no "Answer: " prefix -> format error


def test_rouge_l_hand_computed() -> None:
    # pred: the cat sat on the mat (6), gold: the cat lay on a mat (6); LCS = the cat on mat (4)
    assert tm.rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(4 / 6)
    # pred 3 tokens, gold 5 tokens, LCS 3: P = 1, R = 0.6, F = 0.75
    assert tm.rouge_l("a b c", "a x b y c") == pytest.approx(0.75)
    assert tm.rouge_l("x", "y") == 0.0
    # non-ASCII letters are tokens (German summaries): LCS = 2 of 3 and 3 tokens
    assert tm.rouge_l("Zürich ist schön", "Zürich bleibt schön") == pytest.approx(2 / 3)


def test_rouge_l_equals_rouge_score_on_ascii() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [("police killed the gunman", "the gunman was shot by police"),
             ("Recommendation to adopt the ordinance; District 7.", "recommendation to declare ordinance (district 7)"),
             ("one two three four five", "five four three two one")]
    for prediction, gold in pairs:
        assert tm.rouge_l(prediction, gold) == pytest.approx(scorer.score(gold, prediction)["rougeL"].fmeasure)


def test_lcs_length() -> None:
    assert tm.lcs_length("ABCBDAB", "BDCABA") == 4
    assert tm.lcs_length([], [1, 2]) == 0


def test_edit_similarity_hand_computed_and_py150_literals() -> None:
    # "kitten" / "sitting": LCS = "ittn" (4) -> 2*4 / 13
    assert tm.edit_similarity("kitten", "sitting") == pytest.approx(8 / 13)
    assert tm.edit_similarity("abc", "abc") == 1.0
    assert tm.py150_postprocess("x = <NUM_LIT> + <NUM_LIT:3> ; s = '<STR_LIT:hi>' + '<STR_LIT>'") == "x = 0 + 3 ; s = 'hi' + ''"
    assert tm.edit_similarity("y = <NUM_LIT:1>", "y = 1") == 1.0
    assert tm.edit_similarity("", "y") == 0.0


def test_tokenize_13a() -> None:
    assert tm.tokenize_13a('Hello, world. 3.5 and 3-4 "x" (y)') == 'Hello , world . 3.5 and 3 - 4 " x " ( y )'
    assert tm.tokenize_13a("a &amp; b") == "a & b"


def test_sari_matches_the_published_hugging_face_example() -> None:
    # The example in the documentation of the Hugging Face `sari` metric (value 26.953601953601954).
    source = "About 95 species are currently accepted."
    prediction = "About 95 you now get in."
    references = ["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."]
    assert tm.sari(source, prediction, references) * 100 == pytest.approx(26.953601953601954, abs=1e-9)


def test_sari_hand_computed_single_reference() -> None:
    # source "a b", prediction "a c", reference "a c" (unigrams only matter; higher orders:
    # bigram "a b" deleted correctly and "a c" added correctly, trigrams/4-grams empty -> 1).
    # n=1: keep {a}: P=1, R=1 -> 1; delete {b}: good -> 1; add {c}: P=1, R=1 -> 1.
    # n=2: keep {} -> P=1, R=1 (0/0) -> 1; delete {"a b"} good -> 1; add {"a c"} -> 1.
    # n=3,4: all empty -> keep 1, delete 1, add F1(1, 1) = 1.  So SARI = 1.
    assert tm.sari("a b", "a c", "a c") == pytest.approx(1.0)
    # Copying the source when the reference rewrites it: n=1 keep {a,b}: P = 1/2, R = 1/1 -> 2/3;
    # delete {}: 1; add {}: P = 1 (0/0), R = 0/1 -> 0.  n=2 keep {"a b"}: P = 0, R = 1 (0/0) -> 0;
    # delete 1; add: P = 1, R = 0 -> 0.  n=3,4: keep 1, delete 1, add 1.
    # keep = (2/3 + 0 + 1 + 1) / 4, delete = 1, add = (0 + 0 + 1 + 1) / 4.
    expected = ((2 / 3 + 0 + 1 + 1) / 4 + 1 + 2 / 4) / 3
    assert tm.sari("a b", "a b", "a c") == pytest.approx(expected)
    assert tm.sari("a b", "", "a c") == 0.0


def test_score_text_dispatch() -> None:
    assert tm.score_text("rouge_l", "a b", "a b") == 1.0
    assert tm.score_text("sari", "a c", "a c", source="a b") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown text metric"):
        tm.score_text("bleu", "a", "a")
    from clbench.api.benchmark import TASK_METRICS

    assert set(tm.GENERATION_METRICS) <= set(TASK_METRICS)
