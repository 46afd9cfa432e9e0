"""Exports a torchvision architecture with random weights to ONNX, as a lab would (dynamic batch).

Usage: export_torchvision.py OUT.onnx NAME [SEED]
NAME: a torchvision.models builder (vgg16, vit_b_16, convnext_tiny, resnet18, ...), or one of the
small stand-ins built from torchvision's own classes: tiny_vit (VisionTransformer, 32 px, 8 px
patches, 2 layers, hidden 32) and tiny_convnext (ConvNeXt, 2 stages of 16 and 32 channels).
Writes OUT.onnx and OUT.onnx.json with the input size and the module names of the layers.
"""
import json
import sys

import torch
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.vision_transformer import VisionTransformer

out, name = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
torch.manual_seed(seed)
if name == "tiny_vit":
    model, size = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5), 32
elif name == "tiny_convnext":
    model, size = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5), 32
else:
    model, size = getattr(torchvision.models, name)(weights=None), 224
# torchvision starts some classifier heads at zero (ViT's heads.head): every logit would be 0 and no
# feature could contribute to a decision. A random model gets a random head.
for m in model.modules():
    if isinstance(m, torch.nn.Linear) and not m.weight.abs().max():
        torch.nn.init.normal_(m.weight, std=0.02)
model.eval()
x = torch.rand(2, 3, size, size)
torch.onnx.export(
    model, x, out, input_names=["image"], output_names=["logits"],
    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=14, do_constant_folding=True,
)
with open(out + ".json", "w") as f:
    json.dump({"size": size, "modules": [n for n, _ in model.named_modules() if n]}, f)
