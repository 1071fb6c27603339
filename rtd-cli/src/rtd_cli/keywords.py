"""Keyword masking for LinCIR-style text-only training of the projection (`rtd train-phi`).

LinCIR (`navervision/lincir:loader.py::CaptionDataset`, `extract_keywords_spacy`) cleans a
caption (lower case, `$` removed, `<PERSON>` -> person), takes every maximal run of spaCy
tokens tagged NOUN, PROPN, ADJ or DET as a keyword, and replaces each keyword by the pseudo
token. When spaCy finds no keyword it replaces one random word; when the result still has no
pseudo token it falls back to `"a photo of $"` (indicator 0).

Backends:
- `spacy`: the same rule with spaCy's `en_core_web_sm` (or another installed English
  pipeline). Used by `auto` when installed; nothing is ever downloaded at run time
  (`pip install spacy && python -m spacy download en_core_web_sm` beforehand).
- `builtin`: a dependency-free approximation. Its tokens are spaCy's English tokenizer's
  (`split_tokens`: punctuation, clitics such as 's and n't, and hyphens or slashes inside
  words come off as their own tokens, as `spacy.blank("en")` does; tested against it where
  spaCy is installed), so "a dog." masks to "$ ." and "the man's hat" to "$ 's $" as
  LinCIR's spaCy path does. A token is a keyword unless it is punctuation, a clitic or in
  `FUNCTION_WORDS` (prepositions, conjunctions, pronouns, auxiliaries, frequent verbs and
  adverbs); determiners count as keywords as spaCy's DET does, so
  "a photo of a red car on the street" -> "$ of $ on $". Verbs outside the list are taken
  for keywords, which spaCy's tagger would not do. The LinCIR presets refuse this backend
  unless `--keywords builtin` is passed (then recorded in the run header's config).

The symbol must survive tokenization as its own token (`$` -> 259 in the CLIP BPE). BPE
merges it with punctuation that touches it: "$." is one token (34682), "$," is 3, 267 and
"$'s" is 3, 262, 338, none of them 259. `mask_runs` therefore puts a space between the
symbol and any text glued to it ("$ ." -> 259, 269), and `ensure_slot` checks the ids after
tokenization and truncation to the context length: a caption whose slot is still missing
becomes `"a photo of $"` (LinCIR's fallback, `lincir:loader.py::CaptionDataset`), counted.

Deviations:
- LinCIR uses `str.replace`, which also rewrites substrings inside other words (replacing
  the keyword "a" hits every letter a). Here whole keyword runs are replaced, so each run
  becomes exactly one pseudo token.
- LinCIR masks with a special token `[$]` (id 49408, rewritten to 259 after tokenization),
  which BPE never merges; open_clip's tokenizer has no such token, so the symbol is kept
  apart from its neighbours by spaces instead ("the man's hat" -> "$ 's $"), which changes
  the masked caption's text by one space where spaCy found no whitespace.
- LinCIR truncates the clean caption to 75 tokens before masking; here the whole caption is
  masked and the tokenizer truncates. A slot lost to truncation falls back like LinCIR's
  missing-259 case.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labshared.console import log
from labshared.errors import ConfigError

KEYWORD_POS = frozenset({"NOUN", "PROPN", "ADJ", "DET"})
BACKENDS = ("auto", "spacy", "builtin")

FUNCTION_WORDS = frozenset(
    """
    about above across after against along amid among around as at before behind below
    beneath beside besides between beyond by down during except for from in inside into
    like near of off on onto out outside over past per since through throughout till to
    toward towards under underneath until up upon via with within without
    and but or nor so yet while whereas although though because if than then that which
    who whom whose where when what how why whether
    i me my mine we us our ours you your yours he him his she her hers it its they them
    their theirs itself themselves himself herself myself ourselves yourself
    is are was were be been being am has have had having do does did doing done
    can could will would shall should may might must
    get gets got getting make makes made making let lets put puts
    show shows showing shown look looks looking see sees seen seeing
    sit sits sitting stand stands standing hold holds holding hang hangs hanging
    lie lies lying walk walks walking run runs running play plays playing
    ride rides riding fly flies flying eat eats eating wear wears wearing
    not no very too also just only really quite rather almost even still
    there here now again ever never always often together away back
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

_WORD_RE = re.compile(r"\S+")

