"""Keel: an LLMOps platform in one package, around an OpenAI-compatible gateway."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.client import Client

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """`from keel import Client` imports the client only then: `import keel` does no work."""
    if name == "Client":
        from keel.client import Client

        return Client
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
