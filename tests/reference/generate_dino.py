#!/usr/bin/env python3
"""Generate Patchwork's DINO / iBOT reference fixtures (format `patchwork-fixture/1`).

Cases (reference: dino_official.py, re-implementations of the official DINOHead,
DINOLoss and iBOTLoss):
  * `dino_head`: a micro `DINOHead` under its official `state_dict()` names
    (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, ... or `mlp.weight` when nlayers is 1;
    `last_layer.weight_g` [out_dim, 1], `last_layer.weight_v` [out_dim, bottleneck_dim]);
    `input.x` [B, in_dim], `input.grad_output` [B, out_dim] (the upstream gradient fed
    to `output.backward`); `expect.output`, `expect.grad.<param>` for every trainable
    parameter (no `last_layer.weight_g` with norm_last_layer: it is frozen at 1) and
    `expect.grad.input.x`. config: `in_dim`, `out_dim`, `hidden_dim`, `bottleneck_dim`,
    `nlayers`, `norm_last_layer`.
  * `dino_loss`: `input.student_output` [ncrops*B, D], `input.teacher_output` [2*B, D],
    `input.center` [1, D]; `expect.loss`, `expect.grad.input.student_output`,
    `expect.center` (after the update). config: `out_dim`, `ncrops`, `student_temp`,
    `teacher_temp`, `center_momentum`. The teacher temperature is fixed (a schedule
    with no warm-up, epoch 0).
  * `ibot_loss`: two global crops, no local crops. `input.student_cls` [2*B, D],
    `input.teacher_cls` [2*B, D], `input.student_patch` [2*B, N, D2],
    `input.teacher_patch` [2*B, N, D2], `input.student_mask` [2*B, N] (0/1 f32; row
    v*B + b is image b of view v, patches row-major over the h x w grid),
    `input.center` [1, D], `input.center_patch` [1, 1, D2]; `expect.loss` (total),
    `expect.loss_cls`, `expect.loss_patch` (each with its lambda applied),
    `expect.grad.input.student_cls`, `expect.grad.input.student_patch`, `expect.center`,
    `expect.center_patch`. config: `out_dim`, `patch_out_dim`, `ngcrops` (2), `nlcrops`
    (0), `student_temp`, `teacher_temp`, `teacher_temp2`, `center_momentum`,
    `center_momentum2`, `lambda1`, `lambda2`, `grid` ([h, w], N = h*w).

Conventions as generate.py: seeded; float64 ground truth stored as float32 after
asserting that a float32 run agrees with it; metadata keys sorted so reruns are
byte-identical. Head weights are redrawn at unit scale (Linear W with std
fan_in^-1/2, biases 0.1 N(0, 1), weight_v N(0, 1), a trainable weight_g 1 + 0.3 N(0, 1));
head outputs given to the losses are 0.3 N(0, 1), the scale of a real head's cosine
outputs, so the teacher's softmax at temperature 0.04 is sharp but not one-hot.

Usage:  python generate_dino.py          # (re)write fixtures/dino_*.safetensors, ibot_*
        python generate_dino.py --check  # load every fixture back and summarise it
"""
import json
import sys
import warnings
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import ATOL, FORMAT, OUT, RTOL, save_canonical  # noqa: E402  (no side effects)
from dino_official import DINOHead, DINOLoss, iBOTLoss  # noqa: E402

# name -> (config, batch, seed)
HEADS = {
    # Three layers, frozen weight_g (DINO's default), 37 outputs (not a power of two).
    "dino_head_norm": (dict(in_dim=24, out_dim=37, hidden_dim=40, bottleneck_dim=16, nlayers=3,
                            norm_last_layer=True), 5, 201),
    # Two layers, trainable weight_g.
    "dino_head_free": (dict(in_dim=17, out_dim=50, hidden_dim=33, bottleneck_dim=12, nlayers=2,
                            norm_last_layer=False), 3, 202),
    # One layer: the mlp is a bare Linear (`mlp.weight`, `mlp.bias`); trainable weight_g.
    "dino_head_single": (dict(in_dim=20, out_dim=70, hidden_dim=8, bottleneck_dim=9, nlayers=1,
                              norm_last_layer=False), 4, 203),
}
LOSSES = {
    # 2 global + 2 local crops: every local view pairs with both teachers.
    "dino_loss_4crops": (dict(out_dim=37, ncrops=4, student_temp=0.1, teacher_temp=0.04,
                              center_momentum=0.9), 3, 211),
    # Global crops only: each view pairs with the other teacher view only.
    "dino_loss_2crops": (dict(out_dim=65, ncrops=2, student_temp=0.1, teacher_temp=0.07,
                              center_momentum=0.996), 2, 212),
}
IBOT = {
    # Separate patch head width, lambda2 0.5, its own patch momentum; image 0 of view 0
    # has no masked patch (mask.sum clamped to 1), image 1 of view 1 is fully masked.
    "ibot_loss": (dict(out_dim=37, patch_out_dim=29, ngcrops=2, nlcrops=0, student_temp=0.1,
                       teacher_temp=0.04, teacher_temp2=0.07, center_momentum=0.9,
                       center_momentum2=0.8, lambda1=1.0, lambda2=0.5, grid=[3, 3]), 3, 221),
    # One shared head width, lambdas 1, a 4 x 4 grid.
    "ibot_loss_shared": (dict(out_dim=41, patch_out_dim=41, ngcrops=2, nlcrops=0, student_temp=0.1,
                              teacher_temp=0.04, teacher_temp2=0.04, center_momentum=0.9,
                              center_momentum2=0.9, lambda1=0.7, lambda2=1.3, grid=[4, 4]), 2, 222),
}


