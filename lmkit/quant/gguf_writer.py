"""Write a re-quantized GGUF: same model, same metadata, weights stored in another ggml type.

:func:`requantize_gguf` reads every tensor of a GGUF file (dequantizing with :mod:`lmkit.quant.ggml`),
re-quantizes each 2-D weight to the target type with lmkit's byte-exact quantizers and writes a
new file with ``gguf.GGUFWriter``. 1-D tensors (norm weights) stay F32, as llama.cpp keeps them.

Rows must be a whole number of blocks. SmolLM2's hidden size is 576 = 2.25 × 256, so most of its
matrices cannot be stored as K-quants (256-element super-blocks). llama.cpp's quantizer then falls
back to a 32-element type of similar size (``llama_tensor_get_type``: Q4_K → Q5_0, Q6_K → Q8_0);
:data:`FALLBACK` applies the same rule, and the function returns which type each tensor got.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmkit.checks import check_choice
from lmkit.quant import ggml

# llama.cpp's fallback when a row is not a multiple of the K-quant super-block (256).
FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}
# general.file_type values (llama.cpp's llama_ftype) for a file "mostly" of one type.
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K": 14, "Q6_K": 18}


def tensor_type_for(shape: tuple[int, ...], qtype: str) -> str:
    """The ggml type a tensor of (numpy-order) ``shape`` gets in a file of type ``qtype``."""
    if len(shape) < 2:
        return "F32"
    _, block, _ = ggml.TYPES[qtype]
    if shape[-1] % block == 0:
        return qtype
    fallback = FALLBACK.get(qtype)
    if fallback is None or shape[-1] % ggml.TYPES[fallback][1]:
        raise ValueError(f"rows of length {shape[-1]} fit neither {qtype} nor a fallback type")
    return fallback


def requantize_gguf(src: str | Path, dst: str | Path, qtype: str) -> dict[str, str]:
    """Write ``dst``: the GGUF ``src`` with every 2-D weight re-quantized to ``qtype``.

    Returns ``{tensor name: ggml type written}``. The metadata (architecture, hyper-parameters,
    tokenizer, chat template) is copied; ``general.file_type`` is set to match ``qtype``.
    """
    import gguf

    qtype = check_choice("qtype", ggml.type_name(qtype), sorted(FILE_TYPE))
    from lmkit.loaders.gguf_file import open_gguf

    reader = open_gguf(src)  # checked whole: a truncated or corrupted source is named before anything is written
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    writer.add_file_type(FILE_TYPE[qtype])

    written: dict[str, str] = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape))
        src_type = ggml.type_name(int(t.tensor_type))
        values = ggml.dequantize(np.asarray(t.data).reshape(shape[:-1] + (-1,)), src_type).reshape(shape)
        target = tensor_type_for(shape, qtype)
        if target == "F32":
            writer.add_tensor(t.name, np.ascontiguousarray(values, dtype=np.float32))
        else:
            blocks = ggml.quantize(values.reshape(-1, shape[-1]), target).reshape(*shape[:-1], -1)
            writer.add_tensor(t.name, blocks, raw_dtype=gguf.GGMLQuantizationType(ggml.TYPES[target][0]))
        written[t.name] = target
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written
