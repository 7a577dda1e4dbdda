"""The installed llama.cpp runs on any x86-64 CPU Keel supports, not only the build machine's.

A build with AMX or AVX-512 kernels crashes (SIGILL, or SIGSEGV where a VM advertises AMX
without enabling it) at the first inference on CPUs that lack them.
"""

from __future__ import annotations

import os
import re

import pytest

NATIVE_OPT_IN = "KEEL_LLAMA_NATIVE"


def system_info() -> str:
    from llama_cpp import llama_print_system_info

    info: bytes = llama_print_system_info()
    return info.decode("utf-8", "replace").strip()


def enabled(info: str, prefix: str) -> list[str]:
    return re.findall(rf"\b({prefix}\w*) = 1", info)


def test_llama_cpp_is_built_without_amx() -> None:
    info = system_info()
    found = enabled(info, "AMX")
    assert not found, (
        f"llama.cpp was compiled with {', '.join(found)}, which crashes on CPUs (and VMs) "
        f"without them; rebuild it for a portable x86-64 level (docs/serving.md). "
        f"Features: {info}"
    )


def test_llama_cpp_is_built_without_avx512_unless_native_was_asked_for() -> None:
    info = system_info()
    if os.environ.get(NATIVE_OPT_IN) == "1":
        pytest.skip(f"{NATIVE_OPT_IN}=1: a build for this machine's CPU was asked for")
    found = enabled(info, "AVX512")
    assert not found, (
        f"llama.cpp was compiled with {', '.join(found)}, which crashes with SIGILL on CPUs "
        f"without them; rebuild it for a portable x86-64 level (docs/serving.md), or set "
        f"{NATIVE_OPT_IN}=1 if a build for this machine only is meant. Features: {info}"
    )
