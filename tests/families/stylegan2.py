"""An NVlabs-style network pickle ``{'G', 'D', 'G_ema', ...}`` built at test time.

The classes live in a code folder copied from ``nvlabs_code/`` (``dnnlib/``,
``torch_utils/``, ``training/networks_stylegan2.py``), as the StyleGAN2-ADA and StyleGAN3
repositories lay them out. After the pickle is written the folder is taken off
``sys.path`` and its modules out of ``sys.modules``, so that loading the pickle needs
``code_path`` and ``trust_pickle`` exactly as a real one does.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import shutil
import sys
from pathlib import Path

CODE = Path(__file__).resolve().parent / "nvlabs_code"
#: Top-level packages of the code folder (what :func:`forget_code` unloads).
PACKAGES = ("dnnlib", "torch_utils", "training")


def forget_code() -> None:
    """Unload the code folder's packages and take every copy of it off ``sys.path``."""
    for name in list(sys.modules):
        if name.partition(".")[0] in PACKAGES:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not (Path(p) / "training" /
                                               "networks_stylegan2.py").is_file()]
    importlib.invalidate_caches()


def write_code(folder: Path) -> Path:
    """Copy the stand-in repository to ``folder/stylegan2-ada-pytorch``; its path."""
    code = Path(folder) / "stylegan2-ada-pytorch"
    shutil.copytree(CODE, code, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    return code


def build_pickle(folder: Path, *, seed: int = 0, num_fp16_res: int = 0,
                 noise_strength: float = 0.1, rgb_gain: float = 0.1,
                 name: str = "network-snapshot.pkl"
                 ) -> tuple[Path, Path]:
    """Write the code folder and a network pickle at 32 x 32 x 3; (pickle path, code path).

    ``num_fp16_res``: the highest resolutions whose blocks run in float16 (NVlabs' default
    for D is 4, so every block at 32 px). ``noise_strength``: each synthesis layer's noise
    strength (0 at NVlabs' initialisation; trained models have learned values, and
    per-pixel noise only shows with a non-zero one). ``rgb_gain`` scales the ToRGB weights
    so that images lie mostly in [-1, 1], a few values a little beyond, as a trained
    model's do (random ones spread over about [-7, 7]).
    """
    import torch

    code = write_code(folder)
    forget_code()
    sys.path.insert(0, str(code))
    try:
        net = importlib.import_module("training.networks_stylegan2")
        dnnlib = importlib.import_module("dnnlib")
        torch.manual_seed(seed)
        G = net.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                          num_fp16_res=num_fp16_res)
        for module in G.modules():
            if isinstance(module, net.SynthesisLayer):
                module.noise_strength.data.fill_(noise_strength)
            if isinstance(module, net.ToRGBLayer):
                module.weight.data.mul_(rgb_gain)
        D = net.Discriminator(c_dim=0, img_resolution=32, img_channels=3,
                              num_fp16_res=num_fp16_res)
        snapshot = {"G": G, "D": D, "G_ema": copy.deepcopy(G), "augment_pipe": None,
                    "training_set_kwargs": dnnlib.EasyDict(resolution=32, use_labels=False)}
        for key in ("G", "D", "G_ema"):
            snapshot[key] = snapshot[key].eval().requires_grad_(False)
        path = Path(folder) / name
        with open(path, "wb") as fh:
            pickle.dump(snapshot, fh)
    finally:
        forget_code()
    return path, code


def load_pickle(path: Path, code: Path) -> dict:
    """The snapshot dict, unpickled with ``code`` on ``sys.path`` (for the tests' own checks;
    call :func:`forget_code` afterwards)."""
    sys.path.insert(0, str(code))
    with open(path, "rb") as fh:
        return pickle.load(fh)
