"""PyTorch side of the gradient benchmarks (Debian's /usr/bin/python3 with python3-torch).

  grad_bench.py export OUTDIR ARCH SIZE      torchvision ARCH with seeded random weights -> OUTDIR/model.onnx
                                             (input "input" [N, 3, SIZE, SIZE], output "logits"), meta.json
  grad_bench.py time ARCH SIZE BATCH THREADS REPS
                                             the same model (same seed, so the same weights): seconds per
                                             forward + input-gradient step of sum(w * logits), with
                                             torch.set_num_threads(THREADS); prints JSON

Weights do not need gradients: autograd computes the input gradient only, as the ONNX graph does.
"""
import json
import os
import sys
import time

import torch
import torchvision


def build(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export(out, arch, size):
    os.makedirs(out, exist_ok=True)
    model = build(arch)
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(model, x, os.path.join(out, 'model.onnx'), opset_version=17, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}})
    with open(os.path.join(out, 'meta.json'), 'w') as f:
        json.dump({'arch': arch, 'size': size, 'torch': torch.__version__, 'torchvision': torchvision.__version__}, f)


def timing(arch, size, batch, threads, reps):
    torch.set_num_threads(threads)
    model = build(arch)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen)
    w = torch.randn(batch, 1000, generator=gen)

    def step():
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((w * model(xi)).sum(), xi)
        return g

    step()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(json.dumps({'times': times, 'threads': torch.get_num_threads(), 'torch': torch.__version__}))


if __name__ == '__main__':
    if sys.argv[1] == 'export':
        export(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        timing(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