# spaCy's English tokenizer rules (spacy/lang/punctuation.py, lang/en/tokenizer_exceptions.py),
# on lower-cased captions: prefixes and suffixes come off a whitespace-separated word one at
# a time, then infixes split what is left. Only the rules captions meet are kept: no
# emoticons, URLs or unit suffixes ("5km" stays one token where spaCy gives "5", "km").
_SPECIAL = {"e.g.": ["e.g."], "i.e.": ["i.e."], "a.m.": ["a.m."], "p.m.": ["p.m."],
            "vs.": ["vs."], "co.": ["co."], "ma'am": ["ma'am"], "cannot": ["can", "not"],
            "gonna": ["gon", "na"], "gotta": ["got", "ta"], "y'all": ["y'", "all"]}  # fmt: skip
_PREFIX_RE = re.compile(r"""(\.\.+|…|["'“”‘’`«»(\[{<¿¡*&#_§%=—–,:;!?])""")
_SUFFIX_RE = re.compile(
    r"""(\.\.+|…|(?<=[a-z])n't|(?<=\w)['’](?:s|m|re|ve|ll|d)|(?<=[0-9])%|["'“”‘’`»)\]}>,:;!?.])$"""
)
_INFIX_RE = re.compile(
    r"\.\.+|…|(?<=[a-z0-9])(?:---|--|-|–|—)(?=[a-z])|(?<=[a-z0-9])[:<>=/](?=[a-z])"
    r"|(?<=[a-z]),(?=[a-z])|(?<=[0-9])[+\-*^](?=[0-9-])"
)
#: Tokens the built-in rule never takes for keywords: clitics and the halves of contractions.
_CLITICS = frozenset({"'s", "’s", "'m", "'re", "'ve", "'ll", "'d", "n't", "ca", "wo", "na", "ta"})


def _infix_split(word: str) -> list[str]:
    out, start = [], 0
    for m in _INFIX_RE.finditer(word):
        out += [word[start : m.start()], m.group(0)]
        start = m.end()
    return [t for t in [*out, word[start:]] if t]


