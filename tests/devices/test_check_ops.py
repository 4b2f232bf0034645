"""The primitive audit: it reads primitives off IR dumps and MindIR files, finds their documented
platforms, fails on one not documented for Ascend and GPU, and passes the shipped backbones."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_ms.op_audit import PLUMBING, audit, documented_platforms, ir_primitives, table

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_ops.py"

IR = """subgraph @17_1_f_79() {
  %0(CNode_76) = PrimFunc_Muls(%para1_x, I64(2)) cnode_attrs: {checkpoint: Bool(1)}
      : (<Tensor[Float32], (2, 3)>, <Int64, NoShape>) -> (<Tensor[Float32], (2, 3)>)
      # In file /tmp/x.py:5, 29~34/def f(x): return ops.softmax(x * 2, -1).sum()/
  %1(CNode_77) = PrimFunc_Softmax(%0, (I64(-1)))
  %2(CNode_78) = Conv2DBackpropInput(%1, %0)
  %3(CNode_79) = @17_2_g_80(%2)
  %4(CNode_80) = Load(%3, U)
  Return(%4)
}
"""


def test_primitives_are_read_off_an_ir_dump(tmp_path):
    path = tmp_path / "31_validate_0032.ir"
    path.write_text(IR)
    assert ir_primitives([path]) == {"Muls": 1, "Softmax": 1, "Conv2DBackpropInput": 1, "Load": 1}


def test_documented_platforms_come_from_the_primitives_own_page_then_its_forward_or_public_form():
    assert documented_platforms("Conv2D")[0] == ["Ascend", "GPU", "CPU"]
    platforms, where = documented_platforms("Conv2DBackpropFilter")
    assert platforms == ["Ascend", "GPU", "CPU"] and where.startswith("backward of Conv2D")
    platforms, where = documented_platforms("Muls")  # `x * 2.0`: the page of ops.mul
    assert "GPU" in platforms and "mul" in where
    # pages that leave GPU out: the audit must see them
    assert documented_platforms("ZerosLikeExt")[0] == ["Ascend"]
    assert documented_platforms("PowTensorScalar")[0] == ["Ascend"]
    assert documented_platforms("NoSuchPrimitive")[0] is None


def test_a_primitive_without_gpu_or_a_page_fails_and_plumbing_is_left_out():
    rows = audit({"Conv2D": {"unet": {"train": 3}}, "ZerosLikeExt": {"unet": {"train": 1}},
                  "NoSuchPrimitive": {"dit": {"mindir": 1}}, "Load": {"unet": {"train": 9}}})
    verdict = {r["primitive"]: r["ok"] for r in rows}
    assert verdict == {"Conv2D": True, "NoSuchPrimitive": False, "ZerosLikeExt": False}
    assert "Load" in PLUMBING
    text = table(rows, ["unet", "dit"])
    assert "| ZerosLikeExt | train | - | Ascend |" in text and "**NO**" in text


@pytest.mark.slow
def test_the_cifar10_ddpm_unet_path_passes_the_audit():
    """The 35.7M-parameter cifar10_cond preset's train step (AdamW, clipping, dropout), guided model
    call and MindIR compile with the native formulation under STRICT, and every primitive in them
    is documented for Ascend and GPU."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--arch", "ddpm_unet", "--json"], capture_output=True,
                          text=True, timeout=1800)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    bad = [r["primitive"] for r in rows if not r["ok"]]
    assert proc.returncode == 0 and not bad, (bad, proc.stderr[-2000:])
    names = {r["primitive"] for r in rows}
    # the graphs hold what the DDPM U-Net's training needs, and none of the CPU kernels
    assert {"Conv2D", "Conv2DBackpropFilter", "GroupNorm", "BatchMatMul", "Adam", "AllReduce"} <= names
    assert "Custom" not in names
