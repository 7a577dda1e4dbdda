"""The trained adapter back into a GGUF the bundled llama.cpp server loads as any model.

The LoRA update B·A·(alpha/r) is merged into the base's own tensors and a full GGUF written
with the `gguf` package: every key and untouched tensor copied as it is, each updated tensor
stored as Q8_0 when the base is quantised (4 bits would round the update away) and in
the base's own float type otherwise. A merged
file needs nothing from the model server (no adapter flag) and serves at the base's speed;
docs/finetuning.md has the measured size and time against a separate adapter file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# peft's names for a layer's matrices, and llama.cpp's.
GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_LORA_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


class ExportFailed(RuntimeError):
    """The merged file could not be written; the message names the tensor or field."""


def lora_deltas(weights: dict[str, Any], r: int, alpha: int) -> dict[str, Any]:
    """{gguf tensor name: float32 delta (out, in) in Hugging Face's row order}."""
    import numpy as np

    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in weights.items():
        match = _LORA_KEY.search(key)
        if match is None:
            continue
        layer, module, which = int(match.group(1)), match.group(2), match.group(3)
        pairs.setdefault((layer, module), {})[which] = value.detach().float().numpy()
    scale = alpha / r
    deltas = {}
    for (layer, module), ab in pairs.items():
        if set(ab) != {"A", "B"} or module not in GGUF_NAMES:
            raise ExportFailed(f"layer {layer} {module}: an incomplete or unknown LoRA pair")
        deltas[f"blk.{layer}.{GGUF_NAMES[module]}.weight"] = (
            np.asarray(ab["B"] @ ab["A"], dtype=np.float32) * scale
        )
    return deltas


def _llama_permute(rows: Any, heads: int) -> Any:
    """llama.cpp keeps q and k rows in the rotary layout the converter gives them (the same
    permutation as convert_hf_to_gguf.py); a delta in Hugging Face's order gets it too."""
    out_dim = rows.shape[0]
    return (
        rows.reshape(heads, 2, out_dim // heads // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _field_value(field: Any) -> Any:
    return field.contents()


class ExportStopped(RuntimeError):
    """`should_stop` said so (a cancelled job): nothing was written at `out`."""


def merge_to_gguf(
    base: Path,
    weights: dict[str, Any],
    r: int,
    alpha: int,
    out: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Write base + LoRA as one GGUF at `out` (through a temporary name); returns what was
    done: tensors merged, their stored type, file size. `should_stop` is asked before each
    tensor, so a cancel does not wait for the whole file."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize, quantize

    reader = GGUFReader(str(base))
    arch_field = reader.fields["general.architecture"]
    arch = str(arch_field.contents())
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_field = reader.fields.get(f"{arch}.attention.head_count_kv")
    kv_heads = int(kv_field.contents()) if kv_field is not None else heads
    deltas = lora_deltas(weights, r, alpha)
    partial = out.with_name(out.name + ".partial")
    writer = GGUFWriter(str(partial), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, _field_value(field), kind, sub_type=sub)
    stored: dict[str, int] = {}
    tensors: list[tuple[str, Any, Any]] = []
    for tensor in reader.tensors:
        if should_stop():
            writer.close()
            partial.unlink(missing_ok=True)
            raise ExportStopped(f"stopped before tensor {tensor.name}")
        delta = deltas.pop(tensor.name, None)
        if delta is None:
            tensors.append((tensor.name, tensor.data, tensor.tensor_type))
            continue
        if ".attn_q." in tensor.name:
            delta = _llama_permute(delta, heads)
        elif ".attn_k." in tensor.name:
            delta = _llama_permute(delta, kv_heads)
        current = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if current.shape != delta.shape:
            raise ExportFailed(
                f"{tensor.name}: base is {current.shape}, the adapter's update is {delta.shape}"
            )
        merged = current + delta
        qtype = tensor.tensor_type
        if qtype == GGMLQuantizationType.F32:
            data: Any = merged
        elif qtype == GGMLQuantizationType.F16:
            data = merged.astype(np.float16)
        else:  # a 4- or 5-bit base would round the update away: 8 bits keep it
            qtype, data = GGMLQuantizationType.Q8_0, quantize(merged, GGMLQuantizationType.Q8_0)
        stored[qtype.name] = stored.get(qtype.name, 0) + 1
        tensors.append((tensor.name, data, qtype))
    if deltas:
        raise ExportFailed(f"the base has no tensor {sorted(deltas)[0]!r} for the adapter's update")
    for name, data, qtype in tensors:
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(out)
    return {
        "merged_tensors": sum(stored.values()),
        "stored_as": stored,
        "bytes": out.stat().st_size,
    }
