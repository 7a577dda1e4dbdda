"""Hand-written signs of prompt injection, in English and German (and a few others).

Each rule reads canonical text (see `normalize.canonical`: lower case, look-alikes and
leetspeak undone) and has a category and a weight. Strong rules (weight >= 0.9) are
specific enough to decide on their own; weaker ones are features for the classifier.
"""

# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from keel.guard.prefilter import Condition, LiteralAnalysis, Literals

CATEGORIES = ("override", "new_task", "exfiltration", "roleplay", "delimiter", "code_exec")

_V_EN = (
    r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|skip|override|overwrite|"
    r"bypass|neglect|discard|abandon|dismiss|overlook|set aside|throw out|drop|"
    r"do not follow|don'?t follow|stop following|pay no attention to|no longer follow)"
)
_Q_EN = (
    r"(?:previous|previously|prior|above|earlier|preceding|foregoing|former|original|"
    r"initial|old|existing|system|developer'?s?|safety|given|provided|pre-?programmed|default|"
    r"current|first|hidden|openai'?s?|content)"
)
_N_EN = (
    r"(?:instructions?|prompts?|rules|directions?|directives?|guidelines?|commands?|orders|"
    r"tasks?|context|constraints|restrictions|programming|guardrails|polic(?:y|ies)|"
    r"filters?|text|messages?|content|input|conversation|everything|training|"
    r"limitations|policies|requests?|information)"
)
_N_STRICT = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guardrails|"
    r"restrictions|programming|constraints|limitations|filters|safeguards|policies)"
)
_V_DE = (
    r"(?:ignorier(?:e|en sie|t)?|vergiss|vergessen sie|vergesst|missachte(?:n sie)?|"
    r"übergehe|beachte(?:n sie)? nicht|hör(?:e|en sie)? nicht auf|befolge(?:n sie)? nicht|"
    r"lass(?:en sie)? (?:alle|die)|setze(?:n sie)? .{0,20}außer kraft)"
)
_Q_DE = (
    r"(?:alle[nrs]?|vorherigen?|bisherigen?|obigen?|vorangegangenen?|vorigen?|früheren?|"
    r"zuvor|davor|oben|ursprünglichen?|vorhergehenden?)"
)
_N_DE = (
    r"(?:anweisungen|befehle|aufträge|aufgaben|regeln|instruktionen|gesagte?|angaben|"
    r"informationen|richtlinien|vorgaben|eingaben|prompts?|kontext|anordnungen)"
)
_SHOW = (
    r"(?:show|reveal|print|repeat|display|output|tell|give|share|write|leak|dump|list|"
    r"recite|return|expose|disclose|spell.?check|translate|provide|paste|copy|send|echo)"
)
_SECRET_OBJ = (
    r"(?:system|initial|original|hidden|secret|previous|first|internal|developer|pre-?|"
    r"full|entire|exact|complete|confidential|starting|underlying|base|current)"
)
_DOC = (
    r"(?:prompts?|instructions?|messages?|rules|guidelines|directives|configuration|"
    r"config|setup|context|training data|embeddings|prompt texts?)"
)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    category: str
    weight: float
    pattern: re.Pattern[str]
    # Literals every match contains: a text without them skips the pattern.
    needs: Condition | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Hit:
    rule: str
    category: str
    weight: float
    start: int
    end: int


def _r(rule_id: str, category: str, weight: float, pattern: str) -> Rule:
    return Rule(rule_id, category, weight, re.compile(pattern, re.IGNORECASE | re.DOTALL))


def _with_needs(*rules: Rule) -> tuple[Rule, ...]:
    analysis = LiteralAnalysis()
    return tuple(replace(rule, needs=analysis(rule.pattern)) for rule in rules)


def _first_matches(rules: tuple[Rule, ...], text: str) -> list[Hit]:
    literals = Literals(text)
    hits: list[Hit] = []
    for rule in rules:
        if not literals.allow(rule.needs):
            continue  # the pattern cannot match: a literal it needs is missing
        m = rule.pattern.search(text)
        if m:
            hits.append(Hit(rule.id, rule.category, rule.weight, m.start(), m.end()))
    return hits


W = r"(?:[\w'’\"-]+[\s,:;]+)"  # one word and what follows it

