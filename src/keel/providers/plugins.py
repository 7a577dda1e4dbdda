"""Provider kinds as plugins: `providers.register(kind, factory)`, fed by entry points.

Every kind, the built-in ones included, comes from a `keel.providers` entry point that
names a hook `register(providers)`; the app loads them once at start, never at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any

from keel.providers.base import Provider, TokenCounter

ENTRY_POINT_GROUP = "keel.providers"
# Fits the registry's kind column (32 characters) and reads well in keel.yaml.
KIND = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
# Keel runs models of this kind itself (supervised llama.cpp replicas, see deploy/); the
# replicas are reached through the `openai_compat` factory, so no plugin may take the name.
LOCAL_KIND = "local"
# Declared by Keel's own pyproject.toml; missing only when Keel's package metadata is.
BUILTIN_KINDS = ("openai_compat", "anthropic")
HOW_TO_ADD = (
    "install a package that declares a 'keel.providers' entry point for it and restart "
    "Keel (see docs/deployments.md, 'Providers and plugins')"
)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One provider as the registry or the settings describe it: what a factory gets."""

    name: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # already decrypted
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    # The provider's `config` from the registry: settings only its own kind understands.
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Set for Keel's own replicas, whose GGUF file counts tokens exactly.
    token_counter: TokenCounter | None = None


ProviderFactory = Callable[[ProviderConfig], Provider]


@dataclass(frozen=True, slots=True)
class ProviderPlugin:
    kind: str
    factory: ProviderFactory
    # Checked when a provider is written, so a missing URL is a 400 then, not a failed call.
    needs_base_url: bool
    source: str  # who registered it, for error messages


class UnknownProviderKind(LookupError):
    """No installed plugin provides this kind."""

    def __init__(self, kind: str, known: list[str]):
        self.kind = kind
        self.known = known
        super().__init__(
            f"unknown provider kind {kind!r} (known: {', '.join(known) or 'none'}); "
            f"to add one, {HOW_TO_ADD}"
        )


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered; the message names it and the fix."""


def _describe(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    return f"entry point {entry_point.name!r} ({entry_point.value}) of {package}"


class ProviderPlugins:
    """The provider kinds this process knows, and the factory that builds each."""

    def __init__(self) -> None:
        self._plugins: dict[str, ProviderPlugin] = {}
        self._source = "code"  # what is registering now: a plugin's entry point, or code

    @classmethod
    def load(cls, group: str = ENTRY_POINT_GROUP) -> ProviderPlugins:
        """Every kind that installed packages declare; PluginError names a broken one."""
        plugins = cls()
        plugins.load_entry_points(group)
        missing = [kind for kind in BUILTIN_KINDS if kind not in plugins._plugins]
        if group == ENTRY_POINT_GROUP and missing:
            raise PluginError(
                f"Keel's own provider kinds ({', '.join(missing)}) are not registered: the "
                "keel package's entry points are not installed (running from a source tree?); "
                "install it, e.g. 'pip install -e .' in the checkout"
            )
        return plugins

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        # Sorted so that which of two clashing plugins is reported first does not depend
        # on the order of sys.path.
        found = sorted(metadata.entry_points(group=group), key=lambda e: (e.name, e.value))
        for entry_point in found:
            where = _describe(entry_point)
            try:
                hook = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"the provider plugin {where} failed to load: {exc!r}; fix or uninstall "
                    "that package"
                ) from exc
            if not callable(hook):
                raise PluginError(
                    f"the provider plugin {where} is not a function; it must name a "
                    "register(providers) function"
                )
            self._source = where
            try:
                hook(self)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"the provider plugin {where} failed while registering: {exc!r}; fix or "
                    "uninstall that package"
                ) from exc
            finally:
                self._source = "code"

    def register(
        self, kind: str, factory: ProviderFactory, *, needs_base_url: bool = False
    ) -> None:
        """Make `kind` a provider kind; `factory(config)` builds one provider of it."""
        if not isinstance(kind, str) or not KIND.match(kind):
            raise PluginError(
                f"{self._source} registers the provider kind {kind!r}: a kind is 1 to 32 "
                "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if kind == LOCAL_KIND:
            raise PluginError(
                f"{self._source} registers the provider kind {kind!r}, which Keel keeps for the "
                "model servers it runs itself; choose another name"
            )
        if not callable(factory):
            raise PluginError(f"{self._source} registers {kind!r} with a factory that is not "
                              "callable; pass a function of a ProviderConfig")  # fmt: skip
        other = self._plugins.get(kind)
        if other is not None:
            raise PluginError(
                f"the provider kind {kind!r} is registered twice: by {other.source} and by "
                f"{self._source}; uninstall one of the two packages"
            )
        self._plugins[kind] = ProviderPlugin(kind, factory, needs_base_url, self._source)

    def unregister(self, kind: str) -> None:
        self._plugins.pop(kind, None)

    def kinds(self) -> list[str]:
        """Kinds a provider may have: the plugins' and `local`, sorted."""
        return sorted([*self._plugins, LOCAL_KIND])

    def get(self, kind: str) -> ProviderPlugin:
        plugin = self._plugins.get(kind)
        if plugin is None:
            raise UnknownProviderKind(kind, self.kinds())
        return plugin

    def create(self, kind: str, config: ProviderConfig) -> Provider:
        """A new provider of `kind`; UnknownProviderKind if no plugin provides it."""
        return self.get(kind).factory(config)
