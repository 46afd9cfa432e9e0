"""PyTorch side of the feature-visualization benchmark (bench/grad-fv.ts): a MACO loop written the
way a PyTorch user would write it, with the same objective and settings as legible's
src/fv/visualize.ts, on the same torchvision model and weights as grad_bench.py exports.

  maco_torch.py ARCH SIZE BATCH THREADS CHANNELS_LAST WARMUP STEPS [TENSOR]

Per feature b (logit channel b, or channel b of the module TENSOR names, e.g. layer4): phase
[3, H, W/2+1] uniform in (-pi, pi); spectrum magnitude fixed (1/f, capped at f = 1, scaled so that a
random-phase image has per-pixel standard deviation 2, as legible's powerLawMagnitude and
normaliseMagnitude); image = sigmoid(colour @ irfft2(magnitude * exp(i phase))) with legible's default
colour matrix; every step a random jitter (1/16 of the side), zoom (0.9-1.1) and rotation (10
degrees), bilinear with wrap-around (circular padding, then grid_sample); ImageNet normalisation;
objective = the channel's spatial mean, summed over the batch and maximised by Adam (lr 0.1, betas
0.9/0.999, eps 1e-8); the attribution map accumulates |d objective / d image| every step. After
the steps, one forward of the unaugmented image (legible does the same).

Runs WARMUP steps, then times STEPS steps; prints JSON {seconds: [wall-clock per step], cpu: [process CPU per step], ...}. The thread count
is torch.set_num_threads(THREADS); CHANNELS_LAST=1 puts the model and its input in channels-last.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from grad_bench import build

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def colour_matrix():
    # Opponent-colour axes (achromatic, blue-yellow, red-green) scaled 1 : 1/3 : 1/6, as columns.
    axes = torch.tensor([[1, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=torch.float64)
    axes = axes / axes.norm(dim=1, keepdim=True)
    scale = torch.tensor([1, 1 / 3, 1 / 6], dtype=torch.float64)
    return (axes * scale[:, None]).T.float()  # rgb = M @ x


def magnitude(H, W, std=2.0):
    Wh = W // 2 + 1
    u = torch.arange(H, dtype=torch.float64)
    v = torch.arange(Wh, dtype=torch.float64)
    fu = torch.minimum(u, H - u)[:, None] / H
    fv = v[None, :] / W
    f = torch.sqrt(fu**2 + fv**2) * max(H, W)
    m = 1 / torch.clamp(f, min=1)
    c = torch.full((Wh,), 2.0, dtype=torch.float64)
    c[0] = 1
    if W % 2 == 0:
        c[-1] = 1
    var = ((c * m) ** 2 / 2).sum() / (H * W) ** 2
    return (m * std / var.sqrt()).float().expand(3, H, Wh).contiguous()


class Warp:
    """Random jitter/zoom/rotation as bilinear sampling with wrap-around."""

    def __init__(self, H, W, h, w, gen, jitter=1 / 16, scale=(0.9, 1.1), rotate=10.0):
        # Worst case reach beyond the border: a corner rotated, zoomed out, shifted.
        reach = 0.5 * (math.cos(math.radians(rotate)) + math.sin(math.radians(rotate))) / scale[0] + jitter - 0.5
        self.pad = (math.ceil(reach * H) + 2, math.ceil(reach * W) + 2)
        self.H, self.W, self.gen = H, W, gen
        self.jitter, self.scale, self.rotate = jitter, scale, rotate
        yn = (torch.arange(h) + 0.5) / h - 0.5
        xn = (torch.arange(w) + 0.5) / w - 0.5
        self.yn, self.xn = torch.meshgrid(yn, xn, indexing='ij')

    def grid(self, n):
        g = self.gen
        u = lambda: 2 * torch.rand(n, generator=g) - 1
        dy, dx = u() * self.jitter, u() * self.jitter
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, generator=g)
        a = u() * math.radians(self.rotate)
        cos, sin = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
        s, dy, dx = s[:, None, None], dy[:, None, None], dx[:, None, None]
        ys = (cos * self.yn + sin * self.xn) / s - dy  # source, in image sides about the centre
        xs = (-sin * self.yn + cos * self.xn) / s - dx
        (py, px), H, W = self.pad, self.H, self.W
        # grid_sample (align_corners=False) on the padded image: pixel = ((g + 1) * size - 1) / 2.
        gy = 2 * ((ys + 0.5) * H + py) / (H + 2 * py) - 1
        gx = 2 * ((xs + 0.5) * W + px) / (W + 2 * px) - 1
        return torch.stack([gx, gy], dim=-1)

    def __call__(self, img, grid):
        py, px = self.pad
        padded = F.pad(img, (px, px, py, py), mode='circular')
        return F.grid_sample(padded, grid, mode='bilinear', padding_mode='border', align_corners=False)


def run(arch, size, batch, threads, channels_last, warmup, steps, tensor='logits'):
    torch.set_num_threads(threads)
    model = build(arch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    feats = {}
    if tensor != 'logits':
        dict(model.named_modules())[tensor].register_forward_hook(lambda m, i, o: feats.__setitem__('out', o))
    H = W = h = w = size
    gen = torch.Generator().manual_seed(1)
    mag = magnitude(H, W)
    M = colour_matrix()
    warp = Warp(H, W, h, w, gen)
    channels = torch.arange(batch)
    phase = (torch.rand(batch, 3, H, W // 2 + 1, generator=gen) * 2 - 1) * math.pi
    phase.requires_grad_(True)
    opt = torch.optim.Adam([phase], lr=0.1, betas=(0.9, 0.999), eps=1e-8, maximize=True)
    attribution = torch.zeros(batch, H, W)
    losses = []

    def image():
        spatial = torch.fft.irfft2(torch.polar(mag, phase), s=(H, W))
        return torch.sigmoid(torch.einsum('ij,bjhw->bihw', M, spatial))

    def objective(x):
        x = ((x - MEAN) / STD).contiguous(memory_format=fmt)
        out = model(x)
        if tensor != 'logits':
            out = feats['out'].mean(dim=(2, 3))
        return out[torch.arange(batch), channels]

    def step():
        img = image()
        obj = objective(warp(img, warp.grid(batch)))
        opt.zero_grad(set_to_none=True)
        phase.grad, g_img = torch.autograd.grad(obj.sum(), [phase, img])
        opt.step()
        with torch.no_grad():
            attribution.add_(g_img.abs().sum(dim=1))
        losses.append((-obj.detach()).tolist())

    for _ in range(warmup):
        step()
    seconds, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    with torch.no_grad():
        final = objective(warp(image(), warp.grid(batch) * 0 + identity_grid(warp)))
    return {
        'seconds': seconds,
        'cpu': cpu,
        'objective_first': losses[warmup],
        'objective_last': losses[-1],
        'final': final.tolist(),
        'threads': torch.get_num_threads(),
        'channels_last': bool(channels_last),
        'torch': torch.__version__,
    }


def identity_grid(warp):
    (py, px), H, W = warp.pad, warp.H, warp.W
    gy = 2 * ((warp.yn + 0.5) * H + py) / (H + 2 * py) - 1
    gx = 2 * ((warp.xn + 0.5) * W + px) / (W + 2 * px) - 1
    return torch.stack([gx, gy], dim=-1)


if __name__ == '__main__':
    a = sys.argv[1:]
    if len(a) < 7:
        sys.exit(__doc__)
    r = run(a[0], int(a[1]), int(a[2]), int(a[3]), a[4] == '1', int(a[5]), int(a[6]), a[7] if len(a) > 7 else 'logits')
    print(json.dumps(r))
