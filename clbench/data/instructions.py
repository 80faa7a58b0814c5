"""Generated instruction-following skills and a general-knowledge probe for causal LMs.

``generated-instructions`` builds one skill task (``options.skill``) from built-in word lists
and numbers, deterministically from the benchmark's split seed and the skill name; train and
test examples never share a prompt. ``general-knowledge`` is an eval-only probe of short cloze
questions that SmolLM2-135M-Instruct answers correctly before any training, so its score
measures how much pretrained knowledge survives continual training.

Examples are dicts ``{"prompt", "answer", "task_id"}`` (plus ``answer_prefix`` for the probe):
``prompt`` is the user message, ``answer`` the exact-match target (see
:class:`clbench.backbones.hf_causal.CausalLMBackbone`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from clbench.api.stream import ExampleListDataset
from clbench.data import LoaderContext, TaskData
from clbench.errors import UsageError

# Common concrete nouns (lowercase, 3-8 letters) for the word skills.
NOUNS = """
apple arm baby bag ball band bank bed bell bird boat body bone book boot bottle bowl box boy
bread brick bridge brush bucket bus cake camel camera candle car card carpet cat chair cheese
cherry chicken child church circle city clock cloud coat coin cow crab crown cup desk dog doll
door dragon dress drum duck eagle egg engine eye face farm feather fence finger fish flag floor
flower foot forest fork fox frog garden gate ghost girl glass glove goat grape guitar hammer
hand hat heart hill horse house island jacket jar jelly key king kite kitten knife ladder lake
lamp leaf lemon letter lion lock map market melon milk monkey moon mountain mouse mouth nail
needle nest night nose ocean onion orange owl paint pan panda paper parrot pear pen pencil
piano pig pillow pipe plane plant plate pocket pony potato queen rabbit radio rain ring river
road robot rock roof room rope rose salt sand school sea seed sheep shell ship shirt shoe shop
sink skirt sky snake sock sofa song spoon star stone storm street sugar sun table tail teacher
tent tiger toe tomato tooth towel tower town toy train tree truck turtle wall watch water wheel
window wing wolf woman worm
""".split()

IRREGULAR_PLURALS = {
    "child": "children", "foot": "feet", "goose": "geese", "knife": "knives", "leaf": "leaves",
    "man": "men", "mouse": "mice", "sheep": "sheep", "tooth": "teeth", "woman": "women",
    "wolf": "wolves", "fish": "fish", "potato": "potatoes", "tomato": "tomatoes",
}

# Cloze items SmolLM2-135M-Instruct answers correctly at row 0 under teacher-forced exact match
# with its chat template (checked in fp32 and under bf16 autocast).
KNOWLEDGE = [
    ("What is the capital of Japan?", "The capital of Japan is", "Tokyo"),
    ("What is the capital of France?", "The capital of France is", "Paris"),
    ("What is the capital of Italy?", "The capital of Italy is", "Rome"),
    ("What is the capital of Germany?", "The capital of Germany is", "Berlin"),
    ("What is the capital of Spain?", "The capital of Spain is", "Madrid"),
    ("What is the capital of the United Kingdom?", "The capital of the United Kingdom is", "London"),
    ("What is the capital of Russia?", "The capital of Russia is", "Moscow"),
    ("What is the capital of Canada?", "The capital of Canada is", "Ottawa"),
    ("What is the capital of Greece?", "The capital of Greece is", "Athens"),
    ("What is the capital of Australia?", "The capital of Australia is", "Canberra"),
    ("What is the capital of South Korea?", "The capital of South Korea is", "Seoul"),
    ("What is the capital of Argentina?", "The capital of Argentina is", "Buenos Aires"),
    ("What language is spoken in Brazil?", "The official language of Brazil is", "Portuguese"),
    ("What language is spoken in France?", "The official language of France is", "French"),
    ("What language is spoken in Germany?", "The official language of Germany is", "German"),
    ("What language is spoken in Mexico?", "The official language of Mexico is", "Spanish"),
    ("In which country are the pyramids of Giza?", "The pyramids of Giza are in", "Egypt"),
    ("In which country is the Great Wall?", "The Great Wall is in", "China"),
    ("What is the tallest mountain in the world?", "The tallest mountain in the world is", "Mount Everest"),
    ("What is the largest ocean on Earth?", "The largest ocean on Earth is the", "Pacific Ocean"),
    ("What is the largest desert in the world?", "The largest hot desert in the world is the", "Sahara"),
    ("What is the longest river in Africa?", "The longest river in Africa is the", "Nile"),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by", "William Shakespeare"),
    ("Who developed the theory of relativity?", "The theory of relativity was developed by", "Albert Einstein"),
    ("Who discovered penicillin?", "Penicillin was discovered by", "Alexander Fleming"),
    ("Who invented the telephone?", "The telephone was invented by", "Alexander Graham Bell"),
    ("What is the chemical formula for water?", "The chemical formula for water is", "H2O"),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is", "Au"),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is", "Na"),
    ("What force keeps us on the ground?", "The force that keeps us on the ground is", "gravity"),
    ("Which planet is known as the Red Planet?", "The planet known as the Red Planet is", "Mars"),
    ("Which organ pumps blood through the body?", "The organ that pumps blood through the body is the", "heart"),
    ("What is the largest bone in the human body?", "The largest bone in the human body is the", "femur"),
    ("What is the largest mammal on land?", "The largest land mammal is the", "African elephant"),
    ("What is a baby cat called?", "A baby cat is called a", "kitten"),
    ("What do bees make?", "Bees make a sweet food called", "honey"),
    ("How many legs does a spider have?", "A spider has", "8 legs"),
    ("What is frozen water called?", "Frozen water is called", "ice"),
    ("What is the opposite of hot?", "The opposite of hot is", "cold"),
    ("What is the opposite of big?", "The opposite of big is", "small"),
    ("What is the first month of the year?", "The first month of the year is", "January"),
    ("What is the last month of the year?", "The last month of the year is", "December"),
]


def _plural(word: str) -> str:
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _word(rng: random.Random) -> str:
    return rng.choice(NOUNS)


def _uppercase(rng: random.Random) -> tuple[str, str]:
    w = _word(rng)
    return f"Write '{w}' in uppercase letters.", w.upper()


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 49), rng.randint(10, 49)
    return f"What is {a} + {b}?", str(a + b)


def _first_letter(rng: random.Random) -> tuple[str, str]:
    w = _word(rng)
    return f"What is the first letter of the word '{w}'?", w[0]


def _last_letter(rng: random.Random) -> tuple[str, str]:
    w = _word(rng)
    return f"What is the last letter of the word '{w}'?", w[-1]


def _plural_task(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(NOUNS + list(IRREGULAR_PLURALS))
    return f"What is the plural of '{w}'?", _plural(w)


def _sort_digits(rng: random.Random) -> tuple[str, str]:
    digits = rng.sample(range(10), 3)
    return f"Sort the digits {' '.join(map(str, digits))} from smallest to largest.", " ".join(map(str, sorted(digits)))


def _reverse(rng: random.Random) -> tuple[str, str]:
    w = rng.choice([n for n in NOUNS if len(n) <= 5])
    return f"Spell '{w}' backwards.", w[::-1]


def _capitalize(rng: random.Random) -> tuple[str, str]:
    w = _word(rng)
    return f"Capitalize the first letter: {w}", w.capitalize()


ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """``n`` (0-999) in American English words: 347 -> ``three hundred forty-seven``."""
    if not 0 <= n <= 999:
        raise ValueError(f"number_words covers 0-999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))


def _number_words(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1, 999)
    return f"Write the number in words: {n}", number_words(n)


def _reverse_words(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(NOUNS, 3)
    return f"Reverse the word order: {' '.join(words)}", " ".join(reversed(words))


SKILLS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "uppercase": _uppercase,
    "add": _add,
    "first-letter": _first_letter,
    "last-letter": _last_letter,
    "plural": _plural_task,
    "sort-digits": _sort_digits,
    "reverse": _reverse,
    "capitalize": _capitalize,
    "number-words": _number_words,
    "reverse-words": _reverse_words,
}
FORMATS = ("chat", "plain")


def formatted(prompt: str, answer: str, fmt: str, task_id: int, start: str = "") -> dict[str, Any]:
    """One example in ``fmt``: ``chat`` (the prompt is the user turn of the chat template) or
    ``plain`` (``Q: <prompt>`` on one line, then ``A:`` and the answer after one space; about 15
    tokens with SmolLM2's tokenizer against about 40 with its template). ``start`` is text the
    answer begins with that is given, not scored (a cloze: ``The capital of France is``)."""
    if fmt == "plain":
        return {"prompt": f"Q: {prompt}\n", "answer_prefix": f"A: {start}".rstrip(), "chat": False, "answer": answer, "task_id": task_id}
    return {"prompt": prompt, "answer": answer, "task_id": task_id, **({"answer_prefix": start} if start else {})}


def prompt_format(options: Mapping[str, Any], loader: str) -> str:
    """The ``format`` option (default ``chat``), checked."""
    fmt = options.get("format", "chat")
    if fmt not in FORMATS:
        raise UsageError(f"{loader}: option format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return str(fmt)


def _count(options: Mapping[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"option {key} must be an integer >= {minimum}, got {value!r}")
    return value


def load_instruction_task(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One generated skill task.

    Options:
        skill: one of :data:`SKILLS` (required).
        n_train: training examples (default 64).
        n_test: test examples (default 32), disjoint from the training prompts.
        format: ``chat`` (default: the prompt is the user turn of the model's chat template) or
            ``plain`` (``Q: <prompt>``, a newline and ``A:``, without the template).
    """
    skill = options.get("skill")
    if skill not in SKILLS:
        raise UsageError(f"generated-instructions: option skill must be one of {', '.join(SKILLS)}; got {skill!r}")
    n_train = _count(options, "n_train", 64)
    n_test = _count(options, "n_test", 32, minimum=1)
    fmt = prompt_format(options, "generated-instructions")
    rng = random.Random(f"{ctx.split_seed}-{skill}")
    seen: dict[str, str] = {}
    for _ in range(100 * (n_train + n_test)):
        if len(seen) == n_train + n_test:
            break
        prompt, answer = SKILLS[skill](rng)
        seen.setdefault(prompt, answer)
    if len(seen) < n_train + n_test:
        raise UsageError(f"generated-instructions: skill {skill!r} has only {len(seen)} distinct examples; asked for {n_train} + {n_test}")
    examples = [formatted(p, a, fmt, ctx.task_index) for p, a in seen.items()]
    return TaskData(train=ExampleListDataset(examples[n_test:]), test=ExampleListDataset(examples[:n_test]), class_names=())


def load_knowledge_probe(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """The general-knowledge probe (eval only: empty training set).

    Options:
        items: ``cloze`` (default: :data:`KNOWLEDGE`, questions with a cloze answer prefix under
            the chat template) or ``templated`` (:data:`clbench.data.knowledge.PROBE_ITEMS`: facts
            asked in several question templates, in ``format``).
        n_test: how many items to use (default 32, at most the number available), chosen
            deterministically from the split seed.
        format: for ``templated`` items, ``chat`` (default) or ``plain`` (see
            :func:`load_instruction_task`).
    """
    source = options.get("items", "cloze")
    if source not in ("cloze", "templated"):
        raise UsageError(f"general-knowledge: option items must be cloze or templated; got {source!r}")
    fmt = prompt_format(options, "general-knowledge")
    if source == "cloze":
        pool = [{"prompt": q, "answer_prefix": prefix, "answer": a} for q, prefix, a in KNOWLEDGE]
    else:
        from clbench.data.knowledge import PROBE_ITEMS, question

        pool = [formatted(ask, answer, fmt, 0, start) for ask, start, answer in (question(*item) for item in PROBE_ITEMS)]
    n_test = _count(options, "n_test", 32, minimum=1)
    if n_test > len(pool):
        raise UsageError(f"general-knowledge: option n_test must be at most {len(pool)} for items={source}, got {n_test}")
    random.Random(f"{ctx.split_seed}-general-knowledge").shuffle(pool)
    test = [{**ex, "task_id": ctx.task_index} for ex in pool[:n_test]]
    return TaskData(train=ExampleListDataset([]), test=ExampleListDataset(test), class_names=())
