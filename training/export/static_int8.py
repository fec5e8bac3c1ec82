"""Static int8: activation scales fixed at export, so an input's answer never depends on its batch-mates.

Dynamic int8 computes one activation scale per tensor at run time, over the whole batch: a long
sentence in the batch coarsens the rounding of every other one. Here each activation gets one
scale and zero point calibrated once (MinMax over the calibration inputs, each run alone), written
into the graph as QuantizeLinear/DequantizeLinear pairs (QDQ). The int8 matmuls accumulate in
int32, which is exact, so a row's result is the same whatever the other rows and whatever the
kernel, as long as nothing saturates. The fp32 operations around them work row by row, padding
adding exact zeros: alone and padded, a row got bit-identical outputs on an AVX-512 VNNI/AMX CPU.
(A CPU whose fp32 kernels regrouped a sum by the padded length could move a value sitting on a
rounding boundary by one int8 step; the export measures alone vs padded on its own CPU and records
it in bundle.json `parity.alone_vs_batch_max_abs_diff`.)

What is quantized, as measured on all-MiniLM-L6-v2 fine-tuned on SST-2 (benchmarks/batch_invariance.py,
3,367 held-out sentences: fp32 87.20% accuracy, this 86.84%, dynamic int8 87.05%):
- the MatMuls with a weight (query/key/value, attention output, feed-forward up and down). The
  attention score and context MatMuls (activation x activation) stay fp32: quantizing them too
  was slower and less accurate in the design runs.
- weights: int8 with one scale per output channel, in a 7-bit range (`reduce_range`): on AVX2
  CPUs without VNNI, onnxruntime multiplies u8 x s8 with VPMADDUBSW, whose 16-bit sum of two
  products saturates when both are large (255 * 127 * 2 > 32767); with 7-bit weights it cannot
  (255 * 64 * 2 < 32767), so the integer results are exact, and the same, on AVX2, AVX-512 VNNI
  and AMX. On an AVX-512 VNNI CPU 8-bit weights scored the same (86.81%).
- a MatMul whose input loses too much to 8-bit rounding stays fp32: the feed-forward down
  projection reads GELU outputs with rare large values (range up to 24, RMS 0.3), and in the first
  layers its input keeps under 23 dB signal-to-noise. Keeping those fp32 (2 of 36 here) took
  accuracy from 86.07% to 86.84% and halved the score error against fp32 (mean |p - p_fp32|
  0.043 -> 0.020) for 8-12% of the speed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from training.export.parity import Feeds

MIN_SQNR_DB = 23.0  # a weight MatMul whose uint8 input keeps less signal-to-noise than this stays fp32


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second operand is a weight (an initializer)."""
    weights = {init.name for init in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def _uint8_round_trip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """x quantized to uint8 over [lo, hi] (zero included, as onnxruntime's MinMax calibration) and back."""
    scale = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def input_sqnr(src: Path, feeds: list[Feeds], work: Path) -> dict[str, float]:
    """Weight MatMul name -> signal-to-noise ratio (dB) of its input rounded to uint8 over the calibrated range."""
    from core.providers import create_session

    model = onnx.load(str(src))
    nodes = weight_matmuls(model)
    tensors = list(dict.fromkeys(n.input[0] for n in nodes))  # q/k/v share their input
    known = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    probe = work / "sqnr-probe.onnx"
    onnx.save(model, str(probe))
    session = create_session(probe, ["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]

    def activations():
        for feed in feeds:
            yield zip(tensors, session.run(tensors, {k: feed[k] for k in inputs}))

    lo = dict.fromkeys(tensors, 0.0)
    hi = dict.fromkeys(tensors, 0.0)
    for outputs in activations():  # pass 1: the range MinMax calibration will choose
        for name, x in outputs:
            lo[name], hi[name] = min(lo[name], float(x.min())), max(hi[name], float(x.max()))
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for outputs in activations():  # pass 2: what rounding to that range loses
        for name, x in outputs:
            x = x.astype(np.float64)
            signal[name] += float((x * x).sum())
            noise[name] += float(((x - _uint8_round_trip(x, lo[name], hi[name])) ** 2).sum())
    probe.unlink()
    db = {t: 10 * np.log10(signal[t] / noise[t]) if noise[t] > 0 else float("inf") for t in tensors}
    return {n.name: float(db[n.input[0]]) for n in nodes}


class _Reader(CalibrationDataReader):
    """The calibration feeds, one at a time, as onnxruntime's quantizer reads them."""

    def __init__(self, feeds: list[Feeds], inputs: list[str]):
        self._feeds = iter(feeds)
        self._inputs = inputs

    def get_next(self) -> dict | None:
        feed = next(self._feeds, None)
        return None if feed is None else {k: feed[k] for k in self._inputs}


def quantize_int8_static(
    src: Path, dst: Path, feeds: list[Feeds], work: Path, min_sqnr_db: float = MIN_SQNR_DB, reduce_range: bool = True
) -> dict:
    """Write the static int8 QDQ graph of `src` to `dst`; returns what was quantized and what was not.

    `min_sqnr_db` and `reduce_range` are fixed for exports; benchmarks/batch_invariance.py varies them.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # Output types of fused contrib ops (SkipLayerNormalization...) are unknown to onnx's own inference;
    # without them the quantizer leaves those activations fp32.
    typed = work / "typed.onnx"
    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(src)), auto_merge=True), str(typed))
    sqnr = input_sqnr(typed, feeds, work)
    quantized = [name for name, db in sqnr.items() if db >= min_sqnr_db]
    if not quantized:  # an empty list would mean "every node" to quantize_static
        raise ValueError(f"no MatMul input keeps {min_sqnr_db} dB at int8: export --precision fp32 instead")
    inputs = [i.name for i in onnx.load(str(typed), load_external_data=False).graph.input]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer warns about pre-processing on the root logger
    try:
        quantize_static(
            str(typed),
            str(dst),
            _Reader(feeds, inputs),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=quantized,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)
    typed.unlink()
    return {
        "method": "static",
        "format": "QDQ",
        "activations": "uint8, one scale per tensor fixed at export (MinMax over the calibration inputs)",
        "weights": f"int8, one scale per output channel, {'7-bit range (reduce_range)' if reduce_range else '8-bit'}",
        "quantized_matmuls": len(quantized),
        "min_sqnr_db": min_sqnr_db,
        "fp32_matmuls": {name: round(db, 1) for name, db in sqnr.items() if db < min_sqnr_db},
    }
