"""Stub of NVlabs' dnnlib: network pickles import it (EasyDict holds training kwargs)."""


class EasyDict(dict):
    """A dict whose keys are also attributes, as dnnlib.EasyDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setattr__(self, name, value):
        self[name] = value
