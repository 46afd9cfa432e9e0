"""PyTorch reference for legible's disentangler nets (stimuli-pipeline/src/train/disentangler.ts).

  disentangler_reference.py DIR

DIR holds job.json (shapes, depths, learning rate, batch size, per depth the order of the training
images in each epoch, the held-out and training indices), x.bin (images, float32 [n, Cin, H, W]),
z.bin (standardised targets, float32 [n, C, h, w]) and init<depth>.bin (the initial parameters in
disentanglerParams order). Trains the same architecture with torch.optim.Adam on the same batches
and writes result.json: per depth the mean training loss of each epoch and the final held-out and
training losses. With --bench it times epochs instead (see bench/complexity.ts).
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn


class Disentangler(nn.Module):
    def __init__(self, cin, c, width, depth, kernel, stride):
        super().__init__()
        self.inp = nn.Conv2d(cin, width, kernel, stride=stride)
        self.blocks = nn.ModuleList(
            [nn.ModuleDict({"conv1": nn.Conv2d(width, width, 3, padding=1), "conv2": nn.Conv2d(width, width, 3, padding=1)}) for _ in range(depth)]
        )
        self.out = nn.Conv2d(width, c, 1)

    def forward(self, x):
        z = self.inp(x)
        for b in self.blocks:
            z = z + b["conv2"](torch.relu(b["conv1"](z)))
        return self.out(z)

    def ordered(self):
        ps = [self.inp.weight, self.inp.bias]
        for b in self.blocks:
            ps += [b["conv1"].weight, b["conv1"].bias, b["conv2"].weight, b["conv2"].bias]
        return ps + [self.out.weight, self.out.bias]


def conv_in(inp, out):
    (_, H, W), (_, h, w) = inp, out
    sh, sw = H // h, W // w
    return (H - (h - 1) * sh, W - (w - 1) * sw), (sh, sw)


def build(job, depth, init=None):
    kernel, stride = conv_in(job["input"], job["output"])
    m = Disentangler(job["input"][0], job["output"][0], job["width"], depth, kernel, stride)
    if init is not None:
        flat = np.fromfile(init, dtype=np.float32)
        o = 0
        with torch.no_grad():
            for p in m.ordered():
                p.copy_(torch.from_numpy(flat[o : o + p.numel()].reshape(p.shape)))
                o += p.numel()
        assert o == flat.size, (o, flat.size)
    return m


def bench(d):
    """Seconds per training epoch for each depth (training loop only), and the peak RSS."""
    import resource

    job = json.load(open(os.path.join(d, "job.json")))
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job.get("seed", 0))
    n = job["n"]
    x = torch.from_numpy(np.fromfile(os.path.join(d, "x.bin"), dtype=np.float32).reshape(n, *job["input"]))
    z = torch.from_numpy(np.fromfile(os.path.join(d, "z.bin"), dtype=np.float32).reshape(n, *job["output"]))
    train = torch.tensor(job["train"])
    b = job["batch"]
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "depths": {}}
    for depth in job["depths"]:
        # legible's initial parameters when the bench wrote them (the same values, not only the same rule).
        init = os.path.join(d, f"init{depth}.bin")
        m = build(job, depth, init if os.path.exists(init) else None)
        opt = torch.optim.Adam(m.parameters(), lr=job["lr"])
        times, losses = [], []
        for _ in range(job["epochs"]):
            order = train[torch.randperm(len(train))]
            t0 = time.perf_counter()
            total = 0.0
            for s in range(0, len(order) - b + 1, b):
                idx = order[s : s + b]
                loss = ((m(x[idx]) - z[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            times.append(time.perf_counter() - t0)
            losses.append(total / (len(order) // b))
        out["depths"][str(depth)] = {"epoch_seconds": times, "history": losses}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main():
    if sys.argv[1] == "--bench":
        return bench(sys.argv[2])
    d = sys.argv[1]
    job = json.load(open(os.path.join(d, "job.json")))
    torch.set_num_threads(1)
    n = job["n"]
    x = torch.from_numpy(np.fromfile(os.path.join(d, "x.bin"), dtype=np.float32).reshape(n, *job["input"]))
    z = torch.from_numpy(np.fromfile(os.path.join(d, "z.bin"), dtype=np.float32).reshape(n, *job["output"]))
    result = {}
    for depth in job["depths"]:
        m = build(job, depth, os.path.join(d, f"init{depth}.bin"))
        opt = torch.optim.Adam(m.parameters(), lr=job["lr"])
        b = job["batch"]
        history = []
        for order in job["orders"][str(depth)]:
            total, steps = 0.0, 0
            for s in range(0, len(order) - b + 1, b):
                idx = torch.tensor(order[s : s + b])
                loss = ((m(x[idx]) - z[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                steps += 1
            history.append(total / steps)
        with torch.no_grad():
            held = torch.tensor(job["heldOut"])
            train = torch.tensor(job["train"])
            result[depth] = {
                "history": history,
                "heldOut": ((m(x[held]) - z[held]) ** 2).mean().item(),
                "train": ((m(x[train]) - z[train]) ** 2).mean().item(),
            }
    json.dump(result, open(os.path.join(d, "result.json"), "w"))


if __name__ == "__main__":
    main()
