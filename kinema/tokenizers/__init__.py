"""kinema.tokenizers"""
from kinema.tokenizers.text import TextTokenizer  # noqa: E402,F401
