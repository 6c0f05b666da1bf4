"""Exact rewrites of the exported graph that onnxruntime does not do by itself.

All three keep the numbers (up to float rounding order) and are checked again by the
export's parity test.  On the CPU provider (one thread) they take 8–10 % off an MFFnet36
run at L = 100–160 (``scripts/bench_export.py``).

1. **Grouped → depthwise + 1×1.**  The MFF blocks enter each branch with a grouped 3×3
   conv of two input channels and one output channel per group, which onnxruntime's CPU
   kernels run ~4× slower per multiply-add than anything else in the net.  The same map
   is a depthwise 3×3 conv (a fast NCHWc kernel) followed by a 1×1 conv summing the
   channel pairs (and adding the bias).
2. **Redundant masks.**  The model multiplies by the pair mask after every block, but
   many tensors are already zero on the padding: a masked tensor stays masked through
   ReLU/ReLU6, sums of masked tensors, channel concatenation and per-channel gates
   (Squeeze-Excitation).  Multiplying such a tensor by the mask again is dropped.
3. **Activation before the mask.**  ``Conv → Mul(mask) → Clip`` becomes
   ``Conv → Clip → Mul(mask)`` (ReLU6(0) = 0 and the mask is 0/1), so onnxruntime fuses
   the activation into the convolution.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["optimize_graph"]

_PASSTHROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Identity"}


def optimize_graph(model: Any, mask_input: str = "mask") -> tuple[Any, dict[str, int]]:
    """A rewritten copy of ``model`` (onnx ModelProto) and how often each rewrite applied."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    counts = {"grouped_to_depthwise": _grouped_to_depthwise(out.graph)}
    ranks, shapes = _shapes(out)
    counts["redundant_masks"] = _drop_redundant_masks(out.graph, mask_input, ranks, shapes)
    counts["activation_before_mask"] = _activation_before_mask(out.graph, mask_input, ranks)
    return out, counts


# --------------------------------------------------------------------------- helpers

