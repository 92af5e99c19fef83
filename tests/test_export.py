"""Export of D to ONNX and TorchScript: dynamic H and W, equal to PyTorch on CPU within 1e-4."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from neurmap.config import backbone_node
from neurmap.export import main as export_main
from neurmap.nets.backbones import DeblurNet
from neurmap.tasks.exporting import Exportable, check_export, export
from neurmap.tasks.inference import load_networks
from neurmap.tasks.training import train
from tests.conftest import compose, released, tiny_overrides

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose(tiny_overrides("test=false"), run))
    return run / "checkpoints" / "last.ckpt"


def _onnx(path, image: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"blurry": image.numpy()})[0])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_checkpoint_runs_any_size_and_matches_pytorch(ckpt, tmp_path, fmt, capsys):
    out = tmp_path / f"d.{fmt}"
    assert export_main([f"ckpt={ckpt}", f"format={fmt}", f"output={out}"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    deblur = load_networks(ckpt).deblur
    for size in ((37, 129), (96, 64), (31, 200)):
        image = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected = deblur(image)
        got = _onnx(out, image) if fmt == "onnx" else torch.jit.load(str(out))(image)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 1e-4


@pytest.mark.slow
def test_nafnet_layernorm_exports(tmp_path):
    """NAFNet's channel LayerNorm is a custom autograd op in the official code and does not export;
    ours is plain tensor ops."""
    cfg = backbone_node("nafnet_w32")
    cfg.net.width, cfg.net.enc_blk_nums = 8, [1, 1, 1, 1]
    torch.manual_seed(0)
    net = DeblurNet(instantiate(cfg.net), cfg.pad_multiple).eval()
    path = export(Exportable(net), "onnx", tmp_path / "nafnet.onnx", (32, 48))
    assert check_export(net, "onnx", path, [(32, 48), (45, 70)]) < 1e-4


def test_release_weights_export_by_backbone_name(tmp_path, capsys):
    """`backbone=<name>` (at model.deblur) says which network a plain state dict is for."""
    torch.save(instantiate(backbone_node("unet").net).state_dict(), tmp_path / "unet.pth")
    out = tmp_path / "unet.pt"
    assert export_main([f"ckpt={tmp_path / 'unet.pth'}", "backbone=unet", "format=torchscript", f"output={out}"]) == 0
    assert out.is_file() and "(torchscript, unet" in capsys.readouterr().out


def test_export_errors_are_one_line(ckpt, tmp_path, capsys):
    assert export_main([f"ckpt={ckpt}", "format=tflite"]) == 2
    assert "format must be one of ['onnx', 'torchscript'], got 'tflite'" in capsys.readouterr().err
    assert export_main(["format=onnx"]) == 2
    assert "ckpt=... is required" in capsys.readouterr().err
    (tmp_path / "weights.pth").write_bytes(b"junk")
    assert export_main([f"ckpt={tmp_path / 'weights.pth'}"]) == 2
    assert "not a checkpoint torch can load safely" in capsys.readouterr().err


def test_export_never_replaces_its_checkpoint_nor_an_existing_file_unasked(ckpt, tmp_path, capsys):
    before = ckpt.read_bytes()
    for overwrite in ("false", "true"):
        assert export_main([f"ckpt={ckpt}", f"output={ckpt}", f"overwrite={overwrite}"]) == 2
        assert "is the checkpoint being exported" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    assert export_main([f"ckpt={ckpt}", f"output={existing}"]) == 2
    assert "exists; pass overwrite=true to replace it" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert export_main([f"ckpt={ckpt}", f"output={tmp_path}"]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert export_main([f"ckpt={ckpt}", f"output={existing}", "overwrite=true", "format=torchscript"]) == 0
    assert existing.read_bytes() != b"keep me"


@pytest.mark.slow
@pytest.mark.skipif(released("weights", "dmphn_1_2_4") is None, reason="set NEURMAP_RELEASES for the released weights")
def test_released_dmphn_exports_to_onnx(tmp_path):
    out = tmp_path / "dmphn.onnx"
    args = ["ckpt=release:dmphn_1_2_4", "backbone=dmphn_1_2_4", f"output={out}"]
    assert export_main(args) == 0
    assert out.stat().st_size > 5_000_000


def test_release_weights_export_under_the_log_folder_not_beside_them(tmp_path, capsys):
    from tests.helpers import checksums

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(instantiate(backbone_node("unet").net).state_dict(), weights / "unet.pth")
    before = checksums(weights)
    logs = tmp_path / "logs"
    args = [f"ckpt={weights / 'unet.pth'}", "backbone=unet", "format=torchscript", f"paths.log_dir={logs}"]
    assert export_main(args) == 0
    out = logs / "export" / "unet_deblur.pt"
    assert capsys.readouterr().out.startswith(f"neurmap.export: wrote {out} (torchscript, unet")
    assert out.is_file() and checksums(weights) == before
