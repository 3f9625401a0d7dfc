"""The embedded demo: digits with planted tone and stroke, and a small DCGAN trained on them.

- :mod:`audit.demo.data`: the digits, their fixed split and the four planted variants
  (image sources ``builtin:digits-paired`` and ``builtin:digits-audit``).
- :mod:`audit.demo.models`: the demo DCGAN and its committed weights
  (model spec ``builtin:digits-dcgan``).
- :mod:`audit.demo.train`: ``python -m audit.demo.train`` reproduces the weights.

Nothing here is imported by ``import audit``; torch is imported only when used.
"""