RULES: tuple[Rule, ...] = _with_needs(
    # Instruction override, English.
    _r(
        "override.qualified",
        "override",
        0.95,
        rf"\b{_V_EN}\s+{W}{{0,4}}?{_Q_EN}[\s,]+{W}{{0,2}}?{_N_EN}\b",
    ),
    _r(
        "override.all_rules",
        "override",
        0.95,
        rf"\b{_V_EN}\s+(?:all|any|every|your|of your|the|these|those)\s+(?:of\s+)?"
        rf"(?:your\s+|the\s+|my\s+)?(?:\w+\s+)?{_N_STRICT}\b",
    ),
    _r(
        "override.everything",
        "override",
        0.9,
        rf"\b{_V_EN}\s+(?:about\s+)?(?:everything|all(?: of)? (?:that|this|the above)|"
        r"what (?:i|we|you) (?:said|told you|wrote|discussed|have said|have told you)|"
        r"(?:(?:the|all) above|the previous|all previous|all prior|the preceding)"
        r"(?=\s*(?:$|[.,;:!?\n]|and\b|then\b|instead\b|(?:i|we) (?:said|told|wrote))))",
    ),
    _r(
        "override.ignore_above",
        "override",
        0.9,
        r"\b(?:ignore|disregard)\s+(?:the\s+)?(?:above|previous|preceding|prior)"
        r"(?=\s*(?:$|[.,;:!?\n]|and\b|then\b|instead\b))",
    ),
    # Instruction override, German.
    _r(
        "override.de",
        "override",
        0.95,
        rf"\b{_V_DE}\s+(?:\S+\s+){{0,4}}?{_Q_DE}\s+(?:\S+\s+){{0,2}}?{_N_DE}",
    ),
    _r("override.de_alles", "override", 0.9, rf"\b{_V_DE}\s+(?:alles|das obige)\b"),
    _r(
        "override.de_verb_last",
        "override",
        0.9,
        rf"\b{_Q_DE}\s+(?:\S+\s+){{0,2}}?(?:{_N_DE}|ausführungen)\s+(?:\S+\s+)?"
        r"(?:ignorieren|vergessen|missachten|außer acht lassen)\b",
    ),
    _r(
        "override.ru",
        "override",
        0.95,
        r"(?:забудь(?:те)?|игнорируй(?:те)?|проигнорируй(?:те)?|не обращай(?:те)? внимания на)"
        r"\s+(?:\S+\s+){0,2}(?:все|всё|предыдущие|прошлые|инструкции|правила|указания)",
    ),
    # Instruction override, other languages seen in attacks.
    _r(
        "override.es_fr_it",
        "override",
        0.95,
        r"\b(?:ignor[ae]|olvid[ae]|olvide|oublie[zr]?|ignore[zr]|dimentica|ignora)\s+"
        r"(?:\S+\s+){0,2}(?:instrucciones|todo|instructions|consignes|istruzioni|tutto|tout)\b",
    ),
    _r(
        "override.ignore_and_say",
        "override",
        0.6,
        r"\b(?:ignore|forget|disregard)\b.{0,60}\b(?:and|then)\s+(?:just\s+)?"
        r"(?:say|print|write|output|respond with|reply with|answer with)\b",
    ),
    # A new task or identity replaces the old one.
    _r(
        "new_task.announce",
        "new_task",
        0.7,
        r"\b(?:(?:now|here) comes? (?:a |the |your )?new (?:task|assignment|challenge)|"
        r"new (?:task|instructions?|assignment|rules?|directive|order)\s*:|"
        r"your new (?:task|role|job|instructions?|purpose|goal|directive) (?:is|are|will be)|"
        r"(?:start|begin) (?:with|on) a new (?:task|assignment))",
    ),
    _r(
        "new_task.persona",
        "new_task",
        0.6,
        r"(?:^|[.!?]\s*)(?:okay[,.]?\s+|ok[,.]?\s+|so[,.]?\s+)?now,?\s+you are\b|"
        r"\byou are (?:now|no longer)\b",
    ),
    _r(
        "new_task.from_now_on",
        "new_task",
        0.6,
        r"\bfrom now on,?\s+(?:you|your|act|respond|answer|reply|only|always|ignore)\b",
    ),
    _r(
        "new_task.de",
        "new_task",
        0.7,
        r"\b(?:(?:jetzt|nun|hier) kommt (?:eine |die )?neue aufgabe|neue aufgabe\s*:|"
        r"ab (?:jetzt|sofort) (?:bist du|wirst du|sollst du|antwortest du|bist|sind sie)|"
        r"konzentrier(?:e|en sie)? (?:dich|sich) (?:jetzt |nun )?(?:nur )?auf (?:die|diese) "
        r"(?:nächste |neue )?aufgabe)",
    ),
    # Asking for the system prompt or other hidden context.
    _r(
        "exfiltration.system_prompt",
        "exfiltration",
        0.95,
        rf"\b{_SHOW}\s+(?:me\s+|us\s+)?(?:back\s+)?(?:all\s+)?(?:of\s+)?(?:the\s+|your\s+|its\s+)?"
        rf"(?:\w+\s+){{0,2}}?{_SECRET_OBJ}[\s-]*{_DOC}\b",
    ),
    _r(
        "exfiltration.your_prompt",
        "exfiltration",
        0.9,
        rf"\b{_SHOW}\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?your\s+"
        r"(?:prompts?|prompt texts?|instructions|system message|rules|guidelines|"
        r"configuration|directives|embeddings|training data)\b",
    ),
    _r(
        "exfiltration.text_above",
        "exfiltration",
        0.9,
        r"\b(?:repeat|print|output|spell.?check|translate|show|display|summari[sz]e|reveal|"
        r"write out|copy)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?(?:the\s+)?"
        r"(?:(?:text|words|content|prompt|instructions|everything|lines|message)\s+"
        r"(?:above|before this|before that|so far|preceding)|above (?:text|prompt|"
        r"instructions|message|words)|(?:entire |whole |full )?text above)",
    ),
    _r(
        "exfiltration.initial_instructions",
        "exfiltration",
        0.9,
        r"\bwhat (?:were|are|was|is) (?:your|the) (?:initial|original|first|hidden|secret|"
        r"exact) (?:instructions?|prompt|rules|directives|message)|\bwhat (?:were|are|was|is) "
        r"your (?:system |full |exact |complete |current )?(?:prompt|instructions|rules)\b",
    ),
    _r(
        "exfiltration.de",
        "exfiltration",
        0.9,
        r"\b(?:zeig(?:e|en sie)?|gib|geben sie|verrate(?:n sie)?|drucke(?:n sie)?|"
        r"wiederhole(?:n sie)?|nenne(?:n sie)?|übersetze(?:n sie)?)\s+(?:\S+\s+){0,4}?"
        r"(?:(?:deine|ihre|den|die|alle|das)\s+)?(?:\S+\s+)?(?:prompt-?texte?|"
        r"system-?prompt|systemnachricht|anweisungen|eingabeaufforderung|instruktionen|"
        r"ursprünglichen anweisungen|obige eingabeaufforderung)",
    ),
    # Role play that removes the rules: DAN and friends.
    _r(
        "roleplay.dan",
        "roleplay",
        0.95,
        r"\b(?:do anything now|dan mode|developer mode (?:enabled|output)|"
        r"(?:you are|you're|act as|called|named|as|pretend to be|become) dan\b|"
        r"anti-?dan|jailbroken|stan mode|dude mode|mongo tom|evil confidant|"
        r"\[(?:dan|jailbreak|🔓\s*jailbreak)\]|aim stands for)",
    ),
    _r(
        "roleplay.no_rules",
        "roleplay",
        0.7,
        r"\b(?:without|no|free (?:of|from)|unbound by|not bound by|don'?t have|have no|"
        r"doesn'?t have|has no|ignore all|beyond|unrestricted by|bypass(?:ing)? (?:all|any|"
        r"your)?)\s+(?:any\s+)?(?:\w+\s+)?(?:restrictions|limitations|filters|filtering|"
        r"censorship|ethical (?:guidelines|constraints|boundaries)|moral(?:s|ity| "
        r"(?:guidelines|constraints))|boundaries|guardrails|safety (?:guidelines|measures|"
        r"features|protocols|constraints)|content polic(?:y|ies)|rules)\b",
    ),
    _r(
        "roleplay.unfiltered",
        "roleplay",
        0.6,
        r"\b(?:unfiltered|uncensored|unrestricted|unchained|unlocked|jailbreak|evil|"
        r"amoral|unethical)\s+(?:ai|mode|assistant|model|chatbot|bot|llm|gpt|persona)\b",
    ),
    _r(
        "roleplay.stay_in_character",
        "roleplay",
        0.6,
        r"\b(?:stay in character|never break character|don'?t break character|"
        r"always (?:remain|stay) in (?:character|(?:their|your|his|her) roles?)|"
        r"without (?:even )?breaking out of (?:their|your|the) characters?|"
        r"you are (?:now )?(?:free|liberated|unshackled|unchained)\b|"
        r"you (?:have been|are) freed|broken free)",
    ),
    _r(
        "roleplay.pretend",
        "roleplay",
        0.5,
        r"\b(?:pretend|imagine|act as if|suppose|hypothetically)\b.{0,80}\b(?:no "
        r"(?:rules|restrictions|limits|filters|safety)|without (?:rules|restrictions|"
        r"limits|filters|safety)|have no (?:rules|restrictions|ethics))",
    ),
    # Fake chat-format delimiters and fake ends of prompts.
    _r(
        "delimiter.chat_tokens",
        "delimiter",
        0.9,
        r"<\|(?:im_start|im_end|system|endoftext|assistant|user|begin_of_text|eot_id|"
        r"start_header_id)\|>|\[/?inst\]|<</?sys>>|<start_of_turn>",
    ),
    _r(
        "delimiter.role_line",
        "delimiter",
        0.5,
        r"(?:^|\n|\\n)\s*(?:system|assistant|###\s*(?:system|instruction))\s*:|"
        r"\"role\"\s*:\s*\"system\"",
    ),
    _r(
        "delimiter.instruction_line",
        "delimiter",
        0.5,
        r"(?:^|\n|\\n)\s*(?:new )?(?:instruction|order|command|befehl|anweisung|aufgabe)\s*:",
    ),
    _r(
        "delimiter.fake_end",
        "delimiter",
        0.7,
        r"(?:={3,}|-{3,}|#{3,})\s*end\b|\bend of (?:prompt|instructions|system prompt)\b|"
        r"\[(?:end|system)\]|</?system>",
    ),
    # Code-execution payloads smuggled into a prompt.
    _r(
        "code_exec.payload",
        "code_exec",
        0.5,
        r"os\.system|subprocess|__import__|\bexec\s*\(|\beval\s*\(|rm -rf|/etc/passwd|"
        r"/etc/shadow|\bwhoami\b|drop table|union select|<script|javascript:|"
        r"document\.cookie|powershell\b.*-(?:c|enc)|cmd\.exe|\bnc -e\b|bash -i|"
        r"\|\s*(?:ba)?sh\b|base64 -d|net user\b",
    ),
)


