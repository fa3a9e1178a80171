"""The layers of an ultralytics export that INT8 quantization leaves in FP32 (`int8.fp32_layers`),
found by the export's node names, and the graph rewrite that makes the SiLUs among them one
fused float op for ONNX Runtime's CPU provider. `rtmon.quantize` excludes these nodes from
quantization; which to keep was measured (docs/benchmarks/cpu-2026-12-01-int8/choice.md)."""

from __future__ import annotations

import re

from rtmon.errors import UserError

FP32_GROUPS = ("stem", "silu", "output", "decode", "head")


def fp32_nodes(graph, groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The nodes of an ultralytics export's graph kept in FP32 for `groups`:

    - `stem`: the first module (`/model.0/`, a 3-channel convolution, which integer GEMMs run poorly);
    - `silu`: every SiLU activation (a Sigmoid and the Mul of its input by it), wherever it is;
      for the CPU they run as one fused float pass between integer convolutions (`fuse_silu`)
      instead of two integer passes (a table lookup, then a multiplication);
    - `output`: the detect head's box arithmetic after its DFL and the class sigmoid, which end in
      one tensor of pixel coordinates and probabilities (one INT8 scale for both rounds every
      probability to zero: an INT8 model that finds nothing);
    - `decode`: `output` and the DFL before it (everything of the head after its convolution
      branches cv2/cv3);
    - `head`: the whole detect head, its convolutions included.

    The head is the export's last module, `/model.N/`.
    """
    unknown = [g for g in groups if g not in FP32_GROUPS]
    if unknown:
        raise UserError(f"int8.fp32_layers: unknown group '{unknown[0]}' (known: {', '.join(FP32_GROUPS)})")
    names = [n.name for n in graph.node]
    indices = [int(m.group(1)) for name in names if (m := re.match(r"/model\.(\d+)/", name))]
    by_name = [g for g in groups if g != "silu"]
    if by_name and not indices:
        raise UserError(f"int8.fp32_layers: {', '.join(by_name)}: the model's ONNX graph has no ultralytics module "
                        "names (/model.N/…) to find these layers by; use int8.fp32_layers=[] or [\"silu\"]")
    head = f"/model.{max(indices, default=0)}/"
    in_head = [n for n in graph.node if n.name.startswith(head)]
    decode = [n for n in in_head if not n.name.startswith((f"{head}cv2.", f"{head}cv3."))]
    chosen: set[str] = set()
    for group in groups:
        if group == "stem":
            chosen |= {name for name in names if name.startswith("/model.0/")}
        elif group == "silu":
            chosen |= {name for pair in silu_pairs(graph) for name in pair}
        elif group == "head":
            chosen |= {n.name for n in in_head}
        elif group == "decode":
            chosen |= {n.name for n in decode}
        else:  # output
            chosen |= {n.name for n in decode} - _dfl_and_before(decode)
    return tuple(name for name in names if name in chosen)


def silu_pairs(graph) -> list[tuple[str, str]]:
    """(Sigmoid, Mul) node names of every x · sigmoid(x) in `graph` whose sigmoid feeds nothing else."""
    producers = {out: n for n in graph.node for out in n.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    pairs = []
    for mul in (n for n in graph.node if n.op_type == "Mul" and len(n.input) == 2):
        a, b = mul.input
        for x, s in ((a, b), (b, a)):
            sigmoid = producers.get(s)
            if sigmoid is not None and sigmoid.op_type == "Sigmoid" and sigmoid.input[0] == x and readers[s] == 1:
                pairs.append((sigmoid.name, mul.name))
                break
    return pairs


def fuse_silu(model, kept: tuple[str, ...]) -> int:
    """Replace each SiLU of `kept` by ONNX Runtime's QuickGelu (x · sigmoid(αx), α = 1: the same
    function, which ONNX Runtime's own FP32 optimizer fuses it into). The quantizer has no integer
    form of QuickGelu, so it stays float between a DequantizeLinear and a QuantizeLinear: one
    vectorized pass where the integer SiLU takes two, QLinearSigmoid (a table lookup) then
    QLinearMul. Left as Sigmoid and Mul, the quantizer would still leave them float but ONNX
    Runtime would no longer fuse them (each reads its own copy of the DequantizeLinear). Returns
    how many were replaced."""
    from onnx import helper

    graph = model.graph
    wanted = set(kept)
    pairs = [p for p in silu_pairs(graph) if p[0] in wanted and p[1] in wanted]
    nodes = {n.name: n for n in graph.node}
    for sigmoid_name, mul_name in pairs:
        sigmoid, mul = nodes[sigmoid_name], nodes[mul_name]
        fused = helper.make_node("QuickGelu", [sigmoid.input[0]], [mul.output[0]], name=mul.name,
                                 domain="com.microsoft", alpha=1.0)
        at = list(graph.node).index(mul)
        graph.node.remove(mul)
        graph.node.insert(at, fused)
        graph.node.remove(sigmoid)
        for info in [v for v in graph.value_info if v.name == sigmoid.output[0]]:
            graph.value_info.remove(info)
    if pairs and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(pairs)


def _dfl_and_before(decode) -> set[str]:
    """Of the decode nodes, the DFL convolution and those it depends on (its softmax, the
    concatenation of the levels' box branches)."""
    dfl = [n for n in decode if n.op_type == "Conv"]
    producers = {out: n for n in decode for out in n.output}
    seen: set[str] = set()
    stack = list(dfl)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack += [producers[i] for i in node.input if i in producers]
    return seen
