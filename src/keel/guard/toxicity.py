"""Offensive language in text, from alt-profanity-check (a linear model on n-grams).

It runs offline and in milliseconds, and recognises profanity and insults well; it
misses hateful statements written in polite words (see docs/guardrails.md). Scored per
sentence, so one abusive line in a long answer is not averaged away.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from keel.guard.base import Action, Decision, Finding, ScanContext, Stopwatch, Verdict

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


class ToxicityUnavailable(RuntimeError):
    """alt-profanity-check is not installed; the message says how to install it."""


class ToxicityScanner:
    name = "toxicity"

    def __init__(self, threshold: float = 0.5, action: Action = "block") -> None:
        self.decision = Decision(threshold=threshold, action=action)
        self._lock = threading.Lock()
        self._predict: Any = None

    def _model(self) -> Any:
        with self._lock:
            if self._predict is None:
                try:
                    # Importing the package loads its pickled model: only when first used.
                    from profanity_check import predict_prob  # type: ignore[import-untyped]
                except ImportError as exc:
                    raise ToxicityUnavailable(
                        "the toxicity scanner needs alt-profanity-check; "
                        "run: pip install 'keel[toxicity]'"
                    ) from exc
                self._predict = predict_prob
            return self._predict

    def sentence_scores(self, text: str) -> list[tuple[int, int, float]]:
        spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group(0).strip()]
        if not spans:
            return []
        probs = self._model()([text[s:e] for s, e in spans])
        return [(s, e, float(p)) for (s, e), p in zip(spans, probs, strict=True)]

    def probability(self, text: str) -> float:
        return max((p for _, _, p in self.sentence_scores(text)), default=0.0)

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        scored = self.sentence_scores(text)
        threshold = self.decision.threshold
        findings = [
            Finding("toxicity", s, e, detail="offensive sentence", score=p)
            for s, e, p in scored
            if p >= threshold
        ]
        score = max((p for _, _, p in scored), default=0.0)
        return Verdict(self.name, score, self.decision(score), findings, latency_ms=watch.ms())
