"""Tiny, randomly initialised models of the GAN families users bring (32 px), built at test
time from small re-implementations of each family's published architecture: the parts
that change an audit (tuple outputs, minibatch standard deviation, fp16 flags, per-pixel
noise, [0, 1] output, modules reused within one forward pass), never the families' code.

- :mod:`families.stylegan2`: an NVlabs StyleGAN2-ADA / StyleGAN3 network pickle with its
  code folder (``dnnlib/``, ``torch_utils/``, ``training/networks_stylegan2.py``).
- :mod:`families.lucidrains`: lucidrains/stylegan2-pytorch (sigmoid output in [0, 1]).
- :mod:`families.mimicry`: torch-mimicry's SNGAN (one ReLU module called several times).
- :mod:`families.dcgan`: a plain DCGAN saved as state_dicts.
"""
