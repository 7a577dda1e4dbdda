"""The provider kinds Keel ships, registered through its own `keel.providers` entry points.

They go the way a third-party plugin goes (see pyproject.toml), so that path is used,
and tested, on every start.
"""

from __future__ import annotations

from keel.providers.anthropic import AnthropicProvider
from keel.providers.openai_compat import OpenAICompatProvider
from keel.providers.plugins import ProviderConfig, ProviderPlugins


def _base_url(config: ProviderConfig) -> str:
    if not config.base_url:
        raise ValueError(f"provider {config.name!r} needs a base_url (http:// or https://)")
    return config.base_url


def openai_compat(config: ProviderConfig) -> OpenAICompatProvider:
    """Any OpenAI-compatible server: llama.cpp, vLLM, Ollama, TGI, OpenAI itself."""
    return OpenAICompatProvider(
        config.name,
        _base_url(config),
        api_key=config.api_key,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        token_counter=config.token_counter,
    )


def anthropic(config: ProviderConfig) -> AnthropicProvider:
    """Anthropic's Messages API, answering OpenAI chat bodies."""
    return AnthropicProvider(
        config.name,
        _base_url(config),
        api_key=config.api_key,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )


def register_openai_compat(providers: ProviderPlugins) -> None:
    providers.register("openai_compat", openai_compat, needs_base_url=True)


def register_anthropic(providers: ProviderPlugins) -> None:
    providers.register("anthropic", anthropic, needs_base_url=True)
