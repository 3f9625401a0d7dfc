"""Models: from a spec to a discriminator or generator ready for auditing, one module per job.

    specs          spec kinds, the builtin registry, LoadedModel / LoadedGenerator, InputSpec
    builtin, torchscript, python, pickle
                   one module per spec kind, each with ``build(cfg, rest)`` (a new format is
                   one new file, its name in ``specs.SPEC_KINDS``, and a test)
    usercode       importing the user's code (code_path) and messages about what it misses
    weights        state_dicts loaded strictly; the hash of a module's state
    build          spec -> module in eval mode, adapters shared by all formats, devices
    precision      float16 layers (NVlabs use_fp16) and weights run in float32 where they must
    identity       what a model's sha256 covers: class, kwargs, dtype, fp16 layers, weights
    probe          the layer probe (shapes, batch dependence, calls per module), hookable
                   modules, layers: auto, hook points refused (reused modules)
    discriminator  load_discriminator
    generate       load_generator, latents, seeded sampling (noise_mode, call_kwargs), PNGs
    output_range   the generator's declared value_range: checked, scaled, clamps counted

The stage's front is :mod:`audit.load`, which re-exports what other stages use. Nothing here
imports torch at import time.
"""
