"""Convert NVIDIA's StyleGAN2-ADA metric detector `vgg16.pt` (TorchScript) into a VGG16 `.npz`.

  python -m lct_jax.evaluation.nvidia_vgg16 vgg16.pt vgg16_nvidia.npz     (needs torch, once)

then `--config.evaluation.vgg16_weights=vgg16_nvidia.npz`. A TorchScript file
cannot be read without PyTorch, so this runs once where torch is installed.

The file's parameter names could not be seen here (no network), so the
converter does not rely on them: it walks the TorchScript state_dict in order
and takes the first tensors whose shapes are VGG16's 13 convolutions and 2
fully connected layers, each followed by its bias, and fails with the list of
what it found otherwise. It also writes the module's TorchScript source next
to the output (`<out>.code.txt`): read it to check the preprocessing (resize,
input range, channel order, mean) and whether fc2 is taken before or after its
ReLU, and set `evaluation.vgg16_input` to match (see README, "Recall"). With
`--check` it also runs the detector and our port on the same images and prints
the error of each setting (`evaluation.vgg16_input` x `evaluation.vgg16_fc2_relu`).
Verified here only on scripted torchvision VGG16s (tests/test_vgg16.py).
"""
from __future__ import annotations

import argparse

import numpy as np

from lct_jax import writer
from lct_jax.models.convert import (
    WeightsError,
    load_state_dict,
    to_numpy,
    vgg16_params_from_torch,
    vgg16_torch_names,
)
from lct_jax.models.vgg16 import BLOCKS, INPUT_CONVENTIONS, VGG16, preprocess


def vgg16_layer_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(torchvision name, shape) of every weight and bias VGG16's features and fc1/fc2 hold, in order."""
    shapes, c_in = [], 3
    convs = [ch for n, ch in BLOCKS for _ in range(n)]
    names = list(vgg16_torch_names().values())
    for i, c_out in enumerate(convs):
        shapes += [(names[2 * i], (c_out, c_in, 3, 3)), (names[2 * i + 1], (c_out,))]
        c_in = c_out
    fc = [(4096, 512 * 7 * 7), (4096, 4096)]
    for j, shape in enumerate(fc):
        k = 2 * len(convs) + 2 * j
        shapes += [(names[k], shape), (names[k + 1], (shape[0],))]
    return shapes


def extract_vgg16(state_dict) -> dict[str, np.ndarray]:
    """{torchvision name: array} from any state_dict holding VGG16's layers in order (other tensors,
    e.g. LPIPS heads, are skipped); a WeightsError lists the shapes found if a layer is missing."""
    items = [(k, to_numpy(v)) for k, v in state_dict.items()]
    out, pos = {}, 0
    for name, shape in vgg16_layer_shapes():
        while pos < len(items) and tuple(items[pos][1].shape) != shape:
            pos += 1
        if pos == len(items):
            found = ', '.join(f'{k} {tuple(v.shape)}' for k, v in items[:60])
            raise WeightsError(f'VGG16 (TorchScript): no tensor of shape {shape} for {name} after the '
                               f'layers before it; the file holds: {found}')
        out[name] = items[pos][1].astype(np.float32)
        pos += 1
    return out


def convert(src: str, dst: str) -> dict:
    import torch
    module = torch.jit.load(src, map_location='cpu')
    arrays = extract_vgg16(module.state_dict())
    writer.write_npz(dst, **arrays)
    with writer.atomic_file(dst + '.code.txt', 'w') as f:
        f.write(module.code)
        for name, sub in module.named_modules():
            if name and hasattr(sub, 'code'):
                try:
                    f.write(f'\n# --- {name}\n{sub.code}')
                except RuntimeError:   # submodules without a forward of their own
                    pass
    return arrays


def check(src: str, npz: str, num: int = 2, size: int = 256, seed: int = 0) -> dict:
    """Relative error of our features against the TorchScript detector's own, called as StyleGAN2-ADA's
    pr50k3 calls it (uint8 NCHW images, `return_features=True`), for each input convention and
    fc2 with / without its ReLU: the smallest error says which settings reproduce the detector."""
    import jax
    import torch
    images = np.random.default_rng(seed).integers(0, 256, (num, size, size, 3), dtype=np.uint8)
    module = torch.jit.load(src, map_location='cpu').eval()
    with torch.no_grad():
        want = module(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), return_features=True).numpy()
    params = vgg16_params_from_torch(load_state_dict(npz), VGG16())
    errors = {}
    for relu in (True, False):
        apply = jax.jit(VGG16(fc2_relu=relu).apply)
        for convention in INPUT_CONVENTIONS:
            got = np.asarray(apply({'params': params}, preprocess(images, convention)))
            errors[convention, relu] = float(np.abs(got - want).max() / np.abs(want).max())
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="NVIDIA's vgg16.pt (TorchScript)")
    parser.add_argument('dst', help='output .npz (torchvision VGG16 names)')
    parser.add_argument('--check', action='store_true', help='then compare our features with the detector\'s')
    args = parser.parse_args(argv)
    arrays = convert(args.src, args.dst)
    print(f'{len(arrays)} VGG16 tensors -> {args.dst}; its TorchScript source -> {args.dst}.code.txt '
          '(check the preprocessing there and set evaluation.vgg16_input)')
    if args.check:
        for (convention, relu), err in sorted(check(args.src, args.dst).items(), key=lambda kv: kv[1]):
            print(f'vgg16_input={convention} vgg16_fc2_relu={relu}: max relative error {err:.3g}')


if __name__ == '__main__':
    main()
