"""PyTorch CPU peers for `patchwork bench`: the same ViT training step (img 32, patch 4,
width 192, depth 12, 3 heads, batch 64, AdamW, clip 1.0) and the MAE step (decoder 128
wide x 2, mask ratio 0.75), timed with 2 threads. Prints medians in ms.

    python bench_torch.py [--threads 2] [--steps 5]
"""
import argparse
import statistics
import sys
import time

import torch
import timm

sys.path.insert(0, __file__.rsplit("/", 1)[0])


def time_steps(step, n):
    step()  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-4)
    x = torch.randn(64, 3, 32, 32)
    y = torch.arange(64) % 10

    def vit_step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(vit(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vit.parameters(), 1.0)
        opt.step()

    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    gflops = 20 * 2 * 1024**3 / (time.perf_counter() - t) / 1e9
    print(f"torch {torch.__version__}, {args.threads} threads: matmul 1024^3 {gflops:.0f} GFLOP/s")
    print(f"vit step (192x12, img32 p4, batch 64): {time_steps(vit_step, args.steps):.0f} ms")

    try:
        from mae_official import MaskedAutoencoderViT
    except ImportError:
        return
    mae = MaskedAutoencoderViT(img_size=32, patch_size=4, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                               decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, mlp_ratio=4.0)
    mopt = torch.optim.AdamW(mae.parameters(), lr=1e-4)

    def mae_step():
        mopt.zero_grad(set_to_none=False)
        loss, _, _ = mae(x, mask_ratio=0.75)
        loss.backward()
        mopt.step()

    print(f"mae step (192x12, dec 128x2, ratio 0.75, batch 64): {time_steps(mae_step, args.steps):.0f} ms")


if __name__ == "__main__":
    main()
