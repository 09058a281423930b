"""ONNX export: checked, dynamic batch, outputs equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edge_service.evolve.model import ModelConfig, StagedCNN  # noqa: E402
from edge_service.evolve.supernet import MultiBranchNet  # noqa: E402
from edge_service.onnx_tools.export import INPUT_NAME, OPSET, export_onnx  # noqa: E402
from edge_service.runtime.ort_engine import OrtEngine  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StagedCNN(ModelConfig(stem=4, widths=(8, 8, 16), blocks=(2, 2, 2))).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", 28)


def test_export_passes_checker_with_dynamic_batch_when_written(exported) -> None:
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].name == INPUT_NAME and dims[0].dim_param


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_onnx_runtime_output_matches_pytorch_when_batch_varies(model, exported, batch) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    with OrtEngine(exported, variant_id="m", precision="fp32") as engine:
        np.testing.assert_allclose(engine.infer(x), expected, rtol=1e-4, atol=1e-4)


def test_extracted_variant_exports_at_its_own_resolution_when_compressed(model, tmp_path) -> None:
    net = MultiBranchNet(model, ("id", "dw", "mdw"))
    static = net.extract(("dw", "mdw", "id"))
    path = export_onnx(static, tmp_path / "v.onnx", 20)
    x = np.random.default_rng(0).standard_normal((3, 1, 20, 20)).astype(np.float32)
    with torch.no_grad():
        expected = static(torch.from_numpy(x)).numpy()
    with OrtEngine(path, variant_id="v", precision="fp32") as engine:
        np.testing.assert_allclose(engine.infer(x), expected, rtol=1e-4, atol=1e-4)
