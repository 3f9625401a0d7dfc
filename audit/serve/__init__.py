"""gan-audit serve: review findings and label generated images in the browser.

A small local web app over one run folder (Starlette, served by uvicorn; the ``serve``
extra): the summary, the findings table, each finding with its numbers, charts and sample
images, review actions written to the same hash-chained log as ``gan-audit review``, the
report re-rendered with the reviews, and a labelling page for the run's sample of generated
images. Bound to 127.0.0.1 with a random access token in the printed address; every write
needs the session's CSRF token (:mod:`audit.serve.security`).

Importing this package, or :mod:`audit.serve.server`, imports no web framework:
:func:`audit.serve.server.serve_run` checks for the extra first and says what to install.
"""
