"""`dist-lstm serve`: a translation web page and JSON API over trained checkpoints.

service.py   the models and what one translation request computes (no HTTP)
batching.py  requests that arrive together decoded together; a bounded queue
app.py       the Starlette application: routes, request validation, JSON errors
page.html    the self-contained page served at / (no CDN: works offline)
"""

from dist_lstm.translate.serve.app import create_app
from dist_lstm.translate.serve.service import ServeLimits, TranslationService

__all__ = ["ServeLimits", "TranslationService", "create_app"]