def split_tokens(word: str) -> list[str]:
    """One whitespace-free word as spaCy's English tokenizer splits it:
    "dog." -> ["dog", "."], "man's" -> ["man", "'s"], "don't" -> ["do", "n't"],
    "t-shirt" -> ["t", "-", "shirt"], '("hi")' -> ["(", '"', "hi", '"', ")"]."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    while word and word not in _SPECIAL:
        m = _PREFIX_RE.match(word)
        if m and m.end() < len(word):
            prefixes.append(m.group(0))
            word = word[m.end() :]
            continue
        m = _SUFFIX_RE.search(word)
        if m and m.start() > 0:
            suffixes.insert(0, m.group(0))
            word = word[: m.start()]
            continue
        break
    middle = _SPECIAL.get(word) or _infix_split(word)
    return [*prefixes, *middle, *suffixes]


def clean_caption(caption: str | None) -> str:
    """LinCIR's `clean_caption` without the tokenizer round trip (truncation happens at
    tokenization): None -> "", `<PERSON>` -> person, lower case, `$` removed, stripped."""
    caption = (caption or "").replace("<PERSON>", "person")
    return caption.lower().replace("$", "").strip()


def mask_runs(pieces: Sequence[tuple[str, str, bool]], symbol: str) -> str:
    """Join `(text, trailing_whitespace, is_keyword)` pieces, each maximal keyword run
    replaced by one `symbol` (keeping the whitespace after the run).

    The symbol never touches other text: BPE would merge it with glued punctuation
    ("$." is one token, "($" another), so a space goes in between where the pieces had none.
    """
    out = ""
    in_run = False
    for i, (text, ws, is_kw) in enumerate(pieces):
        if is_kw:
            if not in_run:
                if out and not out[-1].isspace():
                    out += " "
                out += symbol
                in_run = True
            next_kw = i + 1 < len(pieces) and pieces[i + 1][2]
            if not next_kw:
                last = i + 1 == len(pieces)
                out += ws if ws or last else " "
                in_run = False
        else:
            out += text + ws
    return out.strip()


def _builtin_pieces(caption: str) -> list[tuple[str, str, bool]]:
    """(token, trailing whitespace, is_keyword) over `split_tokens` of each word."""
    pieces = []
    matches = list(_WORD_RE.finditer(caption))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(caption)
        tokens = split_tokens(m.group(0))
        for j, tok in enumerate(tokens):
            ws = caption[m.end() : end] if j == len(tokens) - 1 else ""
            is_kw = (
                tok not in FUNCTION_WORDS and tok not in _CLITICS and any(c.isalpha() for c in tok)
            )
            pieces.append((tok, ws, is_kw))
    return pieces


@dataclass
class KeywordMasker:
    """Masks the keywords of captions with a pseudo-token symbol.

    Attributes:
        backend: `spacy` or `builtin` (resolved; never `auto`).
        symbol: the pseudo-token text (`$` for LinCIR/SEARLE, `*` for Pic2Word).
        nlp: the spaCy pipeline (spaCy backend only).
    """

    backend: str
    symbol: str = "$"
    nlp: Any = None

    def pieces(self, caption: str) -> list[tuple[str, str, bool]]:
        if self.backend == "spacy":
            return [(t.text, t.whitespace_, t.pos_ in KEYWORD_POS) for t in self.nlp(caption)]
        return _builtin_pieces(caption)

    def mask(self, caption: str, rng: random.Random) -> tuple[str, str, bool]:
        """Returns (cleaned caption, masked caption, keyword_found).

        The masked caption holds at least one `symbol`: keyword runs replaced; else one
        random word replaced; else (empty caption) `"a photo of <symbol>"`.
        """
        clean = clean_caption(caption)
        pieces = self.pieces(clean)
        if any(kw for _, _, kw in pieces):
            return clean, mask_runs(pieces, self.symbol), True
        if pieces:
            pick = rng.randrange(len(pieces))
            pieces = [(t, ws, i == pick) for i, (t, ws, _) in enumerate(pieces)]
            return clean, mask_runs(pieces, self.symbol), False
        return clean, fallback_caption(self.symbol), False


def load_masker(
    backend: str = "auto", symbol: str = "$", model: str = "en_core_web_sm"
) -> KeywordMasker:
    """Pick the keyword backend. `auto` uses spaCy's `model` when both are installed and
    the built-in rule otherwise; `spacy` insists on spaCy (ConfigError if absent)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--keywords {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend in ("auto", "spacy"):
        try:
            import spacy  # optional: only this backend needs it, and it may be absent

            nlp = spacy.load(model, disable=["ner", "lemmatizer", "parser"])
            return KeywordMasker("spacy", symbol, nlp)
        except (ImportError, OSError) as exc:
            if backend == "spacy":
                raise ConfigError(
                    f"--keywords spacy (LinCIR's masking, the lincir presets' default): cannot "
                    f"load spaCy's {model!r} ({exc}); install both with `pip install spacy "
                    f"&& python -m spacy download {model}`, or pass "
                    "--keywords builtin for the built-in approximation"
                ) from None
            log(
                f"[yellow]keywords: spaCy's {model!r} is not installed; the built-in "
                "approximation of LinCIR's rule is used[/yellow]"
            )
    return KeywordMasker("builtin", symbol)


def fallback_caption(symbol: str) -> str:
    """LinCIR's caption for a row without a usable slot: `"a photo of $"`."""
    return f"a photo of {symbol}"


def ensure_slot(
    tokenizer: Callable[[list[str]], torch.Tensor],
    masked: Sequence[str],
    token_id: int,
    symbol: str,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Tokenize masked captions and make sure every row holds the pseudo token.

    A row whose ids lack `token_id` after tokenization and truncation to the context length
    (glued punctuation that BPE merged with the symbol, or a slot cut off at the end) is
    replaced by `fallback_caption(symbol)`, as LinCIR does when 259 is missing.

    Args:
        tokenizer: open_clip tokenizer, list of strings -> (B, L) long ids, truncated.
        masked: masked captions, one per row.
        token_id: the symbol's vocabulary id (`model.pseudo_token_id`).
        symbol: the pseudo-token text (`$` or `*`).

    Returns:
        (ids (B, L), the captions actually used, fell_back (B,) bool).

    Raises:
        ConfigError: the fallback caption itself does not hold `token_id` (a tokenizer
            that does not encode `symbol` as that id).
    """
    ids = tokenizer(list(masked))
    fell_back = ~(ids == token_id).any(dim=1)  # (B,)
    used = list(masked)
    if fell_back.any():
        fallback = fallback_caption(symbol)
        fb_ids = tokenizer([fallback])[0]
        if not (fb_ids == token_id).any():
            raise ConfigError(
                f"the tokenizer encodes {fallback!r} without token id {token_id} for "
                f"{symbol!r}; the pseudo-token slot cannot be placed"
            )
        ids[fell_back] = fb_ids.to(ids.dtype)
        used = [fallback if f else m for m, f in zip(used, fell_back.tolist(), strict=True)]
    return ids, used, fell_back
