"""kinema.lm: the unified vocabulary, task layouts and the prefix-LM transformer (integers only)."""
from kinema.lm.attention import KVCache
from kinema.lm.model import PRESETS, KinemaLM, LMConfig, LMOutput

__all__ = ["KinemaLM", "LMConfig", "LMOutput", "KVCache", "PRESETS"]
