"""tinytrans: neural machine translation you can read from end to end.

Data flows one way: text -> SentencePiece pieces -> ids -> batches -> model ->
hypotheses -> text -> scores. Each step lives in its own module.

From Python: `model = tinytrans.load("runs/m30k")`, then `model.translate([...])` (see api.py).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`tinytrans.load` and `tinytrans.TranslationModel`, imported on first use (PEP 562), so
    that importing one light module such as tinytrans.config does not load PyTorch."""
    if name in ("load", "TranslationModel"):
        from tinytrans import api
        return getattr(api, name)
    raise AttributeError(f"module 'tinytrans' has no attribute '{name}'")