def check_f32_f64(name, e32, e64):
    worst = 0.0
    for k in e64:
        scale = e64[k].abs().max().item()
        err = (e32[k].double() - e64[k]).abs().max().item()
        assert err <= ATOL + RTOL * scale, f"{name}: {k} f32 vs f64 err {err:.3g} (max {scale:.3g})"
        worst = max(worst, err / (1.0 + scale))
    print(f"   f32 vs f64 worst err/(1+max) = {worst:.2e}")
    for k in sorted(e64):
        if k.startswith("grad."):
            g = e64[k].abs().max().item()
            assert g > 0, f"{name}: all-zero gradient {k}"
            print(f"   max|{k}| = {g:.4g}")


def write(name, case, config, tensors, e64, limit=200 * 1024):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    tensors.update({f"expect.{k}": v.float().contiguous() for k, v in e64.items()})
    meta = {"format": FORMAT, "case": case, "config": json.dumps(config)}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.safetensors"
    save_canonical(tensors, path, meta)
    print(f"   wrote {path.name}: {path.stat().st_size} bytes")
    assert path.stat().st_size < limit


# ---- dino_head ----

def build_head(cfg):
    with warnings.catch_warnings():  # weight_norm's deprecation: we want its names
        warnings.simplefilter("ignore", FutureWarning)
        return DINOHead(**cfg)


def redraw_head(head, gen):
    def randn(t, std=1.0, mean=0.0):
        return mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in head.named_parameters():  # deterministic order
            if name == "last_layer.weight_g":
                v = randn(p, 0.3, 1.0)  # only reached when trainable
            elif name == "last_layer.weight_v":
                v = randn(p)
            elif name.endswith(".bias") or name == "bias":
                v = randn(p, 0.1)
            else:
                v = randn(p, p.shape[1] ** -0.5)
            p.copy_(v.to(p.dtype))


def run_head(head, x, grad_output):
    head.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = head(x)
    out.backward(grad_output)
    e = {"output": out}
    e.update({f"grad.{n}": p.grad for n, p in head.named_parameters() if p.requires_grad})
    e["grad.input.x"] = x.grad
    return {k: v.detach() for k, v in e.items()}


