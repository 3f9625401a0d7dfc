"""Stub of torch_utils.persistence: the real decorator embeds each class's source code in
network pickles; here classes are pickled by reference, so loading still needs this
repository on sys.path (code_path), as real pickles need dnnlib and torch_utils."""


def persistent_class(cls):
    return cls