def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _shapes(model: Any) -> tuple[dict[str, int], dict[str, list]]:
    """Rank and dims (int, or None when dynamic) of every tensor shape inference can type."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks: dict[str, int] = {}
    shapes: dict[str, list] = {}
    g = inferred.graph
    for v in list(g.value_info) + list(g.input) + list(g.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            ranks[v.name], shapes[v.name] = len(dims), dims
    for init in g.initializer:
        ranks[init.name], shapes[init.name] = len(init.dims), list(init.dims)
    return ranks, shapes


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            a = _attrs(node)
            if "value" in a:
                values[node.output[0]] = numpy_helper.to_array(a["value"])
    return values


def _keeps_zero(node: Any, constants: dict[str, np.ndarray]) -> bool:
    """Relu, or Clip whose range contains 0: maps 0 to 0."""
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    bounds = []
    for name in list(node.input[1:3]):
        if not name:
            bounds.append(None)
        elif name in constants:
            bounds.append(float(np.asarray(constants[name]).reshape(-1)[0]))
        else:
            return False
    lo = bounds[0] if bounds else None
    hi = bounds[1] if len(bounds) > 1 else None
    return (lo is None or lo <= 0) and (hi is None or hi >= 0)


def _binary_masks(graph: Any, mask_input: str) -> set[str]:
    """Tensors that are 0/1 functions of the mask alone (its casts, reshapes, products)."""
    binary = {mask_input}
    for node in graph.node:
        if node.op_type in _PASSTHROUGH and node.input and node.input[0] in binary:
            binary.update(node.output)
        elif node.op_type == "Mul" and all(i in binary for i in node.input):
            binary.update(node.output)
    return binary


def _consumers(graph: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


# --------------------------------------------------------------------------- 1. depthwise

def _grouped_to_depthwise(graph: Any) -> int:
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        a = _attrs(node)
        groups = int(a.get("group", 1))
        weight = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is None or groups == 1 or len(weight.dims) != 4:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        cout, per_group, kh, kw = w.shape
        if cout != groups or per_group < 2:  # only one output per group, several inputs
            nodes.append(node)
            continue
        cin = per_group * groups
        base = f"{node.name or node.output[0]}/dw"
        dw_name, sum_name, mid = f"{base}/weight", f"{base}/pair_sum", f"{base}/out"
        graph.initializer.append(numpy_helper.from_array(w.reshape(cin, 1, kh, kw), dw_name))
        pairs = np.zeros((cout, cin, 1, 1), dtype=w.dtype)
        for o in range(cout):
            pairs[o, o * per_group:(o + 1) * per_group] = 1
        graph.initializer.append(numpy_helper.from_array(pairs, sum_name))
        dw_attrs = {k: v for k, v in a.items() if k != "group"}
        nodes.append(helper.make_node("Conv", [node.input[0], dw_name], [mid], name=base, group=cin, **dw_attrs))
        bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        nodes.append(helper.make_node("Conv", [mid, sum_name] + bias, list(node.output),
                                      name=f"{base}/sum", kernel_shape=[1, 1]))
        count += 1
    if count:
        used = {name for n in nodes for name in n.input}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        del graph.node[:]
        graph.node.extend(nodes)
    return count


# --------------------------------------------------------------------------- 2. masks

def _drop_redundant_masks(graph: Any, mask_input: str, ranks: dict[str, int],
                          shapes: dict[str, list]) -> int:
    binary = _binary_masks(graph, mask_input)
    pair_masks = {n for n in binary if ranks.get(n) == 4}
    constants = _constants(graph)
    outputs = {o.name for o in graph.output}

    def per_channel(name: str) -> bool:  # (B, C, 1, 1) or a scalar: a gate, not a map
        dims = shapes.get(name)
        return dims is not None and (len(dims) == 0 or (len(dims) == 4 and dims[2] == 1 and dims[3] == 1))

    zero: set[str] = set()  # tensors known to be 0 wherever the pair mask is 0
    rename: dict[str, str] = {}
    kept, count = [], 0
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        ins, op = list(node.input), node.op_type
        if op == "Mul" and len(ins) == 2:
            a, b = ins
            if b in zero or a in pair_masks:
                a, b = b, a
            if b in pair_masks and ranks.get(a) == 4:
                if a in zero and node.output[0] not in outputs:
                    rename[node.output[0]] = a  # already masked: drop the multiply
                    count += 1
                    continue
                zero.add(node.output[0])
            elif a in zero and (b in zero or per_channel(b)):
                zero.add(node.output[0])
        elif op == "Add" and len(ins) == 2 and all(i in zero for i in ins):
            zero.add(node.output[0])
        elif op in ("Relu", "Clip") and ins[0] in zero and _keeps_zero(node, constants):
            zero.add(node.output[0])
        elif op in ("Cast", "Identity") and ins[0] in zero:
            zero.add(node.output[0])
        elif op == "Concat" and _attrs(node).get("axis") == 1 and all(i in zero for i in ins):
            zero.add(node.output[0])
        kept.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(kept)
    return count


# --------------------------------------------------------------------------- 3. activation first

def _activation_before_mask(graph: Any, mask_input: str, ranks: dict[str, int]) -> int:
    from onnx import helper

    binary = _binary_masks(graph, mask_input)
    pair_masks = {n for n in binary if ranks.get(n) == 4}
    constants = _constants(graph)
    users = _consumers(graph)
    outputs = {o.name for o in graph.output}
    swap: dict[str, Any] = {}  # id of the activation node → the Mul it follows
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2 or node.output[0] in outputs:
            continue
        mask_side = [i for i in node.input if i in pair_masks]
        after = users.get(node.output[0], [])
        if len(mask_side) == 1 and len(after) == 1 and _keeps_zero(after[0], constants) \
                and after[0].input[0] == node.output[0]:
            swap[id(after[0])] = node
    if not swap:
        return 0
    dropped = {id(m) for m in swap.values()}
    nodes = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        mul = swap.get(id(node))
        if mul is None:
            nodes.append(node)
            continue
        mask = next(i for i in mul.input if i in pair_masks)
        data = next(i for i in mul.input if i != mask)
        before = f"{node.output[0]}/unmasked"
        act = helper.make_node(node.op_type, [data] + list(node.input[1:]), [before],
                               name=f"{node.name or node.output[0]}/first")
        act.attribute.extend(node.attribute)
        nodes.append(act)
        nodes.append(helper.make_node("Mul", [before, mask], list(node.output), name=f"{mul.name}/after"))
    del graph.node[:]
    graph.node.extend(nodes)
    return len(swap)
