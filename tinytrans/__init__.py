"""tinytrans: neural machine translation you can read from end to end.

Data flows one way: text -> SentencePiece pieces -> ids -> batches -> model ->
hypotheses -> text -> scores. Each step lives in its own module.
"""

__version__ = "0.1.0"
