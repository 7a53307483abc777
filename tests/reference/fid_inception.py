"""pytorch-fid's FID InceptionV3 with random weights (its download patched out), for tests."""
from __future__ import annotations

import torch

NAMES = [['Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', None],
         ['Conv2d_3b_1x1', 'Conv2d_4a_3x3', None],
         ['Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'],
         ['Mixed_7a', 'Mixed_7b', 'Mixed_7c', None]]


def random_fid_inception(seed: int = 0):
    """(pytorch_fid InceptionV3 returning pool3 features, its state_dict in pt_inception names)."""
    import pytorch_fid.inception as pfi
    import torchvision
    torch.manual_seed(seed)
    saved_url, saved_load = pfi.load_state_dict_from_url, torchvision.models.inception.Inception3.load_state_dict
    pfi.load_state_dict_from_url = lambda *a, **k: {}
    torchvision.models.inception.Inception3.load_state_dict = lambda self, *a, **k: None
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfi.load_state_dict_from_url = saved_url
        torchvision.models.inception.Inception3.load_state_dict = saved_load
    state = {}
    with torch.no_grad():
        for block, names in zip(model.blocks, NAMES):
            for module, name in zip(block, names):
                if name is None:
                    continue
                for k, v in module.state_dict().items():
                    if k.endswith('running_mean'):
                        v.normal_(0, 0.2)
                    elif k.endswith('running_var'):
                        v.uniform_(0.5, 1.5)
                    elif k.endswith('bn.weight'):
                        v.uniform_(0.5, 1.5)
                    elif k.endswith('bn.bias'):
                        v.normal_(0, 0.2)
                    state[f'{name}.{k}'] = v
    state['fc.weight'] = torch.zeros(1008, 2048)
    state['fc.bias'] = torch.zeros(1008)
    return model, state
