"""Models: from a spec to a discriminator or generator ready for auditing, one module per job.

    specs          spec kinds, the builtin registry, LoadedModel / LoadedGenerator, InputSpec
    builtin, torchscript, python, pickle
                   one module per spec kind, each with ``build(cfg, rest)`` (a new format is
                   one new file, its name in ``specs.SPEC_KINDS``, and a test)
    usercode       importing the user's code (code_path) and messages about what it misses
    weights        state_dicts loaded strictly; the hash of a module's state
    build          spec -> module in eval mode, adapters shared by all formats, devices
    probe          the layer probe (shapes, batch dependence), hookable modules, layers: auto
    discriminator  load_discriminator
    generate       load_generator, latents, sampling, PNGs

The stage's front is :mod:`audit.load`, which re-exports what other stages use. Nothing here
imports torch at import time.
"""
