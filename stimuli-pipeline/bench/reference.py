"""Reference implementations for legible's pipeline benchmarks: PyTorch (activation extraction) and
scikit-learn (NMF). Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision,
python3-sklearn). Called by the bench/*.ts scripts, which compare legible with these in one run.

  reference.py export-resnet50 OUT_DIR           random-weight ResNet-50 → resnet50.onnx + resnet50.pt
  reference.py extract OUT_DIR IMAGES BATCH THREADS WORKERS   PyTorch extraction; prints JSON timings
  reference.py nmf DIR K MAX_ITER TOL THREADS    scikit-learn NMF (mu) from DIR/{A,W0,H0}.npy; prints JSON
"""
import json
import os
import sys
import time


def resnet50_with_taps():
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()

    class Tapped(torch.nn.Module):
        """ResNet-50 that also returns the outputs of layer1..layer4 (named graph outputs in ONNX)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            l1 = n.layer1(x)
            l2 = n.layer2(l1)
            l3 = n.layer3(l2)
            l4 = n.layer4(l3)
            logits = n.fc(torch.flatten(n.avgpool(l4), 1))
            return logits, l1, l2, l3, l4

    return net, Tapped(net).eval()


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


def extract(out_dir, images, batch, threads, workers):
    """Decode, resize, crop, normalise, forward, and spatial mean + max of layer1..4: what legible does."""
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(threads)
    net = torchvision.models.resnet50(weights=None).eval()
    net.load_state_dict(torch.load(os.path.join(out_dir, "resnet50.pt")))
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(images) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png")))
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Folder(), batch_size=batch, num_workers=workers)
    taps = {}
    for name in ["layer1", "layer2", "layer3", "layer4"]:
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: taps.__setitem__(name, o))
    means = {k: [] for k in ["layer1", "layer2", "layer3", "layer4"]}
    # Warm-up on one batch (graph caches, allocator), then time the whole folder.
    with torch.inference_mode():
        net(next(iter(loader)))
        t0 = time.perf_counter()
        n = 0
        for x in loader:
            net(x)
            for k, o in taps.items():
                means[k].append(o.mean(dim=(2, 3)).numpy())
                o.amax(dim=(2, 3))
            n += x.shape[0]
        seconds = time.perf_counter() - t0
    import numpy as np

    np.save(os.path.join(out_dir, "torch_layer4_mean.npy"), np.concatenate(means["layer4"]))
    print(json.dumps({"images": n, "seconds": seconds, "images_per_s": n / seconds, "threads": threads, "workers": workers, "torch": torch.__version__}))


def nmf(d, k, max_iter, tol, threads):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import numpy as np
    import sklearn
    from sklearn.decomposition import NMF

    A = np.load(os.path.join(d, "A.npy"))
    W0 = np.load(os.path.join(d, "W0.npy"))  # sklearn's W is our U (n × k)
    H0 = np.load(os.path.join(d, "H0.npy"))  # sklearn's H is our W (k × c)
    model = NMF(n_components=k, solver="mu", init="custom", max_iter=max_iter, tol=tol, beta_loss="frobenius")
    t0 = time.perf_counter()
    W = model.fit_transform(A, W=W0.copy(), H=H0.copy())
    seconds = time.perf_counter() - t0
    H = model.components_
    error = float(np.linalg.norm(A - W @ H))
    print(json.dumps({"seconds": seconds, "iterations": int(model.n_iter_), "error": error, "relative_error": error / float(np.linalg.norm(A)), "sklearn": sklearn.__version__, "dtype": str(A.dtype)}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "export-resnet50":
        export_resnet50(args[0])
    elif cmd == "extract":
        extract(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "nmf":
        nmf(args[0], int(args[1]), int(args[2]), float(args[3]), int(args[4]))
    else:
        raise SystemExit(f"unknown command {cmd}")