def generate_head(name, cfg, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the official init (overwritten, but keep it deterministic)
    h32 = build_head(cfg)
    redraw_head(h32, gen)
    h64 = build_head(cfg)  # weight_norm modules refuse deepcopy
    h64.load_state_dict(h32.state_dict())
    h64.double()
    x = torch.randn((batch, cfg["in_dim"]), generator=gen).float()
    grad_output = torch.randn((batch, cfg["out_dim"]), generator=gen).float()
    e32, e64 = run_head(h32, x, grad_output), run_head(h64, x.double(), grad_output.double())
    names = list(h32.state_dict())
    assert "last_layer.weight_g" in names and "last_layer.weight_v" in names, names
    assert ("grad.last_layer.weight_g" in e64) == (not cfg["norm_last_layer"])
    print(f"== {name}: seed {seed}, params {names}")
    check_f32_f64(name, e32, e64)
    tensors = dict(h32.state_dict())
    tensors["input.x"] = x
    tensors["input.grad_output"] = grad_output
    write(name, "dino_head", cfg, tensors, e64)


# ---- dino_loss ----

def make_dino_loss(cfg):
    # A fixed teacher temperature: no warm-up, one epoch, evaluated at epoch 0.
    t = cfg["teacher_temp"]
    return DINOLoss(cfg["out_dim"], cfg["ncrops"], t, t, 0, 1, cfg["student_temp"], cfg["center_momentum"])


def run_dino_loss(cfg, student, teacher, center):
    loss_fn = make_dino_loss(cfg).to(student.dtype)
    assert loss_fn.teacher_temp_schedule[0] == cfg["teacher_temp"]
    loss_fn.center = center.clone()
    student = student.clone().requires_grad_(True)
    loss = loss_fn(student, teacher, 0)
    loss.backward()
    return {"loss": loss.detach(), "grad.input.student_output": student.grad, "center": loss_fn.center}


def generate_dino_loss(name, cfg, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    d = cfg["out_dim"]
    student = 0.3 * torch.randn((cfg["ncrops"] * batch, d), generator=gen).float()
    teacher = 0.3 * torch.randn((2 * batch, d), generator=gen).float()
    center = 0.1 * torch.randn((1, d), generator=gen).float()
    e32 = run_dino_loss(cfg, student, teacher, center)
    e64 = run_dino_loss(cfg, student.double(), teacher.double(), center.double())
    q = torch.softmax((teacher.double() - center.double()) / cfg["teacher_temp"], dim=-1)
    print(f"== {name}: seed {seed}, loss {e64['loss'].item():.6f}, teacher mean row-max {q.amax(-1).mean():.3f}")
    check_f32_f64(name, e32, e64)
    tensors = {"input.student_output": student, "input.teacher_output": teacher, "input.center": center}
    write(name, "dino_loss", cfg, tensors, e64)


# ---- ibot_loss ----

def make_ibot_loss(cfg):
    t, t2 = cfg["teacher_temp"], cfg["teacher_temp2"]
    return iBOTLoss(cfg["out_dim"], cfg["patch_out_dim"], cfg["ngcrops"], cfg["nlcrops"], t, t, t2, t2, 0, 1,
                    cfg["student_temp"], cfg["center_momentum"], cfg["center_momentum2"], cfg["lambda1"],
                    cfg["lambda2"])


def run_ibot_loss(cfg, inputs):
    loss_fn = make_ibot_loss(cfg).to(inputs["student_cls"].dtype)
    loss_fn.center = inputs["center"].clone()
    loss_fn.center2 = inputs["center_patch"].clone()
    s_cls = inputs["student_cls"].clone().requires_grad_(True)
    s_patch = inputs["student_patch"].clone().requires_grad_(True)
    h, w = cfg["grid"]
    masks = [m.reshape(-1, h, w).bool() for m in inputs["student_mask"].chunk(cfg["ngcrops"])]
    out = loss_fn((s_cls, s_patch), (inputs["teacher_cls"], inputs["teacher_patch"]), None, masks, 0)
    out["loss"].backward()
    return {"loss": out["loss"].detach(), "loss_cls": out["cls"].detach(), "loss_patch": out["patch"].detach(),
            "grad.input.student_cls": s_cls.grad, "grad.input.student_patch": s_patch.grad,
            "center": loss_fn.center, "center_patch": loss_fn.center2}


def generate_ibot_loss(name, cfg, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    d, d2 = cfg["out_dim"], cfg["patch_out_dim"]
    n = cfg["grid"][0] * cfg["grid"][1]
    rows = cfg["ngcrops"] * batch
    inputs = {
        "student_cls": 0.3 * torch.randn((rows, d), generator=gen),
        "teacher_cls": 0.3 * torch.randn((rows, d), generator=gen),
        "student_patch": 0.3 * torch.randn((rows, n, d2), generator=gen),
        "teacher_patch": 0.3 * torch.randn((rows, n, d2), generator=gen),
        "student_mask": (torch.rand((rows, n), generator=gen) < 0.4).float(),
        "center": 0.1 * torch.randn((1, d), generator=gen),
        "center_patch": 0.1 * torch.randn((1, 1, d2), generator=gen),
    }
    inputs["student_mask"][0] = 0.0  # view 0, image 0: nothing masked (clamp path)
    inputs["student_mask"][batch + 1] = 1.0  # view 1, image 1: all masked
    inputs = {k: v.float() for k, v in inputs.items()}
    e32 = run_ibot_loss(cfg, inputs)
    e64 = run_ibot_loss(cfg, {k: v.double() for k, v in inputs.items()})
    print(f"== {name}: seed {seed}, loss {e64['loss'].item():.6f} (cls {e64['loss_cls'].item():.6f},"
          f" patch {e64['loss_patch'].item():.6f}), masked per image {inputs['student_mask'].sum(1).tolist()}")
    check_f32_f64(name, e32, e64)
    write(name, "ibot_loss", cfg, {f"input.{k}": v for k, v in inputs.items()}, e64)


def check():
    for path in sorted(list(OUT.glob("dino_*.safetensors")) + list(OUT.glob("ibot_*.safetensors"))):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            print(f"== {path.name} ({path.stat().st_size} bytes) meta={meta}")
            for k in f.keys():
                t = f.get_tensor(k)
                print(f"   {k:44s} {str(t.dtype):15s} {list(t.shape)} {t.numel() * t.element_size()} B")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        check()
    else:
        torch.use_deterministic_algorithms(True)
        for name, (cfg, batch, seed) in HEADS.items():
            generate_head(name, cfg, batch, seed)
        for name, (cfg, batch, seed) in LOSSES.items():
            generate_dino_loss(name, cfg, batch, seed)
        for name, (cfg, batch, seed) in IBOT.items():
            generate_ibot_loss(name, cfg, batch, seed)
