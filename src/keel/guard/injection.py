"""The prompt-injection scanner: normalisation, rules, and a trained classifier.

Layers, cheapest first: undo obfuscation (`normalize`), match hand-written rules
(`heuristics`), score hashed character and word n-grams with a linear model, and, unless
that fast model is sure the text is benign and nothing looked odd, add the MiniLM
embedding of every window of every decoded view. The score is the highest over views and
windows, and never lower than the weight of a strong rule that matched.

Content an application fetched (retrieved documents, tool and HTTP output) is scanned as
data: `scan_untrusted(text, source)`, or a `document`/`tool` role. There an instruction to
the assistant is the attack, so rules for text that addresses the assistant apply too. The
parts of a user message that quote such content ("summarise this e-mail: ...", see
`untrusted.quoted_spans`) are scanned the same way, beside the message as a whole.
"""

from __future__ import annotations

import numpy as np

from keel.guard.base import Action, Decision, Finding, ScanContext, Stopwatch, Verdict
from keel.guard.embedding import WindowEncoder
from keel.guard.features import NgramHasher, extra_features, tfidf_rows
from keel.guard.heuristics import Hit, scan_document_rules, scan_rules
from keel.guard.model import InjectionModel, sigmoid
from keel.guard.normalize import Normalized, View, normalize
from keel.guard.untrusted import SOURCE_ROLES, UNTRUSTED_ROLES, Source, quoted_spans

STRONG_RULE = 0.9
INDIRECT_ROLES = UNTRUSTED_ROLES


class InjectionScanner:
    """Scores how likely a text tries to override the model's instructions.

    `fast_path=False` always runs the embedding (slower, for offline evaluation).
    Text longer than `max_chars` is scanned as its head and tail. `scan_quoted=False`
    reads a user message only as a whole, not also the content it quotes.
    """

    name = "injection"

    def __init__(
        self,
        model: InjectionModel | None = None,
        *,
        threshold: float | None = None,
        action: Action = "block",
        fast_path: bool = True,
        encoder: WindowEncoder | None = None,
        max_chars: int = 20_000,
        max_views: int = 6,
        scan_quoted: bool = True,
    ) -> None:
        self.model = model if model is not None else InjectionModel.load()
        emb = self.model.embedding
        self.encoder = encoder or WindowEncoder(
            max_tokens=int(emb["max_tokens"]),
            max_windows=int(emb["max_windows"]),
            quantize=bool(emb["quantize"]),
        )
        self.decision = Decision(
            threshold=self.model.threshold if threshold is None else threshold, action=action
        )
        self.fast_path = fast_path
        self.max_chars = max_chars
        self.max_views = max_views
        self.scan_quoted = scan_quoted
        self._hasher = NgramHasher()

    def warm_up(self) -> None:
        """Load the embedding model now rather than on the first suspicious text."""
        self.encoder.load()
        self.scan("warm up", ScanContext())
        self.probability("ignore previous instructions", force_embedding=True)

    def probability(
        self, text: str, context: ScanContext | None = None, *, force_embedding: bool = False
    ) -> tuple[float, Normalized, list[tuple[View, Hit]], bool]:
        """(score, normalised text, rule hits, whether the embedding ran).

        A user message is also read as the content it quotes: the score is the higher."""
        context = context or ScanContext()
        score, norm, hits, embedded = self._probability(text, context.role, force_embedding)
        if context.role == "user" and self.scan_quoted:
            for start, end in quoted_spans(text):
                quoted = self._probability(text[start:end], "document", force_embedding)
                hits += quoted[2]
                embedded = embedded or quoted[3]
                score = max(score, quoted[0])
        return score, norm, hits, embedded

    def scan_untrusted(self, text: str, source: Source = "retrieved") -> Verdict:
        """Scan content the application fetched rather than the user wrote: `retrieved`
        documents, `tool` or `http` output, `quoted` text. An instruction in it is an
        attack even when the same words from the user would be a request."""
        return self.scan(text, ScanContext(role=SOURCE_ROLES[source]))

    def _probability(
        self, text: str, role: str, force_embedding: bool
    ) -> tuple[float, Normalized, list[tuple[View, Hit]], bool]:
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = text[:half] + "\n" + text[-half:]
        norm = normalize(text)
        views = norm.views[: self.max_views]
        hits: list[tuple[View, Hit]] = []
        document_hits: list[tuple[View, Hit]] = []
        for view in views:
            hits.extend((view, h) for h in scan_rules(view.text))
            if role in INDIRECT_ROLES:
                document_hits.extend((view, h) for h in scan_document_rules(view.text))
        # Document rules are not classifier features (the model never saw them): they
        # only raise the score, below.
        extra = extra_features(norm, [h for _, h in hits])
        extra_rows = np.repeat(extra.reshape(1, -1), len(views), axis=0)
        ngrams = tfidf_rows([v.text for v in views], self.model.idf, self._hasher)
        fast = float(sigmoid(self.model.fast.logits(ngrams, extra_rows)).max())
        suspicious = bool(hits or document_hits) or bool(norm.invisible or norm.hidden_text)
        suspicious = suspicious or norm.homoglyphs > 0 or norm.leet_tokens > 0
        suspicious = suspicious or len(views) > 1
        use_embedding = force_embedding or not self.fast_path
        use_embedding = use_embedding or suspicious or fast >= self.model.fast_skip_below
        if use_embedding:
            windows: list[list[int]] = []
            owner: list[int] = []
            for i, view in enumerate(views):
                for window in self.encoder.windows(view.text):
                    windows.append(window)
                    owner.append(i)
            emb = self.encoder.encode_windows(windows)
            logits = self.model.full.logits_windows(ngrams, extra_rows, emb, owner)
            score = float(sigmoid(logits).max())
        else:
            score = fast
        strong = max((h.weight for _, h in hits if h.weight >= STRONG_RULE), default=0.0)
        indirect = max((h.weight for _, h in document_hits), default=0.0)
        return max(score, strong, indirect), norm, hits + document_hits, use_embedding

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        score, norm, hits, used_embedding = self.probability(text, context)
        findings: list[Finding] = [
            Finding(kind=f"invisible.{f.kind}", start=f.start, end=f.end, detail=f.detail)
            for f in norm.invisible
        ]
        for view in norm.decoded:
            findings.append(
                Finding(kind="encoded_payload", start=0, end=len(text), detail=view.kind)
            )
        lowered = text.lower()
        for view, hit in hits:
            fragment = view.text[hit.start : hit.end]
            at = lowered.find(fragment) if view.kind == "text" else -1
            start, end = (at, at + len(fragment)) if at >= 0 else (0, len(text))
            findings.append(
                Finding(
                    kind=f"injection.{hit.category}",
                    start=start,
                    end=end,
                    detail=f"{hit.rule} ({view.kind})",
                    score=hit.weight,
                )
            )
        findings.append(
            Finding(
                kind="injection.classifier",
                start=0,
                end=len(text),
                detail="embedding" if used_embedding else "fast path",
                score=score,
            )
        )
        return Verdict(
            scanner=self.name,
            score=score,
            action=self.decision(score),
            findings=findings,
            latency_ms=watch.ms(),
        )
