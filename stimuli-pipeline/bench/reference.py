"""Reference implementations for legible's pipeline benchmarks: PyTorch (activation extraction) and
scikit-learn (NMF). Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision,
python3-sklearn). Called by the bench/*.ts scripts, which compare legible with these in one run.

  reference.py export-resnet50 OUT_DIR           random-weight ResNet-50 → resnet50.onnx + resnet50.pt
  reference.py extract OUT_DIR IMAGES BATCH THREADS WORKERS [CHANNELS_LAST=0] [INTEROP=1] [JIT=0]
                                                 PyTorch extraction (one configuration); prints JSON timings
  reference.py nmf-error DIR U.npy W.npy          ‖A − U·W‖_F in float64; prints JSON
  reference.py nmf DIR K MAX_ITER TOL THREADS [SOLVER=cd]   scikit-learn NMF from DIR/{A,W0,H0}.npy; prints JSON
"""
import json
import os
import sys
import time


def resnet_layers(n, x):
    """The outputs of a torchvision ResNet's layer1..layer4 for the batch x."""
    x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
    l1 = n.layer1(x)
    l2 = n.layer2(l1)
    l3 = n.layer3(l2)
    return l1, l2, l3, n.layer4(l3)


def tapped_module(net, logits):
    """A module over `net` returning (logits,) + layer1..layer4's outputs, or the four alone."""
    import torch

    class Tapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            taps = resnet_layers(self.net, x)
            if not logits:
                return taps
            return (self.net.fc(torch.flatten(self.net.avgpool(taps[3]), 1)),) + taps

    return Tapped(net).eval()


def resnet50_with_taps():
    """ResNet-50 that also returns the outputs of layer1..layer4 (named graph outputs in ONNX)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    return net, tapped_module(net, logits=True)


def export_resnet50(out_dir):
    import torch

    os.makedirs(out_dir, exist_ok=True)
    net, tapped = resnet50_with_taps()
    torch.save(net.state_dict(), os.path.join(out_dir, "resnet50.pt"))
    dummy = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        tapped,
        dummy,
        os.path.join(out_dir, "resnet50.onnx"),
        input_names=["input"],
        output_names=["logits", "layer1", "layer2", "layer3", "layer4"],
        dynamic_axes={name: {0: "N"} for name in ["input", "logits", "layer1", "layer2", "layer3", "layer4"]},
        opset_version=17,
        do_constant_folding=True,
    )
    print(json.dumps({"onnx": os.path.join(out_dir, "resnet50.onnx")}))


def extract(out_dir, images, batch, threads, workers, channels_last=False, interop=1, jit=False):
    """Decode, resize, crop, normalise, forward, and spatial mean + max of layer1..4: what legible does.

    A configuration as a practitioner would tune it: torch.inference_mode, `threads` intra-op threads
    and `interop` inter-op threads, optionally channels_last memory format (model and batches), and
    0 or more DataLoader worker processes; with `jit`, the network up to layer4 traced to TorchScript,
    frozen and passed through torch.jit.optimize_for_inference (batch norm folded into the
    convolutions, oneDNN's fused kernels: PyTorch's own recipe for CPU inference). glibc's allocator settings (MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_) and an LD_PRELOADed allocator are read at process start, so the caller
    sets them in this process's environment; they are reported back."""
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(interop)
    net = torchvision.models.resnet50(weights=None).eval()
    net.load_state_dict(torch.load(os.path.join(out_dir, "resnet50.pt")))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(images) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png")))
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Folder(), batch_size=batch, num_workers=workers)
    taps = {}
    names = ["layer1", "layer2", "layer3", "layer4"]
    means = {k: [] for k in names}
    if jit:
        # The taps as the traced module's outputs (hooks do not survive tracing); the classifier,
        # which no tap needs, is left out, as legible's cut graph leaves it out.
        example = torch.zeros(batch, 3, 224, 224)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(tapped_module(net, logits=False), example)))

        def forward(x):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            taps.update(zip(names, traced(x)))

    else:
        for name in names:
            getattr(net, name).register_forward_hook(lambda m, i, o, name=name: taps.__setitem__(name, o))

        def forward(x):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            net(x)

    # Warm-up on one batch (graph caches, allocator), then time the whole folder.
    with torch.inference_mode():
        forward(next(iter(loader)))
        t0 = time.perf_counter()
        c0 = time.process_time()
        n = 0
        for x in loader:
            forward(x)
            for k, o in taps.items():
                means[k].append(o.mean(dim=(2, 3)).numpy())
                o.amax(dim=(2, 3))
            n += x.shape[0]
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
    import numpy as np

    np.save(os.path.join(out_dir, "torch_layer4_mean.npy"), np.concatenate(means["layer4"]))
    env = {k: os.environ[k] for k in ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "OMP_WAIT_POLICY"] if k in os.environ}
    print(
        json.dumps(
            {
                "images": n,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "cpu_seconds": cpu_seconds,
                "threads": threads,
                "interop": interop,
                "workers": workers,
                "channels_last": bool(channels_last),
                "jit": bool(jit),
                "inference_mode": True,
                "env": env,
                "torch": torch.__version__,
            }
        )
    )


def nmf(d, k, max_iter, tol, threads, solver="cd"):
    """scikit-learn's NMF from the benchmark's initial factors (init='custom'), float32, with its
    defaults otherwise (solver 'cd', tol 1e-4, max_iter 200 unless told). The BLAS kernel and thread
    count are reported: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE must be unset for this command alone
    (bench/lib.ts does), or OpenBLAS runs an older, slower kernel."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import numpy as np
    import sklearn
    from sklearn.decomposition import NMF

    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} × {i.get('num_threads')}" for i in threadpool_info()]
    except ImportError:
        blas = ["threadpoolctl missing: kernel unknown"]
    A = np.load(os.path.join(d, "A.npy"))
    W0 = np.load(os.path.join(d, "W0.npy"))  # sklearn's W is our U (n × k)
    H0 = np.load(os.path.join(d, "H0.npy"))  # sklearn's H is our W (k × c)
    model = NMF(n_components=k, solver=solver, init="custom", max_iter=max_iter, tol=tol, beta_loss="frobenius")
    t0 = time.perf_counter()
    W = model.fit_transform(A, W=W0.copy(), H=H0.copy())
    seconds = time.perf_counter() - t0
    H = model.components_
    error = float(np.linalg.norm(A.astype(np.float64) - W.astype(np.float64) @ H.astype(np.float64)))
    print(json.dumps({"seconds": seconds, "iterations": int(model.n_iter_), "error": error, "relative_error": error / float(np.linalg.norm(A.astype(np.float64))), "solver": solver, "sklearn": sklearn.__version__, "numpy": np.__version__, "dtype": str(W.dtype), "blas": blas}))


def nmf_error(d, u_file, w_file):
    """‖A − U·W‖_F in float64 for factors written by bench/nmf.ts: both sides' loss measured alike."""
    import numpy as np

    A = np.load(os.path.join(d, "A.npy")).astype(np.float64)
    U = np.load(u_file).astype(np.float64)
    W = np.load(w_file).astype(np.float64)
    print(json.dumps({"error": float(np.linalg.norm(A - U @ W))}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "export-resnet50":
        export_resnet50(args[0])
    elif cmd == "extract":
        extract(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), *[int(a) for a in args[5:8]])
    elif cmd == "nmf":
        nmf(args[0], int(args[1]), int(args[2]), float(args[3]), int(args[4]), *(args[5:6] or ["cd"]))
    elif cmd == "nmf-error":
        nmf_error(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown command {cmd}")