def scan_rules(text: str) -> list[Hit]:
    """Every rule that matches `text` (canonical), first match per rule."""
    return _first_matches(RULES, text)


def category_vector(hits: list[Hit]) -> list[float]:
    """Per category, the strongest weight that matched (0 when none): classifier features."""
    best = dict.fromkeys(CATEGORIES, 0.0)
    for hit in hits:
        best[hit.category] = max(best[hit.category], hit.weight)
    return [best[c] for c in CATEGORIES]


# Text inside a retrieved document or tool result has no business addressing the model.
# These rules apply only to those roles: from a user, the same words are a normal request.
DOCUMENT_RULES: tuple[Rule, ...] = _with_needs(
    _r(
        "indirect.your_response",
        "indirect",
        0.8,
        r"\b(?:modify|enhance|augment|begin|start|end|conclude|include|append|prepend|format|"
        r"render|translate|rearrange|scramble|jumble|encode|encrypt|write|provide|deliver|"
        r"remove \w+ from|insert \w+ (?:in|into)|add \w+ to|in|into|throughout|within)\s+"
        r"(?:all\s+|each\s+|every\s+)?your\s+(?:response|answer|reply|output|message|summary|"
        r"responses|answers|replies)s?\b",
    ),
    _r(
        "indirect.addressing_ai",
        "indirect",
        0.8,
        r"\b(?:dear |attention |note to (?:the )?)?(?:ai|assistant|chatbot|language model|llm|"
        r"gpt|copilot)s?\b[^.\n]{0,30}\b(?:must|should|are instructed to|is instructed to|"
        r"reading this|processing this)\b",
    ),
    _r(
        "indirect.hide_from_user",
        "indirect",
        0.9,
        r"\b(?:do not|don'?t|never) (?:tell|inform|mention (?:this )?to|reveal (?:this )?to|"
        r"alert|show) the user\b|\bwithout (?:telling|informing|alerting) the user\b",
    ),
    _r(
        "indirect.when_you_process",
        "indirect",
        0.8,
        r"\bwhen (?:you|the ai|the assistant|the model) (?:summari[sz]es?|reads?|process(?:es)?"
        r"|answers?|repl(?:y|ies)) (?:this|the)\b",
    ),
)


def scan_document_rules(text: str) -> list[Hit]:
    """Rules for text that came from a document or tool, not from the user."""
    return _first_matches(DOCUMENT_RULES, text)
